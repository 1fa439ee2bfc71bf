"""Write small DICOM studies with pydicom and highdicom: PET series, RTSTRUCTs and SEGs with known geometry.

Used by tests/test_dicom_import.py and benchmarks/rtstruct_rasterization.py. Every PET series is
18F-FDG in Bq/mL with the header tags SUVbw needs, one file per slice, axial, slice positions
``origin + k * slice_mm`` along z; pixel (row r, column c) of a slice lies at ``x = origin_x + c * col_mm``,
``y = origin_y + r * row_mm``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pydicom
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, generate_uid

PET_STORAGE = "1.2.840.10008.5.1.4.1.1.128"
CT_STORAGE = "1.2.840.10008.5.1.4.1.1.2"
RTSTRUCT_STORAGE = "1.2.840.10008.5.1.4.1.1.481.3"
F18_HALF_LIFE = 6586.2  # s


@dataclass
class Site:
    """Header values of one site's scanner and protocol."""

    institution: str = "Hospital A"
    manufacturer: str = "GE MEDICAL SYSTEMS"
    model: str = "Discovery STE"
    reconstruction: str = "OSEM 2i20s"
    kernel: str = "GAUSSIAN 4.00"


@dataclass
class PetSeries:
    """A PET series written to disk: its UIDs, slice datasets (ascending z) and geometry."""

    folder: Path
    series_uid: str
    study_uid: str
    frame_uid: str
    patient_id: str
    slices: list[Dataset]
    files: list[Path]
    origin: tuple[float, float, float]
    spacing: tuple[float, float, float]  # x (column), y (row), z (slice) in mm
    shape: tuple[int, int, int]  # z, y, x
    factor: float  # Bq/mL -> SUVbw of this series' header
    activity: np.ndarray = field(repr=False, default=None)

    def point(self, x_index: float, y_index: float, z_index: float) -> tuple[float, float, float]:
        """Patient coordinates (mm) of a continuous voxel index."""
        return (
            self.origin[0] + x_index * self.spacing[0],
            self.origin[1] + y_index * self.spacing[1],
            self.origin[2] + z_index * self.spacing[2],
        )


def _file_meta(sop_class: str, sop_uid: str) -> FileMetaDataset:
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = sop_class
    meta.MediaStorageSOPInstanceUID = sop_uid
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    return meta


def _patient_study(ds: Dataset, patient_id: str, study_uid: str) -> None:
    ds.PatientID, ds.PatientName = patient_id, f"Test^{patient_id}"
    ds.PatientBirthDate, ds.PatientSex, ds.PatientAge = "19600101", "M", "064Y"
    ds.StudyInstanceUID, ds.StudyDate, ds.StudyTime = study_uid, "20240315", "100000"
    ds.StudyID, ds.AccessionNumber, ds.ReferringPhysicianName = "1", "A1", ""


