"""Check a cohort before using it: every problem at once, one message per problem.

:func:`validate_cohort` opens every scan (headers first, voxels one scan at a
time so memory stays bounded) and reports, naming the manifest row and the
subject: missing or unreadable files, image/mask geometry mismatches, empty
masks, NaN or infinite voxels, duplicate subject ids, site groups with fewer
scans than an analysis needs, and outcomes that are not binary. It also
summarises the cohort per site like Table 1 of Haberl et al. (2024): scans,
matrix sizes, voxel sizes and outcome counts.

>>> report = validate_manifest("data/manifest.csv")   # doctest: +SKIP
>>> print(report.summary_table())                     # doctest: +SKIP
>>> report.raise_for_errors()                         # doctest: +SKIP
"""

from __future__ import annotations

import os
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np
import SimpleITK as sitk

from .data import Cohort, Scan
from .errors import HarmkitError, Problem

__all__ = ["Problem", "ScanInfo", "ValidationReport", "validate_cohort", "validate_manifest"]

# A voxel maximum above this is implausible for SUV; such images are usually in Bq/mL.
SUV_PLAUSIBLE_MAX = 500.0


@dataclass(frozen=True)
class ScanInfo:
    """Header facts of one readable scan, used for the per-site summary."""

    subject_id: str
    site: str
    site_group: str
    row: int | None
    size: tuple[int, ...]
    spacing: tuple[float, ...]
    outcome: int | None


@dataclass
class ValidationReport:
    """What :func:`validate_cohort` found.

    ``problems`` lists every problem (errors and warnings) in manifest order;
    ``scans`` the header facts of every readable image. ``ok`` is true when
    there is no error (warnings allowed).
    """

    cohort: Cohort
    problems: list[Problem] = field(default_factory=list)
    scans: list[ScanInfo] = field(default_factory=list)
    min_scans_per_site: int = 1

    @property
    def errors(self) -> list[Problem]:
        return [p for p in self.problems if p.severity == "error"]

    @property
    def warnings(self) -> list[Problem]:
        return [p for p in self.problems if p.severity == "warning"]

    @property
    def ok(self) -> bool:
        return not self.errors

    def summary_table(self):
        """Per-site summary (a :class:`pandas.DataFrame`), one row per site and voxel size, like Table 1.

        Columns: ``site``, ``site_group``, ``scans``, ``matrix`` (``x×y×z``;
        a range ``min–max`` per axis when scans differ), ``voxel_mm``
        (``x×y×z``), ``outcome_1``, ``outcome_0``, ``outcome_missing``.
        Scans whose image could not be read count in ``unreadable``.
        """
        import pandas as pd

        rows = []
        readable = {(s.row, s.subject_id) for s in self.scans}
        for site in self.cohort.sites:
            site_scans = [s for s in self.scans if s.site == site]
            groups: dict[str, list[ScanInfo]] = {}
            for info in site_scans:
                groups.setdefault(_format_spacing(info.spacing), []).append(info)
            unreadable = sum(1 for s in self.cohort if s.site == site and (s.row, s.subject_id) not in readable)
            for voxel, infos in sorted(groups.items(), key=lambda kv: (-len(kv[1]), kv[0])):
                outcomes = Counter(i.outcome for i in infos)
                rows.append(
                    {
                        "site": site,
                        "site_group": infos[0].site_group,
                        "scans": len(infos),
                        "matrix": _format_sizes([i.size for i in infos]),
                        "voxel_mm": voxel,
                        "outcome_1": outcomes.get(1, 0),
                        "outcome_0": outcomes.get(0, 0),
                        "outcome_missing": outcomes.get(None, 0),
                        "unreadable": 0,
                    }
                )
            if unreadable:
                group = next(s.group for s in self.cohort if s.site == site)
                rows.append(
                    {"site": site, "site_group": group, "scans": 0, "matrix": "", "voxel_mm": "", "outcome_1": 0,
                     "outcome_0": 0, "outcome_missing": 0, "unreadable": unreadable}
                )
        columns = ["site", "site_group", "scans", "matrix", "voxel_mm", "outcome_1", "outcome_0", "outcome_missing", "unreadable"]
        return pd.DataFrame(rows, columns=columns)

    def raise_for_errors(self) -> None:
        """Raise :class:`harmkit.errors.ManifestError` listing every error, if there is any."""
        from .errors import ManifestError

        if self.errors:
            raise ManifestError(self.cohort.manifest or "cohort", self.errors)

    def __str__(self) -> str:
        lines = [f"{len(self.cohort)} scans, {len(self.cohort.sites)} sites: {len(self.errors)} error(s), {len(self.warnings)} warning(s)"]
        lines += [f"  {p.severity}: {p}" for p in self.problems]
        return "\n".join(lines)


