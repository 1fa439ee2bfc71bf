"""RTSTRUCT rasterization: harmkit's own (SimpleITK + pydicom + scikit-image) against rt-utils.

    python benchmarks/rtstruct_rasterization.py [--size 128] [--slices 40] [--repeat 3]

Writes a synthetic PET series (2 x 2 x 3 mm voxels) and one RTSTRUCT per case with pydicom
(tests/dicom_study.py), rasterizes each ROI with harmkit.importing.masks and, when the package
``rt_utils`` is importable, with rt-utils, and prints one table:

* accuracy against the exact area (mm², shoelace) of every polygon: the area error in voxels and in %
  of the polygon, per slice, for a disc, a ring (a contour inside another = a hole), a five-pointed
  star (non-convex) and a sliver 0.6 mm wide (thinner than a voxel);
* ``drawn on CT``: contours whose ContourImageSequence points at another series (the CT of a PET/CT),
  with the PET on the same frame of reference;
* a matrix that is not square (96 columns, 64 rows) with the ROI beyond column 64;
* time to turn a series folder plus RTSTRUCT into a mask (a sphere of 40 mm radius contoured on every
  slice): reading the series included for both, best of ``--repeat``.

rt-utils needs OpenCV (opencv-python) and is not a harmkit dependency: run this script with a Python that
has rt-utils installed next to harmkit's dependencies to get its columns (docs/dicom-import.md gives the
figures and the command used).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from dicom_study import polygon, polygon_area, write_pet, write_rtstruct  # noqa: E402


def star(center, z, outer=20.0, inner=9.0):
    t = np.linspace(0, 2 * np.pi, 10, endpoint=False) + 0.3
    r = np.array([outer, inner] * 5)
    return np.column_stack([center[0] + r * np.cos(t), center[1] + r * np.sin(t), np.full(10, z)])


def cases(pet, z_slices):
    """{name: (contours per slice, exact area in mm² per slice)}; slice centres are z_slices."""
    centre = pet.point(pet.shape[2] / 2 - 0.37, pet.shape[1] / 2 - 0.21, 0)[:2]  # off the voxel grid on purpose
    out = {}
    discs = [polygon(centre, (20, 20), z, n=128) for z in z_slices]
    out["disc r=20 mm"] = (discs, polygon_area(discs[0]))
    rings = [
        c
        for z in z_slices
        for c in (
            polygon(centre, (20, 20), z, n=128),
            polygon(centre, (10, 10), z, n=128),
        )
    ]
    out["ring 20/10 mm"] = (rings, polygon_area(rings[0]) - polygon_area(rings[1]))
    stars = [star(centre, z) for z in z_slices]
    out["star (non-convex)"] = (stars, polygon_area(stars[0]))
    slivers = [polygon(centre, (15, 0.3), z, n=64) for z in z_slices]
    out["sliver 30 x 0.6 mm"] = (slivers, polygon_area(slivers[0]))
    return out


def harmkit_mask(series_folder: Path, rtstruct: Path, roi_number: int = 1) -> np.ndarray:
    import SimpleITK as sitk

    from harmkit.dicom import read_pet_series_suv
    from harmkit.importing.masks import rtstruct_mask

    image = read_pet_series_suv(series_folder)
    return sitk.GetArrayFromImage(rtstruct_mask(str(rtstruct), roi_number, image))  # (z, y, x)


def rtutils_mask(series_folder: Path, rtstruct: Path, name: str) -> np.ndarray:
    from rt_utils import RTStructBuilder

    rt = RTStructBuilder.create_from(
        dicom_series_path=str(series_folder),
        rt_struct_path=str(rtstruct),
        warn_only=True,
    )
    # rt-utils 1.2.7 allocates (Columns, Rows, slices) but fills [row, column]: right only for square images
    return np.transpose(rt.get_roi_mask_by_name(name), (2, 0, 1)).astype(np.uint8)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", type=int, default=128, help="in-plane matrix of the PET")
    parser.add_argument("--slices", type=int, default=40, help="slices of the PET")
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    try:
        import rt_utils  # noqa: F401

        have_rtutils = True
    except ImportError:
        have_rtutils = False
        print("rt_utils not importable: only harmkit's columns are shown")
    root = Path(tempfile.mkdtemp(prefix="rtstruct-bench-"))
    activity = np.full((args.slices, args.size, args.size), 5000.0)
    pet = write_pet(root / "pet", activity, spacing=(2.0, 2.0, 3.0), origin=(-128.0, -128.0, 0.0))
    z_index = [args.slices // 2 - 1, args.slices // 2, args.slices // 2 + 1]
    z_mm = [pet.point(0, 0, k)[2] for k in z_index]
    voxel_mm2 = pet.spacing[0] * pet.spacing[1]
    print(
        f"PET {args.size}x{args.size}x{args.slices}, voxels {pet.spacing[0]:g} x {pet.spacing[1]:g} x "
        f"{pet.spacing[2]:g} mm; area error = (voxels x {voxel_mm2:g} mm² - exact area) per slice"
    )
    header = f"{'case':22s} {'exact (vox)':>11s} {'harmkit err':>12s}" + (
        f" {'rt-utils err':>13s}" if have_rtutils else ""
    )
    print(header)
    for name, (contours, area) in cases(pet, z_mm).items():
        path = write_rtstruct(root / f"{name.split()[0]}.dcm", pet, {name: contours})
        exact = area / voxel_mm2
        ours = harmkit_mask(pet.folder, path)[z_index].sum(axis=(1, 2)).mean()
        line = f"{name:22s} {exact:11.1f} {ours - exact:+7.1f} ({(ours - exact) / exact:+4.0%})"
        if have_rtutils:
            theirs = rtutils_mask(pet.folder, path, name)[z_index].sum(axis=(1, 2)).mean()
            line += f" {theirs - exact:+7.1f} ({(theirs - exact) / exact:+4.0%})"
        print(line)
    # drawn on CT: the contours reference images that are not the PET's
    contours, area = cases(pet, z_mm)["disc r=20 mm"]
    path = write_rtstruct(root / "ct.dcm", pet, {"disc": contours}, contour_images=False)
    ours = harmkit_mask(pet.folder, path)[z_index].sum(axis=(1, 2)).mean()
    line = f"{'drawn on CT':22s} {area / voxel_mm2:11.1f} {f'{int(ours)} vox':>12s}"
    if have_rtutils:
        try:
            theirs = rtutils_mask(pet.folder, path, "disc")[z_index].sum(axis=(1, 2)).mean()
            line += f" {f'{int(theirs)} vox':>13s}"
        except Exception as exc:  # noqa: BLE001
            line += f" {type(exc).__name__}"
    print(line)
    # a matrix that is not square (96 columns x 64 rows), the ROI beyond column 64
    wide = write_pet(
        root / "wide",
        np.full((6, 64, 96), 5000.0),
        spacing=(2.0, 2.0, 3.0),
        origin=(0.0, 0.0, 0.0),
    )
    path = write_rtstruct(root / "wide.dcm", wide, {"star": [star((150.0, 60.0), wide.point(0, 0, 3)[2])]})
    exact = polygon_area(star((150.0, 60.0), 0)) / voxel_mm2
    line = f"{'96x64 matrix, col 75':22s} {exact:11.1f} {f'{int(harmkit_mask(wide.folder, path).sum())} vox':>12s}"
    if have_rtutils:
        from rt_utils import RTStructBuilder

        raw = RTStructBuilder.create_from(str(wide.folder), str(path), warn_only=True).get_roi_mask_by_name("star")
        line += f" {f'{int(raw.sum())} vox':>13s}"
    print(line)
    # speed: a sphere contoured on every slice
    radius = 40.0
    sphere = []
    centre = pet.point(args.size / 2, args.size / 2, 0)[:2]
    for k in range(args.slices):
        z = pet.point(0, 0, k)[2] - pet.point(0, 0, args.slices / 2)[2]
        if abs(z) < radius:
            sphere.append(
                polygon(
                    centre,
                    (np.sqrt(radius**2 - z**2),) * 2,
                    pet.point(0, 0, k)[2],
                    n=128,
                )
            )
    path = write_rtstruct(root / "sphere.dcm", pet, {"sphere": sphere})
    for label, run in (
        ("harmkit", lambda: harmkit_mask(pet.folder, path)),
        *((("rt-utils", lambda: rtutils_mask(pet.folder, path, "sphere")),) if have_rtutils else ()),
    ):
        times = []
        for _ in range(args.repeat):
            started = time.perf_counter()
            voxels = int(run().sum())
            times.append(time.perf_counter() - started)
        print(
            f"speed {label:9s}: {min(times):.3f} s for {len(sphere)} contours on {args.slices} slices "
            f"({voxels} voxels; exact {4 / 3 * np.pi * radius**3 / (voxel_mm2 * pet.spacing[2]):.0f})"
        )


if __name__ == "__main__":
    main()
