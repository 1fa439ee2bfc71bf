"""Walk a DICOM tree and index its headers: image series, RTSTRUCTs, SEGs, and files that cannot be read.

Every file is opened once with pydicom (pixels of PET slices are read too, to
find truncated files); files that are not DICOM at all (no ``DICM`` prefix:
notes, spreadsheets, ``.DS_Store``) are counted and skipped, files that claim
to be DICOM but cannot be read are :class:`FileRecord` s of kind ``broken``.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

PET_STORAGE = "1.2.840.10008.5.1.4.1.1.128"
MULTIFRAME_PET = {
    "1.2.840.10008.5.1.4.1.1.130": "Enhanced PET",
    "1.2.840.10008.5.1.4.1.1.128.1": "Legacy Converted Enhanced PET",
}
RTSTRUCT_STORAGE = "1.2.840.10008.5.1.4.1.1.481.3"
SEG_STORAGE = "1.2.840.10008.5.1.4.1.1.66.4"
DICOMDIR_STORAGE = "1.2.840.10008.1.3.10"
CHUNK = 64  # files per task when headers are read in parallel


@dataclass
class FileRecord:
    """What harmkit needs from one DICOM file's header."""

    path: str
    kind: str  # "image", "rtstruct", "seg", "other", "broken"
    problem: str = ""
    sop_class: str = ""
    sop_uid: str = ""
    series_uid: str = ""
    study_uid: str = ""
    patient_id: str = ""
    modality: str = ""
    frame_uid: str = ""
    position: tuple[float, ...] | None = None
    orientation: tuple[float, ...] | None = None
    header: dict[str, Any] = field(default_factory=dict)  # PET: what the manifest's covariates come from
    referenced_series: tuple[str, ...] = ()  # RTSTRUCT, SEG: series they were drawn on
    referenced_sops: tuple[str, ...] = ()  # RTSTRUCT, SEG: images they were drawn on
    frames: tuple[str, ...] = ()  # RTSTRUCT: frames of reference of its ROIs
    regions: tuple[tuple[int, str, str, int], ...] = ()  # (number, name, frame of reference, closed contours)


@dataclass
class Series:
    """The files of one image series (one SeriesInstanceUID)."""

    uid: str
    modality: str
    sop_class: str
    patient_id: str
    study_uid: str
    frame_uid: str
    files: list[FileRecord] = field(default_factory=list)

    @property
    def folder(self) -> Path:
        """The folder of its first file (where messages point the user)."""
        return Path(self.files[0].path).parent


@dataclass
class Index:
    """Every DICOM object found under ``root``."""

    root: Path
    series: dict[str, Series] = field(default_factory=dict)
    structures: list[FileRecord] = field(default_factory=list)  # RTSTRUCTs and SEGs
    broken: list[FileRecord] = field(default_factory=list)
    not_dicom: list[str] = field(default_factory=list)
    sop_series: dict[str, str] = field(default_factory=dict)  # SOPInstanceUID -> SeriesInstanceUID

    @property
    def files(self) -> int:
        return sum(len(s.files) for s in self.series.values()) + len(self.structures) + len(self.broken)

    def pet_series(self) -> list[Series]:
        return [s for s in self.series.values() if s.modality == "PT"]


def list_files(root: Path) -> list[str]:
    """Every file under ``root`` in a stable order (hidden folders skipped)."""
    found = []
    for folder, dirs, files in os.walk(root):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        found += [os.path.join(folder, name) for name in sorted(files)]
    return found


def index_tree(root: Path, jobs: int | None = 1, progress: bool = False) -> Index:
    """Read the header of every file under ``root`` (in parallel with ``jobs`` workers) into an :class:`Index`."""
    from ..execution import get_executor

    files = list_files(root)
    chunks = [files[i : i + CHUNK] for i in range(0, len(files), CHUNK)]
    with get_executor(jobs=jobs, progress=progress) as executor:
        results = executor.map(read_records, chunks, label=f"reading {len(files)} DICOM headers")
    index = Index(Path(root))
    for chunk, result in zip(chunks, results):
        records = result.value if result.ok else [FileRecord(p, "broken", problem=result.error or "") for p in chunk]
        for record in records:
            _add(index, record)
    return index


def _add(index: Index, record: FileRecord) -> None:
    if record.kind == "not-dicom":
        index.not_dicom.append(record.path)
    elif record.kind == "broken":
        index.broken.append(record)
    elif record.kind in ("rtstruct", "seg"):
        index.structures.append(record)
    elif record.kind == "image":
        series = index.series.get(record.series_uid)
        if series is None:
            series = index.series[record.series_uid] = Series(
                record.series_uid,
                record.modality,
                record.sop_class,
                record.patient_id,
                record.study_uid,
                record.frame_uid,
            )
        series.files.append(record)
        index.sop_series[record.sop_uid] = record.series_uid


