"""harmkit's own evaluators, registered through the ``harmkit`` entry point like any plugin."""

from __future__ import annotations

from .hookspecs import hookimpl


@hookimpl
def harmkit_evaluators() -> list[type]:
    from .evaluators import (
        FidelityEvaluator,
        ImageQualityEvaluator,
        PredictionEvaluator,
        QCEvaluator,
        ReproducibilityEvaluator,
    )

    from .evaluators.site_effects import SiteEffectsEvaluator

    return [ImageQualityEvaluator, ReproducibilityEvaluator, PredictionEvaluator, FidelityEvaluator, QCEvaluator, SiteEffectsEvaluator]
