"""Cohort feature extraction: the table, the cache, bad scans, engines, the CLI."""

from __future__ import annotations

import csv
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import SimpleITK as sitk

pytest.importorskip("radiomics")

from harmkit.errors import HarmkitError  # noqa: E402
from harmkit.extraction import extract, read_features, write_features  # noqa: E402
from harmkit.imageio import write_image  # noqa: E402
from harmkit.manifest import load_cohort  # noqa: E402
from harmkit_radiomics import RadiomicsExtractor  # noqa: E402

FAST = {
    "firstorder": ["Mean", "Maximum", "Entropy"],
    "glcm": ["Contrast", "JointEntropy"],
}


def _scan_images(seed, shape=(20, 20, 20), spacing=(2.0, 2.0, 3.0), noise=1.0):
    rng = np.random.default_rng(seed)
    z, y, x = np.indices(shape).astype(float)
    c = (np.array(shape) - 1) / 2
    r = 3.5 + (seed % 3)
    lesion = (z - c[0]) ** 2 + (y - c[1]) ** 2 + (x - c[2]) ** 2 <= r**2
    satellite = (z - 3) ** 2 + (y - 3) ** 2 + (x - 3) ** 2 <= 1.5**2  # a second, smaller component
    array = 1.0 + rng.gamma(4, 0.1 * noise, shape) + (lesion | satellite) * (4 + rng.gamma(4, 0.5 * noise, shape))
    image = sitk.GetImageFromArray(array.astype(np.float32))
    image.SetSpacing(spacing)
    mask = sitk.GetImageFromArray((lesion | satellite).astype(np.uint8))
    mask.CopyInformation(image)
    return image, mask


