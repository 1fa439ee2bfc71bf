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
    model = HistogramMatching(mode="nyul").fit(Cohort([scan]), "REF")
    same_as_source = Scan("a", "SRC", scan.image, masks=dict(scan.masks))
    out = model.transform(same_as_source)
    np.testing.assert_allclose(
        sitk.GetArrayFromImage(out.load_image()),
        sitk.GetArrayFromImage(scan.image),
        atol=1e-5,
    )


def test_output_quantiles_match_the_pooled_reference_quantiles():
    data = cohort()
    model = HistogramMatching(mode="nyul").fit(data, "REF")
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
    model = HistogramMatching(mode="nyul").fit(data, "REF")
    scan = data[2]
    before, after = inside(scan), inside(model.transform(scan))
    order = np.argsort(before, kind="stable")
    assert np.all(np.diff(after[order]) >= -1e-6)


def test_voxels_outside_the_body_are_kept_unless_asked_to_map_them():
    data = cohort()
    outside = body_mask_array() == 0
    original = sitk.GetArrayFromImage(data[2].load_image())[outside]
    kept = HistogramMatching(mode="nyul").fit(data, "REF").transform(data[2])
    np.testing.assert_array_equal(sitk.GetArrayFromImage(kept.load_image())[outside], original)
    mapped = HistogramMatching(mode="nyul", outside="map").fit(data, "REF").transform(data[2])
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
    assert model.n_scans_ == {"CHUM-HMR": 2, "HGJ": 1}
    assert model.transform(scans[2]).load_image() is not scans[2].image


def test_save_and_load_reproduce_the_transform(tmp_path):
    import harmkit

    data = cohort()
    model = HistogramMatching(mode="nyul", landmarks=(2, 25, 50, 75, 98)).fit(data, "REF")
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
    assert model.reference_site_ == "CHUM-HMR" and model.n_scans_["CHUM-HMR"] == 2


def test_bad_landmarks_are_refused():
    with pytest.raises(HarmkitError, match="landmarks"):
        HistogramMatching(mode="nyul", landmarks=(50, 10)).fit(cohort(), "REF")


def test_registered_as_histmatch_from_its_own_distribution():
    import harmkit

    info = {p.name: p for p in harmkit.list_plugins()}["histmatch"]
    assert info.distribution == "harmkit-histmatch" and info.kind == "image-harmonizer"
    assert isinstance(harmkit.get_harmonizer("histmatch", mask="body"), HistogramMatching)


def test_works_on_a_cohort_read_from_a_manifest(tiny_cohort):
    import harmkit

    data = harmkit.load_cohort(tiny_cohort)
    model = HistogramMatching(mode="nyul", mask="lesion").fit(data, "A")
    for scan in data.by_group("B"):
        out = model.transform(scan)
        assert same_geometry(out.load_image(), scan.load_image())
        lesion = sitk.GetArrayFromImage(scan.load_mask("lesion")) > 0
        assert np.median(sitk.GetArrayFromImage(out.load_image())[lesion]) == pytest.approx(
            model.reference_landmarks_[model.landmarks_.index(50.0)], rel=0.2
        )


# -- scale mode (the default): healthy-tissue levels, one factor per site group --------------------------------------

PET_SHAPE = (30, 40, 44)  # z, y, x; 3 mm voxels
PET_SPACING = 3.0


def _ellipsoid(centre, radii, shape=PET_SHAPE):
    z, y, x = np.indices(shape)
    return sum(((g - c) / r) ** 2 for g, c, r in zip((z, y, x), centre, radii)) <= 1


def pet_scan(
    subject,
    site,
    seed,
    calibration=1.0,
    uptake=0.8,
    noise=0.15,
    lesion_suv=None,
    lesion_mask=False,
    body_mask=True,
):
    """A PET-like scan: soft tissue at ``uptake``, a liver at 2.5x, optional hot lesion; noise ~ sqrt(SUV).

    The whole image is multiplied by ``calibration`` (a site's SUV calibration error).
    """
    from scipy.ndimage import gaussian_filter

    rng = np.random.default_rng(seed)
    body = _ellipsoid((14.5, 19.5, 21.5), (14, 17, 20))
    liver = _ellipsoid((14.5, 14, 14), (6, 6, 7))
    lesion = _ellipsoid((12, 26, 30), (4, 4, 4))
    truth = np.where(body, uptake, 0.02).astype(np.float64)
    truth[liver] = 2.5 * uptake
    if lesion_suv is not None:
        truth[lesion] = lesion_suv
    field = gaussian_filter(rng.normal(size=PET_SHAPE), 1.0)
    field /= field.std()
    values = np.clip(truth + noise * np.sqrt(truth) * field, 0, None) * calibration
    image = sitk.GetImageFromArray(values.astype(np.float32))
    image.SetSpacing((PET_SPACING,) * 3)
    masks = {}
    for name, region, wanted in (("body", body, body_mask), ("lesion", lesion, lesion_mask), ("liver", liver, True)):
        if wanted:
            mask = sitk.GetImageFromArray(region.astype(np.uint8))
            mask.CopyInformation(image)
            masks[name] = mask
    return Scan(subject, site, image, masks=masks)


