"""Volumes of interest: the body mask, the lesion's largest component, reference-tissue spheres, COV.

* :func:`body_mask` is the one rule by which harmkit makes a body mask for a
  scan that has no ``mask_body`` (SUV >= 0.1, largest connected component,
  holes filled: the paper's first step); :func:`body_mask_of` gives a scan's
  own body mask when it has one, else that rule's. ``bench``, ``train``,
  ``harmonize`` and the image harmonizers all use it.
* :func:`largest_component` keeps the largest connected component of a mask
  (the paper extracted features from the largest lesion only).
* :func:`reference_sphere` places a sphere (default 3 cm diameter, as the EANM
  guideline recommends for the liver) automatically inside an organ mask:
  fully inside the organ, in its upper right part (the upper right liver lobe).
  :func:`add_reference_spheres` does it for a whole cohort and writes the
  spheres as mask files and a manifest, so a user can look at them.
* :func:`voi_cov` is the coefficient of variation σ/μ of the SUV in a VOI.

Directions follow ITK's patient coordinate system (LPS), in which every
image read by SimpleITK lives: +x points to the patient's left, +y posterior,
+z superior. "Right" is therefore small x and "upper" large z.
"""

from __future__ import annotations

import os
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import SimpleITK as sitk

from .errors import HarmkitError

if TYPE_CHECKING:  # pragma: no cover
    from .data import Cohort, Scan

__all__ = [
    "BODY_THRESHOLD_SUV",
    "body_mask",
    "body_mask_of",
    "largest_component",
    "reference_sphere",
    "add_reference_spheres",
    "voi_cov",
    "sphere_mask",
]


#: SUV above which a voxel is body, for scans without a ``mask_body`` (the paper's first step of its body masks).
BODY_THRESHOLD_SUV = 0.1


def body_mask(image: sitk.Image, threshold_suv: float = BODY_THRESHOLD_SUV) -> sitk.Image:
    """The body mask of a PET image: SUV >= ``threshold_suv``, largest connected component, holes filled.

    Components are face-connected (6-neighbourhood); holes are filled in 3-D
    (air in the airways or bowel enclosed by the body becomes body). Returns a
    UInt8 0/1 mask on ``image``'s grid. Raises :class:`HarmkitError` when no
    voxel reaches the threshold (an image not in SUV, or empty).
    """
    mask = sitk.BinaryThreshold(image, float(threshold_suv), 1e30, 1, 0)
    components = sitk.RelabelComponent(sitk.ConnectedComponent(mask), sortByObjectSize=True)
    largest = sitk.Cast(components == 1, sitk.sitkUInt8)
    if not sitk.GetArrayViewFromImage(largest).any():
        raise HarmkitError(
            f"no voxel reaches SUV {threshold_suv:g}, so there is no body to mask; check that the image is in SUV, "
            "or give the scan a mask_body column"
        )
    return sitk.Cast(sitk.BinaryFillhole(largest), sitk.sitkUInt8)


def body_mask_of(scan: "Scan") -> sitk.Image:
    """The scan's body mask: its own ``body`` mask when it has one, else :func:`body_mask` of its image.

    A mask made here is not stored on the scan (it is cheap to remake and a
    cohort's masks would not fit in memory); the bench caches its masks on disk.
    """
    if "body" in scan.masks:
        return scan.load_mask("body")
    try:
        return body_mask(scan.load_image())
    except HarmkitError as exc:
        raise HarmkitError(f"{scan.label}: {exc}") from None


def largest_component(mask: sitk.Image, fully_connected: bool = True) -> sitk.Image:
    """The largest connected component of ``mask`` (non-zero voxels) as a UInt8 0/1 mask.

    ``fully_connected`` counts voxels touching at a corner or edge as connected
    (26-neighbourhood in 3D); otherwise only faces (6-neighbourhood). Of two
    components of equal size, the one first in memory order is kept. An
    empty mask is returned unchanged (as UInt8).
    """
    binary = sitk.Cast(sitk.NotEqual(mask, 0), sitk.sitkUInt8)
    labels = sitk.ConnectedComponent(binary, fully_connected)
    array = sitk.GetArrayViewFromImage(labels)
    if array.max(initial=0) <= 1:
        return binary
    counts = np.bincount(array.ravel())
    counts[0] = 0
    keep = int(np.argmax(counts))  # first label among equals: memory order, deterministic
    out = sitk.GetImageFromArray((array == keep).astype(np.uint8))
    out.CopyInformation(mask)
    return out