def make_cohort(root: Path, n_per_site=3, bad: dict | None = None) -> Path:
    """Write a two-site cohort (site B noisier) and return its manifest. ``bad``: {index: kind}."""
    bad = bad or {}
    root.mkdir(parents=True, exist_ok=True)
    rows = []
    for i in range(2 * n_per_site):
        site = "A" if i < n_per_site else "B"
        image, mask = _scan_images(i, noise=1.0 if site == "A" else 2.0)
        kind = bad.get(i)
        if kind == "nan":
            array = sitk.GetArrayFromImage(image)
            array[10, 10, 10] = np.nan
            nan_image = sitk.GetImageFromArray(array)
            nan_image.CopyInformation(image)
            image = nan_image
        elif kind == "empty":
            mask = mask * 0
        elif kind == "mismatch":
            mask.SetOrigin((5.0, 0.0, 0.0))
        elif kind == "tiny":
            tiny = np.zeros(sitk.GetArrayViewFromImage(mask).shape, np.uint8)
            tiny[10, 10, 10:12] = 1
            tiny_mask = sitk.GetImageFromArray(tiny)
            tiny_mask.CopyInformation(image)
            mask = tiny_mask
        suffix = ".nrrd" if kind == "nan" else ".nii.gz"  # ITK's NIfTI reader turns NaN into 0; NRRD keeps it
        write_image(image, root / f"s{i}{suffix}")
        write_image(mask, root / f"s{i}_lesion.nii.gz")
        rows.append(
            {
                "subject_id": f"s{i}",
                "site": site,
                "site_group": f"G{site}",
                "image": f"s{i}{suffix}",
                "mask_lesion": f"s{i}_lesion.nii.gz",
                "age": 50 + i,
            }
        )
    with open(root / "manifest.csv", "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    return root / "manifest.csv"


@pytest.fixture(scope="module")
def cohort_manifest(tmp_path_factory):
    return make_cohort(tmp_path_factory.mktemp("cohort"))


def test_table_has_subjects_sites_then_the_93_features(cohort_manifest, tmp_path):
    table = extract(cohort_manifest, voi="lesion", jobs=1, cache_dir=tmp_path, progress=False)
    assert list(table.index) == [f"s{i}" for i in range(6)] and table.index.name == "subject_id"
    assert list(table.columns[:2]) == ["site", "site_group"]
    assert table["site_group"].tolist() == ["GA"] * 3 + ["GB"] * 3
    assert table.shape[1] == 2 + 93
    classes = table.attrs["feature_classes"]
    assert list(classes) == list(table.columns[2:])
    assert sorted(set(classes.values())) == [
        "firstorder",
        "glcm",
        "gldm",
        "glrlm",
        "glszm",
        "ngtdm",
    ]
    assert table.attrs["settings"]["setting"]["binWidth"] == 0.25
    assert np.isfinite(table.iloc[:, 2:].to_numpy()).all()


def test_rerun_is_served_from_the_cache_with_identical_values(cohort_manifest, tmp_path):
    first = extract(
        cohort_manifest,
        extractor=RadiomicsExtractor(classes=FAST),
        jobs=1,
        cache_dir=tmp_path,
        progress=False,
    )
    again = extract(
        cohort_manifest,
        extractor=RadiomicsExtractor(classes=FAST),
        jobs=1,
        cache_dir=tmp_path,
        progress=False,
    )
    assert first.attrs["cache"]["computed"] == 6 and again.attrs["cache"]["hits"] == 6
    pd.testing.assert_frame_equal(first, again)


def test_changed_setting_misses_the_cache(cohort_manifest, tmp_path):
    extract(
        cohort_manifest,
        extractor=RadiomicsExtractor(classes=FAST),
        jobs=1,
        cache_dir=tmp_path,
        progress=False,
    )
    other = extract(
        cohort_manifest,
        extractor=RadiomicsExtractor(classes=FAST, bin_width=0.5),
        jobs=1,
        cache_dir=tmp_path,
        progress=False,
    )
    assert other.attrs["cache"]["computed"] == 6


def test_largest_component_changes_the_voi(cohort_manifest, tmp_path):
    whole = extract(
        cohort_manifest,
        extractor=RadiomicsExtractor(classes={"shape": ["VoxelVolume"]}),
        jobs=1,
        cache_dir=False,
        progress=False,
    )
    largest = extract(
        cohort_manifest,
        extractor=RadiomicsExtractor(classes={"shape": ["VoxelVolume"]}),
        jobs=1,
        cache_dir=False,
        largest_component=True,
        progress=False,
    )
    assert (largest["shape_VoxelVolume"] < whole["shape_VoxelVolume"]).all()


def test_process_pool_gives_the_same_table_as_in_process(cohort_manifest):
    serial = extract(
        cohort_manifest,
        extractor=RadiomicsExtractor(classes=FAST),
        jobs=1,
        cache_dir=False,
        progress=False,
    )
    pooled = extract(
        cohort_manifest,
        extractor=RadiomicsExtractor(classes=FAST),
        jobs=2,
        cache_dir=False,
        progress=False,
    )
    pd.testing.assert_frame_equal(serial, pooled)


@pytest.mark.slow
def test_dask_local_cluster_gives_the_same_93_feature_table_as_the_pool(
    cohort_manifest,
):
    pooled = extract(cohort_manifest, jobs=2, cache_dir=False, progress=False)
    dask = extract(cohort_manifest, jobs=2, scheduler="local", cache_dir=False, progress=False)
    pd.testing.assert_frame_equal(pooled, dask)


@pytest.fixture(scope="module")
def bad_manifest(tmp_path_factory):
    return make_cohort(
        tmp_path_factory.mktemp("bad"),
        n_per_site=3,
        bad={1: "nan", 2: "empty", 4: "mismatch", 5: "tiny"},
    )


def test_invalid_scans_are_named_before_anything_is_extracted(bad_manifest, tmp_path):
    with pytest.raises(HarmkitError) as info:
        extract(
            bad_manifest,
            extractor=RadiomicsExtractor(classes=FAST),
            jobs=2,
            cache_dir=tmp_path,
            progress=False,
        )
    message = str(info.value)
    assert message.startswith("3 of 6 scan(s) cannot be used, so nothing was extracted")
    lines = message.splitlines()[1:]
    assert len(lines) == 3
    assert "subject 's1'" in lines[0] and "NaN" in lines[0]
    assert "subject 's2'" in lines[1] and "mask 'lesion' is empty" in lines[1]
    assert "subject 's4'" in lines[2] and "not on the image grid" in lines[2]
    assert not list(tmp_path.rglob("entry.json"))  # nothing computed, nothing cached


def test_scans_failing_during_extraction_are_named_and_the_good_ones_are_cached(bad_manifest, tmp_path):
    kept = extract(
        bad_manifest,
        extractor=RadiomicsExtractor(classes=FAST),
        jobs=1,
        cache_dir=tmp_path,
        on_error="keep",
        progress=False,
    )
    assert list(kept.index) == ["s0", "s3"]
    assert sorted(kept.attrs["failed"]) == ["s1", "s2", "s4", "s5"]
    assert "smaller than one resampled voxel" in kept.attrs["failed"]["s5"]
    with pytest.raises(HarmkitError) as info:  # only s5 passes validation and then fails in pyradiomics
        cohort = load_cohort(bad_manifest)
        extract(
            cohort.filter(lambda s: s.subject_id in ("s0", "s3", "s5")),
            extractor=RadiomicsExtractor(classes=FAST),
            jobs=1,
            cache_dir=tmp_path,
            progress=False,
        )
    assert "failed for 1 of 3 scan(s)" in str(info.value) and "cached" in str(info.value)
    again = extract(
        bad_manifest,
        extractor=RadiomicsExtractor(classes=FAST),
        jobs=1,
        cache_dir=tmp_path,
        on_error="keep",
        progress=False,
    )
    assert again.attrs["cache"] == {
        "dir": str(tmp_path.resolve()),
        "hits": 2,
        "computed": 0,
    }


def test_missing_voi_names_the_mask_column(cohort_manifest):
    with pytest.raises(
        HarmkitError,
        match=r"no scan .* has a mask 'liver' \(masks: lesion\).*mask_liver",
    ):
        extract(
            cohort_manifest,
            voi="liver",
            extractor=RadiomicsExtractor(classes=FAST),
            jobs=1,
            cache_dir=False,
            progress=False,
        )


def test_a_scan_without_the_voi_is_named_once(cohort_manifest):
    from dataclasses import replace

    cohort = load_cohort(cohort_manifest)
    cohort.scans[2] = replace(cohort.scans[2], masks={})
    with pytest.raises(HarmkitError) as info:
        extract(
            cohort,
            extractor=RadiomicsExtractor(classes=FAST),
            jobs=1,
            cache_dir=False,
            progress=False,
        )
    line = str(info.value).splitlines()[1]
    assert line.count("subject 's2'") == 1 and "mask_lesion" in line


def test_feature_table_round_trips_through_csv(cohort_manifest, tmp_path):
    table = extract(
        cohort_manifest,
        extractor=RadiomicsExtractor(classes=FAST),
        jobs=1,
        cache_dir=False,
        progress=False,
    )
    write_features(table, tmp_path / "features.csv")
    back = read_features(tmp_path / "features.csv")
    pd.testing.assert_frame_equal(back, table, check_dtype=False)
    assert back.attrs["feature_classes"] == table.attrs["feature_classes"]


def test_public_api_entry_point(cohort_manifest):
    import harmkit as hk

    table = hk.extract(
        load_cohort(cohort_manifest),
        extractor=RadiomicsExtractor(classes=FAST),
        jobs=1,
        cache_dir=False,
        progress=False,
    )
    assert table.shape == (6, 2 + 5)


def _cli(*args, cwd=None):
    return subprocess.run(
        [str(Path(sys.executable).parent / "harmkit"), *args],
        capture_output=True,
        text=True,
        cwd=cwd,
    )


def test_cli_writes_the_table_and_its_settings(cohort_manifest, tmp_path):
    out = tmp_path / "features.csv"
    result = _cli(
        "extract",
        "--cohort",
        str(cohort_manifest),
        "--voi",
        "lesion",
        "--out",
        str(out),
        "--jobs",
        "1",
        "--cache",
        str(tmp_path / "c"),
        "--bin-width",
        "0.5",
    )
    assert result.returncode == 0, result.stderr
    table = read_features(out)
    assert table.shape == (6, 95)
    assert table.attrs["settings"]["setting"]["binWidth"] == 0.5
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temporary files left


@pytest.mark.slow
def test_cli_reports_bad_scans_in_one_message_without_traceback(bad_manifest, tmp_path):
    params = tmp_path / "params.yaml"
    params.write_text(
        "setting:\n  binWidth: 0.25\n  resampledPixelSpacing: [3, 3, 3]\nfeatureClass:\n  firstorder: [Mean]\n"
    )
    out = tmp_path / "features.csv"
    result = _cli(
        "extract",
        "--cohort",
        str(bad_manifest),
        "--out",
        str(out),
        "--jobs",
        "1",
        "--no-cache",
        "--params",
        str(params),
    )
    assert result.returncode == 2
    assert "Traceback" not in result.stderr and "subject 's1'" in result.stderr and "NaN" in result.stderr
    assert not out.exists()
    result = _cli(
        "extract",
        "--cohort",
        str(bad_manifest),
        "--out",
        str(out),
        "--jobs",
        "1",
        "--no-cache",
        "--params",
        str(params),
        "--keep-going",
    )
    assert result.returncode == 1
    assert read_features(out).index.tolist() == ["s0", "s3"]


def test_warm_rerun_reads_no_image_and_starts_no_worker(cohort_manifest, tmp_path, monkeypatch):
    extract(
        cohort_manifest,
        extractor=RadiomicsExtractor(classes=FAST),
        jobs=1,
        cache_dir=tmp_path,
        progress=False,
    )
    import harmkit.execution as execution

    def no_executor(*args, **kwargs):
        raise AssertionError("a warm rerun must not start an executor")

    monkeypatch.setattr(execution, "get_executor", no_executor)
    again = extract(
        cohort_manifest,
        extractor=RadiomicsExtractor(classes=FAST),
        jobs=1,
        cache_dir=tmp_path,
        progress=False,
    )
    assert again.attrs["cache"]["hits"] == 6


def test_a_rewritten_image_is_recomputed(tmp_path):
    manifest = make_cohort(tmp_path / "c", n_per_site=1)
    first = extract(
        manifest,
        extractor=RadiomicsExtractor(classes=FAST),
        jobs=1,
        cache_dir=tmp_path / "cache",
        progress=False,
    )
    image, _ = _scan_images(99)
    write_image(image, tmp_path / "c" / "s0.nii.gz")  # same path, new content
    second = extract(
        manifest,
        extractor=RadiomicsExtractor(classes=FAST),
        jobs=1,
        cache_dir=tmp_path / "cache",
        progress=False,
    )
    assert second.attrs["cache"] == {
        "dir": str((tmp_path / "cache").resolve()),
        "hits": 1,
        "computed": 1,
    }
    assert second.loc["s0", "firstorder_Mean"] != first.loc["s0", "firstorder_Mean"]
    assert second.loc["s1", "firstorder_Mean"] == first.loc["s1", "firstorder_Mean"]


@pytest.mark.slow
def test_simulated_lung_cohort_liver_spheres_and_reference_features(tmp_path):
    """End to end on the simulator's lung preset: spheres placed in the liver, 93 features per scan."""
    simulation = pytest.importorskip("harmkit.simulation")
    from harmkit.voi import add_reference_spheres, voi_cov

    manifest = simulation.simulate(
        "lung",
        out=tmp_path / "sim",
        seed=0,
        subjects_per_site=2,
        counterfactuals=False,
        jobs=2,
        progress=False,
    )
    cohort = add_reference_spheres(load_cohort(manifest), tmp_path / "spheres", organ="liver", name="sphere")
    for scan in cohort:
        sphere = sitk.GetArrayFromImage(scan.load_mask("sphere")).astype(bool)
        liver = sitk.GetArrayFromImage(scan.load_mask("liver")).astype(bool)
        assert sphere.any() and not (sphere & ~liver).any()
        assert 0 < voi_cov(scan.load_image(), scan.load_mask("sphere")) < 1
    table = extract(
        tmp_path / "spheres" / "manifest.csv",
        voi="sphere",
        jobs=2,
        cache_dir=tmp_path / "cache",
        progress=False,
    )
    assert table.shape == (len(cohort), 95)
    assert set(table["site_group"]) == {"TUB", "BUD"}
    assert np.isfinite(table.iloc[:, 2:].to_numpy()).all()


@pytest.mark.slow
def test_cli_places_liver_spheres_and_extracts_from_them(tmp_path):
    from test_voi import liver

    organ = liver()
    image = sitk.Cast(organ, sitk.sitkFloat32) * 2.0 + 0.2
    noise = sitk.GetImageFromArray(
        np.random.default_rng(0).normal(0, 0.2, sitk.GetArrayViewFromImage(organ).shape).astype(np.float32)
    )
    noise.CopyInformation(image)
    write_image(image + noise, tmp_path / "a.nii.gz")
    write_image(organ, tmp_path / "a_liver.nii.gz")
    (tmp_path / "manifest.csv").write_text("subject_id,site,image,mask_liver\na,S1,a.nii.gz,a_liver.nii.gz\n")
    out = tmp_path / "liver.csv"
    result = _cli(
        "extract",
        "--cohort",
        str(tmp_path / "manifest.csv"),
        "--sphere-in",
        "liver",
        "--out",
        str(out),
        "--jobs",
        "1",
        "--no-cache",
    )
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "liver-spheres" / "a_sphere.nii.gz").is_file()
    table = read_features(out)
    assert table.attrs["voi"] == "sphere" and table.shape == (1, 95)
    assert table.loc["a", "firstorder_Mean"] == pytest.approx(2.2, abs=0.1)
    clash = _cli(
        "extract",
        "--cohort",
        str(tmp_path / "manifest.csv"),
        "--sphere-in",
        "liver",
        "--voi",
        "liver",
        "--out",
        str(out),
    )
    assert clash.returncode == 2 and "--sphere-in" in clash.stderr
