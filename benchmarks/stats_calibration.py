"""Are the bench's paired tests calibrated? Rejection rates under a true null, through harmkit's own pipeline.

Usage::

    python benchmarks/stats_calibration.py                     # 100 repetitions per scenario, 2 processes
    python benchmarks/stats_calibration.py --reps 300 --jobs 4 --json calibration.json

Each repetition simulates a cohort (seeded), draws the bench's stratified
Monte Carlo splits (``harmkit.bench.splits.monte_carlo_splits``, default 100 ×
80/20) and runs two "methods" through the prediction evaluator's own worker
(``harmkit.evaluators.prediction.cv_job``: StandardScaler + L2 logistic
regression, Newton-Cholesky, fitted on each split's training rows). The two
methods are the same method with different seeds: each subject's features
are its true feature values plus seeded measurement noise (a stochastic
harmonizer run twice). Their expected AUCs are equal by construction, so every
rejection at ``--alpha`` is a false positive. Scenarios:

* ``independent outcome``: the outcome is independent of every feature (the
  expected AUC of either method is exactly 0.5, so the coverage of 0.5 by each
  95 % CI of the mean AUC is also reported);
* ``predictive features``: the outcome depends on five of the features
  (expected AUC about 0.7-0.75).

Per repetition the per-split AUCs of the two methods are compared with
Student's paired t test over the splits (uncorrected), the paper's rule
(``harmkit.stats.paired_test``: Shapiro-Wilk, then paired t or Wilcoxon, as
in Haberl et al.), the corrected resampled t test
(``harmkit.stats.corrected_resampled_ttest``) and, for reference, DeLong's
test on pooled out-of-split predictions (as the bench). The table gives the
share of repetitions with p < alpha and its exact (Clopper-Pearson) 95 %
interval. A last table sets the standard error each test assumes (root mean
square over repetitions) against the SD of the mean per-split AUC difference
across repetitions, the spread a standard error should estimate.
Deterministic for a ``--seed``. Runtime is dominated by the logistic
regressions: 2 × folds fits per repetition (about 2-4 s per
repetition on one core of the shared 2-core machine).
"""

from __future__ import annotations

import argparse
import json
import platform
import time

import numpy as np

SCENARIOS = ("independent outcome", "predictive features")
TESTS = (
    ("p_student", "paired t over splits (uncorrected)"),
    ("p_haberl", "as in Haberl et al. (Shapiro -> t / Wilcoxon)"),
    ("p_corrected", "corrected resampled t (Nadeau & Bengio)"),
    ("p_delong", "DeLong, pooled out-of-split predictions"),
)


def simulate(scenario: str, rep: int, args) -> tuple[np.ndarray, list[np.ndarray]]:
    """Outcome and the two methods' feature matrices of one repetition (seeded by ``seed``, scenario, ``rep``)."""
    rng = np.random.default_rng([args.seed, SCENARIOS.index(scenario), rep])
    n, k = args.subjects, int(round(args.prevalence * args.subjects))
    truth = rng.normal(size=(n, args.features))
    if scenario == "independent outcome":
        y = np.zeros(n, dtype=int)
        y[rng.choice(n, k, replace=False)] = 1
    else:
        risk = truth[:, :5].sum(axis=1) / np.sqrt(5) + rng.logistic(scale=0.6, size=n)
        y = np.zeros(n, dtype=int)
        y[np.argsort(risk)[-k:]] = 1  # the k subjects with the highest risk have the event
    methods = []
    for m in (
        1,
        2,
    ):  # the same method, two seeds: the true values plus that seed's measurement noise
        noise = np.random.default_rng([args.seed, SCENARIOS.index(scenario), rep, m]).normal(size=truth.shape)
        methods.append(truth + args.noise * noise)
    return y, methods


def one_repetition(item: tuple) -> dict:
    """Both methods through the prediction evaluator's worker on the bench's splits, then every test."""
    import pandas as pd
    from scipy import stats as st

    from harmkit import stats
    from harmkit.bench.splits import monte_carlo_splits
    from harmkit.evaluators.prediction import cv_job, pooled_scores, split_sizes

    scenario, rep, args = item
    y, methods = simulate(scenario, rep, args)
    subjects = [f"s{i:04d}" for i in range(len(y))]
    splits = monte_carlo_splits(subjects, y, args.folds, args.test_size, seed=args.seed * 100_003 + rep)
    groups = np.array(["all"] * len(y))
    runs = []
    for X in methods:
        frame = pd.DataFrame(X, index=subjects, columns=[f"f{j:03d}" for j in range(X.shape[1])])
        runs.append(
            cv_job(
                (
                    frame,
                    groups,
                    y,
                    splits.test_masks,
                    [],
                    args.seed,
                    "",
                    "train",
                    1.0,
                    1000,
                )
            )
        )
    a, b = (np.asarray(r["auc"], float) for r in runs)
    n_train, n_test = split_sizes(splits)
    pooled = [pooled_scores(splits, r["scores"]) for r in runs]
    seen = pooled[0][1] > 0
    _, lo_t, hi_t = stats.mean_ci(a)
    _, lo_c, hi_c = stats.corrected_mean_ci(a, n_train, n_test)
    corrected = stats.corrected_resampled_ttest(a, b, n_train, n_test)
    d = (a - b)[np.isfinite(a - b)]
    return {
        "scenario": scenario,
        "rep": rep,
        "auc_a": float(np.nanmean(a)),
        "auc_b": float(np.nanmean(b)),
        "p_student": float(st.ttest_rel(a, b).pvalue),
        "p_haberl": stats.paired_test(a, b)[1],
        "p_corrected": corrected.p,
        "p_delong": stats.delong_test(y[seen], pooled[0][0][seen], pooled[1][0][seen]).p,
        "covers_half_haberl": bool(lo_t <= 0.5 <= hi_t),
        "covers_half_corrected": bool(lo_c <= 0.5 <= hi_c),
        "d_mean": corrected.mean,
        "se_corrected": corrected.se,
        "se_student": float(d.std(ddof=1) / np.sqrt(d.size)),
    }


