"""PET DICOM series: read with SimpleITK, convert Bq/mL to body-weight SUV from the header.

SUVbw = activity concentration [Bq/mL] × body weight [g] / injected dose
decayed to the scan reference time [Bq]. The header tags used are:

========================================  ===========  =====================================
tag                                       keyword      use
========================================  ===========  =====================================
(0054,1001) Units                         ``BQML``     convert; ``GML`` is already SUVbw
(0010,1030) PatientWeight                 kg           body weight
(0054,0016) RadiopharmaceuticalInformationSequence, first item:
(0018,1074)   RadionuclideTotalDose       Bq           injected activity
(0018,1075)   RadionuclideHalfLife        s            physical half-life
(0018,1078)   RadiopharmaceuticalStartDateTime         injection time (else 0018,1072 + date)
(0054,1102) DecayCorrection               START/ADMIN  decay reference of the voxel values
(0008,0021/0031) SeriesDate/SeriesTime                 scan start (START)
(0008,0022/0032) AcquisitionDate/Time                  scan start when earlier than SeriesTime
========================================  ===========  =====================================

SimpleITK does not expose sequence items, so the header is read with
``pydicom`` (pixels are read by SimpleITK, geometry preserved).
"""

from __future__ import annotations

import datetime as dt
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import SimpleITK as sitk

from .errors import HarmkitError

__all__ = [
    "read_pet_series_suv",
    "read_pet_files_suv",
    "suv_factor",
    "series_geometry",
    "uptake_seconds",
]


def read_pet_series_suv(folder: str | os.PathLike, series_id: str | None = None) -> sitk.Image:
    """Read the PET DICOM series in ``folder`` as a float32 SUVbw image.

    Voxels in Bq/mL (``Units = BQML``) are multiplied by :func:`suv_factor`;
    a series already in SUVbw (``GML``) is returned as stored. Any other unit,
    or a missing header tag needed for the conversion, raises
    :class:`~harmkit.errors.HarmkitError` naming the tag and the folder.
    Per-slice rescale slopes are applied (the series is read as float).
    ``series_id`` chooses one series when the folder holds several.
    """
    folder = Path(folder)
    return read_pet_files_suv(_series_files(folder, series_id), where=f"DICOM series in {folder}")


def read_pet_files_suv(files: Sequence[str | os.PathLike], where: str) -> sitk.Image:
    """Read the slices ``files`` of one PET series, in order along the slice normal, as a float32 SUVbw image.

    The conversion and its errors are those of :func:`read_pet_series_suv`;
    messages start with ``where`` (e.g. ``"PET series 1.2.3 in /data/p1"``).
    ``harmkit import`` reads series this way: one series may be spread over
    several folders, or share a folder with other series.
    """
    files = [str(f) for f in files]
    if not files:
        raise HarmkitError(f"{where}: no slices to read")
    reader = sitk.ImageSeriesReader()
    reader.SetFileNames(files)
    reader.SetOutputPixelType(sitk.sitkFloat64)
    reader.MetaDataDictionaryArrayUpdateOn()
    try:
        image = reader.Execute()
    except RuntimeError as exc:
        reason = str(exc).strip().splitlines()[-1] if str(exc).strip() else "unreadable"
        raise HarmkitError(f"{where} cannot be read ({reason})") from None

    def tag(key: str, index: int = 0) -> str:
        return reader.GetMetaData(index, key).strip() if reader.HasMetaDataKey(index, key) else ""

    modality = tag("0008|0060").upper()
    if modality and modality != "PT":
        raise HarmkitError(
            f"{where} has Modality {modality!r}, not PET ('PT'); harmkit reads PET images from "
            f"DICOM, give masks and other images as NIfTI/NRRD files"
        )
    units = tag("0054|1001").upper()
    if units == "GML":
        factor = 1.0
    elif units == "BQML":
        acquisition_times = [
            _datetime(tag("0008|0022", i) or tag("0008|0021", i), tag("0008|0032", i)) for i in range(len(files))
        ]
        factor = suv_factor(
            _read_header(files[0], where),
            acquisition_times=[t for t in acquisition_times if t],
            where=where,
        )
    elif not units:
        raise HarmkitError(
            f"{where}: missing tag Units (0054,1001); cannot tell whether voxels are Bq/mL or SUV. "
            f"Export the series with its PET header, or convert it to SUV NIfTI yourself"
        )
    else:
        raise HarmkitError(
            f"{where}: Units (0054,1001) is {units!r}; harmkit converts only BQML (Bq/mL) to SUVbw "
            f"(GML is used as is). Export the series in Bq/mL or as SUV"
        )
    return sitk.Cast(image * factor, sitk.sitkFloat32)


