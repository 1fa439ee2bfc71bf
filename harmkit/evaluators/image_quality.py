"""Image-quality evaluator: how much did an image harmonizer change each scan?

For every scan an image stage changed, SSIM, PSNR and NRMSE between the
original and the harmonized image (the paper's Fig. 5), inside the body mask
and inside every other mask the scan has (organs, reference tissue, lesion):

* **data range** ``L``: max − min of the *original* image inside its body
  mask (the whole image when there is no body mask), the same ``L`` for every
  mask of a scan; stated per scan in the table (``data_range``);
* **SSIM**: 3-D SSIM (scikit-image, 7³ uniform window, K1 = 0.01, K2 = 0.03)
  computed on the mask's bounding box (padded by 3 voxels) and averaged over
  the mask's voxels;
* **PSNR** = 10 log10(L² / MSE) over the mask's voxels (dB);
* **NRMSE** = ‖original − harmonized‖ / ‖original‖ over the mask's voxels
  (Euclidean normalisation; 0 means unchanged).

Methods without image stages leave images unchanged and get no row. A row
without stages whose scans the bench replaced (``oracle-grid``: each scan's
counterfactual at the reference, resampled onto the scan's grid) is measured
too: the SSIM of a perfect translation, against which a harmonizer's SSIM is
read. A new noise realisation alone lowers it well below 1.
"""

from __future__ import annotations

from pathlib import Path
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
from ._common import boxplot, finite, records, row_key, savefig


def _mask_box(mask: np.ndarray, pad: int = 3, least: int = 7) -> tuple[np.ndarray, np.ndarray]:
    """Bounds (lo, hi) of ``mask``'s voxels padded by ``pad``, widened to ``least`` voxels where the volume allows."""
    idx = np.argwhere(mask)
    lo = np.maximum(idx.min(axis=0) - pad, 0)
    hi = np.minimum(idx.max(axis=0) + pad + 1, mask.shape)
    for axis in range(3):
        while hi[axis] - lo[axis] < least and (lo[axis] > 0 or hi[axis] < mask.shape[axis]):
            lo[axis] = max(lo[axis] - 1, 0)
            hi[axis] = min(hi[axis] + 1, mask.shape[axis])
    return lo, hi


def metrics_per_mask(
    original: np.ndarray, other: np.ndarray, masks: dict[str, np.ndarray], data_range: float
) -> dict[str, dict[str, float]]:
    """SSIM, PSNR, NRMSE of ``other`` against ``original`` inside each of ``masks`` (arrays z, y, x).

    One SSIM map serves every mask: it is computed once on the box holding every mask's voxels padded by 3 (the
    7^3 window's reach), so each mask voxel's value is the one a box around that mask alone would give.
    """
    from skimage.metrics import structural_similarity

    masks = {name: np.asarray(mask, dtype=bool) for name, mask in masks.items()}
    boxes = [_mask_box(mask) for mask in masks.values() if mask.any()]
    ssim_map, box = None, None
    if boxes:
        lo = np.min([b[0] for b in boxes], axis=0)
        hi = np.max([b[1] for b in boxes], axis=0)
        box = tuple(slice(int(start), int(stop)) for start, stop in zip(lo, hi))
        if min(stop - start for start, stop in zip(lo, hi)) >= 7:  # the SSIM window needs 7 voxels along each axis
            _, ssim_map = structural_similarity(
                original[box].astype(float),
                other[box].astype(float),
                data_range=data_range,
                full=True,
                win_size=7,
            )
    results = {}
    for name, mask in masks.items():
        if not mask.any():
            results[name] = {"ssim": float("nan"), "psnr": float("nan"), "nrmse": float("nan"), "n_voxels": 0}
            continue
        a = original[mask].astype(float)
        b = other[mask].astype(float)
        mse = float(np.mean((a - b) ** 2))
        psnr = float("inf") if mse == 0 else 10 * np.log10(data_range**2 / mse)
        norm = float(np.sqrt(np.sum(a**2)))
        nrmse = float(np.sqrt(np.sum((a - b) ** 2)) / norm) if norm > 0 else float("nan")
        ssim = float("nan") if ssim_map is None else float(ssim_map[mask[box]].mean())
        results[name] = {"ssim": ssim, "psnr": psnr, "nrmse": nrmse, "n_voxels": int(mask.sum())}
    return results