def mean_in(scan_or_image, region):
    image = scan_or_image if isinstance(scan_or_image, sitk.Image) else scan_or_image.load_image()
    return float(sitk.GetArrayFromImage(image)[region].mean())


def test_scale_mode_undoes_a_known_calibration_factor():
    reference = [pet_scan(f"r{i}", "REF", seed=i) for i in range(3)]
    miscalibrated = [pet_scan(f"s{i}", "SRC", seed=i, calibration=1.3) for i in range(3)]
    model = HistogramMatching().fit(Cohort(reference + miscalibrated), "REF")
    assert model.scales_["SRC"] == pytest.approx(1 / 1.3, rel=1e-5)
    for ref, src in zip(reference, miscalibrated):
        np.testing.assert_allclose(
            sitk.GetArrayFromImage(model.transform(src).load_image()),
            sitk.GetArrayFromImage(ref.image),
            rtol=1e-5,
            atol=1e-6,
        )


def test_scale_mode_finds_the_calibration_of_other_subjects_with_other_noise():
    reference = [pet_scan(f"r{i}", "REF", seed=i, noise=0.1) for i in range(3)]
    source = [pet_scan(f"s{i}", "SRC", seed=50 + i, noise=0.35, calibration=1.25) for i in range(3)]
    model = HistogramMatching().fit(Cohort(reference + source), "REF")
    assert model.scales_["SRC"] == pytest.approx(1 / 1.25, rel=0.02)


def test_scale_mode_keeps_the_lesion_to_liver_ratio():
    data = Cohort([pet_scan("r0", "REF", seed=0), pet_scan("s0", "SRC", seed=1, calibration=0.8, lesion_suv=8.0)])
    model = HistogramMatching().fit(data, "REF")
    scan = data[1]
    out = model.transform(scan)
    lesion = _ellipsoid((12, 26, 30), (4, 4, 4))
    liver = _ellipsoid((14.5, 14, 14), (6, 6, 7))
    assert mean_in(out, lesion) / mean_in(out, liver) == pytest.approx(
        mean_in(scan, lesion) / mean_in(scan, liver), rel=1e-5
    )
    assert mean_in(out, lesion) == pytest.approx(mean_in(scan, lesion) / 0.8, rel=0.03)  # values did change


def test_healthy_level_does_not_move_when_a_hot_lesion_is_added():
    from harmkit_histmatch.histmatch import healthy_level, quantiles_of

    plain = pet_scan("a", "A", seed=3)
    hot = pet_scan("a", "A", seed=3, lesion_suv=15.0)  # no lesion mask: the band has to leave it out
    hot_masked = pet_scan("a", "A", seed=3, lesion_suv=15.0, lesion_mask=True)
    level, _ = healthy_level(plain)
    assert healthy_level(hot)[0] == pytest.approx(level, rel=0.01)
    assert healthy_level(hot_masked)[0] == pytest.approx(level, rel=0.01)
    body = _ellipsoid((14.5, 19.5, 21.5), (14, 17, 20))
    upper = [quantiles_of(sitk.GetArrayFromImage(s.image)[body], np.array([0.995]))[0] for s in (plain, hot)]
    assert upper[1] > 1.5 * upper[0]  # the whole-body landmark Nyul matching uses does move


def test_healthy_level_hardly_depends_on_the_noise_level():
    from harmkit_histmatch.histmatch import healthy_level

    quiet = healthy_level(pet_scan("a", "A", seed=4, noise=0.05))[0]
    noisy = healthy_level(pet_scan("a", "A", seed=4, noise=0.4))[0]
    assert noisy == pytest.approx(quiet, rel=0.03)


def test_a_factor_within_the_spread_of_patients_uptake_is_not_applied():
    uptakes = (0.6, 0.7, 0.8, 0.9, 1.0)
    scans = [pet_scan(f"r{i}", "REF", seed=i, uptake=u) for i, u in enumerate(uptakes)]
    scans += [pet_scan(f"s{i}", "SRC", seed=20 + i, uptake=u, calibration=1.03) for i, u in enumerate(uptakes[::-1])]
    model = HistogramMatching().fit(Cohort(scans), "REF")
    assert model.measured_scales_["SRC"] == pytest.approx(1 / 1.03, rel=0.01)
    assert model.scale_z_["SRC"] < 2 and model.scales_["SRC"] == 1.0
    np.testing.assert_array_equal(
        sitk.GetArrayFromImage(model.transform(scans[5]).load_image()), sitk.GetArrayFromImage(scans[5].image)
    )
    always = HistogramMatching(significance=0).fit(Cohort(scans), "REF")
    assert always.scales_["SRC"] == pytest.approx(1 / 1.03, rel=0.01)


