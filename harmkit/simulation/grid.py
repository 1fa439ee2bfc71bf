"""Voxel grids in physical space and the separable operations the scanner model needs.

Arrays are in numpy order ``(z, y, x)`` as :func:`SimpleITK.GetArrayFromImage` returns them;
spacings and origins are in SimpleITK order ``(x, y, z)`` in millimetres. Every grid of a
simulation is axis-aligned and centred on the same physical point, so moving between the
fine (truth) grid and a site's grid is a separable per-axis operation.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import SimpleITK as sitk
from scipy import ndimage


@dataclass(frozen=True)
class Grid:
    """An axis-aligned voxel grid: ``shape`` (z, y, x), ``spacing`` and ``origin`` (x, y, z), mm."""

    shape: tuple[int, int, int]
    spacing: tuple[float, float, float]
    origin: tuple[float, float, float]

    @classmethod
    def centered(cls, size_xyz, spacing_xyz) -> "Grid":
        """A grid of ``size_xyz`` voxels whose centre is the physical origin (0, 0, 0)."""
        nx, ny, nz = (int(n) for n in size_xyz)
        sx, sy, sz = (float(s) for s in spacing_xyz)
        origin = (-(nx - 1) / 2.0 * sx, -(ny - 1) / 2.0 * sy, -(nz - 1) / 2.0 * sz)
        return cls(shape=(nz, ny, nx), spacing=(sx, sy, sz), origin=origin)

    @classmethod
    def covering(cls, extent_xyz, spacing_xyz) -> "Grid":
        """The centred grid with at least ``extent_xyz`` mm of coverage along each axis."""
        size = [max(1, int(math.ceil(e / s - 1e-6))) for e, s in zip(extent_xyz, spacing_xyz)]
        return cls.centered(size, spacing_xyz)

    @property
    def size_xyz(self) -> tuple[int, int, int]:
        return (self.shape[2], self.shape[1], self.shape[0])

    def coords(self, axis: int) -> np.ndarray:
        """Physical coordinates (mm) of voxel centres along ``axis`` (0 = x, 1 = y, 2 = z)."""
        n = self.size_xyz[axis]
        return (self.origin[axis] + self.spacing[axis] * np.arange(n)).astype(np.float32)

    def mesh(self):
        """Broadcastable coordinate arrays ``(X, Y, Z)`` of shapes (1,1,nx), (1,ny,1), (nz,1,1)."""
        x, y, z = (self.coords(a) for a in range(3))
        return x[None, None, :], y[None, :, None], z[:, None, None]

    @property
    def voxel_volume_ml(self) -> float:
        return float(np.prod(self.spacing)) / 1000.0

    def to_image(self, array: np.ndarray) -> sitk.Image:
        """A SimpleITK image of ``array`` with this grid's geometry."""
        if tuple(array.shape) != tuple(self.shape):
            raise ValueError(f"array shape {array.shape} does not match grid {self.shape}")
        image = sitk.GetImageFromArray(np.ascontiguousarray(array))
        image.SetSpacing(self.spacing)
        image.SetOrigin(self.origin)
        return image

    def to_dict(self) -> dict:
        return {
            "size_xyz": list(self.size_xyz),
            "spacing_mm": list(self.spacing),
            "origin_mm": list(self.origin),
        }


def gaussian_kernel(sigma: float, truncate: float = 4.0) -> np.ndarray:
    """Normalized 1-D Gaussian kernel with standard deviation ``sigma`` (voxels)."""
    if sigma <= 1e-3:
        return np.ones(1, dtype=np.float64)
    radius = max(1, int(truncate * sigma + 0.5))
    x = np.arange(-radius, radius + 1, dtype=np.float64)
    kernel = np.exp(-0.5 * (x / sigma) ** 2)
    return kernel / kernel.sum()


def gaussian_blur(array: np.ndarray, sigma_xyz, mode: str = "nearest") -> np.ndarray:
    """Separable Gaussian blur in float32; ``sigma_xyz`` in voxels per axis (x, y, z)."""
    out = np.asarray(array, dtype=np.float32)
    for axis_xyz, sigma in enumerate(sigma_xyz):
        kernel = gaussian_kernel(float(sigma))
        if kernel.size == 1:
            continue
        out = ndimage.correlate1d(
            out,
            kernel.astype(np.float32),
            axis=2 - axis_xyz,
            mode=mode,
            output=np.float32,
        )
    return out


def _axis_weights(src: Grid, dst: Grid, axis: int):
    """Linear-interpolation indices and weights that sample ``src`` at ``dst``'s centres along ``axis``."""
    position = (dst.coords(axis).astype(np.float64) - src.origin[axis]) / src.spacing[axis]
    n = src.size_xyz[axis]
    lower = np.floor(position).astype(np.int64)
    inside = (position >= -1e-6) & (position <= n - 1 + 1e-6)
    lower = np.clip(lower, 0, max(n - 2, 0))
    weight = np.where(inside, position - lower, 0).astype(np.float32)
    return lower, weight, inside


def resample_nearest(array: np.ndarray, src: Grid, dst: Grid, outside=0) -> np.ndarray:
    """Sample a label map ``array`` (on ``src``) at ``dst``'s voxel centres by nearest neighbour.

    Label maps are never interpolated (a label between two organs is neither); outside ``src``
    the value is ``outside``.
    """
    index, valid = [], []
    for axis in range(3):
        position = (dst.coords(axis).astype(np.float64) - src.origin[axis]) / src.spacing[axis]
        nearest = np.rint(position).astype(np.int64)
        n = src.size_xyz[axis]
        valid.append((nearest >= 0) & (nearest < n))
        index.append(np.clip(nearest, 0, n - 1))
    out = array[np.ix_(index[2], index[1], index[0])]
    inside = valid[2][:, None, None] & valid[1][None, :, None] & valid[0][None, None, :]
    if not inside.all():
        out = np.where(inside, out, np.asarray(outside, dtype=out.dtype))
    return np.ascontiguousarray(out)


def resample_linear(array: np.ndarray, src: Grid, dst: Grid) -> np.ndarray:
    """Sample ``array`` (on ``src``) at the voxel centres of ``dst`` by separable linear interpolation.

    Points outside ``src`` are 0 (air). Cost is three 1-D passes, not a 3-D interpolation.
    """
    out = np.asarray(array, dtype=np.float32)
    for axis in range(3):
        np_axis = 2 - axis
        if src.size_xyz[axis] == 1:
            out = np.repeat(out, dst.size_xyz[axis], axis=np_axis)
            continue
        lower, weight, inside = _axis_weights(src, dst, axis)
        a = np.take(out, lower, axis=np_axis)
        b = np.take(out, np.minimum(lower + 1, src.size_xyz[axis] - 1), axis=np_axis)
        shape = [1, 1, 1]
        shape[np_axis] = -1
        w = weight.reshape(shape)
        out = a + (b - a) * w
        out *= inside.reshape(shape).astype(np.float32)
    return np.ascontiguousarray(out, dtype=np.float32)
