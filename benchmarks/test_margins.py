"""The values behind the suite's threshold assertions on computed numbers, over several seeds.

A test's threshold must sit well outside the spread of its value over seeds (docs/testing.md): that spread
stands in for the differences between machines. Prints one line per quantity.

    python benchmarks/test_margins.py          # ComBat tests (seconds)
    python benchmarks/test_margins.py --gan    # also the CycleGAN texture test over seeds 0-2 (minutes)
    python benchmarks/test_margins.py --gan --gan-param noise_input=false   # the same with an option changed
    python benchmarks/test_margins.py --learning   # also the issue-14 learning test's training over seeds 0-2
"""

from __future__ import annotations

import argparse
import sys
import warnings
from pathlib import Path

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
warnings.filterwarnings("ignore")


def combat_reference_offsets(seeds) -> list[float]:
    from test_combat import make_table, quiet_fit

    from harmkit_combat import ComBat

    ratios = []
    for seed in seeds:
        features, sites, _ = make_table(seed=seed)
        out = quiet_fit(ComBat(), features, sites, reference_site="S1").transform(features, sites)
        ref = (sites == "S1").to_numpy()
        worst = 0.0
        for other in ("S0", "S2"):
            rows = (sites == other).to_numpy()
            before = np.abs(features[rows].mean() - features[ref].mean()).mean()
            after = np.abs(out[rows].mean() - features[ref].mean()).mean()
            worst = max(worst, after / before)
        ratios.append(worst)
    return ratios


def combat_gam_error_ratios(seeds) -> list[float]:
    from test_combat import quiet_fit

    from harmkit_combat import ComBat

    ratios = []
    for seed in seeds:
        rng = np.random.default_rng(seed)
        n = 80
        sites = pd.Series(["A"] * n + ["B"] * n)
        age = np.concatenate([rng.uniform(20, 60, n), rng.uniform(40, 80, n)])
        effect = 4.0 * np.sin((age - 20) / 60 * np.pi)
        noise = [rng.normal(scale=0.3, size=2 * n) for _ in range(2)]
        truth = np.column_stack([effect + noise[0], -effect + noise[1]])
        observed = truth + np.where(sites.to_numpy()[:, None] == "B", [1.5, -1.0], 0.0)
        features, cov = (
            pd.DataFrame(observed, columns=["f0", "f1"]),
            pd.DataFrame({"age": age}),
        )
        linear = quiet_fit(ComBat(eb=False), features, sites, cov, reference_site="A").transform(features, sites, cov)
        smooth_model = quiet_fit(
            ComBat(eb=False, smooth_terms=["age"]),
            features,
            sites,
            cov,
            reference_site="A",
        )
        smooth = smooth_model.transform(features, sites, cov)
        b = (sites == "B").to_numpy()
        ratios.append(np.abs(smooth[b].to_numpy() - truth[b]).mean() / np.abs(linear[b].to_numpy() - truth[b]).mean())
    return ratios


def gan_learning(seeds, profile: str = "texture", **overrides) -> list[dict[str, float]]:
    """The CycleGAN texture test's measures per seed: its toy training (160 fp32 steps) with ``profile``."""
    import SimpleITK as sitk
    import torch
    from test_cyclegan_harmonizer import TINY, lowpass_ssim, texture, two_site_cohort

    import harmkit as hk
    from harmkit_cyclegan.monitor import checkerboard_share

    torch.set_num_threads(1)
    cohort = two_site_cohort()
    a_scans, b_scans = cohort.by_group("A"), cohort.by_group("B")
    tex_a = np.mean([texture(s, s.masks["body"]) for s in a_scans])
    tex_b = np.mean([texture(s, s.masks["body"]) for s in b_scans])
    rows = []
    for seed in seeds:
        gan = hk.get_harmonizer(
            "gan", profile=profile, steps=160, seed=seed, precision="fp32", **{**TINY, **overrides}
        ).fit(cohort, "B")
        moved, ssims, changes, shares = [], [], [], []
        for scan in a_scans:
            out = gan.transform(scan)
            body = sitk.GetArrayFromImage(scan.masks["body"]) > 0
            before = sitk.GetArrayFromImage(scan.load_image())
            after = sitk.GetArrayFromImage(out.load_image())
            moved.append(texture(out, scan.masks["body"]))
            ssims.append(lowpass_ssim(scan.load_image(), out.load_image(), body))
            changes.append(after[body].mean() / before[body].mean() - 1)
            shares.append(checkerboard_share((after - before)[8:-8, 8:-8, 8:-8]))
        rows.append(
            {
                "fraction": (np.mean(moved) - tex_a) / (tex_b - tex_a),
                "ssim": min(ssims),
                "suv_low": min(changes),
                "suv_high": max(changes),
                "checkerboard": max(shares),
            }
        )
    return rows


