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
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from .atomic import atomic_file
from .cache import Cache, default_cache_dir, hash_parts
from .errors import HarmkitError

__all__ = ["extract", "write_features", "read_features", "ExtractionTask"]

KEY_FORMAT = "harmkit-features/1"


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
    return [str(Path(path).resolve()), st.st_size, st.st_ino, st.st_mtime_ns, st.st_ctime_ns]


def _quick_key(task: ExtractionTask) -> str | None:
    """A key from file stamps, so a rerun on unchanged files skips reading them."""
    if task.cache_root is None:
        return None
    stamps = [_file_stamp(task.scan.image), _file_stamp(task.scan.masks.get(task.voi))]
    if None in stamps:
        return None
    return hash_parts(KEY_FORMAT, "stamp", task.fingerprint, task.largest_component, stamps)


def _extract_one(task: ExtractionTask) -> dict[str, Any]:
    """Worker function: features of one scan, from the cache when possible."""
    from .voi import largest_component

    scan = task.scan
    try:
        quick = _quick_key(task)  # stamped before reading, so a file changed meanwhile cannot be recorded as unchanged
        image = scan.load_image()
        mask = scan.load_mask(task.voi)
        if task.largest_component:
            mask = largest_component(mask)
        cache = Cache(task.cache_root)
        key = cache.key(KEY_FORMAT, task.fingerprint, image, mask) if cache.enabled else None
        stored = cache.get(key) if cache.enabled else None
        if stored is not None:
            if quick:
                cache.put(quick, {"key": key})
            return {"features": stored["features"], "cached": True, "key": key, "quick": quick}
        started = time.perf_counter()
        features = {name: float(value) for name, value in task.extractor.extract(image, mask).items()}
        seconds = time.perf_counter() - started
        if cache.enabled:
            cache.put(key, {"features": features, "seconds": seconds})
            if quick:
                cache.put(quick, {"key": key})
        return {"features": features, "cached": False, "key": key, "quick": quick, "seconds": seconds}
    except HarmkitError as exc:
        message = str(exc)
        raise HarmkitError(message if message.startswith(scan.label) else f"{scan.label}: {message}") from None


def extract(
    cohort,
    voi: str = "lesion",
    extractor=None,
    jobs: int | None = None,
    scheduler: str | None = None,
    cache_dir: str | os.PathLike | None | bool = None,
    largest_component: bool = False,
    on_error: str = "raise",
    executor=None,
    progress: bool = True,
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
        What to do when some scans fail (NaN in the image, empty mask after
        resampling, mask/image mismatch, ...). Either way every other scan
        is computed and cached first. ``"raise"`` (default) then raises one
        :class:`HarmkitError` listing each failing scan and its problem;
        ``"keep"`` returns the table of the scans that worked, with
        ``attrs["failed"] = {subject_id: message}``.
    executor : an executor from :func:`harmkit.execution.get_executor`, optional
        Reuse a running pool or cluster (not closed here).

    Returns
    -------
    DataFrame indexed by ``subject_id`` (cohort order) with columns ``site``,
    ``site_group``, then one float column per feature. ``attrs`` holds
    ``feature_classes`` ({feature: class}), ``settings`` (every extractor
    setting), ``extractor``, ``extractor_version``, ``voi``,
    ``largest_component``, ``cache`` ({"hits", "computed"}) and ``failed``.
    """
    from .data import Cohort, load_cohort
    from .execution import TaskResult, get_executor
    from .plugins import get_extractor

    if on_error not in ("raise", "keep"):
        raise HarmkitError(f"on_error={on_error!r}: use 'raise' or 'keep'")
    if not isinstance(cohort, Cohort):
        cohort = load_cohort(cohort)
    if len(cohort) == 0:
        raise HarmkitError("the cohort has no scans; nothing to extract")
    if not any(voi in scan.masks for scan in cohort):
        available = ", ".join(cohort.mask_names) or "none"
        raise HarmkitError(f"no scan of {cohort.manifest or 'the cohort'} has a mask {voi!r} (masks: {available}); choose --voi among them or add a 'mask_{voi}' column to the manifest")
    if extractor is None:
        extractor = get_extractor("radiomics")
    elif isinstance(extractor, str):
        extractor = get_extractor(extractor)
    if cache_dir is False:
        cache_root = None
    else:
        cache_root = str(Path(cache_dir if cache_dir is not None else default_cache_dir()).expanduser().resolve())
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
        pointer = cache.get(quick) if quick else None
        stored = cache.get(pointer["key"]) if isinstance(pointer, dict) and "key" in pointer else None
        if stored is not None:
            results[i] = TaskResult(value={"features": stored["features"], "cached": True, "key": pointer["key"]})
    pending = [i for i, r in enumerate(results) if r is None]
    if pending:
        own_executor = executor is None
        if own_executor:
            executor = get_executor(jobs=jobs, scheduler=scheduler, progress=progress)
        try:
            done = executor.map(_extract_one, [tasks[i] for i in pending], label=f"extracting {voi} features")
        finally:
            if own_executor:
                executor.close()
        for i, result in zip(pending, done):
            results[i] = result

    rows, index, failed = [], [], {}
    hits = computed = 0
    for scan, result in zip(cohort, results):
        if not result.ok:
            error = result.error or "unknown error"
            failed[scan.subject_id] = error if scan.label in error else f"{scan.label}: {error}"
            continue
        value = result.value
        if value["cached"]:
            hits += 1
        else:
            computed += 1
            if cache.enabled and value["key"] and value["key"] not in cache:  # a remote worker without the shared cache
                cache.put(value["key"], {"features": value["features"], "seconds": value.get("seconds")})
                if value.get("quick"):
                    cache.put(value["quick"], {"key": value["key"]})
        rows.append({"site": scan.site, "site_group": scan.group, **value["features"]})
        index.append(scan.subject_id)

    if failed and on_error == "raise":
        lines = "\n".join(f"  - {message}" for message in failed.values())
        kept = f"; the features of the other {len(index)} scan(s) are cached in {cache_root}, so a rerun computes only the failing ones" if cache_root and index else ""
        raise HarmkitError(f"feature extraction failed for {len(failed)} of {len(cohort)} scan(s){kept}:\n{lines}")

    feature_names = list(feature_classes)
    for row in rows:  # features an extractor returns beyond feature_classes() keep their order of appearance
        for name in row:
            if name not in ("site", "site_group") and name not in feature_classes:
                feature_classes[name] = "unknown"
                feature_names.append(name)
    table = pd.DataFrame(rows, index=pd.Index(index, name="subject_id"), columns=["site", "site_group", *feature_names])
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


def write_features(table: pd.DataFrame, path: str | os.PathLike) -> Path:
    """Write a feature table as CSV (full float precision) plus ``<name>.json`` with its attrs.

    Both files are written under temporary names and renamed.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    sidecar = path.with_suffix(".json")
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
    table = pd.read_csv(path, index_col="subject_id", dtype={"subject_id": str, "site": str, "site_group": str}, float_precision="round_trip")
    sidecar = path.with_suffix(".json")
    if sidecar.is_file():
        table.attrs.update(json.loads(sidecar.read_text()))
    return table
