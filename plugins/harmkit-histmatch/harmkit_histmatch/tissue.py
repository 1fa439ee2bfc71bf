"""Healthy background tissue of a PET scan, found from the image itself (no organ masks needed).

Both harmonizers of this plugin measure a site's calibration (``histmatch``)
or noise texture (``resmatch``) in tissue whose FDG uptake is unremarkable:
the body without lesions, without hot organs (brain, heart, bladder,
kidneys), without air and without the body's edge. Which voxels those are is
decided on a *locally averaged* copy of the image (a Gaussian of
``smoothing_mm``), never on the noisy voxel values themselves, so that a
noisier site does not lose more of its low or high voxels than a quieter one
and the statistic measured afterwards on the raw values stays unbiased.

* :func:`healthy_tissue`: body voxels (minus excluded masks) whose local mean
  lies within ``band`` times the median local mean of the body (the typical
  soft-tissue level of that scan). The rule is scale-free: multiplying an
  image by a calibration factor selects exactly the same voxels.
* :func:`homogeneous_tissue`: the healthy tissue where the local mean is also
  flat (relative gradient below a limit), eroded: a region where the image's
  texture is noise, not anatomy.
* :func:`densest_block`: the part of a region inside the cube of a given
  side that holds most of it (a compact sample, cheap to smooth repeatedly).
"""

from __future__ import annotations

import math

import numpy as np

FWHM_PER_SIGMA = 2.0 * math.sqrt(2.0 * math.log(2.0))
DEFAULT_BAND = (0.5, 2.0)
DEFAULT_SMOOTHING_MM = 10.0
# homogeneous tissue (resmatch): one tissue class, flat at the scale of 2 cm, away from edges
HOMOGENEOUS_BAND = (0.75, 1.33)
HOMOGENEOUS_SMOOTHING_MM = 20.0
MAX_RELATIVE_GRADIENT = 0.03  # per mm: at most 3 % change of the local mean per millimetre
EROSION_MM = 5.0


def local_mean(array: np.ndarray, spacing_zyx, fwhm_mm: float) -> np.ndarray:
    """``array`` averaged by an isotropic Gaussian of ``fwhm_mm`` (mm); edges repeat the border voxel."""
    from scipy.ndimage import gaussian_filter

    sigma = [fwhm_mm / FWHM_PER_SIGMA / float(s) for s in spacing_zyx]
    return gaussian_filter(np.asarray(array, dtype=np.float32), sigma=sigma, mode="nearest", truncate=3.0)


def check_band(band, where: str) -> tuple[float, float]:
    """``band`` as a (low, high) pair of positive floats with low < 1 < high, else a :class:`HarmkitError`."""
    from harmkit.errors import HarmkitError

    try:
        low, high = (float(b) for b in band)
    except (TypeError, ValueError):
        raise HarmkitError(f"{where}: band must be two numbers (low, high), e.g. (0.5, 2.0); got {band!r}") from None
    if not (0 < low < 1 < high < math.inf):
        raise HarmkitError(
            f"{where}: band must satisfy 0 < low < 1 < high (multiples of the body's median uptake); got {band!r}"
        )
    return low, high


def healthy_tissue(
    array: np.ndarray,
    body: np.ndarray,
    spacing_zyx,
    exclude: np.ndarray | None = None,
    band: tuple[float, float] = DEFAULT_BAND,
    smoothing_mm: float = DEFAULT_SMOOTHING_MM,
    smoothed: np.ndarray | None = None,
) -> np.ndarray:
    """Boolean mask of the healthy background tissue of one scan.

    A voxel is healthy tissue when it is inside ``body``, outside ``exclude``
    (e.g. the lesion mask; ``None``: nothing excluded) and its local mean
    (Gaussian of ``smoothing_mm`` FWHM, or ``smoothed`` when the caller has it)
    lies within ``band`` = (low, high) times the median local mean over those
    voxels. The hottest structures (lesions, brain, heart, bladder) sit far
    above the band, air, lungs' edges and the body's rim below it.

    Returns an all-False mask when the body minus ``exclude`` is empty.
    """
    region = body.astype(bool, copy=True)
    if exclude is not None:
        region &= ~exclude.astype(bool)
    if not region.any():
        return region
    if smoothed is None:
        smoothed = local_mean(array, spacing_zyx, smoothing_mm)
    level = float(np.median(smoothed[region]))
    low, high = band
    if level <= 0:
        return np.zeros_like(region)
    return region & (smoothed >= low * level) & (smoothed <= high * level)


def homogeneous_tissue(
    array: np.ndarray,
    body: np.ndarray,
    spacing_zyx,
    exclude: np.ndarray | None = None,
    band: tuple[float, float] = HOMOGENEOUS_BAND,
    smoothing_mm: float = HOMOGENEOUS_SMOOTHING_MM,
    max_gradient: float = MAX_RELATIVE_GRADIENT,
    erosion_mm: float = EROSION_MM,
) -> np.ndarray:
    """Boolean mask of flat healthy tissue: where texture is noise, not anatomy.

    :func:`healthy_tissue`, further restricted to voxels whose local mean
    changes by less than ``max_gradient`` of itself per millimetre (the
    gradient magnitude of the local mean divided by the local mean), then
    eroded by ``erosion_mm`` so that no voxel sits next to an organ edge.
    """
    from scipy.ndimage import binary_erosion

    smoothed = local_mean(array, spacing_zyx, smoothing_mm)
    healthy = healthy_tissue(array, body, spacing_zyx, exclude, band, smoothing_mm, smoothed=smoothed)
    if not healthy.any():
        return healthy
    gradients = np.gradient(smoothed, *[float(s) for s in spacing_zyx])
    magnitude = np.sqrt(sum(g.astype(np.float64) ** 2 for g in gradients))
    with np.errstate(divide="ignore", invalid="ignore"):
        relative = magnitude / np.abs(smoothed)
    flat = healthy & (relative < max_gradient)
    steps = [max(1, int(round(erosion_mm / float(s)))) for s in spacing_zyx]
    if erosion_mm > 0 and flat.any():
        structure = _ellipsoid(steps)
        flat = binary_erosion(flat, structure=structure, border_value=0)
    return flat


def _ellipsoid(radii) -> np.ndarray:
    """A boolean ellipsoid structuring element with half-axes ``radii`` (voxels, z y x)."""
    grids = np.ogrid[tuple(slice(-r, r + 1) for r in radii)]
    return sum((g / max(r, 1)) ** 2 for g, r in zip(grids, radii)) <= 1.0


def densest_block(region: np.ndarray, spacing_zyx, side_mm: float) -> np.ndarray:
    """``region`` restricted to the cube of ``side_mm`` (voxels per axis rounded) that holds most of its voxels.

    Ties go to the first cube in memory order, so the choice is deterministic.
    An empty region comes back empty.
    """
    from scipy.ndimage import uniform_filter

    if not region.any():
        return region
    size = [max(1, int(round(side_mm / float(s)))) for s in spacing_zyx]
    density = uniform_filter(region.astype(np.float32), size=size, mode="constant")
    centre = [int(c) for c in np.unravel_index(int(np.argmax(density)), region.shape)]
    starts = [max(0, c - n // 2) for c, n in zip(centre, size)]
    box = tuple(slice(start, start + n) for start, n in zip(starts, size))
    out = np.zeros_like(region)
    out[box] = region[box]
    return out
