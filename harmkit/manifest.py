"""The manifest CSV: one row per scan, paths relative to the manifest's folder.

Columns: ``subject_id``, ``site``, ``image``, ``mask_<name>`` (one per mask),
optional ``outcome`` (0/1), optional ``site_group``; every other column is a
covariate. The simulator writes this format too: one code path for all data.
"""

from __future__ import annotations

import csv
import math
import os
import tempfile
from pathlib import Path
from typing import Iterable

from .data import Cohort, Scan
from .errors import HarmkitError, ManifestError

REQUIRED_COLUMNS = ("subject_id", "site", "image")
RESERVED_COLUMNS = (*REQUIRED_COLUMNS, "outcome", "site_group")
MASK_PREFIX = "mask_"


def read_manifest(path: Path, validate: bool = True) -> Cohort:
    """Read ``path`` into a :class:`Cohort`; structural problems raise :class:`ManifestError`."""
    path = Path(path)
    if not path.is_file():
        raise HarmkitError(f"manifest not found: {path}")
    try:
        with path.open(newline="", encoding="utf-8-sig") as handle:
            reader = csv.DictReader(handle)
            columns = [c.strip() for c in (reader.fieldnames or [])]
            rows = [{(k or "").strip(): (v or "").strip() for k, v in row.items()} for row in reader]
    except (UnicodeDecodeError, csv.Error) as exc:
        raise HarmkitError(f"{path}: not a readable CSV file ({exc})") from None
    missing = [c for c in REQUIRED_COLUMNS if c not in columns]
    if missing:
        raise HarmkitError(
            f"{path}: missing column(s) {', '.join(missing)}; a manifest needs subject_id, site, image "
            f"and one mask_<name> column per mask (found: {', '.join(columns) or 'no header'})"
        )
    root = path.parent
    mask_columns = [c for c in columns if c.startswith(MASK_PREFIX)]
    covariate_columns = [c for c in columns if c not in RESERVED_COLUMNS and c not in mask_columns]
    problems: list[str] = []
    scans: list[Scan] = []
    for number, row in enumerate(rows, start=1):
        where = f"row {number}"
        subject = row.get("subject_id", "")
        if subject:
            where += f" (subject {subject})"
        if not subject:
            problems.append(f"{where}: empty subject_id")
        if not row.get("site"):
            problems.append(f"{where}: empty site")
        if not row.get("image"):
            problems.append(f"{where}: empty image path")
        outcome = _parse_outcome(row.get("outcome", ""), where, problems) if "outcome" in columns else None
        masks = {c[len(MASK_PREFIX):]: root / row[c] for c in mask_columns if row.get(c)}
        covariates = {c: _parse_value(row.get(c, "")) for c in covariate_columns}
        scans.append(
            Scan(
                subject_id=subject,
                site=row.get("site", ""),
                image=root / row.get("image", ""),
                masks=masks,
                outcome=outcome,
                covariates=covariates,
                site_group=row.get("site_group") or None,
                row=number,
            )
        )
    seen: dict[str, int] = {}
    for scan in scans:
        if scan.subject_id and scan.subject_id in seen:
            problems.append(
                f"row {scan.row} (subject {scan.subject_id}): duplicate subject_id, first used in row {seen[scan.subject_id]}; subject ids must be unique"
            )
        seen.setdefault(scan.subject_id, scan.row or 0)
    if not scans:
        problems.append("no data rows")
    if validate and problems:
        raise ManifestError(path, problems)
    return Cohort(scans, root=root, manifest=path)


def _parse_outcome(text: str, where: str, problems: list[str]) -> int | None:
    if text == "" or text.lower() in ("na", "nan"):
        return None
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if value not in (0.0, 1.0):
        problems.append(f"{where}: outcome {text!r} is not binary; use 0 or 1 (empty when unknown)")
        return None
    return int(value)


def _parse_value(text: str):
    if text == "":
        return None
    try:
        return float(text)
    except ValueError:
        return text


def write_manifest(scans: Iterable[Scan], path: str | os.PathLike, covariate_columns: list[str] | None = None) -> Path:
    """Write a manifest for scans whose image and masks are files; paths become relative to ``path``.

    Written to a temporary name and renamed, so a partial manifest never exists.
    """
    path = Path(path)
    scans = list(scans)
    root = path.parent.resolve()
    mask_names = sorted({name for s in scans for name in s.masks})
    covariate_columns = covariate_columns or sorted({k for s in scans for k in s.covariates})
    with_groups = any(s.site_group for s in scans)
    with_outcome = any(s.outcome is not None for s in scans)
    header = ["subject_id", "site", *(["site_group"] if with_groups else []), "image", *(f"{MASK_PREFIX}{m}" for m in mask_names)]
    header += (["outcome"] if with_outcome else []) + covariate_columns
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent, text=True)
    with os.fdopen(fd, "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(header)
        for scan in scans:
            row = [scan.subject_id, scan.site]
            if with_groups:
                row.append(scan.site_group or "")
            row.append(_relative(scan.image, root, scan, "image"))
            row += [_relative(scan.masks[m], root, scan, m) if m in scan.masks else "" for m in mask_names]
            if with_outcome:
                row.append("" if scan.outcome is None else str(int(scan.outcome)))
            row += ["" if scan.covariates.get(c) is None else scan.covariates[c] for c in covariate_columns]
            writer.writerow(row)
    os.replace(tmp, path)
    return path


def _relative(value, root: Path, scan: Scan, what: str) -> str:
    if not isinstance(value, (str, Path)):
        raise HarmkitError(f"{scan.label}: {what} is in memory; write it to a file first (harmkit.manifest.write_cohort)")
    return Path(os.path.relpath(Path(value).resolve(), root)).as_posix()


def write_cohort(scans: Iterable[Scan], out_dir: str | os.PathLike, manifest_name: str = "manifest.csv") -> Path:
    """Write every scan's image and masks as NIfTI under ``out_dir`` and a manifest pointing to them."""
    from dataclasses import replace

    from .imageio import write_image

    out_dir = Path(out_dir)
    written: list[Scan] = []
    for scan in scans:
        import SimpleITK as sitk

        folder = out_dir / "images" / _safe(scan.subject_id)
        image = scan.load_image()
        image_path = write_image(image, folder / f"{_safe(scan.site)}_pet.nii.gz")
        masks = {}
        for name in scan.masks:
            masks[name] = write_image(sitk.Cast(scan.load_mask(name), sitk.sitkUInt8), folder / f"{_safe(scan.site)}_mask_{_safe(name)}.nii.gz")
        written.append(replace(scan, image=image_path, masks=masks))
    return write_manifest(written, out_dir / manifest_name)


def _safe(text: str) -> str:
    keep = "".join(ch if ch.isalnum() or ch in "-_." else "_" for ch in str(text))
    if not keep:
        raise HarmkitError(f"cannot make a file name from {text!r}")
    return keep
