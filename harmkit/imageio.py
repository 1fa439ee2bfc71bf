"""Reading and writing images with their geometry (NIfTI, NRRD, MHA, DICOM series)."""

from __future__ import annotations

import os
from pathlib import Path

import SimpleITK as sitk

from .atomic import atomic_file
from .errors import HarmkitError

IMAGE_SUFFIXES = (".nii", ".nii.gz", ".nrrd", ".nhdr", ".mha", ".mhd")


def read_image(path: str | os.PathLike, what: str = "image") -> sitk.Image:
    """Read an image file or DICOM series folder as float32, geometry preserved.

    A folder is read as a DICOM series; PET series in Bq/mL are converted to
    SUVbw (see :func:`harmkit.dicom.read_pet_series_suv`).
    """
    path = Path(path)
    if path.is_dir():
        from .dicom import read_pet_series_suv

        return read_pet_series_suv(path)
    if not path.exists():
        raise HarmkitError(f"{what}: file not found: {path}")
    try:
        image = sitk.ReadImage(str(path))
    except RuntimeError as exc:
        first_line = str(exc).strip().splitlines()[-1] if str(exc).strip() else "unreadable"
        raise HarmkitError(f"{what}: cannot read {path} ({first_line}); expected NIfTI, NRRD, MHA or a DICOM folder") from None
    if image.GetNumberOfComponentsPerPixel() != 1:
        raise HarmkitError(f"{what}: {path} has {image.GetNumberOfComponentsPerPixel()} components per voxel; expected a scalar image")
    return sitk.Cast(image, sitk.sitkFloat32)


def read_mask(path: str | os.PathLike, what: str = "mask") -> sitk.Image:
    """Read a label image as UInt8 (any non-zero label counts as inside)."""
    image = read_image(path, what)
    return sitk.Cast(image != 0, sitk.sitkUInt8)


def write_image(image: sitk.Image, path: str | os.PathLike, compress: bool = True) -> Path:
    """Write ``image`` atomically (temporary name, then rename)."""
    path = Path(path)
    with atomic_file(path, suffix="".join(path.suffixes) or ".nii.gz") as tmp:
        sitk.WriteImage(image, str(tmp), compress)
    return path


def same_geometry(a: sitk.Image, b: sitk.Image, tolerance: float = 1e-4) -> bool:
    """True when two images share size, spacing, origin and direction."""
    import numpy as np

    return (
        a.GetSize() == b.GetSize()
        and np.allclose(a.GetSpacing(), b.GetSpacing(), atol=tolerance)
        and np.allclose(a.GetOrigin(), b.GetOrigin(), atol=tolerance * 10)
        and np.allclose(a.GetDirection(), b.GetDirection(), atol=tolerance)
    )


def copy_geometry(array_image: sitk.Image, reference: sitk.Image) -> sitk.Image:
    """Give ``array_image`` the spacing, origin and direction of ``reference``."""
    array_image.CopyInformation(reference)
    return array_image
