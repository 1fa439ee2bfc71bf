"""VOIs: largest lesion component, automatic reference spheres, coefficient of variation."""

from __future__ import annotations

import numpy as np
import pytest
import SimpleITK as sitk

from harmkit.data import Cohort, Scan
from harmkit.errors import HarmkitError
from harmkit.imageio import write_image
from harmkit.manifest import load_cohort
from harmkit.voi import (
    add_reference_spheres,
    largest_component,
    reference_sphere,
    sphere_mask,
    voi_cov,
)


def _image(array, spacing=(4.0, 4.0, 4.0), direction=None, origin=(-100.0, -80.0, 50.0)):
    image = sitk.GetImageFromArray(array)
    image.SetSpacing(spacing)
    image.SetOrigin(origin)
    if direction is not None:
        image.SetDirection(direction)
    return image


def liver(direction=None, semi_axes_mm=(80.0, 60.0, 70.0), spacing=(4.0, 4.0, 4.0)):
    """An ellipsoidal organ filling most of a 50 x 40 x 40 grid."""
    shape = (40, 40, 50)  # z, y, x
    z, y, x = np.indices(shape).astype(float)
    c = (np.array(shape) - 1) / 2
    inside = ((x - c[2]) * spacing[0] / semi_axes_mm[0]) ** 2 + ((y - c[1]) * spacing[1] / semi_axes_mm[1]) ** 2 + (
        (z - c[0]) * spacing[2] / semi_axes_mm[2]
    ) ** 2 <= 1
    return _image(inside.astype(np.uint8), spacing, direction)


def _centre_mm(mask):
    index = np.argwhere(sitk.GetArrayViewFromImage(mask) > 0).mean(axis=0)[::-1]
    return np.array(mask.TransformContinuousIndexToPhysicalPoint(tuple(index)))


@pytest.mark.parametrize("direction", [None, (-1, 0, 0, 0, -1, 0, 0, 0, 1)])
def test_sphere_is_fully_inside_the_organ_in_its_upper_right_part(direction):
    organ = liver(direction)
    sphere = reference_sphere(organ, diameter_mm=30)
    s = sitk.GetArrayViewFromImage(sphere).astype(bool)
    o = sitk.GetArrayViewFromImage(organ).astype(bool)
    assert s.any() and not (s & ~o).any()
    volume = s.sum() * 64.0
    assert volume == pytest.approx(4 / 3 * np.pi * 15**3, rel=0.2)
    centre, organ_centre = _centre_mm(sphere), _centre_mm(organ)
    assert centre[0] < organ_centre[0] - 10  # patient's right (LPS: smaller x), whatever the voxel order
    assert centre[2] > organ_centre[2] + 10  # superior


def test_sphere_placement_is_deterministic():
    a = sitk.GetArrayFromImage(reference_sphere(liver()))
    b = sitk.GetArrayFromImage(reference_sphere(liver()))
    assert np.array_equal(a, b)


def test_centre_region_puts_the_sphere_deepest_inside():
    organ = liver()
    centre = _centre_mm(reference_sphere(organ, 30, region="centre"))
    assert np.linalg.norm(centre - _centre_mm(organ)) < 6


def test_organ_too_small_names_the_largest_sphere_that_fits():
    small = liver(semi_axes_mm=(14.0, 14.0, 14.0))
    with pytest.raises(HarmkitError, match="no 30 mm sphere fits.*largest that fits: about"):
        reference_sphere(small, 30)


def test_empty_organ_mask_is_reported():
    with pytest.raises(HarmkitError, match="empty"):
        reference_sphere(liver() * 0)


def test_largest_component_keeps_only_the_biggest_blob():
    array = np.zeros((10, 10, 10), np.uint8)
    array[1:3, 1:3, 1:3] = 1  # 8 voxels
    array[5:9, 5:9, 5:9] = 2  # 64 voxels, another label value
    kept = sitk.GetArrayFromImage(largest_component(_image(array)))
    assert kept.sum() == 64 and kept[6, 6, 6] == 1 and kept[1, 1, 1] == 0


def test_largest_component_corner_connectivity_is_an_option():
    array = np.zeros((6, 6, 6), np.uint8)
    array[1, 1, 1] = array[2, 2, 2] = array[3, 3, 3] = 1  # a diagonal chain
    array[5, 0:2, 0] = 1  # two face-connected voxels
    assert sitk.GetArrayFromImage(largest_component(_image(array))).sum() == 3
    assert sitk.GetArrayFromImage(largest_component(_image(array), fully_connected=False)).sum() == 2


def test_voi_cov_is_sigma_over_mu():
    rng = np.random.default_rng(1)
    values = rng.normal(2.0, 0.2, size=(8, 8, 8)).astype(np.float32)
    mask = np.zeros_like(values, np.uint8)
    mask[2:6, 2:6, 2:6] = 1
    inside = values[mask > 0].astype(np.float64)
    assert voi_cov(_image(values), _image(mask)) == pytest.approx(inside.std() / inside.mean())


def test_voi_cov_rejects_empty_masks_and_non_positive_means():
    values = np.ones((4, 4, 4), np.float32)
    with pytest.raises(HarmkitError, match="empty"):
        voi_cov(_image(values), _image(np.zeros((4, 4, 4), np.uint8)))
    with pytest.raises(HarmkitError, match="mean SUV"):
        voi_cov(_image(values * 0), _image(np.ones((4, 4, 4), np.uint8)))


def test_sphere_mask_is_on_the_reference_grid():
    organ = liver()
    sphere = sphere_mask(organ, _centre_mm(organ), 20.0)
    assert sphere.GetSize() == organ.GetSize() and sphere.GetOrigin() == organ.GetOrigin()


def test_add_reference_spheres_writes_masks_and_a_manifest(tmp_path):
    organ = liver()
    pet = sitk.Cast(organ, sitk.sitkFloat32) * 2.0 + 0.5
    scans = []
    for sid in ("a", "b"):
        image = write_image(pet, tmp_path / "in" / f"{sid}.nii.gz")
        mask = write_image(organ, tmp_path / "in" / f"{sid}_liver.nii.gz")
        scans.append(Scan(sid, "S1", image, {"liver": mask}))
    out = add_reference_spheres(Cohort(scans), tmp_path / "spheres")
    assert (tmp_path / "spheres" / "a_reference.nii.gz").is_file()
    reread = load_cohort(tmp_path / "spheres" / "manifest.csv")
    assert "reference" in reread.mask_names and len(reread) == 2
    cov = voi_cov(reread[0].load_image(), reread[0].load_mask("reference"))
    assert cov == pytest.approx(0.0, abs=1e-6)  # uniform liver
    assert "reference" in out[1].masks
