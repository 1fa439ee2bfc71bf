"""Time ComBat (plugin ``combat``) fit and apply on feature tables of radiomics size.

Usage::

    python benchmarks/feature_harmonizers.py                 # 200 x 93 and 20,000 x 93, 3 sites
    python benchmarks/feature_harmonizers.py --rows 200 2000 --repeats 5 --gam

Data: synthetic features (seeded) with a per-site location and scale effect
and an age effect; 3 sites of equal size. "fit" is ``ComBat.fit`` (input
checks, the site-difference test, neuroHarmonize's harmonizationLearn);
"apply" is ``ComBat.transform`` of every row (harmonizationApply). Each figure
is the best of ``--repeats`` runs (wall clock, one process). The machine this
runs on may be shared: compare rows measured in the same run.
"""

from __future__ import annotations

import argparse
import platform
import time
import warnings

import numpy as np
import pandas as pd


def make_table(rows: int, features: int, sites: int, seed: int = 0):
    rng = np.random.default_rng(seed)
    labels = np.array([f"site{k}" for k in range(sites)])[np.arange(rows) % sites]
    age = rng.uniform(30, 85, rows)
    values = rng.normal(size=(rows, features)) * rng.uniform(0.5, 3, features) + rng.uniform(-5, 5, features)
    values += np.outer(age - 60, rng.normal(scale=0.03, size=features))
    for k in range(sites):
        rows_k = labels == f"site{k}"
        values[rows_k] = values[rows_k] * rng.uniform(0.7, 1.4, features) + rng.normal(scale=0.8, size=features)
    table = pd.DataFrame(values, columns=[f"feature_{j:02d}" for j in range(features)])
    return table, pd.Series(labels), pd.DataFrame({"age": age})


def best_of(repeats: int, fn):
    times = []
    result = None
    for _ in range(repeats):
        start = time.perf_counter()
        result = fn()
        times.append(time.perf_counter() - start)
    return min(times), result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, nargs="+", default=[200, 20000])
    parser.add_argument("--features", type=int, default=93)
    parser.add_argument("--sites", type=int, default=3)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument(
        "--gam",
        action="store_true",
        help="also time a smooth (GAM) age term on tables of <= 2,000 rows (slow: one GAM per feature; fit timed once)",
    )
    args = parser.parse_args()

    from harmkit_combat import ComBat, ComBatWarning

    variants = [
        ("EB", dict(eb=True), False),
        ("EB + age (linear)", dict(eb=True), True),
        ("L/S, no EB", dict(eb=False), False),
    ]
    if args.gam:
        variants.append(("EB + age (GAM)", dict(eb=True, smooth_terms=["age"]), True))
    print(
        f"ComBat (harmkit-combat / neuroHarmonize), {args.sites} sites, {args.features} features; "
        f"best of {args.repeats}; {platform.processor() or platform.machine()}, Python {platform.python_version()}"
    )
    print()
    print("| rows × features | variant | fit (s) | apply (s) | apply per 1,000 rows (ms) |")
    print("|---|---|---:|---:|---:|")
    for rows in args.rows:
        table, sites, cov = make_table(rows, args.features, args.sites)
        for label, params, use_cov in variants:
            if "GAM" in label and rows > 2000:
                continue
            covariates = cov if use_cov else None
            model = ComBat(**params)
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", ComBatWarning)
                repeats = 1 if "GAM" in label else args.repeats  # tens of seconds per GAM fit
                args_ = (table, sites, covariates)
                fit_s, _ = best_of(repeats, lambda model=model, args_=args_: model.fit(*args_))
                apply_s, out = best_of(args.repeats, lambda model=model, args_=args_: model.transform(*args_))
            assert np.isfinite(out.to_numpy()).all()
            print(
                f"| {rows:,} × {args.features} | {label} | {fit_s:.3f} | {apply_s:.3f} | "
                f"{1000 * apply_s / rows * 1000:.2f} |"
            )


if __name__ == "__main__":
    main()
