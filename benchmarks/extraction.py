"""Feature-extraction throughput: engines, harmkit's overhead, warm cache.

    python benchmarks/extraction.py [--scans 24] [--size 48] [--manifest M.csv]

Prints one table:

* pyradiomics called directly (read image and mask, ``execute``) on every scan;
* harmkit ``extract`` in-process (jobs=1), its overhead over the direct loop
  (target ≤ 10 %);
* a 2-process local pool (target ≥ 1.7× the 1-worker rate);
* a Dask LocalCluster of 2 single-threaded worker processes;
* a rerun served from a warm cache.

Pools and clusters are started and warmed (pyradiomics imported in every
worker) before timing; their start-up time is printed separately. Each
engine runs ``--repeat`` times and the fastest run counts (direct and
in-process runs alternate), which damps the noise of a shared machine. Every
engine's table is checked to be identical to the in-process one. Without
``--manifest`` a synthetic two-site cohort of noisy lesions is written to a
temporary folder. Timings on shared machines are noisy: compare ratios from
one run.
"""

from __future__ import annotations

import argparse
import csv
import os
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
import SimpleITK as sitk


def make_cohort(root: Path, scans: int, size: int) -> Path:
    """Noisy SUV volumes (2 x 2 x 3 mm) with one lesion each; site B noisier."""
    from harmkit.imageio import write_image

    rows = []
    for i in range(scans):
        rng = np.random.default_rng(i)
        shape = (size, size, size)
        z, y, x = np.indices(shape).astype(float)
        c = (np.array(shape) - 1) / 2 + rng.uniform(-2, 2, 3)
        radius = size * rng.uniform(0.22, 0.3)
        lesion = ((z - c[0]) * 1.5) ** 2 + (y - c[1]) ** 2 + (x - c[2]) ** 2 <= radius**2
        noise = 1.0 if i % 2 == 0 else 1.8
        array = 1.0 + rng.gamma(4, 0.15 * noise, shape) + lesion * (3 + rng.gamma(3, 1.0 * noise, shape))
        image = sitk.GetImageFromArray(array.astype(np.float32))
        image.SetSpacing((2.0, 2.0, 3.0))
        mask = sitk.GetImageFromArray(lesion.astype(np.uint8))
        mask.CopyInformation(image)
        write_image(image, root / f"scan{i:03d}.nii.gz")
        write_image(mask, root / f"scan{i:03d}_lesion.nii.gz")
        rows.append(
            {
                "subject_id": f"scan{i:03d}",
                "site": "A" if i % 2 == 0 else "B",
                "image": f"scan{i:03d}.nii.gz",
                "mask_lesion": f"scan{i:03d}_lesion.nii.gz",
            }
        )
    with open(root / "manifest.csv", "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    return root / "manifest.csv"


def _warm(value):
    """Runs in each worker before timing: import pyradiomics once."""
    from harmkit_radiomics.extractor import _pyradiomics

    _pyradiomics()
    return value


def direct_pyradiomics(cohort, extractor) -> tuple[float, pd.DataFrame]:
    """The baseline: pyradiomics' own extractor on the same files and settings."""
    from radiomics import featureextractor

    config = extractor._configuration()
    engine = featureextractor.RadiomicsFeatureExtractor(
        {k: config[k] for k in ("setting", "imageType", "featureClass")}
    )
    started = time.perf_counter()
    rows = {}
    for scan in cohort:
        image = sitk.ReadImage(str(scan.image), sitk.sitkFloat32)
        mask = sitk.ReadImage(str(scan.masks["lesion"]), sitk.sitkUInt8)
        result = engine.execute(image, mask, label=1)
        rows[scan.subject_id] = {
            k.partition("_")[2]: float(v) for k, v in result.items() if not k.startswith("diagnostics_")
        }
    return time.perf_counter() - started, pd.DataFrame.from_dict(rows, orient="index")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scans", type=int, default=24)
    parser.add_argument("--size", type=int, default=40, help="edge of the synthetic volumes in voxels")
    parser.add_argument(
        "--manifest",
        help="use this cohort (needs mask_lesion) instead of synthetic scans",
    )
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument(
        "--repeat",
        type=int,
        default=3,
        help="timed runs per engine; the fastest counts",
    )
    args = parser.parse_args()

    from rich.console import Console
    from rich.table import Table

    from harmkit import load_cohort
    from harmkit.execution import get_executor
    from harmkit.extraction import extract
    from harmkit_radiomics import RadiomicsExtractor
    from harmkit_radiomics.extractor import quiet_pyradiomics

    quiet_pyradiomics()
    console = Console(width=180)
    work = Path(tempfile.mkdtemp(prefix="harmkit-bench-extraction-"))
    try:
        manifest = Path(args.manifest) if args.manifest else make_cohort(work / "cohort", args.scans, args.size)
        cohort = load_cohort(manifest)
        n = len(cohort)
        extractor = RadiomicsExtractor()
        voxels = [int(sitk.GetArrayFromImage(s.load_mask("lesion")).sum()) for s in cohort]
        console.print(
            f"{n} scans, lesion {int(np.median(voxels))} voxels (median) on the native grid, 93 features, default PET "
            "settings"
        )

        rows = []
        repeat = args.repeat

        def timed(executor, cache_dir=False):
            started = time.perf_counter()
            table = extract(
                cohort,
                extractor=extractor,
                executor=executor,
                cache_dir=cache_dir,
                progress=False,
            )
            return time.perf_counter() - started, table

        # direct pyradiomics and harmkit in-process, alternated; the fastest of `repeat` runs counts
        direct_times, serial_times = [], []
        with get_executor(jobs=1, progress=False) as serial:
            for _ in range(repeat):
                seconds, direct_table = direct_pyradiomics(cohort, extractor)
                direct_times.append(seconds)
                seconds, reference = timed(serial)
                serial_times.append(seconds)
        direct_s, serial_s = min(direct_times), min(serial_times)
        rows.append(("pyradiomics directly (loop)", 1, direct_s, None, f"best of {repeat}"))
        overhead = serial_s / direct_s - 1
        same_as_direct = np.array_equal(
            reference[direct_table.columns].to_numpy(),
            direct_table.loc[reference.index].to_numpy(),
        )
        rows.append(
            (
                "harmkit, in-process (jobs=1)",
                1,
                serial_s,
                1.0,
                f"best of {repeat}; overhead {overhead:+.1%} vs direct; values identical: {same_as_direct}",
            )
        )

        started = time.perf_counter()
        with get_executor(jobs=args.workers, progress=False) as pool:
            pool.map(_warm, range(args.workers * 4), "warm")
            startup = time.perf_counter() - started
            runs = [timed(pool) for _ in range(repeat)]
        pool_s, pool_table = min(runs, key=lambda r: r[0])
        rows.append(
            (
                f"harmkit, process pool (jobs={args.workers})",
                args.workers,
                pool_s,
                serial_s / pool_s,
                f"best of {repeat}; start-up {startup:.1f} s; identical: {pool_table.equals(reference)}",
            )
        )

        started = time.perf_counter()
        with get_executor(jobs=args.workers, scheduler="local", progress=False) as dask:
            dask.map(_warm, range(args.workers * 4), "warm")
            startup = time.perf_counter() - started
            runs = [timed(dask) for _ in range(repeat)]
        dask_s, dask_table = min(runs, key=lambda r: r[0])
        rows.append(
            (
                f"harmkit, Dask LocalCluster ({args.workers} workers)",
                args.workers,
                dask_s,
                serial_s / dask_s,
                f"best of {repeat}; start-up {startup:.1f} s; identical: {dask_table.equals(reference)}",
            )
        )

        cache_dir = work / "cache"
        with get_executor(jobs=1, progress=False) as serial:
            fill_s, _ = timed(serial, cache_dir)
            warm_s, warm_table = timed(serial, cache_dir)
        rows.append(
            (
                "harmkit, cold cache (jobs=1, fills it)",
                1,
                fill_s,
                serial_s / fill_s,
                "one run",
            )
        )
        rows.append(
            (
                "harmkit, warm cache rerun (jobs=1)",
                1,
                warm_s,
                serial_s / warm_s,
                f"one run; {warm_table.attrs['cache']['hits']}/{n} hits; identical: {warm_table.equals(reference)}",
            )
        )

        table = Table(title=f"feature extraction, {n} scans")
        for column in (
            "run",
            "workers",
            "wall s",
            "scans/s",
            "speed-up vs jobs=1",
            "notes",
        ):
            table.add_column(column)
        for name, workers, seconds, speedup, note in rows:
            table.add_row(
                name,
                str(workers),
                f"{seconds:.2f}",
                f"{n / seconds:.2f}",
                "" if speedup is None else f"{speedup:.2f}×",
                note,
            )
        console.print(table)
        load = ", ".join(f"{x:.1f}" for x in os.getloadavg())
        console.print(f"load average during the run (1/5/15 min): {load} on {os.cpu_count()} cores")
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
