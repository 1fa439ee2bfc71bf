"""Site-effect diagnostics: site predictability, patch separability, noise texture and resolution, harmkit diagnose."""

from __future__ import annotations

import json
import math

import numpy as np
import pandas as pd
import pytest
import SimpleITK as sitk
from scipy import ndimage

from harmkit.data import Cohort, Scan
from harmkit.diagnostics import (
    edge_resolution,
    homogeneous_region,
    noise_statistics,
    patch_separability,
    site_predictability,
)
from harmkit.errors import HarmkitError

FWHM = 2.3548200450309493


def _features(rng, n_per_group: int, shift: float) -> pd.DataFrame:
    a = rng.standard_normal((n_per_group, 20))
    b = rng.standard_normal((n_per_group, 20))
    b[:, :3] += shift
    table = pd.DataFrame(np.vstack([a, b]), columns=[f"f{k}" for k in range(20)])
    table["site_group"] = ["A"] * n_per_group + ["B"] * n_per_group
    return table


def _image(array: np.ndarray, spacing=(4.0, 4.0, 4.0)) -> sitk.Image:
    image = sitk.GetImageFromArray(np.ascontiguousarray(array, dtype=np.float32))
    image.SetSpacing(spacing)
    return image


def _correlated_noise(rng, shape, kernel_fwhm_mm: float, spacing) -> np.ndarray:
    noise = ndimage.gaussian_filter(
        rng.standard_normal(shape),
        [kernel_fwhm_mm / FWHM / s for s in spacing[::-1]],
        mode="wrap",
    )
    return noise / noise.std()


def _sphere(shape, centre, radius_vox) -> np.ndarray:
    z, y, x = np.indices(shape)
    return (z - centre[0]) ** 2 + (y - centre[1]) ** 2 + (x - centre[2]) ** 2 <= radius_vox**2


# --- feature-level site predictability ----------------------------------------------------------


def test_site_predictability_is_near_chance_when_both_sites_share_one_distribution():
    result = site_predictability(_features(np.random.default_rng(0), 80, shift=0.0))
    assert abs(result["auc"] - 0.5) < 0.1
    assert result["ci_low"] < 0.5 < result["ci_high"]


def test_site_predictability_is_near_one_for_a_known_shift():
    result = site_predictability(_features(np.random.default_rng(1), 80, shift=2.0))
    assert result["auc"] > 0.95
    assert result["n_features"] == 20


def test_site_predictability_with_three_groups_reports_every_pair():
    rng = np.random.default_rng(2)
    table = _features(rng, 40, shift=2.0)
    extra = pd.DataFrame(rng.standard_normal((40, 20)), columns=[f"f{k}" for k in range(20)])
    extra["site_group"] = "C"
    result = site_predictability(pd.concat([table, extra], ignore_index=True))
    assert set(result["pairs"]) == {"A vs B", "A vs C", "B vs C"}
    assert result["pairs"]["A vs B"] > 0.9 and abs(result["pairs"]["A vs C"] - 0.5) < 0.15


def test_site_predictability_refuses_a_single_site_group():
    table = _features(np.random.default_rng(3), 10, 0.0)
    table["site_group"] = "A"
    with pytest.raises(HarmkitError, match="at least two site groups"):
        site_predictability(table)


def test_site_predictability_names_a_site_group_with_one_scan():
    table = _features(np.random.default_rng(4), 10, 0.0)
    table.loc[0, "site_group"] = "lonely"
    with pytest.raises(HarmkitError, match="lonely"):
        site_predictability(table)


# --- texture statistics -------------------------------------------------------------------------


@pytest.mark.parametrize("kernel_mm", [6.0, 10.0])
def test_noise_statistics_recover_cov_and_correlation_length(kernel_mm):
    rng = np.random.default_rng(5)
    spacing = (4.0, 4.0, 4.0)
    values = 2.0 * (1 + 0.15 * _correlated_noise(rng, (40, 40, 40), kernel_mm, spacing))
    mask = _sphere(values.shape, (20, 20, 20), 7)
    stats = noise_statistics(_image(values, spacing), _image(mask.astype(np.uint8), spacing))
    assert stats["cov"] == pytest.approx(0.15, rel=0.2)
    expected = math.sqrt(2) * kernel_mm  # autocorrelation FWHM of white noise smoothed by a Gaussian of FWHM kernel_mm
    assert stats["corr_fwhm_inplane_mm"] == pytest.approx(expected, rel=0.2)
    assert stats["corr_fwhm_axial_mm"] == pytest.approx(expected, rel=0.3)


