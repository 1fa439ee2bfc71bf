"""Writing simulated volumes: atomic, fast, byte-reproducible NIfTI.

SimpleITK's gzip writer is slow on noisy float volumes (a few MB/s). Here SimpleITK writes the
uncompressed NIfTI-1 file (so the header is exactly SimpleITK's), and Python's ``gzip`` compresses
it at level 1 with ``mtime=0`` and no file name in the gzip header, so the same volume always gives
the same bytes. Writing goes to a temporary name in the target folder, then a rename, as
:func:`harmkit.imageio.write_image` does.

SUV images are stored as a scanner stores PET: 16-bit integers with a rescale slope
(``scl_slope`` = :data:`SUV_QUANTUM` = 1/256 SUV, range 0-128 SUV). Every NIfTI reader, SimpleITK
included, applies the slope and returns floating-point SUV; the rounding (at most 0.002 SUV) is
far below any noise level, and it halves file size and writing time.
"""

from __future__ import annotations

import gzip
import os
import struct
import tempfile
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from .grid import Grid

SUV_QUANTUM = 1.0 / 256.0
SUV_MAX = 32767 * SUV_QUANTUM
GZIP_LEVEL = 1
_SCL_SLOPE_OFFSET = 112  # NIfTI-1 header: float32 scl_slope at byte 112, scl_inter at 116


def quantize_suv(array: np.ndarray) -> np.ndarray:
    """``array`` as stored: rounded to multiples of :data:`SUV_QUANTUM`, clipped to [0, SUV_MAX] (float32)."""
    return (encode_suv(array).astype(np.float32) * np.float32(SUV_QUANTUM)).astype(np.float32)


def encode_suv(array: np.ndarray) -> np.ndarray:
    """The int16 codes of an SUV array (value = code x :data:`SUV_QUANTUM`)."""
    codes = np.rint(np.clip(array, 0.0, SUV_MAX) * np.float32(1.0 / SUV_QUANTUM))
    return codes.astype(np.int16)


def write_volume(array: np.ndarray, grid: Grid, path: str | os.PathLike, suv: bool = False) -> Path:
    """Write ``array`` with ``grid``'s geometry to ``path`` (``.nii.gz``), atomically and reproducibly.

    ``suv=True`` stores a float SUV array as int16 with ``scl_slope`` = :data:`SUV_QUANTUM`.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    image = grid.to_image(encode_suv(array) if suv else array)
    fd, raw = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".nii", dir=path.parent)
    os.close(fd)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".gz", dir=path.parent)
    try:
        sitk.WriteImage(image, raw, False)
        data = bytearray(Path(raw).read_bytes())
        if suv:
            if struct.unpack("<i", data[:4])[0] != 348:
                raise RuntimeError(f"unexpected NIfTI header written for {path}")
            data[_SCL_SLOPE_OFFSET : _SCL_SLOPE_OFFSET + 8] = struct.pack("<ff", SUV_QUANTUM, 0.0)
        with os.fdopen(fd, "wb") as handle:
            with gzip.GzipFile(
                filename="",
                mode="wb",
                compresslevel=GZIP_LEVEL,
                fileobj=handle,
                mtime=0,
            ) as compressed:
                compressed.write(bytes(data))
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    finally:
        Path(raw).unlink(missing_ok=True)
    return path
