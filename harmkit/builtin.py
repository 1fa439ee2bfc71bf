"""harmkit's own evaluators, registered through the ``harmkit`` entry point like any plugin."""

from __future__ import annotations

from .hookspecs import hookimpl


@hookimpl
def harmkit_evaluators() -> list[type]:
    from .evaluators import (
        FidelityEvaluator,
        GapClosedEvaluator,
        ImageQualityEvaluator,
        PredictionEvaluator,
        QCEvaluator,
        ReproducibilityEvaluator,
        SiteEffectsEvaluator,
    )

    # The order of the report's sections and of the summary's columns (an evaluator still runs after those it requires).
    return [
        PredictionEvaluator,
        ReproducibilityEvaluator,
        SiteEffectsEvaluator,
        ImageQualityEvaluator,
        FidelityEvaluator,
        QCEvaluator,
        GapClosedEvaluator,  # reads the others' numbers: last
    ]
