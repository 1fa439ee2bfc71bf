"""Prediction evaluator: does harmonization help a radiomics model predict the outcome?

The paper's protocol, made leakage-free:

* the same stratified Monte Carlo splits (default 100 × 80/20) for every method;
* features of the ``--voi`` VOI (every feature column finite for every
  method, the same columns for every method), standardized on the training
  rows, logistic regression (L2, C = 1), no feature selection;
* a method's feature stages (ComBat) are fitted on the training rows of each
  split and applied to its test rows (``--fit-on train``, default), or fitted
  once on every row as in the paper (``--fit-on all``);
* AUC on each split's test rows; its mean with the 95 % CI of the corrected
  resampled t (Nadeau & Bengio 2003; the splits share most training rows,
  so Student's t over the splits is too narrow). The paper's Student-t CI is
  kept as ``auc_ci_*_haberl``.

Against the baseline ``none``:

* **corrected resampled t test over splits** (default ``p_paired``): the
  per-split AUCs of the method and of the baseline are paired by split and the
  variance of the mean difference inflated by ``1/J + n_test/n_train``;
  Holm-adjusted over every comparison with ``none`` in the run
  (``p_paired_holm``). The paper's rule (Shapiro-Wilk on the differences,
  then paired t or Wilcoxon signed-rank) is kept as ``p_paired_haberl``;
* **DeLong test on pooled out-of-split predictions**: each subject's predicted
  probability is averaged over the splits in which it was a test subject
  (about ``test_size × folds`` of them), giving one out-of-sample score per
  subject and method. DeLong's test compares the ROC AUCs of the method's and
  the baseline's averaged scores on the same subjects (subjects never drawn
  into a test set are left out and counted); Holm-adjusted as ``p_delong_holm``.
  The median of the per-split DeLong p-values (each on one split's test rows)
  is reported alongside.

The pooled AUC comes with DeLong's 95 % CI and a stratified, seeded
percentile bootstrap 95 % CI (``n_bootstrap`` resamples of the subjects).
"""

from __future__ import annotations

import warnings
from typing import Any

import numpy as np

from ..bench.formatting import auc_text, fmt, interval_text
from ..errors import EvaluatorSkipped, HarmkitError
from ..interfaces import (
    EvaluationResult,
    Evaluator,
    ReportFigure,
    ReportTable,
    SummaryColumn,
)
from ._common import boxplot, finite, method_rows, row_key, savefig


