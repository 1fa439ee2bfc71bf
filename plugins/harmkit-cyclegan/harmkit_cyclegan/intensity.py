"""One fixed, invertible intensity transform between SUV and the network's [-1, 1].

The reference implementation rescaled every volume to [-1, 1] by its own
minimum and maximum and mapped the output back onto the input's range, so an
SUV of 5 meant something different in every scan. Here every scan uses the
same log-compressed, clipped transform::

    y = 2 * log1p(clip(SUV, 0, suv_max) / s) / log1p(suv_max / s) - 1

with ``s = suv_scale``. It is strictly increasing on [0, suv_max], so
:func:`to_suv` inverts it exactly there (SUV 0 -> -1, ``suv_max`` -> +1).
The log compression spends the network's dynamic range on the low and medium
uptakes (background, organs, lesion margins) instead of on rare hot spots.
Negative SUVs (reconstruction noise) become 0 and SUVs above ``suv_max`` are
clipped; :class:`~harmkit_cyclegan.harmonizer.CycleGANHarmonizer` puts the
input's own values back wherever the input exceeds suv_max.
"""

from __future__ import annotations

import numpy as np


def to_network(suv: np.ndarray, suv_max: float = 50.0, suv_scale: float = 1.0) -> np.ndarray:
    """SUV -> [-1, 1] (float32)."""
    suv = np.asarray(suv, dtype=np.float32)
    denominator = np.float32(np.log1p(suv_max / suv_scale))
    out = np.clip(suv, 0.0, suv_max)
    out /= np.float32(suv_scale)
    np.log1p(out, out=out)
    out *= np.float32(2.0) / denominator
    out -= np.float32(1.0)
    return out


def to_suv(values: np.ndarray, suv_max: float = 50.0, suv_scale: float = 1.0) -> np.ndarray:
    """[-1, 1] -> SUV (float32); the exact inverse of :func:`to_network` on [0, suv_max]."""
    values = np.asarray(values, dtype=np.float32)
    denominator = np.float32(np.log1p(suv_max / suv_scale))
    out = np.clip(values, -1.0, 1.0)
    out += np.float32(1.0)
    out *= denominator / np.float32(2.0)
    np.expm1(out, out=out)
    out *= np.float32(suv_scale)
    return out
