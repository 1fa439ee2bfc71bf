"""Texture statistics of one scan: noise level and texture in homogeneous tissue, effective resolution.

* :func:`homogeneous_region` finds a sphere of nearly uniform uptake when a
  cohort has no reference-tissue mask (real scans usually have only lesion
  masks).
* :func:`noise_statistics` measures, inside a homogeneous VOI, the mean, the
  noise SD, the COV and the noise correlation length (FWHM of the noise
  autocorrelation, in-plane and axial).
* :func:`edge_resolution` measures the effective resolution from the edge of
  a hot object (the lesion): the FWHM of the Gaussian blur that best turns
  the object's mask into the image around its boundary.

Arrays are in numpy order ``(z, y, x)``; spacings in SimpleITK order
``(x, y, z)``, mm.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import SimpleITK as sitk
from scipy import ndimage

from ..errors import HarmkitError

FWHM_PER_SIGMA = 2.3548200450309493
STRUCTURE_FWHM_MM = 10.0  # smoothing before the body threshold
GAP_MM = 10.0  # between a candidate sphere and the ring that judges its uniformity (longer than noise correlation)
RING_MM = 10.0  # thickness of that ring
SKIN_MM = 10.0  # a sphere keeps this far from the body's surface (partial volume with air)
BODY_SUV = 0.1  # voxels above this (after smoothing) are inside the body (the paper's threshold)
MAX_LAG = 3  # autocorrelation lags (voxels) used for the correlation length


def _arrays(image: sitk.Image, mask: sitk.Image | None = None):
    array = sitk.GetArrayFromImage(image).astype(np.float64)
    spacing = tuple(float(s) for s in image.GetSpacing())
    if mask is None:
        return array, spacing, None
    if mask.GetSize() != image.GetSize():
        raise HarmkitError(
            f"mask size {mask.GetSize()} differs from image size {image.GetSize()}; "
            "resample the mask onto the image grid"
        )
    return array, spacing, sitk.GetArrayFromImage(mask) != 0


def _blur(array: np.ndarray, fwhm_mm: float, spacing) -> np.ndarray:
    sigma = [fwhm_mm / FWHM_PER_SIGMA / s for s in spacing[::-1]]
    return ndimage.gaussian_filter(array, sigma, mode="nearest")


def _box_sum(array: np.ndarray, size) -> np.ndarray:
    """Sum of ``array`` over the box of ``size`` voxels centred on every voxel (zero outside)."""
    return ndimage.uniform_filter(array, size, mode="constant") * float(np.prod(size))


def homogeneous_region(
    image: sitk.Image,
    exclude: sitk.Image | None = None,
    diameter_mm: float = 30.0,
    margin_mm: float = 15.0,
    min_diameter_mm: float = 15.0,
    gap_mm: float = GAP_MM,
    ring_mm: float = RING_MM,
) -> sitk.Image:
    """A sphere of nearly uniform uptake, for noise measurements on scans without a reference-tissue mask.

    Candidate centres are voxels whose sphere lies inside the image and at
    least 10 mm inside the body (SUV > 0.1 after 10 mm smoothing), at least ``margin_mm``
    from the ``exclude`` mask (the lesion), in tissue at least as active as
    the body's median (after the same smoothing: soft tissue and muscle
    rather than fat, lung or air, whose low SUV makes every COV large). The sphere goes where the tissue
    *around* it is most uniform: the relative SD of the image in a ring
    ``ring_mm`` thick that starts ``gap_mm`` outside the sphere's cube. The
    sphere's own voxels take no part in the choice, and the gap is wider than
    PET noise correlation, so the noise measured inside is not selected to be
    low (choosing the flattest sphere itself would pick spots where the noise
    happens to be small, and hide noise differences between sites). At
    least three quarters of the ring must lie inside the image. Ties go
    to the first voxel in memory order: the choice is deterministic. If no
    sphere of ``diameter_mm`` fits, the diameter shrinks in 5 mm steps down
    to ``min_diameter_mm``; then :class:`HarmkitError`.
    """
    array, spacing, excluded = _arrays(image, exclude)
    smooth = _blur(array, STRUCTURE_FWHM_MM, spacing)
    body = smooth > BODY_SUV
    typical = float(np.median(smooth[body])) if body.any() else BODY_SUV
    inside_body = ndimage.distance_transform_edt(body, sampling=spacing[::-1])
    if excluded is not None and excluded.any():
        from_lesion = ndimage.distance_transform_edt(~excluded, sampling=spacing[::-1])
    else:
        from_lesion = np.full(array.shape, np.inf)
    diameter = float(diameter_mm)
    while diameter >= min_diameter_mm - 1e-9:
        radius = diameter / 2.0
        inner = [2 * int(round((radius + gap_mm) / s)) + 1 for s in spacing[::-1]]
        outer = [2 * int(round((radius + gap_mm + ring_mm) / s)) + 1 for s in spacing[::-1]]
        ones = np.ones_like(array)
        count = _box_sum(ones, outer) - _box_sum(ones, inner)
        total = _box_sum(array, outer) - _box_sum(array, inner)
        square = _box_sum(array * array, outer) - _box_sum(array * array, inner)
        mean = total / np.maximum(count, 1.0)
        ring_sd = np.sqrt(np.maximum(square / np.maximum(count, 1.0) - mean * mean, 0.0))
        relative_sd = ring_sd / np.maximum(mean, 1e-6)
        full_ring = float(np.prod(outer) - np.prod(inner))
        eligible = (inside_body >= radius + SKIN_MM) & (from_lesion >= radius + margin_mm) & (smooth >= typical)
        eligible &= count >= 0.75 * full_ring  # a ring mostly inside the image
        for axis, (n, s) in enumerate(zip(array.shape, spacing[::-1])):
            reach = int(math.ceil(radius / s - 1e-9))
            index = [slice(None)] * 3
            index[axis] = slice(0, min(reach, n))
            eligible[tuple(index)] = False
            index[axis] = slice(max(n - reach, 0), n)
            eligible[tuple(index)] = False
        if eligible.any():
            flat = np.where(eligible, relative_sd, np.inf)
            centre = np.unravel_index(int(np.argmin(flat)), flat.shape)
            from ..voi import sphere_mask

            point = image.TransformIndexToPhysicalPoint([int(c) for c in centre[::-1]])
            return sphere_mask(image, point, diameter)
        diameter -= 5.0
    raise HarmkitError(
        f"no homogeneous sphere of {min_diameter_mm:g} mm or more fits inside the body at least {margin_mm:g} mm "
        "from the lesion; give a reference-tissue mask (mask_<name> column) instead"
    )


def autocorrelation(residual: np.ndarray, mask: np.ndarray, axis: int, max_lag: int = MAX_LAG) -> list[float]:
    """Normalised autocorrelation of ``residual`` along numpy ``axis`` at lags 1..``max_lag``.

    Only pairs of voxels both inside ``mask`` count.
    """
    out = []
    n = residual.shape[axis]
    for lag in range(1, max_lag + 1):
        if lag >= n:
            out.append(math.nan)
            continue
        a = np.take(residual, range(0, n - lag), axis=axis)
        b = np.take(residual, range(lag, n), axis=axis)
        both = np.take(mask, range(0, n - lag), axis=axis) & np.take(mask, range(lag, n), axis=axis)
        if both.sum() < 10:
            out.append(math.nan)
            continue
        x, y = a[both], b[both]
        denominator = math.sqrt(float((x * x).sum()) * float((y * y).sum()))
        out.append(float((x * y).sum()) / denominator if denominator > 0 else math.nan)
    return out


def _pair_offsets(mask: np.ndarray, spacing) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Squared in-plane and axial distances (mm^2) of every voxel-pair offset in ``mask``, and its number of pairs."""
    from scipy.signal import fftconvolve

    m = mask.astype(np.float64)
    counts = fftconvolve(m, m[::-1, ::-1, ::-1], mode="full")
    centre = np.array(mask.shape) - 1
    index = np.argwhere(counts > 0.5)
    weight = np.rint(counts[counts > 0.5])
    offset = (index - centre) * np.asarray(spacing[::-1])
    return offset[:, 1] ** 2 + offset[:, 2] ** 2, offset[:, 0] ** 2, weight