def masked_metrics(original: np.ndarray, other: np.ndarray, mask: np.ndarray, data_range: float) -> dict[str, float]:
    """SSIM, PSNR, NRMSE of ``other`` against ``original`` inside ``mask`` (arrays z, y, x)."""
    return metrics_per_mask(original, other, {"mask": mask}, data_range)["mask"]


def quality_one(item: tuple) -> list[dict[str, Any]]:
    """Worker: metrics of one harmonized scan in every mask."""
    import SimpleITK as sitk

    original_scan, harmonized_scan = item
    original = sitk.GetArrayFromImage(original_scan.load_image())
    harmonized = sitk.GetArrayFromImage(harmonized_scan.load_image())
    masks = {name: sitk.GetArrayFromImage(original_scan.load_mask(name)) > 0 for name in sorted(original_scan.masks)}
    body = masks.get("body")
    values = original[body] if body is not None and body.any() else original
    data_range = float(values.max() - values.min()) or 1.0
    if body is None:
        masks = {"image": np.ones_like(original, dtype=bool), **masks}
    metrics = metrics_per_mask(original, harmonized, masks, data_range)
    return [{"mask": name, "data_range": data_range, **values} for name, values in metrics.items()]


SUMMARY_COLUMNS = (
    SummaryColumn(
        "ssim",
        "SSIM",
        ".3f",
        description="SSIM of the harmonized vs the original image in the body mask",
    ),
    SummaryColumn("psnr", "PSNR (dB)", ".1f", "PSNR", description="the same as PSNR"),
)


def report_section(by_mask) -> list:
    """The Image quality section of the report: what the metrics are, per mask, the box plots."""
    rows = [
        [
            r["method"],
            r["reference"],
            r["mask"],
            fmt(r.get("ssim_mean"), ".3f"),
            fmt(r.get("ssim_min"), ".3f"),
            fmt(r.get("psnr_mean"), ".1f"),
            fmt(r.get("nrmse_mean"), ".3f"),
        ]
        for r in records(by_mask)
    ]
    return [
        "Data range: max - min of the original image's SUV inside its body mask (per scan). SSIM: 3-D, 7^3 uniform "
        "window, K1=0.01, K2=0.03, averaged over mask voxels. NRMSE: ||original - harmonized|| / ||original|| over "
        "mask voxels.",
        ReportTable(
            [
                "method",
                "reference",
                "mask",
                "SSIM mean",
                "SSIM min",
                "PSNR mean (dB)",
                "NRMSE mean",
            ],
            rows,
            "quality",
        ),
        ReportFigure("quality_boxplots", "image quality per mask"),
    ]