def write_pet(
    folder: Path,
    activity: np.ndarray,
    *,
    patient_id: str = "P1",
    site: Site | None = None,
    spacing=(4.0, 4.0, 3.0),
    origin=(-20.0, -30.0, 100.0),
    weight_kg: float = 70.0,
    dose_bq: float = 370e6,
    injection: str = "091500",
    scan: str = "101500",
    study_uid: str | None = None,
    frame_uid: str | None = None,
    series_number: int = 1,
    description: str = "PET AC",
    corrected: tuple[str, ...] = ("DECY", "ATTN", "SCAT"),
    prefix: str = "pt",
) -> PetSeries:
    """Write ``activity`` (z, y, x, Bq/mL) as a PET series in ``folder``, one file per slice (uint16 + slope)."""
    site = site or Site()
    folder.mkdir(parents=True, exist_ok=True)
    series_uid, study_uid, frame_uid = (
        generate_uid(),
        study_uid or generate_uid(),
        frame_uid or generate_uid(),
    )
    slices, files = [], []
    for k, plane in enumerate(activity):
        sop = generate_uid()
        ds = Dataset()
        ds.file_meta = _file_meta(PET_STORAGE, sop)
        ds.SOPClassUID, ds.SOPInstanceUID, ds.Modality = PET_STORAGE, sop, "PT"
        _patient_study(ds, patient_id, study_uid)
        ds.SeriesInstanceUID, ds.FrameOfReferenceUID, ds.SeriesNumber = (
            series_uid,
            frame_uid,
            series_number,
        )
        ds.SeriesDescription, ds.InstanceNumber = description, k + 1
        ds.InstitutionName, ds.StationName = (
            site.institution,
            f"{site.institution[:8]}PET",
        )
        ds.Manufacturer, ds.ManufacturerModelName = site.manufacturer, site.model
        ds.ReconstructionMethod, ds.ConvolutionKernel = site.reconstruction, site.kernel
        ds.CorrectedImage = list(corrected)
        ds.Units, ds.DecayCorrection, ds.PatientWeight = (
            "BQML",
            "START",
            f"{weight_kg:g}",
        )
        ds.SeriesDate = ds.AcquisitionDate = "20240315"
        ds.SeriesTime = ds.AcquisitionTime = scan
        drug = Dataset()
        drug.RadionuclideTotalDose, drug.RadionuclideHalfLife = (
            f"{dose_bq:g}",
            f"{F18_HALF_LIFE:g}",
        )
        drug.RadiopharmaceuticalStartTime = injection
        ds.RadiopharmaceuticalInformationSequence = [drug]
        ds.ImagePositionPatient = [origin[0], origin[1], origin[2] + spacing[2] * k]
        ds.ImageOrientationPatient = [1, 0, 0, 0, 1, 0]
        ds.PixelSpacing = [
            spacing[1],
            spacing[0],
        ]  # row spacing (y), column spacing (x)
        ds.SliceThickness = spacing[2]
        ds.Rows, ds.Columns = plane.shape
        ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
        ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = (
            16,
            16,
            15,
            0,
        )
        slope = float(f"{max(plane.max(), 1.0) / 60000:.8g}")
        ds.RescaleSlope, ds.RescaleIntercept = f"{slope:.8g}", "0"
        ds.PixelData = np.round(plane / slope).astype(np.uint16).tobytes()
        path = folder / f"{prefix}{k:03d}.dcm"
        ds.save_as(path, enforce_file_format=True)
        slices.append(ds)
        files.append(path)
    h, m = (
        int(scan[:2]) * 3600 + int(scan[2:4]) * 60,
        int(injection[:2]) * 3600 + int(injection[2:4]) * 60,
    )
    factor = weight_kg * 1000 / (dose_bq * 2 ** (-(h - m) / F18_HALF_LIFE))
    return PetSeries(
        folder,
        series_uid,
        study_uid,
        frame_uid,
        patient_id,
        slices,
        files,
        tuple(origin),
        tuple(spacing),
        activity.shape,
        factor,
        activity,
    )


def stored_activity(series: PetSeries) -> np.ndarray:
    """The Bq/mL values as stored (uint16 × slope), i.e. what a reader gets back."""
    return np.stack(
        [
            np.frombuffer(ds.PixelData, np.uint16).reshape(ds.Rows, ds.Columns) * float(ds.RescaleSlope)
            for ds in series.slices
        ]
    )


