"""Check a cohort before using it: every problem at once, one message per problem.

:func:`validate_cohort` opens every scan (headers first, then the data, one
scan at a time so memory stays bounded) and reports, naming the manifest row
and the subject: missing or unreadable files, truncated or damaged
compressed files, image/mask geometry mismatches, empty masks, masks that
look like images and images that look like masks (swapped columns), NaN or
infinite voxels, negative or implausible SUV ranges (with a hint about
units), more grey levels than the chosen binning allows, duplicate subject
ids, site groups with fewer scans than an analysis needs, outcomes that
are not binary, and paired scans (``pair_id``) that break the rules of
:mod:`harmkit.pairs`. It also summarises the cohort per site like Table 1 of
Haberl et al. (2024) (:meth:`ValidationReport.acquisition_table`): scanner,
reconstruction, kernel, scans, matrix sizes, voxel sizes and outcome counts.

:func:`check_cohort` is the gate every command (validate, extract, bench,
train, harmonize) passes before any other work: the same checks, warnings
shown, every error raised at once. See docs/bad-inputs.md.

>>> report = validate_manifest("data/manifest.csv")   # doctest: +SKIP
>>> print(report.summary_table())                     # doctest: +SKIP
>>> report.raise_for_errors()                         # doctest: +SKIP
"""

from __future__ import annotations

import math
import os
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from .data import Cohort, Scan
from .errors import HarmkitError, Problem, warn
from .pairs import pair_problems

__all__ = [
    "Problem",
    "ScanInfo",
    "ValidationReport",
    "validate_cohort",
    "validate_manifest",
    "check_cohort",
    "grey_levels",
    "bin_width_of",
    "MAX_GREY_LEVELS",
    "SUV_PLAUSIBLE_MAX",
    "SUV_NEGATIVE_LIMIT",
    "ACQUISITION_COLUMNS",
]

#: A voxel maximum above this is implausible for SUV; such images are in Bq/mL or hold SUV×100.
SUV_PLAUSIBLE_MAX = 500.0
#: Voxels below this are not SUV (noise and interpolation leave small negative values; CT in HU, offsets do not):
#: an image with more than NEGATIVE_FRACTION of its voxels below it is refused.
SUV_NEGATIVE_LIMIT = -0.5
NEGATIVE_FRACTION = 0.001
#: Most grey levels a VOI may have after fixed-width binning. Texture matrices grow with the square of the
#: grey levels: on a 9210-voxel tumour pyradiomics takes 1 s at 100 levels, 16 s at 500, 128 s at 1000.
MAX_GREY_LEVELS = 512
#: A mask with more distinct values than this (or with fractional or negative ones) is an image, not a label map.
MASK_MAX_LABELS = 256


#: Columns of :meth:`ValidationReport.acquisition_table` (and of ``harmkit validate --table``).
ACQUISITION_COLUMNS = [
    "site",
    "site_group",
    "scanner",
    "reconstruction",
    "kernel",
    "scans",
    "matrix",
    "slices",
    "voxel_mm",
    "outcome_1",
    "outcome_0",
    "outcome_missing",
    "unreadable",
]


@dataclass(frozen=True)
class GreyLevelProblem(Problem):
    """A VOI with more grey levels than :data:`MAX_GREY_LEVELS`; ``needed_bin_width`` would fix it."""

    needed_bin_width: float = 0.0


