"""Site effects of the simulator presets: what an image model and a radiomics study can see.

For each preset it simulates a cohort (``--size quick``, the paper's counts unless
``--subjects-per-site``, with counterfactuals) or reads one (``--cohort DIR``), and prints:

* the **patch classifier**: held-out accuracy between the site groups on texture descriptors of
  32^3 patches divided by their own mean (so not from the SUV level), at the median spacing of
  each reference group (the grid a CycleGAN trains on) -- target >= 0.80;
* **texture per site group** in the reference VOI: noise SD, COV, noise correlation FWHM, and the
  effective resolution from the lesion edge (``harmkit.diagnostics``);
* the **feature-level site AUC** of the reference-VOI features;
* lung: the liver-VOI **COV medians** of TUB and BUD against the paper's 0.13 and 0.09 (within 0.02);
* the **oracle**: for each reference group, the non-reference subjects' counterfactual scans at the
  reference group's sites replace their scans (the best any harmonizer could do); the mean gain in
  reference-VOI feature overlap per feature class, in percentage points -- target >= 15 pp in every
  class for the lung liver VOI (Table 2 of the paper: 16-32 pp for its GAN outside first order).

    python benchmarks/site_effects.py                                  # both presets, paper counts
    python benchmarks/site_effects.py --presets lung --subjects-per-site 12 --jobs 2
    python benchmarks/site_effects.py --presets headneck --cohort /tmp/sim_hn   # an existing cohort
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
from rich.console import Console
from rich.table import Table

import harmkit as hk
from harmkit.data import Cohort
from harmkit.diagnostics import (
    patch_separability,
    site_predictability,
    texture_statistics,
)
from harmkit.diagnostics.patches import median_spacing
from harmkit.execution import get_executor
from harmkit.reproducibility import class_summary, overlap_change

PAPER_LIVER_COV = {"TUB": 0.13, "BUD": 0.09}
TEXTURE_CLASSES = ("glcm", "glrlm", "glszm", "gldm", "ngtdm")


def oracle_scans(cohort, counterfactuals, reference: str):
    """Each non-reference subject's counterfactual at one of the reference group's sites (round-robin by site size)."""
    sizes = {}
    for scan in cohort:
        if scan.group == reference:
            sizes[scan.site] = sizes.get(scan.site, 0) + 1
    sites = sorted(sizes, key=lambda s: -sizes[s])
    credit = {s: 0.0 for s in sites}
    total = sum(sizes.values())
    oracle = []
    for scan in cohort:
        if scan.group == reference:
            continue
        for s in sites:
            credit[s] += sizes[s] / total
        site = max(sites, key=lambda s: credit[s])
        credit[site] -= 1.0
        twin = counterfactuals.get(f"{scan.subject_id}@{site}")
        oracle.append(twin)
    return oracle


def oracle_gain(
    features: pd.DataFrame,
    oracle_features: pd.DataFrame,
    cohort,
    reference: str,
    classes: dict,
) -> pd.DataFrame:
    """Per-class mean overlap before/after (pp gain) when the non-reference rows are replaced by their oracle rows."""
    groups = {s.subject_id: s.group for s in cohort}
    other = next(g for g in dict.fromkeys(groups.values()) if g != reference)
    columns = [c for c in features.columns if c not in ("site", "site_group")]
    finite = [c for c in columns if np.isfinite(features[c]).all() and np.isfinite(oracle_features[c]).all()]
    before = features[finite].copy()
    after = before.copy()
    source = {sid.split("@")[0]: sid for sid in oracle_features.index}
    for sid in before.index:
        if groups[sid] != reference:
            after.loc[sid] = oracle_features.loc[source[sid], finite].to_numpy(dtype=float)
    group_list = [groups[s] for s in before.index]
    change = overlap_change(before, after, group_list, group_list, other, reference, classes)
    return class_summary(change, min_features=1)


def bench_preset(name: str, args, console: Console) -> dict:
    workdir = Path(tempfile.mkdtemp(prefix=f"harmkit-site-effects-{name}-"))
    out = {"preset": name}
    try:
        started = time.perf_counter()
        if args.cohort:
            manifest = Path(args.cohort) / "manifest.csv"
        else:
            manifest = hk.simulate(
                name,
                out=workdir / "cohort",
                seed=args.seed,
                subjects_per_site=args.subjects_per_site,
                size=args.size,
                jobs=args.jobs,
                counterfactuals=True,
                progress=not args.quiet,
            )
        out["simulate_s"] = time.perf_counter() - started
        cohort = hk.load_cohort(manifest)
        counterfactuals = hk.load_cohort(manifest.parent / "counterfactuals.csv")
        groups = cohort.site_groups
        executor = get_executor(jobs=args.jobs, progress=not args.quiet)
        try:
            t = time.perf_counter()
            patches = {}
            for ref in groups:
                spacing = median_spacing([s for s in cohort if s.group == ref])
                patches[ref] = patch_separability(
                    cohort,
                    spacing,
                    32,
                    args.patches_per_scan,
                    5,
                    args.seed,
                    executor=executor,
                )
            out["patch_s"] = time.perf_counter() - t
            t = time.perf_counter()
            texture = texture_statistics(cohort, "reference", "lesion", executor=executor)
            out["texture_s"] = time.perf_counter() - t
            t = time.perf_counter()
            features = hk.extract(
                cohort,
                voi="reference",
                jobs=args.jobs,
                cache_dir=workdir / "cache",
                executor=executor,
                progress=not args.quiet,
            )
            classes = dict(features.attrs.get("feature_classes", {}))
            oracle = {}
            for ref in groups:
                twins = Cohort(oracle_scans(cohort, counterfactuals, ref))
                twin_features = hk.extract(
                    twins,
                    voi="reference",
                    jobs=args.jobs,
                    cache_dir=workdir / "cache",
                    executor=executor,
                    progress=not args.quiet,
                )
                oracle[ref] = oracle_gain(features, twin_features, cohort, ref, classes)
            out["features_s"] = time.perf_counter() - t
        finally:
            executor.close()
        predictability = site_predictability(features, seed=args.seed)

        table = Table(title=f"{name} ({args.size}, {len(cohort)} scans): texture in the reference VOI, median [IQR]")
        for column in (
            "site group",
            "scans",
            "noise SD",
            "COV",
            "noise corr. xy (mm)",
            "noise corr. z (mm)",
            "lesion-edge FWHM (mm)",
        ):
            table.add_column(column)
        for group, sub in texture.groupby("site_group", sort=False):
            cells = [group, str(len(sub))]
            for column, spec in (
                ("noise_sd_suv", ".3f"),
                ("noise_cov", ".3f"),
                ("corr_fwhm_inplane_mm", ".1f"),
                ("corr_fwhm_axial_mm", ".1f"),
                ("edge_fwhm_mm", ".1f"),
            ):
                q1, med, q3 = np.nanpercentile(sub[column].to_numpy(dtype=float), [25, 50, 75])
                cells.append(f"{format(med, spec)} [{format(q1, spec)}-{format(q3, spec)}]")
            table.add_row(*cells)
        console.print(table)
        for ref, result in patches.items():
            ok = "ok" if result["accuracy"] >= 0.80 else "BELOW TARGET"
            console.print(
                f"patch classifier at {ref}'s grid ({'x'.join(f'{v:.2f}' for v in result['spacing_mm'])} mm, "
                f"32^3, patches / own mean): held-out accuracy {result['accuracy']:.3f} (target >= 0.80: {ok})"
            )
        out["patch_accuracy"] = {ref: r["accuracy"] for ref, r in patches.items()}
        console.print(
            f"feature-level site AUC, reference-VOI features: {predictability['auc']:.3f} "
            f"[{predictability['ci_low']:.2f}-{predictability['ci_high']:.2f}]"
        )
        out["site_auc_reference_voi"] = predictability["auc"]
        if name == "lung":
            cov = texture.groupby("site_group")["noise_cov"].median()
            for group, paper in PAPER_LIVER_COV.items():
                ok = "ok" if abs(cov[group] - paper) <= 0.02 else "OFF TARGET"
                console.print(f"liver-VOI COV median {group}: {cov[group]:.3f} (paper {paper:.2f}, within 0.02: {ok})")
            out["liver_cov"] = {g: float(cov[g]) for g in PAPER_LIVER_COV}
        gains = Table(
            title=f"{name}: oracle (counterfactuals at the reference group) -- reference-VOI overlap, mean per class"
        )
        gains.add_column("reference")
        gains.add_column("class")
        gains.add_column("features")
        gains.add_column("overlap before")
        gains.add_column("overlap after")
        gains.add_column("gain (pp)")
        out["oracle_gain_pp"] = {}
        for ref, summary in oracle.items():
            for cls, row in summary.iterrows():
                gains.add_row(
                    ref,
                    cls,
                    str(int(row["n_features"])),
                    f"{row['before_mean']:.3f}",
                    f"{row['after_mean']:.3f}",
                    f"{100 * row['improvement_mean']:+.1f}",
                )
            out["oracle_gain_pp"][ref] = {cls: float(100 * r["improvement_mean"]) for cls, r in summary.iterrows()}
        console.print(gains)
        if name == "lung":
            for ref, per_class in out["oracle_gain_pp"].items():
                low = min(per_class[c] for c in TEXTURE_CLASSES if c in per_class)
                console.print(
                    f"oracle towards {ref}: smallest texture-class gain {low:+.1f} pp "
                    f"(target >= 15: {'ok' if low >= 15 else 'BELOW TARGET'}); first order "
                    f"{per_class.get('firstorder', float('nan')):+.1f} pp"
                )
        console.print(
            f"times: simulate {out['simulate_s']:.0f} s, patches {out['patch_s']:.0f} s, "
            f"texture {out['texture_s']:.0f} s, "
            f"features + oracle {out['features_s']:.0f} s"
        )
    finally:
        if args.keep:
            console.print(f"kept {workdir}")
        else:
            shutil.rmtree(workdir, ignore_errors=True)
    return out


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument(
        "--presets",
        default="headneck,lung",
        help="comma-separated presets (default: both)",
    )
    parser.add_argument(
        "--subjects-per-site",
        type=int,
        default=None,
        help="default: the paper's counts",
    )
    parser.add_argument("--size", default="quick", choices=["quick", "full"])
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--jobs", type=int, default=None)
    parser.add_argument("--patches-per-scan", type=int, default=8)
    parser.add_argument(
        "--cohort",
        default=None,
        help="use this simulated cohort folder instead of simulating (one preset)",
    )
    parser.add_argument("--keep", action="store_true", help="keep the generated cohorts")
    parser.add_argument("--quiet", action="store_true", help="no progress bars")
    args = parser.parse_args(argv)
    console = Console(width=max(Console().width, 150))
    for name in [p.strip() for p in args.presets.split(",") if p.strip()]:
        bench_preset(name, args, console)


if __name__ == "__main__":
    main()