def voi_cov(image: sitk.Image, mask: sitk.Image) -> float:
    """Coefficient of variation σ/μ of ``image`` inside ``mask``.

    σ is the population standard deviation (divisor N), as in IBSI and
    pyradiomics. Raises :class:`HarmkitError` for an empty mask, different
    grids, or a VOI whose mean is not positive.
    """
    values = _voi_values(image, mask)
    mean = float(values.mean())
    if not mean > 0:
        raise HarmkitError(f"COV is undefined: the mean SUV in the VOI is {mean:g} (must be positive)")
    return float(values.std()) / mean


def _voi_values(image: sitk.Image, mask: sitk.Image) -> np.ndarray:
    if image.GetSize() != mask.GetSize():
        raise HarmkitError(
            f"mask size {mask.GetSize()} differs from image size {image.GetSize()}; resample the mask onto the image "
            "grid"
        )
    inside = sitk.GetArrayViewFromImage(mask) != 0
    if not inside.any():
        raise HarmkitError("the VOI mask is empty")
    return sitk.GetArrayViewFromImage(image)[inside].astype(np.float64)


def _points(image: sitk.Image, zyx: np.ndarray) -> np.ndarray:
    """Physical (LPS, mm) coordinates of the voxel centres at array indices ``zyx`` (n, 3)."""
    index = np.asarray(zyx, np.float64)[:, ::-1]  # array order (z, y, x) -> ITK index order (x, y, z)
    direction = np.asarray(image.GetDirection(), float).reshape(3, 3)
    return np.asarray(image.GetOrigin(), float) + (index * np.asarray(image.GetSpacing(), float)) @ direction.T


def sphere_mask(reference: sitk.Image, centre_mm, diameter_mm: float) -> sitk.Image:
    """A UInt8 mask on ``reference``'s grid: voxels whose centre lies within the sphere."""
    centre_mm = np.asarray(centre_mm, float)
    shape = np.array(reference.GetSize()[::-1])
    # only voxels in a box around the centre can be inside
    centre_index = np.array(reference.TransformPhysicalPointToContinuousIndex(tuple(centre_mm))[::-1])
    reach = np.ceil(diameter_mm / 2.0 / min(reference.GetSpacing())) + 1
    low = np.clip(np.floor(centre_index - reach), 0, shape).astype(int)
    high = np.clip(np.ceil(centre_index + reach) + 1, 0, shape).astype(int)
    array = np.zeros(shape, np.uint8)
    if np.all(high > low):
        box = np.stack(
            np.meshgrid(*[np.arange(lo, hi) for lo, hi in zip(low, high)], indexing="ij"),
            axis=-1,
        ).reshape(-1, 3)
        inside = np.linalg.norm(_points(reference, box) - centre_mm, axis=1) <= diameter_mm / 2.0
        hit = box[inside]
        array[hit[:, 0], hit[:, 1], hit[:, 2]] = 1
    out = sitk.GetImageFromArray(array)
    out.CopyInformation(reference)
    return out