def validate_manifest(
    manifest: str | os.PathLike,
    min_scans_per_site: int = 2,
    require_outcome: bool = False,
    masks: Sequence[str] | None = None,
    check_voxels: bool = True,
    progress: bool = False,
    jobs: int | None = 1,
    scheduler: str | None = None,
) -> ValidationReport:
    """Read ``manifest`` and validate it: structural problems of the CSV plus :func:`validate_cohort`.

    Unlike :func:`harmkit.load_cohort`, a duplicate subject or a bad outcome
    does not stop reading: every problem is in the report. A file that is not
    a manifest at all (missing, no required columns) raises
    :class:`~harmkit.errors.HarmkitError`.
    """
    from .manifest import read_manifest_problems

    cohort, structural = read_manifest_problems(manifest)
    return _validate(cohort, structural, min_scans_per_site, require_outcome, masks, check_voxels, progress, jobs, scheduler)


def validate_cohort(
    cohort: Cohort | Iterable[Scan],
    min_scans_per_site: int = 2,
    require_outcome: bool = False,
    masks: Sequence[str] | None = None,
    check_voxels: bool = True,
    progress: bool = False,
    jobs: int | None = 1,
    scheduler: str | None = None,
) -> ValidationReport:
    """Check every scan of ``cohort`` and return a :class:`ValidationReport` (nothing is written).

    Parameters
    ----------
    min_scans_per_site:
        Fewest scans a site group may have (harmonizers learn per-group
        statistics: ComBat needs at least 2, a CycleGAN far more). A smaller
        group is an error naming the group and its count.
    require_outcome:
        Every scan needs a 0/1 outcome (for prediction benchmarks); both
        classes must be present.
    masks:
        Mask names every scan must have (e.g. ``["lesion"]``). Masks present
        in the manifest are always checked.
    check_voxels:
        Read voxels to find NaN/infinite values and empty masks (one scan in
        memory at a time). ``False`` checks headers only, which is much faster.
    progress:
        Show a rich progress bar.
    jobs, scheduler:
        Check scans in parallel through :func:`harmkit.execution.get_executor`
        (default: one scan after the other in this process; ``jobs=None``
        uses every core, ``scheduler`` a Dask cluster).
    """
    if not isinstance(cohort, Cohort):
        cohort = Cohort(list(cohort))
    from .manifest import duplicate_subject_problems

    structural = duplicate_subject_problems(cohort)
    for scan in cohort:
        if scan.outcome is not None and scan.outcome not in (0, 1):
            structural.append(_problem(scan, f"outcome {scan.outcome!r} is not binary; use 0 or 1 (None when unknown)"))
    return _validate(cohort, structural, min_scans_per_site, require_outcome, masks, check_voxels, progress, jobs, scheduler)