def suv_factor(
    header: Any,
    folder: str | os.PathLike = "",
    acquisition_times: list[dt.datetime] | None = None,
    where: str | None = None,
) -> float:
    """The factor that turns Bq/mL into SUVbw, from a pydicom dataset of one slice of the series.

    ``acquisition_times`` (every slice's AcquisitionDate/Time) let the scan
    reference time fall back to the earliest acquisition when the series time
    is later than it (series re-saved after post-processing). Messages name
    ``where``, else ``folder``.
    """
    where = where or (f"DICOM series in {folder}" if folder else "DICOM header")

    def missing(keyword: str, tag: str, why: str) -> HarmkitError:
        return HarmkitError(
            f"{where}: missing tag {keyword} {tag}; {why}. Add it to the header or export the series as SUV"
        )

    weight = _number(header.get("PatientWeight"))
    if not weight or weight <= 0:
        raise missing("PatientWeight", "(0010,1030)", "SUVbw needs the patient's weight in kg")
    sequence = header.get("RadiopharmaceuticalInformationSequence")
    if not sequence:
        raise missing(
            "RadiopharmaceuticalInformationSequence",
            "(0054,0016)",
            "it holds the injected dose, half-life and injection time",
        )
    item = sequence[0]
    dose = _number(item.get("RadionuclideTotalDose"))
    if not dose or dose <= 0:
        raise missing(
            "RadionuclideTotalDose",
            "(0018,1074)",
            "SUV needs the injected activity in Bq",
        )
    half_life = _number(item.get("RadionuclideHalfLife"))
    if not half_life or half_life <= 0:
        raise missing(
            "RadionuclideHalfLife",
            "(0018,1075)",
            "decay correction needs the half-life in s",
        )
    decay_correction = str(header.get("DecayCorrection", "") or "").strip().upper()
    if not decay_correction:
        raise missing(
            "DecayCorrection",
            "(0054,1102)",
            "it says to which time the voxel values are decay-corrected",
        )
    if decay_correction == "ADMIN":
        return weight * 1000.0 / dose  # voxels already decay-corrected to the injection time
    if decay_correction != "START":
        raise HarmkitError(
            f"{where}: DecayCorrection (0054,1102) is {decay_correction!r}; harmkit converts START or ADMIN series "
            f"to SUV. Reconstruct with decay correction to scan start, or convert to SUV yourself"
        )
    injection, scan_time = _injection_and_scan_times(header, item, acquisition_times)
    if injection is None:
        raise missing(
            "RadiopharmaceuticalStartDateTime",
            "(0018,1078) or RadiopharmaceuticalStartTime (0018,1072)",
            "decay correction needs the injection time",
        )
    if scan_time is None:
        raise missing(
            "SeriesTime",
            "(0008,0031) or AcquisitionTime (0008,0032)",
            "decay correction needs the scan start time",
        )
    elapsed = (scan_time - injection).total_seconds()
    if elapsed < 0:
        raise HarmkitError(
            f"{where}: injection time {injection:%Y-%m-%d %H:%M:%S} is after the scan start "
            f"{scan_time:%Y-%m-%d %H:%M:%S}; "
            f"check RadiopharmaceuticalStartTime (0018,1072) and SeriesTime (0008,0031)"
        )
    decayed_dose = dose * 2.0 ** (-elapsed / half_life)
    return weight * 1000.0 / decayed_dose


def _injection_and_scan_times(header: Any, item: Any, acquisition_times: list[dt.datetime] | None):
    """(injection, scan start) of a PET header and its first radiopharmaceutical item; ``None`` where unknown."""
    series_date = str(header.get("SeriesDate", "") or header.get("AcquisitionDate", "") or header.get("StudyDate", ""))
    injection = _datetime_value(item.get("RadiopharmaceuticalStartDateTime"))
    if injection is None:
        injection = _datetime(series_date, str(item.get("RadiopharmaceuticalStartTime", "") or ""))
    scan_time = _datetime(series_date, str(header.get("SeriesTime", "") or ""))
    earliest = (
        min(acquisition_times)
        if acquisition_times
        else _datetime(
            str(header.get("AcquisitionDate", "") or series_date),
            str(header.get("AcquisitionTime", "") or ""),
        )
    )
    if scan_time is None or (earliest is not None and earliest < scan_time):
        scan_time = earliest
    return injection, scan_time


