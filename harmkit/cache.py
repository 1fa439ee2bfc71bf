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
from pathlib import Path
from typing import Any

import numpy as np

from .errors import HarmkitError

__all__ = ["Cache", "hash_parts", "default_cache_dir"]

FORMAT = "harmkit-cache/1"
META = "entry.json"
ARRAYS = "arrays.npz"


def default_cache_dir() -> Path:
    """``$HARMKIT_CACHE`` or ``$XDG_CACHE_HOME/harmkit`` (``~/.cache/harmkit``)."""
    if os.environ.get("HARMKIT_CACHE"):
        return Path(os.environ["HARMKIT_CACHE"]).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base).expanduser() / "harmkit"


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
        h.update(memoryview(array).cast("B"))
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

        tagged(b"I", json.dumps([part.GetSize(), part.GetSpacing(), part.GetOrigin(), part.GetDirection()]).encode())
        _feed(h, sitk.GetArrayViewFromImage(part))
    elif _is_pandas(part):
        import pandas as pd

        tagged(b"P", json.dumps([list(map(str, part.columns if isinstance(part, pd.DataFrame) else [part.name])), str(part.index.name)]).encode())
        h.update(pd.util.hash_pandas_object(part, index=True).to_numpy().tobytes())
    else:
        try:
            text = json.dumps(part, sort_keys=True, separators=(",", ":"), default=_json_default, allow_nan=True)
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
        warn(f"cannot write to the cache {self.root}: {self.write_failed}; going on without storing results there "
             f"(choose a writable folder with --cache, or --no-cache)")

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
        if self.enabled and self.root.exists():
            shutil.rmtree(self.root)

    def __repr__(self) -> str:
        return f"Cache({str(self.root) if self.root else None!r}, hits={self.hits}, misses={self.misses})"


_MISSING = object()


# -- (de)serialisation ---------------------------------------------------------


def _dump(directory: Path, value: Any) -> dict[str, Any]:
    import pandas as pd

    if isinstance(value, pd.DataFrame):
        arrays, meta = {}, {"type": "dataframe", "columns": [], "attrs": _jsonable(value.attrs)}
        meta["index"] = _dump_column(value.index.to_series(), "index", arrays)
        meta["index"]["name"] = value.index.name
        for i, column in enumerate(value.columns):
            info = _dump_column(value.iloc[:, i], f"c{i}", arrays)
            info["name"] = column
            meta["columns"].append(info)
        np.savez(directory / ARRAYS, **arrays)
        return meta
    if isinstance(value, pd.Series):
        meta = _dump(directory, value.to_frame(name="value" if value.name is None else value.name))
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
