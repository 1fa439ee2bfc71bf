"""Headline evaluator: how much of the gap from no harmonization to the ceiling does each method close?

For every metric that other evaluators put in the summary and that has a
direction, and for every method and reference, the **gap closed** is::

    (metric(method) - metric(none)) / (metric(oracle) - metric(none))

where ``oracle`` is the ceiling row (each non-reference scan replaced by the
same subject really scanned at the reference site; simulated or paired
cohorts only) and ``none`` the floor. 0 = no better than no harmonization,
1 = as good as a real scan at the reference site, < 0 = worse than doing
nothing. The ``resample`` row (the image pipeline with an identity model)
shows what an image method gets for free. A gap smaller than the metric's
noise is not divided by (``min_gap``).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ..bench.formatting import fmt
from ..errors import EvaluatorSkipped
from ..interfaces import (
    EvaluationResult,
    Evaluator,
    ReportFigure,
    ReportTable,
    SummaryColumn,
)
from ._common import finite, row_key, savefig

# (summary key, label, evaluator that provides it, minimum |oracle - none| to divide by)
METRICS = (
    ("auc_mean", "AUC", "prediction", 0.01),
    ("overlap_voi", "overlap VOI", "reproducibility", 1.0),
    ("overlap_ref", "overlap ref. tissue", "reproducibility", 1.0),
    ("site_auc_{voi}", "site AUC ({voi})", "site-effects", 0.02),
    ("cf_feature_ccc", "CCC vs truth", "fidelity", 0.01),
)


class GapClosedEvaluator(Evaluator):
    """Each method's share of the none-to-oracle gap, per metric: the report's headline figure."""

    name = "gap-closed"
    title = "Headline: share of the gap from `none` (0) to `oracle` (1) that each method closes"
    description = "Headline: each method's share of the gap between no harmonization and the oracle, per metric"
    placement = "headline"

    def evaluate(self, context) -> EvaluationResult:
        oracle = next((m for m in context.methods if m.control == "oracle"), None)
        if oracle is None:
            raise EvaluatorSkipped("the cohort has no ground truth, so there is no oracle row to measure a gap against")
        rows: dict[str, dict[str, Any]] = {}
        metrics = self._metrics(context)
        table = []
        for ref in context.references:
            base = self._row(context, "none", ref)
            top = self._row(context, oracle.label, ref)
            for method in context.methods:
                if method.is_baseline:
                    continue
                values = self._row(context, method.label, ref)
                entry: dict[str, Any] = {}
                for key, label, minimum in metrics:
                    gap = _gap(values.get(key), base.get(key), top.get(key), minimum)
                    entry[f"gap_{key}"] = gap
                    table.append(
                        {
                            "method": method.label,
                            "reference": ref,
                            "metric": label,
                            "gap_closed": gap,
                            "none": finite(base.get(key)),
                            "method_value": finite(values.get(key)),
                            "oracle": finite(top.get(key)),
                        }
                    )
                rows[row_key(method.label, ref)] = entry
        if not table:
            raise EvaluatorSkipped("no metric has a gap between none and oracle")
        import pandas as pd

        frame = pd.DataFrame(table)
        figures = {}
        if context.figure_dir is not None:
            figures["gap_closed"] = self._figure(frame, context.figure_dir / "gap_closed.png")
        columns = [
            SummaryColumn(
                f"gap_{key}",
                f"gap closed: {label}",
                "+.0%",
                f"gap {label}",
                "gap closed (0 = none, 1 = oracle)",
            )
            for key, label, _ in metrics[:3]
        ]
        report = [
            "Each cell: (method − none) / (oracle − none) for that metric. 0 = no better than no harmonization, "
            "1 = as good as the same subject really scanned at the reference site, below 0 = worse than doing nothing. "
            "`resample` is the image pipeline with an identity model (the floor an image method must beat). "
            "Empty: the oracle does not differ from `none` by more than the metric's noise.",
            ReportFigure("gap_closed", "gap closed per method and metric"),
            ReportTable(
                [
                    "method",
                    "reference",
                    "metric",
                    "none",
                    "method",
                    "oracle",
                    "gap closed",
                ],
                [
                    [
                        r["method"],
                        r["reference"],
                        r["metric"],
                        fmt(r["none"], ".3f"),
                        fmt(r["method_value"], ".3f"),
                        fmt(r["oracle"], ".3f"),
                        fmt(r["gap_closed"], "+.0%"),
                    ]
                    for r in table
                ],
                "gap",
            ),
        ]
        return EvaluationResult(
            self.name,
            tables={"gap_closed": frame},
            summary={"by_method": rows, "oracle": oracle.label},
            figures=figures,
            columns=columns,
            report=report,
        )

    @staticmethod
    def _metrics(context) -> list[tuple[str, str, float]]:
        out = []
        for key, label, evaluator, minimum in METRICS:
            result = context.result(evaluator)
            if result is None or result.skipped:
                continue
            if "{voi}" in key:
                out += [(key.format(voi=voi), label.format(voi=voi), minimum) for voi in context.vois]
            else:
                out.append((key, label, minimum))
        return out

    @staticmethod
    def _row(context, label: str, reference: str) -> dict[str, Any]:
        merged: dict[str, Any] = {}
        for result in context.results.values():
            if not result.skipped:
                merged.update(result.summary.get("by_method", {}).get(row_key(label, reference), {}))
        return merged

    @staticmethod
    def _figure(frame, path):
        from ._common import plt as _plt

        plt = _plt()
        refs = list(dict.fromkeys(frame["reference"]))
        fig, axes = plt.subplots(
            1,
            len(refs),
            figsize=(
                1.6 + 1.5 * frame["metric"].nunique() * len(refs),
                0.9 + 0.45 * frame["method"].nunique(),
            ),
            squeeze=False,
        )
        for ax, ref in zip(axes[0], refs):
            sub = frame[frame["reference"] == ref].pivot(index="method", columns="metric", values="gap_closed")
            sub = sub.reindex(list(dict.fromkeys(frame[frame["reference"] == ref]["method"])))
            sub = sub[list(dict.fromkeys(frame["metric"]))]
            values = sub.to_numpy(dtype=float)
            ax.imshow(
                np.clip(np.nan_to_num(values, nan=0.0), -1, 1),
                cmap="RdYlGn",
                vmin=-1,
                vmax=1,
                aspect="auto",
            )
            for (i, j), value in np.ndenumerate(values):
                ax.text(
                    j,
                    i,
                    "–" if not np.isfinite(value) else f"{value:+.0%}",
                    ha="center",
                    va="center",
                    fontsize=8,
                )
            ax.set_xticks(range(values.shape[1]))
            ax.set_xticklabels(sub.columns, rotation=30, ha="right", fontsize=8)
            ax.set_yticks(range(values.shape[0]))
            ax.set_yticklabels(sub.index, fontsize=8)
            ax.set_title(f"towards {ref}", fontsize=9)
        fig.tight_layout()
        return savefig(fig, path)


def _gap(value: Any, base: Any, top: Any, minimum: float) -> float | None:
    if value is None or base is None or top is None:
        return None
    span = float(top) - float(base)
    if not np.isfinite(span) or abs(span) < minimum:
        return None
    return finite((float(value) - float(base)) / span)
