"""Bounded-memory sliding-window inference with Gaussian blending (torch + numpy only).

The network sees one batch of windows at a time; the volume-sized arrays are
the input and the output (float32 each; the blending weights are separable
and kept as three 1D sums), so peak
memory is set by the window, the batch and the network width -- not by how
much of the volume a network pass covers. Volume sizes need not be multiples
of the window or of 2**n_downsampling: windows are placed so that the last
one ends at the volume's edge, and a volume smaller than the window is padded
by reflection (the padding is cropped off the result).
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable, Iterator, Sequence
from typing import Literal

import numpy as np
import torch

Progress = Callable[[int, int], None]


def window_starts(size: int, window: int, overlap: float) -> list[int]:
    """Start offsets along one axis: step ``window * (1 - overlap)``, last window flush with the end."""
    if size <= window:
        return [0]
    step = max(1, int(round(window * (1.0 - overlap))))
    count = math.ceil((size - window) / step) + 1
    starts = [min(i * step, size - window) for i in range(count)]
    return sorted(set(starts))


def gaussian_profiles(window: Sequence[int], sigma_scale: float = 0.125) -> list[np.ndarray]:
    """One 1D Gaussian per axis (1 at the centre, floored at 1e-3 so edges keep a positive weight)."""
    profiles = []
    for size in window:
        centre = (size - 1) / 2.0
        sigma = max(size * sigma_scale, 1e-3)
        profile = np.exp(-0.5 * ((np.arange(size) - centre) / sigma) ** 2)
        profiles.append(np.maximum(profile, 1e-3).astype(np.float32))
    return profiles


def gaussian_weight(window: Sequence[int], sigma_scale: float = 0.125) -> np.ndarray:
    """Separable Gaussian importance map of one window (product of :func:`gaussian_profiles`)."""
    pz, py, px = gaussian_profiles(window, sigma_scale)
    return pz[:, None, None] * py[None, :, None] * px[None, None, :]


def _axis_weight_sums(size: int, starts: Sequence[int], profile: np.ndarray) -> np.ndarray:
    total = np.zeros(size, dtype=np.float64)
    for start in starts:
        total[start : start + len(profile)] += profile
    return total.astype(np.float32)


def iter_windows(shape: Sequence[int], window: Sequence[int], overlap: float) -> Iterator[tuple[slice, slice, slice]]:
    """Every window position (as slices) covering a volume of ``shape``."""
    axes = [window_starts(s, w, overlap) for s, w in zip(shape, window)]
    for z in axes[0]:
        for y in axes[1]:
            for x in axes[2]:
                yield (
                    slice(z, z + window[0]),
                    slice(y, y + window[1]),
                    slice(x, x + window[2]),
                )


def autocast_context(device: torch.device, precision: str):
    """bf16 autocast on ``device`` when ``precision == 'bf16'``, else nothing."""
    if precision == "bf16":
        return torch.autocast(device_type=device.type, dtype=torch.bfloat16)
    return contextlib.nullcontext()


def sliding_window(
    volume: np.ndarray,
    predictor: Callable[[torch.Tensor], torch.Tensor],
    window: Sequence[int],
    overlap: float = 0.5,
    batch_size: int = 1,
    sigma_scale: float = 0.125,
    device: str | torch.device = "cpu",
    precision: str = "fp32",
    channels_last: bool = False,
    progress: Progress | None = None,
    skip_below: float | None = None,
    extra: np.ndarray | None = None,
) -> np.ndarray:
    """Apply ``predictor`` to overlapping windows of ``volume`` (z, y, x) and blend the results.

    ``predictor`` maps a batch ``(n, 1, *window)`` to a batch of the same
    shape. Returns a float32 array of ``volume``'s shape. ``progress(done,
    total)`` is called after each batch. Memory: two volume-sized float32
    arrays (input, output) plus the predictor's activations for
    ``batch_size`` windows.

    ``skip_below``: a window whose every value is at or below it is not run and
    counts as a prediction of 0 there. For a predictor of a *change* (the
    CycleGAN's residual) this leaves air outside the body unchanged and saves
    the work of most windows of a whole-body field of view.

    ``extra``: a second channel of ``volume``'s shape (the CycleGAN's noise input); each window then holds
    ``(2, *window)``, the volume first.
    """
    device = torch.device(device)
    volume = np.asarray(volume, dtype=np.float32)
    original_shape = volume.shape
    if extra is not None and np.shape(extra) != original_shape:
        raise ValueError(f"extra channel of shape {np.shape(extra)} for a volume of shape {original_shape}")
    window = tuple(int(w) for w in window)
    pad = [(0, max(0, w - s)) for s, w in zip(volume.shape, window)]
    if any(after for _, after in pad):
        # Reflection needs the pad to be smaller than the axis; fall back to edge padding otherwise.
        fits = all(after < s for (_, after), s in zip(pad, volume.shape))
        mode: Literal["reflect", "edge"] = "reflect" if fits else "edge"
        volume = np.pad(volume, pad, mode=mode)
        if extra is not None:
            extra = np.pad(extra, pad, mode=mode)
    channels = volume[None] if extra is None else np.stack([volume, np.asarray(extra, dtype=np.float32)])
    output = np.zeros(volume.shape, dtype=np.float32)
    profiles = gaussian_profiles(window, sigma_scale)
    importance_t = torch.from_numpy(gaussian_weight(window, sigma_scale)).to(device)
    # Windows sit on a Cartesian grid and the weight is separable, so the
    # blending denominator is an outer product of three 1D sums: no
    # volume-sized weight array.
    starts = [window_starts(s, w, overlap) for s, w in zip(volume.shape, window)]
    sums = [_axis_weight_sums(s, st, p) for s, st, p in zip(volume.shape, starts, profiles)]
    positions = list(iter_windows(volume.shape, window, overlap))
    if skip_below is not None:
        positions = [p for p in positions if float(volume[p].max()) > skip_below]
    total = len(positions)
    memory_format = torch.channels_last_3d if channels_last else torch.contiguous_format
    with torch.inference_mode():
        for first in range(0, total, batch_size):
            batch_positions = positions[first : first + batch_size]
            batch = np.stack([channels[(slice(None),) + tuple(p)] for p in batch_positions])
            inputs = torch.from_numpy(batch).to(device).contiguous(memory_format=memory_format)
            with autocast_context(device, precision):
                result = predictor(inputs)
            weighted = (result.float()[:, 0] * importance_t).cpu().numpy()
            for p, values in zip(batch_positions, weighted):
                output[p] += values
            if progress is not None:
                progress(min(first + batch_size, total), total)
    output /= sums[0][:, None, None]
    output /= sums[1][None, :, None]
    output /= sums[2][None, None, :]
    if output.shape != original_shape:
        output = np.ascontiguousarray(output[tuple(slice(0, s) for s in original_shape)])
    return output
