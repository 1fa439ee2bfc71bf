"""Reproducibility evaluator: do the sites' feature distributions overlap more after harmonization?

The paper's Table 2 and Figs. 6-7, computed with :mod:`harmkit.reproducibility`
for the lesion VOI (``--voi``) and the reference-tissue VOI
(``--reference-voi``, the simulator's ``mask_reference``; for lung the 3 cm
liver sphere):

* for every feature, the **overlap coefficient** of its distribution in each
  non-reference site group and in the reference group
  (:func:`harmkit.reproducibility.overlap_coefficient`; 1 = identical
  distributions, 0 = disjoint), before (baseline ``none``) and after the
  method; feature stages are fitted on every row here (no outcome is involved);
* per feature class, the mean ± SD of the improvement (after − before, in
  percentage points) and the Wilcoxon signed-rank p-value over the class's
  features (paired before/after);
* the **COV** (σ/μ of SUV inside the VOI, from ``firstorder_Variance`` and
  ``firstorder_Mean``) per scan, per site group, before and after, and the
  Mann-Whitney p-value between each non-reference group and the reference
  group.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ..bench.formatting import fmt
from ..errors import EvaluatorSkipped, HarmkitError
from ..interfaces import (
    EvaluationResult,
    Evaluator,
    ReportFigure,
    ReportTable,
    SummaryColumn,
)
from ._common import boxplot, finite, records, row_key, savefig

SUMMARY_COLUMNS = (
    SummaryColumn(
        "overlap_voi",
        "Δoverlap VOI (pp)",
        "+.1f",
        "Δovl VOI",
        description=(
            "mean change of the overlap coefficient between site groups (percentage points) over all features of the "
            "VOI (--voi)"
        ),
    ),
    SummaryColumn(
        "overlap_ref",
        "Δoverlap ref. tissue (pp)",
        "+.1f",
        "Δovl ref",
        description=("the same in the reference-tissue VOI (--reference-voi)"),
    ),
)


def report_section(by_class, cov_table) -> list:
    """The Reproducibility section of the report: overlap per class, COV per site group, figures."""
    rows = [
        [
            r["method"],
            r["reference"],
            r.get("group", ""),
            r["voi"],
            r["class"],
            str(r["n_features"]),
            fmt(r["overlap_before_mean"], ".3f"),
            fmt(r["overlap_after_mean"], ".3f"),
            f"{fmt(r['improvement_pct_mean'], '+.1f')} ± {fmt(r['improvement_pct_sd'], '.1f')}",
            fmt(r.get("p_wilcoxon"), "p"),
        ]
        for r in records(by_class)
        if r["method"] != "none"
    ]
    blocks: list = [
        ReportTable(
            [
                "method",
                "reference",
                "compared group",
                "VOI",
                "class",
                "n",
                "overlap before",
                "overlap after",
                "improvement (pp, mean ± SD)",
                "p (Wilcoxon)",
            ],
            rows,
            "overlap",
        )
    ]
    cov = records(cov_table)
    if cov:
        rows = [
            [
                r["method"],
                r["reference"],
                r["voi"],
                r["site_group"],
                fmt(r.get("cov_median_before"), ".3f"),
                fmt(r.get("cov_median_after"), ".3f"),
                fmt(r.get("p_mannwhitney_vs_reference_before"), "p"),
                fmt(r.get("p_mannwhitney_vs_reference_after"), "p"),
            ]
            for r in cov
        ]
        blocks.append(
            ReportTable(
                [
                    "method",
                    "reference",
                    "VOI",
                    "site group",
                    "median COV before",
                    "median COV after",
                    "p vs reference before",
                    "p vs reference after",
                ],
                rows,
                "cov",
            )
        )
    blocks += [
        ReportFigure("overlap_per_class", "overlap per class"),
        ReportFigure("cov_distributions", "cov distributions"),
    ]
    return blocks


def cov_from_features(table) -> Any:
    """COV per scan: sqrt(firstorder_Variance) / firstorder_Mean (NaN when absent)."""
    if "firstorder_Variance" not in table.columns or "firstorder_Mean" not in table.columns:
        return None
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.sqrt(table["firstorder_Variance"].clip(lower=0)) / table["firstorder_Mean"]


class ReproducibilityEvaluator(Evaluator):
    """Overlap of feature distributions between site groups, per feature class, and COV, before/after."""

    name = "reproducibility"
    title = "Reproducibility (feature overlap between site groups)"
    description = "Inter-site reproducibility: feature overlap coefficient per class (Wilcoxon) and COV, before/after"

    def evaluate(self, ctx) -> EvaluationResult:
        import pandas as pd
        from scipy import stats as st

        try:
            from ..reproducibility import class_summary, feature_overlap  # noqa: F401
        except ImportError as exc:
            raise HarmkitError(f"the reproducibility evaluator needs harmkit.reproducibility ({exc})") from None

        # 1. every overlap table needed: (voi, ref, group, method) -> features of the two groups
        jobs: dict[str, tuple] = {}
        plan = []
        for voi in ctx.vois:
            columns = ctx.feature_columns(voi)
            for method in ctx.methods:
                for ref in ctx.references:
                    table = ctx.features[(method.label, ref)][voi]
                    after = ctx.harmonized_features(method, ref, voi)
                    for g in ctx.groups:
                        if g == ref:
                            continue
                        rows = (table["site_group"] == g) | (table["site_group"] == ref)
                        frame = after.loc[rows, columns].astype(float)
                        groups = table.loc[rows, "site_group"]
                        key = ctx.cache_key("overlap-table", frame, list(groups), g, ref, "v1")
                        jobs[key] = (
                            frame,
                            list(groups),
                            g,
                            ref,
                            dict(ctx.feature_classes),
                        )
                        plan.append((voi, method.label, ref, g, key))
        results = {k: ctx.cache_get(k) for k in jobs}
        missing = [k for k, v in results.items() if v is None]
        if missing:
            computed = ctx.map(_overlap_job, [jobs[k] for k in missing], label="feature overlap")
            for k, r in zip(missing, computed):
                if not r.ok:
                    raise HarmkitError(f"feature overlap failed: {r.error}")
                results[k] = ctx.cache_put(k, r.value)
        # 2. before (baseline) vs after (method), per feature and per class
        rows, class_rows = [], []
        baseline = {(voi, ref, g): key for voi, label, ref, g, key in plan if label == "none"}
        for voi, label, ref, g, key in plan:
            before = results[baseline[(voi, ref, g)]]
            after = results[key]
            change = pd.DataFrame(
                {
                    "class": before["class"],
                    "overlap_before": before["overlap"],
                    "overlap_after": after.loc[before.index, "overlap"],
                }
            )
            change["improvement"] = change["overlap_after"] - change["overlap_before"]
            for feature, r in change.iterrows():
                rows.append(
                    {
                        "method": label,
                        "reference": ref,
                        "voi": voi,
                        "group": g,
                        "feature": feature,
                        **r.to_dict(),
                    }
                )
            summary_table = class_summary(change)
            for cls, r in summary_table.iterrows():
                class_rows.append(
                    {
                        "method": label,
                        "reference": ref,
                        "voi": voi,
                        "group": g,
                        "class": cls,
                        "n_features": int(r["n_features"]),
                        "overlap_before_mean": finite(r["before_mean"]),
                        "overlap_after_mean": finite(r["after_mean"]),
                        "improvement_pct_mean": finite(100 * r["improvement_mean"]),
                        "improvement_pct_sd": finite(100 * r["improvement_sd"]),
                        "p_wilcoxon": finite(r["wilcoxon_p"]),
                    }
                )
        table = pd.DataFrame(rows)
        by_class = pd.DataFrame(class_rows)
        if table.empty:
            raise EvaluatorSkipped("no feature to compare")
        summary: dict[str, dict] = {}
        cov_rows = []
        for voi in ctx.vois:
            base_table = ctx.features[("none", ctx.references[0])][voi]
            cov_before = cov_from_features(base_table)
            if cov_before is None:
                continue
            for method in ctx.methods:
                for ref in ctx.references:
                    full = ctx.features[(method.label, ref)][voi]
                    after = ctx.harmonized_features(method, ref, voi)
                    if "firstorder_Variance" not in after.columns or "firstorder_Mean" not in after.columns:
                        after = full
                    cov = cov_from_features(after)
                    for sid in after.index:
                        cov_rows.append(
                            {
                                "method": method.label,
                                "reference": ref,
                                "voi": voi,
                                "subject_id": sid,
                                "site_group": full.loc[sid, "site_group"],
                                "cov_before": finite(cov_before.loc[sid]),
                                "cov_after": finite(cov.loc[sid]),
                            }
                        )
        covs = pd.DataFrame(cov_rows)
        cov_stats = []
        if not covs.empty:
            for (label, ref, voi), sub in covs.groupby(["method", "reference", "voi"], sort=False):
                ref_before = sub[sub["site_group"] == ref]["cov_before"].dropna()
                ref_after = sub[sub["site_group"] == ref]["cov_after"].dropna()
                for g, gsub in sub.groupby("site_group"):
                    entry = {
                        "method": label,
                        "reference": ref,
                        "voi": voi,
                        "site_group": g,
                        "cov_median_before": finite(gsub["cov_before"].median()),
                        "cov_median_after": finite(gsub["cov_after"].median()),
                        "cov_iqr_after": finite(gsub["cov_after"].quantile(0.75) - gsub["cov_after"].quantile(0.25)),
                    }
                    if g != ref and len(ref_before) > 1 and gsub["cov_before"].notna().sum() > 1:
                        entry["p_mannwhitney_vs_reference_before"] = finite(
                            st.mannwhitneyu(gsub["cov_before"].dropna(), ref_before).pvalue
                        )
                        entry["p_mannwhitney_vs_reference_after"] = finite(
                            st.mannwhitneyu(gsub["cov_after"].dropna(), ref_after).pvalue
                        )
                        entry["median_gap_before"] = finite(abs(gsub["cov_before"].median() - ref_before.median()))
                        entry["median_gap_after"] = finite(abs(gsub["cov_after"].median() - ref_after.median()))
                    cov_stats.append(entry)
        cov_table = pd.DataFrame(cov_stats)
        for (label, ref), sub in by_class.groupby(["method", "reference"], sort=False):
            entry = {}
            for voi, vsub in sub.groupby("voi", sort=False):
                per = table[(table["method"] == label) & (table["reference"] == ref) & (table["voi"] == voi)]
                entry[f"overlap_improvement_pct_{voi}"] = finite(100 * per["improvement"].mean())
                entry[f"overlap_after_{voi}"] = finite(per["overlap_after"].mean())
                for row in vsub.to_dict("records"):
                    entry[f"overlap_improvement_pct_{voi}_{row['class']}"] = finite(row["improvement_pct_mean"])
            entry["overlap_voi"] = entry.get(f"overlap_improvement_pct_{ctx.config.voi}")
            entry["overlap_ref"] = entry.get(f"overlap_improvement_pct_{ctx.config.reference_voi}")
            summary[row_key(label, ref)] = entry
        figures = {}
        if ctx.figure_dir is not None:
            figures["overlap_per_class"] = self._overlap_figure(table, ctx.figure_dir / "overlap_per_class.png")
            if not covs.empty:
                figures["cov_distributions"] = self._cov_figure(covs, ctx.figure_dir / "cov_distributions.png")
        return EvaluationResult(
            self.name,
            tables={
                "overlap_per_feature": table,
                "overlap_per_class": by_class,
                "cov_per_scan": covs,
                "cov_by_group": cov_table,
            },
            figures=figures,
            summary={
                "by_method": summary,
                "vois": list(ctx.vois),
                "overlap": (
                    "overlap coefficient of each feature's distributions in a non-reference group and the "
                    "reference group"
                ),
                "feature_stages": "fitted on every row (no outcome involved)",
            },
            columns=list(SUMMARY_COLUMNS),
            report=report_section(by_class, cov_table),
        )

    @staticmethod
    def _overlap_figure(table, path):
        from ._common import plt as _plt

        plt = _plt()
        combos = [c for c in dict.fromkeys(zip(table["method"], table["reference"], table["voi"])) if c[0] != "none"]
        if not combos:
            combos = list(dict.fromkeys(zip(table["method"], table["reference"], table["voi"])))
        classes = list(dict.fromkeys(table["class"]))
        fig, axes = plt.subplots(
            len(combos),
            1,
            figsize=(max(6, 1.2 * len(classes)), 2.8 * len(combos)),
            squeeze=False,
        )
        for ax, (label, ref, voi) in zip(axes[:, 0], combos):
            sub = table[(table["method"] == label) & (table["reference"] == ref) & (table["voi"] == voi)]
            positions, data, colors = [], [], []
            for i, cls in enumerate(classes):
                c = sub[sub["class"] == cls]
                data += [c["overlap_before"].to_numpy(), c["overlap_after"].to_numpy()]
                positions += [3 * i, 3 * i + 1]
                colors += ["tab:blue", "tab:orange"]
            parts = boxplot(ax, data, None, positions=positions, patch_artist=True, widths=0.8)
            for patch, color in zip(parts["boxes"], colors):
                patch.set_facecolor(color)
                patch.set_alpha(0.6)
            ax.set_xticks([3 * i + 0.5 for i in range(len(classes))])
            ax.set_xticklabels(classes, fontsize=8)
            ax.set_ylim(-0.02, 1.02)
            ax.set_ylabel("overlap")
            ax.set_title(
                f"{label} -> {ref}, VOI {voi}: before (blue) / after (orange)",
                fontsize=9,
            )
        fig.subplots_adjust(hspace=0.5)
        return savefig(fig, path)

    @staticmethod
    def _cov_figure(covs, path):
        from ._common import plt as _plt

        plt = _plt()
        combos = [c for c in dict.fromkeys(zip(covs["method"], covs["reference"], covs["voi"])) if c[0] != "none"]
        if not combos:
            combos = list(dict.fromkeys(zip(covs["method"], covs["reference"], covs["voi"])))
        ncols = min(4, len(combos))
        nrows = (len(combos) + ncols - 1) // ncols
        fig, axes = plt.subplots(nrows, ncols, figsize=(3.8 * ncols, 3.4 * nrows), squeeze=False)
        for ax in axes.ravel()[len(combos) :]:
            ax.set_visible(False)
        for ax, (label, ref, voi) in zip(axes.ravel(), combos):
            sub = covs[(covs["method"] == label) & (covs["reference"] == ref) & (covs["voi"] == voi)]
            data, names = [], []
            for g in dict.fromkeys(sub["site_group"]):
                gs = sub[sub["site_group"] == g]
                data += [gs["cov_before"].dropna(), gs["cov_after"].dropna()]
                names += [f"{g}\nbefore", f"{g}\nafter"]
            boxplot(ax, data, names)
            ax.set_title(f"COV ({voi}) {label} -> {ref}", fontsize=9)
            ax.set_ylabel("COV = SD / mean")
            ax.tick_params(axis="x", labelsize=7)
        fig.subplots_adjust(hspace=0.6, wspace=0.35)
        return savefig(fig, path)


def _overlap_job(item: tuple):
    """Worker: overlap coefficient of every feature between two site groups (harmkit.reproducibility)."""
    from threadpoolctl import threadpool_limits

    from ..reproducibility import feature_overlap

    frame, groups, group_a, group_b, classes = item
    with threadpool_limits(1):
        table = feature_overlap(
            frame,
            groups=pd_series(groups, frame.index),
            group_a=group_a,
            group_b=group_b,
            feature_classes=classes,
        )
    return table[["class", "overlap"]]


def pd_series(values, index):
    import pandas as pd

    return pd.Series(list(values), index=index)


def _none(ctx):
    from ..methods import Method

    return Method("none", ())
