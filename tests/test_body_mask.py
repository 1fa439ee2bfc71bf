"""The one body-mask rule (harmkit.voi.body_mask) that bench, train, harmonize and the image harmonizers share."""

from __future__ import annotations

import numpy as np
import pytest
import SimpleITK as sitk

from harmkit.data import Scan
from harmkit.errors import HarmkitError
from harmkit.voi import BODY_THRESHOLD_SUV, body_mask, body_mask_of


def image(array):
    out = sitk.GetImageFromArray(np.asarray(array, np.float32))
    out.SetSpacing((2.0, 2.0, 3.0))
    out.SetOrigin((5.0, -4.0, 10.0))
    return out


def phantom():
    """A 6x6x7 body at SUV 1 with an enclosed cold hole, and a separate hot blob outside it (the table, a glove)."""
    array = np.zeros((10, 12, 14), np.float32)
    array[2:8, 3:9, 3:10] = 1.0
    array[4, 5, 5] = 0.0  # enclosed air
    array[0, 0, 0:2] = 5.0  # a small separate component
    return array


def test_the_body_is_the_largest_component_above_the_threshold_with_holes_filled():
    mask = sitk.GetArrayFromImage(body_mask(image(phantom())))
    expected = np.zeros((10, 12, 14), np.uint8)
    expected[2:8, 3:9, 3:10] = 1
    np.testing.assert_array_equal(mask, expected)


def test_the_threshold_is_the_papers_suv_0_1_inclusive():
    array = np.zeros((5, 5, 5), np.float32)
    array[1:4, 1:4, 1:4] = BODY_THRESHOLD_SUV
    array[2, 2, 2] = 0.099
    assert BODY_THRESHOLD_SUV == 0.1
    assert sitk.GetArrayFromImage(body_mask(image(array))).sum() == 27  # the 0.099 voxel is an enclosed hole


def test_the_mask_is_uint8_on_the_images_grid():
    source = image(phantom())
    mask = body_mask(source)
    assert mask.GetPixelID() == sitk.sitkUInt8
    assert mask.GetSpacing() == source.GetSpacing() and mask.GetOrigin() == source.GetOrigin()


def test_an_image_without_body_voxels_is_refused_with_the_scan_named():
    scan = Scan("s7", "A", image(np.full((4, 4, 4), 0.01)), masks={})
    with pytest.raises(HarmkitError, match="'s7'.*no voxel reaches SUV 0.1.*mask_body"):
        body_mask_of(scan)


def test_a_scans_own_body_mask_wins_over_the_rule():
    own = sitk.GetImageFromArray(np.ones((10, 12, 14), np.uint8))
    scan = Scan("s1", "A", image(phantom()), masks={"body": own})
    assert sitk.GetArrayFromImage(body_mask_of(scan)).sum() == 10 * 12 * 14
    bare = Scan("s1", "A", image(phantom()), masks={})
    assert sitk.GetArrayFromImage(body_mask_of(bare)).sum() == 6 * 6 * 7


def test_the_toolkit_exports_the_same_rule():
    import harmkit.toolkit as toolkit

    assert toolkit.body_mask is body_mask and toolkit.body_mask_of is body_mask_of


def test_the_bench_writes_the_same_mask_for_a_scan_without_one(tmp_path):
    from harmkit.bench.image_stages import _body_mask_one

    scan = Scan("s2", "A", image(phantom()), masks={})
    path = _body_mask_one((scan, str(tmp_path / "body.nii.gz")))
    written = sitk.ReadImage(path)
    np.testing.assert_array_equal(sitk.GetArrayFromImage(written), sitk.GetArrayFromImage(body_mask_of(scan)))
    assert written.GetSpacing() == scan.image.GetSpacing()
