"""How the bench prints numbers: one rule for the report, the terminal and the evaluators' report sections."""

from __future__ import annotations

import math
from typing import Any


def fmt(value: Any, spec: str | None) -> str:
    """How the report prints a number (the test of the report uses the same function)."""
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "–"
    if isinstance(value, str):  # a label, e.g. the name of a test
        return value
    if spec == "p":
        return "<0.0001" if value < 1e-4 else f"{value:.4f}"
    if spec == "d":
        return str(int(value))
    return format(value, spec or "")


def interval_text(row: dict[str, Any], low: str, high: str, spec: str = ".3f", sep: str = "–") -> str:
    """``[low–high]`` of two keys of ``row`` (``sep=", "`` for signed bounds); ``–`` when both are missing."""
    if row.get(low) is None and row.get(high) is None:
        return "–"
    return f"[{fmt(row.get(low), spec)}{sep}{fmt(row.get(high), spec)}]"


def auc_text(row: dict[str, Any], haberl: bool = False) -> str:
    """Mean AUC over the splits with its corrected (Nadeau-Bengio) 95 % CI, or the paper's with ``haberl``."""
    suffix = "_haberl" if haberl else ""
    return cell_text(row, "auc", f"ci(auc_mean,auc_ci_low{suffix},auc_ci_high{suffix})")


def cell_text(row: dict[str, Any], key: str, spec: str | None) -> str:
    """One cell of a summary row: ``row[key]`` in format ``spec`` (see :func:`fmt`).

    ``spec = "ci(MEAN,LOW,HIGH)"`` prints a mean with its interval from three keys of the row
    (``0.727 [0.629–0.826]``), whatever ``key`` is.
    """
    if spec and spec.startswith("ci(") and spec.endswith(")"):
        mean, low, high = (part.strip() for part in spec[3:-1].split(","))
        if row.get(mean) is None:
            return "–"
        return f"{row[mean]:.3f} {interval_text(row, low, high)}"
    return fmt(row.get(key), spec)
