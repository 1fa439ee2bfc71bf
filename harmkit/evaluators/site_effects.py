"""Site-effects evaluator: can the site groups still be told apart after each method?

Two measures of :mod:`harmkit.diagnostics`, before (baseline ``none``) and
after every method, for every reference site group:

* **feature-level site predictability** for each VOI: the cross-validated AUC
  of a logistic regression that predicts the site group from the features
  after all of the method's stages; 0.5 = the sites cannot be told apart.
  Feature stages are fitted inside each fold on its training rows and applied
  to its test rows: fitted on every row, ComBat removes the site means
  exactly and the cross-validated AUC falls below 0.5, which would read as
  better than perfect harmonization;
* **image-level separability**: the held-out (by subject) balanced accuracy
  of a gradient-boosting classifier on texture descriptors of image patches
  normalised to their own mean, at the reference group's median voxel
  spacing (the grid an image harmonizer trains on). The method's harmonized
  scans replace the originals; a method without an image stage leaves it
  unchanged.
"""

from __future__ import annotations

from typing import Any

from ..errors import HarmkitError
from ..interfaces import (
    EvaluationResult,
    Evaluator,
    ReportFigure,
    ReportTable,
    SummaryColumn,
)
from ._common import finite, row_key, savefig


class SiteEffectsEvaluator(Evaluator):
    """Site predictability from features (CV AUC) and from image-patch texture (held-out accuracy), before/after."""

    name = "site-effects"
    title = "Site effects: can the site groups still be told apart?"
    description = (
        "Site effects: CV AUC predicting the site group from features, and patch-texture separability, before/after"
    )

    def __init__(
        self,
        image_level: bool = True,
        patch_size: int = 32,
        patches_per_scan: int = 8,
        folds: int = 5,
    ):
        self.image_level = image_level
        self.patch_size = patch_size
        self.patches_per_scan = patches_per_scan
        self.folds = folds

    def evaluate(self, ctx) -> EvaluationResult:
        import pandas as pd

        from ..diagnostics import site_predictability

        seed = ctx.config.seed
        feature_rows = []
        for voi in ctx.vois:
            for method in ctx.methods:
                for ref in ctx.references:
                    if method.label == "none" and ref != ctx.references[0]:
                        continue  # the baseline is the same under every reference
                    table = ctx.features_of(method, ref, voi)
                    X = table[ctx.feature_columns(voi)].astype(float)
                    groups = list(table["site_group"])
                    transform = None
                    if method.feature_stages:

                        def transform(
                            train,
                            train_groups,
                            test,
                            test_groups,
                            method=method,
                            ref=ref,
                        ):
                            # A pairwise comparison may leave the reference group out of a fold's training rows:
                            # the feature stages then harmonize towards the pooled sites instead.
                            return ctx.feature_stage(
                                method,
                                ref if ref in set(train_groups) else None,
                                train,
                                train_groups,
                                [(train, train_groups), (test, test_groups)],
                            )

                    def compute(X=X, groups=groups, transform=transform):
                        try:
                            result = site_predictability(
                                X,
                                groups,
                                folds=self.folds,
                                seed=seed,
                                fold_transform=transform,
                            )
                        except HarmkitError as exc:
                            # e.g. a fold too small for the method's feature stages: this number is missing,
                            # the others stand
                            return {"auc": None, "note": f"not computed: {exc}"}
                        return {
                            k: v for k, v in result.items() if k not in ("scores", "groups", "n", "pairs", "classifier")
                        }

                    stages = ctx.method_key(method) if method.feature_stages else []
                    key = (X, groups, self.folds, seed, stages, ref, "v2")
                    result = ctx.memo("site-predictability", key, compute)
                    feature_rows.append({"method": method.label, "reference": ref, "voi": voi, **result})
        features = pd.DataFrame(feature_rows)
        patch_note = None if self.image_level else "not computed (image_level=False)"
        try:
            patches = pd.DataFrame(self._patch_rows(ctx) if self.image_level else [])
        except HarmkitError as exc:  # e.g. images smaller than a patch: the feature-level numbers still stand
            patches, patch_note = pd.DataFrame([]), f"skipped: {exc}"
        summary: dict[str, dict] = {}
        for method in ctx.methods:
            for ref in ctx.references:
                entry: dict[str, Any] = {}
                for voi in ctx.vois:
                    before = features[(features["method"] == "none") & (features["voi"] == voi)]["auc"]
                    label_ref = ctx.references[0] if method.label == "none" else ref
                    after = features[
                        (features["method"] == method.label)
                        & (features["reference"] == label_ref)
                        & (features["voi"] == voi)
                    ]["auc"]
                    entry[f"site_auc_{voi}"] = finite(after.iloc[0]) if len(after) else None
                    entry[f"site_auc_before_{voi}"] = finite(before.iloc[0]) if len(before) else None
                if not patches.empty:
                    sub = patches[patches["reference"] == ref]
                    before = sub[sub["method"] == "none"]["accuracy"]
                    after = sub[sub["method"] == (method.label if method.image_stages else "none")]["accuracy"]
                    entry["patch_accuracy"] = finite(after.iloc[0]) if len(after) else None
                    entry["patch_accuracy_before"] = finite(before.iloc[0]) if len(before) else None
                summary[row_key(method.label, ref)] = entry
        figures = {}
        if ctx.figure_dir is not None and not features.empty:
            figures["site_effects"] = self._figure(features, patches, ctx, ctx.figure_dir / "site_effects.png")
        return EvaluationResult(
            self.name,
            tables={"site_predictability": features, "patch_separability": patches},
            figures=figures,
            summary={
                "by_method": summary,
                "site_auc": (
                    "cross-validated AUC (logistic regression, standardized features, 5-fold x 5) predicting "
                    "the site group from the VOI's features after the method; 0.5 = sites indistinguishable"
                ),
                "patch_accuracy": patch_note
                or "held-out balanced accuracy of a patch-texture classifier (patches / own mean) "
                "at the reference group's median spacing; chance = 1 / number of site groups",
            },
            columns=self._columns(ctx),
            report=self._report(features, patches, patch_note),
        )

    @staticmethod
    def _columns(ctx) -> list[SummaryColumn]:
        columns = [
            SummaryColumn(
                f"site_auc_{voi}",
                f"site AUC ({voi})",
                ".2f",
                f"site AUC {voi}",
                description=(
                    f"cross-validated AUC predicting the site group from the {voi} features after the method "
                    "(0.5: the sites cannot be told apart)"
                ),
            )
            for voi in ctx.vois
        ]
        columns.append(
            SummaryColumn(
                "patch_accuracy",
                "patch-texture accuracy",
                ".2f",
                "patch acc.",
                description=(
                    "held-out accuracy of a classifier telling the site groups apart from image-patch texture"
                ),
            )
        )
        return columns

    @staticmethod
    def _report(features, patches, patch_note) -> list:
        from ..bench.formatting import fmt

        blocks: list = [
            "Site AUC: cross-validated AUC (logistic regression on standardized features, 5-fold x 5) predicting the "
            "site group from the VOI's features after the method; 0.5 means the sites cannot be told apart, 1 that "
            "they always can. Feature stages are fitted inside each fold. Patch accuracy: "
            + (
                patch_note
                or (
                    "held-out (by subject) balanced accuracy of a patch-texture classifier (patches divided by their "
                    "own mean) at the reference group's median spacing; chance = 1 / number of site groups."
                )
            )
        ]
        rows = [[r["method"], r["reference"], r["voi"], fmt(r.get("auc"), ".3f")] for r in features.to_dict("records")]
        blocks.append(ReportTable(["method", "reference", "VOI", "site AUC"], rows, "site-auc"))
        if not patches.empty:
            rows = [
                [
                    r["method"],
                    r["reference"],
                    fmt(r.get("accuracy"), ".3f"),
                    fmt(r.get("chance"), ".2f"),
                    str(r.get("spacing_mm", "")),
                ]
                for r in patches.to_dict("records")
            ]
            blocks.append(
                ReportTable(
                    ["method", "reference", "patch accuracy", "chance", "spacing (mm)"],
                    rows,
                    "patches",
                )
            )
        blocks.append(ReportFigure("site_effects", "site predictability before and after"))
        return blocks

    def _patch_rows(self, ctx) -> list[dict]:
        from dataclasses import replace

        from ..data import Cohort
        from ..diagnostics import patch_separability
        from ..diagnostics.patches import median_spacing

        rows = []
        # the baseline first: a method's unchanged scans (the reference group's) reuse its patch descriptors
        methods = sorted(
            (m for m in ctx.methods if m.label == "none" or m.image_stages), key=lambda m: m.label != "none"
        )
        for ref in ctx.references:
            spacing = median_spacing([s for s in ctx.cohort if s.group == ref])
            baseline: list | None = None
            for method in methods:
                changed = ctx.changed_scans(method, ref)
                scans = [
                    replace(changed[s.subject_id], site=s.site, site_group=s.site_group)
                    if s.subject_id in changed
                    else s
                    for s in ctx.cohort
                ]
                cohort = Cohort(scans)
                key = (
                    [(s.subject_id, str(s.image)) for s in scans],
                    spacing,
                    self.patch_size,
                    self.patches_per_scan,
                    self.folds,
                    ctx.config.seed,
                    "v1",
                )

                known = (
                    None
                    if baseline is None
                    else {k: baseline[k] for k, s in enumerate(ctx.cohort) if s.subject_id not in changed}
                )

                def compute(cohort=cohort, spacing=spacing, known=known):
                    result = patch_separability(
                        cohort,
                        spacing,
                        self.patch_size,
                        self.patches_per_scan,
                        self.folds,
                        ctx.config.seed,
                        executor=ctx.executor,
                        known=known,
                    )
                    return {
                        k: result[k]
                        for k in (
                            "accuracy",
                            "chance",
                            "patches",
                            "patch_size",
                            "spacing_mm",
                            "scan_descriptors",
                        )
                    }

                result = dict(ctx.memo("patch-separability", key, compute))
                scan_descriptors = result.pop("scan_descriptors", None)
                if method.label == "none" and scan_descriptors is not None and len(scan_descriptors) == len(scans):
                    baseline = scan_descriptors
                rows.append(
                    {
                        "method": method.label,
                        "reference": ref,
                        **result,
                        "spacing_mm": "x".join(f"{v:.3g}" for v in result["spacing_mm"]),
                    }
                )
        return rows

    @staticmethod
    def _figure(features, patches, ctx, path):
        from ._common import plt as _plt

        plt = _plt()
        panels = list(ctx.vois) + (["patches"] if not patches.empty else [])
        fig, axes = plt.subplots(1, len(panels), figsize=(4.2 * len(panels), 3.4), squeeze=False)
        for ax, panel in zip(axes[0], panels):
            sub = patches if panel == "patches" else features[features["voi"] == panel]
            value = "accuracy" if panel == "patches" else "auc"
            labels = [
                f"{m}\n({r})" if panel == "patches" or m != "none" else m
                for m, r in zip(sub["method"], sub["reference"])
            ]
            ax.bar(
                range(len(sub)),
                sub[value],
                color=["tab:gray" if m == "none" else "tab:orange" for m in sub["method"]],
            )
            chance = 1.0 / len(ctx.groups) if panel == "patches" else 0.5
            ax.axhline(chance, color="k", linestyle="--", linewidth=0.8)
            ax.set_xticks(range(len(sub)))
            ax.set_xticklabels(labels, fontsize=7, rotation=45, ha="right")
            ax.set_ylim(0, 1.02)
            ax.set_title(
                "patch-texture accuracy (held out)" if panel == "patches" else f"site AUC from {panel} features",
                fontsize=9,
            )
        fig.tight_layout()
        return savefig(fig, path)
