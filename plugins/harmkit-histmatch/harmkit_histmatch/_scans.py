"""Small shared helpers: a scan's voxels inside a mask, checked, the reference's scans, and image rebuilding."""

from __future__ import annotations

import numpy as np
import SimpleITK as sitk

from harmkit.errors import HarmkitError
from harmkit.toolkit import resolve_site_group


def image_and_mask(scan, mask_name: str) -> tuple[sitk.Image, np.ndarray, np.ndarray]:
    """The scan's float32 image, its voxel array (z, y, x) and the boolean mask ``mask_name``."""
    image = scan.load_image()
    mask_image = scan.load_mask(mask_name)
    if mask_image.GetSize() != image.GetSize():
        raise HarmkitError(
            f"{scan.label}: mask {mask_name!r} has size {mask_image.GetSize()} but the image has {image.GetSize()}; "
            f"masks must be on the image's grid"
        )
    array = sitk.GetArrayFromImage(image).astype(np.float32, copy=False)
    mask = sitk.GetArrayViewFromImage(mask_image) != 0
    if not mask.any():
        raise HarmkitError(f"{scan.label}: mask {mask_name!r} is empty; check the mask file")
    if not np.isfinite(array[mask]).all():
        raise HarmkitError(f"{scan.label}: the image has NaN or infinite values inside mask {mask_name!r}")
    return image, array, mask


def rebuild(array: np.ndarray, like: sitk.Image) -> sitk.Image:
    """A float32 image holding ``array`` with the exact geometry of ``like``."""
    out = sitk.GetImageFromArray(np.ascontiguousarray(array, dtype=np.float32))
    out.CopyInformation(like)
    return out


def reference_scans(cohort, reference: str, what: str) -> tuple[str, list]:
    """The site group ``reference`` (a site or site-group name) designates, and that group's scans.

    The name is resolved by :func:`harmkit.toolkit.resolve_site_group`; an
    unknown name is a :class:`HarmkitError` listing the site groups.
    """
    group = resolve_site_group(cohort, reference, what=f"{what}: reference site")
    return group, [s for s in cohort if s.group == group]
