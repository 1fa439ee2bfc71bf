"""ComBat feature harmonization for harmkit, built on neuroHarmonize.

>>> from harmkit_combat import ComBat, ComBatTransformer, site_difference  # doctest: +SKIP
"""

from .combat import ComBat, ComBatWarning
from .diagnostics import SiteDifference, site_difference
from .sklearn import ComBatTransformer

__all__ = [
    "ComBat",
    "ComBatWarning",
    "ComBatTransformer",
    "SiteDifference",
    "site_difference",
]
