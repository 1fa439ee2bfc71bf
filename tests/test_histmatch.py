"""Histogram matching image harmonizer (plugin harmkit-histmatch, name ``histmatch``)."""

from __future__ import annotations

import json
import pickle

import numpy as np
import pytest
import SimpleITK as sitk

from harmkit.data import Cohort, Scan
from harmkit.errors import HarmkitError
from harmkit.imageio import same_geometry
from harmkit_histmatch import HistogramMatching

SHAPE = (24, 28, 32)  # z, y, x


def body_mask_array():
    z, y, x = np.indices(SHAPE)
    return (((z - 11.5) / 10) ** 2 + ((y - 13.5) / 12) ** 2 + ((x - 15.5) / 14) ** 2 <= 1).astype(np.uint8)


def make_scan(subject, site, seed, scale=1.0, offset=0.0, shape_k=2.0, group=None):
    """A synthetic PET-like scan: gamma-distributed SUV in an ellipsoid body, ~0 outside."""
    rng = np.random.default_rng(seed)
    body = body_mask_array()
    values = np.where(
        body > 0,
        rng.gamma(shape_k, 0.6, SHAPE) * scale + offset,
        rng.uniform(0, 0.05, SHAPE),
    )
    image = sitk.GetImageFromArray(values.astype(np.float32))
    image.SetSpacing((2.0, 2.5, 3.0))
    image.SetOrigin((-30.0, 12.0, 100.5))
    image.SetDirection((0.0, 1.0, 0.0, -1.0, 0.0, 0.0, 0.0, 0.0, 1.0))
    mask = sitk.GetImageFromArray(body)
    mask.CopyInformation(image)
    return Scan(subject, site, image, masks={"body": mask}, site_group=group)


def cohort():
    scans = [make_scan(f"r{i}", "REF", seed=i) for i in range(2)]
    scans += [make_scan(f"s{i}", "SRC", seed=10 + i, scale=1.7, offset=0.4, shape_k=3.0) for i in range(2)]
    return Cohort(scans)


def inside(scan):
    return sitk.GetArrayFromImage(scan.load_image())[body_mask_array() > 0]


def test_matching_a_scan_to_itself_is_the_identity():
    scan = make_scan("a", "REF", seed=3)
    model = HistogramMatching().fit(Cohort([scan]), "REF")
    same_as_source = Scan("a", "SRC", scan.image, masks=dict(scan.masks))
    out = model.transform(same_as_source)
    np.testing.assert_allclose(
        sitk.GetArrayFromImage(out.load_image()),
        sitk.GetArrayFromImage(scan.image),
        atol=1e-5,
    )


def test_output_quantiles_match_the_pooled_reference_quantiles():
    data = cohort()
    model = HistogramMatching().fit(data, "REF")
    reference = np.concatenate([inside(s) for s in data if s.site == "REF"])
    for scan in [s for s in data if s.site == "SRC"]:
        before = inside(scan)
        after = inside(model.transform(scan))
        for p in (5, 25, 50, 75, 95):
            ref_q = np.percentile(reference, p)
            assert abs(np.percentile(after, p) - ref_q) <= 0.03 * ref_q + 0.01, p
        assert abs(np.percentile(before, 50) - np.percentile(reference, 50)) > 0.3  # it really was different


def test_mapping_is_monotone_and_keeps_the_voxel_order():
    data = cohort()
    model = HistogramMatching().fit(data, "REF")
    scan = data[2]
    before, after = inside(scan), inside(model.transform(scan))
    order = np.argsort(before, kind="stable")
    assert np.all(np.diff(after[order]) >= -1e-6)


def test_voxels_outside_the_body_are_kept_unless_asked_to_map_them():
    data = cohort()
    outside = body_mask_array() == 0
    original = sitk.GetArrayFromImage(data[2].load_image())[outside]
    kept = HistogramMatching().fit(data, "REF").transform(data[2])
    np.testing.assert_array_equal(sitk.GetArrayFromImage(kept.load_image())[outside], original)
    mapped = HistogramMatching(outside="map").fit(data, "REF").transform(data[2])
    assert not np.allclose(sitk.GetArrayFromImage(mapped.load_image())[outside], original)


def test_output_has_the_input_geometry_and_float32():
    data = cohort()
    out = HistogramMatching().fit(data, "REF").transform(data[3])
    assert same_geometry(out.load_image(), data[3].load_image())
    assert out.load_image().GetDirection() == data[3].load_image().GetDirection()
    assert out.load_image().GetPixelID() == sitk.sitkFloat32
    assert out.subject_id == "s1" and out.site == "SRC" and set(out.masks) == {"body"}


