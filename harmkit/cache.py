"""A content-addressed on-disk cache for every stage of a run.

A key is the SHA-256 of everything that determines a result: input bytes
(images, masks, arrays, files), parameters and code versions. The same inputs
give the same key on any machine, so a rerun finds its results and a changed
input or setting simply misses. Entries are written under a temporary name
and renamed, so a crash never leaves a half-written entry that looks valid,
and concurrent writers of the same key cannot corrupt each other.

>>> cache = Cache("~/.cache/harmkit")                      # doctest: +SKIP
>>> key = cache.key(image_array, {"binWidth": 0.25}, "radiomics 3.0.1")
>>> table = cache.get(key)                                 # None on a miss
>>> if table is None:
...     table = cache.put(key, compute())

Stored values: pandas DataFrames and Series (numeric columns as ``.npz``,
other columns and ``attrs`` as JSON: exact, no pickle), numpy arrays, dicts
of numpy arrays, and JSON-serialisable values.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import shutil
import struct
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .errors import HarmkitError

__all__ = [
    "Cache",
    "hash_parts",
    "default_cache_dir",
    "cache_dir_source",
    "features_dir",
    "CacheInfo",
    "KindInfo",
    "cache_info",
    "clear_cache",
    "parse_age",
    "CACHE_KINDS",
]

FORMAT = "harmkit-cache/1"
META = "entry.json"
ARRAYS = "arrays.npz"


def default_cache_dir() -> Path:
    """The one cache of every command: ``$HARMKIT_CACHE``, else ``$XDG_CACHE_HOME/harmkit``, else ``~/.cache/harmkit``.

    ``harmkit bench``, ``extract``, ``diagnose`` and ``cache`` use it unless
    given ``--cache-dir``. Keys are content addressed, so one cache serves
    every run, output folder and cohort without mixing results.
    """
    if os.environ.get("HARMKIT_CACHE"):
        return Path(os.environ["HARMKIT_CACHE"]).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base).expanduser() / "harmkit"


def cache_dir_source() -> str:
    """Where :func:`default_cache_dir` came from, for messages: ``$HARMKIT_CACHE``, ``$XDG_CACHE_HOME`` or home."""
    if os.environ.get("HARMKIT_CACHE"):
        return "$HARMKIT_CACHE"
    if os.environ.get("XDG_CACHE_HOME"):
        return "$XDG_CACHE_HOME/harmkit"
    return "~/.cache/harmkit (set $HARMKIT_CACHE or $XDG_CACHE_HOME to move it)"


def features_dir(root: str | os.PathLike | None = None) -> Path:
    """The feature-table part of the cache rooted at ``root`` (default :func:`default_cache_dir`).

    ``harmkit extract``, ``diagnose`` and ``bench`` all keep feature tables
    here, so a table one of them computed is found by the others.
    """
    return Path(root if root is not None else default_cache_dir()).expanduser() / "features"


#: The file that marks a folder as a cache (https://bford.info/cachedir/): backup tools skip it.
CACHEDIR_TAG = "CACHEDIR.TAG"
_TAG_TEXT = (
    "Signature: 8a477f597d28d172789f06886806bc55\n"
    "# This file is a cache directory tag created by harmkit (harmkit cache info / clear).\n"
    "# For information about cache directory tags see https://bford.info/cachedir/\n"
)


def _tag(root: Path) -> None:
    """Write the cache directory tag into ``root`` once (best effort: a tag that cannot be written is no error)."""
    tag = root / CACHEDIR_TAG
    if not tag.exists():
        try:
            tag.write_text(_TAG_TEXT)
        except OSError:
            pass


# -- hashing -------------------------------------------------------------------


def _feed(h: "hashlib._Hash", part: Any) -> None:
    """Feed ``part`` into ``h`` with a type tag and length, so that different
    values (``"1"`` vs ``1``, ``("ab", "c")`` vs ``("a", "bc")``) never collide."""

    def tagged(tag: bytes, payload: bytes) -> None:
        h.update(tag + struct.pack("<Q", len(payload)) + payload)

    if isinstance(part, (bytes, bytearray, memoryview)):
        tagged(b"B", bytes(part))
    elif isinstance(part, np.ndarray):
        array = np.ascontiguousarray(part)
        if array.dtype == object:
            raise TypeError("cannot hash an object array; convert it to a numeric or string dtype")
        tagged(b"A", f"{array.dtype.str}|{array.shape}".encode())
        h.update(array.tobytes())
    elif isinstance(part, Path) and part.is_dir():
        # a folder (a DICOM series): every file by its name within the folder and its bytes
        files = sorted(p for p in part.rglob("*") if p.is_file())
        tagged(b"D", json.dumps([p.relative_to(part).as_posix() for p in files]).encode())
        for path in files:
            _feed(h, path)
    elif isinstance(part, Path):
        # content-addressed: a file counts by its bytes, not its name
        tagged(b"F", b"")
        try:
            with open(part, "rb") as handle:
                for block in iter(lambda: handle.read(1 << 20), b""):
                    h.update(block)
        except OSError as exc:
            from .errors import io_error

            raise io_error(exc, part, "read") from None
    elif hasattr(part, "GetSpacing") and hasattr(part, "GetPixelIDValue"):  # SimpleITK image
        import SimpleITK as sitk

        tagged(
            b"I",
            json.dumps(
                [
                    part.GetSize(),
                    part.GetSpacing(),
                    part.GetOrigin(),
                    part.GetDirection(),
                ]
            ).encode(),
        )
        _feed(h, sitk.GetArrayViewFromImage(part))
    elif _is_pandas(part):
        import pandas as pd

        tagged(
            b"P",
            json.dumps(
                [
                    list(
                        map(
                            str,
                            part.columns if isinstance(part, pd.DataFrame) else [part.name],
                        )
                    ),
                    str(part.index.name),
                ]
            ).encode(),
        )
        h.update(pd.util.hash_pandas_object(part, index=True).to_numpy().tobytes())
    else:
        try:
            text = json.dumps(
                part,
                sort_keys=True,
                separators=(",", ":"),
                default=_json_default,
                allow_nan=True,
            )
        except TypeError as exc:
            raise TypeError(f"cannot hash {type(part).__name__} for a cache key: {exc}") from None
        tagged(b"J", text.encode())


def _is_pandas(value: Any) -> bool:
    module = type(value).__module__
    return module.startswith("pandas") and hasattr(value, "index")


def _json_default(value: Any) -> Any:
    if isinstance(value, np.integer):
        return int(value)
    if isinstance(value, np.floating):
        return float(value)
    if isinstance(value, np.bool_):
        return bool(value)
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, (set, frozenset)):
        return sorted(value, key=repr)
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"{type(value).__name__} is not JSON-serialisable")


def hash_parts(*parts: Any) -> str:
    """SHA-256 hex digest of ``parts`` (bytes, numpy arrays, SimpleITK images,
    files given as :class:`~pathlib.Path` (hashed by content), pandas objects,
    or JSON-able values; dict key order does not matter)."""
    h = hashlib.sha256()
    h.update(FORMAT.encode())
    for part in parts:
        _feed(h, part)
    return h.hexdigest()


# -- the cache -----------------------------------------------------------------


class Cache:
    """Content-addressed store under ``root`` (created on first write).

    ``key(*parts)`` hashes inputs, ``get(key)`` returns the stored value or
    ``None`` (or ``default``), ``put(key, value)`` stores it atomically and
    returns it. ``hits`` and ``misses`` count lookups. ``Cache(None)`` is a
    disabled cache: every ``get`` misses and ``put`` stores nothing.

    A damaged entry (unreadable, or rejected by the caller through
    :meth:`discard`) is deleted with a :class:`~harmkit.errors.HarmkitWarning`
    and counts as a miss, so it is recomputed. When an entry cannot be
    written (read-only folder, full disk), the cache warns once and stores
    nothing more: the run goes on uncached.
    """

    def __init__(self, root: str | os.PathLike | None):
        self.root = Path(root).expanduser() if root is not None else None
        self.hits = 0
        self.misses = 0
        self.write_failed: str | None = None
        self._tagged = False

    @staticmethod
    def usable(root: str | os.PathLike) -> str | None:
        """``None`` when entries can be written under ``root``, else why not (one line)."""
        root = Path(root).expanduser()
        try:
            root.mkdir(parents=True, exist_ok=True)
            fd, name = tempfile.mkstemp(prefix=".write-test.", dir=root)
            os.close(fd)
            os.unlink(name)
        except OSError as exc:
            return f"{exc.strerror or exc} ({exc.filename or root})"
        _tag(_cache_root_of(root))
        return None

    @property
    def enabled(self) -> bool:
        return self.root is not None

    @staticmethod
    def key(*parts: Any) -> str:
        """The SHA-256 key of ``parts`` (see :func:`hash_parts`)."""
        return hash_parts(*parts)

    def path(self, key: str) -> Path:
        """The directory that holds entry ``key``."""
        if self.root is None:
            raise HarmkitError("this cache is disabled (no cache directory)")
        if len(key) < 8 or not all(c in "0123456789abcdef" for c in key):
            raise ValueError(f"not a cache key: {key!r}")
        return self.root / key[:2] / key

    def image_path(self, folder: str, key: str) -> Path:
        """The NIfTI file under which an image (a harmonized scan, a mask) is kept by ``key`` in ``folder``.

        Images are plain files beside the entries, sharded by the key's first two digits; whoever writes one
        writes it atomically (:func:`harmkit.imageio.write_image`), so a file that exists is complete.
        """
        if self.root is None:
            raise HarmkitError("this cache is disabled (no cache directory)")
        return self.root / folder / key[:2] / f"{key[:24]}.nii.gz"

    def __contains__(self, key: str) -> bool:
        return self.enabled and (self.path(key) / META).is_file()

    def get(self, key: str, default: Any = None) -> Any:
        """The value stored under ``key``, or ``default`` when absent or unreadable."""
        if not self.enabled:
            self.misses += 1
            return default
        directory = self.path(key)
        try:
            meta = json.loads((directory / META).read_text())
            if not isinstance(meta, dict) or meta.get("format") != FORMAT:
                raise ValueError(f"not a {FORMAT} entry")
            value = _load(directory, meta)
        except FileNotFoundError:
            self.misses += 1
            return default
        except Exception as exc:  # noqa: BLE001 - whatever is wrong with an entry, it is recomputed
            self.discard(key, f"{type(exc).__name__}: {exc}")
            self.misses += 1
            return default
        self.hits += 1
        return value

    def discard(self, key: str, reason: str) -> None:
        """Delete the damaged entry ``key`` with a warning; the caller recomputes it."""
        from .errors import warn

        first = reason.strip().splitlines()[0][:200] if reason.strip() else "unreadable"
        warn(f"cache entry {self.path(key)} is damaged ({first}); discarded and recomputed")
        self.delete(key)

    def put(self, key: str, value: Any) -> Any:
        """Store ``value`` under ``key`` atomically and return it unchanged."""
        if not self.enabled or self.write_failed:
            return value
        directory = self.path(key)
        try:
            directory.parent.mkdir(parents=True, exist_ok=True)
            if not self._tagged and self.root is not None:
                _tag(_cache_root_of(self.root))
                self._tagged = True
            tmp = Path(tempfile.mkdtemp(prefix=f".{key[:16]}.", dir=directory.parent))
        except OSError as exc:
            self._write_failed(exc)
            return value
        try:
            meta = _dump(tmp, value)
            meta["format"] = FORMAT
            (tmp / META).write_text(json.dumps(meta, default=_json_default, allow_nan=True))
            if directory.exists():
                shutil.rmtree(directory, ignore_errors=True)
            try:
                os.replace(tmp, directory)
            except OSError:
                # another process stored the same key first: same content, keep theirs
                if not (directory / META).is_file():
                    raise
        except OSError as exc:
            self._write_failed(exc)
        finally:
            if tmp.exists():
                shutil.rmtree(tmp, ignore_errors=True)
        return value

    def _write_failed(self, exc: OSError) -> None:
        from .errors import warn

        self.write_failed = f"{exc.strerror or exc} ({exc.filename or self.root})"
        warn(
            f"cannot write to the cache {self.root}: {self.write_failed}; going on without storing results there "
            f"(choose a writable folder with --cache-dir, or --no-cache)"
        )

    def get_or_compute(self, key: str, compute) -> Any:
        """``get(key)``, or ``put(key, compute())`` on a miss."""
        value = self.get(key, _MISSING)
        if value is _MISSING:
            value = self.put(key, compute())
        return value

    def delete(self, key: str) -> None:
        if self.enabled:
            shutil.rmtree(self.path(key), ignore_errors=True)

    def clear(self) -> None:
        """Remove every entry."""
        if self.enabled and self.root is not None and self.root.exists():
            shutil.rmtree(self.root)

    def __repr__(self) -> str:
        return f"Cache({str(self.root) if self.root else None!r}, hits={self.hits}, misses={self.misses})"


_MISSING = object()


# -- what the cache holds: info and clear ---------------------------------------

#: What each part of the cache holds, by folder (``results`` are the entries at the top level).
CACHE_KINDS: dict[str, str] = {
    "features": "feature tables (extract, diagnose, bench)",
    "images": "harmonized images (bench)",
    "models": "fitted image harmonizers (bench)",
    "masks": "body masks made by thresholding (bench)",
    "results": "stored results of bench stages (statistics, evaluator tables)",
    "cohorts": "simulated cohorts (bench without --cohort)",
    "work": "checkpoints of interrupted model fits (bench)",
}
_HEX = frozenset("0123456789abcdef")


def _hex(text: str, least: int = 8) -> bool:
    return len(text) >= least and all(c in _HEX for c in text)


def _temporary(name: str) -> bool:
    """A half-written entry left by an interrupted run (``.<key>.<random>``, see :meth:`Cache.put`)."""
    return name.startswith(".") and _hex(name[1:].split(".", 1)[0], 8)


def _cache_root_of(path: Path) -> Path:
    """The cache root of a :class:`Cache` at ``path`` (the ``features`` part lives one level down)."""
    return path.parent if path.name == "features" else path


@dataclass
class KindInfo:
    """Entries of one kind in a cache: how many, their bytes, and when the oldest and newest were written."""

    kind: str
    entries: int = 0
    bytes: int = 0
    oldest: float | None = None
    newest: float | None = None

    def add(self, size: int, mtime: float) -> None:
        self.entries += 1
        self.bytes += size
        self.oldest = mtime if self.oldest is None else min(self.oldest, mtime)
        self.newest = mtime if self.newest is None else max(self.newest, mtime)


@dataclass
class CacheInfo:
    """What :func:`cache_info` found under ``root``: one :class:`KindInfo` per kind, and files it does not own."""

    root: Path
    kinds: dict[str, KindInfo]
    other_bytes: int = 0
    other_paths: list[Path] = field(default_factory=list)

    @property
    def bytes(self) -> int:
        """Bytes of every cache entry (files harmkit does not own are left out)."""
        return sum(k.bytes for k in self.kinds.values())

    @property
    def entries(self) -> int:
        return sum(k.entries for k in self.kinds.values())


def _entries(root: Path):
    """Yield ``(kind, path)`` for every cache entry under ``root`` and ``("other", path)`` for anything else.

    Only names harmkit writes count as entries (hexadecimal keys, simulated
    cohorts with their manifest), so a cache folder set by mistake to a
    folder with other files never loses those files to ``cache clear``.
    """
    try:
        top = sorted(root.iterdir())
    except FileNotFoundError:
        return
    for item in top:
        name = item.name
        if name == CACHEDIR_TAG:
            continue
        if item.is_dir() and len(name) == 2 and _hex(name, 2):  # results: <xx>/<key>
            for entry in sorted(item.iterdir()):
                yield (
                    ("results" if _hex(entry.name) or _temporary(entry.name) else "other"),
                    entry,
                )
        elif item.is_dir() and name in (
            "features",
            "images",
            "masks",
        ):  # <kind>/<xx>/<key...>
            for shard in sorted(item.iterdir()):
                if not (shard.is_dir() and len(shard.name) == 2 and _hex(shard.name, 2)):
                    yield ("other" if shard.name != CACHEDIR_TAG else "tag"), shard
                    continue
                for entry in sorted(shard.iterdir()):
                    stem = entry.name.split(".", 1)[0]
                    yield (
                        (name if _hex(stem) or _temporary(entry.name) else "other"),
                        entry,
                    )
        elif item.is_dir() and name in ("models", "work"):  # <kind>/<key24>
            for entry in sorted(item.iterdir()):
                yield (name if _hex(entry.name.split(".", 1)[0]) else "other"), entry
        elif item.is_dir() and name == "cohorts":  # cohorts/<preset-size-seed>/
            for entry in sorted(item.iterdir()):
                ours = entry.is_dir() and any(
                    (entry / f).exists() for f in (".complete", "manifest.csv", "simulation.json")
                )
                yield ("cohorts" if ours else "other"), entry
        else:
            yield "other", item


def _size_and_mtime(path: Path) -> tuple[int, float]:
    """Bytes under ``path`` (a file or folder, links not followed) and the newest modification time."""
    try:
        stat = path.lstat()
    except OSError:
        return 0, 0.0
    size, newest = (stat.st_size if not path.is_dir() else 0), stat.st_mtime
    if path.is_dir() and not path.is_symlink():
        for folder, _, files in os.walk(path):
            for name in files:
                try:
                    item = os.lstat(os.path.join(folder, name))
                except OSError:
                    continue
                size += item.st_size
                newest = max(newest, item.st_mtime)
    return size, newest


def cache_info(root: str | os.PathLike | None = None) -> CacheInfo:
    """Entries per kind (see :data:`CACHE_KINDS`), their size and age, under ``root`` (default: the user cache).

    >>> info = cache_info()                                  # doctest: +SKIP
    >>> info.kinds["features"].entries, info.bytes            # doctest: +SKIP
    """
    root = Path(root if root is not None else default_cache_dir()).expanduser()
    info = CacheInfo(root, {kind: KindInfo(kind) for kind in CACHE_KINDS})
    for kind, path in _entries(root):
        size, mtime = _size_and_mtime(path)
        if kind in info.kinds:
            info.kinds[kind].add(size, mtime)
        elif kind == "other":
            info.other_bytes += size
            info.other_paths.append(path)
    return info


def clear_cache(
    root: str | os.PathLike | None = None,
    older_than: float | None = None,
    kinds: Sequence[str] | None = None,
    dry_run: bool = False,
) -> KindInfo:
    """Delete cache entries under ``root`` (default: the user cache); returns what was (or would be) removed.

    ``older_than`` (seconds) keeps entries written more recently than that;
    ``kinds`` limits the deletion to those kinds of :data:`CACHE_KINDS`.
    Files that are not cache entries are never touched. Clearing while a
    run uses the cache makes that run recompute (or fail on) what it loses.
    """
    import time

    root = Path(root if root is not None else default_cache_dir()).expanduser()
    unknown = sorted(set(kinds or ()) - set(CACHE_KINDS))
    if unknown:
        raise HarmkitError(f"unknown cache kind(s) {', '.join(unknown)}; kinds: {', '.join(CACHE_KINDS)}")
    if older_than is not None and older_than < 0:
        raise HarmkitError(f"--older-than must not be negative (got {older_than:g} s)")
    cutoff = None if older_than is None else time.time() - older_than
    removed = KindInfo("removed")
    for kind, path in list(_entries(root)):
        if kind not in CACHE_KINDS or (kinds and kind not in kinds):
            continue
        size, mtime = _size_and_mtime(path)
        if cutoff is not None and mtime > cutoff:
            continue
        removed.add(size, mtime)
        if dry_run:
            continue
        try:
            if path.is_dir() and not path.is_symlink():
                shutil.rmtree(path)
            else:
                path.unlink()
        except FileNotFoundError:
            pass
        except OSError as exc:
            from .errors import io_error

            raise io_error(exc, path, "delete") from None
    if not dry_run:
        for kind in ("features", "images", "masks", ""):  # shards left empty
            base = root / kind if kind else root
            if base.is_dir():
                for shard in base.iterdir():
                    if shard.is_dir() and len(shard.name) == 2 and _hex(shard.name, 2) and not any(shard.iterdir()):
                        shard.rmdir()
    return removed


_AGE_UNITS = {"s": 1, "m": 60, "min": 60, "h": 3600, "d": 86400, "w": 7 * 86400}


def parse_age(text: str) -> float:
    """``"30d"``, ``"12h"``, ``"90m"``, ``"2w"``, ``"45s"`` (a bare number counts days) in seconds."""
    value = str(text).strip().lower()
    number, unit = value, "d"
    for suffix in sorted(_AGE_UNITS, key=len, reverse=True):
        if value.endswith(suffix) and value[: -len(suffix)].strip():
            number, unit = value[: -len(suffix)].strip(), suffix
            break
    try:
        seconds = float(number) * _AGE_UNITS[unit]
    except ValueError:
        raise HarmkitError(f"--older-than {text!r}: expected an age such as 30d, 12h, 90m or 2w") from None
    if not seconds >= 0 or math.isinf(seconds):
        raise HarmkitError(f"--older-than {text!r}: expected a non-negative age such as 30d")
    return seconds


# -- (de)serialisation ---------------------------------------------------------


def _dump(directory: Path, value: Any) -> dict[str, Any]:
    import pandas as pd

    arrays: dict[str, np.ndarray]
    if isinstance(value, pd.DataFrame):
        arrays, meta = (
            {},
            {"type": "dataframe", "columns": [], "attrs": _jsonable(value.attrs)},
        )
        meta["index"] = _dump_column(value.index.to_series(), "index", arrays)
        meta["index"]["name"] = value.index.name
        for i, column in enumerate(value.columns):
            info = _dump_column(value.iloc[:, i], f"c{i}", arrays)
            info["name"] = column
            meta["columns"].append(info)
        np.savez(directory / ARRAYS, **arrays)
        return meta
    if isinstance(value, pd.Series):
        meta = _dump(
            directory,
            value.to_frame(name="value" if value.name is None else value.name),
        )
        meta["type"] = "series"
        meta["series_name"] = value.name
        return meta
    if isinstance(value, np.ndarray):
        if value.dtype == object:
            raise TypeError("cannot cache an object array")
        np.savez(directory / ARRAYS, array=value)
        return {"type": "array"}
    if isinstance(value, dict) and value and all(isinstance(v, np.ndarray) for v in value.values()):
        names = list(value)
        np.savez(directory / ARRAYS, **{f"a{i}": value[n] for i, n in enumerate(names)})
        return {"type": "arrays", "names": names}
    json.dumps(value, default=_json_default)  # fail here, with a clear TypeError, for unsupported values
    return {"type": "json", "value": value}


def _dump_column(series, name: str, arrays: dict[str, np.ndarray]) -> dict[str, Any]:
    dtype = series.dtype
    if dtype.kind in "biufc" and not hasattr(dtype, "categories"):
        arrays[name] = series.to_numpy()
        return {"storage": "npz", "key": name, "dtype": str(dtype)}
    values = [None if _is_missing(v) else _jsonable(v) for v in series.tolist()]
    return {"storage": "json", "values": values, "dtype": str(dtype)}


def _is_missing(value: Any) -> bool:
    try:
        return value is None or (isinstance(value, float) and math.isnan(value))
    except TypeError:
        return False


def _jsonable(value: Any) -> Any:
    return json.loads(json.dumps(value, default=_json_default_lossy, allow_nan=True))


def _json_default_lossy(value: Any) -> Any:
    try:
        return _json_default(value)
    except TypeError:
        return str(value)


def _load(directory: Path, meta: dict[str, Any]) -> Any:
    import pandas as pd

    kind = meta["type"]
    if kind == "json":
        return meta["value"]
    with np.load(directory / ARRAYS, allow_pickle=False) as npz:
        if kind == "array":
            return npz["array"]
        if kind == "arrays":
            return {name: npz[f"a{i}"] for i, name in enumerate(meta["names"])}
        if kind in ("dataframe", "series"):
            index = pd.Index(_load_column(meta["index"], npz), name=meta["index"]["name"])
            data = {}
            for info in meta["columns"]:
                data[info["name"]] = _load_column(info, npz)
            frame = pd.DataFrame(data, index=index, columns=[c["name"] for c in meta["columns"]])
            if len(set(frame.columns)) != len(meta["columns"]):
                raise ValueError("duplicate column names")
            frame.attrs.update(meta.get("attrs", {}))
            if kind == "series":
                series = frame.iloc[:, 0]
                series.name = meta.get("series_name")
                return series
            return frame
    raise ValueError(f"unknown cache entry type {kind!r}")


def _load_column(info: dict[str, Any], npz) -> Any:
    import pandas as pd

    if info["storage"] == "npz":
        return npz[info["key"]]
    dtype = info.get("dtype", "object")
    values = info["values"]
    if dtype == "object":
        return pd.array(values, dtype=object) if values else np.array([], dtype=object)
    try:
        return pd.Series(values).astype(dtype).to_numpy()
    except (TypeError, ValueError):
        return np.array(values, dtype=object)