def _validate(cohort, structural, min_scans_per_site, require_outcome, masks, check_voxels, progress, jobs=1, scheduler=None) -> ValidationReport:
    from .execution import get_executor

    if min_scans_per_site < 1:
        raise HarmkitError(f"min_scans_per_site must be at least 1, got {min_scans_per_site}")
    report = ValidationReport(cohort, list(structural), min_scans_per_site=min_scans_per_site)
    required_masks = list(masks or [])
    tasks = [(scan, required_masks, check_voxels) for scan in cohort]
    with get_executor(jobs=jobs, scheduler=scheduler, progress=progress) as executor:
        results = executor.map(_scan_task, tasks, label="validating")
    for scan, result in zip(cohort, results):
        if result.error is not None:
            report.problems.append(_problem(scan, f"could not be checked: {result.error}"))
            continue
        info, problems = result.value
        if info is not None:
            report.scans.append(info)
        report.problems += problems
    report.problems += _cohort_problems(cohort, min_scans_per_site, require_outcome)
    report.problems.sort(key=lambda p: (p.row is None, p.row or 0))
    return report


def _problem(scan: Scan, message: str, severity: str = "error") -> Problem:
    return Problem(message, row=scan.row, subject=scan.subject_id or None, site=scan.site or None, severity=severity)


def _scan_task(task: tuple) -> tuple[ScanInfo | None, list[Problem]]:
    """One scan's checks as a picklable task for the executor: (header facts or None, problems)."""
    scan, required_masks, check_voxels = task
    problems: list[Problem] = []
    info = _check_scan(scan, required_masks, check_voxels, problems)
    return info, problems


def _check_scan(scan: Scan, required_masks: list[str], check_voxels: bool, problems: list[Problem]) -> ScanInfo | None:
    """Header checks, then (optionally) voxel checks of one scan; returns its header facts if readable."""
    header = _header(scan.image, "image", scan, problems)
    for name in required_masks:
        if name not in scan.masks:
            problems.append(_problem(scan, f"no mask {name!r}; fill the 'mask_{name}' column for this row"))
    mask_headers = {name: _header(value, f"mask {name!r}", scan, problems) for name, value in sorted(scan.masks.items())}
    if header is None:
        return None
    for name, mask_header in mask_headers.items():
        if mask_header is not None:
            mismatch = _geometry_mismatch(header, mask_header)
            if mismatch:
                problems.append(
                    _problem(
                        scan,
                        f"mask {name!r} is not on the image grid ({mismatch}); resample the mask onto the image "
                        f"(nearest neighbour) or fix the mask path",
                    )
                )
                mask_headers[name] = None
    if check_voxels:
        _check_voxels(scan, header, {n: h for n, h in mask_headers.items() if h is not None}, problems)
    return ScanInfo(scan.subject_id, scan.site, scan.group, scan.row, header["size"], header["spacing"], scan.outcome)


def _header(value, what: str, scan: Scan, problems: list[Problem]) -> dict | None:
    """Size/spacing/origin/direction of an image or file without reading voxels (None with a problem if unusable)."""
    if isinstance(value, sitk.Image):
        return _geometry_of(value)
    if value is None or str(value) == "":
        return None  # the manifest reader already reported the empty cell
    path = Path(value)
    if path.is_dir():
        from .dicom import series_geometry

        try:
            return series_geometry(path)
        except HarmkitError as exc:
            problems.append(_problem(scan, f"{what}: {exc}"))
            return None
    if not path.exists():
        problems.append(_problem(scan, f"{what} file not found: {path}; fix the path (relative to the manifest) or remove the row"))
        return None
    reader = sitk.ImageFileReader()
    reader.SetFileName(str(path))
    try:
        reader.ReadImageInformation()
    except RuntimeError as exc:
        reason = str(exc).strip().splitlines()[-1] if str(exc).strip() else "unreadable"
        problems.append(
            _problem(scan, f"{what} {path} cannot be read ({reason}); expected NIfTI, NRRD, MHA or a DICOM series folder")
        )
        return None
    if reader.GetNumberOfComponents() != 1:
        problems.append(_problem(scan, f"{what} {path} has {reader.GetNumberOfComponents()} components per voxel; expected a scalar image"))
        return None
    return {
        "size": tuple(int(v) for v in reader.GetSize()),
        "spacing": tuple(float(v) for v in reader.GetSpacing()),
        "origin": tuple(float(v) for v in reader.GetOrigin()),
        "direction": tuple(float(v) for v in reader.GetDirection()),
        "path": path,
    }


