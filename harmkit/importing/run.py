"""``import_dicom``: a DICOM tree in, a cohort (SUV NIfTI, masks, manifest.csv) out, complete or not at all."""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import HarmkitError, warn
from .index import index_tree
from .plan import (
    ImportProblem,
    MaskSource,
    PlannedScan,
    RoiSpec,
    make_plan,
    read_site_map,
)

IMPORT_RECORD = "import.json"


@dataclass
class ImportResult:
    """What :func:`import_dicom` wrote and found."""

    out: Path
    manifest: Path
    scans: int
    files: int
    not_dicom: int
    skipped: list[str] = field(default_factory=list)  # problems left out with --skip-broken
    notes: list[str] = field(default_factory=list)
    roi_names: dict[str, int] = field(default_factory=dict)


@dataclass(frozen=True)
class _Task:
    """One PET series to convert, with the paths (inside the staging folder) it writes."""

    files: tuple[str, ...]
    where: str
    image: str
    masks: tuple[tuple[str, tuple[MaskSource, ...], str], ...]


def import_dicom(
    dicom_dir: str | os.PathLike,
    out: str | os.PathLike,
    rois: Sequence[str] = (),
    site_map: str | os.PathLike | None = None,
    pairs: bool = False,
    merge_rois: bool = False,
    skip_broken: bool = False,
    overwrite: bool = False,
    jobs: int | None = 1,
    progress: bool = False,
) -> ImportResult:
    """Turn the DICOM tree ``dicom_dir`` into a cohort in ``out``: SUV NIfTI images, masks, ``manifest.csv``.

    Parameters
    ----------
    rois:
        ``"PATTERN=MASK"`` strings (``"GTV*=lesion"``): the RTSTRUCT ROI or
        SEG segment whose name matches PATTERN (glob, case-insensitive)
        becomes mask MASK of the scan it was drawn on. A scan with no
        matching ROI, several (without ``merge_rois``), or an empty one is a
        problem naming the file and the ROI names found there.
    site_map:
        CSV that names sites from header values (see
        :func:`harmkit.importing.plan.read_site_map`); default site: the
        InstitutionName (else StationName, else manufacturer and model).
    pairs:
        Give the PET series of one PatientID at different sites a common
        ``pair_id`` (traveling subject or phantom, two reconstructions).
    merge_rois:
        Several ROIs matching one pattern become their union.
    skip_broken:
        Problems (broken files, missing series or ROIs) are warnings and the
        scans they touch are left out; otherwise any problem stops the
        import with every problem listed and nothing written.
    overwrite:
        Replace ``out`` if an earlier ``harmkit import`` wrote it.
    jobs, progress:
        Worker processes for reading headers and converting series, and a
        progress bar.

    ``out`` is written in a temporary folder beside it and renamed when
    complete: it is complete or absent. Returns an :class:`ImportResult`.
    """
    from ..atomic import check_output_folder, inside

    source, out = Path(dicom_dir), Path(out)
    if not source.is_dir():
        raise HarmkitError(f"DICOM folder not found: {source}; give the folder that holds the DICOM files")
    if inside(out, source) or inside(source, out):
        raise HarmkitError(
            f"--out {out}: must lie outside the DICOM folder {source} (and not contain it); "
            f"choose another output folder"
        )
    check_output_folder(out, [source], "import", overwrite=overwrite)
    specs = [RoiSpec.parse(text) for text in rois]
    names = [s.mask for s in specs]
    if len(set(names)) != len(names):
        twice = sorted({n for n in names if names.count(n) > 1})
        raise HarmkitError(
            f"--roi: mask {twice[0]!r} is named by two --roi options; give each its own mask name, "
            f"or one pattern that matches both (e.g. 'GTV*')"
        )
    mapping = read_site_map(site_map) if site_map is not None else None

    index = index_tree(source, jobs=jobs, progress=progress)
    if not index.pet_series():
        kinds = sorted({s.modality for s in index.series.values()})
        found = f"{index.files} DICOM file(s){' (' + ', '.join(kinds) + ')' if kinds else ''}"
        raise HarmkitError(
            f"no PET series under {source} ({found}, {len(index.not_dicom)} other file(s)); "
            f"give the folder of a PET (Modality PT) export"
        )
    plan = make_plan(index, specs, mapping, pairs=pairs, merge_rois=merge_rois)
    problems = list(plan.problems)
    if problems and not skip_broken:
        raise _problems_error(source, problems)
    ruled_out = {uid for p in problems for uid in p.series}
    scans = [s for s in plan.scans if s.series.uid not in ruled_out]
    for problem in problems:
        warn(f"skipped: {problem}")
    if not scans:
        raise HarmkitError(f"no PET series of {source} could be imported; fix the problems above")

    staging = _staging(out)
    try:
        tasks = _tasks(scans, staging)
        from ..execution import get_executor

        with get_executor(jobs=jobs, progress=progress) as executor:
            results = executor.map(_convert, tasks, label=f"converting {len(tasks)} PET series")
        failed = [(scan, r.error) for scan, r in zip(scans, results) if not r.ok]
        if failed and not skip_broken:
            raise _problems_error(
                source,
                [ImportProblem(scan.slices[0].path, error or "failed") for scan, error in failed],
            )
        for scan, error in failed:
            warn(f"skipped: {scan.slices[0].path}: {error}")
            problems.append(ImportProblem(scan.slices[0].path, error or "failed", (scan.series.uid,)))
        done = [(scan, task) for scan, task, r in zip(scans, tasks, results) if r.ok]
        if not done:
            raise HarmkitError(f"no PET series of {source} could be imported; fix the problems above")
        manifest = _write_outputs(staging, source, done, plan, problems)
        _publish(staging, out)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return ImportResult(
        out,
        out / manifest.name,
        len(done),
        index.files,
        len(index.not_dicom),
        [str(p) for p in problems],
        plan.notes,
        plan.roi_names,
    )


