"""validate_cohort / validate_manifest: one actionable message per problem, naming row and subject; nothing written."""

from __future__ import annotations

import csv
import os
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk
from conftest import edit_manifest, snapshot, write_scan

import harmkit as hk
from harmkit.data import Cohort, Scan
from harmkit.errors import HarmkitError, ManifestError
from harmkit.validation import validate_cohort, validate_manifest


def only_error(report):
    assert len(report.errors) == 1, [str(p) for p in report.problems]
    return str(report.errors[0])


def run(manifest: Path, **kwargs):
    """Validate and check that nothing in the manifest's folder was written or changed."""
    before = snapshot(manifest.parent)
    report = validate_manifest(manifest, **kwargs)
    assert snapshot(manifest.parent) == before
    return report


def test_clean_cohort_has_no_problems_and_a_per_site_summary(tiny_cohort):
    report = run(tiny_cohort, require_outcome=True, masks=["lesion"])
    assert report.ok and report.problems == []
    table = report.summary_table()
    assert list(table["site"]) == ["A", "B"]
    assert list(table["scans"]) == [3, 3]
    assert list(table["matrix"]) == ["8×8×6", "8×8×6"]
    assert list(table["voxel_mm"]) == ["2.00×2.00×3.00", "3.00×3.00×3.00"]
    assert list(table["outcome_1"]) == [1, 1] and list(table["outcome_0"]) == [2, 2]


def test_missing_image_file_names_row_subject_and_path(tiny_cohort):
    edit_manifest(tiny_cohort, 2, image="images/nowhere.nii.gz")
    message = only_error(run(tiny_cohort))
    assert message.startswith("row 2 (subject A1, site A)")
    assert "image file not found" in message and "nowhere.nii.gz" in message


def test_missing_mask_file_is_reported(tiny_cohort):
    edit_manifest(tiny_cohort, 4, mask_lesion="images/gone.nii.gz")
    message = only_error(run(tiny_cohort))
    assert message.startswith("row 4 (subject B0, site B)") and "mask 'lesion' file not found" in message


def test_unreadable_image_is_reported(tiny_cohort):
    (tiny_cohort.parent / "images" / "A0_pet.nii.gz").write_bytes(b"this is not an image")
    message = only_error(run(tiny_cohort))
    assert message.startswith("row 1 (subject A0, site A)") and "cannot be read" in message


def test_mask_on_another_grid_is_a_geometry_mismatch(tiny_cohort):
    write_scan(
        tiny_cohort.parent / "images",
        "B2_lesion.nii.gz",
        np.ones((6, 8, 8), np.uint8),
        spacing=(2.0, 2.0, 3.0),
    )
    message = only_error(run(tiny_cohort))
    assert message.startswith("row 6 (subject B2, site B)")
    assert (
        "mask 'lesion' is not on the image grid" in message
        and "spacing 2.00×2.00×3.00 mm vs image 3.00×3.00×3.00 mm" in message
    )


def test_mask_of_another_size_is_a_geometry_mismatch(tiny_cohort):
    write_scan(tiny_cohort.parent / "images", "A1_lesion.nii.gz", np.ones((5, 8, 8), np.uint8))
    message = only_error(run(tiny_cohort))
    assert message.startswith("row 2 (subject A1, site A)") and "size 8×8×5 vs image 8×8×6" in message


def test_empty_mask_is_reported(tiny_cohort):
    write_scan(tiny_cohort.parent / "images", "A2_lesion.nii.gz", np.zeros((6, 8, 8), np.uint8))
    message = only_error(run(tiny_cohort))
    assert message.startswith("row 3 (subject A2, site A)") and "mask 'lesion' is empty" in message


@pytest.mark.parametrize("bad, words", [(np.nan, "1 NaN, 0 infinite"), (np.inf, "0 NaN, 1 infinite")])
def test_non_finite_voxels_are_reported(tiny_cohort, bad, words):
    values = np.ones((6, 8, 8), np.float32)
    values[0, 0, 0] = bad
    # NRRD: SimpleITK's NIfTI reader (nifticlib) turns non-finite floats into 0 (see test_nifti_non_finite...)
    write_scan(tiny_cohort.parent / "images", "B1_pet.nrrd", values, spacing=(3.0, 3.0, 3.0))
    edit_manifest(tiny_cohort, 5, image="images/B1_pet.nrrd")
    message = only_error(run(tiny_cohort))
    assert message.startswith("row 5 (subject B1, site B)") and "1 non-finite voxel(s)" in message and words in message