def _geometry_of(image: sitk.Image) -> dict:
    return {
        "size": tuple(int(v) for v in image.GetSize()),
        "spacing": tuple(float(v) for v in image.GetSpacing()),
        "origin": tuple(float(v) for v in image.GetOrigin()),
        "direction": tuple(float(v) for v in image.GetDirection()),
        "path": None,
    }


def _geometry_mismatch(image: dict, mask: dict, tolerance: float = 1e-4) -> str:
    """Empty when the two headers describe one grid, else what differs (same tolerances as imageio.same_geometry)."""
    if len(image["size"]) != len(mask["size"]):
        return f"image is {len(image['size'])}D, mask is {len(mask['size'])}D"
    if image["size"] != mask["size"]:
        return f"size {_format_size(mask['size'])} vs image {_format_size(image['size'])}"
    if not np.allclose(image["spacing"], mask["spacing"], atol=tolerance):
        return f"spacing {_format_spacing(mask['spacing'])} mm vs image {_format_spacing(image['spacing'])} mm"
    if not np.allclose(image["origin"], mask["origin"], atol=tolerance * 10):
        return f"origin {_format_point(mask['origin'])} vs image {_format_point(image['origin'])}"
    if not np.allclose(image["direction"], mask["direction"], atol=tolerance):
        return "direction (orientation) differs from the image's"
    return ""


def _check_voxels(scan: Scan, header: dict, mask_headers: dict, problems: list[Problem]) -> None:
    try:
        image = scan.load_image()
    except HarmkitError as exc:
        problems.append(_problem(scan, f"image cannot be read: {exc}"))
        return
    voxels = sitk.GetArrayViewFromImage(image)
    finite = np.isfinite(voxels)
    bad = int(voxels.size - np.count_nonzero(finite))
    n_nan = int(np.count_nonzero(np.isnan(voxels))) if bad else 0
    if not bad and isinstance(scan.image, (str, Path)) and str(scan.image).endswith((".nii", ".nii.gz")):
        # SimpleITK's NIfTI reader silently turns NaN/inf into 0: look at the stored values
        bad, n_nan = _nifti_non_finite(Path(scan.image))
    if bad:
        problems.append(
            _problem(
                scan,
                f"image has {bad} non-finite voxel(s) ({n_nan} NaN, {bad - n_nan} infinite) in {_source(scan.image)}; "
                f"replace them (e.g. with 0 outside the body) before harmonizing",
            )
        )
    elif voxels.size:
        peak = float(voxels.max())
        if peak > SUV_PLAUSIBLE_MAX:
            problems.append(
                _problem(
                    scan,
                    f"image maximum {peak:.4g} is implausible for SUV; is it in Bq/mL? Convert it to SUVbw "
                    f"(harmkit reads PET DICOM series in Bq/mL and converts them)",
                    severity="warning",
                )
            )
    del voxels, finite, image
    for name in mask_headers:
        try:
            mask = scan.load_mask(name)
        except HarmkitError as exc:
            problems.append(_problem(scan, f"mask {name!r} cannot be read: {exc}"))
            continue
        if not np.any(sitk.GetArrayViewFromImage(mask)):
            problems.append(
                _problem(scan, f"mask {name!r} is empty (no non-zero voxel) in {_source(scan.masks[name])}; fix the segmentation or remove the row")
            )


_NIFTI_FLOAT_TYPES = {16: np.float32, 64: np.float64}