def test_edge_resolution_recovers_the_blur_of_a_hot_sphere():
    spacing = (2.0, 2.0, 2.0)
    obj = 1.0 + 4.0 * _sphere((60, 60, 60), (30, 30, 30), 10)
    for fwhm in (6.0, 10.0):
        blurred = ndimage.gaussian_filter(obj, fwhm / FWHM / 2.0)
        mask = _image(_sphere((60, 60, 60), (30, 30, 30), 10).astype(np.uint8), spacing)
        assert edge_resolution(_image(blurred, spacing), mask) == pytest.approx(fwhm, rel=0.15)


def test_edge_resolution_is_undefined_for_a_cold_object():
    obj = 5.0 - 4.0 * _sphere((40, 40, 40), (20, 20, 20), 8)
    mask = _image(_sphere((40, 40, 40), (20, 20, 20), 8).astype(np.uint8))
    assert math.isnan(edge_resolution(_image(ndimage.gaussian_filter(obj, 1.5)), mask))


def test_homogeneous_region_avoids_the_lesion_and_the_structured_half():
    rng = np.random.default_rng(6)
    shape = (40, 40, 40)
    values = np.full(shape, 1.0)
    values[:, :, :20] += 0.8 * (_correlated_noise(rng, shape, 16.0, (4.0,) * 3)[:, :, :20])  # structured half (x < 20)
    lesion = _sphere(shape, (20, 20, 30), 3)
    values[lesion] = 8.0
    values = values * (1 + 0.1 * rng.standard_normal(shape))
    mask = _image(lesion.astype(np.uint8))
    region = sitk.GetArrayFromImage(homogeneous_region(_image(values), exclude=mask)).astype(bool)
    assert region.any()
    distance = ndimage.distance_transform_edt(~lesion, sampling=(4.0, 4.0, 4.0))
    assert distance[region].min() >= 15.0
    assert np.argwhere(region)[:, 2].mean() >= 20  # in the uniform half
    again = sitk.GetArrayFromImage(homogeneous_region(_image(values), exclude=mask)).astype(bool)
    assert np.array_equal(region, again)


def test_homogeneous_region_says_when_nothing_fits():
    values = np.full((8, 8, 8), 1.0)
    with pytest.raises(HarmkitError, match="reference-tissue mask"):
        homogeneous_region(_image(values))


# --- image-level separability -------------------------------------------------------------------


def _texture_cohort(kernel_mm: dict, scale: dict, n: int = 6, seed: int = 7) -> Cohort:
    """Two site groups of noisy uniform blocks: noise correlation ``kernel_mm[g]`` and SUV scale ``scale[g]``."""
    rng = np.random.default_rng(seed)
    spacing = (4.0, 4.0, 4.0)
    scans = []
    for group in ("A", "B"):
        for k in range(n):
            level = rng.uniform(0.8, 1.5)
            values = level * scale[group] * (1 + 0.2 * _correlated_noise(rng, (32, 32, 32), kernel_mm[group], spacing))
            scans.append(Scan(f"{group}{k}", group, _image(values, spacing), {}))
    return Cohort(scans)


def test_patch_classifier_separates_sites_that_differ_only_in_noise_texture():
    cohort = _texture_cohort({"A": 5.0, "B": 10.0}, {"A": 1.0, "B": 1.0})
    result = patch_separability(cohort, patch_size=16, patches_per_scan=8, folds=3, jobs=1)
    assert result["accuracy"] >= 0.8
    assert result["chance"] == 0.5


def test_patch_classifier_cannot_use_the_suv_level():
    cohort = _texture_cohort({"A": 8.0, "B": 8.0}, {"A": 1.0, "B": 1.6})
    result = patch_separability(cohort, patch_size=16, patches_per_scan=8, folds=3, jobs=1)
    assert result["accuracy"] < 0.7


def test_patch_classifier_is_deterministic_with_a_seed():
    cohort = _texture_cohort({"A": 5.0, "B": 10.0}, {"A": 1.0, "B": 1.0}, n=3)
    first = patch_separability(cohort, patch_size=16, patches_per_scan=4, folds=3, jobs=1, seed=3)
    second = patch_separability(cohort, patch_size=16, patches_per_scan=4, folds=3, jobs=1, seed=3)
    assert first["accuracy"] == second["accuracy"]
    assert np.array_equal(first["descriptors"], second["descriptors"])


def test_patch_smoothing_of_a_few_patches_equals_smoothing_the_whole_volume_to_the_bit():
    from harmkit.diagnostics.patches import SMOOTHING_SIGMAS, _smoothed_patches

    volume = np.random.default_rng(4).gamma(2.0, 1.0, size=(70, 64, 58))
    whole = [ndimage.gaussian_filter(volume, s, mode="nearest") for s in SMOOTHING_SIGMAS]
    # a corner, an edge, the interior: the padded boxes hold fewer voxels than the volume, so only they are smoothed
    corners = [(0, 0, 0), (60 - 16, 3, 58 - 16), (30, 25, 20)]
    boxes = [tuple(slice(c, c + 16) for c in corner) for corner in corners]
    for box, smoothed in zip(boxes, _smoothed_patches(volume, boxes)):
        for mine, reference in zip(smoothed, whole):
            assert np.array_equal(mine, reference[box])
    many = boxes * 20  # more voxels than the volume: the whole volume is smoothed once
    for box, smoothed in zip(many, _smoothed_patches(volume, many)):
        assert np.array_equal(smoothed[1], whole[1][box])