class ImageQualityEvaluator(Evaluator):
    """SSIM, PSNR and NRMSE between original and harmonized images, in the body mask and every organ mask."""

    name = "image-quality"
    title = "Image quality (harmonized vs original)"
    description = "SSIM/PSNR/NRMSE of harmonized vs original images inside the body and organ masks"

    def evaluate(self, ctx) -> EvaluationResult:
        import pandas as pd

        # image methods, and rows whose scans the bench itself replaced (oracle-grid)
        methods = [m for m in ctx.methods if m.image_stages or any(ctx.changed_scans(m, ref) for ref in ctx.references)]
        if not methods:
            raise EvaluatorSkipped("no method has an image stage, so no image was changed")
        rows = []
        for method in methods:
            for ref in ctx.references:
                changed = ctx.changed_scans(method, ref)
                if not changed:
                    continue
                pairs = [(ctx.cohort.get(sid), scan) for sid, scan in changed.items()]
                key_parts = (
                    sorted((sid, str(s.image)) for sid, s in changed.items()),
                    sorted(ctx.cohort.mask_names),
                    "v1",
                )

                def compute(pairs=pairs, method=method, ref=ref):
                    results = ctx.map(
                        quality_one,
                        pairs,
                        label=f"image quality {method.label} -> {ref}",
                    )
                    out = []
                    for (orig, _), r in zip(pairs, results):
                        if r.ok:
                            out += [
                                {
                                    "subject_id": orig.subject_id,
                                    "site": orig.site,
                                    "site_group": orig.group,
                                    **row,
                                }
                                for row in r.value
                            ]
                    return out

                for row in ctx.memo("image-quality", key_parts, compute):
                    rows.append({"method": method.label, "reference": ref, **row})
        table = pd.DataFrame(rows)
        summary: dict[str, Any] = {}
        if not table.empty:
            table = table.replace([np.inf], np.nan)
            for (label, ref), sub in table.groupby(["method", "reference"], sort=False):
                entry = {}
                for mask, msub in sub.groupby("mask"):
                    for metric in ("ssim", "psnr", "nrmse"):
                        entry[f"{metric}_{mask}_mean"] = finite(msub[metric].mean())
                        entry[f"{metric}_{mask}_min"] = finite(msub[metric].min())
                body = "body" if "body" in set(sub["mask"]) else "image"
                entry["ssim"] = entry.get(f"ssim_{body}_mean")
                entry["psnr"] = entry.get(f"psnr_{body}_mean")
                entry["nrmse"] = entry.get(f"nrmse_{body}_mean")
                entry["quality_mask"] = body
                entry["n_scans"] = int(sub["subject_id"].nunique())
                summary[row_key(label, ref)] = entry
        figures = {}
        if not table.empty and ctx.figure_dir is not None:
            figures["quality_boxplots"] = self._figure(table, ctx.figure_dir / "image_quality.png")
        by_mask = (
            table.groupby(["method", "reference", "mask"])[["ssim", "psnr", "nrmse"]]
            .agg(["mean", "std", "min", "max"])
            .reset_index()
            if not table.empty
            else pd.DataFrame()
        )
        if not by_mask.empty:
            by_mask.columns = ["_".join(c).strip("_") for c in by_mask.columns]
        return EvaluationResult(
            self.name,
            tables={"per_scan": table, "by_mask": by_mask},
            figures=figures,
            summary={
                "by_method": summary,
                "data_range": "max - min of the original image's SUV inside its body mask (per scan)",
                "ssim": "3-D, 7^3 uniform window, K1=0.01, K2=0.03, averaged over mask voxels",
                "nrmse": "||original - harmonized|| / ||original|| over mask voxels",
            },
            columns=list(SUMMARY_COLUMNS),
            report=report_section(by_mask),
        )

    @staticmethod
    def _figure(table, path: Path):
        from ._common import plt as _plt

        plt = _plt()
        metrics = ("ssim", "psnr", "nrmse")
        masks = list(dict.fromkeys(table["mask"]))
        combos = list(dict.fromkeys(zip(table["method"], table["reference"])))
        fig, axes = plt.subplots(
            len(metrics),
            1,
            figsize=(max(6, 1.1 * len(masks) * len(combos)), 2.6 * len(metrics)),
            squeeze=False,
        )
        for ax, metric in zip(axes[:, 0], metrics):
            data, labels, colors = [], [], []
            for mask in masks:
                for ci, (label, ref) in enumerate(combos):
                    sub = table[(table["mask"] == mask) & (table["method"] == label) & (table["reference"] == ref)][
                        metric
                    ].dropna()
                    data.append(sub.to_numpy())
                    labels.append(f"{mask}\n{label}->{ref}")
                    colors.append(f"C{ci}")
            parts = boxplot(ax, data, labels, patch_artist=True)
            for patch, color in zip(parts["boxes"], colors):
                patch.set_facecolor(color)
                patch.set_alpha(0.5)
            ax.set_ylabel(metric.upper())
            ax.tick_params(axis="x", labelsize=6)
        axes[0, 0].set_title(
            "original vs harmonized, per mask (data range: original SUV range in the body mask)",
            fontsize=9,
        )
        return savefig(fig, path)
