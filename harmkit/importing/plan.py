"""From an index of headers to a plan: which PET series become scans, their subject, site, covariates and masks.

Nothing is read beyond headers here; every problem found is collected (not
raised) so that ``harmkit import`` reports all of them at once.
"""

from __future__ import annotations

import csv
import fnmatch
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import HarmkitError
from .index import MULTIFRAME_PET, FileRecord, Index, Series

#: Columns of a --site-map file that match header values (glob patterns, case-insensitive).
SITE_MAP_KEYS = (
    "institution",
    "station",
    "manufacturer",
    "model",
    "reconstruction",
    "kernel",
    "series_description",
    "patient_id",
    "study_uid",
    "series_uid",
)
BROKEN_FIX = "re-export or copy the file again, or delete it; --skip-broken imports the rest without it"


@dataclass(frozen=True)
class ImportProblem:
    """One problem: the file it is about, what is wrong and what to do, and the PET series it keeps out."""

    path: str | None
    message: str
    series: tuple[str, ...] = ()

    def __str__(self) -> str:
        return f"{self.path}: {self.message}" if self.path else self.message


@dataclass(frozen=True)
class RoiSpec:
    """``--roi PATTERN[=MASK]``: ROIs whose name matches ``pattern`` become mask ``mask``."""

    pattern: str
    mask: str

    @classmethod
    def parse(cls, text: str) -> "RoiSpec":
        pattern, _, mask = str(text).partition("=")
        pattern, mask = pattern.strip(), mask.strip()
        if not pattern:
            raise HarmkitError(f"--roi {text!r}: give a name pattern, e.g. --roi 'GTV*=lesion'")
        if not mask:
            mask = re.sub(r"[^a-z0-9]+", "_", re.sub(r"[*?\[\]]", "", pattern.lower())).strip("_")
            if not mask:
                raise HarmkitError(f"--roi {text!r}: name the mask, e.g. --roi '{pattern}=lesion'")
        if not re.fullmatch(r"[A-Za-z0-9_-]+", mask):
            raise HarmkitError(f"--roi {text!r}: mask name {mask!r} may hold only letters, digits, '-' and '_'")
        return cls(pattern, mask)

    def matches(self, name: str) -> bool:
        return fnmatch.fnmatchcase(name.strip().casefold(), self.pattern.casefold())


@dataclass(frozen=True)
class MaskSource:
    """Where one mask comes from: an ROI of an RTSTRUCT or a segment of a SEG."""

    kind: str  # "rtstruct" or "seg"
    path: str
    number: int
    name: str


@dataclass
class PlannedScan:
    """One PET series that becomes one manifest row."""

    series: Series
    slices: list[FileRecord]
    site: str
    site_group: str | None
    covariates: dict[str, Any]
    subject_id: str = ""
    pair_id: str | None = None
    masks: dict[str, tuple[MaskSource, ...]] = field(default_factory=dict)  # several with --merge-rois

    @property
    def label(self) -> str:
        return f"PET series {self.series.uid} ({len(self.slices)} files in {self.series.folder})"


@dataclass
class Plan:
    """The scans to write, the problems found, and notes for the summary."""

    scans: list[PlannedScan] = field(default_factory=list)
    problems: list[ImportProblem] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    roi_names: dict[str, int] = field(default_factory=dict)  # every ROI/segment name found, with its count


