"""Masks on the PET grid from RTSTRUCT contours (own rasterization) and DICOM SEG segments (highdicom).

RTSTRUCT rasterization, the rule (docs/dicom-import.md compares it with rt-utils):

* contours are placed by their patient coordinates (mm), not by the images
  they reference, so contours drawn on the CT of a PET/CT land on the PET
  when both share a frame of reference;
* contours of one plane combine by parity (XOR): a contour inside another
  is a hole, as the DICOM standard's examples and most planning systems do;
* in plane, a voxel is inside when its centre is inside the polygon; a
  polygon too thin to hold any voxel centre keeps the voxels its outline
  crosses, so a thin structure never vanishes;
* across planes, each PET slice takes the contour plane nearest its centre,
  when that plane is within half a PET slice or half the spacing of the
  contour planes (contours drawn on 1 mm CT slices map onto 3 mm PET slices
  without being added up).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import SimpleITK as sitk

from ..errors import HarmkitError

__all__ = ["rasterize_contours", "rtstruct_contours", "rtstruct_mask", "seg_mask"]

#: Largest spread of a contour's points across PET slices (in slices) for it to count as lying in one slice plane.
PLANAR_TOLERANCE = 0.1


def rtstruct_contours(path: str, roi_number: int) -> list[np.ndarray]:
    """The closed planar contours of ROI ``roi_number`` in the RTSTRUCT ``path``, each an (N, 3) array in mm."""
    import pydicom

    ds = pydicom.dcmread(path)
    contours = []
    for item in ds.get("ROIContourSequence") or []:
        if int(item.get("ReferencedROINumber", -1)) != roi_number:
            continue
        for contour in item.get("ContourSequence") or []:
            if str(contour.get("ContourGeometricType", "")).upper() != "CLOSED_PLANAR":
                continue
            points = np.asarray([float(v) for v in contour.get("ContourData") or ()], float)
            if points.size >= 9 and points.size % 3 == 0:
                contours.append(points.reshape(-1, 3))
    return contours


def rtstruct_mask(path: str, roi_number: int, reference: sitk.Image) -> sitk.Image:
    """ROI ``roi_number`` of the RTSTRUCT ``path`` as a UInt8 mask on the grid of ``reference``."""
    return _as_mask(rasterize_contours(rtstruct_contours(path, roi_number), reference), reference)


def rasterize_contours(contours: Sequence[np.ndarray], reference: sitk.Image) -> np.ndarray:
    """Closed planar contours ((N, 3) arrays of patient coordinates in mm) as a (z, y, x) uint8 array on ``reference``.

    The rule is in this module's docstring. A contour whose points do not lie
    in one slice plane of ``reference`` (an oblique or sagittal contour)
    raises :class:`~harmkit.errors.HarmkitError`.
    """
    from skimage.draw import polygon as fill
    from skimage.draw import polygon_perimeter

    nx, ny, nz = reference.GetSize()
    matrix = np.asarray(reference.GetDirection(), float).reshape(3, 3) @ np.diag(reference.GetSpacing())
    inverse = np.linalg.inv(matrix)
    origin = np.asarray(reference.GetOrigin(), float)
    planes: dict[float, list[np.ndarray]] = {}
    for points in contours:
        index = (np.asarray(points, float)[:, :3] - origin) @ inverse.T  # continuous (x, y, z) voxel indices
        spread = float(np.ptp(index[:, 2]))
        if spread > PLANAR_TOLERANCE:
            raise HarmkitError(
                f"a contour spans {spread:.2f} PET slices instead of lying in one slice plane; harmkit rasterizes "
                f"contours drawn on axial slices parallel to the PET's. Resample the structure onto the PET first"
            )
        planes.setdefault(round(float(index[:, 2].mean()), 3), []).append(index[:, :2])
    mask = np.zeros((nz, ny, nx), np.uint8)
    if not planes:
        return mask
    heights = np.array(sorted(planes))
    gap = float(np.median(np.diff(heights))) if len(heights) > 1 else 1.0
    reach = max(0.5, gap / 2) + 1e-6
    drawn: dict[float, np.ndarray] = {}
    for z in range(nz):
        nearest = float(heights[int(np.argmin(np.abs(heights - z)))])
        if abs(nearest - z) > reach:
            continue
        if nearest not in drawn:
            plane = np.zeros((ny, nx), bool)
            for polygon in planes[nearest]:
                inside = np.zeros((ny, nx), bool)
                rows, cols = fill(polygon[:, 1], polygon[:, 0], shape=(ny, nx))
                inside[rows, cols] = True
                if not inside.any():  # thinner than a voxel: keep the voxels its outline crosses
                    rows, cols = polygon_perimeter(
                        np.round(polygon[:, 1]),
                        np.round(polygon[:, 0]),
                        shape=(ny, nx),
                        clip=False,
                    )
                    keep = (rows >= 0) & (rows < ny) & (cols >= 0) & (cols < nx)
                    inside[rows[keep], cols[keep]] = True
                plane ^= inside
            drawn[nearest] = plane
        mask[z] = drawn[nearest]
    return mask


def contour_z_range(contours: Sequence[np.ndarray]) -> tuple[float, float] | None:
    """Lowest and highest z (mm) of ``contours``, for messages."""
    if not contours:
        return None
    z = np.concatenate([np.asarray(c)[:, 2] for c in contours])
    return float(z.min()), float(z.max())


def seg_mask(path: str, segment_number: int, reference: sitk.Image) -> sitk.Image:
    """Segment ``segment_number`` of the DICOM SEG ``path`` as a UInt8 mask on the grid of ``reference``.

    Read with highdicom as a volume in patient coordinates and resampled onto
    ``reference`` by nearest neighbour (exact when the SEG was made on that
    PET); fractional segments are thresholded at 0.5.
    """
    import highdicom as hd

    try:
        seg = hd.seg.segread(path)
        volume = seg.get_volume(segment_numbers=[segment_number], combine_segments=False)
    except Exception as exc:  # noqa: BLE001 - highdicom raises many types for SEGs it cannot place in 3D
        text = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise HarmkitError(
            f"segment {segment_number} cannot be read as a 3D volume ({text}); export the SEG with "
            f"regularly spaced, parallel frames"
        ) from None
    array = np.asarray(volume.array)
    if array.ndim == 4:
        array = array[..., 0]
    binary = (array >= 0.5) if array.dtype.kind == "f" else (array > 0)
    image = volume.with_array(binary.astype(np.uint8)).to_simpleitk()
    resampled = sitk.Resample(image, reference, sitk.Transform(), sitk.sitkNearestNeighbor, 0, sitk.sitkUInt8)
    return resampled


def _as_mask(array: np.ndarray, reference: sitk.Image) -> sitk.Image:
    image = sitk.GetImageFromArray(array.astype(np.uint8))
    image.CopyInformation(reference)
    return image
