"""harmkit: harmonize multicenter PET data and benchmark harmonization methods on equal terms.

>>> import harmkit as hk
>>> cohort = hk.load_cohort("manifest.csv")          # doctest: +SKIP
>>> combat = hk.get_harmonizer("combat")             # doctest: +SKIP
"""

from __future__ import annotations

__version__ = "0.1.0"

from .data import Cohort, Scan
from .errors import HarmkitError
from .hookspecs import hookimpl
from .interfaces import (
    EvaluationResult,
    Evaluator,
    FeatureExtractor,
    FeatureHarmonizer,
    ImageHarmonizer,
)
from .manifest import load_cohort
from .methods import parse_method, parse_methods
from .plugins import (
    get_evaluator,
    get_extractor,
    get_harmonizer,
    list_plugins,
    load_model,
)

__all__ = [
    "__version__",
    "Cohort",
    "Scan",
    "load_cohort",
    "HarmkitError",
    "hookimpl",
    "ImageHarmonizer",
    "FeatureHarmonizer",
    "FeatureExtractor",
    "Evaluator",
    "EvaluationResult",
    "parse_method",
    "parse_methods",
    "get_harmonizer",
    "get_extractor",
    "get_evaluator",
    "list_plugins",
    "load_model",
    "validate",
    "simulate",
    "extract",
    "train",
    "harmonize",
    "bench",
    "diagnose",
]

# Entry points whose modules pull in heavier dependencies load on first use.
_LAZY = {
    "validate": ("harmkit.validation", "validate_manifest"),
    "simulate": ("harmkit.simulation", "simulate"),
    "extract": ("harmkit.extraction", "extract"),
    "train": ("harmkit.image_harmonization", "train"),
    "harmonize": ("harmkit.image_harmonization", "harmonize"),
    "bench": ("harmkit.bench", "run_bench"),
    "diagnose": ("harmkit.diagnostics", "diagnose"),
}


def __getattr__(name: str):
    if name in _LAZY:
        import importlib

        module_name, attribute = _LAZY[name]
        return getattr(importlib.import_module(module_name), attribute)
    raise AttributeError(f"module 'harmkit' has no attribute {name!r}")