def fit_correlation_fwhm(rho: dict[str, list[float]], spacing, mask: np.ndarray) -> tuple[float, float]:
    """In-plane and axial FWHM (mm) of a Gaussian noise autocorrelation that explains the measured ``rho``.

    ``rho[axis]`` (``"x"``, ``"y"``, ``"z"``) are autocorrelations at lags
    1, 2, ... voxels measured after subtracting the VOI mean. Subtracting the
    mean of a VOI not much larger than the correlation length lowers every
    measured correlation: the expected value is ``(rho - c) / (1 - c)``,
    where ``c`` is the mean true correlation over all voxel pairs of the VOI
    (computed from the VOI's shape). Both FWHMs are found by least squares
    over a 0.5 mm grid from 1 to 30 mm, with that correction. NaN (both)
    when fewer than two lags are finite; NaN for one when 30 mm fits best.
    """
    r_xy, r_z, weight = _pair_offsets(mask, spacing)
    total = weight.sum()
    grid = np.arange(1.0, 30.0 + 1e-9, 0.5)
    alpha = 4.0 * math.log(2.0) / grid**2  # exp(-alpha d^2)
    # mean true correlation over the VOI's pairs for every (in-plane, axial) FWHM: separable Gaussian
    e_xy = np.exp(-np.outer(alpha, r_xy))  # (G, M)
    e_z = np.exp(-np.outer(alpha, r_z))
    c = (e_xy * weight) @ e_z.T / total  # (G_xy, G_z)
    error = np.zeros_like(c)
    used = 0
    for axis, values in rho.items():
        step = spacing[{"x": 0, "y": 1, "z": 2}[axis]]
        for lag, value in enumerate(values, start=1):
            if not math.isfinite(value):
                continue
            used += 1
            true = np.exp(-alpha * (lag * step) ** 2)
            model = (true[:, None] - c) / (1.0 - c) if axis != "z" else (true[None, :] - c) / (1.0 - c)
            error += (model - value) ** 2
    if used < 2:
        return math.nan, math.nan
    i, j = np.unravel_index(int(np.argmin(error)), error.shape)
    last = len(grid) - 1  # the widest FWHM tried fits best: the correlation reaches beyond the VOI, not measurable here
    return (float(grid[i]) if i < last else math.nan), (float(grid[j]) if j < last else math.nan)