def uptake_seconds(header: Any, acquisition_times: list[dt.datetime] | None = None) -> float | None:
    """Seconds from injection to scan start of a PET header (pydicom dataset), or ``None`` when a time is missing.

    The same times :func:`suv_factor` decays the dose with.
    """
    sequence = header.get("RadiopharmaceuticalInformationSequence")
    if not sequence:
        return None
    injection, scan_time = _injection_and_scan_times(header, sequence[0], acquisition_times)
    if injection is None or scan_time is None:
        return None
    return (scan_time - injection).total_seconds()


def series_geometry(folder: str | os.PathLike) -> dict:
    """Size, spacing, origin and direction of the PET series in ``folder`` (reads and converts it)."""
    image = read_pet_series_suv(folder)
    return {
        "size": tuple(int(v) for v in image.GetSize()),
        "spacing": tuple(float(v) for v in image.GetSpacing()),
        "origin": tuple(float(v) for v in image.GetOrigin()),
        "direction": tuple(float(v) for v in image.GetDirection()),
        "path": Path(folder),
    }


def _series_files(folder: Path, series_id: str | None) -> list[str]:
    if not folder.is_dir():
        raise HarmkitError(f"DICOM folder not found: {folder}")
    ids = list(sitk.ImageSeriesReader.GetGDCMSeriesIDs(str(folder)) or [])
    if not ids:
        raise HarmkitError(f"no DICOM series found in {folder}; give a folder of DICOM slices, or an image file")
    if series_id is None:
        if len(ids) > 1:
            raise HarmkitError(
                f"{folder} holds {len(ids)} DICOM series ({', '.join(ids)}); put each series in its own folder"
            )
        series_id = ids[0]
    elif series_id not in ids:
        raise HarmkitError(f"{folder}: no DICOM series {series_id!r}; series found: {', '.join(ids)}")
    return list(sitk.ImageSeriesReader.GetGDCMSeriesFileNames(str(folder), series_id))


def _read_header(path: str | os.PathLike, where: str):
    try:
        import pydicom
    except ImportError:  # pragma: no cover - pydicom is a core dependency
        raise HarmkitError("reading PET DICOM headers needs pydicom: pip install pydicom") from None
    try:
        return pydicom.dcmread(path, stop_before_pixels=True)
    except Exception as exc:  # pydicom raises several types for corrupt files
        raise HarmkitError(f"{where}: cannot read the header of {path} ({exc})") from None


def _number(value) -> float | None:
    if value is None or value == "":
        return None
    try:
        return float(value)
    except (TypeError, ValueError):
        return None


def _time(text: str) -> dt.time | None:
    text = text.strip().replace(":", "")
    if not text:
        return None
    whole, _, fraction = text.partition(".")
    if not whole.isdigit() or len(whole) < 2:
        return None
    whole = whole.ljust(6, "0")
    micro = int((fraction + "000000")[:6]) if fraction.isdigit() else 0
    try:
        return dt.time(int(whole[0:2]), int(whole[2:4]), int(whole[4:6]), micro)
    except ValueError:
        return None


def _date(text: str) -> dt.date | None:
    text = text.strip().replace(".", "").replace("-", "")
    if len(text) != 8 or not text.isdigit():
        return None
    try:
        return dt.date(int(text[0:4]), int(text[4:6]), int(text[6:8]))
    except ValueError:
        return None


def _datetime(date_text: str, time_text: str) -> dt.datetime | None:
    """Combine a DICOM DA and TM; a missing date gives an arbitrary fixed day (times then compare within a day)."""
    time = _time(time_text or "")
    if time is None:
        return None
    date = _date(date_text or "") or dt.date(2000, 1, 1)
    return dt.datetime.combine(date, time)


def _datetime_value(value) -> dt.datetime | None:
    """Parse a DICOM DT (YYYYMMDDHHMMSS.FFFFFF, optional &ZZXX offset, ignored)."""
    if value is None:
        return None
    text = str(value).strip()
    for sign in "+-":
        if sign in text[8:]:
            text = text[: 8 + text[8:].index(sign)]
    if len(text) < 10:
        return None
    return _datetime(text[:8], text[8:])
