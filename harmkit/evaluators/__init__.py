"""harmkit's built-in evaluators, registered through ``harmkit.builtin``.

Each takes the :class:`~harmkit.bench.protocol.BenchContext` of a bench run
and returns an :class:`~harmkit.interfaces.EvaluationResult` whose
``summary["by_method"]`` maps ``"<method>|<reference>"`` to the numbers shown
in the summary table of the report.
"""

from .fidelity import FidelityEvaluator
from .image_quality import ImageQualityEvaluator
from .prediction import PredictionEvaluator
from .qc import QCEvaluator
from .reproducibility import ReproducibilityEvaluator

__all__ = ["FidelityEvaluator", "ImageQualityEvaluator", "PredictionEvaluator", "QCEvaluator", "ReproducibilityEvaluator"]

from ._common import row_key  # noqa: E402
