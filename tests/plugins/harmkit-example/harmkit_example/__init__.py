"""harmkit-example: a tiny third-party harmkit plugin (per-site z-score feature harmonization)."""

__version__ = "0.1.0"