def _problems_error(source: Path, problems: list[ImportProblem]) -> HarmkitError:
    lines = "\n".join(f"  - {p}" for p in problems)
    return HarmkitError(
        f"{source}: {len(problems)} problem(s); nothing was written (fix them, or pass --skip-broken "
        f"to import the rest):\n{lines}"
    )


def _staging(out: Path) -> Path:
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=f".{out.name}.importing-", dir=out.parent))
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(staging, 0o777 & ~umask)  # a folder like any other, not mkdtemp's private one
        return staging
    except OSError as exc:
        from ..errors import io_error

        raise io_error(exc, out) from None


def _tasks(scans: list[PlannedScan], staging: Path) -> list[_Task]:
    from ..manifest import unique_file_names

    subjects = unique_file_names([s.subject_id for s in scans])
    sites = unique_file_names([s.site for s in scans])
    tasks = []
    for scan in scans:
        folder = staging / "images" / subjects[scan.subject_id]
        image = folder / f"{sites[scan.site]}_pet.nii.gz"
        masks = tuple(
            (name, sources, str(folder / f"{sites[scan.site]}_mask_{name}.nii.gz"))
            for name, sources in sorted(scan.masks.items())
        )
        tasks.append(_Task(tuple(f.path for f in scan.slices), scan.label, str(image), masks))
    return tasks


