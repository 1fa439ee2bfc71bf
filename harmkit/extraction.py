"""Feature extraction for a whole cohort: one row per scan, cached by content.

>>> import harmkit as hk
>>> features = hk.extract("data/manifest.csv", voi="lesion", jobs=2)   # doctest: +SKIP
>>> features.attrs["feature_classes"]["glcm_Contrast"]                  # doctest: +SKIP
'glcm'

Each scan is one task on the executor (:mod:`harmkit.execution`): a local
process pool, in-process (``jobs=1``) or a Dask cluster (``scheduler``). Each
task looks up, and after computing stores, its features in the
content-addressed cache (:mod:`harmkit.cache`) under a key made of the image
voxels and geometry, the VOI mask voxels, the extractor's name, version and
every setting. A second, cheap key made of the files' stamps (path, size,
inode, modification and change times, as git's index does) points to that
entry, so a rerun on unchanged files is answered without reading them or
starting workers; any change to a file changes its stamp and sends the scan
back through the content key. A rerun finds everything; a changed image, mask or setting
recomputes only what it touches; a scan that fails or a run that crashes
loses nothing already computed.

Before any feature is computed, the scans to extract pass
:func:`harmkit.validation.check_cohort`'s data checks (damaged files,
NaN voxels, SUV range, the VOI mask, the grey levels the extractor's bin
width would give); scans found by their stamps were checked when they were
computed. The settings go to a sidecar ``<name>.settings.json`` beside the
table (see :func:`write_features`).
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import pandas as pd

from .atomic import atomic_file
from .cache import Cache, default_cache_dir, hash_parts
from .errors import HarmkitError, warn
from .toolkit import FEATURE_INDEX, NON_FEATURE_COLUMNS

__all__ = [
    "extract",
    "write_features",
    "read_features",
    "check_feature_output",
    "sidecar_path",
    "ExtractionTask",
]

KEY_FORMAT = "harmkit-features/1"
# quick (stamp) keys are written only for scans that passed validation; a new check set changes them
QUICK_FORMAT = "validated/1"


@dataclass
class ExtractionTask:
    """Everything a worker needs for one scan (picklable)."""

    scan: Any
    voi: str
    extractor: Any
    fingerprint: str
    cache_root: str | None
    largest_component: bool


def _file_stamp(path: Any) -> list | None:
    """What identifies a file's current version without reading it (like git's index):
    path, size, inode, modification and change times. ``None`` for in-memory images."""
    if not isinstance(path, (str, os.PathLike)):
        return None
    try:
        st = os.stat(path)
    except OSError:
        return None
    return [
        str(Path(path).resolve()),
        st.st_size,
        st.st_ino,
        st.st_mtime_ns,
        st.st_ctime_ns,
    ]


def _quick_key(task: ExtractionTask) -> str | None:
    """A key from file stamps, so a rerun on unchanged files skips reading them."""
    if task.cache_root is None:
        return None
    stamps = [_file_stamp(task.scan.image), _file_stamp(task.scan.masks.get(task.voi))]
    if None in stamps:
        return None
    return hash_parts(
        KEY_FORMAT,
        "stamp",
        QUICK_FORMAT,
        task.fingerprint,
        task.largest_component,
        task.scan.nan_to_zero,
        stamps,
    )


def _stored_features(cache: Cache, key: str) -> dict[str, float] | None:
    """The features stored under ``key``, or ``None``; an entry that is not a table of numbers is discarded."""
    stored = cache.get(key)
    if stored is None:
        return None
    features = stored.get("features") if isinstance(stored, dict) else None
    if not isinstance(features, dict) or not all(
        isinstance(k, str) and isinstance(v, (int, float)) and not isinstance(v, bool) for k, v in features.items()
    ):
        cache.discard(key, "it does not hold a table of feature values")
        return None
    return features


def _pointer(cache: Cache, quick: str) -> str | None:
    """The content key a stamp key points to, or ``None``; a malformed pointer is discarded."""
    pointer = cache.get(quick)
    if pointer is None:
        return None
    key = pointer.get("key") if isinstance(pointer, dict) else None
    if not isinstance(key, str) or len(key) != 64 or any(c not in "0123456789abcdef" for c in key):
        cache.discard(quick, "it does not point to a feature entry")
        return None
    return key


def _extract_one(task: ExtractionTask) -> dict[str, Any]:
    """Worker function: features of one scan, from the cache when possible.

    Warnings (a damaged cache entry, a cache that cannot be written) are
    returned in ``"warnings"`` so that the caller shows them, whichever
    process ran the task.
    """
    import warnings

    from .voi import largest_component

    scan = task.scan
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            # stamped before reading, so a file changed meanwhile cannot be recorded as unchanged
            quick = _quick_key(task)
            image = scan.load_image()
            mask = scan.load_mask(task.voi)
            if task.largest_component:
                mask = largest_component(mask)
            cache = Cache(task.cache_root)
            key = cache.key(KEY_FORMAT, task.fingerprint, image, mask) if cache.enabled else None
            stored = _stored_features(cache, key) if key is not None else None
            if stored is not None:
                if quick:
                    cache.put(quick, {"key": key})
                result = {
                    "features": stored,
                    "cached": True,
                    "key": key,
                    "quick": quick,
                }
            else:
                started = time.perf_counter()
                features = {name: float(value) for name, value in task.extractor.extract(image, mask).items()}
                seconds = time.perf_counter() - started
                if key is not None:
                    cache.put(key, {"features": features, "seconds": seconds})
                    if quick:
                        cache.put(quick, {"key": key})
                result = {
                    "features": features,
                    "cached": False,
                    "key": key,
                    "quick": quick,
                    "seconds": seconds,
                    "stored": bool(cache.enabled and not cache.write_failed),
                }
        except HarmkitError as exc:
            message = str(exc)
            raise HarmkitError(message if message.startswith(scan.label) else f"{scan.label}: {message}") from None
    result["warnings"] = [str(w.message) for w in caught if issubclass(w.category, UserWarning)]
    return result


def extract(
    cohort,
    voi: str = "lesion",
    extractor=None,
    jobs: int | None = None,
    scheduler: str | None = None,
    cache_dir: str | os.PathLike | Literal[False] | None = None,
    largest_component: bool = False,
    on_error: str = "raise",
    executor=None,
    progress: bool = True,
    nan_to_zero: bool = False,
    bin_width_option: str | None = "--bin-width",
) -> pd.DataFrame:
    """Extract features from the VOI ``voi`` of every scan of ``cohort``.

    Parameters
    ----------
    cohort : Cohort or path to a manifest CSV
    voi : str
        Mask name (manifest column ``mask_<voi>``): ``"lesion"``, ``"reference"``, ...
    extractor : FeatureExtractor, plugin name, or None
        Default: the ``radiomics`` plugin with its PET defaults (93 features).
    jobs, scheduler :
        Where scans run (see :func:`harmkit.execution.get_executor`);
        ignored when ``executor`` is given.
    cache_dir : path, None or False
        Cache directory; ``None`` uses ``$HARMKIT_CACHE`` or
        ``~/.cache/harmkit``; ``False`` disables caching. With a remote Dask
        cluster the cache (like the images) must be on a filesystem that
        every worker sees.
    largest_component : bool
        Keep only the largest connected component of the VOI (the paper's
        "largest lesion").
    on_error : ``"raise"`` or ``"keep"``
        What to do when some scans fail. Scans that fail validation (NaN in
        the image, a damaged file, an empty or missing VOI mask, mask/image
        mismatch, too many grey levels, ...) are found first: with
        ``"raise"`` (default) one :class:`HarmkitError` lists each of them
        and nothing is extracted. Scans that fail during extraction (a VOI
        empty after resampling, ...) do not stop the others: every other
        scan is computed and cached first, then one error lists them.
        ``"keep"`` returns the table of the scans that worked, with
        ``attrs["failed"] = {subject_id: message}``.
    executor : an executor from :func:`harmkit.execution.get_executor`, optional
        Reuse a running pool or cluster (not closed here).
    nan_to_zero : bool
        Read NaN and infinite voxels as 0 instead of refusing the scan.
    bin_width_option : str or None
        How messages name the bin-width setting (the CLI's ``--bin-width``).

    Returns
    -------
    DataFrame indexed by ``subject_id`` (cohort order) with columns ``site``,
    ``site_group``, then one float column per feature. ``attrs`` holds
    ``feature_classes`` ({feature: class}), ``settings`` (every extractor
    setting), ``extractor``, ``extractor_version``, ``voi``,
    ``largest_component``, ``cache`` ({"hits", "computed"}) and ``failed``.
    """
    from .data import Cohort
    from .execution import TaskResult, get_executor
    from .manifest import load_cohort
    from .plugins import get_extractor

    if on_error not in ("raise", "keep"):
        raise HarmkitError(f"on_error={on_error!r}: use 'raise' or 'keep'")
    if not isinstance(cohort, Cohort):
        cohort = load_cohort(cohort)
    if len(cohort) == 0:
        raise HarmkitError("the cohort has no scans; nothing to extract")
    if not any(voi in scan.masks for scan in cohort):
        available = ", ".join(cohort.mask_names) or "none"
        raise HarmkitError(
            f"no scan of {cohort.manifest or 'the cohort'} has a mask {voi!r} (masks: {available}); choose --voi among "
            f"them or add a 'mask_{voi}' column to the manifest"
        )
    if extractor is None:
        extractor = get_extractor("radiomics")
    elif isinstance(extractor, str):
        extractor = get_extractor(extractor)
    if cache_dir is False:
        cache_root = None
    else:
        cache_root = str(Path(cache_dir if cache_dir is not None else default_cache_dir()).expanduser().resolve())
        unusable = Cache.usable(cache_root)
        if unusable:
            warn(
                f"cannot write to the cache {cache_root}: {unusable}; extracting without the cache "
                f"(choose a writable folder with --cache, or pass --no-cache)"
            )
            cache_root = None
    if nan_to_zero:
        from .validation import with_nan_to_zero

        cohort = with_nan_to_zero(cohort)
    settings = extractor.settings()
    version = extractor.version
    feature_classes = extractor.feature_classes()
    fingerprint = hash_parts(extractor.name, version, settings)
    tasks = [ExtractionTask(scan, voi, extractor, fingerprint, cache_root, bool(largest_component)) for scan in cohort]

    # unchanged files found by their stamps need neither reading nor a worker
    cache = Cache(cache_root)
    results: list[TaskResult | None] = [None] * len(tasks)
    for i, task in enumerate(tasks):
        quick = _quick_key(task)
        key = _pointer(cache, quick) if quick else None
        stored = _stored_features(cache, key) if key else None
        if stored is not None:
            results[i] = TaskResult(value={"features": stored, "cached": True, "key": key})
    pending = [i for i, r in enumerate(results) if r is None]
    invalid: dict[int, str] = {}
    if pending:
        own_executor = executor is None
        if own_executor:
            executor = get_executor(jobs=jobs, scheduler=scheduler, progress=progress)
        try:
            invalid = _invalid_scans(cohort, pending, voi, extractor, bin_width_option, executor)
            if invalid and on_error == "raise":
                lines = "\n".join(f"  - {message}" for message in invalid.values())
                raise HarmkitError(
                    f"{len(invalid)} of {len(cohort)} scan(s) cannot be used, so nothing was extracted; "
                    f"fix them (see 'harmkit validate'), or extract the others with --keep-going "
                    f"(on_error='keep'):\n{lines}"
                )
            runnable = [i for i in pending if i not in invalid]
            label = f"extracting {voi} features"
            done = executor.map(_extract_one, [tasks[i] for i in runnable], label=label) if runnable else []
        finally:
            if own_executor:
                executor.close()
        for i, result in zip(runnable, done):
            results[i] = result

    rows, index, failed = [], [], {}
    hits = computed = 0
    for number, (scan, result) in enumerate(zip(cohort, results)):
        if number in invalid:
            failed[scan.subject_id] = invalid[number]
            continue
        assert result is not None  # every scan that is not invalid was found in the cache or run
        if not result.ok:
            error = result.error or "unknown error"
            failed[scan.subject_id] = error if scan.label in error else f"{scan.label}: {error}"
            continue
        value = result.value
        for message in value.get("warnings", ()):
            warn(message)
        if value["cached"]:
            hits += 1
        else:
            computed += 1
            if cache.enabled and value.get("stored") is not False and value["key"] and value["key"] not in cache:
                # a remote worker without the shared cache
                cache.put(
                    value["key"],
                    {"features": value["features"], "seconds": value.get("seconds")},
                )
                if value.get("quick"):
                    cache.put(value["quick"], {"key": value["key"]})
        rows.append({"site": scan.site, "site_group": scan.group, **value["features"]})
        index.append(scan.subject_id)

    if failed and on_error == "raise":
        lines = "\n".join(f"  - {message}" for message in failed.values())
        kept = (
            f"; the features of the other {len(index)} scan(s) are cached in {cache_root}, so a rerun computes only "
            "the failing ones"
            if cache_root and index
            else ""
        )
        raise HarmkitError(f"feature extraction failed for {len(failed)} of {len(cohort)} scan(s){kept}:\n{lines}")

    feature_names = list(feature_classes)
    for row in rows:  # features an extractor returns beyond feature_classes() keep their order of appearance
        for name in row:
            if name not in NON_FEATURE_COLUMNS and name not in feature_classes:
                feature_classes[name] = "unknown"
                feature_names.append(name)
    table = pd.DataFrame(
        rows,
        index=pd.Index(index, name=FEATURE_INDEX),
        columns=[*NON_FEATURE_COLUMNS, *feature_names],
    )
    table[feature_names] = table[feature_names].astype(float)
    table.attrs.update(
        {
            "feature_classes": {name: feature_classes[name] for name in feature_names},
            "settings": settings,
            "extractor": extractor.name,
            "extractor_version": version,
            "voi": voi,
            "largest_component": bool(largest_component),
            "cache": {"dir": cache_root, "hits": hits, "computed": computed},
            "failed": failed,
        }
    )
    return table


def _invalid_scans(cohort, pending: list[int], voi: str, extractor, bin_width_option, executor) -> dict[int, str]:
    """Data checks of the scans to extract (see :mod:`harmkit.validation`): ``{index: message}`` of those that fail."""
    from .data import Cohort
    from .validation import bin_width_of, validate_cohort

    subset = Cohort([cohort[i] for i in pending], cohort.root, cohort.manifest, cohort.metadata)
    nan_to_zero = all(s.nan_to_zero for s in subset)
    report = validate_cohort(
        subset,
        1,
        False,
        [voi],
        True,
        use_masks=[voi],
        nan_to_zero=nan_to_zero,
        bin_width=bin_width_of(extractor),
        bin_width_option=bin_width_option,
        executor=executor,
        pairs=False,
    )
    for problem in report.warnings:
        warn(str(problem))
    invalid: dict[int, list[str]] = {}
    for i, scan in zip(pending, subset):
        messages = [p.message for p in report.errors if (p.row, p.subject) == (scan.row, scan.subject_id or None)]
        if messages:
            invalid[i] = messages
    return {i: f"{cohort[i].label}: " + "; ".join(messages) for i, messages in invalid.items()}


def sidecar_path(path: str | os.PathLike) -> Path:
    """Where :func:`write_features` puts the settings of the table ``path``: ``<stem>.settings.json`` beside it
    (never the table itself, whatever its name)."""
    path = Path(path)
    return path.with_name(f"{path.stem}.settings.json")


def _sidecar_of(path: Path) -> Path | None:
    """The sidecar of an existing table: the current name, else the ``<stem>.json`` of older versions."""
    for candidate in (sidecar_path(path), path.with_suffix(".json")):
        if candidate != path and _is_sidecar(candidate):
            return candidate
    return None


def _is_sidecar(path: Path) -> bool:
    try:
        document = json.loads(path.read_text())
    except (OSError, ValueError):
        return False
    return isinstance(document, dict) and "feature_classes" in document and "extractor" in document


def check_feature_output(path: str | os.PathLike, inputs=(), option: str = "--out") -> None:
    """Refuse to write a feature table to ``path`` when that would destroy something harmkit did not write.

    ``path`` and its sidecar must not be one of ``inputs`` (the manifest,
    images, masks, a parameter file); an existing ``path`` must be a table
    written by :func:`write_features` (its sidecar beside it), and an
    existing sidecar must be one.
    """
    from .atomic import check_not_an_input

    path = Path(path)
    sidecar = sidecar_path(path)
    check_not_an_input(path, inputs, option)
    check_not_an_input(sidecar, inputs, f"{option} (settings file {sidecar.name})")
    if path.is_dir():
        raise HarmkitError(f"{option} {path}: is a folder; give the name of a CSV file, e.g. {path / 'features.csv'}")
    if path.exists():
        header = ""
        try:
            with open(path, newline="") as handle:
                header = handle.readline()
        except (OSError, UnicodeDecodeError):
            pass
        if not (header.startswith(",".join((FEATURE_INDEX, *NON_FEATURE_COLUMNS, ""))) and _sidecar_of(path)):
            raise HarmkitError(
                f"{option} {path}: exists and is not a feature table written by harmkit extract; harmkit will not "
                f"overwrite it. Choose another --out, or delete the file yourself"
            )
    if sidecar.exists() and not _is_sidecar(sidecar):
        raise HarmkitError(
            f"{option} {path}: its settings file {sidecar} exists and was not written by harmkit extract; "
            f"choose another --out, or delete that file yourself"
        )


def write_features(table: pd.DataFrame, path: str | os.PathLike) -> Path:
    """Write a feature table as CSV (full float precision) plus ``<stem>.settings.json`` with its attrs.

    Both files are written under temporary names and renamed. An existing
    file that is not a harmkit feature table (or its sidecar) is never
    overwritten (see :func:`check_feature_output`).
    """
    path = Path(path)
    check_feature_output(path, option="output")
    sidecar = sidecar_path(path)
    for target, write in (
        (path, lambda handle: table.to_csv(handle, float_format="%.17g")),
        (sidecar, lambda handle: json.dump(table.attrs, handle, indent=2, default=str)),
    ):
        with atomic_file(target) as tmp, open(tmp, "w", newline="") as handle:
            write(handle)
    return path


def read_features(path: str | os.PathLike) -> pd.DataFrame:
    """Read a table written by :func:`write_features` (attrs restored from the sidecar JSON)."""
    path = Path(path)
    if not path.is_file():
        raise HarmkitError(f"feature table not found: {path}")
    try:
        text_columns = dict.fromkeys((FEATURE_INDEX, *NON_FEATURE_COLUMNS), str)
        table = pd.read_csv(
            path,
            index_col=FEATURE_INDEX,
            dtype=text_columns,
            float_precision="round_trip",
        )
    except (ValueError, pd.errors.ParserError, UnicodeDecodeError) as exc:
        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise HarmkitError(f"{path}: not a feature table written by harmkit extract ({reason})") from None
    sidecar = _sidecar_of(path)
    if sidecar is not None:
        table.attrs.update(json.loads(sidecar.read_text()))
    return table
