"""PET DICOM series: Bq/mL -> SUVbw from the header, geometry kept, clear errors naming the missing tag."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk
from pydicom.dataset import Dataset, FileMetaDataset  # noqa: E402
from pydicom.uid import ExplicitVRLittleEndian, generate_uid  # noqa: E402

from harmkit.dicom import read_pet_series_suv  # noqa: E402
from harmkit.errors import HarmkitError  # noqa: E402
from harmkit.imageio import read_image  # noqa: E402
from harmkit.validation import validate_manifest  # noqa: E402

PET_STORAGE = "1.2.840.10008.5.1.4.1.1.128"
F18_HALF_LIFE = 6586.2  # s
WEIGHT_KG, DOSE_BQ = 70.0, 370e6


def activity() -> np.ndarray:
    """A (z, y, x) Bq/mL volume: background 5 kBq/mL, a hot block of 40 kBq/mL."""
    values = np.full((4, 6, 5), 5000.0)
    values[1:4, 2:4, 1:3] = 40000.0
    values[3] *= 1.5  # a slice with its own rescale slope
    return values


def write_series(
    folder: Path,
    values: np.ndarray,
    remove=(),
    radiopharmaceutical: dict | None = None,
    **tags,
) -> Path:
    """Write ``values`` as a PET DICOM series (one file per slice, uint16 + per-slice rescale slope)."""
    folder.mkdir(parents=True, exist_ok=True)
    series, study, frame = generate_uid(), generate_uid(), generate_uid()
    header = {
        "Modality": "PT",
        "Units": "BQML",
        "DecayCorrection": "START",
        "PatientWeight": str(WEIGHT_KG),
        "SeriesDate": "20240315",
        "SeriesTime": "101500",
        "AcquisitionDate": "20240315",
        "AcquisitionTime": "101500",
        "PatientID": "P1",
    }
    header.update(tags)
    drug = {
        "RadionuclideTotalDose": str(DOSE_BQ),
        "RadionuclideHalfLife": str(F18_HALF_LIFE),
        "RadiopharmaceuticalStartTime": "091500",
    }
    drug.update(radiopharmaceutical or {})
    for k, plane in enumerate(values):
        meta = FileMetaDataset()
        meta.MediaStorageSOPClassUID = PET_STORAGE
        meta.MediaStorageSOPInstanceUID = generate_uid()
        meta.TransferSyntaxUID = ExplicitVRLittleEndian
        ds = Dataset()
        ds.file_meta = meta
        ds.SOPClassUID, ds.SOPInstanceUID = PET_STORAGE, meta.MediaStorageSOPInstanceUID
        ds.SeriesInstanceUID, ds.StudyInstanceUID, ds.FrameOfReferenceUID = (
            series,
            study,
            frame,
        )
        for key, value in header.items():
            if key not in remove and value is not None:
                setattr(ds, key, value)
        item = Dataset()
        for key, value in drug.items():
            if key not in remove and value is not None:
                setattr(item, key, value)
        if "RadiopharmaceuticalInformationSequence" not in remove:
            ds.RadiopharmaceuticalInformationSequence = [item]
        ds.InstanceNumber = k + 1
        ds.ImagePositionPatient = [-10.0, 20.0, 100.0 + 3.0 * k]
        ds.ImageOrientationPatient = [1, 0, 0, 0, 1, 0]
        ds.PixelSpacing = [2.5, 2.0]  # row spacing (y), column spacing (x)
        ds.SliceThickness = 3.0
        ds.Rows, ds.Columns = plane.shape
        ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
        ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = (
            16,
            16,
            15,
            0,
        )
        slope = float(f"{plane.max() / 60000:.8g}")
        ds.RescaleSlope, ds.RescaleIntercept = f"{slope:.8g}", "0"
        ds.PixelData = np.round(plane / slope).astype(np.uint16).tobytes()
        ds.save_as(folder / f"{series[-8:]}_{k:03d}.dcm", enforce_file_format=True)
    return folder


def expected_factor(elapsed_s: float) -> float:
    return WEIGHT_KG * 1000 / (DOSE_BQ * 2 ** (-elapsed_s / F18_HALF_LIFE))


def test_bqml_series_is_converted_to_suvbw_with_geometry(tmp_path):
    values = activity()
    image = read_pet_series_suv(write_series(tmp_path / "pet", values))
    assert image.GetPixelID() == sitk.sitkFloat32
    assert image.GetSize() == (5, 6, 4)
    np.testing.assert_allclose(image.GetSpacing(), (2.0, 2.5, 3.0))
    np.testing.assert_allclose(image.GetOrigin(), (-10.0, 20.0, 100.0))
    suv = sitk.GetArrayFromImage(image)
    factor = expected_factor(3600.0)  # injection 09:15, series 10:15
    np.testing.assert_allclose(suv, values * factor, rtol=1e-4)
    assert suv.max() == pytest.approx(60000 * factor, rel=1e-4)  # per-slice slope of the last slice applied
    assert factor == pytest.approx(2.7635e-4, rel=1e-4)  # 70 kg, 370 MBq, 1 h after injection
    assert suv.min() == pytest.approx(1.38, abs=0.01)  # background 5 kBq/mL: a plausible SUV


def test_read_image_reads_a_dicom_folder_as_suv(tmp_path):
    folder = write_series(tmp_path / "pet", activity())
    np.testing.assert_allclose(
        sitk.GetArrayFromImage(read_image(folder)),
        activity() * expected_factor(3600.0),
        rtol=1e-4,
    )


def test_injection_date_time_across_midnight(tmp_path):
    folder = write_series(
        tmp_path / "pet",
        activity(),
        SeriesDate="20240316",
        SeriesTime="003000",
        AcquisitionDate="20240316",
        AcquisitionTime="003000",
        radiopharmaceutical={"RadiopharmaceuticalStartDateTime": "20240315233000"},
    )
    suv = sitk.GetArrayFromImage(read_pet_series_suv(folder))
    np.testing.assert_allclose(suv, activity() * expected_factor(3600.0), rtol=1e-4)


def test_acquisition_earlier_than_series_time_is_the_scan_start(tmp_path):
    # series re-saved after post-processing at 11:15; acquisition started 10:15
    folder = write_series(tmp_path / "pet", activity(), SeriesTime="111500", AcquisitionTime="101500")
    np.testing.assert_allclose(
        sitk.GetArrayFromImage(read_pet_series_suv(folder)),
        activity() * expected_factor(3600.0),
        rtol=1e-4,
    )


def test_admin_decay_correction_needs_no_decay_factor(tmp_path):
    folder = write_series(tmp_path / "pet", activity(), DecayCorrection="ADMIN")
    np.testing.assert_allclose(
        sitk.GetArrayFromImage(read_pet_series_suv(folder)),
        activity() * WEIGHT_KG * 1000 / DOSE_BQ,
        rtol=1e-4,
    )


def test_series_already_in_suv_is_kept(tmp_path):
    values = activity() / 10000
    folder = write_series(tmp_path / "pet", values, Units="GML")
    np.testing.assert_allclose(sitk.GetArrayFromImage(read_pet_series_suv(folder)), values, rtol=1e-4)


@pytest.mark.parametrize(
    "remove, words",
    [
        ("PatientWeight", "missing tag PatientWeight (0010,1030)"),
        (
            "RadiopharmaceuticalInformationSequence",
            "missing tag RadiopharmaceuticalInformationSequence (0054,0016)",
        ),
        ("RadionuclideTotalDose", "missing tag RadionuclideTotalDose (0018,1074)"),
        ("RadionuclideHalfLife", "missing tag RadionuclideHalfLife (0018,1075)"),
        (
            "RadiopharmaceuticalStartTime",
            "missing tag RadiopharmaceuticalStartDateTime (0018,1078) or RadiopharmaceuticalStartTime (0018,1072)",
        ),
        ("DecayCorrection", "missing tag DecayCorrection (0054,1102)"),
        ("Units", "missing tag Units (0054,1001)"),
    ],
)
def test_missing_tag_is_named_with_the_folder(tmp_path, remove, words):
    folder = write_series(tmp_path / "pet", activity(), remove=(remove,))
    with pytest.raises(HarmkitError) as info:
        read_pet_series_suv(folder)
    assert words in str(info.value) and str(folder) in str(info.value)


def test_missing_scan_time_is_named(tmp_path):
    folder = write_series(tmp_path / "pet", activity(), remove=("SeriesTime", "AcquisitionTime"))
    with pytest.raises(
        HarmkitError,
        match=r"missing tag SeriesTime \(0008,0031\) or AcquisitionTime \(0008,0032\)",
    ):
        read_pet_series_suv(folder)


@pytest.mark.parametrize(
    "tags, words",
    [
        ({"Units": "CNTS"}, "Units (0054,1001) is 'CNTS'"),
        ({"Modality": "CT"}, "Modality 'CT', not PET"),
        ({"DecayCorrection": "NONE"}, "DecayCorrection (0054,1102) is 'NONE'"),
        (
            {"SeriesTime": "081500", "AcquisitionTime": "081500"},
            "is after the scan start",
        ),
    ],
)
def test_unsupported_headers_are_explained(tmp_path, tags, words):
    with pytest.raises(HarmkitError) as info:
        read_pet_series_suv(write_series(tmp_path / "pet", activity(), **tags))
    assert words in str(info.value)


def test_folder_without_dicom_is_an_error(tmp_path):
    (tmp_path / "notes.txt").write_text("no images here")
    with pytest.raises(HarmkitError, match="no DICOM series found in"):
        read_pet_series_suv(tmp_path)


def test_folder_with_two_series_is_an_error(tmp_path):
    write_series(tmp_path / "both", activity())
    write_series(tmp_path / "both", activity())  # new series UIDs, same folder
    with pytest.raises(HarmkitError, match="holds 2 DICOM series"):
        read_pet_series_suv(tmp_path / "both")


def test_manifest_with_dicom_folders_validates(tmp_path):
    write_series(tmp_path / "s1", activity())
    write_series(tmp_path / "s2", activity(), remove=("PatientWeight",))
    mask = sitk.GetImageFromArray((activity() > 20000).astype(np.uint8))
    mask.SetSpacing((2.0, 2.5, 3.0))
    mask.SetOrigin((-10.0, 20.0, 100.0))
    sitk.WriteImage(mask, str(tmp_path / "s1_mask.nii.gz"))
    (tmp_path / "manifest.csv").write_text(
        "subject_id,site,image,mask_lesion\nS1,X,s1,s1_mask.nii.gz\nS2,X,s2,s1_mask.nii.gz\n"
    )
    report = validate_manifest(tmp_path / "manifest.csv")
    assert len(report.errors) == 1
    message = str(report.errors[0])
    assert message.startswith("row 2 (subject S2, site X): image:") and "PatientWeight (0010,1030)" in message
    assert report.summary_table().loc[0, "voxel_mm"] == "2.00×2.50×3.00"
