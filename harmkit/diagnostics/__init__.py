"""Site-effect diagnostics: can the sites of a cohort be told apart, and how do their images differ?

Runs on any cohort, real or simulated (``harmkit diagnose``, ``docs/diagnostics.md``):

* :func:`site_predictability` -- cross-validated AUC of a classifier that
  predicts the site group from VOI features (0.5: sites indistinguishable);
* :func:`patch_separability` -- held-out accuracy of a small classifier on
  texture descriptors of image patches normalised to their own mean, at the
  grid an image harmonizer trains on;
* :func:`texture_statistics` -- per scan: noise SD, COV and noise correlation
  length in homogeneous tissue (a reference mask, or :func:`homogeneous_region`),
  and the effective resolution from the lesion edge (:func:`edge_resolution`);
* :func:`diagnose` -- all of them, with ``diagnostics.json`` and figures.

>>> from harmkit.diagnostics import diagnose
>>> result = diagnose("manifest.csv", voi="lesion", out="diagnostics")   # doctest: +SKIP
"""

from .patches import patch_separability
from .predictability import site_predictability
from .run import Diagnostics, diagnose, texture_statistics
from .texture import edge_resolution, homogeneous_region, noise_statistics

__all__ = [
    "diagnose",
    "Diagnostics",
    "site_predictability",
    "patch_separability",
    "texture_statistics",
    "homogeneous_region",
    "noise_statistics",
    "edge_resolution",
]
