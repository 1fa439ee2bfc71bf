"""Time histogram matching (``histmatch``) and resolution matching (``resmatch``) per scan.

Usage::

    python benchmarks/image_harmonizers.py                       # synthetic scans, two sizes
    python benchmarks/image_harmonizers.py --sizes 96x96x80 --scans 6 --jobs 2
    python benchmarks/image_harmonizers.py --manifest sim/manifest.csv --reference HGJ

Rows: ``histmatch`` (scale mode, the default), ``resmatch`` with a given
width, ``resmatch`` fitted towards the smooth group (smoothing the sharp one)
fitted towards the sharp group (sharpening the smooth one,
``smoother_groups="sharpen"``, the default), and restoring the smooth one
towards the sharp group (``smoother_groups="restore"``: denoising, undoing a
given 6 mm Gaussian, adding the reference's noise; the synthetic scans have
no lesions to fit the width on).

Synthetic data (seeded): two site groups of ``--scans`` scans each; an
ellipsoid body with correlated noise around SUV 1-2, a liver-like reference
sphere, and the second group blurred by a 6 mm Gaussian. Images stay in
memory, so times exclude file reading. "fit" is the harmonizer's ``fit`` on
the whole cohort divided by the number of scans it reads; "transform" runs
every non-reference scan through :func:`harmkit.execution.get_executor`
(``--jobs`` workers) and divides the wall time by their number. The machine
this runs on may be shared: compare rows measured in the same run.
"""

from __future__ import annotations

import argparse
import platform
import time

import numpy as np


def synthetic_cohort(shape_zyx, n_per_site: int, seed: int = 0):
    import SimpleITK as sitk
    from scipy.ndimage import gaussian_filter

    from harmkit.data import Cohort, Scan

    rng = np.random.default_rng(seed)
    nz, ny, nx = shape_zyx
    z, y, x = np.ogrid[:nz, :ny, :nx]
    body = (
        ((z - nz / 2) / (0.48 * nz)) ** 2 + ((y - ny / 2) / (0.35 * ny)) ** 2 + ((x - nx / 2) / (0.45 * nx)) ** 2
    ) <= 1
    ref = ((z - nz / 2) ** 2 + (y - ny / 2) ** 2 + (x - 0.65 * nx) ** 2) <= (0.08 * min(shape_zyx)) ** 2
    spacing = 4.0
    scans = []
    for site, blur in (("SHARP", 0.0), ("SMOOTH", 6.0)):
        for i in range(n_per_site):
            noise = gaussian_filter(rng.normal(size=shape_zyx).astype(np.float32), 0.7)
            values = body * (1.2 + 0.6 * ref + 0.25 * noise / noise.std())
            if blur:
                values = gaussian_filter(values, blur / 2.3548 / spacing)
            image = sitk.GetImageFromArray(values.astype(np.float32))
            image.SetSpacing((spacing,) * 3)
            masks = {}
            for name, m in (("body", body), ("reference", ref)):
                mask = sitk.GetImageFromArray(np.broadcast_to(m, shape_zyx).astype(np.uint8))
                mask.CopyInformation(image)
                masks[name] = mask
            scans.append(Scan(f"{site}-{i:03d}", site, image, masks=masks))
    return Cohort(scans), "SMOOTH"


def time_harmonizer(harmonizer, cohort, reference: str, jobs: int):
    from harmkit.execution import get_executor

    start = time.perf_counter()
    harmonizer.fit(cohort, reference)
    fit_s = time.perf_counter() - start
    sources = [s for s in cohort if s.group != reference]
    with get_executor(jobs=jobs, progress=False) as executor:
        start = time.perf_counter()
        results = executor.map(harmonizer.transform, sources, label=harmonizer.name)
        transform_s = time.perf_counter() - start
    errors = [r.error for r in results if r.error]
    if errors:
        raise SystemExit(f"{harmonizer.name}: {errors[0]}")
    return fit_s, transform_s / max(1, len(sources))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--sizes",
        nargs="+",
        default=["96x128x128", "160x192x192"],
        help="z x y x x voxel counts",
    )
    parser.add_argument("--scans", type=int, default=4, help="scans per site group (synthetic)")
    parser.add_argument("--jobs", type=int, default=1)
    parser.add_argument("--manifest", help="time on this cohort instead of synthetic scans")
    parser.add_argument(
        "--reference",
        help="reference site group (with --manifest); the sharpening row then uses the other group",
    )
    args = parser.parse_args()

    from harmkit_histmatch import HistogramMatching, ResolutionMatching

    if args.manifest:
        import harmkit

        cohort = harmkit.load_cohort(args.manifest)
        reference = args.reference or cohort.site_groups[0]
        other = next((g for g in cohort.site_groups if g != reference), reference)
        datasets = [(f"{args.manifest}", cohort, reference, other)]
    else:
        datasets = []
        for size in args.sizes:
            shape = tuple(int(v) for v in size.lower().split("x"))
            cohort, reference = synthetic_cohort(shape, args.scans)
            datasets.append((f"{shape[2]}×{shape[1]}×{shape[0]} synthetic", cohort, reference, "SHARP"))

    print(
        f"histmatch / resmatch (harmkit-histmatch), jobs={args.jobs}; {platform.processor() or platform.machine()}, "
        f"Python {platform.python_version()}"
    )
    print()
    print("| data | scans | method | fit per scan read (s) | transform per scan (s) | fitted |")
    print("|---|---:|---|---:|---:|---|")
    for label, cohort, smooth_reference, sharp_reference in datasets:
        n = len(cohort)
        for harmonizer, reference, reads, name in (
            (HistogramMatching(), smooth_reference, n, "histmatch (scale)"),
            (ResolutionMatching(fwhm_mm=6.0, noise="keep"), smooth_reference, 0, "resmatch (fwhm_mm=6)"),
            (ResolutionMatching(), smooth_reference, n, f"resmatch → {smooth_reference}"),
            (ResolutionMatching(), sharp_reference, n, f"resmatch → {sharp_reference}"),
            (
                ResolutionMatching(smoother_groups="restore", sharpen_fwhm_mm=6.0),
                sharp_reference,
                n,
                f"resmatch → {sharp_reference} (restore, sharpen_fwhm_mm=6)",
            ),
        ):
            fit_s, per_scan = time_harmonizer(harmonizer, cohort, reference, args.jobs)
            others = [g for g in cohort.site_groups if g != reference]
            if harmonizer.name == "resmatch":
                sharpen = getattr(harmonizer, "sharpen_fwhm_mm_", {})
                restored = getattr(harmonizer, "denoise_amplitude_", {})
                fitted = ", ".join(
                    (f"{g}: {'restore' if restored.get(g) else 'sharpen'} {sharpen[g]:.2f} mm")
                    if sharpen.get(g)
                    else f"{g}: {harmonizer.fwhm_mm_[g]:.2f} mm"
                    for g in others
                )
            else:
                fitted = ", ".join(f"{g}: ×{harmonizer.scales_[g]:.3f}" for g in others)
            fit_text = f"{fit_s / reads:.3f}" if reads else "–"
            print(f"| {label} | {n} | {name} | {fit_text} | {per_scan:.3f} | {fitted} |")


if __name__ == "__main__":
    main()
