"""The module named by this distribution's ``harmkit`` entry point: it registers the harmonizer."""

from __future__ import annotations

import harmkit

from .zscore import ZScoreHarmonizer


@harmkit.hookimpl
def harmkit_feature_harmonizers() -> list[type]:
    return [ZScoreHarmonizer]
