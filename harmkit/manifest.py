"""The manifest CSV: one row per scan, paths relative to the manifest's folder.

Columns: ``subject_id``, ``site``, ``image``, ``mask_<name>`` (one per mask),
optional ``outcome`` (0/1), optional ``site_group``, optional ``pair_id``
(scans of one subject or phantom at different site groups, see
:mod:`harmkit.pairs`); every other column is a covariate. The simulator
writes this format too: one code path for all data.
"""

from __future__ import annotations

import csv
import math
import os
from collections.abc import Iterable
from dataclasses import dataclass, replace
from pathlib import Path

from .atomic import atomic_file
from .data import Cohort, Scan
from .errors import HarmkitError, ManifestError, Problem

REQUIRED_COLUMNS = ("subject_id", "site", "image")
RESERVED_COLUMNS = (*REQUIRED_COLUMNS, "outcome", "site_group", "pair_id")
MASK_PREFIX = "mask_"


def load_cohort(manifest: str | os.PathLike, validate: bool = True) -> Cohort:
    """Read a manifest CSV into a :class:`Cohort`.

    The manifest has one row per scan with columns ``subject_id``, ``site``,
    ``image`` and one ``mask_<name>`` column per mask; optional ``outcome``
    (0/1), ``site_group``, and any other column is a covariate. Paths are
    relative to the manifest's folder. With ``validate`` (default), the
    manifest's structure is checked and every problem is reported at once.

    >>> cohort = load_cohort("data/manifest.csv")   # doctest: +SKIP
    """
    return read_manifest(Path(manifest), validate=validate)


def read_manifest(path: Path, validate: bool = True) -> Cohort:
    """Read ``path`` into a :class:`Cohort`; structural problems raise :class:`ManifestError`.

    With ``validate=False`` the rows are read as they are (a duplicate subject
    or a non-binary outcome does not stop reading); use
    :func:`read_manifest_problems` to get the problems as well.
    """
    cohort, problems = read_manifest_problems(path)
    if validate and problems:
        raise ManifestError(path, problems)
    return cohort


def read_manifest_problems(path: str | os.PathLike) -> tuple[Cohort, list[Problem]]:
    """Read ``path`` and list its structural problems (one :class:`Problem` per row and problem).

    Structural problems are those visible in the CSV itself: empty required
    cells, outcome values that are not 0/1, duplicate subject ids, no rows.
    Files are not opened here (see :func:`harmkit.validation.validate_manifest`).
    A manifest without the required columns raises :class:`HarmkitError`.
    """
    path = Path(path)
    if not path.is_file():
        raise HarmkitError(f"manifest not found: {path}")
    try:
        with path.open(newline="", encoding="utf-8-sig") as handle:
            reader = csv.DictReader(handle)
            columns = [c.strip() for c in (reader.fieldnames or [])]
            raw_rows = list(reader)
        rows = [{(k or "").strip(): (v or "").strip() for k, v in row.items() if k is not None} for row in raw_rows]
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
    problems: list[Problem] = []
    scans: list[Scan] = []
    for number, row in enumerate(rows, start=1):
        subject = row.get("subject_id", "")
        site = row.get("site", "")

        def problem(message: str, number: int = number, subject: str = subject, site: str = site) -> None:
            problems.append(Problem(message, row=number, subject=subject or None, site=site or None))

        if raw_rows[number - 1].get(None):
            problem(f"more cells than the header has columns ({len(columns)}); check for a stray comma or quote")
        if not subject:
            problem("empty subject_id; give every scan a unique subject id")
        if not site:
            problem("empty site; name the site (or acquisition protocol) of every scan")
        if not row.get("image"):
            problem("empty image path; give the image file or DICOM folder, relative to the manifest")
        outcome = _parse_outcome(row.get("outcome", ""), problem) if "outcome" in columns else None
        masks = {c[len(MASK_PREFIX) :]: root / row[c] for c in mask_columns if row.get(c)}
        covariates = {c: _parse_value(row.get(c, "")) for c in covariate_columns}
        scans.append(
            Scan(
                subject_id=subject,
                site=site,
                image=root / row["image"] if row.get("image") else None,
                masks=masks,
                outcome=outcome,
                covariates=covariates,
                site_group=row.get("site_group") or None,
                pair_id=row.get("pair_id") or None,
                row=number,
            )
        )
    problems += duplicate_subject_problems(scans)
    problems.sort(key=lambda p: p.row or 0)
    if not scans:
        problems.append(Problem("no data rows; add one row per scan below the header"))
    return Cohort(scans, root=root, manifest=path), problems


def duplicate_subject_problems(scans: Iterable[Scan]) -> list[Problem]:
    """One problem for each scan whose subject id was already used by an earlier scan."""
    problems: list[Problem] = []
    seen: dict[str, Scan] = {}
    for scan in scans:
        if scan.subject_id and scan.subject_id in seen:
            first = seen[scan.subject_id]
            first_where = f"row {first.row}" if first.row is not None else "an earlier scan"
            problems.append(
                Problem(
                    f"duplicate subject_id, first used in {first_where}; subject ids must be unique "
                    f"(for repeated scans of one subject use e.g. '{scan.subject_id}_2')",
                    row=scan.row,
                    subject=scan.subject_id,
                    site=scan.site or None,
                )
            )
        seen.setdefault(scan.subject_id, scan)
    return problems


def _parse_outcome(text: str, problem) -> int | None:
    if text == "" or text.lower() in ("na", "nan"):
        return None
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if value not in (0.0, 1.0):
        problem(f"outcome {text!r} is not binary; use 0 or 1 (empty when unknown)")
        return None
    return int(value)