@dataclass(frozen=True)
class _Checks:
    """The options of one validation, sent with every scan to the workers."""

    masks: tuple[str, ...] = ()
    use_masks: tuple[str, ...] | None = None
    check_voxels: bool = True
    nan_to_zero: bool = False
    bin_width: float | None = None
    binned_masks: tuple[str, ...] | None = None
    bin_width_option: str | None = "--bin-width"


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
    scanner: str = ""
    reconstruction: str = ""
    kernel: str = ""


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
                    {
                        "site": site,
                        "site_group": group,
                        "scans": 0,
                        "matrix": "",
                        "voxel_mm": "",
                        "outcome_1": 0,
                        "outcome_0": 0,
                        "outcome_missing": 0,
                        "unreadable": unreadable,
                    }
                )
        columns = [
            "site",
            "site_group",
            "scans",
            "matrix",
            "voxel_mm",
            "outcome_1",
            "outcome_0",
            "outcome_missing",
            "unreadable",
        ]
        return pd.DataFrame(rows, columns=columns)

    def acquisition_table(self):
        """Table 1 of a multicenter study (a :class:`pandas.DataFrame`): one row per site and acquisition protocol.

        Rows group scans by site, scanner, reconstruction, kernel and voxel
        size, in site order, most scans first. Columns:
        ``site``, ``site_group``, ``scanner`` (``scanner`` covariate, else
        ``manufacturer`` and ``model``, as ``harmkit import`` writes them),
        ``reconstruction``, ``kernel``, ``scans``, ``matrix`` (in-plane,
        ``x×y``) and ``slices`` (ranges when scans differ), ``voxel_mm``
        (``x×y×z``), ``outcome_1``, ``outcome_0``, ``outcome_missing`` and
        ``unreadable`` (scans whose image could not be read).
        """
        import pandas as pd

        rows = []
        readable = {(s.row, s.subject_id) for s in self.scans}
        for site in self.cohort.sites:
            groups: dict[tuple, list[ScanInfo]] = {}
            for info in (s for s in self.scans if s.site == site):
                key = (
                    info.scanner,
                    info.reconstruction,
                    info.kernel,
                    _format_spacing(info.spacing),
                )
                groups.setdefault(key, []).append(info)
            for (scanner, reconstruction, kernel, voxel), infos in sorted(
                groups.items(), key=lambda kv: (-len(kv[1]), kv[0])
            ):
                outcomes = Counter(i.outcome for i in infos)
                rows.append(
                    {
                        "site": site,
                        "site_group": infos[0].site_group,
                        "scanner": scanner,
                        "reconstruction": reconstruction,
                        "kernel": kernel,
                        "scans": len(infos),
                        "matrix": _format_sizes([i.size[:2] for i in infos]),
                        "slices": _format_sizes([i.size[2:] for i in infos]),
                        "voxel_mm": voxel,
                        "outcome_1": outcomes.get(1, 0),
                        "outcome_0": outcomes.get(0, 0),
                        "outcome_missing": outcomes.get(None, 0),
                        "unreadable": 0,
                    }
                )
            unreadable = sum(1 for s in self.cohort if s.site == site and (s.row, s.subject_id) not in readable)
            if unreadable:
                group = next(s.group for s in self.cohort if s.site == site)
                rows.append(
                    {
                        "site": site,
                        "site_group": group,
                        "scanner": "",
                        "reconstruction": "",
                        "kernel": "",
                        "scans": 0,
                        "matrix": "",
                        "slices": "",
                        "voxel_mm": "",
                        "outcome_1": 0,
                        "outcome_0": 0,
                        "outcome_missing": 0,
                        "unreadable": unreadable,
                    }
                )
        return pd.DataFrame(rows, columns=ACQUISITION_COLUMNS)

    def raise_for_errors(self) -> None:
        """Raise :class:`harmkit.errors.ManifestError` listing every error, if there is any."""
        from .errors import ManifestError

        if self.errors:
            raise ManifestError(self.cohort.manifest or "cohort", self.errors)

    def __str__(self) -> str:
        lines = [
            f"{len(self.cohort)} scans, {len(self.cohort.sites)} sites: {len(self.errors)} error(s), "
            f"{len(self.warnings)} warning(s)"
        ]
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
    **options,
) -> ValidationReport:
    """Read ``manifest`` and validate it: structural problems of the CSV plus :func:`validate_cohort`.

    Unlike :func:`harmkit.load_cohort`, a duplicate subject or a bad outcome
    does not stop reading: every problem is in the report. A file that is not
    a manifest at all (missing, no required columns) raises
    :class:`~harmkit.errors.HarmkitError`. ``options`` are those of
    :func:`validate_cohort` (``nan_to_zero``, ``bin_width``, ...).
    """
    from .manifest import read_manifest_problems

    cohort, structural = read_manifest_problems(manifest)
    executor = options.pop("executor", None)
    checks = _checks(masks, check_voxels, **options)
    return _validate(
        cohort,
        structural,
        min_scans_per_site,
        require_outcome,
        checks,
        progress,
        jobs,
        scheduler,
        executor,
    )