def read_site_map(path: str | os.PathLike) -> list[dict[str, str]]:
    """Rows of a ``--site-map`` CSV: ``site``, optional ``site_group``, and match columns (:data:`SITE_MAP_KEYS`)."""
    path = Path(path)
    if not path.is_file():
        raise HarmkitError(f"--site-map {path}: file not found")
    try:
        with path.open(newline="", encoding="utf-8-sig") as handle:
            reader = csv.DictReader(handle)
            columns = [c.strip() for c in reader.fieldnames or []]
            rows = [{(k or "").strip(): (v or "").strip() for k, v in row.items() if k} for row in reader]
    except (UnicodeDecodeError, csv.Error) as exc:
        raise HarmkitError(f"--site-map {path}: not a readable CSV file ({exc})") from None
    unknown = [c for c in columns if c not in (*SITE_MAP_KEYS, "site", "site_group")]
    keys = [c for c in columns if c in SITE_MAP_KEYS]
    if "site" not in columns or not keys or unknown:
        problem = (
            f"unknown column(s) {', '.join(unknown)}"
            if unknown
            else "no 'site' column"
            if "site" not in columns
            else "no column to match"
        )
        raise HarmkitError(
            f"--site-map {path}: {problem}; give a 'site' column (optional 'site_group') and one or "
            f"more of {', '.join(SITE_MAP_KEYS)} (glob patterns, e.g. institution='*Montreal*')"
        )
    for number, row in enumerate(rows, start=1):
        if not row.get("site"):
            raise HarmkitError(f"--site-map {path}: row {number} has no site; fill its 'site' cell")
        if not any(row.get(k) for k in keys):
            raise HarmkitError(
                f"--site-map {path}: row {number} matches everything (all of {', '.join(keys)} "
                f"empty); fill at least one, or use '*' on purpose"
            )
    return rows


def make_plan(
    index: Index,
    rois: list[RoiSpec],
    site_map: list[dict[str, str]] | None = None,
    pairs: bool = False,
    merge_rois: bool = False,
) -> Plan:
    """Choose the scans, their sites, subjects and masks from ``index``; collect every problem."""
    plan = Plan()
    broken_series: dict[str, list[FileRecord]] = {}
    for record in index.broken:
        if record.series_uid:
            broken_series.setdefault(record.series_uid, []).append(record)
    pet_uids = {s.uid for s in index.pet_series()}
    for record in index.broken:
        ruled_out = (record.series_uid,) if record.series_uid in pet_uids else ()
        plan.problems.append(
            ImportProblem(
                record.path,
                f"not a readable DICOM file: {record.problem}; {BROKEN_FIX}",
                ruled_out,
            )
        )
    used_rows: set[int] = set()
    for series in index.pet_series():
        if series.uid in broken_series:
            continue  # reported above: a series with a damaged file is not a whole volume
        planned = _plan_series(series, plan, site_map, used_rows)
        if planned is not None:
            plan.scans.append(planned)
    if site_map is not None:
        unused = [str(i + 1) for i in range(len(site_map)) if i not in used_rows]
        if unused:
            plan.notes.append(f"--site-map row(s) {', '.join(unused)} matched no PET series")
    _name_subjects(plan.scans, pairs, plan.notes)
    if rois:
        _choose_masks(index, plan, rois, merge_rois)
    for record in index.structures:
        for _, name, _, _ in record.regions:
            plan.roi_names[name] = plan.roi_names.get(name, 0) + 1
    return plan


def _plan_series(series: Series, plan: Plan, site_map, used_rows: set[int]) -> PlannedScan | None:
    first = series.files[0]
    header = first.header
    where = f"PET series {series.uid} ({len(series.files)} files in {series.folder})"
    if series.sop_class in MULTIFRAME_PET or header.get("frames", 1) > 1:
        plan.problems.append(
            ImportProblem(
                first.path,
                f"{where} is {MULTIFRAME_PET.get(series.sop_class, 'multi-frame')} PET; harmkit imports "
                f"classic PET Image Storage (one file per slice): convert it (e.g. with dcm2niix, then write "
                f"the manifest by hand) or export it from the scanner as one file per slice",
                (series.uid,),
            )
        )
        return None
    corrected = header.get("corrected") or []
    if corrected and "ATTN" not in corrected:
        plan.notes.append(f"{where}: left out, not attenuation corrected (CorrectedImage {' '.join(corrected)})")
        return None
    slices, problem = _ordered_slices(series)
    if problem:
        plan.problems.append(ImportProblem(series.files[0].path, f"{where}: {problem}", (series.uid,)))
        return None
    site, site_group = _site(header, series, site_map, used_rows)
    if site is None:
        plan.notes.append(
            f"{where}: no InstitutionName, StationName, Manufacturer or model in its header; "
            f"site 'unknown' (name sites with --site-map)"
        )
        site = "unknown"
    covariates = _covariates(series, slices)
    return PlannedScan(series, slices, site, site_group, covariates)