def test_scale_mode_keeps_patient_differences_within_a_site_group():
    scans = [pet_scan("r0", "REF", seed=0), pet_scan("r1", "REF", seed=1)]
    scans += [pet_scan("low", "SRC", seed=2, uptake=0.6), pet_scan("high", "SRC", seed=3, uptake=1.0)]
    model = HistogramMatching().fit(Cohort(scans), "REF")
    liver = _ellipsoid((14.5, 14, 14), (6, 6, 7))
    low, high = (model.transform(s) for s in scans[2:])
    assert mean_in(high, liver) / mean_in(low, liver) == pytest.approx(
        mean_in(scans[3], liver) / mean_in(scans[2], liver), rel=1e-5
    )


def test_a_scan_without_a_body_mask_gets_harmkits_body_mask():
    from harmkit.voi import body_mask
    from harmkit_histmatch.histmatch import healthy_level

    bare = pet_scan("a", "A", seed=5, body_mask=False)
    assert "body" not in bare.masks
    given = Scan("a", "A", bare.image, masks={"body": body_mask(bare.image)})
    assert healthy_level(bare) == healthy_level(given)


def test_scale_mode_refuses_a_site_group_not_seen_at_fit():
    model = HistogramMatching().fit(Cohort([pet_scan("r0", "REF", seed=0), pet_scan("s0", "SRC", seed=1)]), "REF")
    with pytest.raises(HarmkitError, match="'OTHER' was not in the cohort at fit"):
        model.transform(pet_scan("x", "OTHER", seed=2))


@pytest.mark.parametrize(
    "params, message",
    [
        ({"landmarks": (5, 50, 95)}, "landmarks applies to mode='nyul' only"),
        ({"outside": "map"}, "outside applies to mode='nyul' only"),
        ({"mode": "nyul", "band": (0.4, 2.0)}, "band applies to mode='scale' only"),
        ({"mode": "percentile"}, "mode='percentile' is not known"),
        ({"band": (1.2, 2.0)}, "0 < low < 1 < high"),
        ({"smoothing_mm": 0}, "smoothing_mm must be a width in mm > 0"),
        ({"significance": -1}, "significance must be a number >= 0"),
        ({"exclude": "lesion"}, "exclude must be a list of mask names"),
    ],
    ids=["landmarks", "outside", "band-in-nyul", "mode", "band", "smoothing", "significance", "exclude"],
)
def test_parameters_of_the_other_mode_or_out_of_range_are_refused(params, message):
    with pytest.raises(HarmkitError, match=message):
        HistogramMatching(**params).fit(Cohort([pet_scan("r0", "REF", seed=0)]), "REF")


def test_too_little_healthy_tissue_names_the_scan():
    tiny = pet_scan("t1", "REF", seed=0)
    small_body = sitk.GetImageFromArray(_ellipsoid((14.5, 19.5, 21.5), (2, 2, 2)).astype(np.uint8))
    small_body.CopyInformation(tiny.image)
    scan = Scan("t1", "REF", tiny.image, masks={"body": small_body})
    with pytest.raises(HarmkitError, match="'t1'.*voxel\\(s\\) of healthy tissue"):
        HistogramMatching().fit(Cohort([scan]), "REF")


def test_scale_mode_save_and_load_keep_the_factors(tmp_path):
    import harmkit

    data = Cohort([pet_scan("r0", "REF", seed=0), pet_scan("s0", "SRC", seed=1, calibration=1.1)])
    model = HistogramMatching(band=(0.4, 2.5)).fit(data, "REF")
    loaded = harmkit.load_model(model.save(tmp_path / "hm"))
    assert loaded.scales_ == model.scales_ and loaded.band == [0.4, 2.5]
    assert loaded.learning_summary() == model.learning_summary() == {"message": f"SRC: {model.training_['SRC']}"}
    np.testing.assert_array_equal(
        sitk.GetArrayFromImage(loaded.transform(data[1]).load_image()),
        sitk.GetArrayFromImage(model.transform(data[1]).load_image()),
    )


def test_train_and_harmonize_run_on_a_cohort_without_mask_body(tmp_path, capsys):
    import pandas as pd

    import harmkit
    from harmkit.cli import main
    from harmkit.manifest import write_cohort

    scans = [pet_scan(f"r{i}", "REF", seed=i, body_mask=False) for i in range(2)]
    scans += [pet_scan(f"s{i}", "SRC", seed=10 + i, calibration=1.2, body_mask=False) for i in range(2)]
    manifest = write_cohort(scans, tmp_path / "cohort")
    assert "mask_body" not in pd.read_csv(manifest).columns
    for method in ("histmatch", "resmatch"):
        model = tmp_path / f"model-{method}"
        main(["train", "--method", method, "--cohort", str(manifest), "--reference", "REF", "--out", str(model)])
        out = tmp_path / f"out-{method}"
        main(["harmonize", "--model", str(model), "--cohort", str(manifest), "--out", str(out)])
        assert len(pd.read_csv(out / "manifest.csv")) == 4
    assert harmkit.load_model(tmp_path / "model-histmatch").scales_["SRC"] == pytest.approx(1 / 1.2, rel=0.03)
    printed = capsys.readouterr().out
    assert "x0.8" in printed and "healthy level" in printed  # harmkit train says what each plugin fitted
    assert "SRC" in printed and ("smoothed" in printed or "unchanged" in printed or "sharpened" in printed)
