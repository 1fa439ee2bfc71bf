"""Per-scan cost of the image-quality and site-effects evaluators on lung-sized scans, two ways in one run.

On two subjects of the simulated lung preset (TUB: 2.04 x 2.04 x 3 mm, about 2.2 M voxels; BUD-VPHD: 4.07 x
4.07 x 3 mm), one process, one thread:

1. **Image quality** of a scan against a noisier copy of itself in all 7 masks of the preset: one SSIM map per
   mask, each on the mask's own bounding box (how harmkit measured until 2026-12-02), against one SSIM map per
   scan on the box holding every mask (``metrics_per_mask``). The values agree to 1e-12 (asserted).
2. **Patch descriptors** of one scan on TUB's grid (8 patches of 32^3): Gaussian smoothing of the whole volume
   at sigma 1 and 2 voxels, against smoothing only each patch's box padded by the filter's reach
   (``_smoothed_patches``). Bit-identical (asserted).

3. **Site AUC**: the 25 cross-validated logistic-regression fits of one site-AUC call with every core's BLAS
   threads and with one (``site_predictability`` runs them on one since 2026-12-02).

And how many scans the site-effects evaluator describes in ``harmkit bench --preset lung --methods gan``
(two references, 168 TUB and 97 BUD scans) with and without reusing the baseline's descriptors for the scans
an image stage leaves unchanged.

    python benchmarks/evaluator_workers.py
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

import numpy as np


def seconds(fn, *args, repeats: int = 3) -> float:
    """Best of ``repeats`` wall-clock runs of ``fn(*args)`` (the least disturbed by other work on the machine)."""
    best = float("inf")
    for _ in range(repeats):
        started = time.perf_counter()
        fn(*args)
        best = min(best, time.perf_counter() - started)
    return best


def one_map_per_mask(original, other, masks, data_range) -> list:
    from harmkit.evaluators.image_quality import masked_metrics

    return [masked_metrics(original, other, mask, data_range) for mask in masks.values()]


def smooth_whole(array) -> list:
    from scipy import ndimage

    from harmkit.diagnostics.patches import SMOOTHING_SIGMAS

    return [ndimage.gaussian_filter(array, sigma, mode="nearest") for sigma in SMOOTHING_SIGMAS]


def site_auc_fits(threads: int | None) -> float:
    """Seconds for the 5 x 5 cross-validated fits of the site-AUC classifier with ``threads`` BLAS threads."""
    from sklearn.model_selection import StratifiedKFold
    from threadpoolctl import threadpool_limits

    from harmkit.diagnostics.predictability import _model

    rng = np.random.default_rng(0)
    X = rng.standard_normal((197, 93)) @ rng.standard_normal((93, 93)) * 0.3
    y = np.array([0] * 91 + [1] * 106)
    X[y == 1, :10] += 1.5

    def fits() -> None:
        with threadpool_limits(threads):
            for repeat in range(5):
                for train, test in StratifiedKFold(5, shuffle=True, random_state=repeat).split(X, y):
                    _model(1.0, 0).fit(X[train], y[train]).predict_proba(X[test])

    return seconds(fits)


def main() -> None:
    import SimpleITK as sitk

    import harmkit as hk
    from harmkit.diagnostics.patches import _smoothed_patches, median_spacing, resample
    from harmkit.evaluators.image_quality import masked_metrics, metrics_per_mask
    from harmkit.manifest import load_cohort

    with tempfile.TemporaryDirectory() as tmp:
        manifest = hk.simulate("lung", out=Path(tmp) / "sim", seed=0, subjects_per_site=1, jobs=1, progress=False)
        cohort = load_cohort(manifest)
        tub_spacing = median_spacing([s for s in cohort if s.group == "TUB"])
        print("image quality, one scan against a noisier copy, every mask (best of 3, 1 thread):")
        for group in ("TUB", "BUD"):
            scan = next(s for s in cohort if s.group == group)
            original = sitk.GetArrayFromImage(scan.load_image()).astype(np.float32)
            other = original + np.random.default_rng(0).normal(0, 0.05, original.shape).astype(np.float32)
            masks = {name: sitk.GetArrayFromImage(scan.load_mask(name)) > 0 for name in sorted(scan.masks)}
            body = masks["body"]
            data_range = float(original[body].max() - original[body].min())
            one_map = metrics_per_mask(original, other, masks, data_range)
            for name, mask in masks.items():
                alone = masked_metrics(original, other, mask, data_range)["ssim"]
                assert abs(alone - one_map[name]["ssim"]) < 1e-12, (name, alone, one_map[name]["ssim"])
            per_mask = seconds(one_map_per_mask, original, other, masks, data_range)
            shared = seconds(metrics_per_mask, original, other, masks, data_range)
            print(
                f"  {scan.site:10s} {original.shape[::-1]} voxels, {len(masks)} masks: one SSIM map per mask "
                f"{per_mask:5.2f} s, one per scan {shared:5.2f} s ({per_mask / shared:.1f}x)"
            )

        print("patch descriptors' smoothing, 8 patches of 32^3 on TUB's grid (best of 3, 1 thread):")
        for group in ("TUB", "BUD"):
            scan = next(s for s in cohort if s.group == group)
            array = sitk.GetArrayFromImage(resample(scan.load_image(), tub_spacing)).astype(np.float64)
            rng = np.random.default_rng(1)
            corners = [[int(rng.integers(0, n - 32 + 1)) for n in array.shape] for _ in range(8)]
            boxes = [tuple(slice(c, c + 32) for c in corner) for corner in corners]
            whole = smooth_whole(array)
            for box, smoothed in zip(boxes, _smoothed_patches(array, boxes)):
                assert all(np.array_equal(a, w[box]) for a, w in zip(smoothed, whole))
            whole_s = seconds(smooth_whole, array)
            local_s = seconds(_smoothed_patches, array, boxes)
            print(
                f"  {scan.site:10s} on {array.shape[::-1]} voxels: whole volume {whole_s:5.2f} s, "
                f"around the patches {local_s:5.2f} s ({whole_s / local_s:.1f}x)"
            )

    print("site AUC's 25 logistic-regression fits on 197 x 93 separable features (the head-and-neck preset's size):")
    every, one = site_auc_fits(None), site_auc_fits(1)
    print(f"  every core's BLAS threads {every:5.2f} s, one thread {one:5.2f} s ({every / one:.1f}x)")

    tub, bud = 168, 97
    before = 2 * 2 * (tub + bud)  # two references x (none, gan) x every scan
    after = 2 * (tub + bud) + bud + tub  # the baseline, then only the scans gan changed towards each reference
    print(
        f"site effects, lung preset with gan: {before} scans described without reuse, {after} with it "
        f"({1 - after / before:.0%} fewer)"
    )


if __name__ == "__main__":
    main()
