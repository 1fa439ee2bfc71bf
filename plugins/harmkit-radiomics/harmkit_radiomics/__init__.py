"""IBSI radiomics features for harmkit, computed with pyradiomics."""

from .extractor import DEFAULT_CLASSES, PAPER_FEATURE_COUNTS, RadiomicsExtractor

__version__ = "0.1.0"
__all__ = [
    "RadiomicsExtractor",
    "DEFAULT_CLASSES",
    "PAPER_FEATURE_COUNTS",
    "__version__",
]