def _ordered_slices(series: Series) -> tuple[list[FileRecord], str]:
    """The slices in order along the slice normal, or why the series is not one regular volume."""
    files = series.files
    if any(f.position is None or f.orientation is None or len(f.orientation) != 6 for f in files):
        return (
            [],
            "a slice lacks ImagePositionPatient or ImageOrientationPatient; export the series with its geometry",
        )
    orientation = _vector(files[0].orientation)
    if any(not np.allclose(_vector(f.orientation), orientation, atol=1e-4) for f in files):
        return [], "its slices have different orientations; it is not one volume"
    if len(files) < 2:
        return [], "it has a single slice; harmkit imports 3D PET volumes"
    normal = np.cross(orientation[:3], orientation[3:])
    heights = np.array([float(np.dot(_vector(f.position), normal)) for f in files])
    order = np.argsort(heights, kind="stable")
    heights = heights[order]
    steps = np.diff(heights)
    step = float(np.median(steps))
    if step <= 1e-3 or np.any(steps < 1e-3):
        repeats = int(np.sum(steps < 1e-3))
        return [], (
            f"{repeats} slice(s) repeat a position: a dynamic or gated series (several frames per position)? "
            f"harmkit imports static PET; export one frame (or the summed image)"
        )
    irregular = np.abs(steps - step) > max(0.05, 0.01 * step)
    if irregular.any():
        k = int(np.argmax(irregular))
        if np.isclose(steps[k] / step, round(steps[k] / step), rtol=0.01) and steps[k] > step:
            missing = int(round(steps[k] / step)) - 1
            return [], (
                f"{missing} slice(s) missing between z = {heights[k]:.2f} and {heights[k + 1]:.2f} mm (slices "
                f"every {step:.2f} mm); copy the missing files, or --skip-broken to import the rest"
            )
        return [], (
            f"irregular slice spacing ({steps.min():.2f} to {steps.max():.2f} mm); harmkit imports regularly "
            f"spaced volumes"
        )
    return [files[i] for i in order], ""


def _site(header: dict, series: Series, site_map, used_rows: set[int]) -> tuple[str | None, str | None]:
    values = {k: str(header.get(k, "") or "") for k in SITE_MAP_KEYS}
    values.update(patient_id=series.patient_id, study_uid=series.study_uid, series_uid=series.uid)
    for number, row in enumerate(site_map or []):
        if all(fnmatch.fnmatchcase(values[k].casefold(), row[k].casefold()) for k in SITE_MAP_KEYS if row.get(k)):
            used_rows.add(number)
            return row["site"], row.get("site_group") or None
    default = (
        header.get("institution")
        or header.get("station")
        or " ".join(v for v in (header.get("manufacturer"), header.get("model")) if v)
    )
    return (default or None), None


def _covariates(series: Series, slices: list[FileRecord]) -> dict[str, Any]:
    header = slices[0].header
    spacing = header.get("pixel_spacing") or [None, None]
    step = abs(
        float(
            np.dot(
                np.subtract(_vector(slices[1].position), _vector(slices[0].position)),
                np.cross(
                    _vector(slices[0].orientation)[:3],
                    _vector(slices[0].orientation)[3:],
                ),
            )
        )
    )
    voxel = f"{spacing[1]:.2f}x{spacing[0]:.2f}x{step:.2f}" if all(v is not None for v in spacing[:2]) else ""
    dose, uptake = header.get("dose_bq"), header.get("uptake_s")
    return {
        "patient_id": series.patient_id,
        "institution": header.get("institution") or None,
        "manufacturer": header.get("manufacturer") or None,
        "model": header.get("model") or None,
        "reconstruction": header.get("reconstruction") or None,
        "kernel": header.get("kernel") or None,
        "series_description": header.get("series_description") or None,
        "matrix": f"{header.get('columns')}x{header.get('rows')}x{len(slices)}",
        "voxel_mm": voxel or None,
        "injected_dose_mbq": round(dose / 1e6, 2) if dose else None,
        "uptake_min": round(uptake / 60, 1) if uptake is not None else None,
        "weight_kg": header.get("weight_kg"),
        "age": header.get("age"),
        "sex": header.get("sex") or None,
    }