def read_records(paths: list[str]) -> list[FileRecord]:
    """:func:`read_record` for each of ``paths`` (one task of the parallel walk)."""
    return [read_record(p) for p in paths]


def read_record(path: str) -> FileRecord:
    """Index one file: its kind, UIDs and what harmkit needs later; never raises."""
    import pydicom
    from pydicom.errors import InvalidDicomError

    try:
        ds = pydicom.dcmread(path, stop_before_pixels=True)
    except InvalidDicomError:
        return FileRecord(path, "not-dicom")
    except Exception as exc:  # noqa: BLE001 - pydicom raises many types for damaged files
        return FileRecord(path, "broken", problem=_reason(exc))
    try:
        return _record(path, ds)
    except Exception as exc:  # noqa: BLE001 - a header whose values cannot be parsed is a damaged file
        return FileRecord(
            path,
            "broken",
            problem=f"its header cannot be parsed ({_reason(exc)})",
            series_uid=str(ds.get("SeriesInstanceUID", "") or ""),
        )


def _record(path: str, ds) -> FileRecord:
    meta = getattr(ds, "file_meta", None)
    sop_class = str(ds.get("SOPClassUID", "") or (meta.get("MediaStorageSOPClassUID", "") if meta else "") or "")
    if sop_class == DICOMDIR_STORAGE:
        return FileRecord(path, "not-dicom")
    base: dict[str, Any] = dict(
        sop_class=sop_class,
        sop_uid=str(ds.get("SOPInstanceUID", "") or ""),
        series_uid=str(ds.get("SeriesInstanceUID", "") or ""),
        study_uid=str(ds.get("StudyInstanceUID", "") or ""),
        patient_id=str(ds.get("PatientID", "") or "").strip(),
        modality=str(ds.get("Modality", "") or "").upper(),
    )
    missing = [
        name
        for name, key in (
            ("SOPClassUID", "sop_class"),
            ("SOPInstanceUID", "sop_uid"),
            ("SeriesInstanceUID", "series_uid"),
            ("Modality", "modality"),
        )
        if not base[key]
    ]
    if missing:
        return FileRecord(
            path,
            "broken",
            problem=f"its header lacks {', '.join(missing)} (damaged or not a DICOM object)",
            series_uid=base["series_uid"],
        )
    if sop_class == RTSTRUCT_STORAGE or base["modality"] == "RTSTRUCT":
        return _rtstruct(path, ds, base)
    if sop_class == SEG_STORAGE or base["modality"] == "SEG":
        return _seg(path, ds, base)
    if "Rows" not in ds:
        return FileRecord(path, "other", **base)
    record = FileRecord(path, "image", frame_uid=str(ds.get("FrameOfReferenceUID", "") or ""), **base)
    if base["modality"] != "PT":
        return record
    record.position = tuple(float(v) for v in ds.get("ImagePositionPatient") or ()) or None
    record.orientation = tuple(float(v) for v in ds.get("ImageOrientationPatient") or ()) or None
    record.header = _pet_header(ds)
    truncated = _truncated(path)
    if truncated:
        return FileRecord(path, "broken", problem=truncated, **base)
    return record


def _truncated(path: str) -> str:
    """Why the pixel data of an uncompressed slice is incomplete ('' when it is complete)."""
    import pydicom

    try:
        ds = pydicom.dcmread(path)
        data = ds.get("PixelData")
    except Exception as exc:  # noqa: BLE001
        return f"its pixel data cannot be read ({_reason(exc)})"
    if data is None:
        return "it has no pixel data"
    syntax = ds.file_meta.get("TransferSyntaxUID") if getattr(ds, "file_meta", None) else None
    if syntax is not None and syntax.is_compressed:
        return ""
    frames = int(ds.get("NumberOfFrames", 1) or 1)
    expected = int(ds.Rows) * int(ds.Columns) * int(ds.get("SamplesPerPixel", 1) or 1) * frames
    expected *= int(ds.BitsAllocated) // 8 if int(ds.BitsAllocated) >= 8 else 1
    if len(data) < expected:
        return f"its pixel data is truncated ({len(data)} of {expected} bytes)"
    return ""


