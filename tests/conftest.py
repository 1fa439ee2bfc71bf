"""Shared fixtures: a tiny synthetic two-site cohort on disk and the bundled real IBSI subset."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

DATA = Path(__file__).parent / "data"


def write_scan(
    folder: Path,
    name: str,
    values: np.ndarray,
    spacing=(2.0, 2.0, 3.0),
    origin=(0.0, 0.0, 0.0),
) -> Path:
    """Write a (z, y, x) array as NIfTI with the given geometry; returns the path."""
    image = sitk.GetImageFromArray(values)
    image.SetSpacing(spacing)
    image.SetOrigin(origin)
    path = folder / name
    path.parent.mkdir(parents=True, exist_ok=True)
    sitk.WriteImage(image, str(path))
    return path


def snapshot(folder: Path) -> dict[str, tuple[int, int]]:
    """Every file under ``folder`` with its size and modification time (to assert nothing was written)."""
    return {str(p.relative_to(folder)): (p.stat().st_size, p.stat().st_mtime_ns) for p in folder.rglob("*")}


def edit_manifest(manifest: Path, row: int, **cells) -> None:
    """Change cells of data row ``row`` (1-based) of a manifest in place."""
    with manifest.open(newline="") as handle:
        rows = list(csv.DictReader(handle))
    rows[row - 1].update(cells)
    with manifest.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)


@pytest.fixture(autouse=True)
def private_cache(tmp_path_factory, monkeypatch) -> Path:
    """Every test gets its own default cache ($HARMKIT_CACHE), so no test reads or fills the user's cache."""
    folder = tmp_path_factory.mktemp("harmkit-cache")
    monkeypatch.setenv("HARMKIT_CACHE", str(folder))
    return folder


@pytest.fixture
def tiny_cohort(tmp_path: Path) -> Path:
    """Two sites (A: 2 mm voxels, B: 3 mm voxels), three subjects each, 6×8×8 SUV images with a lesion mask.

    Returns the manifest path; images live next to it under ``images/``.
    Columns: subject_id, site, image, mask_lesion, outcome, age.
    """
    rng = np.random.default_rng(0)
    lines = ["subject_id,site,image,mask_lesion,outcome,age"]
    for site, spacing in (("A", (2.0, 2.0, 3.0)), ("B", (3.0, 3.0, 3.0))):
        for i in range(3):
            subject = f"{site}{i}"
            suv = rng.gamma(2.0, 0.5, size=(6, 8, 8)).astype(np.float32)
            mask = np.zeros((6, 8, 8), np.uint8)
            mask[2:4, 3:6, 3:6] = 1
            suv[mask > 0] += 4.0
            write_scan(tmp_path / "images", f"{subject}_pet.nii.gz", suv, spacing)
            write_scan(tmp_path / "images", f"{subject}_lesion.nii.gz", mask, spacing)
            lines.append(
                f"{subject},{site},images/{subject}_pet.nii.gz,images/{subject}_lesion.nii.gz,{i % 2},{50 + i}"
            )
    manifest = tmp_path / "manifest.csv"
    manifest.write_text("\n".join(lines) + "\n")
    return manifest


@pytest.fixture
def ibsi_manifest() -> Path:
    """Manifest of the six real IBSI FDG-PET scans in tests/data/ibsi1-pet (site = in-plane voxel size)."""
    return DATA / "ibsi1-pet" / "manifest.csv"


@pytest.fixture
def one_torch_thread():
    """Run a test with one torch CPU thread (the CycleGAN tests use it), restoring the count after."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


EXAMPLE_PLUGIN = Path(__file__).parent / "plugins" / "harmkit-example"


@pytest.fixture(scope="session")
def example_site(tmp_path_factory) -> Path:
    """tests/plugins/harmkit-example installed with pip into a private folder (as a user would, but --target)."""
    import shutil
    import subprocess
    import sys

    work = tmp_path_factory.mktemp("example")
    source = work / "src"
    shutil.copytree(EXAMPLE_PLUGIN, source, ignore=shutil.ignore_patterns("build", "*.egg-info", "__pycache__"))
    target = work / "site"
    command = [sys.executable, "-m", "pip", "install", "--quiet", "--disable-pip-version-check", "--no-deps"]
    command += ["--no-build-isolation", "--target", str(target), str(source)]
    subprocess.run(command, check=True, capture_output=True, text=True)
    return target
