"""``harmkit import``: a DICOM study (PET series, RTSTRUCT, SEG) becomes a cohort; bad DICOM gives one message each."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk
from dicom_study import (
    Site,
    polygon,
    polygon_area,
    stored_activity,
    write_pet,
    write_rtstruct,
    write_seg,
)
from pydicom.uid import generate_uid

from harmkit.cli import main
from harmkit.importing.masks import rasterize_contours

SITE_A = Site("Hospital A", "GE MEDICAL SYSTEMS", "Discovery STE", "OSEM 2i20s", "GAUSSIAN 4.00")
SITE_B = Site("Hospital B", "SIEMENS", "Biograph mCT", "OSEM3D 2i21s", "XYZGAUSSIAN2.00")
# a non-convex polygon (a five-pointed star, in voxel units of PET A around voxel (12, 10)), radii 7 and 3.5 voxels
STAR = [
    (12 + r * np.cos(t), 10 + r * np.sin(t))
    for t, r in zip(np.linspace(0, 2 * np.pi, 10, endpoint=False) + 0.3, [7.0, 3.5] * 5)
]


def cli(capsys, *args) -> tuple[int, str]:
    try:
        main([str(a) for a in args])
        code = 0
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else 1
    captured = capsys.readouterr()
    text = "".join(" " if 0x2500 <= ord(ch) <= 0x257F else ch for ch in captured.out + captured.err)
    return code, " ".join(text.split())


def activity(shape=(8, 20, 24)) -> np.ndarray:
    values = np.full(shape, 5000.0)
    values[3:6, 8:12, 8:14] = 30000.0
    return values


def star_contours(pet, slices=(3, 4, 5)) -> list[np.ndarray]:
    return [np.array([pet.point(x, y, z) for x, y in STAR]) for z in slices]


@pytest.fixture
def study(tmp_path):
    """Two PET series of two sites, an RTSTRUCT (star-shaped GTV, Body) on the first, a SEG on the second."""
    root = tmp_path / "dicom"
    a = write_pet(root / "P1" / "pet", activity(), patient_id="P1", site=SITE_A)
    b = write_pet(
        root / "P2" / "pet",
        activity() * 1.3,
        patient_id="P2",
        site=SITE_B,
        spacing=(3.0, 3.0, 2.0),
        dose_bq=300e6,
        scan="103000",
        weight_kg=82.0,
    )
    write_rtstruct(
        root / "P1" / "rtstruct.dcm",
        a,
        {
            "GTV": star_contours(a),
            "Body": [polygon(a.point(12, 10, 4), (40, 35), a.point(0, 0, 4)[2])],
        },
    )
    segment = np.zeros(activity().shape, bool)
    segment[3:6, 8:12, 8:14] = True
    write_seg(root / "P2" / "seg.dcm", b, {"GTV-auto": segment})
    (root / "README.txt").write_text("exported from PACS")
    return {
        "root": root,
        "a": a,
        "b": b,
        "segment": segment,
        "out": tmp_path / "cohort",
    }


def rows(manifest: Path) -> list[dict[str, str]]:
    with manifest.open(newline="") as handle:
        return list(csv.DictReader(handle))


def imported(capsys, study, *options) -> list[dict[str, str]]:
    code, out = cli(
        capsys,
        "import",
        study["root"],
        "--out",
        study["out"],
        "--roi",
        "GTV*=lesion",
        *options,
    )
    assert code == 0, out
    return rows(study["out"] / "manifest.csv")


def nothing_written(study) -> bool:
    parent = study["out"].parent
    return not study["out"].exists() and not list(parent.glob(f".{study['out'].name}*"))


# -- a good study --------------------------------------------------------------------------------------------------


def test_import_writes_a_cohort_that_validate_accepts(capsys, study):
    table = imported(capsys, study)
    assert [r["subject_id"] for r in table] == ["P1", "P2"] and all(r["mask_lesion"] for r in table)
    code, out = cli(
        capsys,
        "validate",
        study["out"] / "manifest.csv",
        "--mask",
        "lesion",
        "--min-scans-per-site",
        "1",
    )
    assert code == 0 and "OK: 2 scans" in out


def test_manifest_takes_site_scanner_reconstruction_and_covariates_from_the_headers(capsys, study):
    first, second = imported(capsys, study)
    scanner = (first["site"], first["manufacturer"], first["model"])
    assert scanner == ("Hospital A", "GE MEDICAL SYSTEMS", "Discovery STE")
    assert (second["site"], second["reconstruction"], second["kernel"]) == (
        "Hospital B",
        "OSEM3D 2i21s",
        "XYZGAUSSIAN2.00",
    )
    assert (first["matrix"], first["voxel_mm"], second["voxel_mm"]) == (
        "24x20x8",
        "4.00x4.00x3.00",
        "3.00x3.00x2.00",
    )
    dose, uptake, weight = (float(second[c]) for c in ("injected_dose_mbq", "uptake_min", "weight_kg"))
    assert (dose, uptake, weight) == (300, 75, 82)
    assert first["age"] == "64.0" and first["sex"] == "M" and first["patient_id"] == "P1"


def test_suvs_match_the_header_derived_conversion(capsys, study):
    imported(capsys, study)
    for name, pet in (("P1", study["a"]), ("P2", study["b"])):
        (path,) = (study["out"] / "images" / name).glob("*_pet.nii.gz")
        image = sitk.ReadImage(str(path))
        expected = stored_activity(pet) * pet.factor
        np.testing.assert_allclose(sitk.GetArrayFromImage(image), expected, rtol=1e-5)
        assert image.GetSpacing() == pytest.approx(pet.spacing) and image.GetOrigin() == pytest.approx(pet.origin)


def test_rasterized_polygon_matches_its_analytic_area_within_one_voxel_boundary(capsys, study):
    imported(capsys, study)
    (path,) = (study["out"] / "images" / "P1").glob("*_mask_lesion.nii.gz")
    mask = sitk.GetArrayFromImage(sitk.ReadImage(str(path)))
    assert [int(mask[z].sum() > 0) for z in range(8)] == [0, 0, 0, 1, 1, 1, 0, 0]
    star = np.array(STAR)
    area = polygon_area(star)  # in voxels (of 4 x 4 mm)
    edges = np.concatenate([np.linspace(p, q, 200) for p, q in zip(star, np.roll(star, -1, axis=0))])
    boundary = len({(int(np.floor(x + 0.5)), int(np.floor(y + 0.5))) for x, y in edges})  # voxels the outline crosses
    from matplotlib.path import Path as Outline

    rows_, cols_ = np.mgrid[0:20, 0:24]
    centres_inside = Outline(star).contains_points(np.column_stack([cols_.ravel(), rows_.ravel()])).reshape(20, 24)
    for z in (3, 4, 5):
        assert abs(int(mask[z].sum()) - area) <= boundary
        assert np.array_equal(mask[z].astype(bool), centres_inside)  # a voxel is in when its centre is


def test_seg_segment_becomes_the_mask_voxel_for_voxel(capsys, study):
    imported(capsys, study)
    (path,) = (study["out"] / "images" / "P2").glob("*_mask_lesion.nii.gz")
    assert np.array_equal(sitk.GetArrayFromImage(sitk.ReadImage(str(path))).astype(bool), study["segment"])


def test_output_lists_where_every_scan_and_mask_came_from(capsys, study):
    import json

    imported(capsys, study)
    record = json.loads((study["out"] / "import.json").read_text())
    first = record["scans"][0]
    assert first["series_uid"] == study["a"].series_uid and len(first["files"]) == 8
    assert first["masks"]["lesion"] == [{"kind": "rtstruct", "file": "P1/rtstruct.dcm", "number": 1, "name": "GTV"}]


# -- rasterization rules -------------------------------------------------------------------------------------------


def grid(size=(40, 40, 10), spacing=(2.0, 2.0, 3.0)) -> sitk.Image:
    image = sitk.Image(*size, sitk.sitkFloat32)
    image.SetSpacing(spacing)
    return image


def test_a_contour_inside_another_is_a_hole():
    ring = [polygon((40, 40), (20, 20), 9.0), polygon((40, 40), (10, 10), 9.0)]
    mask = rasterize_contours(ring, grid())
    expected = (polygon_area(ring[0]) - polygon_area(ring[1])) / 4
    assert mask[3, 20, 20] == 0 and mask[3, 20, 28] == 1 and mask[3, 20, 32] == 0  # hole, ring, outside
    assert abs(int(mask[3].sum()) - expected) < 0.05 * expected


def test_a_contour_thinner_than_a_voxel_keeps_the_voxels_of_its_outline():
    sliver = polygon((40, 40), (15, 0.3), 9.0)  # 30 mm long, 0.6 mm wide: no voxel centre inside
    mask = rasterize_contours([sliver], grid())
    assert mask[3].sum() >= 14 and mask[3].sum() == mask.sum() and set(np.unique(np.nonzero(mask[3])[0])) == {20}


def test_contours_on_finer_planes_than_the_pet_slices_are_not_added_up():
    planes = [polygon((40, 40), (10, 10), z) for z in np.arange(6.0, 15.01, 1.0)]  # every mm, like a CT
    mask = rasterize_contours(planes, grid())
    one = int(rasterize_contours(planes[:1], grid())[2].sum())
    assert [int(mask[z].sum()) for z in range(10)] == [
        0,
        0,
        one,
        one,
        one,
        one,
        0,
        0,
        0,
        0,
    ]


def test_an_oblique_contour_is_refused():
    from harmkit.errors import HarmkitError

    tilted = polygon((40, 40), (10, 10), 9.0)
    tilted[:, 2] += np.linspace(0, 6, len(tilted))
    with pytest.raises(HarmkitError, match="lying in one slice plane"):
        rasterize_contours([tilted], grid())


def test_rtstruct_drawn_on_another_series_reaches_the_pet_through_its_frame_of_reference(capsys, tmp_path):
    pet = write_pet(tmp_path / "dicom" / "pet", activity(), patient_id="P1")
    write_rtstruct(
        tmp_path / "dicom" / "rs.dcm",
        pet,
        {"GTV": star_contours(pet)},
        referenced_series_uid=generate_uid(),
    )
    code, out = cli(
        capsys,
        "import",
        tmp_path / "dicom",
        "--out",
        tmp_path / "cohort",
        "--roi",
        "GTV=lesion",
    )
    assert code == 0 and "placed on PET series" in out and "shared frame of reference" in out
    assert rows(tmp_path / "cohort" / "manifest.csv")[0]["mask_lesion"]


# -- bad DICOM: one message naming the file and the fix, nothing written ---------------------------------------------


def refused(capsys, study, *options, roi="GTV*=lesion") -> str:
    code, out = cli(capsys, "import", study["root"], "--out", study["out"], "--roi", roi, *options)
    assert code == 2 and "Traceback" not in out, out
    assert "1 problem(s); nothing was written" in out
    assert nothing_written(study)
    return out


def test_missing_referenced_series_is_named_with_the_fix(capsys, study):
    lost = generate_uid()
    write_rtstruct(
        study["root"] / "P1" / "other.dcm",
        study["a"],
        {"CTV": star_contours(study["a"])},
        referenced_series_uid=lost,
        frame_uid=generate_uid(),
    )
    out = refused(capsys, study)
    assert "P1/other.dcm: RTSTRUCT references series " + lost in out and "which is not under" in out
    assert "add the series it was drawn on" in out


def test_rtstruct_without_a_matching_roi_names_the_rois_it_has(capsys, study):
    write_rtstruct(
        study["root"] / "P1" / "rtstruct.dcm",
        study["a"],
        {"Body": star_contours(study["a"])},
    )
    out = refused(capsys, study)
    assert "P1/rtstruct.dcm: no ROI matches --roi 'GTV*'" in out and "ROIs there: RTSTRUCT rtstruct.dcm: 'Body'" in out
    assert "Choose --roi from these names" in out


def test_corrupt_file_is_named_with_the_fix(capsys, study):
    slice_file = study["a"].files[2]
    slice_file.write_bytes(slice_file.read_bytes()[:-300])
    out = refused(capsys, study)
    assert f"{slice_file}: not a readable DICOM file: its pixel data is truncated" in out
    assert "re-export or copy the file again, or delete it" in out


def test_seg_on_another_frame_of_reference_is_named_with_the_fix(capsys, study):
    write_seg(
        study["root"] / "P2" / "seg.dcm",
        study["b"],
        {"GTV-auto": study["segment"]},
        frame_uid=generate_uid(),
    )
    out = refused(capsys, study)
    assert "P2/seg.dcm: SEG is on frame of reference" in out and "it was drawn on another image" in out
    assert "export it on the PET's frame of reference" in out


def test_an_ambiguous_roi_names_every_match_unless_merged(capsys, study):
    out = refused(capsys, study, roi="*=lesion")
    assert "--roi '*' is ambiguous" in out and "'GTV' in rtstruct.dcm; 'Body' in rtstruct.dcm" in out
    first, _ = imported(capsys, study, "--roi", "*=all", "--merge-rois")
    mask = sitk.GetArrayFromImage(sitk.ReadImage(str(study["out"] / first["mask_all"])))
    assert mask[4].sum() > mask[3].sum()  # Body (slice 4 only) joins the GTV


def test_missing_slice_is_named(capsys, study):
    study["a"].files[4].unlink()
    out = refused(capsys, study)
    assert "1 slice(s) missing between z = 109.00 and 115.00 mm" in out


def test_skip_broken_imports_the_rest_and_names_what_it_left_out(capsys, study):
    slice_file = study["a"].files[2]
    slice_file.write_bytes(slice_file.read_bytes()[:-300])
    table = imported(capsys, study, "--skip-broken")
    assert [r["subject_id"] for r in table] == ["P2"]
    out = cli(capsys, "validate", study["out"] / "manifest.csv", "--min-scans-per-site", "1")[1]
    assert "OK: 1 scans" in out


def test_an_existing_output_is_kept_unless_overwrite_replaces_an_earlier_import(capsys, study):
    study["out"].mkdir()
    (study["out"] / "notes.txt").write_text("mine")
    code, out = cli(capsys, "import", study["root"], "--out", study["out"])
    assert code == 2 and "already exists and is not empty" in out
    (study["out"] / "notes.txt").unlink()
    imported(capsys, study)
    imported(capsys, study, "--overwrite")
    assert len(rows(study["out"] / "manifest.csv")) == 2


# -- sites, pairs, series left out ---------------------------------------------------------------------------------


def test_site_map_names_sites_from_header_values(capsys, study, tmp_path):
    sites = tmp_path / "sites.csv"
    sites.write_text("model,site,site_group\nDiscovery*,CHUM,GE\nBiograph*,TUB,\n")
    first, second = imported(capsys, study, "--site-map", sites)
    assert (first["site"], first["site_group"], second["site"]) == ("CHUM", "GE", "TUB")


def test_pairs_link_one_patient_scanned_at_two_sites(capsys, tmp_path):
    root = tmp_path / "dicom"
    for folder, site in (("A", SITE_A), ("B", SITE_B)):
        write_pet(root / folder, activity(), patient_id="PHANTOM", site=site)
    code, out = cli(capsys, "import", root, "--out", tmp_path / "cohort", "--pairs")
    assert code == 0, out
    table = rows(tmp_path / "cohort" / "manifest.csv")
    assert [(r["subject_id"], r["pair_id"]) for r in table] == [
        ("PHANTOM_Hospital A", "PHANTOM"),
        ("PHANTOM_Hospital B", "PHANTOM"),
    ]
    assert (
        cli(
            capsys,
            "validate",
            tmp_path / "cohort" / "manifest.csv",
            "--min-scans-per-site",
            "1",
        )[0]
        == 0
    )


def test_a_series_without_attenuation_correction_is_left_out_with_a_note(capsys, tmp_path):
    root = tmp_path / "dicom"
    write_pet(root / "ac", activity(), patient_id="P1")
    write_pet(
        root / "nac",
        activity(),
        patient_id="P1",
        corrected=("DECY",),
        description="PET NAC",
    )
    code, out = cli(capsys, "import", root, "--out", tmp_path / "cohort")
    assert code == 0 and "not attenuation corrected" in out
    assert [r["series_description"] for r in rows(tmp_path / "cohort" / "manifest.csv")] == ["PET AC"]


def test_a_folder_without_pet_is_one_error(capsys, tmp_path):
    (tmp_path / "dicom").mkdir()
    (tmp_path / "dicom" / "notes.txt").write_text("nothing here")
    code, out = cli(capsys, "import", tmp_path / "dicom", "--out", tmp_path / "cohort")
    assert code == 2 and "no PET series under" in out and not (tmp_path / "cohort").exists()