@pytest.mark.parametrize("suffix", [".nii.gz", ".nii"])
def test_non_finite_voxels_in_nifti_are_found_although_simpleitk_reads_them_as_zero(tiny_cohort, suffix):
    values = np.ones((6, 8, 8), np.float32)
    values[1, 2, 3] = np.nan
    values[2, 2, 3] = -np.inf
    write_scan(tiny_cohort.parent / "images", f"A0_nan{suffix}", values)
    edit_manifest(tiny_cohort, 1, image=f"images/A0_nan{suffix}")
    assert not np.isnan(
        sitk.GetArrayFromImage(sitk.ReadImage(str(tiny_cohort.parent / "images" / f"A0_nan{suffix}")))
    ).any()
    message = only_error(run(tiny_cohort))
    assert message.startswith("row 1 (subject A0, site A)") and "2 non-finite voxel(s) (1 NaN, 1 infinite)" in message


def test_headers_only_skips_voxel_checks(tiny_cohort):
    write_scan(tiny_cohort.parent / "images", "A2_lesion.nii.gz", np.zeros((6, 8, 8), np.uint8))
    assert run(tiny_cohort, check_voxels=False).ok


def test_duplicate_subject_names_both_rows(tiny_cohort):
    edit_manifest(tiny_cohort, 5, subject_id="B0")
    message = only_error(run(tiny_cohort))
    assert message.startswith("row 5 (subject B0, site B)") and "duplicate subject_id, first used in row 4" in message


def test_non_binary_outcome_is_reported(tiny_cohort):
    edit_manifest(tiny_cohort, 3, outcome="2")
    message = only_error(run(tiny_cohort))
    assert message.startswith("row 3 (subject A2, site A)") and "outcome '2' is not binary" in message


def test_missing_outcome_is_an_error_only_when_required(tiny_cohort):
    edit_manifest(tiny_cohort, 1, outcome="")
    assert run(tiny_cohort).ok
    message = only_error(run(tiny_cohort, require_outcome=True))
    assert message.startswith("row 1 (subject A0, site A)") and "no outcome" in message


def test_single_outcome_class_is_an_error_when_outcome_required(tiny_cohort):
    for row in range(1, 7):
        edit_manifest(tiny_cohort, row, outcome="0")
    message = only_error(run(tiny_cohort, require_outcome=True))
    assert "both classes" in message


def test_small_site_names_the_site_and_its_count(tiny_cohort):
    report = run(tiny_cohort, min_scans_per_site=4)
    assert sorted(str(p).split(";")[0] for p in report.errors) == [
        "site group 'A' has 3 scan(s) but at least 4 are needed",
        "site group 'B' has 3 scan(s) but at least 4 are needed",
    ]
    assert run(tiny_cohort, min_scans_per_site=3).ok


def test_site_groups_pool_sites_for_the_scan_count(tiny_cohort):
    cohort = hk.load_cohort(tiny_cohort).regroup({"A": "AB", "B": "AB"})
    assert validate_cohort(cohort, min_scans_per_site=6).ok
    report = validate_cohort(cohort, min_scans_per_site=7)
    assert "site group 'AB' (sites A, B) has 6 scan(s)" in only_error(report)


def test_required_mask_missing_is_reported(tiny_cohort):
    report = run(tiny_cohort, masks=["liver"])
    assert len(report.errors) == 6  # every row lacks it: one error per row
    message = str(report.errors[0])
    assert message.startswith("row 1 (subject A0, site A): no mask 'liver'") and "mask_liver" in message


def test_all_problems_are_reported_at_once_in_row_order(tiny_cohort):
    edit_manifest(tiny_cohort, 2, image="images/nowhere.nii.gz")
    edit_manifest(tiny_cohort, 5, subject_id="B0", outcome="yes")
    write_scan(tiny_cohort.parent / "images", "A2_lesion.nii.gz", np.zeros((6, 8, 8), np.uint8))
    report = run(tiny_cohort)
    rows = [p.row for p in report.errors]
    assert rows == sorted(rows) and set(rows) == {2, 3, 5}
    assert len(report.errors) == 4  # missing file, empty mask, duplicate, outcome
    with pytest.raises(ManifestError) as info:
        report.raise_for_errors()
    assert "4 problem(s)" in str(info.value)


