"""The manifest CSV: reading, writing, round trips, structural errors."""

from __future__ import annotations

import numpy as np
import pytest
import SimpleITK as sitk

import harmkit as hk
from harmkit.data import Cohort, Scan
from harmkit.errors import HarmkitError, ManifestError
from harmkit.manifest import read_manifest_problems, write_cohort, write_manifest


def test_load_cohort_reads_every_column(tiny_cohort):
    cohort = hk.load_cohort(tiny_cohort)
    assert len(cohort) == 6 and cohort.sites == ["A", "B"] and cohort.mask_names == ["lesion"]
    scan = cohort[1]
    assert (scan.subject_id, scan.site, scan.group, scan.row, scan.outcome) == (
        "A1",
        "A",
        "A",
        2,
        1,
    )
    assert scan.covariates == {"age": 51.0}
    assert scan.image == tiny_cohort.parent / "images" / "A1_pet.nii.gz"
    image = scan.load_image()
    assert image.GetPixelID() == sitk.sitkFloat32 and image.GetSpacing() == (
        2.0,
        2.0,
        3.0,
    )
    mask = scan.load_mask("lesion")
    assert mask.GetPixelID() == sitk.sitkUInt8 and int(sitk.GetArrayViewFromImage(mask).sum()) == 18


def test_paths_are_relative_to_the_manifest_not_the_working_directory(tiny_cohort, monkeypatch, tmp_path_factory):
    monkeypatch.chdir(tmp_path_factory.mktemp("elsewhere"))
    assert hk.load_cohort(tiny_cohort)[0].load_image().GetSize() == (8, 8, 6)


def test_write_manifest_round_trip(tiny_cohort, tmp_path):
    cohort = hk.load_cohort(tiny_cohort).regroup({"A": "AB", "B": "AB"})
    out = write_manifest(cohort, tmp_path / "sub" / "copy.csv")
    again = hk.load_cohort(out)
    assert [(s.subject_id, s.site, s.group, s.outcome, s.covariates) for s in again] == [
        (s.subject_id, s.site, s.group, s.outcome, s.covariates) for s in cohort
    ]
    assert [s.image.resolve() for s in again] == [s.image.resolve() for s in cohort]
    assert out.read_text().splitlines()[0] == "subject_id,site,site_group,image,mask_lesion,outcome,age"
    assert [p.name for p in out.parent.iterdir()] == ["copy.csv"]  # no temporary file left


def test_write_cohort_writes_images_with_geometry(tmp_path):
    image = sitk.GetImageFromArray(np.arange(24, dtype=np.float32).reshape(2, 3, 4))
    image.SetSpacing((1.5, 2.0, 4.0))
    image.SetOrigin((1.0, 2.0, 3.0))
    mask = sitk.Cast(image > 10, sitk.sitkUInt8)
    manifest = write_cohort([Scan("s/1", "site A", image, {"lesion": mask}, outcome=1)], tmp_path / "out")
    scan = hk.load_cohort(manifest)[0]
    assert scan.subject_id == "s/1" and scan.site == "site A"
    loaded = scan.load_image()
    assert loaded.GetSpacing() == (1.5, 2.0, 4.0) and loaded.GetOrigin() == (
        1.0,
        2.0,
        3.0,
    )
    np.testing.assert_array_equal(sitk.GetArrayFromImage(loaded), sitk.GetArrayFromImage(image))
    assert int(sitk.GetArrayFromImage(scan.load_mask("lesion")).sum()) == 13


def test_writing_in_memory_images_into_a_manifest_is_refused(tmp_path):
    image = sitk.Image(2, 2, 2, sitk.sitkFloat32)
    with pytest.raises(HarmkitError, match="image is in memory; write it to a file first"):
        write_manifest([Scan("s1", "A", image)], tmp_path / "m.csv")
    assert not (tmp_path / "m.csv").exists()


def test_structural_problems_are_all_listed_with_rows(tmp_path):
    manifest = tmp_path / "m.csv"
    manifest.write_text(
        "subject_id,site,image,outcome\na,X,a.nii.gz,1\n,X,b.nii.gz,0\nc,,,maybe\na,Y,d.nii.gz,\ne,Y,e.nii.gz,0,extra\n"
    )
    with pytest.raises(ManifestError) as info:
        hk.load_cohort(manifest)
    assert [str(p) for p in info.value.problems] == [
        "row 2 (site X): empty subject_id; give every scan a unique subject id",
        "row 3 (subject c): empty site; name the site (or acquisition protocol) of every scan",
        "row 3 (subject c): empty image path; give the image file or DICOM folder, relative to the manifest",
        "row 3 (subject c): outcome 'maybe' is not binary; use 0 or 1 (empty when unknown)",
        "row 4 (subject a, site Y): duplicate subject_id, first used in row 1; subject ids must be unique "
        "(for repeated scans of one subject use e.g. 'a_2')",
        "row 5 (subject e, site Y): more cells than the header has columns (4); check for a stray comma or quote",
    ]
    cohort, problems = read_manifest_problems(manifest)  # reading without stopping
    assert len(cohort) == 5 and len(problems) == 6 and cohort[2].image is None


def test_scan_without_image_explains_itself(tmp_path):
    with pytest.raises(HarmkitError, match="subject 'x' \\(site A\\) has no image"):
        Scan("x", "A", None).load_image()


def test_missing_manifest_and_missing_columns(tmp_path):
    with pytest.raises(HarmkitError, match="manifest not found"):
        hk.load_cohort(tmp_path / "nope.csv")
    (tmp_path / "m.csv").write_text("id,site,image\n1,A,x.nii\n")
    with pytest.raises(HarmkitError, match="missing column\\(s\\) subject_id.*found: id, site, image"):
        hk.load_cohort(tmp_path / "m.csv")


def test_empty_manifest_is_an_error(tmp_path):
    (tmp_path / "m.csv").write_text("subject_id,site,image\n")
    with pytest.raises(ManifestError, match="no data rows"):
        hk.load_cohort(tmp_path / "m.csv")


def test_missing_mask_name_lists_available_masks(tiny_cohort):
    with pytest.raises(
        HarmkitError,
        match="has no mask 'liver' \\(masks: lesion\\); add a 'mask_liver' column",
    ):
        hk.load_cohort(tiny_cohort)[0].load_mask("liver")


def test_cohort_helpers(tiny_cohort):
    cohort = hk.load_cohort(tiny_cohort)
    assert cohort.by_group("B").subject_ids == ["B0", "B1", "B2"]
    assert isinstance(cohort[:2], Cohort) and cohort[:2].manifest == tiny_cohort
    assert cohort.get("B1").row == 5
    with pytest.raises(HarmkitError, match="no subject 'Z9'"):
        cohort.get("Z9")


def test_written_files_get_ordinary_permissions_not_private_temp_mode(tmp_path):
    import os
    import stat

    from harmkit.atomic import atomic_write_text

    target = atomic_write_text(tmp_path / "out.txt", "x")
    umask = os.umask(0)
    os.umask(umask)
    assert stat.S_IMODE(target.stat().st_mode) == 0o666 & ~umask
    assert [p.name for p in tmp_path.iterdir()] == ["out.txt"]  # no temporary left behind