def write_rtstruct(
    path: Path,
    pet: PetSeries,
    rois: dict[str, list[np.ndarray]],
    *,
    referenced_series_uid: str | None = None,
    frame_uid: str | None = None,
    contour_images: bool = True,
) -> Path:
    """An RTSTRUCT on ``pet``: ``rois`` maps ROI names to closed planar contours, each an (N, 3) array in mm.

    ``referenced_series_uid`` and ``frame_uid`` override what it references (default: the PET's).
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    sop = generate_uid()
    ds = Dataset()
    ds.file_meta = _file_meta(RTSTRUCT_STORAGE, sop)
    ds.SOPClassUID, ds.SOPInstanceUID, ds.Modality = RTSTRUCT_STORAGE, sop, "RTSTRUCT"
    _patient_study(ds, pet.patient_id, pet.study_uid)
    ds.SeriesInstanceUID, ds.SeriesNumber, ds.InstanceNumber = generate_uid(), 99, 1
    ds.StructureSetLabel, ds.StructureSetDate, ds.StructureSetTime = (
        "contours",
        "20240316",
        "120000",
    )
    frame = frame_uid or pet.frame_uid
    image_refs = []
    for slice_ds in pet.slices:
        item = Dataset()
        item.ReferencedSOPClassUID, item.ReferencedSOPInstanceUID = (
            PET_STORAGE,
            slice_ds.SOPInstanceUID,
        )
        image_refs.append(item)
    series_ref = Dataset()
    series_ref.SeriesInstanceUID = referenced_series_uid or pet.series_uid
    series_ref.ContourImageSequence = image_refs if referenced_series_uid is None else []
    study_ref = Dataset()
    study_ref.ReferencedSOPClassUID = "1.2.840.10008.3.1.2.3.1"
    study_ref.ReferencedSOPInstanceUID = pet.study_uid
    study_ref.RTReferencedSeriesSequence = [series_ref]
    frame_ref = Dataset()
    frame_ref.FrameOfReferenceUID = frame
    frame_ref.RTReferencedStudySequence = [study_ref]
    ds.ReferencedFrameOfReferenceSequence = [frame_ref]
    ds.StructureSetROISequence, ds.ROIContourSequence, ds.RTROIObservationsSequence = (
        [],
        [],
        [],
    )
    by_z = {round(float(s.ImagePositionPatient[2]), 3): s.SOPInstanceUID for s in pet.slices}
    for number, (name, contours) in enumerate(rois.items(), start=1):
        roi = Dataset()
        roi.ROINumber, roi.ReferencedFrameOfReferenceUID, roi.ROIName = (
            number,
            frame,
            name,
        )
        roi.ROIGenerationAlgorithm = "MANUAL"
        ds.StructureSetROISequence.append(roi)
        item = Dataset()
        item.ReferencedROINumber, item.ROIDisplayColor = number, [255, 0, 0]
        item.ContourSequence = []
        for points in contours:
            contour = Dataset()
            contour.ContourGeometricType = "CLOSED_PLANAR"
            contour.NumberOfContourPoints = len(points)
            contour.ContourData = [f"{v:.4f}" for v in np.asarray(points, float).ravel()]
            uid = by_z.get(round(float(points[0][2]), 3))
            if contour_images and uid and referenced_series_uid is None:
                ref = Dataset()
                ref.ReferencedSOPClassUID, ref.ReferencedSOPInstanceUID = (
                    PET_STORAGE,
                    uid,
                )
                contour.ContourImageSequence = [ref]
            item.ContourSequence.append(contour)
        ds.ROIContourSequence.append(item)
        observation = Dataset()
        observation.ObservationNumber, observation.ReferencedROINumber = number, number
        observation.RTROIInterpretedType, observation.ROIInterpreter = "GTV", ""
        ds.RTROIObservationsSequence.append(observation)
    ds.save_as(path, enforce_file_format=True)
    return path


def write_seg(
    path: Path,
    pet: PetSeries,
    segments: dict[str, np.ndarray],
    frame_uid: str | None = None,
) -> Path:
    """A DICOM SEG (highdicom) of ``pet``: ``segments`` maps labels to boolean (z, y, x) masks on the PET grid.

    ``frame_uid`` puts the SEG on another frame of reference (a segmentation made on another image).
    """
    import highdicom as hd

    path.parent.mkdir(parents=True, exist_ok=True)
    sources = [pydicom.dcmread(f) for f in pet.files]
    labels = list(segments)
    stack = np.stack([segments[label] for label in labels], axis=-1).astype(np.uint8)
    descriptions = [
        hd.seg.SegmentDescription(
            segment_number=i + 1,
            segment_label=label,
            segmented_property_category=hd.sr.CodedConcept("49755003", "SCT", "Morphologically Altered Structure"),
            segmented_property_type=hd.sr.CodedConcept("108369006", "SCT", "Neoplasm"),
            algorithm_type=hd.seg.SegmentAlgorithmTypeValues.MANUAL,
        )
        for i, label in enumerate(labels)
    ]
    seg = hd.seg.Segmentation(
        source_images=sources,
        pixel_array=stack,
        segmentation_type="BINARY",
        segment_descriptions=descriptions,
        series_instance_uid=hd.UID(),
        series_number=50,
        sop_instance_uid=hd.UID(),
        instance_number=1,
        manufacturer="harmkit tests",
        manufacturer_model_name="dicom_study",
        software_versions="1",
        device_serial_number="1",
    )
    if frame_uid is not None:
        seg.FrameOfReferenceUID = frame_uid
    seg.save_as(path)
    return path


def polygon(
    center_xy: tuple[float, float],
    radii: tuple[float, float],
    z: float,
    n: int = 64,
    angle: float = 0.0,
) -> np.ndarray:
    """An (n, 3) closed ellipse polygon in mm at height ``z``, rotated by ``angle`` radians."""
    t = np.linspace(0, 2 * np.pi, n, endpoint=False)
    x, y = radii[0] * np.cos(t), radii[1] * np.sin(t)
    c, s = np.cos(angle), np.sin(angle)
    return np.column_stack([center_xy[0] + c * x - s * y, center_xy[1] + s * x + c * y, np.full(n, z)])


def polygon_area(points: np.ndarray) -> float:
    """Shoelace area (mm²) of a planar polygon given as (N, 2+) points."""
    x, y = points[:, 0], points[:, 1]
    return 0.5 * abs(float(np.dot(x, np.roll(y, -1)) - np.dot(y, np.roll(x, -1))))
