"""Small shared helpers: a scan's voxels inside a mask, checked, the reference's scans, image rebuilding, and the
base class that reports what was fitted per site group."""

from __future__ import annotations

import numpy as np
import SimpleITK as sitk

from harmkit.errors import HarmkitError
from harmkit.interfaces import ImageHarmonizer
from harmkit.toolkit import body_mask_of, resolve_site_group


class PerGroupHarmonizer(ImageHarmonizer):
    """An image harmonizer fitted per site group whose ``fit`` sets ``training_``: {site group: one line}.

    ``harmkit train`` prints those lines; :meth:`learning_summary` hands them to the bench report's notes, so a
    row equal to ``none`` says why.
    """

    def learning_summary(self) -> dict | None:
        """What was fitted per site group (``None`` before fitting, or when the mode fits nothing per group)."""
        lines = getattr(self, "training_", None)
        if not lines:
            return None
        return {"message": "; ".join(f"{group}: {line}" for group, line in lines.items())}


def image_and_mask(scan, mask_name: str) -> tuple[sitk.Image, np.ndarray, np.ndarray]:
    """The scan's float32 image, its voxel array (z, y, x) and the boolean mask ``mask_name`` (not empty).

    ``"body"`` is the scan's body mask, or harmkit's one body-mask rule
    (:func:`harmkit.toolkit.body_mask_of`) when the scan has none.
    """
    image = scan.load_image()
    mask = mask_array(scan, mask_name, image)
    if not mask.any():
        raise HarmkitError(f"{scan.label}: mask {mask_name!r} is empty; check the mask file")
    array = sitk.GetArrayFromImage(image).astype(np.float32, copy=False)
    if not np.isfinite(array[mask]).all():
        raise HarmkitError(f"{scan.label}: the image has NaN or infinite values inside mask {mask_name!r}")
    return image, array, mask


def mask_array(scan, mask_name: str, image: sitk.Image) -> np.ndarray:
    """The boolean (z, y, x) array of the scan's mask ``mask_name`` (``"body"``: see :func:`image_and_mask`),
    checked to be on ``image``'s grid; it may be empty."""
    mask_image = body_mask_of(scan) if mask_name == "body" else scan.load_mask(mask_name)
    if mask_image.GetSize() != image.GetSize():
        raise HarmkitError(
            f"{scan.label}: mask {mask_name!r} has size {mask_image.GetSize()} but the image has {image.GetSize()}; "
            f"masks must be on the image's grid"
        )
    return sitk.GetArrayViewFromImage(mask_image) != 0


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