def _pet_header(ds) -> dict[str, Any]:
    """The header values of a PET slice that end up in the manifest or choose the site."""
    from ..dicom import uptake_seconds

    def text(keyword: str) -> str:
        value = ds.get(keyword, "")
        if value is None:
            return ""
        if isinstance(value, (list, tuple)) or type(value).__name__ == "MultiValue":
            return " ".join(str(v).strip() for v in value if str(v).strip())
        return str(value).strip()

    drug = (ds.get("RadiopharmaceuticalInformationSequence") or [None])[0]
    dose = _number(drug.get("RadionuclideTotalDose")) if drug is not None else None
    uptake = uptake_seconds(ds)
    spacing = [float(v) for v in ds.get("PixelSpacing") or ()]
    return {
        "institution": text("InstitutionName"),
        "station": text("StationName"),
        "manufacturer": text("Manufacturer"),
        "model": text("ManufacturerModelName"),
        "reconstruction": text("ReconstructionMethod"),
        "kernel": text("ConvolutionKernel"),
        "series_description": text("SeriesDescription"),
        "series_number": text("SeriesNumber"),
        "corrected": text("CorrectedImage").upper().split(),
        "units": text("Units").upper(),
        "rows": int(ds.get("Rows") or 0),
        "columns": int(ds.get("Columns") or 0),
        "pixel_spacing": spacing,
        "frames": int(ds.get("NumberOfFrames", 1) or 1),
        "weight_kg": _number(ds.get("PatientWeight")),
        "dose_bq": dose,
        "uptake_s": uptake,
        "age": _age(ds),
        "sex": text("PatientSex").upper(),
        "series_time": text("SeriesDate") + text("SeriesTime"),
    }


def _rtstruct(path: str, ds, base: dict) -> FileRecord:
    series, sops, frames = [], [], []
    for frame in ds.get("ReferencedFrameOfReferenceSequence") or []:
        if frame.get("FrameOfReferenceUID"):
            frames.append(str(frame.FrameOfReferenceUID))
        for study in frame.get("RTReferencedStudySequence") or []:
            for item in study.get("RTReferencedSeriesSequence") or []:
                if item.get("SeriesInstanceUID"):
                    series.append(str(item.SeriesInstanceUID))
                sops += [
                    str(i.ReferencedSOPInstanceUID)
                    for i in item.get("ContourImageSequence") or []
                    if i.get("ReferencedSOPInstanceUID")
                ]
    closed: dict[int, int] = {}
    for item in ds.get("ROIContourSequence") or []:
        number = int(item.get("ReferencedROINumber", -1))
        contours = item.get("ContourSequence") or []
        closed[number] = sum(1 for c in contours if str(c.get("ContourGeometricType", "")).upper() == "CLOSED_PLANAR")
        for contour in contours:
            sops += [
                str(i.ReferencedSOPInstanceUID)
                for i in contour.get("ContourImageSequence") or []
                if i.get("ReferencedSOPInstanceUID")
            ]
    regions = []
    for roi in ds.get("StructureSetROISequence") or []:
        number = int(roi.get("ROINumber", -1))
        frame = str(roi.get("ReferencedFrameOfReferenceUID", "") or (frames[0] if frames else ""))
        regions.append(
            (
                number,
                str(roi.get("ROIName", "") or "").strip(),
                frame,
                closed.get(number, 0),
            )
        )
    return FileRecord(
        path,
        "rtstruct",
        referenced_series=tuple(dict.fromkeys(series)),
        referenced_sops=tuple(dict.fromkeys(sops)),
        frames=tuple(dict.fromkeys(frames)),
        regions=tuple(regions),
        frame_uid=frames[0] if frames else "",
        **base,
    )


def _seg(path: str, ds, base: dict) -> FileRecord:
    series, sops = [], []
    for item in ds.get("ReferencedSeriesSequence") or []:
        if item.get("SeriesInstanceUID"):
            series.append(str(item.SeriesInstanceUID))
        sops += [
            str(i.ReferencedSOPInstanceUID)
            for i in item.get("ReferencedInstanceSequence") or []
            if i.get("ReferencedSOPInstanceUID")
        ]
    frame = str(ds.get("FrameOfReferenceUID", "") or "")
    regions = tuple(
        (
            int(s.get("SegmentNumber", -1)),
            str(s.get("SegmentLabel", "") or "").strip(),
            frame,
            1,
        )
        for s in ds.get("SegmentSequence") or []
    )
    return FileRecord(
        path,
        "seg",
        referenced_series=tuple(dict.fromkeys(series)),
        referenced_sops=tuple(sops),
        frames=(frame,) if frame else (),
        regions=regions,
        frame_uid=frame,
        **base,
    )


def _age(ds) -> float | None:
    text = str(ds.get("PatientAge", "") or "").strip().upper()
    if len(text) == 4 and text[:3].isdigit() and text[3] in "YMWD":
        return round(int(text[:3]) / {"Y": 1, "M": 12, "W": 52.1775, "D": 365.25}[text[3]], 2)
    birth, study = (
        str(ds.get("PatientBirthDate", "") or ""),
        str(ds.get("StudyDate", "") or ""),
    )
    if len(birth) == 8 and len(study) == 8 and birth.isdigit() and study.isdigit():
        years = int(study[:4]) - int(birth[:4]) - (study[4:] < birth[4:])
        return float(years) if years >= 0 else None
    return None


def _number(value) -> float | None:
    try:
        return float(value) if value not in (None, "") else None
    except (TypeError, ValueError):
        return None


def _reason(exc: Exception) -> str:
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__