def _name_subjects(scans: list[PlannedScan], pairs: bool, notes: list[str]) -> None:
    """Subject ids from PatientID (suffixed by site, then by series, when a patient has several PET series)."""
    by_patient: dict[str, list[PlannedScan]] = {}
    for scan in scans:
        patient = scan.series.patient_id or scan.series.study_uid or scan.series.uid
        by_patient.setdefault(patient, []).append(scan)
    taken: set[str] = set()
    for patient, group in by_patient.items():
        sites = [s.site for s in group]
        for scan in sorted(
            group,
            key=lambda s: (
                s.site,
                s.slices[0].header.get("series_time", ""),
                s.series.uid,
            ),
        ):
            if len(group) == 1:
                name = patient
            elif sites.count(scan.site) == 1:
                name = f"{patient}_{scan.site}"
            else:
                name = f"{patient}_{scan.site}_{scan.slices[0].header.get('series_number') or 1}"
            base, n = name, 2
            while name.casefold() in taken:
                name, n = f"{base}_{n}", n + 1
            taken.add(name.casefold())
            scan.subject_id = name
        if pairs and len(group) > 1:
            groups = [s.site_group or s.site for s in group]
            if len(set(groups)) == len(groups):
                for scan in group:
                    scan.pair_id = patient
            else:
                notes.append(
                    f"patient {patient}: not paired, {len(group)} PET series but two at one site "
                    f"({', '.join(sorted(set(g for g in groups if groups.count(g) > 1)))})"
                )


