"""Two simple image harmonizers for harmkit.

* :class:`HistogramMatching` (``histmatch``): maps each scan's intensity
  quantiles inside the body onto the reference site group's pooled quantiles.
* :class:`ResolutionMatching` (``resmatch``): EARL-style Gaussian post-filter
  that smooths sharper site groups to the reference's resolution.
"""

from .histmatch import HistogramMatching
from .resmatch import (
    ResolutionMatching,
    ResolutionMatchingWarning,
    gaussian_smooth,
    noise_smoothness,
)

__all__ = [
    "HistogramMatching",
    "ResolutionMatching",
    "ResolutionMatchingWarning",
    "gaussian_smooth",
    "noise_smoothness",
]
