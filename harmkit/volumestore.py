"""Chunked, compressed HDF5 copies of preprocessed volumes, read back as random 3D patches.

A training run that samples patches from a :class:`VolumeStore` holds only the
patches in memory, never whole volumes, so it can train on a cohort larger
than RAM: HDF5 stores each volume in 3D chunks (``chunks``, default 32^3) and
reading a patch decompresses only the chunks the patch overlaps.

Layout of the file::

    /                       attrs: format = "harmkit-volumes/1"
    /volumes/<key>/image    float32 (z, y, x), chunked, shuffle + compression
    /volumes/<key>/mask     uint8 (z, y, x) body mask, same chunks (optional)
    /volumes/<key>/mask_points   int32 (k, 3) random voxels inside the mask,
                            so sampling a patch centre never reads the mask
    /volumes/<key>/focus_points  int32 (k, 3) random voxels of an optional focus
                            mask (e.g. high uptake), centres to sample more often
    attrs of /volumes/<key>: spacing (x, y, z), origin, direction, and any
                            metadata given to :meth:`VolumeStore.add`
                            (subject, site, group, ...)

>>> with VolumeStore.create("cohort.h5") as store:                  # doctest: +SKIP
...     store.add("s1", image, spacing=(4, 4, 4), mask=body, group="A")
>>> store = VolumeStore("cohort.h5")                                # doctest: +SKIP
>>> sample = store.sampler(store.keys(group="A"), size=(32, 32, 32))  # doctest: +SKIP
>>> batch = sample(np.random.default_rng(0), 4)   # (4, 1, 32, 32, 32)  # doctest: +SKIP
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from .errors import HarmkitError

FORMAT = "harmkit-volumes/1"
MAX_MASK_POINTS = 65536


class VolumeStore:
    """An HDF5 file of volumes; open for reading with ``VolumeStore(path)``, write with :meth:`create`.

    ``path`` may also be an open binary file object (h5py reads through it),
    which is how the tests count which bytes a patch read touches.
    ``cache_bytes`` is HDF5's per-dataset chunk cache.
    """

    def __init__(
        self,
        path: str | os.PathLike | Any,
        mode: str = "r",
        cache_bytes: int = 4 * 2**20,
        _final_path: Path | None = None,
    ) -> None:
        import h5py

        self.path = path
        self._final_path = _final_path
        try:
            self.file = h5py.File(
                path if hasattr(path, "read") else str(path),
                mode,
                rdcc_nbytes=cache_bytes,
            )
        except (OSError, FileNotFoundError) as exc:
            raise HarmkitError(f"volume store {path}: cannot open ({exc}); build it again") from None
        if mode == "r" and self.file.attrs.get("format") != FORMAT:
            self.file.close()
            raise HarmkitError(f"{path}: not a harmkit volume store (format {self.file.attrs.get('format')!r})")

    # -- writing -------------------------------------------------------------
    @classmethod
    def create(cls, path: str | os.PathLike, cache_bytes: int = 4 * 2**20) -> "VolumeStore":
        """A new, empty store written under a temporary name and renamed to ``path`` on :meth:`close`."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
        os.close(fd)
        store = cls(tmp, mode="w", cache_bytes=cache_bytes, _final_path=path)
        store.file.attrs["format"] = FORMAT
        return store

    def add(
        self,
        key: str,
        image: np.ndarray,
        spacing: Sequence[float],
        mask: np.ndarray | None = None,
        focus: np.ndarray | None = None,
        origin: Sequence[float] = (0.0, 0.0, 0.0),
        direction: Sequence[float] = (1, 0, 0, 0, 1, 0, 0, 0, 1),
        chunks: Sequence[int] = (32, 32, 32),
        compression: str | None = "lzf",
        seed: int = 0,
        **metadata: Any,
    ) -> None:
        """Store one volume (z, y, x), its optional body mask and an optional focus mask.

        Only random points of the focus mask are kept (``focus_points``): patches can be centred on them
        more often than its share of the body would give (``focus_fraction`` of :meth:`sampler`).
        """
        image = np.asarray(image, dtype=np.float32)
        if image.ndim != 3:
            raise HarmkitError(f"volume {key!r}: expected a 3D array (z, y, x), got shape {image.shape}")
        chunk_shape = tuple(int(min(c, s)) for c, s in zip(chunks, image.shape))
        group = self.file.require_group("volumes").create_group(key)
        options = {
            "chunks": chunk_shape,
            "compression": compression,
            "shuffle": compression is not None,
        }
        group.create_dataset("image", data=image, **options)
        if mask is not None:
            mask = np.asarray(mask).astype(np.uint8)
            if mask.shape != image.shape:
                raise HarmkitError(f"volume {key!r}: mask shape {mask.shape} differs from image shape {image.shape}")
            group.create_dataset("mask", data=mask, **options)
            group.create_dataset("mask_points", data=_random_points(mask, seed))
        if focus is not None:
            focus = np.asarray(focus)
            if focus.shape != image.shape:
                raise HarmkitError(f"volume {key!r}: focus shape {focus.shape} differs from image shape {image.shape}")
            group.create_dataset("focus_points", data=_random_points(focus, seed + 1))
        group.attrs["spacing"] = np.asarray(spacing, dtype=np.float64)
        group.attrs["origin"] = np.asarray(origin, dtype=np.float64)
        group.attrs["direction"] = np.asarray(direction, dtype=np.float64)
        for name, value in metadata.items():
            if value is not None:
                group.attrs[name] = value

    def close(self) -> None:
        """Close the file; a store made by :meth:`create` is renamed to its final name now."""
        if self.file.id.valid:
            self.file.close()
        if self._final_path is not None:
            os.replace(self.path, self._final_path)
            self.path, self._final_path = self._final_path, None

    def abort(self) -> None:
        """Close and delete a store being created, also when closing fails (a full disk cannot flush the file)."""
        # The store is discarded: the error that made us abort is the one to report, not a failed close.
        with contextlib.suppress(Exception):
            if self.file.id.valid:
                self.file.close()
        if self._final_path is not None:
            Path(self.path).unlink(missing_ok=True)
            self._final_path = None

    def __enter__(self) -> "VolumeStore":
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            self.close()
        else:
            self.abort()

    # -- reading -------------------------------------------------------------
    def keys(self, **where: Any) -> list[str]:
        """Volume keys, optionally only those whose metadata match ``where`` (e.g. ``group="A"``)."""
        if "volumes" not in self.file:
            return []
        volumes = self.file["volumes"]
        return [k for k in volumes if all(_attr(volumes[k].attrs.get(a)) == v for a, v in where.items())]

    def __len__(self) -> int:
        return len(self.keys())

    def dataset(self, key: str, name: str = "image"):
        try:
            return self.file["volumes"][key][name]
        except KeyError:
            raise HarmkitError(f"volume store {self.path}: no {name!r} for volume {key!r}") from None

    def shape(self, key: str) -> tuple[int, int, int]:
        return tuple(self.dataset(key).shape)

    def metadata(self, key: str) -> dict[str, Any]:
        """Every attribute of the volume (spacing, origin, direction and what ``add`` was given)."""
        return {k: _attr(v) for k, v in self.file["volumes"][key].attrs.items()}

    def read(self, key: str, name: str = "image") -> np.ndarray:
        """A whole volume (or its mask)."""
        return self.dataset(key, name)[()]

    def read_patch(self, key: str, start: Sequence[int], size: Sequence[int], fill: float = 0.0) -> np.ndarray:
        """The box ``start`` .. ``start + size`` (z, y, x); parts outside the volume are ``fill``.

        Reads only the chunks the box overlaps.
        """
        data = self.dataset(key)
        start = [int(s) for s in start]
        size = [int(s) for s in size]
        lo = [max(0, s) for s in start]
        hi = [min(n, s + z) for n, s, z in zip(data.shape, start, size)]
        if all(a == s for a, s in zip(lo, start)) and all(b == s + z for b, s, z in zip(hi, start, size)):
            return data[lo[0] : hi[0], lo[1] : hi[1], lo[2] : hi[2]]
        patch = np.full(size, fill, dtype=np.float32)
        if all(b > a for a, b in zip(lo, hi)):
            target = tuple(slice(a - s, b - s) for a, b, s in zip(lo, hi, start))
            patch[target] = data[lo[0] : hi[0], lo[1] : hi[1], lo[2] : hi[2]]
        return patch

    def sample_start(
        self,
        key: str,
        size: Sequence[int],
        rng: np.random.Generator,
        body_fraction: float = 0.9,
        focus_fraction: float = 0.0,
    ) -> tuple[int, ...]:
        """A random patch origin: centred on a focus point with probability ``focus_fraction`` (volumes that have
        any), else on a body-mask voxel with probability ``body_fraction``, else anywhere.

        The patch is shifted to lie inside the volume where the volume is large enough.
        """
        shape = self.shape(key)
        group = self.file["volumes"][key]
        # Drawn whenever focus is asked for, so the random stream does not depend on which volumes have focus
        # points (and without focus it is the stream of earlier versions).
        focused = focus_fraction > 0 and rng.random() < focus_fraction
        if focused and "focus_points" in group and len(group["focus_points"]):
            points = group["focus_points"]
            centre = points[int(rng.integers(0, len(points)))]
        elif "mask_points" in group and len(group["mask_points"]) and rng.random() < body_fraction:
            points = group["mask_points"]
            centre = points[int(rng.integers(0, len(points)))]
        else:
            centre = [int(rng.integers(0, n)) for n in shape]
        start = []
        for c, z, n in zip(centre, size, shape):
            s = int(c) - z // 2
            s = (n - z) // 2 if n <= z else min(max(s, 0), n - z)
            start.append(s)
        return tuple(start)

    def sampler(
        self,
        keys: Iterable[str],
        size: Sequence[int],
        body_fraction: float = 0.9,
        transform: Callable[[np.ndarray], np.ndarray] | None = None,
        fill: float = 0.0,
        focus_fraction: float = 0.0,
    ) -> Callable[[np.random.Generator, int], np.ndarray]:
        """A function ``sample(rng, n) -> float32 (n, 1, *size)`` of random patches from ``keys``.

        Every volume is equally likely; ``transform`` (e.g. SUV -> network
        intensities) is applied to each patch. All randomness comes from the
        ``rng`` passed in, so a training loop that checkpoints its generator
        state resumes the same patch stream.
        """
        keys = list(keys)
        if not keys:
            raise HarmkitError(f"volume store {self.path}: no volumes to sample from")
        size = tuple(int(s) for s in size)

        def sample(rng: np.random.Generator, n: int) -> np.ndarray:
            batch = np.empty((n, 1, *size), dtype=np.float32)
            for i in range(n):
                key = keys[int(rng.integers(0, len(keys)))]
                start = self.sample_start(key, size, rng, body_fraction, focus_fraction)
                patch = self.read_patch(key, start, size, fill=fill)
                batch[i, 0] = transform(patch) if transform is not None else patch
            return batch

        return sample

    def __repr__(self) -> str:
        return f"VolumeStore({self.path!s}, {len(self)} volumes)"


def _random_points(mask: np.ndarray, seed: int) -> np.ndarray:
    """The voxels (k, 3) of a mask, or MAX_MASK_POINTS of them drawn at random (seeded) when there are more."""
    points = np.argwhere(np.asarray(mask) > 0).astype(np.int32)
    if len(points) > MAX_MASK_POINTS:
        rng = np.random.default_rng(seed)
        points = points[np.sort(rng.choice(len(points), MAX_MASK_POINTS, replace=False))]
    return points


def _attr(value: Any) -> Any:
    if isinstance(value, bytes):
        return value.decode()
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, np.generic):
        return value.item()
    return value