def _parse_value(text: str):
    if text == "":
        return None
    try:
        return float(text)
    except ValueError:
        return text


def write_manifest(
    scans: Iterable[Scan],
    path: str | os.PathLike,
    covariate_columns: list[str] | None = None,
) -> Path:
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
    with_pairs = any(s.pair_id for s in scans)
    header = [
        "subject_id",
        "site",
        *(["site_group"] if with_groups else []),
        *(["pair_id"] if with_pairs else []),
        "image",
        *(f"{MASK_PREFIX}{m}" for m in mask_names),
    ]
    header += (["outcome"] if with_outcome else []) + covariate_columns
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_file(path) as tmp, open(tmp, "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(header)
        for scan in scans:
            row = [scan.subject_id, scan.site]
            if with_groups:
                row.append(scan.site_group or "")
            if with_pairs:
                row.append(scan.pair_id or "")
            row.append(_relative(scan.image, root, scan, "image"))
            row += [_relative(scan.masks[m], root, scan, m) if m in scan.masks else "" for m in mask_names]
            if with_outcome:
                row.append("" if scan.outcome is None else str(int(scan.outcome)))
            row += ["" if scan.covariates.get(c) is None else scan.covariates[c] for c in covariate_columns]
            writer.writerow(row)
    return path


def _relative(value, root: Path, scan: Scan, what: str) -> str:
    if not isinstance(value, (str, Path)):
        raise HarmkitError(
            f"{scan.label}: {what} is in memory; write it to a file first (harmkit.manifest.write_cohort)"
        )
    return Path(os.path.relpath(Path(value).resolve(), root)).as_posix()


def write_cohort(
    scans: Iterable[Scan],
    out_dir: str | os.PathLike,
    manifest_name: str = "manifest.csv",
) -> Path:
    """Write every scan's image and masks as NIfTI under ``out_dir`` and a manifest pointing to them.

    Files go where :func:`image_layout` puts them, so two subjects never share
    a file whatever characters their ids hold.
    """
    import SimpleITK as sitk

    from .imageio import write_image

    out_dir = Path(out_dir)
    scans = list(scans)
    layout = image_layout(out_dir, scans)
    written: list[Scan] = []
    for scan in scans:
        files = layout[scan.subject_id]
        image_path = write_image(scan.load_image(), files.image)
        masks = {}
        for name in scan.masks:
            masks[name] = write_image(sitk.Cast(scan.load_mask(name), sitk.sitkUInt8), files.mask(name))
        written.append(replace(scan, image=image_path, masks=masks))
    return write_manifest(written, out_dir / manifest_name)


@dataclass(frozen=True)
class ScanFiles:
    """Where one scan's files go under an output folder (see :func:`image_layout`)."""

    folder: Path
    site: str

    @property
    def image(self) -> Path:
        """The image: ``<folder>/<site>_pet.nii.gz``."""
        return self.folder / f"{_safe(self.site)}_pet.nii.gz"

    def mask(self, name: str) -> Path:
        """The mask ``name``: ``<folder>/<site>_mask_<name>.nii.gz``."""
        return self.folder / f"{_safe(self.site)}_mask_{_safe(name)}.nii.gz"


def image_layout(out_dir: str | os.PathLike, scans: Iterable[Scan]) -> dict[str, ScanFiles]:
    """``{subject_id: ScanFiles}``: the layout of every cohort harmkit writes (harmonized images, ``write_cohort``).

    A scan's files go to ``out_dir/images/<subject>/<site>_pet.nii.gz`` and
    ``<site>_mask_<name>.nii.gz``, subject folders named by
    :func:`unique_file_names` over all ``scans``, so two subjects never share a
    folder, whatever characters their ids hold and even on case-insensitive
    file systems.
    """
    scans = list(scans)
    names = unique_file_names([s.subject_id for s in scans])
    return {s.subject_id: ScanFiles(Path(out_dir) / "images" / names[str(s.subject_id)], s.site) for s in scans}


_SAFE_CHARACTERS = set("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_.")


def _safe(text: str) -> str:
    """A file name for ``text``: ``text`` itself when it is plain (ASCII letters, digits, ``-_.``, not starting
    with a dot), else its plain characters plus a short hash of ``text``, so that different texts never share a
    name (``"P 1"`` -> ``"P_1-<hash>"``, ``"P_1"`` -> ``"P_1"``)."""
    import hashlib

    text = str(text)
    if text and text[0] != "." and all(ch in _SAFE_CHARACTERS for ch in text):
        return text
    plain = "".join(ch if ch in _SAFE_CHARACTERS else "_" for ch in text).lstrip(".")[:64] or "id"
    return f"{plain}-{hashlib.sha256(text.encode('utf-8')).hexdigest()[:8]}"


def unique_file_names(ids: Iterable[str]) -> dict[str, str]:
    """``{id: file name}`` with names distinct even on case-insensitive file systems (macOS, Windows).

    Plain ids keep their name; ids that need changing, or whose names differ
    only by case, get a hash of the id appended (see :func:`_safe`).
    """
    import hashlib
    from collections import Counter

    ids = list(dict.fromkeys(str(i) for i in ids))
    names = {i: _safe(i) for i in ids}
    clashes = Counter(n.casefold() for n in names.values())
    for i, name in names.items():
        if clashes[name.casefold()] > 1:
            names[i] = f"{name}-{hashlib.sha256(i.encode('utf-8')).hexdigest()[:12]}"
    if len({n.casefold() for n in names.values()}) != len(names):  # pragma: no cover - needs a SHA-256 collision
        raise HarmkitError(
            "could not give every subject a distinct file name; rename the subjects whose ids differ "
            "only in punctuation"
        )
    return names