def test_bq_per_ml_values_are_an_error_with_a_units_hint(tiny_cohort):
    values = np.random.default_rng(0).gamma(2.0, 6000.0, size=(6, 8, 8)).astype(np.float32)
    write_scan(tiny_cohort.parent / "images", "A0_pet.nii.gz", values)
    message = only_error(run(tiny_cohort))
    assert message.startswith("row 1 (subject A0, site A)") and "implausible for SUV" in message
    assert "it looks like Bq/mL: convert it to SUVbw" in message


def test_in_memory_cohort_is_validated_without_a_manifest():
    image = sitk.GetImageFromArray(np.ones((4, 4, 4), np.float32))
    empty = sitk.GetImageFromArray(np.zeros((4, 4, 4), np.uint8))
    scans = [
        Scan("s1", "X", image, {"lesion": empty}, outcome=3),
        Scan("s2", "X", image, {"lesion": sitk.Cast(image, sitk.sitkUInt8)}),
    ]
    report = validate_cohort(Cohort(scans))
    messages = sorted(str(p) for p in report.errors)
    assert messages == [
        "(subject s1, site X): mask 'lesion' is empty (no non-zero voxel) in memory; fix the segmentation or remove "
        "the row",
        "(subject s1, site X): outcome 3 is not binary; use 0 or 1 (None when unknown)",
    ]


def test_manifest_without_required_columns_raises(tmp_path):
    manifest = tmp_path / "m.csv"
    manifest.write_text("subject,site,image\nA,B,c.nii.gz\n")
    with pytest.raises(HarmkitError, match="missing column\\(s\\) subject_id"):
        validate_manifest(manifest)


def test_min_scans_per_site_must_be_positive(tiny_cohort):
    with pytest.raises(HarmkitError, match="min_scans_per_site"):
        validate_manifest(tiny_cohort, min_scans_per_site=0)


def test_load_cohort_still_refuses_structural_problems(tiny_cohort):
    edit_manifest(tiny_cohort, 5, subject_id="B0")
    with pytest.raises(ManifestError, match="row 5 \\(subject B0, site B\\): duplicate subject_id"):
        hk.load_cohort(tiny_cohort)


def build_ibsi_manifest(folder: Path, manifest: Path) -> Path:
    """The manifest builder shown in docs/real-data.md: site = in-plane voxel size of each scan."""
    rows = []
    for scan_dir in sorted(p for p in folder.iterdir() if (p / "PET_image.nii.gz").exists()):
        reader = sitk.ImageFileReader()
        reader.SetFileName(str(scan_dir / "PET_image.nii.gz"))
        reader.ReadImageInformation()
        site = f"{reader.GetSpacing()[0]:.3f}mm"
        rows.append(
            [
                scan_dir.name,
                site,
                os.path.relpath(scan_dir / "PET_image.nii.gz", manifest.parent),
                os.path.relpath(scan_dir / "PET_mask.nii.gz", manifest.parent),
            ]
        )
    with manifest.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["subject_id", "site", "image", "mask_lesion"])
        writer.writerows(rows)
    return manifest


def test_real_ibsi_scans_group_into_three_protocols(ibsi_manifest, tmp_path):
    manifest = build_ibsi_manifest(ibsi_manifest.parent, tmp_path / "manifest.csv")
    report = validate_manifest(manifest, masks=["lesion"])
    assert report.ok, str(report)
    table = report.summary_table().set_index("site")
    assert list(table.index) == [
        "5.469mm",
        "4.688mm",
        "3.906mm",
    ]  # order of first appearance (STS_002 first)
    assert list(table["scans"]) == [2, 2, 2]
    assert table.loc["3.906mm", "voxel_mm"] == "3.91×3.91×3.27"
    assert table.loc["4.688mm", "matrix"] == "28–30×28–29×47–51"
    # the committed manifest says the same
    assert validate_manifest(ibsi_manifest, masks=["lesion"]).summary_table()["scans"].sum() == 6


def test_parallel_validation_gives_the_same_report(tiny_cohort):
    edit_manifest(tiny_cohort, 2, image="images/nowhere.nii.gz")
    write_scan(
        tiny_cohort.parent / "images",
        "B0_lesion.nii.gz",
        np.zeros((6, 8, 8), np.uint8),
        spacing=(3.0, 3.0, 3.0),
    )
    serial = run(tiny_cohort)
    parallel = run(tiny_cohort, jobs=2)
    assert [str(p) for p in parallel.problems] == [str(p) for p in serial.problems] and len(serial.errors) == 2
    assert parallel.summary_table().equals(serial.summary_table())


