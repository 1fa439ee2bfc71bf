"""Reading and writing images with their geometry (NIfTI, NRRD, MHA, DICOM series)."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
import SimpleITK as sitk

from .atomic import atomic_file
from .errors import HarmkitError

IMAGE_SUFFIXES = (".nii", ".nii.gz", ".nrrd", ".nhdr", ".mha", ".mhd")


def read_image(path: str | os.PathLike, what: str = "image", nan_to_zero: bool = False) -> sitk.Image:
    """Read an image file or DICOM series folder as float32, geometry preserved.

    A folder is read as a DICOM series; PET series in Bq/mL are converted to
    SUVbw (see :func:`harmkit.dicom.read_pet_series_suv`). With
    ``nan_to_zero``, NaN and infinite voxels become 0 (SimpleITK's NIfTI
    reader already does this silently, which is why
    :mod:`harmkit.validation` looks at the stored values).
    """
    path = Path(path)
    if path.is_dir():
        from .dicom import read_pet_series_suv

        image = sitk.Cast(read_pet_series_suv(path), sitk.sitkFloat32)
        return zero_non_finite(image) if nan_to_zero else image
    if not path.exists():
        raise HarmkitError(f"{what}: file not found: {path}")
    try:
        image = sitk.ReadImage(str(path))
    except RuntimeError as exc:
        first_line = str(exc).strip().splitlines()[-1] if str(exc).strip() else "unreadable"
        raise HarmkitError(
            f"{what}: cannot read {path} ({first_line}); expected NIfTI, NRRD, MHA or a DICOM folder"
        ) from None
    if image.GetNumberOfComponentsPerPixel() != 1:
        raise HarmkitError(
            f"{what}: {path} has {image.GetNumberOfComponentsPerPixel()} components per voxel; expected a scalar image"
        )
    image = sitk.Cast(image, sitk.sitkFloat32)
    return zero_non_finite(image) if nan_to_zero else image


def zero_non_finite(image: sitk.Image) -> sitk.Image:
    """``image`` with NaN and infinite voxels set to 0 (the same image when there are none)."""
    values = sitk.GetArrayViewFromImage(image)
    finite = np.isfinite(values)
    if finite.all():
        return image
    fixed = sitk.GetImageFromArray(np.where(finite, values, 0).astype(values.dtype))
    fixed.CopyInformation(image)
    return fixed


def read_mask(path: str | os.PathLike, what: str = "mask") -> sitk.Image:
    """Read a label image as UInt8 (any non-zero label counts as inside)."""
    image = read_image(path, what)
    return sitk.Cast(image != 0, sitk.sitkUInt8)


def write_image(image: sitk.Image, path: str | os.PathLike, compress: bool = True) -> Path:
    """Write ``image`` atomically (temporary name, then rename).

    SimpleITK's NIfTI writer does not report a full disk: it leaves a short
    file. A NIfTI file is therefore read back (without decoding the voxels)
    before it is renamed into place, and an incomplete one is an error.
    Failures of the file system (read-only, full, no permission) raise
    :class:`~harmkit.errors.HarmkitError` naming the file.
    """
    path = Path(path)
    with atomic_file(path, suffix="".join(path.suffixes) or ".nii.gz") as tmp:
        try:
            sitk.WriteImage(image, str(tmp), compress)
        except RuntimeError as exc:
            reason = str(exc).strip().splitlines()[-1] if str(exc).strip() else "write failed"
            raise HarmkitError(
                f"cannot write {path}: {reason}; check that the disk has space and the folder is writable"
            ) from None
        if is_nifti(tmp):
            problem = nifti_stored_data(tmp).problem
            if problem:
                raise HarmkitError(
                    f"cannot write {path}: the file came out incomplete ({problem}); is the disk full? "
                    f"Free some space or choose another output folder"
                )
    return path


def is_nifti(path: str | os.PathLike) -> bool:
    """True for a ``.nii`` or ``.nii.gz`` file name."""
    return str(path).lower().endswith((".nii", ".nii.gz"))


@dataclass(frozen=True)
class StoredData:
    """What the bytes of a NIfTI file hold, read without SimpleITK.

    ``problem`` says why the voxel data is incomplete or cannot be
    decompressed (``None`` when it is complete); ``non_finite`` and ``nan``
    count NaN/infinite values among stored floats (SimpleITK's reader turns
    them into 0 without a word); ``dtype`` is the stored data type.
    """

    problem: str | None = None
    non_finite: int = 0
    nan: int = 0
    dtype: str | None = None


_NIFTI_TYPES = {
    2: np.uint8,
    4: np.int16,
    8: np.int32,
    16: np.float32,
    64: np.float64,
    256: np.int8,
    512: np.uint16,
    768: np.uint32,
    1024: np.int64,
    1280: np.uint64,
}


def nifti_stored_data(path: str | os.PathLike, chunk_bytes: int = 1 << 24) -> StoredData:
    """Stream the voxel data of a NIfTI-1/2 file (gzip or not) and check it is all there.

    SimpleITK (nifticlib) reads a truncated or damaged ``.nii.gz`` without an
    error and fills what is missing with zeros; this function is how harmkit
    notices. A header it does not understand gives ``StoredData()`` (the
    SimpleITK reader then reports the file).
    """
    import gzip
    import struct
    import zlib

    path = Path(path)
    opener = gzip.open if path.name.lower().endswith(".gz") else open
    try:
        with opener(path, "rb") as handle:
            head = handle.read(540)
            if len(head) < 348:
                return StoredData(problem=f"the header is incomplete ({len(head)} of 348 bytes)")
            order: Literal["<", ">"]
            for order in ("<", ">"):
                size = struct.unpack_from(order + "i", head, 0)[0]
                if size in (348, 540):
                    break
            else:
                return StoredData()
            if size == 348:
                dims = struct.unpack_from(order + "8h", head, 40)
                datatype = struct.unpack_from(order + "h", head, 70)[0]
                bitpix = struct.unpack_from(order + "h", head, 72)[0]
                offset = int(struct.unpack_from(order + "f", head, 108)[0])
            else:
                datatype = struct.unpack_from(order + "h", head, 12)[0]
                bitpix = struct.unpack_from(order + "h", head, 14)[0]
                dims = struct.unpack_from(order + "8q", head, 16)
                offset = struct.unpack_from(order + "q", head, 168)[0]
            if not 1 <= dims[0] <= 7 or bitpix <= 0 or bitpix % 8:
                return StoredData()
            dtype = np.dtype(_NIFTI_TYPES[datatype]).newbyteorder(order) if datatype in _NIFTI_TYPES else None
            floats = dtype is not None and dtype.kind == "f"
            expected = int(np.prod([max(int(d), 1) for d in dims[1 : dims[0] + 1]], dtype=np.int64)) * (bitpix // 8)
            handle.seek(max(offset, size))
            remaining, bad, nan = expected, 0, 0
            while remaining > 0:
                block = handle.read(min(chunk_bytes, remaining))
                if not block:
                    break
                remaining -= len(block)
                if floats:
                    assert dtype is not None  # floats implies a known data type
                    values = np.frombuffer(block[: len(block) - len(block) % dtype.itemsize], dtype=dtype)
                    finite = np.isfinite(values)
                    if not finite.all():
                        bad += int(values.size - np.count_nonzero(finite))
                        nan += int(np.count_nonzero(np.isnan(values)))
            stored = None if dtype is None else np.dtype(dtype).name
            if remaining == 0 and opener is gzip.open:
                while handle.read(chunk_bytes):  # to the end of the stream, so that its checksum is verified
                    pass
            if remaining > 0:
                got = expected - remaining
                return StoredData(
                    f"the voxel data is truncated: {got} of {expected} bytes",
                    bad,
                    nan,
                    stored,
                )
            return StoredData(None, bad, nan, stored)
    except (EOFError, gzip.BadGzipFile, zlib.error) as exc:
        reason = str(exc).strip() or type(exc).__name__
        return StoredData(problem=f"the compressed data is damaged or truncated ({reason})")
    except OSError as exc:
        return StoredData(problem=f"cannot be read ({exc.strerror or exc})")
    except struct.error:
        return StoredData()


#: How far spacing (mm) and direction cosines may differ for two images to share one grid; origins may differ by
#: ten times as much (mm), as DICOM and NIfTI writers round positions more coarsely.
GEOMETRY_TOLERANCE = 1e-4


def read_header(path: str | os.PathLike) -> dict:
    """The voxel grid of the image file at ``path`` without reading its voxels: ``size``, ``spacing``, ``origin``,
    ``direction`` (the header form :func:`geometry_difference` takes). Raises ``RuntimeError`` when unreadable."""
    reader = sitk.ImageFileReader()
    reader.SetFileName(str(path))
    reader.ReadImageInformation()
    return {
        "size": reader.GetSize(),
        "spacing": reader.GetSpacing(),
        "origin": reader.GetOrigin(),
        "direction": reader.GetDirection(),
    }


def _grid(image) -> tuple:
    if isinstance(image, sitk.Image):
        return (
            image.GetSize(),
            image.GetSpacing(),
            image.GetOrigin(),
            image.GetDirection(),
        )
    return tuple(image["size"]), image["spacing"], image["origin"], image["direction"]


def geometry_difference(a, b, tolerance: float = GEOMETRY_TOLERANCE) -> str | None:
    """``None`` when ``a`` and ``b`` lie on one voxel grid, else the first part that differs.

    ``a`` and ``b`` are SimpleITK images or headers (mappings with ``size``,
    ``spacing``, ``origin``, ``direction``). The answer is ``"size"`` (also
    for a different number of dimensions), ``"spacing"``, ``"origin"`` or
    ``"direction"``. Size must be equal; spacing and direction may differ by
    ``tolerance``, the origin by ``10 * tolerance`` (see
    :data:`GEOMETRY_TOLERANCE`).
    """
    size_a, spacing_a, origin_a, direction_a = _grid(a)
    size_b, spacing_b, origin_b, direction_b = _grid(b)
    if tuple(size_a) != tuple(size_b):
        return "size"
    if not np.allclose(spacing_a, spacing_b, atol=tolerance):
        return "spacing"
    if not np.allclose(origin_a, origin_b, atol=tolerance * 10):
        return "origin"
    if not np.allclose(direction_a, direction_b, atol=tolerance):
        return "direction"
    return None


def same_geometry(a, b, tolerance: float = GEOMETRY_TOLERANCE) -> bool:
    """True when two images (or headers) share one voxel grid (see :func:`geometry_difference`)."""
    return geometry_difference(a, b, tolerance) is None


def copy_geometry(array_image: sitk.Image, reference: sitk.Image) -> sitk.Image:
    """Give ``array_image`` the spacing, origin and direction of ``reference``."""
    array_image.CopyInformation(reference)
    return array_image


__all__ = [
    "read_image",
    "read_mask",
    "read_header",
    "write_image",
    "zero_non_finite",
    "nifti_stored_data",
    "StoredData",
    "GEOMETRY_TOLERANCE",
    "same_geometry",
    "geometry_difference",
    "copy_geometry",
    "is_nifti",
    "IMAGE_SUFFIXES",
]