def noise_statistics(image: sitk.Image, mask: sitk.Image) -> dict[str, float]:
    """Noise in a homogeneous VOI: mean, SD, COV and correlation length.

    ``mean`` and ``sd`` are the SUV mean and (population) standard deviation
    of the voxels in ``mask``, ``cov = sd / mean`` (as the paper's liver COV).
    The correlation length is the FWHM of the noise autocorrelation (a
    Gaussian fitted to the autocorrelations at lags of 1-3 voxels along each
    axis, corrected for the VOI's own mean, :func:`fit_correlation_fwhm`),
    in-plane (``corr_fwhm_inplane_mm``) and along z (``corr_fwhm_axial_mm``).
    For noise made by smoothing white noise with a Gaussian of FWHM ``w``,
    the autocorrelation FWHM is ``sqrt(2) w``. Real tissue is not perfectly
    uniform: its own structure adds to both SD and correlation length.
    """
    array, spacing, inside = _arrays(image, mask)
    if inside.sum() < 20:
        raise HarmkitError(
            f"the homogeneous VOI has {int(inside.sum())} voxels; at least 20 are needed for noise statistics"
        )
    box = tuple(slice(int(ix.min()), int(ix.max()) + 1) for ix in np.nonzero(inside))
    array, inside = array[box], inside[box]
    values = array[inside]
    mean = float(values.mean())
    sd = float(values.std())
    residual = np.where(inside, array - mean, 0.0)
    rho = {name: autocorrelation(residual, inside, numpy_axis) for numpy_axis, name in ((2, "x"), (1, "y"), (0, "z"))}
    inplane, axial = fit_correlation_fwhm(rho, spacing, inside)
    return {
        "mean": mean,
        "sd": sd,
        "cov": sd / mean if mean > 0 else math.nan,
        "corr_fwhm_inplane_mm": inplane,
        "corr_fwhm_axial_mm": axial,
        "voxels": int(inside.sum()),
    }


