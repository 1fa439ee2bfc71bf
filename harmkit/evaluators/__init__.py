"""harmkit's built-in evaluators, registered through ``harmkit.builtin``.

Each takes the :class:`~harmkit.bench.context.BenchContext` of a bench run
and returns an :class:`~harmkit.interfaces.EvaluationResult` whose
``summary["by_method"]`` maps ``"<method>|<reference>"`` to the numbers shown
in the summary table of the report.
"""

from ._common import row_key
from .fidelity import FidelityEvaluator
from .gap import GapClosedEvaluator
from .image_quality import ImageQualityEvaluator
from .prediction import PredictionEvaluator
from .qc import QCEvaluator
from .reproducibility import ReproducibilityEvaluator
from .site_effects import SiteEffectsEvaluator

__all__ = [
    "FidelityEvaluator",
    "GapClosedEvaluator",
    "ImageQualityEvaluator",
    "PredictionEvaluator",
    "QCEvaluator",
    "ReproducibilityEvaluator",
    "SiteEffectsEvaluator",
    "row_key",
]