def _choose_masks(index: Index, plan: Plan, rois: list[RoiSpec], merge_rois: bool) -> None:
    """Link every RTSTRUCT/SEG to the PET series it belongs to and pick each scan's ROI for every --roi."""
    by_uid = {scan.series.uid: scan for scan in plan.scans}
    by_frame: dict[str, list[PlannedScan]] = {}
    for scan in plan.scans:
        by_frame.setdefault(scan.series.frame_uid, []).append(scan)
    linked: dict[str, list[FileRecord]] = {uid: [] for uid in by_uid}
    unlinked_by_study: dict[str, list[str]] = {}
    pet_uids = {s.uid for s in index.pet_series()}
    for record in index.structures:
        kind = "RTSTRUCT" if record.kind == "rtstruct" else "SEG"
        referenced = list(record.referenced_series) + [
            index.sop_series[s] for s in record.referenced_sops if s in index.sop_series
        ]
        referenced = list(dict.fromkeys(referenced))
        direct = [uid for uid in referenced if uid in pet_uids]
        frames = set(record.frames) or ({record.frame_uid} if record.frame_uid else set())
        if direct:
            for uid in direct:
                if uid not in by_uid:
                    continue  # its PET series is left out (and reported) already
                scan = by_uid[uid]
                if frames and scan.series.frame_uid not in frames:
                    plan.problems.append(
                        ImportProblem(
                            record.path,
                            f"{kind} is on frame of reference {sorted(frames)[0]}, but the PET series it "
                            f"references ({uid}) is on {scan.series.frame_uid}: it was drawn on another "
                            f"image (a registered CT or MR?). Resample it onto the PET and export it on the "
                            f"PET's frame of reference, or delete it",
                            (uid,),
                        )
                    )
                    continue
                linked[uid].append(record)
            continue
        sharing = [scan for frame in frames for scan in by_frame.get(frame, [])]
        if sharing:
            for scan in sharing:
                linked[scan.series.uid].append(record)
            known = [uid for uid in referenced if uid in index.series]
            drawn_on = (
                f"series {known[0]} ({index.series[known[0]].modality})" if known else "a series not in the folder"
            )
            plan.notes.append(
                f"{record.path}: {kind} drawn on {drawn_on}, placed on PET series "
                f"{', '.join(s.series.uid for s in sharing)} through their shared frame of reference"
            )
            continue
        if referenced and all(uid in index.series for uid in referenced):
            unlinked_by_study.setdefault(record.study_uid, []).append(
                f"{kind} {record.path} (on {index.series[referenced[0]].modality} series {referenced[0]}, another "
                f"frame of reference)"
            )
            continue
        missing = [uid for uid in record.referenced_series if uid not in index.series] or ["(none named)"]
        plan.problems.append(
            ImportProblem(
                record.path,
                f"{kind} references series {missing[0]}, which is not under {index.root}, and no PET series "
                f"there shares its frame of reference; add the series it was drawn on (the PET, or the CT "
                f"of the same PET/CT) to the folder, or delete this file; --skip-broken imports the rest",
            )
        )
    rejected = {uid for p in plan.problems for uid in p.series}
    for scan in plan.scans:
        if scan.series.uid in rejected:
            continue
        sources = linked[scan.series.uid]
        for spec in rois:
            found = [
                (r, number, name, closed)
                for r in sources
                for number, name, _, closed in r.regions
                if spec.matches(name)
            ]
            if not found:
                plan.problems.append(
                    ImportProblem(
                        sources[0].path if sources else scan.slices[0].path,
                        _missing_roi(spec, scan, sources, unlinked_by_study),
                        (scan.series.uid,),
                    )
                )
                continue
            if len(found) > 1 and not merge_rois:
                names = "; ".join(f"{n!r} in {Path(r.path).name}" for r, _, n, _ in found)
                plan.problems.append(
                    ImportProblem(
                        found[0][0].path,
                        f"--roi '{spec.pattern}' is ambiguous for {scan.label}: {len(found)} ROIs "
                        f"match ({names}); use a narrower pattern, or --merge-rois to take their union",
                        (scan.series.uid,),
                    )
                )
                continue
            empty = [(r, n) for r, _, n, closed in found if closed == 0]
            if empty:
                record, name = empty[0]
                plan.problems.append(
                    ImportProblem(
                        record.path,
                        f"ROI {name!r} (--roi '{spec.pattern}') has no closed contour: it is empty; fix "
                        f"the structure set, or choose another ROI",
                        (scan.series.uid,),
                    )
                )
                continue
            scan.masks[spec.mask] = tuple(MaskSource(r.kind, r.path, number, name) for r, number, name, _ in found)


def _missing_roi(
    spec: RoiSpec,
    scan: PlannedScan,
    sources: list[FileRecord],
    unlinked: dict[str, list[str]],
) -> str:
    if sources:
        listed = "; ".join(
            f"{'RTSTRUCT' if r.kind == 'rtstruct' else 'SEG'} {Path(r.path).name}: "
            f"{', '.join(repr(n) for _, n, _, _ in r.regions) or 'no ROI'}"
            for r in sources
        )
        return (
            f"no ROI matches --roi '{spec.pattern}' for {scan.label} (subject {scan.subject_id}); ROIs there: "
            f"{listed}. Choose --roi from these names"
        )
    others = unlinked.get(scan.series.study_uid)
    hint = f" ({'; '.join(others)})" if others else ""
    return (
        f"no RTSTRUCT or SEG belongs to {scan.label} (subject {scan.subject_id}), so --roi '{spec.pattern}' "
        f"finds nothing{hint}; add its structure set or segmentation, or --skip-broken to import the other scans"
    )


def _vector(value: tuple[float, ...] | None) -> np.ndarray:
    """A header vector (position, orientation) the series check already found present."""
    if value is None:
        raise ValueError("a header vector is missing")  # the series check reports this case first
    return np.asarray(value, dtype=float)