def _convert(task: _Task) -> dict:
    """Read one PET series as SUV, rasterize its masks, write them (runs in a worker)."""
    import numpy as np
    import SimpleITK as sitk

    from ..dicom import read_pet_files_suv
    from ..imageio import write_image
    from .masks import contour_z_range, rasterize_contours, rtstruct_contours, seg_mask

    image = read_pet_files_suv(list(task.files), where=task.where)
    write_image(image, task.image)
    counts = {}
    for name, sources, path in task.masks:
        union = np.zeros(sitk.GetArrayViewFromImage(image).shape, np.uint8)
        for source in sources:
            kind = "RTSTRUCT" if source.kind == "rtstruct" else "SEG"
            what = f"{kind} {source.path}: {'ROI' if source.kind == 'rtstruct' else 'segment'} {source.name!r}"
            try:
                if source.kind == "rtstruct":
                    contours = rtstruct_contours(source.path, source.number)
                    array = rasterize_contours(contours, image)
                else:
                    array = sitk.GetArrayFromImage(seg_mask(source.path, source.number, image))
            except HarmkitError as exc:
                raise HarmkitError(f"{what}: {exc}") from None
            if not array.any():
                low = image.TransformIndexToPhysicalPoint((0, 0, 0))[2]
                high = image.TransformIndexToPhysicalPoint((0, 0, image.GetSize()[2] - 1))[2]
                span = contour_z_range(contours) if source.kind == "rtstruct" else None
                at = f" (contours at z = {span[0]:.1f} to {span[1]:.1f} mm)" if span else ""
                raise HarmkitError(
                    f"{what} covers no voxel of {task.where}{at}, which spans z = {min(low, high):.1f} "
                    f"to {max(low, high):.1f} mm: the ROI is empty on this PET; check that it belongs "
                    f"to this scan, or choose another ROI"
                )
            union |= array.astype(np.uint8)
        mask = sitk.GetImageFromArray(union)
        mask.CopyInformation(image)
        write_image(mask, path)
        counts[name] = int(union.sum())
    return counts


def _write_outputs(staging: Path, source: Path, done, plan, problems: list[ImportProblem]) -> Path:
    from .. import __version__
    from ..atomic import atomic_write_text, write_marker
    from ..data import Scan
    from ..manifest import write_manifest

    rows = []
    record = {
        "format": "harmkit-import/1",
        "harmkit": __version__,
        "source": str(source.resolve()),
        "scans": [],
        "skipped": [str(p) for p in problems],
        "notes": plan.notes,
    }
    for scan, task in done:
        rows.append(
            Scan(
                subject_id=scan.subject_id,
                site=scan.site,
                site_group=scan.site_group,
                image=Path(task.image),
                masks={name: Path(path) for name, _, path in task.masks},
                covariates=scan.covariates,
                pair_id=scan.pair_id,
            )
        )
        record["scans"].append(
            {
                "subject_id": scan.subject_id,
                "site": scan.site,
                "series_uid": scan.series.uid,
                "study_uid": scan.series.study_uid,
                "frame_of_reference_uid": scan.series.frame_uid,
                "files": [os.path.relpath(f.path, source) for f in scan.slices],
                "masks": {
                    name: [
                        {
                            "kind": s.kind,
                            "file": os.path.relpath(s.path, source),
                            "number": s.number,
                            "name": s.name,
                        }
                        for s in sources
                    ]
                    for name, sources, _ in task.masks
                },
            }
        )
    columns = [
        "patient_id",
        "institution",
        "manufacturer",
        "model",
        "reconstruction",
        "kernel",
        "matrix",
        "voxel_mm",
        "injected_dose_mbq",
        "uptake_min",
        "weight_kg",
        "age",
        "sex",
        "series_description",
    ]
    manifest = write_manifest(rows, staging / "manifest.csv", covariate_columns=columns)
    atomic_write_text(staging / IMPORT_RECORD, json.dumps(record, indent=1) + "\n")
    write_marker(staging, "import")
    return manifest


def _publish(staging: Path, out: Path) -> None:
    """Rename the finished ``staging`` folder onto ``out`` (an earlier import there is replaced)."""
    old = None
    if out.exists():
        old = out.parent / f".{out.name}.replaced-{os.getpid()}"
        os.replace(out, old)
    try:
        os.replace(staging, out)
    except OSError:
        if old is not None:
            os.replace(old, out)
        raise
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)