def gan_learning_test(seeds) -> list[dict]:
    """The issue-14 learning test's computation (test_cyclegan_learning.py) at each seed: share moved per direction."""
    import tempfile

    from test_cyclegan_learning import share_moved

    return [share_moved(Path(tempfile.mkdtemp()), seed=seed) for seed in seeds]


def _value(text: str):
    try:
        return float(text)
    except ValueError:
        return {"true": True, "false": False}.get(text.lower(), text)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument(
        "--gan",
        action="store_true",
        help="also train the CycleGAN texture test's model per seed (about a minute each)",
    )
    parser.add_argument("--gan-profile", default="texture", help="CycleGAN profile to train (the test's: texture)")
    parser.add_argument(
        "--gan-param",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="a CycleGAN hyper-parameter on top of the profile, to measure an option on the toy (repeatable)",
    )
    parser.add_argument("--gan-seeds", default="0,1,2", help="comma-separated seeds (default 0,1,2)")
    parser.add_argument(
        "--learning",
        action="store_true",
        help="also rerun the issue-14 learning test's training (test_cyclegan_learning.py) at the --gan-seeds",
    )
    args = parser.parse_args()
    values = ", ".join(f"{v:.3f}" for v in combat_reference_offsets(range(5)))
    print(f"combat reference offset after/before (test: < 0.25; seed 1 in the test), seeds 0-4: {values}")
    values = ", ".join(f"{v:.3f}" for v in combat_gam_error_ratios(range(11, 16)))
    print(f"combat GAM error / linear error (test: < 0.7; seed 11 in the test), seeds 11-15: {values}")
    if args.gan:
        seeds = [int(s) for s in args.gan_seeds.split(",")]
        overrides = {k: _value(v) for k, v in (p.split("=", 1) for p in args.gan_param)}
        # the thresholds of test_cyclegan_harmonizer.py's test of that profile
        ssim_min, suv_pct = (0.8, 10) if args.gan_profile == "quick" else (0.7, 25)
        for seed, row in zip(seeds, gan_learning(seeds, args.gan_profile, **overrides)):
            print(
                f"cyclegan {args.gan_profile} {overrides or ''} seed {seed}: texture moved {row['fraction']:.3f} "
                f"(test: > 0.15), low-pass SSIM >= {row['ssim']:.3f} (test: > {ssim_min}), body SUV "
                f"{100 * row['suv_low']:+.1f} to {100 * row['suv_high']:+.1f} % (test: within {suv_pct} %), "
                f"checkerboard share <= {row['checkerboard']:.3f}"
                + (" (test: < 2)" if args.gan_profile != "quick" else "")
            )
    if args.learning:
        seeds = [int(s) for s in args.gan_seeds.split(",")]
        for seed, result in zip(seeds, gan_learning_test(seeds)):
            for (source, target), row in result.items():
                print(
                    f"learning test seed {seed}, {source} -> {target}: reference noise SD median {row['before']:.4f} "
                    f"-> {row['after']:.4f} (target site {row['truth']:.4f}): moved {row['moved']:.3f} "
                    "(test: between 0.25 and 1.75)"
                )


if __name__ == "__main__":
    main()