def reference_sphere(
    organ_mask: sitk.Image,
    diameter_mm: float = 30.0,
    region: str = "upper-right",
    margin_mm: float = 0.0,
) -> sitk.Image:
    """Place a sphere of ``diameter_mm`` fully inside ``organ_mask`` and return it as a mask.

    Candidate centres are voxels at least ``diameter_mm / 2 + margin_mm``
    from the organ's surface (Euclidean distance map in mm), whose sphere
    lies entirely within the organ's voxels. Among them the sphere goes to
    ``region``:

    * ``"upper-right"`` (default; the upper right liver lobe, EANM): the
      candidate furthest towards the patient's right and superior, measuring
      both from the organ's centroid in units of the organ's spread along
      that axis (so the two directions weigh equally), ties broken by the
      smallest anterior-posterior offset from the centroid;
    * ``"centre"``: the candidate deepest inside the organ.

    The choice is deterministic. Raises :class:`HarmkitError` when no sphere
    of that size fits, naming the largest diameter that would.
    """
    if region not in ("upper-right", "centre"):
        raise HarmkitError(f"reference sphere region {region!r} unknown; use 'upper-right' or 'centre'")
    organ = sitk.Cast(sitk.NotEqual(organ_mask, 0), sitk.sitkUInt8)
    organ_array = sitk.GetArrayViewFromImage(organ).astype(bool)
    if not organ_array.any():
        raise HarmkitError("the organ mask is empty; cannot place a reference sphere")
    radius = diameter_mm / 2.0
    distance = sitk.GetArrayFromImage(
        sitk.SignedMaurerDistanceMap(organ, insideIsPositive=True, squaredDistance=False, useImageSpacing=True)
    )
    # the map measures to the centres of the outside voxels next to the organ;
    # half a voxel less reaches the organ's edge
    distance -= 0.5 * min(organ.GetSpacing())
    eligible = organ_array & (distance >= radius + margin_mm)
    if not eligible.any():
        largest = 2 * max(float(distance[organ_array].max()), 0.0)
        raise HarmkitError(
            f"no {diameter_mm:g} mm sphere fits inside the organ mask (largest that fits: about {largest:.0f} mm); "
            "use a smaller diameter or check the organ segmentation"
        )
    organ_points = _points(organ, np.argwhere(organ_array))
    centroid = organ_points.mean(axis=0)
    spread = organ_points.std(axis=0) + 1e-6
    candidates = np.argwhere(eligible)
    coords = _points(organ, candidates)
    if region == "centre":
        order = np.lexsort((candidates[:, 2], candidates[:, 1], candidates[:, 0], -distance[eligible]))
    else:
        # towards the patient's right (-x) and up (+z), each in units of the organ's spread
        score = np.round(
            (centroid[0] - coords[:, 0]) / spread[0] + (coords[:, 2] - centroid[2]) / spread[2],
            6,
        )
        ap_offset = np.abs(coords[:, 1] - centroid[1])
        order = np.lexsort((candidates[:, 2], candidates[:, 1], candidates[:, 0], ap_offset, -score))
    for index in order[:200]:
        centre = coords[index]
        sphere = sphere_mask(organ, centre, diameter_mm)
        sphere_array = sitk.GetArrayViewFromImage(sphere).astype(bool)
        if sphere_array.any() and not (sphere_array & ~organ_array).any():
            return sphere
    raise HarmkitError(
        f"no {diameter_mm:g} mm sphere fits entirely inside the organ mask's voxels; use a smaller diameter"
    )


def add_reference_spheres(
    cohort: "Cohort",
    out_dir: str | os.PathLike,
    organ: str = "liver",
    name: str = "reference",
    diameter_mm: float = 30.0,
    region: str = "upper-right",
) -> "Cohort":
    """Place a reference sphere in every scan's ``organ`` mask and write it back.

    Each sphere is written to ``out_dir/<subject>_<name>.nii.gz`` and added to
    the scan as mask ``name``; ``out_dir/manifest.csv`` lists the cohort with
    the new mask column, so the spheres can be inspected and reused. Scans
    whose organ cannot hold the sphere are reported together in one
    :class:`HarmkitError`.
    """
    from .data import Cohort
    from .imageio import write_image
    from .manifest import write_manifest

    out = Path(out_dir)
    scans, problems = [], []
    for scan in cohort:
        try:
            sphere = reference_sphere(scan.load_mask(organ), diameter_mm, region)
        except HarmkitError as exc:
            problems.append(f"{scan.label}: {exc}")
            continue
        path = write_image(sphere, out / f"{_safe(scan.subject_id)}_{name}.nii.gz")
        scans.append(replace(scan, masks={**scan.masks, name: path.resolve()}))
    if problems:
        raise HarmkitError(
            f"reference sphere ({diameter_mm:g} mm in {organ}) could not be placed for {len(problems)} scan(s):\n"
            + "\n".join(f"  - {p}" for p in problems)
        )
    if all(not isinstance(s.image, sitk.Image) for s in scans) and all(
        not isinstance(m, sitk.Image) for s in scans for m in s.masks.values()
    ):
        write_manifest([_absolute(s, cohort.root) for s in scans], out / "manifest.csv")
    return Cohort(scans, root=cohort.root, manifest=cohort.manifest, metadata=cohort.metadata)


def _absolute(scan: "Scan", root: Path | None) -> "Scan":
    def fix(p):
        p = Path(p)
        return p if p.is_absolute() or root is None else (root / p)

    return replace(scan, image=fix(scan.image), masks={k: fix(v) for k, v in scan.masks.items()})


def _safe(text: str) -> str:
    from .manifest import _safe as file_name  # distinct ids give distinct file names

    return file_name(text)