def test_patch_classifier_reuses_known_descriptors_of_unchanged_scans(monkeypatch):
    import harmkit.diagnostics.patches as patches

    cohort = _texture_cohort({"A": 5.0, "B": 10.0}, {"A": 1.0, "B": 1.0}, n=4)
    before = patch_separability(cohort, patch_size=16, patches_per_scan=4, folds=3, jobs=1, seed=2)
    # B's scans replaced (by noise with A's texture); A's unchanged, so their descriptors are known
    like_a = _texture_cohort({"A": 10.0, "B": 10.0}, {"A": 1.0, "B": 1.0}, n=4, seed=9)
    replaced = {s.subject_id: s for s in like_a if s.group == "B"}
    after_cohort = Cohort([replaced.get(s.subject_id, s) for s in cohort])
    known = {k: before["scan_descriptors"][k] for k, s in enumerate(cohort) if s.subject_id not in replaced}

    fresh = patch_separability(after_cohort, patch_size=16, patches_per_scan=4, folds=3, jobs=1, seed=2)
    described = []
    original = patches.scan_patches

    def counting(item):
        described.append(item[0].subject_id)
        return original(item)

    monkeypatch.setattr(patches, "scan_patches", counting)
    reused = patch_separability(after_cohort, patch_size=16, patches_per_scan=4, folds=3, jobs=1, seed=2, known=known)

    assert sorted(described) == sorted(replaced)  # only the replaced scans were described again

    assert np.array_equal(reused["descriptors"], fresh["descriptors"])
    assert reused["accuracy"] == fresh["accuracy"]
    b = [k for k, s in enumerate(cohort) if s.group == "B"]
    assert not np.array_equal(fresh["scan_descriptors"][b[0]], before["scan_descriptors"][b[0]])


# --- harmkit diagnose on real scans -------------------------------------------------------------


def _first_order(cohort) -> pd.DataFrame:
    """A small feature table (first-order statistics of the lesion) so the test needs no radiomics plugin."""
    rows = {}
    for scan in cohort:
        values = sitk.GetArrayFromImage(scan.load_image())[sitk.GetArrayFromImage(scan.load_mask("lesion")) > 0]
        rows[scan.subject_id] = {
            "mean": values.mean(),
            "sd": values.std(),
            "max": values.max(),
            "p90": np.percentile(values, 90),
        }
    table = pd.DataFrame.from_dict(rows, orient="index")
    table.index.name = "subject_id"
    return table


def test_diagnose_command_on_real_scans_writes_json_table_and_figures(ibsi_manifest, tmp_path, capsys):
    from harmkit.cli import main
    from harmkit.manifest import load_cohort

    features = tmp_path / "lesion.csv"
    table = _first_order(load_cohort(ibsi_manifest))
    table.insert(0, "site", [s.site for s in load_cohort(ibsi_manifest)])
    table.insert(1, "site_group", table["site"])
    table.to_csv(features)
    out = tmp_path / "diag"
    main(
        [
            "diagnose",
            "--cohort",
            str(ibsi_manifest),
            "--voi",
            "lesion",
            "--out",
            str(out),
            "--features",
            str(features),
            "--patch-size",
            "16",
            "--patches-per-scan",
            "4",
            "--folds",
            "2",
            "--jobs",
            "1",
        ]
    )  # returns: no error
    assert "site predictability" in capsys.readouterr().out
    summary = json.loads((out / "diagnostics.json").read_text())
    assert summary["tissue_voi"] == "auto"
    assert set(summary["texture"]["by_group"]) == {"3.906mm", "4.688mm", "5.469mm"}
    assert 0.0 <= summary["site_predictability"]["auc"] <= 1.0
    assert set(summary["patch_separability"]["pairs"]) == {
        "3.906mm vs 4.688mm",
        "3.906mm vs 5.469mm",
        "4.688mm vs 5.469mm",
    }
    texture = pd.read_csv(out / "texture_per_scan.csv")
    assert len(texture) == 6 and (texture["noise_cov"] > 0).all() and (texture["tissue_source"] == "automatic").all()
    assert (out / "texture_by_group.png").stat().st_size > 0 and (out / "patch_descriptors.png").stat().st_size > 0