def _fit_predict(Xtr, ytr, Xte, C: float, max_iter: int) -> np.ndarray:
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    # Newton-Cholesky: the same L2 solution as lbfgs, ~10x faster for ~100 features and a few hundred rows
    model = make_pipeline(
        StandardScaler(),
        LogisticRegression(C=C, max_iter=max_iter, solver="newton-cholesky"),
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        warnings.simplefilter("ignore", RuntimeWarning)
        model.fit(np.asarray(Xtr, float), ytr)
        return model.predict_proba(np.asarray(Xte, float))[:, 1]


def cross_validate(ctx, method, reference: str, X, groups, C: float = 1.0, max_iter: int = 1000) -> dict[str, Any]:
    """Run ``method``'s feature stages and the classifier on every split (in this process).

    ``X``: feature DataFrame indexed by subject (every subject of the splits);
    ``groups``: site group per row (the batches of the feature stages).
    Returns ``{"auc": [per split], "scores": [per split, test order]}``.
    """
    return cv_job(cv_item(ctx, method, reference, X, groups, C, max_iter))


def cv_item(ctx, method, reference, X, groups, C, max_iter) -> tuple:
    """Everything :func:`cv_job` needs, picklable."""
    subjects = list(ctx.splits.subjects)
    y = ctx.outcome.loc[subjects].to_numpy().astype(int)
    groups = np.asarray(groups.loc[subjects] if hasattr(groups, "loc") else groups)
    specs = ctx.stage_specs(method) if method is not None else []
    return (
        X.loc[subjects],
        groups,
        y,
        ctx.splits.test_masks,
        specs,
        ctx.config.seed,
        reference,
        ctx.config.fit_on,
        C,
        max_iter,
    )


def cv_job(item: tuple) -> dict[str, Any]:
    """Worker: feature stages (fitted per split or on all rows) + classifier on every split."""
    from threadpoolctl import threadpool_limits

    X, groups, y, test_masks, specs, seed, reference, fit_on, C, max_iter = item
    with threadpool_limits(1):  # one BLAS thread per worker: the executor already runs one job per core
        return _cv(X, groups, y, test_masks, specs, seed, reference, fit_on, C, max_iter)


def _cv(X, groups, y, test_masks, specs, seed, reference, fit_on, C, max_iter) -> dict[str, Any]:
    from sklearn.metrics import roc_auc_score

    from ..bench.stages import apply_feature_stages

    if specs and fit_on == "all":
        X = apply_feature_stages(specs, seed, reference, X, groups, [(X, groups)])[0]
    aucs, scores = [], []
    for mask in test_masks:
        train, test = np.flatnonzero(~mask), np.flatnonzero(mask)
        Xtr, Xte = X.iloc[train], X.iloc[test]
        if specs and fit_on == "train":
            Xtr, Xte = apply_feature_stages(
                specs,
                seed,
                reference,
                Xtr,
                groups[train],
                [(Xtr, groups[train]), (Xte, groups[test])],
            )
        p = _fit_predict(Xtr, y[train], Xte, C, max_iter)
        aucs.append(float(roc_auc_score(y[test], p)) if len(set(y[test])) == 2 else float("nan"))
        scores.append([float(v) for v in p])
    return {"auc": aucs, "scores": scores}


def pooled_scores(splits, scores: list[list[float]]) -> tuple[np.ndarray, np.ndarray]:
    """Mean out-of-split score per subject and the number of splits it was tested in."""
    n = len(splits.subjects)
    total = np.zeros(n)
    count = np.zeros(n, dtype=int)
    for (_, test), s in zip(splits, scores):
        total[test] += s
        count[test] += 1
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(count > 0, total / np.maximum(count, 1), np.nan), count


def split_sizes(splits) -> tuple[float, float]:
    """Mean training and test rows per split: the ``n_train``, ``n_test`` of the corrected resampled t."""
    n_test = float(splits.test_masks.sum(axis=1).mean())
    return float(len(splits.subjects)) - n_test, n_test


def auc_intervals(aucs, splits, confidence: float = 0.95) -> dict[str, Any]:
    """Mean of per-split AUCs with the corrected resampled-t CI (default) and the paper's Student-t CI.

    Both intervals are clipped to [0, 1], the range of an AUC. Keys:
    ``auc_mean``, ``auc_ci_low``, ``auc_ci_high`` (corrected),
    ``auc_ci_low_haberl``, ``auc_ci_high_haberl`` (Student's t over the
    splits, as in Haberl et al.).
    """
    from .. import stats

    n_train, n_test = split_sizes(splits)
    mean, lo, hi = stats.corrected_mean_ci(aucs, n_train, n_test, confidence)
    _, lo_h, hi_h = stats.mean_ci(aucs, confidence)
    return {
        "auc_mean": finite(mean),
        "auc_ci_low": _clip01(lo),
        "auc_ci_high": _clip01(hi),
        "auc_ci_low_haberl": _clip01(lo_h),
        "auc_ci_high_haberl": _clip01(hi_h),
    }


def _clip01(value: float) -> float | None:
    """A bound of an AUC interval clipped to [0, 1]; ``None`` when not finite."""
    value = finite(value)
    return None if value is None else min(1.0, max(0.0, value))


HOLM_FAMILY = (
    "Holm over the {k} comparisons against `none` in this run ({methods} × references {refs}), "
    "separately for the corrected t test and for DeLong's test"
)
CI_TEXT = (
    "95 % CI of the mean over splits from the corrected resampled t (Nadeau & Bengio 2003): variance "
    "(1/J + n_test/n_train)·S², J - 1 degrees of freedom, clipped to [0, 1]"
)
HABERL_TEXT = (
    "the paper's statistics (Haberl et al. 2024): 95 % CI from Student's t over the splits; "
    "paired test: Shapiro-Wilk on the per-split differences, then paired t if normal, else Wilcoxon "
    "signed-rank; both treat the overlapping splits as independent and overstate certainty"
)


PREDICTION_GROUP = "prediction"
HABERL_GROUP = "prediction as in Haberl et al. (uncorrected, for comparison with the paper)"
SUMMARY_COLUMNS = (
    SummaryColumn(
        "auc",
        "AUC [95% CI, corrected]",
        "ci(auc_mean,auc_ci_low,auc_ci_high)",
        "AUC [95% CI]",
        PREDICTION_GROUP,
        "mean test AUC over the splits with its 95 % CI from the corrected resampled t (Nadeau & Bengio "
        "2003), which allows for the overlap of the splits' training rows",
    ),
    SummaryColumn(
        "p_paired",
        "p (corrected t)",
        "p",
        "p",
        PREDICTION_GROUP,
        "corrected resampled t test of the per-split AUCs vs `none` (not adjusted for multiple comparisons; "
        "Holm-adjusted p-values are in the Prediction section)",
    ),
    SummaryColumn(
        "p_delong",
        "p (DeLong)",
        "p",
        "p DeLong",
        PREDICTION_GROUP,
        "DeLong test on each subject's mean out-of-split prediction vs `none`",
    ),
    SummaryColumn(
        "auc_haberl",
        "AUC [95% CI] as in Haberl et al.",
        "ci(auc_mean,auc_ci_low_haberl,auc_ci_high_haberl)",
        "AUC [95% CI]",
        HABERL_GROUP,
        "the paper's Student-t CI over the splits, too narrow because the splits overlap",
    ),
    SummaryColumn(
        "p_paired_haberl",
        "p as in Haberl et al.",
        "p",
        "p",
        HABERL_GROUP,
        "the paper's uncorrected rule (Shapiro-Wilk, then paired t or Wilcoxon over the splits), too small "
        "because the splits overlap; for comparison with the paper",
    ),
    SummaryColumn("paired_test_haberl", "test as in Haberl et al.", None, "test", HABERL_GROUP),
)
CAPTIONS = {
    PREDICTION_GROUP: "95% CI and p vs none: corrected resampled t over the splits (Nadeau & Bengio 2003). "
    "Holm-adjusted p-values: report.md.",
    HABERL_GROUP: "Student-t CI over the splits; Shapiro-Wilk, then paired t or Wilcoxon. "
    "The splits overlap: too optimistic.",
}


class PredictionEvaluator(Evaluator):
    """AUC of a logistic regression over Monte Carlo splits; corrected t and DeLong tests against the baseline.

    ``n_bootstrap``: resamples of the stratified bootstrap CI of the pooled AUC (seeded with the bench's seed).
    """

    name = "prediction"
    title = "Prediction"
    description = (
        "Outcome prediction: logistic regression AUC over stratified Monte Carlo splits, "
        "corrected resampled t + DeLong tests vs baseline"
    )

    def __init__(self, C: float = 1.0, max_iter: int = 1000, n_bootstrap: int = 2000):
        self.C = C
        self.max_iter = max_iter
        self.n_bootstrap = n_bootstrap

    def cv_key(self, ctx, method, reference, voi: str):
        table = ctx.features_of(method, reference, voi)
        X = table[ctx.feature_columns(voi)].astype(float)
        parts = (
            method.label,
            reference if method.stages or method.control else "-",
            X,
            list(table["site_group"]),
            ctx.splits.digest(),
            ctx.config.fit_on if method.feature_stages else "-",
            {
                "C": self.C,
                "max_iter": self.max_iter,
            },  # the classifier's parameters (not the statistics')
            ctx.method_key(method),
            list(ctx.outcome.items()),
            "newton-cholesky",
        )
        key = ctx.cache_key("prediction-cv", *parts)
        return key, X, table["site_group"]

    def run_all(self, ctx, voi: str) -> dict[tuple[str, str], dict]:
        """Cross-validation of every method and reference: cached ones read, the others in parallel on the executor."""
        runs, todo = {}, []
        for method in ctx.methods:
            for ref in ctx.references:
                key, X, groups = self.cv_key(ctx, method, ref, voi)
                cached = ctx.cache_get(key)
                if cached is not None:
                    runs[(method.label, ref)] = cached
                else:
                    todo.append(
                        (
                            (method.label, ref),
                            key,
                            cv_item(ctx, method, ref, X, groups, self.C, self.max_iter),
                        )
                    )
        if todo:
            label = f"prediction: {ctx.splits.n_splits} splits x {len(todo)} method/reference"
            results = ctx.map(cv_job, [t[2] for t in todo], label=label)
            for (name, key, _), r in zip(todo, results):
                if not r.ok:
                    raise HarmkitError(f"prediction failed for method {name[0]!r} (reference {name[1]}): {r.error}")
                runs[name] = ctx.cache_put(key, r.value)
        return runs

    def evaluate(self, ctx) -> EvaluationResult:
        import pandas as pd

        from .. import stats

        if ctx.splits is None:
            raise EvaluatorSkipped(str(ctx.prediction_skipped))
        voi = ctx.config.voi
        splits = ctx.splits
        subjects = list(splits.subjects)
        y = ctx.outcome.loc[subjects].to_numpy().astype(int)
        runs = self.run_all(ctx, voi)
        runs = {(m.label, ref): runs[(m.label, ref)] for m in ctx.methods for ref in ctx.references}
        n_train, n_test = split_sizes(splits)
        split_rows, summary, pooled_rows = [], {}, []
        roc_data: dict[str, list] = {}
        for (label, ref), run in runs.items():
            base = runs[("none", ref)]
            aucs = np.asarray(run["auc"], float)
            pooled, count = pooled_scores(splits, run["scores"])
            base_pooled, _ = pooled_scores(splits, base["scores"])
            seen = count > 0
            both_classes = len(set(y[seen])) == 2
            entry = {
                **auc_intervals(aucs, splits),
                "auc_sd": finite(np.std(aucs[np.isfinite(aucs)], ddof=1)) if np.isfinite(aucs).sum() > 1 else None,
                "n_splits": len(aucs),
                "n_train": n_train,
                "n_test": n_test,
                "n_pooled_subjects": int(seen.sum()),
            }
            if both_classes:
                _, dlo, dhi = stats.delong_auc_ci(y[seen], pooled[seen])
                value, blo, bhi = stats.bootstrap_auc_ci(y[seen], pooled[seen], self.n_bootstrap, ctx.config.seed)
                entry.update(
                    {
                        "auc_pooled": finite(value),
                        "auc_pooled_delong_ci_low": finite(dlo),
                        "auc_pooled_delong_ci_high": finite(dhi),
                        "auc_pooled_boot_ci_low": finite(blo),
                        "auc_pooled_boot_ci_high": finite(bhi),
                    }
                )
            else:
                entry["auc_pooled"] = None
            if label != "none":
                corrected = stats.corrected_resampled_ttest(aucs, base["auc"], n_train, n_test)
                test_name, p_haberl = stats.paired_test(aucs, base["auc"])
                entry["delta_auc"] = finite(corrected.mean)
                entry["delta_auc_ci_low"] = finite(corrected.ci_low)
                entry["delta_auc_ci_high"] = finite(corrected.ci_high)
                entry["t_corrected"] = finite(corrected.t)
                entry["p_paired"] = finite(corrected.p)
                entry["paired_test_haberl"] = test_name
                entry["p_paired_haberl"] = finite(p_haberl)
                if both_classes:
                    dl = stats.delong_test(y[seen], pooled[seen], base_pooled[seen])
                    entry["p_delong"] = finite(dl.p)
                    entry["delong_z"] = finite(dl.z)
                split_p = []
                for (_, test), s, sb in zip(splits, run["scores"], base["scores"]):
                    if len(set(y[test])) == 2:
                        split_p.append(stats.delong_test(y[test], s, sb).p)
                entry["p_delong_split_median"] = finite(np.median(split_p)) if split_p else None
                entry["share_splits_delong_p05"] = finite(np.mean(np.array(split_p) < 0.05)) if split_p else None
            summary[row_key(label, ref)] = entry
            for i, value in enumerate(run["auc"]):
                split_rows.append({"method": label, "reference": ref, "split": i, "auc": value})
            for sid, value, n in zip(subjects, pooled, count):
                pooled_rows.append(
                    {
                        "method": label,
                        "reference": ref,
                        "subject_id": sid,
                        "outcome": int(y[subjects.index(sid)]),
                        "mean_score": finite(value),
                        "n_test_splits": int(n),
                    }
                )
            roc_data.setdefault(ref, []).append((label, y[seen], pooled[seen]))
        controls = {m.label for m in ctx.methods if m.control or m.is_baseline}
        family = [k for k in summary if k.split("|")[0] not in controls]
        for key in ("p_paired", "p_delong"):
            values = [summary[k].get(key) for k in family]
            adjusted = stats.holm(np.array([np.nan if v is None else v for v in values], dtype=float))
            for k, value in zip(family, adjusted):
                summary[k][f"{key}_holm"] = finite(value)
        compared = [m.label for m in ctx.methods if not (m.control or m.is_baseline)]
        holm_family = HOLM_FAMILY.format(
            k=len(family),
            methods=", ".join(compared) or "no method",
            refs=", ".join(ctx.references),
        )
        figures = {}
        if ctx.figure_dir is not None:
            figures["roc"] = self._roc_figure(roc_data, ctx.figure_dir / "roc_curves.png")
            figures["auc_splits"] = self._auc_figure(pd.DataFrame(split_rows), ctx.figure_dir / "auc_per_split.png")
        summary_table = pd.DataFrame(
            [{"method": k.split("|")[0], "reference": k.split("|")[1], **v} for k, v in summary.items()]
        )
        summary_dict = {
            "by_method": summary,
            "voi": voi,
            "n_features": len(ctx.feature_columns(voi)),
            "n_subjects": len(subjects),
            "n_positive": int(y.sum()),
            "folds": splits.n_splits,
            "test_size": splits.test_size,
            "splits_digest": splits.digest(),
            "fit_on": ctx.config.fit_on,
            "classifier": f"StandardScaler + LogisticRegression(C={self.C}, L2, newton-cholesky), no feature selection",
            "delong_input": (
                "per-subject mean of out-of-split predicted probabilities (subjects tested in >= 1 split), "
                "paired with the baseline's"
            ),
            "ci": CI_TEXT,
            "paired_test": "corrected resampled t test of the per-split AUCs vs `none` (Nadeau & Bengio 2003), "
            "two-sided",
            "correction": {
                "n_train": n_train,
                "n_test": n_test,
                "factor": 1 / splits.n_splits + n_test / n_train,
            },
            "haberl": HABERL_TEXT,
            "holm_family": holm_family,
            "n_bootstrap": int(self.n_bootstrap),
            "bootstrap": f"stratified percentile bootstrap of the subjects' pooled scores, "
            f"{int(self.n_bootstrap)} resamples, seed {ctx.config.seed}",
        }
        rows = method_rows(ctx, summary)
        report = [
            f"{summary_dict['classifier']}; VOI `{voi}`, {summary_dict['n_features']} features, {len(subjects)} "
            f"subjects ({int(y.sum())} positive), {splits.n_splits} splits. DeLong input: "
            f"{summary_dict['delong_input']}.",
            statistics_text(summary_dict),
            ReportTable(*prediction_table(rows, summary_dict["n_bootstrap"]), ident="prediction"),
            ReportFigure("roc", "ROC curves"),
            ReportFigure("auc_splits", "AUC per split"),
        ]
        return EvaluationResult(
            self.name,
            tables={
                "auc_per_split": pd.DataFrame(split_rows),
                "summary": summary_table,
                "pooled_scores": pd.DataFrame(pooled_rows),
            },
            figures=figures,
            summary=summary_dict,
            columns=list(SUMMARY_COLUMNS),
            report=report,
            captions=CAPTIONS,
        )

    @staticmethod
    def _roc_figure(roc_data, path):
        from sklearn.metrics import roc_curve

        from ._common import plt as _plt

        plt = _plt()
        refs = list(roc_data)
        fig, axes = plt.subplots(1, len(refs), figsize=(4.2 * len(refs), 4), squeeze=False)
        for ax, ref in zip(axes[0], refs):
            for label, y, s in roc_data[ref]:
                if len(set(y)) < 2:
                    continue
                fpr, tpr, _ = roc_curve(y, s)
                from ..stats import auc

                ax.plot(fpr, tpr, label=f"{label} (AUC {auc(y, s):.2f})")
            ax.plot([0, 1], [0, 1], color="grey", lw=0.8, ls="--")
            ax.set_title(f"reference {ref}\n(pooled out-of-split predictions)", fontsize=9)
            ax.set_xlabel("false positive rate")
            ax.set_ylabel("true positive rate")
            if ax.get_legend_handles_labels()[0]:
                ax.legend(fontsize=7, loc="lower right")
        return savefig(fig, path)

    @staticmethod
    def _auc_figure(frame, path):
        from ._common import plt as _plt

        plt = _plt()
        refs = list(dict.fromkeys(frame["reference"]))
        fig, axes = plt.subplots(1, len(refs), figsize=(4.2 * len(refs), 3.6), squeeze=False)
        for ax, ref in zip(axes[0], refs):
            sub = frame[frame["reference"] == ref]
            labels = list(dict.fromkeys(sub["method"]))
            boxplot(ax, [sub[sub["method"] == m]["auc"].dropna() for m in labels], labels)
            ax.set_title(f"test AUC per split, reference {ref}", fontsize=9)
            ax.set_ylabel("AUC")
            ax.tick_params(axis="x", labelsize=7, rotation=20)
        return savefig(fig, path)


def statistics_text(s: dict[str, Any]) -> str:
    """What the Prediction table's statistics are, from the prediction evaluator's summary."""
    corr = s.get("correction", {})
    return (
        f"AUC [95% CI, corrected]: {s['ci']} (here J = {s['folds']}, n_train = {fmt(corr.get('n_train'), '.1f')}, "
        f"n_test = {fmt(corr.get('n_test'), '.1f')}: the variance of the mean is "
        f"{fmt(corr.get('factor'), '.3f')}·S² instead of S²/{s['folds']}). "
        "ΔAUC: mean per-split difference to `none` with the same corrected CI. "
        f"p (corrected t): {s['paired_test']}. Holm-adjusted p: {s['holm_family']}. "
        f'Columns "as in Haberl et al.": {s["haberl"]}. '
        f"Pooled AUC: AUC of the pooled out-of-split predictions, with DeLong's 95 % CI and a {s['bootstrap']} "
        "(both treat the pooled scores as fixed: they leave out the variability of model training)."
    )


def prediction_table(summary: list[dict[str, Any]], n_bootstrap: Any) -> tuple[list[str], list[list[str]]]:
    """Header and rows of the report's Prediction table: corrected statistics first, the paper's labelled."""
    header = [
        "method",
        "reference",
        "AUC [95% CI, corrected]",
        "95% CI as in Haberl et al.",
        "ΔAUC [95% CI, corrected]",
        "t (corrected)",
        "p (corrected t)",
        "p (corrected t, Holm)",
        "test as in Haberl et al.",
        "p as in Haberl et al.",
        "p (DeLong, pooled)",
        "p (DeLong, Holm)",
        "median p (DeLong per split)",
        "pooled AUC",
        "DeLong 95% CI",
        f"bootstrap 95% CI ({n_bootstrap} resamples)",
    ]
    rows = []
    for r in summary:
        delta = "–"
        if r.get("delta_auc") is not None:
            ci = interval_text(r, "delta_auc_ci_low", "delta_auc_ci_high", "+.3f", ", ")
            delta = f"{fmt(r['delta_auc'], '+.3f')} {ci}"
        rows.append(
            [
                r["method"],
                r["reference"],
                auc_text(r),
                interval_text(r, "auc_ci_low_haberl", "auc_ci_high_haberl"),
                delta,
                fmt(r.get("t_corrected"), "+.2f"),
                fmt(r.get("p_paired"), "p"),
                fmt(r.get("p_paired_holm"), "p"),
                fmt(r.get("paired_test_haberl"), None),
                fmt(r.get("p_paired_haberl"), "p"),
                fmt(r.get("p_delong"), "p"),
                fmt(r.get("p_delong_holm"), "p"),
                fmt(r.get("p_delong_split_median"), "p"),
                fmt(r.get("auc_pooled"), ".3f"),
                interval_text(r, "auc_pooled_delong_ci_low", "auc_pooled_delong_ci_high"),
                interval_text(r, "auc_pooled_boot_ci_low", "auc_pooled_boot_ci_high"),
            ]
        )
    return header, rows