def edge_resolution(
    image: sitk.Image,
    mask: sitk.Image,
    shell_mm: float = 10.0,
    fwhm_range_mm: tuple[float, float] = (1.0, 30.0),
) -> float:
    """Effective resolution (FWHM, mm) from the edge of the hot object in ``mask`` (the lesion).

    The model around the object's boundary is ``a + b * G_s(mask)``: the
    binary mask blurred by an isotropic Gaussian of FWHM ``s``, scaled and
    offset. For each ``s`` the offset ``a`` and contrast ``b`` are fitted by
    least squares over the voxels within ``shell_mm`` of the boundary (both
    sides); the ``s`` with the smallest residual is returned (searched on a
    1 mm grid over ``fwhm_range_mm``, then 0.1 mm around the best). Only the
    largest connected component of the mask counts. NaN when the object is
    not hotter than its surroundings (``b <= 0``), has fewer than 8 voxels,
    or the best fit is the widest blur tried (no edge in the range).

    What it measures is everything that widens an edge in the image: PSF,
    post-filter, voxel size, and a mask that does not follow the PET edge
    exactly (a lesion contoured on another modality reads wider).
    """
    from ..voi import largest_component

    array, spacing, inside = _arrays(image, largest_component(mask))
    if inside.sum() < 8:
        return math.nan
    reach = [int(math.ceil((shell_mm + 2 * fwhm_range_mm[1]) / s)) for s in spacing[::-1]]
    bounds = [
        (max(int(ix.min()) - r, 0), min(int(ix.max()) + r + 1, n))
        for ix, r, n in zip(np.nonzero(inside), reach, array.shape)
    ]
    box = tuple(slice(lo, hi) for lo, hi in bounds)
    array, inside = array[box], inside[box]
    sampling = spacing[::-1]
    distance = np.where(
        inside,
        ndimage.distance_transform_edt(inside, sampling=sampling),
        ndimage.distance_transform_edt(~inside, sampling=sampling),
    )
    shell = distance <= shell_mm
    target = array[shell]
    indicator = inside.astype(np.float64)

    def fit(fwhm: float) -> tuple[float, float]:
        model = _blur(indicator, float(fwhm), spacing)[shell]
        design = np.column_stack([np.ones_like(model), model])
        coef, *_ = np.linalg.lstsq(design, target, rcond=None)
        return float(((design @ coef - target) ** 2).sum()), float(coef[1])

    coarse = np.arange(fwhm_range_mm[0], fwhm_range_mm[1] + 1e-9, 1.0)
    errors, contrasts = zip(*(fit(f) for f in coarse))
    best = int(np.argmin(errors))
    if contrasts[best] <= 0 or best == len(coarse) - 1:
        return math.nan
    fine = np.arange(max(coarse[best] - 1.0, fwhm_range_mm[0]), coarse[best] + 1.0 + 1e-9, 0.1)
    fine_errors = [fit(f)[0] for f in fine]
    return float(fine[int(np.argmin(fine_errors))])


def scan_texture(item: tuple) -> dict[str, Any]:
    """Worker: texture statistics of one scan ``(scan, tissue_voi or None, edge_voi or None, region options)``."""
    scan, tissue_voi, edge_voi, options = item
    try:
        image = scan.load_image()
        edge_mask = scan.load_mask(edge_voi) if edge_voi and edge_voi in scan.masks else None
        if tissue_voi:
            tissue = scan.load_mask(tissue_voi)
            source = f"mask {tissue_voi}"
        else:
            tissue = homogeneous_region(image, exclude=edge_mask, **options)
            source = "automatic"
        stats = noise_statistics(image, tissue)
        diameter = None
        if not tissue_voi:
            voxel_ml = float(np.prod(image.GetSpacing())) / 1000.0
            diameter = float((6.0 * stats["voxels"] * voxel_ml * 1000.0 / math.pi) ** (1.0 / 3.0))
        edge = edge_resolution(image, edge_mask) if edge_mask is not None else math.nan
    except HarmkitError as exc:
        message = str(exc)
        raise HarmkitError(message if message.startswith(scan.label) else f"{scan.label}: {message}") from None
    spacing = image.GetSpacing()
    return {
        "subject_id": scan.subject_id,
        "site": scan.site,
        "site_group": scan.group,
        "spacing_mm": "x".join(f"{s:.3g}" for s in spacing),
        "tissue_source": source,
        "tissue_diameter_mm": diameter,
        "tissue_voxels": stats["voxels"],
        "tissue_mean_suv": stats["mean"],
        "noise_sd_suv": stats["sd"],
        "noise_cov": stats["cov"],
        "corr_fwhm_inplane_mm": stats["corr_fwhm_inplane_mm"],
        "corr_fwhm_axial_mm": stats["corr_fwhm_axial_mm"],
        "edge_fwhm_mm": edge,
    }
