"""Writing simulated volumes: atomic, fast, byte-reproducible NIfTI.

SimpleITK's gzip writer is slow on noisy float volumes (several MB/s) and gains little from
compressing noise. Here SimpleITK writes the uncompressed NIfTI (so the header is exactly
SimpleITK's), and Python's ``gzip`` compresses it at level 1 with ``mtime=0`` and no file name
in the gzip header, so the same volume always gives the same bytes. Writing goes to a temporary
name in the target folder, then a rename, as :func:`harmkit.imageio.write_image` does.

PET values are stored on a lattice of 1/1024 SUV (:data:`SUV_QUANTUM`), as a scanner stores
integers with a rescale slope; the rounding error (< 0.0005 SUV) is far below any noise level
and halves the file size.
"""

from __future__ import annotations

import gzip
import os
import tempfile
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from .grid import Grid

SUV_QUANTUM = 1.0 / 1024.0
GZIP_LEVEL = 1


def quantize_suv(array: np.ndarray) -> np.ndarray:
    """``array`` rounded to multiples of :data:`SUV_QUANTUM` (float32)."""
    scale = np.float32(1.0 / SUV_QUANTUM)
    return (np.rint(array * scale) / scale).astype(np.float32)


def write_volume(array: np.ndarray, grid: Grid, path: str | os.PathLike) -> Path:
    """Write ``array`` with ``grid``'s geometry to ``path`` (``.nii.gz``), atomically and reproducibly."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    image = grid.to_image(array)
    fd, raw = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".nii", dir=path.parent)
    os.close(fd)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".gz", dir=path.parent)
    try:
        sitk.WriteImage(image, raw, False)
        data = Path(raw).read_bytes()
        with os.fdopen(fd, "wb") as handle:
            with gzip.GzipFile(filename="", mode="wb", compresslevel=GZIP_LEVEL, fileobj=handle, mtime=0) as compressed:
                compressed.write(data)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    finally:
        Path(raw).unlink(missing_ok=True)
    return path
