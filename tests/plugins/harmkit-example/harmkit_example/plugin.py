"""The module named by this distribution's ``harmkit`` entry point: it registers a harmonizer and an evaluator."""

from __future__ import annotations

import harmkit

from .ks_count import KSCountEvaluator
from .zscore import ZScoreHarmonizer


@harmkit.hookimpl
def harmkit_feature_harmonizers() -> list[type]:
    return [ZScoreHarmonizer]


@harmkit.hookimpl
def harmkit_evaluators() -> list[type]:
    return [KSCountEvaluator]