def test_diagnose_names_a_missing_voi(ibsi_manifest, tmp_path):
    from harmkit.diagnostics import diagnose

    with pytest.raises(HarmkitError, match="mask 'liver'"):
        diagnose(ibsi_manifest, voi="liver", out=tmp_path / "d", progress=False)


# --- the bench evaluator ------------------------------------------------------------------------


def _bench_context(tmp_path, methods, cohort, table):
    from harmkit.bench.config import BenchConfig
    from harmkit.bench.context import BenchContext
    from harmkit.cache import Cache
    from harmkit.execution import get_executor

    config = BenchConfig(methods=",".join(m.label for m in methods), progress=False)
    ctx = BenchContext(
        config,
        cohort,
        ["A", "B"],
        ["A", "B"],
        methods,
        get_executor(1, progress=False),
        Cache(tmp_path / "cache"),
        tmp_path,
        tmp_path / "figures",
    )
    (tmp_path / "figures").mkdir(exist_ok=True)
    for method in methods:
        for ref in ctx.references:
            ctx.features[(method.label, ref)] = {"lesion": table}
    return ctx


def test_site_effects_evaluator_shows_combat_removing_a_feature_site_shift(tmp_path):
    from harmkit.evaluators.site_effects import SiteEffectsEvaluator
    from harmkit.methods import parse_methods

    pytest.importorskip("neuroHarmonize")
    table = _features(np.random.default_rng(8), 40, shift=2.0)
    table.index = [f"s{k:03d}" for k in range(len(table))]
    table.insert(0, "site", table.pop("site_group"))
    table.insert(1, "site_group", table["site"])
    cohort = Cohort(
        [Scan(sid, g, None, {"lesion": None}, site_group=g) for sid, g in zip(table.index, table["site_group"])]
    )
    ctx = _bench_context(tmp_path, parse_methods("combat"), cohort, table)
    result = SiteEffectsEvaluator(image_level=False).evaluate(ctx)
    row = result.summary["by_method"]["combat|A"]
    assert row["site_auc_before_lesion"] > 0.9
    assert abs(row["site_auc_lesion"] - 0.5) < 0.15
    assert result.summary["by_method"]["none|B"]["site_auc_lesion"] == row["site_auc_before_lesion"]


def test_site_effects_evaluator_measures_patch_texture_before_and_after_an_image_stage(
    tmp_path,
):
    from harmkit.evaluators.site_effects import SiteEffectsEvaluator
    from harmkit.methods import Method, Stage

    cohort = _texture_cohort({"A": 10.0, "B": 5.0}, {"A": 1.0, "B": 1.0})
    # an "image harmonizer" whose B scans have A's texture (fresh noise with A's correlation): the oracle of texture
    like_a = _texture_cohort({"A": 10.0, "B": 10.0}, {"A": 1.0, "B": 1.0}, seed=9)
    oracle = Method("oracle", (Stage("oracle", "image-harmonizer"),))
    none = Method("none", ())
    table = pd.DataFrame(
        {
            "site": [s.site for s in cohort],
            "site_group": [s.group for s in cohort],
            "f0": np.arange(len(cohort), dtype=float),
            "f1": np.random.default_rng(0).standard_normal(len(cohort)),
        },
        index=[s.subject_id for s in cohort],
    )
    ctx = _bench_context(tmp_path, [none, oracle], cohort, table)
    ctx.harmonized[("oracle", "A")] = {s.subject_id: s for s in like_a if s.group == "B"}
    ctx.harmonized[("oracle", "B")] = {s.subject_id: s for s in like_a if s.group == "B"}
    evaluator = SiteEffectsEvaluator(patch_size=16, patches_per_scan=8, folds=3)
    result = evaluator.evaluate(ctx)
    row = result.summary["by_method"]["oracle|A"]
    assert row["patch_accuracy_before"] >= 0.8
    assert row["patch_accuracy"] < 0.7
    assert (tmp_path / "figures" / "site_effects.png").is_file()


def test_patch_descriptors_of_a_scan_without_a_body_mask_use_harmkits_body_mask():
    from harmkit.diagnostics.patches import scan_patches
    from harmkit.voi import body_mask

    rng = np.random.default_rng(2)
    values = np.zeros((32, 32, 32))
    values[4:28, 4:28, 4:28] = 1.5 * (1 + 0.2 * _correlated_noise(rng, (24, 24, 24), 8.0, (4.0, 4.0, 4.0)))
    values[10:20, 10:20, 29:31] = 0.5  # an arm or a syringe apart from the body: not body by harmkit's rule
    bare = Scan("s", "A", _image(values), {})
    given = Scan("s", "A", bare.image, {"body": body_mask(bare.image)})
    item = ((4.0, 4.0, 4.0), 16, 6, 1)
    assert np.array_equal(scan_patches((bare, *item)), scan_patches((given, *item)))
