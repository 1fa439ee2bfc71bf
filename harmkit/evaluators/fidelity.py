"""Fidelity evaluator: harmonized scans against the same subject really scanned at the reference site.

Only a simulated cohort has this ground truth: the simulator renders every
subject through every site's scanner (``counterfactuals.csv``) and keeps the
true activity map (``truth/``). For each scan of a non-reference group
harmonized towards reference group ``R``, its counterfactual is the same
subject rendered by the first site of ``R`` (alphabetically) that has one.

* **voxel fidelity** (image stages): SSIM and PSNR of the harmonized image
  against the counterfactual (resampled onto the scan's grid, linear, when the
  grids differ), inside the scan's body mask, data range = the
  counterfactual's SUV range in that mask. The baseline row compares the
  *unharmonized* scan with the counterfactual: the distance harmonization
  should shrink.
* **feature fidelity** (every method): per feature, the error of the
  harmonized features against the counterfactual's features, as the mean
  absolute error divided by the counterfactual feature's SD across subjects
  (``nMAE``), and Lin's concordance correlation (``CCC``); averaged per
  feature class and overall. Feature stages fitted on every row.
* **oracle AUC**: the prediction protocol (same splits, same classifier) on
  features from the truth images; **gap closed** =
  (AUC_method − AUC_none) / (AUC_oracle − AUC_none), reported when the gap
  exceeds 0.01.
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
from ._common import finite, method_rows, row_key


def voxel_one(item: tuple) -> dict[str, Any]:
    """Worker: SSIM/PSNR of an image against its counterfactual inside the body mask."""
    import SimpleITK as sitk

    from ..imageio import same_geometry
    from .image_quality import masked_metrics

    scan, original_scan, cf_scan = item
    image = scan.load_image()
    cf = cf_scan.load_image()
    if not same_geometry(image, cf):
        cf = sitk.Resample(cf, image, sitk.Transform(), sitk.sitkLinear, 0.0, sitk.sitkFloat32)
    a = sitk.GetArrayFromImage(cf)
    b = sitk.GetArrayFromImage(image)
    body = (
        sitk.GetArrayFromImage(original_scan.load_mask("body")) > 0
        if "body" in original_scan.masks
        else np.ones_like(a, dtype=bool)
    )
    data_range = float(a[body].max() - a[body].min()) or 1.0
    metrics = masked_metrics(a, b, body, data_range)
    return {
        "ssim": metrics["ssim"],
        "psnr": metrics["psnr"],
        "nrmse": metrics["nrmse"],
        "data_range": data_range,
    }


SUMMARY_COLUMNS = (
    SummaryColumn(
        "cf_ssim",
        "SSIM vs truth scan",
        ".3f",
        "SSIM truth",
        description=("SSIM of the harmonized image with the same subject scanned at the reference site (ground truth)"),
    ),
    SummaryColumn(
        "cf_feature_ccc",
        "CCC vs truth features",
        ".3f",
        "CCC truth",
        description=("mean concordance of the harmonized features with that scan's features"),
    ),
    SummaryColumn(
        "gap_closed",
        "gap closed",
        "+.0%",
        group="prediction",
        description=("share of the baseline-to-oracle AUC gap the method closes"),
    ),
)


def report_section(rows: list[dict], oracle: dict | None, oracle_note: str | None, source: str) -> list:
    """The Fidelity section of the report: the oracle AUC, what the ground truth is, the table, the figure."""
    if oracle:
        first = (
            f"Oracle AUC (features of the true activity maps, same splits; corrected 95 % CI): "
            f"{fmt(oracle['auc_mean'], '.3f')} "
            f"[{fmt(oracle['auc_ci_low'], '.3f')}–{fmt(oracle['auc_ci_high'], '.3f')}]. "
        )
    else:
        first = f"No oracle AUC: {oracle_note}. "
    text = (
        first + f"Ground truth: {source}. nMAE: mean |harmonized - counterfactual| / SD of the counterfactual "
        "feature across subjects. Voxels: SSIM/PSNR vs counterfactual inside the body mask; data range = "
        "counterfactual's SUV range there."
    )
    table = [
        [
            r["method"],
            r["reference"],
            fmt(r.get("cf_ssim"), ".3f"),
            fmt(r.get("cf_psnr"), ".1f"),
            fmt(r.get("cf_feature_nmae"), ".3f"),
            fmt(r.get("cf_feature_ccc"), ".3f"),
            fmt(r.get("gap_closed"), "+.0%"),
        ]
        for r in rows
    ]
    header = [
        "method",
        "reference",
        "SSIM vs counterfactual",
        "PSNR vs counterfactual",
        "feature nMAE (median)",
        "feature CCC (mean)",
        "gap closed",
    ]
    return [
        text,
        ReportTable(header, table, "fidelity"),
        ReportFigure("fidelity_ccc", "feature fidelity per class"),
    ]


class FidelityEvaluator(Evaluator):
    """Harmonized vs counterfactual (same subject at the reference site): voxels, features, oracle AUC, gap closed."""

    name = "fidelity"
    title = "Fidelity against the ground truth"
    requires = ("prediction",)
    description = (
        "Ground-truth fidelity (simulated cohorts): harmonized vs counterfactual images and features, oracle AUC, "
        "gap closed"
    )

    def evaluate(self, ctx) -> EvaluationResult:
        import pandas as pd

        from .. import stats

        if not ctx.ground_truth:
            raise EvaluatorSkipped(str(ctx.fidelity_skipped or "the cohort has no ground truth"))
        voxel_rows, feature_rows = [], []
        summary: dict[str, dict] = {}
        # -- voxel fidelity ------------------------------------------------------
        for ref in ctx.references:
            subjects = [s for s in ctx.cohort if s.group != ref]
            variants = [("none", {s.subject_id: s for s in subjects})]
            variants += [(m.label, ctx.changed_scans(m, ref)) for m in ctx.image_methods]
            done_images: dict[str, list] = {}
            for label, scans in variants:
                items, meta = [], []
                for original in subjects:
                    scan = scans.get(original.subject_id)
                    cf = ctx.counterfactual(original.subject_id, ref)
                    if scan is None or cf is None:
                        continue
                    items.append((scan, original, cf))
                    meta.append((original.subject_id, original.site, cf.site))
                if not items:
                    continue
                key = (
                    sorted((m[0], str(i[0].image), str(i[2].image)) for m, i in zip(meta, items)),
                    "v1",
                )
                image_key = str(key)
                if image_key not in done_images:

                    def compute(items=items, meta=meta, label=label, ref=ref):
                        results = ctx.map(voxel_one, items, label=f"fidelity {label} -> {ref}")
                        return [
                            {
                                "subject_id": m[0],
                                "site": m[1],
                                "counterfactual_site": m[2],
                                **r.value,
                            }
                            for m, r in zip(meta, results)
                            if r.ok
                        ]

                    done_images[image_key] = ctx.memo("fidelity-voxels", key, compute)
                for row in done_images[image_key]:
                    voxel_rows.append({"method": label, "reference": ref, **row})
        voxels = pd.DataFrame(voxel_rows).replace([np.inf], np.nan)
        # -- feature fidelity ----------------------------------------------------
        voi = ctx.config.voi
        cf_table = ctx.cf_features.get(voi)
        if cf_table is not None:
            columns = [c for c in ctx.feature_columns(voi) if c in cf_table.columns]
            for method in ctx.methods:
                for ref in ctx.references:
                    harmonized = ctx.harmonized_features(method, ref, voi)
                    pairs = []
                    for original in ctx.cohort:
                        if original.group == ref:
                            continue
                        cf = ctx.counterfactual(original.subject_id, ref)
                        if cf is not None and cf.subject_id in cf_table.index:
                            pairs.append((original.subject_id, cf.subject_id))
                    if len(pairs) < 3:
                        continue
                    h = harmonized.loc[[p[0] for p in pairs], columns].to_numpy(float)
                    c = cf_table.loc[[p[1] for p in pairs], columns].to_numpy(float)
                    for j, feature in enumerate(columns):
                        sd = np.nanstd(c[:, j], ddof=1)
                        nmae = float(np.nanmean(np.abs(h[:, j] - c[:, j])) / sd) if sd > 0 else float("nan")
                        feature_rows.append(
                            {
                                "method": method.label,
                                "reference": ref,
                                "feature": feature,
                                "class": ctx.feature_classes.get(feature, feature.split("_")[0]),
                                "nmae": nmae,
                                "ccc": stats.concordance_correlation(h[:, j], c[:, j]),
                                "n_subjects": len(pairs),
                            }
                        )
        features = pd.DataFrame(feature_rows)
        by_class = (
            features.groupby(["method", "reference", "class"], sort=False)
            .agg(nmae_median=("nmae", "median"), ccc=("ccc", "mean"))
            .reset_index()
            if not features.empty
            else pd.DataFrame()
        )
        # -- oracle AUC and gap closed -------------------------------------------
        oracle = None
        oracle_note = None
        prediction = ctx.result("prediction")
        if ctx.truth_features is None:
            oracle_note = (
                "no truth images with a lesion mask were found (simulation.json: truth_manifest / truth_table)"
            )
        elif ctx.splits is None:
            oracle_note = f"no prediction ({ctx.prediction_skipped})"
        else:
            from .prediction import auc_intervals, cross_validate

            truth = ctx.truth_features
            columns = [
                c
                for c in ctx.feature_columns(voi)
                if c in truth.columns and np.isfinite(truth[c].to_numpy(float)).all()
            ]
            missing = [s for s in ctx.splits.subjects if s not in truth.index]
            if missing or not columns:
                oracle_note = (
                    f"truth features missing for {len(missing)} subject(s)" if missing else "no usable truth feature"
                )
            else:
                X = truth.loc[list(ctx.splits.subjects), columns].astype(float)
                groups = pd.Series(["truth"] * len(X), index=X.index)
                run = ctx.memo(
                    "oracle-cv",
                    (X, ctx.splits.digest(), list(ctx.outcome.items()), "v1"),
                    lambda: cross_validate(ctx, None, "", X, groups),
                )
                oracle = {
                    **auc_intervals(run["auc"], ctx.splits),
                    "n_features": len(columns),
                }  # corrected CI, as the methods'
        for method in ctx.methods:
            for ref in ctx.references:
                entry: dict[str, Any] = {}
                v = (
                    voxels[(voxels["method"] == method.label) & (voxels["reference"] == ref)]
                    if not voxels.empty
                    else voxels
                )
                if method.image_stages or method.is_baseline:
                    if not v.empty:
                        entry["cf_ssim"] = finite(v["ssim"].mean())
                        entry["cf_psnr"] = finite(v["psnr"].mean())
                f = (
                    features[(features["method"] == method.label) & (features["reference"] == ref)]
                    if not features.empty
                    else features
                )
                if not f.empty:
                    entry["cf_feature_nmae"] = finite(f["nmae"].median())  # median: robust to features with a tiny SD
                    entry["cf_feature_ccc"] = finite(f["ccc"].mean())
                    for cls, csub in f.groupby("class", sort=False):
                        entry[f"cf_ccc_{cls}"] = finite(csub["ccc"].mean())
                        entry[f"cf_nmae_{cls}"] = finite(csub["nmae"].median())
                if oracle and prediction is not None and not prediction.skipped:
                    rows = prediction.summary["by_method"]
                    auc_m = rows.get(row_key(method.label, ref), {}).get("auc_mean")
                    auc_0 = rows.get(row_key("none", ref), {}).get("auc_mean")
                    entry["oracle_auc"] = oracle["auc_mean"]
                    if (
                        auc_m is not None
                        and auc_0 is not None
                        and oracle["auc_mean"] is not None
                        and oracle["auc_mean"] - auc_0 > 0.01
                    ):
                        entry["gap_closed"] = finite((auc_m - auc_0) / (oracle["auc_mean"] - auc_0))
                summary[row_key(method.label, ref)] = entry
        figures = {}
        if ctx.figure_dir is not None and not by_class.empty:
            figures["fidelity_ccc"] = self._figure(by_class, ctx.figure_dir / "fidelity_ccc.png")
        report = report_section(method_rows(ctx, summary), oracle, oracle_note, ctx.ground_truth_source)
        return EvaluationResult(
            self.name,
            tables={
                "voxels": voxels,
                "features": features,
                "features_by_class": by_class,
            },
            figures=figures,
            summary={
                "by_method": summary,
                "oracle": oracle,
                "oracle_note": oracle_note,
                "counterfactual": ctx.ground_truth_source,
                "nmae": "mean |harmonized - counterfactual| / SD of the counterfactual feature across subjects",
                "voxel_metrics": (
                    "SSIM/PSNR vs counterfactual inside the body mask; data range = counterfactual's SUV range there"
                ),
            },
            columns=list(SUMMARY_COLUMNS),
            report=report,
        )

    @staticmethod
    def _figure(by_class, path):
        from ._common import plt as _plt
        from ._common import savefig

        plt = _plt()
        refs = list(dict.fromkeys(by_class["reference"]))
        fig, axes = plt.subplots(1, len(refs), figsize=(5 * len(refs), 3.6), squeeze=False)
        for ax, ref in zip(axes[0], refs):
            sub = by_class[by_class["reference"] == ref]
            pivot = sub.pivot(index="class", columns="method", values="ccc")
            pivot.plot.bar(ax=ax, rot=0)
            ax.set_ylabel("CCC vs counterfactual")
            ax.set_title(f"feature fidelity, reference {ref}", fontsize=9)
            ax.legend(fontsize=7)
            ax.tick_params(axis="x", labelsize=7)
        return savefig(fig, path)