def validate_cohort(
    cohort: Cohort | Iterable[Scan],
    min_scans_per_site: int = 2,
    require_outcome: bool = False,
    masks: Sequence[str] | None = None,
    check_voxels: bool = True,
    progress: bool = False,
    jobs: int | None = 1,
    scheduler: str | None = None,
    *,
    use_masks: Sequence[str] | None = None,
    nan_to_zero: bool = False,
    bin_width: float | None = None,
    binned_masks: Sequence[str] | None = None,
    bin_width_option: str | None = "--bin-width",
    executor=None,
    pairs: bool = True,
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
        Read the data (one scan in memory at a time): damaged or truncated
        files, NaN/infinite voxels, SUV range, empty masks, masks that look
        like images, grey levels. ``False`` checks headers only, which is
        much faster but misses all of these.
    progress:
        Show a rich progress bar.
    jobs, scheduler, executor:
        Check scans in parallel through :func:`harmkit.execution.get_executor`
        (default: one scan after the other in this process; ``jobs=None``
        uses every core, ``scheduler`` a Dask cluster), or on a running
        ``executor``.
    use_masks:
        The masks the run reads; others are not opened. Default: every mask.
    nan_to_zero:
        NaN/infinite voxels are a warning (they will be read as 0) instead
        of an error.
    bin_width, binned_masks, bin_width_option:
        Fixed bin width (SUV) of the feature extractor: a VOI in
        ``binned_masks`` (default: every checked mask) whose SUV range would
        give more than :data:`MAX_GREY_LEVELS` grey levels is an error that
        names the bin width that would do (the option ``bin_width_option``).
    """
    if not isinstance(cohort, Cohort):
        cohort = Cohort(list(cohort))
    from .manifest import duplicate_subject_problems

    structural = duplicate_subject_problems(cohort)
    for scan in cohort:
        if scan.outcome is not None and scan.outcome not in (0, 1):
            structural.append(
                _problem(
                    scan,
                    f"outcome {scan.outcome!r} is not binary; use 0 or 1 (None when unknown)",
                )
            )
    checks = _checks(
        masks,
        check_voxels,
        use_masks=use_masks,
        nan_to_zero=nan_to_zero,
        bin_width=bin_width,
        binned_masks=binned_masks,
        bin_width_option=bin_width_option,
    )
    return _validate(
        cohort,
        structural,
        min_scans_per_site,
        require_outcome,
        checks,
        progress,
        jobs,
        scheduler,
        executor,
        pairs,
    )


def check_cohort(
    cohort: Cohort,
    min_scans_per_site: int = 1,
    masks: Sequence[str] | None = None,
    *,
    use_masks: Sequence[str] | None = None,
    nan_to_zero: bool = False,
    bin_width: float | None = None,
    binned_masks: Sequence[str] | None = None,
    bin_width_option: str | None = "--bin-width",
    jobs: int | None = 1,
    scheduler: str | None = None,
    executor=None,
    progress: bool = False,
) -> Cohort:
    """The gate before any work: validate ``cohort`` reading its data, warn, and raise every error at once.

    Every command (``validate``, ``extract``, ``bench``, ``train``,
    ``harmonize``) calls this before it computes or writes anything.
    Warnings are emitted as :class:`~harmkit.errors.HarmkitWarning`; errors
    raise one :class:`~harmkit.errors.ManifestError` listing each problem by
    row and subject. Returns the cohort to work on (with ``nan_to_zero`` set
    on its scans when asked). Options as in :func:`validate_cohort`.
    """
    report = validate_cohort(
        cohort,
        min_scans_per_site,
        False,
        masks,
        True,
        progress,
        jobs,
        scheduler,
        use_masks=use_masks,
        nan_to_zero=nan_to_zero,
        bin_width=bin_width,
        binned_masks=binned_masks,
        bin_width_option=bin_width_option,
        executor=executor,
    )
    for problem in report.warnings:
        warn(str(problem))
    report.raise_for_errors()
    return with_nan_to_zero(report.cohort) if nan_to_zero else report.cohort


def with_nan_to_zero(cohort: Cohort) -> Cohort:
    """A copy of ``cohort`` whose scans read NaN/infinite voxels as 0."""
    from dataclasses import replace

    return Cohort(
        [replace(s, nan_to_zero=True) for s in cohort],
        cohort.root,
        cohort.manifest,
        cohort.metadata,
    )


def bin_width_of(extractor) -> float | None:
    """The fixed bin width (SUV) ``extractor`` bins with, or ``None`` (a fixed bin count, or unknown)."""
    settings = {}
    try:
        settings = dict((extractor.settings() or {}).get("setting") or {})
    except (AttributeError, TypeError):
        pass
    if settings.get("binCount"):
        return None
    width = settings.get("binWidth", getattr(extractor, "bin_width", None))
    if getattr(extractor, "bin_count", None) or width is None:
        return None
    try:
        width = float(width)
    except (TypeError, ValueError):
        return None
    return width if width > 0 else None


def grey_levels(low: float, high: float, bin_width: float) -> int:
    """Grey levels of values from ``low`` to ``high`` binned with a fixed ``bin_width`` (as pyradiomics bins)."""
    return int(math.floor(high / bin_width) - math.floor(low / bin_width)) + 1


def _bin_width_for(low: float, high: float, limit: int) -> float:
    """The smallest round bin width (2 significant digits) that keeps ``low..high`` within ``limit`` grey levels."""
    width = max((high - low) / max(limit - 1, 1), 1e-12)
    exponent = math.floor(math.log10(width))
    width = math.ceil(width / 10**exponent * 10) / 10 * 10**exponent
    while grey_levels(low, high, width) > limit:
        width *= 1.1
    return float(f"{width:.2g}") if grey_levels(low, high, float(f"{width:.2g}")) <= limit else width


def _checks(
    masks,
    check_voxels,
    use_masks=None,
    nan_to_zero=False,
    bin_width=None,
    binned_masks=None,
    bin_width_option="--bin-width",
) -> _Checks:
    if bin_width is not None and not float(bin_width) > 0:
        raise HarmkitError(f"{bin_width_option or 'bin_width'} {bin_width}: must be a positive number of SUV")
    return _Checks(
        masks=tuple(masks or ()),
        use_masks=None if use_masks is None else tuple(use_masks),
        check_voxels=bool(check_voxels),
        nan_to_zero=bool(nan_to_zero),
        bin_width=None if bin_width is None else float(bin_width),
        binned_masks=None if binned_masks is None else tuple(binned_masks),
        bin_width_option=bin_width_option,
    )


def _validate(
    cohort,
    structural,
    min_scans_per_site,
    require_outcome,
    checks: _Checks,
    progress,
    jobs=1,
    scheduler=None,
    executor=None,
    pairs: bool = True,
) -> ValidationReport:
    from .execution import get_executor

    if min_scans_per_site < 1:
        raise HarmkitError(f"min_scans_per_site must be at least 1, got {min_scans_per_site}")
    report = ValidationReport(cohort, list(structural), min_scans_per_site=min_scans_per_site)
    tasks = [(scan, checks) for scan in cohort]
    if executor is not None:
        results = executor.map(_scan_task, tasks, label="validating")
    else:
        with get_executor(jobs=jobs, scheduler=scheduler, progress=progress) as own:
            results = own.map(_scan_task, tasks, label="validating")
    for scan, result in zip(cohort, results):
        if result.error is not None:
            report.problems.append(_problem(scan, f"could not be checked: {result.error}"))
            continue
        info, problems = result.value
        if info is not None:
            report.scans.append(info)
        report.problems += problems
    report.problems += _cohort_problems(cohort, min_scans_per_site, require_outcome)
    if pairs:  # a cohort-wide rule: not for a subset of a manifest's scans (extraction checks only the scans it runs)
        report.problems += pair_problems(cohort)
    widths = [p.needed_bin_width for p in report.problems if isinstance(p, GreyLevelProblem)]
    if len(widths) > 1:
        width = max(widths)
        option = f"{checks.bin_width_option} {width:g}" if checks.bin_width_option else f"a bin width of {width:g}"
        report.problems.append(
            Problem(
                f"{len(widths)} VOIs have too many grey levels; {option} (or larger) is "
                f"enough for every one of them, if their SUV ranges are right"
            )
        )
    report.problems.sort(key=lambda p: (p.row is None, p.row or 0))
    return report


def _problem(scan: Scan, message: str, severity: str = "error") -> Problem:
    return Problem(
        message,
        row=scan.row,
        subject=scan.subject_id or None,
        site=scan.site or None,
        severity=severity,
    )


def _scan_task(task: tuple) -> tuple[ScanInfo | None, list[Problem]]:
    """One scan's checks as a picklable task for the executor: (header facts or None, problems)."""
    scan, checks = task
    problems: list[Problem] = []
    info = _check_scan(scan, checks, problems)
    return info, problems


def _check_scan(scan: Scan, checks: _Checks, problems: list[Problem]) -> ScanInfo | None:
    """Header checks, then (optionally) data checks of one scan; returns its header facts if readable."""
    header = _header(scan.image, "image", scan, problems)
    for name in checks.masks:
        if name not in scan.masks:
            problems.append(
                _problem(
                    scan,
                    f"no mask {name!r}; fill the 'mask_{name}' column for this row",
                )
            )
    if checks.use_masks is None:
        names = sorted(scan.masks)
    else:
        names = [n for n in dict.fromkeys(checks.use_masks) if n in scan.masks]
    mask_headers = {name: _header(scan.masks[name], f"mask {name!r}", scan, problems) for name in names}
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
    if checks.check_voxels:
        _check_voxels(
            scan,
            {n: h for n, h in mask_headers.items() if h is not None},
            problems,
            checks,
        )
    return ScanInfo(
        scan.subject_id,
        scan.site,
        scan.group,
        scan.row,
        header["size"],
        header["spacing"],
        scan.outcome,
        *_acquisition(scan),
    )


def _acquisition(scan: Scan) -> tuple[str, str, str]:
    """(scanner, reconstruction, kernel) from a scan's covariates: ``scanner`` or ``manufacturer`` + ``model``."""
    covariates = scan.covariates or {}

    def text(name: str) -> str:
        value = covariates.get(name)
        return "" if value is None else str(value).strip()

    scanner = text("scanner") or " ".join(v for v in (text("manufacturer"), text("model")) if v)
    return scanner, text("reconstruction"), text("kernel")


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
        problems.append(
            _problem(
                scan,
                f"{what} file not found: {path}; fix the path (relative to the manifest) or remove the row",
            )
        )
        return None
    reader = sitk.ImageFileReader()
    reader.SetFileName(str(path))
    try:
        reader.ReadImageInformation()
    except RuntimeError as exc:
        reason = str(exc).strip().splitlines()[-1] if str(exc).strip() else "unreadable"
        problems.append(
            _problem(
                scan,
                f"{what} {path} cannot be read ({reason}); expected NIfTI, NRRD, MHA or a DICOM series folder",
            )
        )
        return None
    if reader.GetNumberOfComponents() != 1:
        problems.append(
            _problem(
                scan,
                f"{what} {path} has {reader.GetNumberOfComponents()} components per voxel; expected a scalar image",
            )
        )
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


def _geometry_mismatch(image: dict, mask: dict) -> str:
    """Empty when the two headers describe one grid (:func:`harmkit.imageio.geometry_difference`), else what differs."""
    from .imageio import geometry_difference

    difference = geometry_difference(image, mask)
    if difference is None:
        return ""
    if difference == "size" and len(image["size"]) != len(mask["size"]):
        return f"image is {len(image['size'])}D, mask is {len(mask['size'])}D"
    if difference == "size":
        return f"size {_format_size(mask['size'])} vs image {_format_size(image['size'])}"
    if difference == "spacing":
        return f"spacing {_format_spacing(mask['spacing'])} mm vs image {_format_spacing(image['spacing'])} mm"
    if difference == "origin":
        return f"origin {_format_point(mask['origin'])} vs image {_format_point(image['origin'])}"
    return "direction (orientation) differs from the image's"


def _check_voxels(scan: Scan, mask_headers: dict, problems: list[Problem], checks: _Checks) -> None:
    """The data checks of one scan: stored bytes, voxel values, masks, grey levels."""
    from dataclasses import replace

    from .imageio import is_nifti, nifti_stored_data

    source = scan.image
    stored = None
    if isinstance(source, (str, Path)) and not Path(source).is_dir() and is_nifti(source):
        stored = nifti_stored_data(source)
        if stored.problem:
            problems.append(
                _problem(
                    scan,
                    f"image {source} is damaged: {stored.problem}; copy or convert the file again "
                    f"(an interrupted download or copy leaves such files)",
                )
            )
            return
    try:
        image = replace(scan, nan_to_zero=False).load_image()
    except HarmkitError as exc:
        problems.append(_problem(scan, f"image cannot be read: {exc}"))
        return
    voxels = sitk.GetArrayViewFromImage(image)
    finite = np.isfinite(voxels)
    bad = int(voxels.size - np.count_nonzero(finite))
    n_nan = int(np.count_nonzero(np.isnan(voxels))) if bad else 0
    values = voxels[finite] if bad else voxels
    if not bad and stored is not None:  # SimpleITK's NIfTI reader silently turns NaN/inf into 0
        bad, n_nan = stored.non_finite, stored.nan
    if bad:
        counts = f"{bad} non-finite voxel(s) ({n_nan} NaN, {bad - n_nan} infinite) in {_source(source)}"
        if checks.nan_to_zero:
            problems.append(
                _problem(
                    scan,
                    f"image has {counts}; they are read as 0 (--nan-to-zero)",
                    severity="warning",
                )
            )
        else:
            problems.append(
                _problem(
                    scan,
                    f"image has {counts}; replace them (e.g. with 0 outside the body), "
                    f"or pass --nan-to-zero to read them as 0",
                )
            )
    if values.size:
        _check_range(scan, values, bool(bad), problems)
    del finite
    for name in mask_headers:
        _check_mask(scan, name, voxels, problems, checks)


def _check_range(scan: Scan, values: np.ndarray, non_finite: bool, problems: list[Problem]) -> None:
    """Negative or implausible SUV, and an image that holds only 0 and 1 (a mask)."""
    low, high = float(values.min()), float(values.max())
    where = _source(scan.image)
    if not non_finite and low == 0.0 and high == 1.0 and np.all((values == 0) | (values == 1)):
        problems.append(
            _problem(
                scan,
                f"image {where} holds only the values 0 and 1: it looks like a mask, not a PET image; check "
                f"that the image and mask columns of the manifest are not swapped",
            )
        )
        return
    below = int(np.count_nonzero(values < SUV_NEGATIVE_LIMIT)) if low < SUV_NEGATIVE_LIMIT else 0
    if below > NEGATIVE_FRACTION * values.size:  # a few noisy voxels are not a units problem
        problems.append(
            _problem(
                scan,
                f"image {where} has {below} voxel(s) below {SUV_NEGATIVE_LIMIT:g} (minimum {low:.4g}; "
                f"{below / values.size:.1%} of the image): SUV "
                f"cannot be negative. Is it a CT (Hounsfield units), a difference image, or was an offset "
                f"added? harmkit needs PET in SUVbw",
            )
        )
    if high > SUV_PLAUSIBLE_MAX:
        if high < 20000 and bool(np.all(values == np.rint(values))):
            hint = (
                "its values are whole numbers: it looks like SUV×100 stored as integers; divide it by 100 "
                "(or, if it is in Bq/mL, convert it to SUVbw)"
            )
        else:
            hint = (
                "it looks like Bq/mL: convert it to SUVbw (× body weight [g] / decay-corrected injected dose "
                "[Bq]; harmkit converts PET DICOM series itself), or if it holds SUV×100, divide it by 100"
            )
        problems.append(
            _problem(
                scan,
                f"image {where} has a maximum of {high:.4g}, implausible for SUV (limit {SUV_PLAUSIBLE_MAX:g}); {hint}",
            )
        )


def _check_mask(
    scan: Scan,
    name: str,
    image_voxels: np.ndarray,
    problems: list[Problem],
    checks: _Checks,
) -> None:
    """A mask must be a label map (whole, non-negative values), not empty; its VOI must bin into few grey levels."""
    from .imageio import is_nifti, nifti_stored_data, read_image

    value = scan.masks[name]
    if isinstance(value, (str, Path)) and is_nifti(value):
        damage = nifti_stored_data(value).problem
        if damage:
            problems.append(
                _problem(
                    scan,
                    f"mask {name!r} {value} is damaged: {damage}; copy or convert the file again",
                )
            )
            return
    try:
        mask = value if isinstance(value, sitk.Image) else read_image(value, what=f"mask {name!r} of {scan.label}")
    except HarmkitError as exc:
        problems.append(_problem(scan, f"mask {name!r} cannot be read: {exc}"))
        return
    labels = sitk.GetArrayViewFromImage(mask)
    where = _source(value)
    if labels.size:
        low, high = float(labels.min()), float(labels.max())
        fractional = labels.dtype.kind == "f" and bool(np.any(labels != np.floor(labels)))
        many = not fractional and high > MASK_MAX_LABELS and len(np.unique(labels)) > MASK_MAX_LABELS
        if fractional or low < 0 or many:
            what = (
                "fractional values"
                if fractional
                else "negative values"
                if low < 0
                else f"more than {MASK_MAX_LABELS} labels"
            )
            problems.append(
                _problem(
                    scan,
                    f"mask {name!r} {where} holds {what} (range {low:.4g} to {high:.4g}): it "
                    f"looks like an image, not a label mask; check that the image and mask columns of the "
                    f"manifest are not swapped (a probability map must be thresholded to 0/1 first)",
                )
            )
            return
    inside = labels != 0
    if not inside.any():
        problems.append(
            _problem(
                scan,
                f"mask {name!r} is empty (no non-zero voxel) in {where}; fix the segmentation or remove the row",
            )
        )
        return
    binned = checks.binned_masks if checks.binned_masks is not None else checks.use_masks
    if checks.bin_width and (binned is None or name in binned) and inside.shape == image_voxels.shape:
        voi = image_voxels[inside]
        voi = voi[np.isfinite(voi)]
        if voi.size:
            low, high = float(voi.min()), float(voi.max())
            levels = grey_levels(low, high, checks.bin_width)
            if levels > MAX_GREY_LEVELS:
                width = _bin_width_for(low, high, MAX_GREY_LEVELS)
                fix = (
                    f"use {checks.bin_width_option} {width:g} or larger"
                    if checks.bin_width_option
                    else f"the extractor's bin width would have to be {width:g} or larger"
                )
                units = (
                    " The image's range is implausible for SUV: fix its units first."
                    if high > SUV_PLAUSIBLE_MAX
                    else ""
                )
                problems.append(
                    GreyLevelProblem(
                        f"VOI {name!r}: SUV {low:.4g} to {high:.4g} in bins of {checks.bin_width:g} gives "
                        f"{levels} grey levels, more than the limit of {MAX_GREY_LEVELS} (texture features would "
                        f"take minutes and gigabytes per scan); {fix}.{units}",
                        row=scan.row,
                        subject=scan.subject_id or None,
                        site=scan.site or None,
                        needed_bin_width=width,
                    )
                )


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
                    "add scans, merge it with a site of the same scanner and protocol (site_group column), or remove "
                    "it"
                )
            )
    if require_outcome:
        for scan in cohort:
            if scan.outcome is None:
                problems.append(
                    _problem(
                        scan,
                        "no outcome; this analysis needs a 0/1 outcome for every scan",
                    )
                )
        classes = {s.outcome for s in cohort if s.outcome in (0, 1)}
        if len(cohort) and len(classes) == 1:
            only = classes.pop()
            problems.append(
                Problem(f"every known outcome is {only}; a prediction model needs scans of both classes (0 and 1)")
            )
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