def rate(hits: int, n: int) -> str:
    from scipy.stats import binomtest

    ci = binomtest(hits, n).proportion_ci(0.95, method="exact")
    return f"{hits / n:.1%} [{ci.low:.1%}–{ci.high:.1%}]"


def table(rows: list[dict], alpha: float) -> str:
    """Markdown: one row per test, one column per scenario (rejection rate at alpha and its 95 % interval)."""
    scenarios = [s for s in SCENARIOS if any(r["scenario"] == s for r in rows)]
    by = {s: [r for r in rows if r["scenario"] == s] for s in scenarios}
    head = "| test | " + " | ".join(f"{s}: rejected at α = {alpha} (n = {len(by[s])})" for s in scenarios) + " |"
    lines = [head, "|---|" + "---|" * len(scenarios)]
    for key, title in TESTS:
        cells = []
        for s in scenarios:
            p = [r[key] for r in by[s] if np.isfinite(r[key])]
            cells.append(rate(sum(v < alpha for v in p), len(p)))
        lines.append(f"| {title} | " + " | ".join(cells) + " |")
    if "independent outcome" in by:
        sub = by["independent outcome"]
        cover = [rate(sum(r[f"covers_half_{k}"] for r in sub), len(sub)) for k in ("haberl", "corrected")]
        lines.append("")
        lines.append("| 95 % CI of the mean AUC (independent outcome; true expected AUC 0.5) | covers 0.5 |")
        lines.append("|---|---|")
        lines.append(f"| Student's t over splits, as in Haberl et al. | {cover[0]} |")
        lines.append(f"| corrected resampled t | {cover[1]} |")
    lines.append("")
    lines.append(
        "| scenario | mean AUC, method 1 | mean AUC, method 2 | SD of ΔAUC over repetitions | "
        "RMS corrected SE | RMS Student SE |"
    )
    lines.append("|---|---|---|---|---|---|")
    for s in scenarios:
        rms = [np.sqrt(np.mean(np.square([r[k] for r in by[s]]))) for k in ("se_corrected", "se_student")]
        means = [np.mean([r[k] for r in by[s]]) for k in ("auc_a", "auc_b")]
        spread = np.std([r["d_mean"] for r in by[s]], ddof=1)
        lines.append(f"| {s} | {means[0]:.3f} | {means[1]:.3f} | {spread:.4f} | {rms[0]:.4f} | {rms[1]:.4f} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--reps",
        type=int,
        default=100,
        help="repetitions (simulated cohorts) per scenario",
    )
    parser.add_argument(
        "--scenarios",
        default=",".join(SCENARIOS),
        help="comma-separated: " + ", ".join(SCENARIOS),
    )
    parser.add_argument(
        "--subjects",
        type=int,
        default=200,
        help="subjects per cohort (bench's quick cohort: 197)",
    )
    parser.add_argument(
        "--prevalence",
        type=float,
        default=0.15,
        help="share with the outcome (bench: 28/197)",
    )
    parser.add_argument("--features", type=int, default=30)
    parser.add_argument(
        "--noise",
        type=float,
        default=0.5,
        help="SD of each method's seeded measurement noise",
    )
    parser.add_argument(
        "--folds",
        type=int,
        default=100,
        help="Monte Carlo splits per repetition (bench's --folds)",
    )
    parser.add_argument("--test-size", type=float, default=0.2)
    parser.add_argument("--alpha", type=float, default=0.05)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--jobs", type=int, default=2)
    parser.add_argument("--json", help="also write every repetition's p-values to this file")
    args = parser.parse_args()
    scenarios = [s.strip() for s in args.scenarios.split(",")]
    unknown = [s for s in scenarios if s not in SCENARIOS]
    if unknown:
        parser.error(f"unknown scenario {unknown[0]!r}; choose from: {', '.join(SCENARIOS)}")

    from harmkit.execution import get_executor

    items = [(s, rep, args) for s in scenarios for rep in range(args.reps)]
    start = time.perf_counter()
    with get_executor(args.jobs) as executor:
        results = executor.map(
            one_repetition,
            items,
            label=f"{len(items)} repetitions x {2 * args.folds} fits",
        )
    failed = [r.error for r in results if not r.ok]
    if failed:
        raise SystemExit(f"{len(failed)} repetition(s) failed, first: {failed[0]}")
    rows = [r.value for r in results]
    elapsed = time.perf_counter() - start
    print(
        f"# stats calibration: {args.subjects} subjects ({args.prevalence:.0%} positive), {args.features} features, "
        f"noise SD {args.noise}, {args.folds} splits x {1 - args.test_size:.0%}/{args.test_size:.0%}, "
        f"seed {args.seed}"
    )
    print(
        f"# {len(rows)} repetitions in {elapsed:.0f} s with {args.jobs} process(es) on {platform.node()} "
        f"({platform.processor() or platform.machine()})\n"
    )
    print(table(rows, args.alpha))
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(
                {
                    "args": {k: v for k, v in vars(args).items() if k != "json"},
                    "repetitions": rows,
                },
                fh,
                indent=1,
            )


if __name__ == "__main__":
    main()
