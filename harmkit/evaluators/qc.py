"""QC evaluator: harmonized scans whose change looks suspicious, with their MIPs.

The paper reports image-harmonization artefacts near the edges of the field
of view. For every scan an image stage changed, the signed percent
difference ``100 · (harmonized − original) / original`` is computed where the
original is at least half its median body SUV (below that a percent is
meaningless), inside the body mask (or where SUV > 0.1 without one). The
*edge band* is the outer ``edge_fraction`` of the image along each axis.

A scan is **flagged** when the mean absolute percent difference in the edge
band exceeds ``threshold`` percent *and* is more than twice that of the
interior ("edge change"), or when the interior's exceeds twice ``threshold``
("large change everywhere": a harmonizer that rewrote the image). Flagged
scans (and, for each method, the scan with the largest edge change) are shown
as coronal maximum-intensity projections: original, harmonized, and the mean
percent difference along the projection axis.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ..bench.formatting import fmt
from ..errors import EvaluatorSkipped
from ..interfaces import EvaluationResult, Evaluator, ReportTable, SummaryColumn
from ._common import finite, row_key, savefig


def edge_band(shape: tuple[int, ...], fraction: float) -> np.ndarray:
    """Boolean array: True within ``fraction`` of the extent from any face of the volume."""
    band = np.zeros(shape, dtype=bool)
    for axis, n in enumerate(shape):
        k = max(1, int(round(fraction * n)))
        index = [slice(None)] * len(shape)
        index[axis] = slice(0, k)
        band[tuple(index)] = True
        index[axis] = slice(n - k, n)
        band[tuple(index)] = True
    return band


def percent_difference(
    original: np.ndarray, harmonized: np.ndarray, body: np.ndarray | None
) -> tuple[np.ndarray, np.ndarray]:
    """Signed percent difference and the mask of voxels where it is defined."""
    region = body.astype(bool) if body is not None else original > 0.1
    if not region.any():
        region = original > 0
    floor = 0.5 * float(np.median(original[region])) if region.any() else 0.0
    valid = region & (original >= max(floor, 1e-6))
    pct = np.zeros_like(original, dtype=np.float32)
    pct[valid] = 100.0 * (harmonized[valid] - original[valid]) / original[valid]
    return pct, valid


def qc_one(item: tuple) -> dict[str, Any]:
    """Worker: edge and interior percent change of one harmonized scan."""
    import SimpleITK as sitk

    original_scan, harmonized_scan, fraction = item
    original = sitk.GetArrayFromImage(original_scan.load_image())
    harmonized = sitk.GetArrayFromImage(harmonized_scan.load_image())
    body = sitk.GetArrayFromImage(original_scan.load_mask("body")) > 0 if "body" in original_scan.masks else None
    pct, valid = percent_difference(original, harmonized, body)
    band = edge_band(original.shape, fraction)
    edge = np.abs(pct[valid & band])
    inner = np.abs(pct[valid & ~band])
    return {
        "edge_mean_abs_pct": float(edge.mean()) if edge.size else float("nan"),
        "edge_p95_abs_pct": float(np.percentile(edge, 95)) if edge.size else float("nan"),
        "interior_mean_abs_pct": float(inner.mean()) if inner.size else float("nan"),
        "mean_pct": float(pct[valid].mean()) if valid.any() else float("nan"),
        "max_abs_pct": float(np.abs(pct[valid]).max()) if valid.any() else float("nan"),
    }


def mip_figure(pairs: list[tuple[str, Any, Any]], path, title: str = ""):
    """Coronal MIPs: one row per ``(caption, original_scan, harmonized_scan)``: original, harmonized, % difference."""
    import SimpleITK as sitk

    from ._common import plt as _plt

    plt = _plt()
    fig, axes = plt.subplots(len(pairs), 3, figsize=(9, 3.0 * len(pairs)), squeeze=False)
    for row, (caption, original_scan, harmonized_scan) in enumerate(pairs):
        original_img = original_scan.load_image()
        original = sitk.GetArrayFromImage(original_img)
        harmonized = sitk.GetArrayFromImage(harmonized_scan.load_image())
        body = sitk.GetArrayFromImage(original_scan.load_mask("body")) > 0 if "body" in original_scan.masks else None
        pct, valid = percent_difference(original, harmonized, body)
        sz, sy, sx = original_img.GetSpacing()[::-1]
        aspect = sz / sx
        vmax = float(np.percentile(original.max(axis=1), 99.5)) or 1.0
        count = valid.sum(axis=1)
        mean_pct = np.where(count > 0, pct.sum(axis=1) / np.maximum(count, 1), 0.0)
        lim = max(5.0, float(np.percentile(np.abs(mean_pct[count > 0]), 99))) if (count > 0).any() else 5.0
        panels = (
            (original.max(axis=1), "gray_r", 0, vmax, "original MIP (SUV)"),
            (harmonized.max(axis=1), "gray_r", 0, vmax, "harmonized MIP (SUV)"),
            (mean_pct, "RdBu_r", -lim, lim, "mean % difference"),
        )
        for col, (data, cmap, lo, hi, label) in enumerate(panels):
            ax = axes[row, col]
            im = ax.imshow(data, cmap=cmap, vmin=lo, vmax=hi, origin="lower", aspect=aspect)
            ax.set_xticks([])
            ax.set_yticks([])
            ax.set_title(f"{caption}\n{label}" if col == 0 else label, fontsize=8)
            fig.colorbar(im, ax=ax, fraction=0.046, pad=0.02)
    if title:
        fig.suptitle(title, fontsize=10)
    return savefig(fig, path)


def report_section(table, fraction: float, threshold: float) -> list:
    """The QC section of the report: the rule, the flagged scans, the MIPs (placed after the blocks)."""
    flagged = table[table["flagged"]].to_dict("records")
    rule = (
        f"Rule: flagged when mean |% difference| in the outer {fraction:.0%} of the volume > {threshold}% and > 2x "
        f"the interior's (edge change), or when the interior's mean |% difference| > {2 * threshold}%. "
        f"Flagged scans: {len(flagged)}. Thresholds: --param qc.edge_fraction=..., --param qc.threshold=...."
    )
    blocks: list = [rule]
    if flagged:
        rows = [
            [
                r["method"],
                r["reference"],
                r["subject_id"],
                r["site"],
                r.get("reason", ""),
                fmt(r["edge_mean_abs_pct"], ".1f"),
                fmt(r["interior_mean_abs_pct"], ".1f"),
            ]
            for r in flagged[:30]
        ]
        blocks.append(
            ReportTable(
                [
                    "method",
                    "reference",
                    "subject",
                    "site",
                    "reason",
                    "edge mean |%diff|",
                    "interior mean |%diff|",
                ],
                rows,
                "qc",
            )
        )
        if len(flagged) > 30:
            blocks.append(f"… and {len(flagged) - 30} more in `tables/qc__flagged.csv`.")
    return blocks


class QCEvaluator(Evaluator):
    """Lists harmonized scans with suspicious changes near the field-of-view edges, with MIPs."""

    name = "qc"
    title = "QC: suspicious changes and MIPs"
    description = "QC: flags harmonized scans with large percent change near the field-of-view edges; MIPs before/after"

    def __init__(self, edge_fraction: float = 0.1, threshold: float = 25.0, examples: int = 2):
        """``edge_fraction``: the outer share of the volume that counts as the edge; ``threshold``: mean |% change|
        that flags a scan (``--param qc.threshold=30``); ``examples``: scans shown as MIPs per method."""
        self.edge_fraction = edge_fraction
        self.threshold = threshold
        self.examples = examples

    def evaluate(self, ctx) -> EvaluationResult:
        import pandas as pd

        if not ctx.image_methods:
            raise EvaluatorSkipped("no method has an image stage, so no image was changed")
        fraction, threshold = self.edge_fraction, self.threshold
        rows = []
        for method in ctx.image_methods:
            for ref in ctx.references:
                changed = ctx.changed_scans(method, ref)
                if not changed:
                    continue
                items = [(ctx.cohort.get(sid), scan, fraction) for sid, scan in changed.items()]

                def compute(items=items, method=method, ref=ref):
                    results = ctx.map(qc_one, items, label=f"QC {method.label} -> {ref}")
                    return [
                        {"subject_id": it[0].subject_id, "site": it[0].site, **r.value}
                        for it, r in zip(items, results)
                        if r.ok
                    ]

                key = (
                    sorted((sid, str(s.image)) for sid, s in changed.items()),
                    fraction,
                    "v1",
                )
                for row in ctx.memo("qc", key, compute):
                    rows.append({"method": method.label, "reference": ref, **row})
        table = pd.DataFrame(rows)
        if table.empty:
            raise EvaluatorSkipped("no harmonized scan to check")
        edge = (table["edge_mean_abs_pct"] > threshold) & (
            table["edge_mean_abs_pct"] > 2 * table["interior_mean_abs_pct"]
        )
        overall = (table["interior_mean_abs_pct"] > 2 * threshold) & ~edge
        table["flagged"] = edge | overall
        table["reason"] = np.where(edge, "edge change", np.where(overall, "large change everywhere", ""))
        figures, summary = {}, {}
        for (label, ref), sub in table.groupby(["method", "reference"], sort=False):
            summary[row_key(label, ref)] = {
                "qc_flagged": int(sub["flagged"].sum()),
                "qc_edge_mean_abs_pct": finite(sub["edge_mean_abs_pct"].mean()),
                "qc_interior_mean_abs_pct": finite(sub["interior_mean_abs_pct"].mean()),
            }
            if ctx.figure_dir is None:
                continue
            worst = sub.sort_values("edge_mean_abs_pct", ascending=False)
            chosen = list(worst[worst["flagged"]]["subject_id"][:4])
            for sid in worst["subject_id"]:
                if len(chosen) >= self.examples:
                    break
                if sid not in chosen:
                    chosen.append(sid)
            pairs = []
            for sid in chosen:
                r = sub[sub["subject_id"] == sid].iloc[0]
                flag = "FLAGGED " if r["flagged"] else ""
                pairs.append(
                    (
                        f"{flag}{sid} ({r['site']}) edge {r['edge_mean_abs_pct']:.1f}%",
                        ctx.cohort.get(sid),
                        ctx.changed_scans(label, ref)[sid],
                    )
                )
            safe = f"{label}_{ref}".replace("+", "-plus-").replace("/", "_")
            figures[f"mip_{label}_{ref}"] = mip_figure(
                pairs,
                ctx.figure_dir / f"mip_{safe}.png",
                title=f"{label}: harmonized towards {ref}",
            )
        return EvaluationResult(
            self.name,
            tables={"per_scan": table, "flagged": table[table["flagged"]]},
            figures=figures,
            summary={
                "by_method": summary,
                "edge_fraction": fraction,
                "threshold_pct": threshold,
                "rule": (
                    f"flagged when mean |% difference| in the outer {fraction:.0%} of the volume > {threshold}% and > "
                    f"2x the interior's (edge change), or when the interior's mean |% difference| > {2 * threshold}% "
                    "(large change everywhere)"
                ),
                "n_flagged": int(table["flagged"].sum()),
            },
            columns=[
                SummaryColumn(
                    "qc_flagged",
                    "QC flagged",
                    "d",
                    "QC flag",
                    description=("harmonized scans with a suspicious change (see the QC section)"),
                )
            ],
            report=report_section(table, fraction, threshold),
        )
