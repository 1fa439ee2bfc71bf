"""Small helpers shared by the built-in evaluators."""

from __future__ import annotations

import math
from typing import Any

from ..bench.context import row_key  # noqa: F401 - one definition of a summary row's key
from ..figures import boxplot, plt, savefig  # noqa: F401 - the evaluators' figure helpers


def method_rows(ctx, by_method: dict[str, dict[str, Any]]) -> list[dict[str, Any]]:
    """``[{"method", "reference", **by_method[row]}]`` for every method and reference, in the run's order."""
    return [
        {
            "method": m.label,
            "reference": ref,
            **by_method.get(row_key(m.label, ref), {}),
        }
        for m in ctx.methods
        for ref in ctx.references
    ]


def records(frame) -> list[dict[str, Any]]:
    """The rows of a data frame as dicts (none for an empty or missing frame)."""
    return [] if frame is None or len(frame) == 0 else frame.to_dict("records")


def finite(value: Any) -> Any:
    """``None`` for NaN/inf (JSON has no NaN), plain floats otherwise."""
    if value is None:
        return None
    try:
        value = float(value)
    except (TypeError, ValueError):
        return value
    return value if math.isfinite(value) else None