def _nifti_non_finite(path: Path, chunk_bytes: int = 1 << 24) -> tuple[int, int]:
    """(non-finite, NaN) counts of the voxels stored in a float NIfTI-1/2 file, streamed in chunks.

    SimpleITK (nifticlib) replaces non-finite floats with 0 when it reads a
    NIfTI file, so they must be counted in the raw data. Non-float files and
    headers this function does not understand give (0, 0).
    """
    import gzip
    import struct

    opener = gzip.open if path.name.endswith(".gz") else open
    try:
        with opener(path, "rb") as handle:
            head = handle.read(540)
            if len(head) < 348:
                return 0, 0
            for order in "<>":
                size = struct.unpack_from(order + "i", head, 0)[0]
                if size in (348, 540):
                    break
            else:
                return 0, 0
            if size == 348:
                dims = struct.unpack_from(order + "8h", head, 40)
                datatype = struct.unpack_from(order + "h", head, 70)[0]
                offset = int(struct.unpack_from(order + "f", head, 108)[0])
            else:
                datatype = struct.unpack_from(order + "h", head, 12)[0]
                dims = struct.unpack_from(order + "8q", head, 16)
                offset = struct.unpack_from(order + "q", head, 168)[0]
            if datatype not in _NIFTI_FLOAT_TYPES or not 1 <= dims[0] <= 7:
                return 0, 0
            dtype = np.dtype(_NIFTI_FLOAT_TYPES[datatype]).newbyteorder(order)
            remaining = int(np.prod([max(d, 1) for d in dims[1 : dims[0] + 1]], dtype=np.int64)) * dtype.itemsize
            handle.seek(max(offset, size))
            bad = nan = 0
            while remaining > 0:
                block = handle.read(min(chunk_bytes, remaining))
                if not block:
                    break
                block = block[: len(block) - len(block) % dtype.itemsize]
                values = np.frombuffer(block, dtype=dtype)
                bad += int(values.size - np.count_nonzero(np.isfinite(values)))
                nan += int(np.count_nonzero(np.isnan(values)))
                remaining -= len(block)
    except (OSError, EOFError, struct.error):
        return 0, 0
    return bad, nan


def _cohort_problems(cohort: Cohort, min_scans_per_site: int, require_outcome: bool) -> list[Problem]:
    problems: list[Problem] = []
    counts = Counter(s.group for s in cohort if s.site)
    for group, count in counts.items():
        if count < min_scans_per_site:
            sites = sorted({s.site for s in cohort if s.group == group})
            members = "" if sites == [group] else f" (sites {', '.join(sites)})"
            problems.append(
                Problem(
                    f"site group {group!r}{members} has {count} scan(s) but at least {min_scans_per_site} are needed; "
                    f"add scans, merge it with a site of the same scanner and protocol (site_group column), or remove it"
                )
            )
    if require_outcome:
        for scan in cohort:
            if scan.outcome is None:
                problems.append(_problem(scan, "no outcome; this analysis needs a 0/1 outcome for every scan"))
        classes = {s.outcome for s in cohort if s.outcome in (0, 1)}
        if len(cohort) and len(classes) == 1:
            only = classes.pop()
            problems.append(Problem(f"every known outcome is {only}; a prediction model needs scans of both classes (0 and 1)"))
    return problems


def _source(value) -> str:
    return "memory" if isinstance(value, sitk.Image) else str(value)


def _format_size(size: Sequence[int]) -> str:
    return "×".join(str(v) for v in size)


def _format_sizes(sizes: list[tuple[int, ...]]) -> str:
    if not sizes:
        return ""
    dims = max(len(s) for s in sizes)
    parts = []
    for axis in range(dims):
        values = [s[axis] for s in sizes if len(s) > axis]
        low, high = min(values), max(values)
        parts.append(str(low) if low == high else f"{low}–{high}")
    return "×".join(parts)


def _format_spacing(spacing: Sequence[float]) -> str:
    return "×".join(f"{v:.2f}" for v in spacing)


def _format_point(point: Sequence[float]) -> str:
    return "(" + ", ".join(f"{v:.2f}" for v in point) + ")"
