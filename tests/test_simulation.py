"""The simulator: determinism, physics of the scanner models, anatomy of the masks, outcome model."""

from __future__ import annotations

import hashlib
import math
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

import harmkit as hk
from harmkit.errors import HarmkitError
from harmkit.simulation import get_preset, plan_cohort
from harmkit.simulation.cohort import _stream
from harmkit.simulation.grid import Grid, gaussian_blur, resample_linear
from harmkit.simulation.outcome import calibrate_intercept, expected_prevalence
from harmkit.simulation.phantom import build_phantom, fine_grid
from harmkit.simulation.scanner import (
    blur_truth,
    point_response_fwhm,
    render,
    resample_labels,
    site_grid,
    sphere_mask,
)


def _digest(root: Path) -> dict[str, str]:
    return {
        p.relative_to(root).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


def _array(path) -> np.ndarray:
    return sitk.GetArrayFromImage(sitk.ReadImage(str(path)))


@pytest.fixture(scope="module")
def small_headneck(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("sim") / "headneck"
    return hk.simulate("headneck", out=out, seed=3, subjects_per_site=2, jobs=1, progress=False)


def _phantom(preset_name: str, index: int = 0, seed: int = 0):
    preset = get_preset(preset_name)
    design = plan_cohort(preset, seed, subjects_per_site=1)[index]
    fine = fine_grid(preset, "quick")
    return (
        preset,
        design,
        fine,
        build_phantom(design, preset, fine, _stream(seed, 1, design["index"], 1)),
    )


# --- files and determinism ---------------------------------------------------------------------


def test_output_is_an_ordinary_cohort_with_every_subject_through_every_site(
    small_headneck,
):
    cohort = hk.load_cohort(small_headneck)
    assert cohort.sites == ["CHUM", "HGJ", "HMR"]
    assert {s.site: s.group for s in cohort} == {
        "CHUM": "CHUM-HMR",
        "HGJ": "HGJ",
        "HMR": "CHUM-HMR",
    }
    assert cohort.mask_names == ["body", "lesion", "reference"]
    assert all(s.outcome in (0, 1) and s.covariates["sex"] in ("F", "M") for s in cohort)
    counterfactual = hk.load_cohort(small_headneck.parent / "counterfactuals.csv")
    assert len(counterfactual) == len(cohort) * 3
    pairs = {(s.covariates["source_subject"], s.site) for s in counterfactual}
    assert pairs == {(s.subject_id, site) for s in cohort for site in cohort.sites}
    assert all(s.subject_id == f"{s.covariates['source_subject']}@{s.site}" for s in counterfactual)
    params = __import__("json").loads((small_headneck.parent / "simulation.json").read_text())
    assert (
        params["seed"] == 3
        and params["counterfactual_manifest"] == "counterfactuals.csv"
        and params["truth_table"] == "truth.csv"
    )
    import pandas as pd

    truth = pd.read_csv(small_headneck.parent / "truth.csv")
    assert list(truth["subject_id"]) == cohort.subject_ids
    assert all((small_headneck.parent / p).is_file() for p in truth["truth_image"])


def test_same_seed_gives_byte_identical_files_whatever_the_number_of_workers(small_headneck, tmp_path):
    again = hk.simulate(
        "headneck",
        out=tmp_path / "again",
        seed=3,
        subjects_per_site=2,
        jobs=2,
        progress=False,
    )
    assert _digest(again.parent) == _digest(small_headneck.parent)


def test_different_seeds_give_different_images(small_headneck, tmp_path):
    other = hk.simulate(
        "headneck",
        out=tmp_path / "other",
        seed=4,
        subjects_per_site=2,
        jobs=1,
        counterfactuals=False,
        progress=False,
    )
    first, second = _digest(small_headneck.parent), _digest(other.parent)
    scans = [k for k in second if k.endswith("pet.nii.gz")]
    assert scans and all(first[k] != second[k] for k in scans)


def test_refuses_a_non_empty_output_folder_unless_forced(tmp_path):
    out = tmp_path / "busy"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    with pytest.raises(HarmkitError, match="not empty"):
        hk.simulate(
            "headneck",
            out=out,
            subjects_per_site=1,
            counterfactuals=False,
            jobs=1,
            progress=False,
        )
    assert (out / "keep.txt").exists()
    hk.simulate(
        "headneck",
        out=out,
        subjects_per_site=1,
        counterfactuals=False,
        jobs=1,
        progress=False,
        force=True,
    )
    assert not (out / "keep.txt").exists() and (out / "manifest.csv").exists()


def test_a_failed_run_leaves_no_output_folder(tmp_path, monkeypatch):
    import harmkit.simulation.cohort as cohort_module

    def broken(task):
        raise RuntimeError("disk full")

    monkeypatch.setattr(cohort_module, "simulate_subject", broken)
    with pytest.raises(HarmkitError, match="disk full"):
        hk.simulate(
            "headneck",
            out=tmp_path / "never",
            subjects_per_site=1,
            jobs=1,
            progress=False,
        )
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(
    "bad, message",
    [
        ({"preset": "brain"}, "unknown simulation preset 'brain'"),
        ({"size": "huge"}, "unknown size 'huge'"),
        ({"seed": -1}, "seed must be"),
        ({"subjects_per_site": 0}, "subjects per site"),
        ({"out": None}, "output folder"),
    ],
)
def test_bad_arguments_name_the_option(tmp_path, bad, message):
    arguments = {"preset": "headneck", "out": tmp_path / "x", **bad}
    with pytest.raises(HarmkitError, match=message):
        hk.simulate(**arguments)
    assert not (tmp_path / "x").exists()


def test_full_size_uses_the_papers_matrices_and_quick_keeps_the_voxel_size():
    preset = get_preset("lung")
    for site in preset.sites:
        for protocol in site.protocols:
            full, quick = (
                site_grid(protocol, preset, "full"),
                site_grid(protocol, preset, "quick"),
            )
            assert full.size_xyz[:2] == protocol.matrix
            assert full.spacing == quick.spacing == protocol.voxel_mm
            assert quick.size_xyz[0] * quick.spacing[0] >= preset.fov_mm[0]
    full_fine = fine_grid(preset, "full")
    assert full_fine.size_xyz[0] * full_fine.spacing[0] >= preset.body_extent_mm[0]


# --- physics --------------------------------------------------------------------------------


def test_sharper_site_has_narrower_measured_point_response():
    headneck, lung = get_preset("headneck"), get_preset("lung")
    chum = point_response_fwhm(headneck.site("CHUM").scanner, (3.52, 3.52, 3.27), 2.0)
    hgj = point_response_fwhm(headneck.site("HGJ").scanner, (3.52, 3.52, 3.27), 2.0)
    tub = point_response_fwhm(lung.site("TUB").scanner, (2.04, 2.04, 3.0), 2.0)
    vphd = point_response_fwhm(lung.site("BUD-VPHD").scanner, (4.07, 4.07, 3.0), 2.0)
    assert chum[0] < hgj[0] and chum[2] < hgj[2]
    assert tub[0] < vphd[0]


def test_measured_point_response_matches_the_scanner_parameters():
    scanner = get_preset("headneck").site("CHUM").scanner
    voxel = (3.52, 3.52, 3.27)
    measured = point_response_fwhm(scanner, voxel, 1.0)
    for axis, d in enumerate(voxel):
        nominal = math.sqrt(scanner.psf_fwhm_mm**2 + scanner.postfilter_fwhm_mm**2 + 2.3548**2 * (d * d - 1.0) / 12)
        assert measured[axis] == pytest.approx(nominal, rel=0.1)


def test_noise_standard_deviation_grows_with_activity():
    preset, design, fine, phantom = _phantom("headneck")
    site = preset.site("HGJ")
    grid = site_grid(site.protocols[0], preset, "quick")
    blurred = blur_truth(phantom.suv, fine, grid, site.scanner)
    clean = render(blurred, fine, grid, site.scanner, rng=None)
    noisy = render(blurred, fine, grid, site.scanner, rng=np.random.default_rng(1))
    labels = (
        resample_linear(
            (phantom.labels == phantom.label_codes["brain_white"]).astype(np.float32),
            fine,
            grid,
        )
        > 0.99
    )
    muscle = (
        resample_linear(
            (phantom.labels == phantom.label_codes["soft_tissue"]).astype(np.float32),
            fine,
            grid,
        )
        > 0.99
    )
    residual = noisy - clean
    high, low = residual[labels].std(), residual[muscle].std()
    mean_high, mean_low = clean[labels].mean(), clean[muscle].mean()
    assert mean_high > 3 * mean_low
    assert high > 1.5 * low
    assert high / low == pytest.approx(math.sqrt(mean_high / mean_low), rel=0.3)


def test_noise_cov_at_suv1_is_what_the_images_show():
    scanner = get_preset("lung").site("TUB").scanner
    grid = Grid.centered((64, 64, 64), (2.04, 2.04, 3.0))
    fine = Grid.centered((16, 16, 16), (12.0, 12.0, 12.0))
    flat = np.ones(fine.shape, dtype=np.float32)
    image = render(flat, fine, grid, scanner, rng=np.random.default_rng(0))[16:48, 16:48, 16:48]
    assert image.std() / image.mean() == pytest.approx(scanner.noise_cov_at_suv1, rel=0.1)


def test_calibration_bias_scales_the_noise_free_image():
    preset, design, fine, phantom = _phantom("headneck")
    site = preset.site("HGJ")
    grid = site_grid(site.protocols[0], preset, "quick")
    blurred = blur_truth(phantom.suv, fine, grid, site.scanner)
    biased = render(blurred, fine, grid, site.scanner)
    unbiased = render(
        blurred,
        fine,
        grid,
        site.scanner.__class__(**{**site.scanner.__dict__, "calibration_bias": 0.0}),
    )
    inside = unbiased > 0.5
    assert np.allclose(biased[inside] / unbiased[inside], 1 + site.scanner.calibration_bias, rtol=1e-5)


@pytest.mark.parametrize("preset_name", ["headneck", "lung"])
def test_masks_align_with_anatomy_on_every_site_grid(preset_name):
    preset, design, fine, phantom = _phantom(preset_name)
    lesion_centre = np.array(
        [(phantom.lesion * c).sum() / phantom.lesion.sum() for c in np.broadcast_arrays(*fine.mesh())]
    )
    for site in preset.sites:
        for protocol in site.protocols:
            grid = site_grid(protocol, preset, "quick")
            image = render(
                blur_truth(phantom.suv, fine, grid, site.scanner),
                fine,
                grid,
                site.scanner,
            )
            labels = resample_labels(phantom.labels, fine, grid)
            body, lesion = labels > 0, labels == phantom.label_codes["lesion"]
            reference = sphere_mask(grid, phantom.reference_center, phantom.reference_radius).astype(bool)
            where = f"{site.name} {protocol.label}"
            centre = np.array([(lesion * c).sum() / lesion.sum() for c in np.broadcast_arrays(*grid.mesh())])
            assert np.linalg.norm(centre - lesion_centre) < max(grid.spacing), where
            from scipy import ndimage

            shell = ndimage.binary_dilation(lesion, iterations=2) & ~lesion & body
            assert image[lesion].mean() > 1.5 * np.median(image[shell]), where
            assert reference.any() and not (reference & ~body).any(), where
            assert image[~body].mean() < 0.1 * image[body].mean(), where
            if preset_name == "lung":
                liver = labels == phantom.label_codes["liver"]
                assert not (reference & ~liver).any(), where
                assert image[reference].mean() == pytest.approx(
                    design["uptake"]["liver"] * (1 + site.scanner.calibration_bias),
                    rel=0.05,
                ), where


def test_counterfactual_at_own_site_equals_the_scan_without_noise(tmp_path):
    manifest = hk.simulate(
        "headneck",
        out=tmp_path / "clean",
        seed=1,
        subjects_per_site=1,
        noise=False,
        jobs=1,
        progress=False,
    )
    cohort = hk.load_cohort(manifest)
    counterfactual = hk.load_cohort(manifest.parent / "counterfactuals.csv")
    for scan in cohort:
        twin = counterfactual.get(f"{scan.subject_id}@{scan.site}")
        assert np.array_equal(_array(twin.image), _array(scan.image))


def test_counterfactual_at_own_site_is_an_independent_noise_realisation(small_headneck):
    cohort = hk.load_cohort(small_headneck)
    counterfactual = hk.load_cohort(small_headneck.parent / "counterfactuals.csv")
    scan = cohort[0]
    twin = counterfactual.get(f"{scan.subject_id}@{scan.site}")
    a, b = _array(scan.image), _array(twin.image)
    body = _array(scan.masks["body"]).astype(bool)
    assert not np.array_equal(a, b)
    assert abs(a[body].mean() - b[body].mean()) < 0.02 * a[body].mean()


def test_lesion_biology_shows_in_the_truth_image():
    preset, design, fine, phantom = _phantom("headneck")
    volume = phantom.lesion.sum() * fine.voxel_volume_ml
    assert volume == pytest.approx(design["lesion_volume_nominal_ml"], rel=0.35)
    viable = phantom.lesion & (phantom.suv > design["lesion_suv"] * design["necrotic_suv_ratio"] * 1.01)
    values = phantom.suv[viable]
    assert np.median(values) == pytest.approx(design["lesion_suv"], rel=0.25)
    assert values.std() / values.mean() == pytest.approx(design["heterogeneity"], rel=0.5)


def test_headneck_site_groups_differ_in_reference_noise_like_real_protocols():
    """HGJ's reference-VOI COV is at least 1.76x CHUM's, the largest ratio between the real protocols.

    See docs/real-data.md.
    """
    from harmkit.diagnostics import noise_statistics

    preset = get_preset("headneck")
    fine = fine_grid(preset, "quick")
    ratios = []
    for design in plan_cohort(preset, 0, subjects_per_site=1):
        phantom = build_phantom(design, preset, fine, _stream(0, 1, design["index"], 1))
        cov = {}
        for name in ("CHUM", "HGJ"):
            site = preset.site(name)
            grid = site_grid(max(site.protocols, key=lambda p: p.count), preset, "quick")
            blurred = blur_truth(phantom.suv, fine, grid, site.scanner)
            reference = grid.to_image(sphere_mask(grid, phantom.reference_center, phantom.reference_radius))
            images = [
                grid.to_image(render(blurred, fine, grid, site.scanner, np.random.default_rng(k))) for k in range(3)
            ]
            cov[name] = np.mean([noise_statistics(image, reference)["cov"] for image in images])
        ratios.append(cov["HGJ"] / cov["CHUM"])
    assert np.mean(ratios) >= 1.76


def test_lung_noise_texture_is_coarser_at_bud_than_at_tub():
    from harmkit.diagnostics import noise_statistics

    preset, design, fine, phantom = _phantom("lung")
    fwhm = {}
    for name in ("TUB", "BUD-VPHD", "BUD-SharpIR"):
        site = preset.site(name)
        grid = site_grid(site.protocols[0], preset, "quick")
        image = grid.to_image(
            render(
                blur_truth(phantom.suv, fine, grid, site.scanner),
                fine,
                grid,
                site.scanner,
                np.random.default_rng(0),
            )
        )
        reference = grid.to_image(sphere_mask(grid, phantom.reference_center, phantom.reference_radius))
        fwhm[name] = noise_statistics(image, reference)["corr_fwhm_inplane_mm"]
    assert fwhm["BUD-VPHD"] > 1.4 * fwhm["TUB"] and fwhm["BUD-SharpIR"] > 1.4 * fwhm["TUB"]


# --- outcome model ----------------------------------------------------------------------------


def test_calibrated_intercept_gives_the_site_prevalence():
    coef = get_preset("headneck").outcome_coef
    for prevalence in (3 / 65, 16 / 91, 11 / 41):
        assert expected_prevalence(calibrate_intercept(prevalence, coef), coef) == pytest.approx(prevalence, abs=1e-9)


def test_outcome_counts_per_site_follow_the_preset_in_expectation():
    preset = get_preset("headneck")
    seeds = range(40)
    expected = {s.name: [] for s in preset.sites}
    observed = {s.name: 0 for s in preset.sites}
    for seed in seeds:
        for design in plan_cohort(preset, seed):
            expected[design["site"]].append(design["outcome_probability"])
            observed[design["site"]] += design["outcome"]
    for site in preset.sites:
        p = np.array(expected[site.name])
        # mean probability is an average of len(p) iid draws: 5 standard errors
        assert p.mean() == pytest.approx(site.prevalence, abs=5 * p.std() / math.sqrt(len(p)))
        # observed events: Poisson-binomial given the probabilities, 5 standard deviations
        assert abs(observed[site.name] - p.sum()) < 5 * math.sqrt((p * (1 - p)).sum())
        assert p.sum() / len(seeds) == pytest.approx(site.outcome_count, rel=0.2)


def test_outcome_probability_rises_with_the_latent_biology():
    designs = plan_cohort("headneck", 0)
    z = np.array([d["z_heterogeneity"] for d in designs])
    p = np.array([d["outcome_probability"] for d in designs])
    assert np.corrcoef(z, np.log(p / (1 - p)))[0, 1] > 0.5


def test_full_counts_reproduce_table1_grid_mix():
    designs = plan_cohort("headneck", 0)
    preset = get_preset("headneck")
    for site in preset.sites:
        mine = [d for d in designs if d["site"] == site.name]
        assert len(mine) == site.n_subjects
        counts = np.bincount([d["protocol"][site.name] for d in mine], minlength=len(site.protocols))
        assert list(counts) == [p.count for p in site.protocols]


# --- helpers ----------------------------------------------------------------------------------


def test_resampling_keeps_a_linear_ramp_and_blur_keeps_the_mean():
    src = Grid.centered((30, 20, 10), (2.0, 2.0, 2.0))
    dst = Grid.centered((11, 7, 5), (3.5, 3.5, 3.0))
    X, Y, Z = src.mesh()
    ramp = np.broadcast_to(1 + 0.1 * X + 0.05 * Y - 0.02 * Z, src.shape).astype(np.float32)
    Xd, Yd, Zd = dst.mesh()
    assert np.allclose(resample_linear(ramp, src, dst), 1 + 0.1 * Xd + 0.05 * Yd - 0.02 * Zd, atol=1e-4)
    noise = np.random.default_rng(0).random((20, 20, 20)).astype(np.float32)
    assert gaussian_blur(noise, (2, 2, 2), mode="wrap").mean() == pytest.approx(noise.mean(), rel=1e-4)


def test_suv_volumes_read_back_as_float_suv_within_the_storage_quantum(tmp_path):
    from harmkit.imageio import read_image
    from harmkit.simulation.writer import SUV_QUANTUM, quantize_suv, write_volume

    grid = Grid.centered((7, 6, 5), (2.0, 2.5, 3.0))
    values = np.random.default_rng(0).gamma(2.0, 2.0, grid.shape).astype(np.float32)
    path = write_volume(values, grid, tmp_path / "pet.nii.gz", suv=True)
    image = read_image(path)
    back = sitk.GetArrayFromImage(image)
    assert image.GetSpacing() == grid.spacing and image.GetOrigin() == pytest.approx(grid.origin)
    assert np.abs(back - values).max() <= SUV_QUANTUM / 2 + 1e-6
    assert np.array_equal(back, quantize_suv(values))
    header = path.read_bytes()[:10]
    assert header[:2] == b"\x1f\x8b" and header[4:8] == b"\x00\x00\x00\x00"  # gzip without a timestamp


def test_latent_biology_predicts_the_outcome():
    from sklearn.metrics import roc_auc_score

    designs = [d for seed in range(5) for d in plan_cohort("headneck", seed)]
    outcome = [d["outcome"] for d in designs]
    assert roc_auc_score(outcome, [d["linear_predictor"] for d in designs]) > 0.7


def test_sites_sharing_a_scanner_model_render_a_subject_identically_on_the_same_grid():
    preset, design, fine, phantom = _phantom("headneck")
    chum, hmr = preset.site("CHUM"), preset.site("HMR")
    assert chum.scanner == hmr.scanner
    grid = site_grid(hmr.protocols[0], preset, "quick")
    images = [render(blur_truth(phantom.suv, fine, grid, s.scanner), fine, grid, s.scanner) for s in (chum, hmr)]
    assert np.array_equal(images[0], images[1])