def test_reference_group_scans_come_back_unchanged():
    data = cohort()
    out = HistogramMatching().fit(data, "REF").transform(data[0])
    np.testing.assert_array_equal(sitk.GetArrayFromImage(out.load_image()), sitk.GetArrayFromImage(data[0].image))


def test_reference_is_a_site_group():
    scans = [
        make_scan("r0", "CHUM", 0, group="CHUM-HMR"),
        make_scan("r1", "HMR", 1, group="CHUM-HMR"),
    ]
    scans.append(make_scan("s0", "HGJ", 2, scale=2.0))
    model = HistogramMatching().fit(Cohort(scans), "CHUM-HMR")
    assert model.n_reference_scans_ == 2
    assert model.transform(scans[2]).load_image() is not scans[2].image


def test_save_and_load_reproduce_the_transform(tmp_path):
    import harmkit

    data = cohort()
    model = HistogramMatching(landmarks=(2, 25, 50, 75, 98)).fit(data, "REF")
    path = model.save(tmp_path / "hm")
    assert json.loads((path / "harmkit-model.json").read_text())["params"]["landmarks"] == [2, 25, 50, 75, 98]
    loaded = harmkit.load_model(path)
    np.testing.assert_array_equal(
        sitk.GetArrayFromImage(loaded.transform(data[2]).load_image()),
        sitk.GetArrayFromImage(model.transform(data[2]).load_image()),
    )


def test_transform_is_picklable_and_runs_through_the_executor():
    execution = pytest.importorskip("harmkit.execution")
    data = cohort()
    model = HistogramMatching().fit(data, "REF")
    clone = pickle.loads(pickle.dumps(model.transform))
    expected = sitk.GetArrayFromImage(model.transform(data[2]).load_image())
    np.testing.assert_array_equal(sitk.GetArrayFromImage(clone(data[2]).load_image()), expected)
    with execution.get_executor(jobs=2) as executor:
        results = executor.map(model.transform, list(data), label="histmatch")
    assert all(r.error is None for r in results)
    np.testing.assert_array_equal(sitk.GetArrayFromImage(results[2].value.load_image()), expected)


def test_missing_body_mask_names_the_scan_and_the_mask():
    data = cohort()
    model = HistogramMatching().fit(data, "REF")
    bare = Scan("x9", "SRC", data[2].image, masks={})
    with pytest.raises(HarmkitError, match="'x9'.*no mask 'body'"):
        model.transform(bare)


def test_unknown_reference_group_lists_the_groups():
    with pytest.raises(HarmkitError, match="'HGJ' is not a site or site group.*REF, SRC"):
        HistogramMatching().fit(cohort(), "HGJ")


def test_a_site_name_as_reference_fits_towards_its_site_group():
    scans = [
        make_scan("r0", "CHUM", seed=0, group="CHUM-HMR"),
        make_scan("r1", "HMR", seed=1, group="CHUM-HMR"),
    ]
    scans.append(make_scan("s0", "SRC", seed=10, scale=1.7))
    model = HistogramMatching().fit(Cohort(scans), "HMR")
    assert model.reference_site_ == "CHUM-HMR" and model.n_reference_scans_ == 2


def test_bad_landmarks_are_refused():
    with pytest.raises(HarmkitError, match="landmarks"):
        HistogramMatching(landmarks=(50, 10)).fit(cohort(), "REF")


def test_registered_as_histmatch_from_its_own_distribution():
    import harmkit

    info = {p.name: p for p in harmkit.list_plugins()}["histmatch"]
    assert info.distribution == "harmkit-histmatch" and info.kind == "image-harmonizer"
    assert isinstance(harmkit.get_harmonizer("histmatch", mask="body"), HistogramMatching)


def test_works_on_a_cohort_read_from_a_manifest(tiny_cohort):
    import harmkit

    data = harmkit.load_cohort(tiny_cohort)
    model = HistogramMatching(mask="lesion").fit(data, "A")
    for scan in data.by_group("B"):
        out = model.transform(scan)
        assert same_geometry(out.load_image(), scan.load_image())
        lesion = sitk.GetArrayFromImage(scan.load_mask("lesion")) > 0
        assert np.median(sitk.GetArrayFromImage(out.load_image())[lesion]) == pytest.approx(
            model.reference_landmarks_[model.landmarks_.index(50.0)], rel=0.2
        )
