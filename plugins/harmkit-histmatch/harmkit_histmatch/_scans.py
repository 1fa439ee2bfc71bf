"""Small shared helpers: a scan's voxels inside a mask, checked, and image rebuilding."""

from __future__ import annotations

from typing import Iterable

import numpy as np
import SimpleITK as sitk

from harmkit.errors import HarmkitError


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


def group_scans(cohort, group: str, what: str) -> list:
    scans = [s for s in cohort if s.group == group]
    if not scans:
        groups = ", ".join(repr(g) for g in cohort.site_groups) or "none"
        raise HarmkitError(f"{what}: reference site group {group!r} has no scans in the cohort (site groups: {groups})")
    return scans


def progress(items: Iterable, total: int, label: str):
    """A rich progress bar over ``items`` when there are enough of them to notice."""
    import sys

    if total < 8 or not sys.stderr.isatty():
        yield from items
        return
    from rich.console import Console
    from rich.progress import track

    yield from track(items, total=total, description=label, transient=True, console=Console(stderr=True))