def test_a_few_noisy_negative_voxels_are_accepted_but_a_negative_image_is_not(
    tiny_cohort,
):
    values = np.random.default_rng(1).gamma(2.0, 0.5, size=(30, 30, 30)).astype(np.float32)
    values[0, 0, :10] = -0.8  # 10 of 27 000 voxels: noise, not a units problem
    write_scan(tiny_cohort.parent / "images", "A0_pet.nii.gz", values)
    write_scan(tiny_cohort.parent / "images", "A0_lesion.nii.gz", (values > 1).astype(np.uint8))
    assert run(tiny_cohort).ok
    write_scan(tiny_cohort.parent / "images", "A0_pet.nii.gz", values - 2.0)
    message = only_error(run(tiny_cohort))
    assert message.startswith("row 1 (subject A0, site A)") and "SUV cannot be negative" in message


# -- the acquisition table (Table 1) ---------------------------------------------------------------------------------


def with_protocols(manifest: Path) -> Path:
    """Add manufacturer/model/reconstruction/kernel columns: site A has two reconstructions, site B one scanner."""
    with manifest.open(newline="") as handle:
        rows = list(csv.DictReader(handle))
    protocols = {
        "A": ("GE", "Discovery ST", "OSEM", ""),
        "B": ("SIEMENS", "Biograph mCT", "OSEM3D 2i21s", "G2"),
    }
    for number, row in enumerate(rows, start=1):
        manufacturer, model, reconstruction, kernel = protocols[row["site"]]
        if number == 3:
            reconstruction = "VPHD"
        row.update(
            manufacturer=manufacturer,
            model=model,
            reconstruction=reconstruction,
            kernel=kernel,
        )
    with manifest.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    return manifest


def test_acquisition_table_has_a_row_per_site_scanner_and_reconstruction(tiny_cohort):
    table = run(with_protocols(tiny_cohort)).acquisition_table()
    rows = [tuple(r) for r in table[["site", "scanner", "reconstruction", "scans", "matrix", "voxel_mm"]].values]
    assert rows == [
        ("A", "GE Discovery ST", "OSEM", 2, "8×8", "2.00×2.00×3.00"),
        ("A", "GE Discovery ST", "VPHD", 1, "8×8", "2.00×2.00×3.00"),
        ("B", "SIEMENS Biograph mCT", "OSEM3D 2i21s", 3, "8×8", "3.00×3.00×3.00"),
    ]
    assert list(table["kernel"]) == ["", "", "G2"] and list(table["slices"]) == [
        "6",
        "6",
        "6",
    ]
    assert list(table["outcome_1"]) == [1, 0, 1] and list(table["outcome_0"]) == [
        1,
        1,
        2,
    ]


def test_acquisition_table_without_header_columns_still_counts_scans_per_voxel_size(
    tiny_cohort,
):
    table = run(tiny_cohort).acquisition_table()
    assert list(table["scans"]) == [3, 3] and set(table["scanner"]) == {""}


def test_validate_prints_and_writes_the_acquisition_table(tiny_cohort, tmp_path):
    from harmkit.cli import main

    out = tmp_path / "table1.csv"
    with pytest.raises(SystemExit) as info:
        main(["validate", str(with_protocols(tiny_cohort)), "--table", str(out)])
        raise SystemExit(0)
    assert info.value.code in (0, None)
    with out.open(newline="") as handle:
        written = list(csv.DictReader(handle))
    assert [(r["site"], r["reconstruction"], r["scans"]) for r in written] == [
        ("A", "OSEM", "2"),
        ("A", "VPHD", "1"),
        ("B", "OSEM3D 2i21s", "3"),
    ]


def test_validate_refuses_to_write_the_table_over_an_input(tiny_cohort, capsys):
    from harmkit.cli import main

    before = snapshot(tiny_cohort.parent)
    with pytest.raises(SystemExit) as info:
        main(["validate", str(tiny_cohort), "--table", str(tiny_cohort)])
    assert info.value.code == 2 and "this is an input of the run" in capsys.readouterr().err
    assert snapshot(tiny_cohort.parent) == before
