"""Two simple image harmonizers for harmkit.

* :class:`HistogramMatching` (``histmatch``): one SUV factor per site group
  from healthy-tissue levels (``mode="scale"``), or whole-body landmark
  matching (``mode="nyul"``).
* :class:`ResolutionMatching` (``resmatch``): EARL-style Gaussian post-filter
  that smooths sharper site groups to the reference's resolution, and a
  regularised deconvolution that sharpens smoother, quieter ones, and restores
  (denoises, then sharpens) smoother, noisier ones.
"""

from .histmatch import HistogramMatching
from .resmatch import (
    ResolutionMatching,
    ResolutionMatchingWarning,
    edge_preserving_denoise,
    gaussian_sharpen,
    gaussian_smooth,
    noise_smoothness,
)

__all__ = [
    "HistogramMatching",
    "ResolutionMatching",
    "ResolutionMatchingWarning",
    "edge_preserving_denoise",
    "gaussian_sharpen",
    "gaussian_smooth",
    "noise_smoothness",
]
