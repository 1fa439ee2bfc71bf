"""Resolution matching: an EARL-style Gaussian post-filter.

PET centres align the recovery of different scanners by smoothing the sharper
reconstruction with a Gaussian until it matches the smoother one (the EARL
accreditation approach). :class:`ResolutionMatching` does this for every site
group that is sharper than the reference group. The filter width is either
given (``fwhm_mm``) or fitted: the width whose smoothing makes the site
group's *noise texture* in healthy tissue match the reference group's.

Where the texture is measured: by default (``mask=None``) in an automatic
homogeneous region that every scan has (:func:`auto_region`): body voxels
outside the lesion mask whose 2 cm local mean lies within 0.75-1.33 times the
body's median uptake and changes by less than 3 % per mm, eroded by 5 mm,
restricted to the 5 cm cube that holds most of them (a scan with fewer than
100 such voxels falls back on healthy tissue without the flatness rule, with
a warning). There the statistic is taken on the image minus its 3 cm local
mean (a high-pass that removes what is left of anatomy, mostly keeping
noise). With ``mask="reference"`` (or any
mask name) the texture is measured, unfiltered, in that VOI, e.g. a liver
sphere.

The default texture statistic, ``"smoothness"``, is the noise FWHM in mm
estimated from the correlation of neighbouring voxels inside the VOI: for a
Gaussian-correlated field the correlation at one voxel step ``d`` is
``rho = exp(-4 ln2 d^2 / FWHM^2)``, so ``FWHM = d sqrt(4 ln2 / -ln rho)``,
averaged over the three axes. Being in millimetres it compares sites with
different voxel sizes. ``"correlation"`` (the mean neighbouring-voxel
correlation itself) and ``"cov"`` (coefficient of variation in the VOI) are
alternatives; COV also depends on the injected dose and scan time.

The width is found by root finding, filtering crops of the actual scans
around the VOI, so discretisation and anisotropic voxels are accounted for.

A site group *smoother* than the reference is, by default
(``smoother_groups="sharpen"``), sharpened: a Gaussian is undone by a
regularised inverse filter (:func:`gaussian_sharpen`), whose width is fitted
the same way but stopped where the group's noise level reaches the
reference's, since an inverse filter amplifies noise. A group that is
smoother *and* already at least as noisy as the reference cannot be matched
by any linear filter, so it is *restored*: its noise is removed by an
edge-preserving local Wiener filter (:func:`edge_preserving_denoise`), a
Gaussian is undone (its width fitted so that the group's lesion edges become
as sharp as the reference's, :class:`_LesionEdge`), and noise with the
reference's texture and level is added. ``smoother_groups="restore"`` restores
every smoother group; ``"keep"`` leaves every smoother group unchanged (the
EARL filter, which only blurs) and ``"error"`` refuses.
"""

from __future__ import annotations

import math
import warnings
import zlib
from collections.abc import Sequence

import numpy as np
import SimpleITK as sitk

from harmkit.errors import HarmkitError, TargetNotSupported
from harmkit.toolkit import progress

from ._scans import PerGroupHarmonizer, image_and_mask, mask_array, rebuild, reference_scans
from .tissue import HOMOGENEOUS_BAND, check_band, densest_block, healthy_tissue, homogeneous_tissue, local_mean

FWHM_PER_SIGMA = 2.0 * math.sqrt(2.0 * math.log(2.0))
STATISTICS = ("smoothness", "correlation", "cov")
SMOOTHER_GROUPS = ("sharpen", "restore", "keep", "error")
SMALL_VOI_VOXELS = 200  # below this the texture statistic of one VOI is too noisy to trust
MIN_FLAT_VOXELS = 100  # fewer flat homogeneous voxels than this and the automatic region falls back
AUTO_BLOCK_MM = 50.0  # side of the cube of homogeneous tissue the automatic region keeps
HIGHPASS_MM = 30.0  # FWHM of the local mean subtracted before measuring texture in the automatic region
DEFAULT_EXCLUDE = ("lesion",)
# first word of every seed of added noise: keeps its streams apart from anything seeded with small integers alone
NOISE_SALT = 0x7265736D


class ResolutionMatchingWarning(UserWarning):
    """The fitted width may be unreliable (small VOI, sites hardly different)."""


def gaussian_smooth(array: np.ndarray, spacing_zyx, fwhm_mm: float) -> np.ndarray:
    """Smooth a (z, y, x) array with an isotropic Gaussian of ``fwhm_mm`` (mm); the kernel sums to one.

    Boundaries repeat the edge voxel, so the mean SUV of a region far from the
    border is kept.
    """
    from scipy.ndimage import gaussian_filter

    if fwhm_mm <= 0:
        return np.array(array, dtype=np.float32, copy=True)
    sigma = [fwhm_mm / FWHM_PER_SIGMA / float(s) for s in spacing_zyx]
    return gaussian_filter(np.asarray(array, dtype=np.float32), sigma=sigma, mode="nearest", truncate=4.0)


def gaussian_sharpen(array: np.ndarray, spacing_zyx, fwhm_mm: float, max_gain: float = 4.0) -> np.ndarray:
    """Undo an isotropic Gaussian blur of ``fwhm_mm`` (mm) by a regularised (Wiener-type) inverse filter.

    The filter is ``(1 + eps) H / (H^2 + eps)`` in frequency space, ``H`` being
    the Gaussian's transfer function and ``eps = 1 / (4 max_gain^2)``: it
    inverts the blur where the Gaussian passes more than about ``1/max_gain``
    of the signal and rolls off beyond, so no frequency is amplified by more
    than about ``max_gain``. Its gain at frequency 0 is 1, so the mean SUV of
    a region is kept. The array is mirrored at its faces before the FFT, so no
    wrap-around from the opposite face.
    """
    from scipy import fft

    array = np.asarray(array, dtype=np.float32)
    if fwhm_mm <= 0:
        return np.array(array, copy=True)
    sigma = [fwhm_mm / FWHM_PER_SIGMA / float(s) for s in spacing_zyx]
    pad = [min(int(math.ceil(3.0 * s)) + 2, n - 1) for s, n in zip(sigma, array.shape)]
    padded = np.pad(array, [(p, p) for p in pad], mode="reflect")
    transfer = np.ones((1, 1, 1), dtype=np.float32)
    for axis, (n, s) in enumerate(zip(padded.shape, sigma)):
        freq = fft.rfftfreq(n) if axis == 2 else fft.fftfreq(n)
        shape = [1, 1, 1]
        shape[axis] = len(freq)
        transfer = transfer * np.exp(-2.0 * (math.pi * freq * s) ** 2).astype(np.float32).reshape(shape)
    eps = 1.0 / (4.0 * float(max_gain) ** 2)
    spectrum = fft.rfftn(padded, workers=1)
    spectrum *= (1.0 + eps) * transfer / (transfer * transfer + eps)
    out = fft.irfftn(spectrum, s=padded.shape, workers=1)
    return np.ascontiguousarray(out[tuple(slice(p, p + n) for p, n in zip(pad, array.shape))], dtype=np.float32)


def resolution_filter(array: np.ndarray, spacing_zyx, fwhm_mm: float, max_gain: float = 4.0) -> np.ndarray:
    """Smooth by a Gaussian of ``fwhm_mm`` when it is > 0, sharpen by one of ``-fwhm_mm`` when it is < 0.

    A sharpened image of an input without negative values is clipped at 0
    (the inverse filter rings below 0 next to the body's edge).
    """
    if fwhm_mm >= 0:
        return gaussian_smooth(array, spacing_zyx, fwhm_mm)
    out = gaussian_sharpen(array, spacing_zyx, -fwhm_mm, max_gain)
    if float(np.min(array)) >= 0:
        np.maximum(out, 0.0, out=out)
    return out


def edge_preserving_denoise(
    array: np.ndarray, spacing_zyx, fwhm_mm: float, noise_amplitude: float, strength: float = 1.0
) -> np.ndarray:
    """Remove noise of SD ``noise_amplitude * sqrt(SUV)`` from ``array`` and keep edges (a local Wiener filter).

    Within a Gaussian window of ``fwhm_mm`` (mm) with mean ``m`` and variance
    ``v``, each voxel becomes ``m + a (value - m)`` with
    ``a = max(v - strength * n, 0) / v`` and ``n = noise_amplitude^2 * m`` the
    expected (Poisson-like) noise variance there (Lee, *IEEE PAMI* 1980). In
    flat tissue ``v`` is about ``n``, so ``a`` is 0 and the voxel takes the
    local mean; where the window holds an edge (a lesion, an organ's rim) ``v``
    is far above ``n``, ``a`` is near 1 and the voxel is kept. ``strength`` > 1
    also removes noise coarser than the window. An input without negative
    values gives an output without them.
    """
    if noise_amplitude <= 0 or fwhm_mm <= 0:
        return np.array(array, dtype=np.float32, copy=True)
    values = np.asarray(array, dtype=np.float32)
    mean = gaussian_smooth(values, spacing_zyx, fwhm_mm)
    variance = np.maximum(gaussian_smooth(values * values, spacing_zyx, fwhm_mm) - mean * mean, 0.0)
    noise = np.float32(strength * noise_amplitude**2) * np.maximum(mean, 0.0)
    slope = np.maximum(variance - noise, 0.0) / np.maximum(variance, np.float32(1e-12))
    out = mean + slope * (values - mean)
    if float(np.min(values)) >= 0:
        np.maximum(out, 0.0, out=out)
    return out.astype(np.float32, copy=False)


def restoration_filter(
    array: np.ndarray,
    spacing_zyx,
    fwhm_mm: float,
    max_gain: float,
    denoise_fwhm_mm: float,
    noise_amplitude: float,
    denoise_strength: float = 1.0,
) -> np.ndarray:
    """:func:`resolution_filter` by ``fwhm_mm``, after :func:`edge_preserving_denoise` when ``noise_amplitude`` > 0."""
    if noise_amplitude > 0:
        array = edge_preserving_denoise(array, spacing_zyx, denoise_fwhm_mm, noise_amplitude, denoise_strength)
    return resolution_filter(array, spacing_zyx, fwhm_mm, max_gain)


def neighbour_correlations(array: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """Correlation of each voxel with its next neighbour along z, y and x, within ``mask``."""
    out = []
    for axis in range(3):
        n = array.shape[axis]
        a = np.take(array, range(0, n - 1), axis=axis)
        b = np.take(array, range(1, n), axis=axis)
        both = np.take(mask, range(0, n - 1), axis=axis) & np.take(mask, range(1, n), axis=axis)
        if both.sum() < 3:
            out.append(np.nan)
            continue
        x, y = a[both].astype(np.float64), b[both].astype(np.float64)
        x -= x.mean()
        y -= y.mean()
        denom = math.sqrt(float((x * x).sum() * (y * y).sum()))
        out.append(float((x * y).sum() / denom) if denom > 0 else np.nan)
    return np.asarray(out)


def noise_smoothness(array: np.ndarray, mask: np.ndarray, spacing_zyx) -> float:
    """Noise FWHM (mm) inside ``mask`` from neighbouring-voxel correlations, averaged over axes."""
    rho = neighbour_correlations(array, mask)
    fwhm = []
    for r, d in zip(rho, spacing_zyx):
        if not np.isfinite(r):
            continue
        r = min(max(r, 1e-6), 1 - 1e-9)
        fwhm.append(float(d) * math.sqrt(4.0 * math.log(2.0) / -math.log(r)))
    return float(np.mean(fwhm)) if fwhm else float("nan")


def texture_statistic(name: str, array: np.ndarray, mask: np.ndarray, spacing_zyx) -> float:
    """The statistic ``name`` of the voxels in ``mask``; larger means smoother for every statistic but ``cov``."""
    if name == "smoothness":
        return noise_smoothness(array, mask, spacing_zyx)
    if name == "correlation":
        return float(np.nanmean(neighbour_correlations(array, mask)))
    values = array[mask].astype(np.float64)
    mean = values.mean()
    return float(values.std(ddof=1) / mean) if mean != 0 else float("nan")


def auto_region(
    scan, exclude=DEFAULT_EXCLUDE, band=HOMOGENEOUS_BAND
) -> tuple[sitk.Image, np.ndarray, np.ndarray, bool]:
    """The scan's image, voxel array, automatic texture region (boolean, z y x) and whether that region is flat.

    The region is the homogeneous tissue of the module docs. When a scan has
    fewer than :data:`MIN_FLAT_VOXELS` voxels of it (a small field of view, a
    child, a crop), the region falls back on the healthy tissue within
    ``band`` without the flatness rule (the last value is then False). The
    body is the scan's ``body`` mask, or harmkit's body-mask rule
    (:func:`harmkit.voi.body_mask`) when it has none; masks named in
    ``exclude`` that the scan has are left out. Raises :class:`HarmkitError`
    naming the scan when not even 20 voxels remain.
    """
    image, array, body = image_and_mask(scan, "body")
    excluded = np.zeros_like(body)
    for name in exclude:
        if name in scan.masks:
            excluded |= mask_array(scan, name, image)
    spacing = tuple(reversed(image.GetSpacing()))
    band = check_band(band, "resmatch")
    region = densest_block(homogeneous_tissue(array, body, spacing, excluded, band), spacing, AUTO_BLOCK_MM)
    flat = int(region.sum()) >= MIN_FLAT_VOXELS
    if not flat:
        region = densest_block(healthy_tissue(array, body, spacing, excluded, band), spacing, AUTO_BLOCK_MM)
    if region.sum() < 20:
        raise HarmkitError(
            f"{scan.label}: no healthy tissue found for resmatch (only {int(region.sum())} voxels); give a "
            "healthy-tissue VOI with mask='reference' (a mask_reference column), or widen band"
        )
    return image, array, region, flat


class _Patch:
    """A crop of one scan around its VOI, wide enough for the largest kernel tried (and the high-pass)."""

    def __init__(
        self,
        label: str,
        image: sitk.Image,
        array: np.ndarray,
        mask: np.ndarray,
        max_fwhm_mm: float,
        highpass_mm: float,
        denoise_fwhm_mm: float = 0.0,
        denoise_strength: float = 1.0,
    ):
        self.spacing = tuple(reversed(image.GetSpacing()))  # (z, y, x) like the array
        self.highpass_mm = highpass_mm
        self.denoise_fwhm_mm = denoise_fwhm_mm
        self.denoise_strength = denoise_strength
        # 72 mm at the defaults: room for the denoiser (25 mm at its default window) and a fitted width too
        reach = (4.0 * max_fwhm_mm + 3.0 * highpass_mm) / FWHM_PER_SIGMA
        margin = [int(math.ceil(reach / s)) + 1 for s in self.spacing]
        where = np.nonzero(mask)
        box = tuple(
            slice(max(0, int(w.min()) - m), min(n, int(w.max()) + 1 + m)) for w, m, n in zip(where, margin, mask.shape)
        )
        self.array = np.ascontiguousarray(array[box])
        self.mask = np.ascontiguousarray(mask[box])
        self.label = label
        self.flat = True  # False: an automatic region that found no flat tissue (see auto_region)

    def filtered(self, fwhm_mm: float, max_gain: float = 4.0, denoise: float = 0.0) -> np.ndarray:
        """The crop after :func:`restoration_filter` (``fwhm_mm`` < 0: sharpening; ``denoise``: noise amplitude)."""
        return restoration_filter(
            self.array, self.spacing, fwhm_mm, max_gain, self.denoise_fwhm_mm, denoise, self.denoise_strength
        )

    def output(
        self,
        fwhm_mm: float,
        max_gain: float = 4.0,
        denoise: float = 0.0,
        amplitude: float = 0.0,
        noise_fwhm_mm: float = 0.0,
        seed=0,
    ) -> np.ndarray:
        """The crop after :meth:`filtered` and adding noise of ``amplitude`` (per sqrt(SUV)) and ``noise_fwhm_mm``."""
        image = self.filtered(fwhm_mm, max_gain, denoise)
        if amplitude > 0:
            image = add_noise(image, self.spacing, amplitude, noise_fwhm_mm, np.random.default_rng(seed))
        return image

    def statistic(self, name: str, fwhm_mm: float, max_gain: float = 4.0, denoise: float = 0.0, **noise) -> float:
        """The statistic after :meth:`output` (``noise``: its ``amplitude``, ``noise_fwhm_mm`` and ``seed``)."""
        image = self.output(fwhm_mm, max_gain, denoise, **noise)
        if self.highpass_mm > 0 and name != "cov":
            image = image - local_mean(image, self.spacing, self.highpass_mm)
        return texture_statistic(name, image, self.mask, self.spacing)

    def noise_level(
        self,
        fwhm_mm: float,
        amplitude: float = 0.0,
        noise_fwhm_mm: float = 0.0,
        seed=0,
        max_gain: float = 4.0,
        denoise: float = 0.0,
    ) -> float:
        """Noise SD per sqrt(SUV) in the region after :meth:`output`."""
        image = self.output(fwhm_mm, max_gain, denoise, amplitude, noise_fwhm_mm, seed)
        return noise_level(image, self.mask, self.spacing, self.highpass_mm)


def noise_level(array: np.ndarray, mask: np.ndarray, spacing_zyx, highpass_mm: float) -> float:
    """The noise SD inside ``mask`` divided by the square root of the mean SUV there (Poisson-like noise).

    The noise is the image minus its ``highpass_mm`` local mean (or minus the
    mask's mean when ``highpass_mm`` is 0).
    """
    values = array.astype(np.float64)
    if highpass_mm > 0:
        residual = (values - local_mean(values, spacing_zyx, highpass_mm))[mask]
    else:
        residual = values[mask] - values[mask].mean()
    mean = float(values[mask].mean())
    return float(residual.std() / math.sqrt(mean)) if mean > 0 else float("nan")


def add_noise(array: np.ndarray, spacing_zyx, amplitude: float, fwhm_mm: float, rng: np.random.Generator) -> np.ndarray:
    """``array`` plus Gaussian noise of SD ``amplitude * sqrt(local SUV)`` and correlation FWHM ``fwhm_mm``.

    The noise is white noise smoothed by a Gaussian of ``fwhm_mm / sqrt(2)``
    (so that its autocorrelation has FWHM ``fwhm_mm``), scaled to unit SD, then
    by ``amplitude`` times the square root of the 10 mm local mean (clipped at
    0), as PET noise grows with the square root of the activity. Values below 0
    are set to 0 when the input has none.
    """
    from scipy.ndimage import gaussian_filter

    field = rng.standard_normal(array.shape).astype(np.float32)
    if fwhm_mm > 0:
        sigma = [fwhm_mm / math.sqrt(2.0) / FWHM_PER_SIGMA / float(s) for s in spacing_zyx]
        field = gaussian_filter(field, sigma=sigma, mode="wrap")
    field /= max(float(field.std()), 1e-12)
    level = np.sqrt(np.maximum(local_mean(array, spacing_zyx, 10.0), 0.0))
    out = array + np.float32(amplitude) * level * field
    if float(np.min(array)) >= 0:
        np.maximum(out, 0.0, out=out)
    return out.astype(np.float32, copy=False)


def _first_root(function, hi: float, step: float = 0.5) -> float | None:
    """The smallest ``w`` in (0, ``hi``] where ``function`` (> 0 at 0) reaches 0, or None.

    A regularised inverse filter's effect is not monotone in its width (a very
    wide Gaussian's inverse only touches the lowest frequencies), so the first
    sign change is searched on a grid of ``step`` mm before root finding in it.
    """
    from scipy.optimize import brentq

    low, value = 0.0, function(0.0)
    for high in np.arange(step, hi + step / 2, step):
        high = float(min(high, hi))
        next_value = function(high)
        if next_value <= 0:
            return float(brentq(function, low, high, xtol=0.01, rtol=1e-4)) if value > 0 else low
        low, value = high, next_value
    return None


LESION_RING_MM = (5.0, 10.0)  # the lesion's and the background's uptake are read this far inside and outside its edge
MIN_EDGE_LESIONS = 3  # fewer measurable lesions than this in a group and the width is fitted from the noise texture
WIDTH_SOURCES = {
    "given": "width given",
    "lesion edges": "width fitted on the lesions' edges",
    "noise texture": "width fitted on the noise textures",
}


class _LesionEdge:
    """A crop of one scan around its lesion mask, ready to measure how sharp the lesion's edge is.

    The edge width is that of a Gaussian-blurred step: ``sigma = h / (sqrt(2 pi) g)``, with ``h`` the
    uptake step (mean of a ring 5-10 mm inside the mask minus a ring 5-10 mm outside) and ``g`` the mean
    gradient across the mask's boundary, projected on the boundary's normal (noise gradients average out
    in that projection, so noise does not make an edge look sharper).
    """

    def __init__(self, label: str, image: sitk.Image, array: np.ndarray, lesion: np.ndarray, margin_mm: float):
        from scipy.ndimage import distance_transform_edt

        self.label = label
        self.spacing = tuple(reversed(image.GetSpacing()))
        margin = [int(math.ceil((margin_mm + LESION_RING_MM[1]) / s)) + 1 for s in self.spacing]
        where = np.nonzero(lesion)
        box = tuple(
            slice(max(0, int(w.min()) - m), min(n, int(w.max()) + 1 + m))
            for w, m, n in zip(where, margin, lesion.shape)
        )
        self.array = np.ascontiguousarray(array[box])
        inside = lesion[box]
        half = 0.5 * min(self.spacing)
        signed = np.where(
            inside,
            distance_transform_edt(inside, sampling=self.spacing) - half,
            half - distance_transform_edt(~inside, sampling=self.spacing),
        ).astype(np.float32)
        low, high = LESION_RING_MM
        self.inner = (signed >= low) & (signed <= high)
        self.outer = (signed <= -low) & (signed >= -high)
        self.band = np.abs(signed) <= 0.75 * max(self.spacing)
        normal = np.gradient(signed, *self.spacing)
        length = np.sqrt(sum(n * n for n in normal)) + np.float32(1e-9)
        self.normal = [n[self.band] / length[self.band] for n in normal]
        self.usable = int(self.inner.sum()) >= 10 and int(self.outer.sum()) >= 10 and int(self.band.sum()) >= 10
        self.measured = self.sigma(self.array) if self.usable else float("nan")  # as acquired

    def sigma(self, image: np.ndarray) -> float:
        """The edge width (Gaussian sigma, mm) of the lesion in ``image`` (this crop, filtered or not)."""
        step = float(image[self.inner].mean() - image[self.outer].mean())
        gradient = np.gradient(image, *self.spacing)
        across = float(np.mean(sum(g[self.band] * n for g, n in zip(gradient, self.normal))))
        if step <= 0 or across <= 0:
            return float("nan")  # not a hot lesion on a colder background
        return step / (math.sqrt(2.0 * math.pi) * across)


class ResolutionMatching(PerGroupHarmonizer):
    """Match site groups' resolution to the reference's: smooth sharper groups (EARL-style), sharpen smoother ones.

    Parameters
    ----------
    fwhm_mm : float or None, default None
        Filter width (FWHM, mm) applied to every non-reference scan. ``None``:
        fit one width per site group from the data.
    mask : str or None, default None
        Where the texture statistic is measured. ``None``: the automatic
        homogeneous region of each scan (:func:`auto_region`; needs no mask
        but the body, which harmkit makes when the manifest has none). A name:
        that mask (manifest column ``mask_<name>``) of a homogeneous
        healthy-tissue VOI, e.g. ``"reference"`` (a liver sphere).
    statistic : {"smoothness", "correlation", "cov"}, default "smoothness"
        Texture statistic matched between site groups (see module docs).
    max_fwhm_mm : float, default 20.0
        Largest width tried when fitting.
    tolerance : float, default 0.05
        A site group at most this much (relative) smoother than the reference
        gets width 0 instead of an error.
    noise : {"match", "keep"}, default "match"
        ``"match"``: after smoothing, a group whose noise is then weaker than
        the reference's (smoothing lowers noise; the sharper site is often
        also the quieter one) gets Gaussian noise added, with the reference's
        noise texture and an amplitude (per square root of SUV) fitted so that
        the noise level in the texture region matches the reference's. The
        added noise is random but reproducible (``random_state`` and the
        subject id seed it). ``"keep"``: smoothing only (the EARL filter).
    random_state : int, default 0
        Seed of the added noise (``noise="match"``).
    smoother_groups : {"sharpen", "restore", "keep", "error"}, default "sharpen"
        A site group smoother than the reference (beyond ``tolerance``)
        cannot be matched by smoothing. ``"sharpen"``: undo a Gaussian by a
        regularised inverse filter, its width fitted until the texture
        statistic or, first, the noise level reaches the reference's
        (``sharpen_fwhm_mm_``, ``sharpen_limit_``); a group already at least
        as noisy as the reference is restored instead (below; with
        ``noise="keep"`` it is left unchanged, with a warning).
        ``"restore"``: every smoother group is denoised
        (:func:`edge_preserving_denoise`), a Gaussian is undone (width
        ``sharpen_fwhm_mm``, or fitted on the lesions' edges: the mask
        ``lesion`` of at least 3 scans per group with lesions of about 2 cm or
        more; otherwise on the noise textures, with a warning) and the
        reference's noise is added (needs ``noise="match"``).
        ``"keep"``: leave its scans unchanged (width 0, listed in
        ``unmatched_``, with a :class:`ResolutionMatchingWarning`).
        ``"error"``: refuse to fit.
    exclude : sequence of str, default ("lesion",)
        Automatic region only: masks left out of it when a scan has them.
    band : (float, float), default (0.75, 1.33)
        Automatic region only: the local mean must lie within ``low`` to
        ``high`` times the body's median uptake (``0 < low < 1 < high``).
    sharpen_gain : float, default 4.0
        Sharpening and restoring: the largest factor by which the inverse filter
        amplifies any spatial frequency (> 1). Higher undoes more of the blur
        and amplifies more noise.
    denoise_fwhm_mm : float, default 15.0
        Restoring only: the window (Gaussian FWHM, mm) of the denoiser.
    sharpen_fwhm_mm : float or None, default None
        Restoring only: the width (FWHM, mm) of the Gaussian undone; None fits
        it (see ``smoother_groups``).
    denoise_strength : float, default 1.0
        Restoring only: the multiple of the expected noise variance the
        denoiser removes (1: the local Wiener filter; higher removes more
        noise from healthy tissue and smooths low-contrast lesion texture).

    Fitted attributes: ``reference_site_``; ``fwhm_mm_`` ({site group: width
    in mm}, 0 for the reference); with fitted widths also
    ``site_statistics_`` ({site group: statistic before smoothing}),
    ``matched_statistics_`` ({site group: statistic after smoothing}) and
    ``unmatched_`` ({site group smoother than the reference, left unchanged:
    its statistic}). With ``smoother_groups`` "sharpen" or "restore" also
    ``sharpen_fwhm_mm_`` ({site group: width of the Gaussian undone, 0 for
    the others}) and ``sharpen_limit_`` ({sharpened site group: what stopped
    the sharpening, ``"statistic"`` or ``"noise"``}). With ``noise="match"``
    also ``noise_amplitude_`` ({site group: SD of the added noise per square
    root of SUV}),
    ``noise_fwhm_mm_`` (its correlation FWHM: the reference's smoothness),
    ``noise_levels_`` and ``matched_noise_levels_`` ({site group: noise SD per
    square root of SUV in the texture region after smoothing, before and after
    adding noise}). With ``smoother_groups`` "sharpen" or "restore" also
    ``denoise_amplitude_`` ({site group: the noise (per square root of SUV)
    the denoiser removed, 0 when not restored}) and ``restore_width_source_``
    ({restored site group: ``"given"``, ``"lesion edges"`` or ``"noise
    texture"``}). Always ``training_`` ({non-reference site group: one line
    saying what was fitted; ``harmkit train`` prints it}).

    Scans of the reference group come back unchanged.
    """

    name = "resmatch"
    description = (
        "Resolution matching: Gaussian post-filter of sharper sites (EARL-style), regularised deconvolution of "
        "smoother, quieter ones (denoised first when noisier), widths fitted in healthy tissue and on lesion edges, "
        "noise matched to the reference's level"
    )

    def __init__(
        self,
        fwhm_mm: float | None = None,
        mask: str | None = None,
        statistic: str = "smoothness",
        max_fwhm_mm: float = 20.0,
        tolerance: float = 0.05,
        smoother_groups: str = "sharpen",
        noise: str = "match",
        random_state: int = 0,
        exclude: Sequence[str] = DEFAULT_EXCLUDE,
        band: Sequence[float] = HOMOGENEOUS_BAND,
        sharpen_gain: float = 4.0,
        denoise_fwhm_mm: float = 15.0,
        sharpen_fwhm_mm: float | None = None,
        denoise_strength: float = 1.0,
    ):
        self.fwhm_mm = fwhm_mm
        self.mask = mask
        self.statistic = statistic
        self.max_fwhm_mm = max_fwhm_mm
        self.tolerance = tolerance
        self.smoother_groups = smoother_groups
        self.noise = noise
        self.random_state = random_state
        self.exclude = exclude
        self.band = band
        self.sharpen_gain = sharpen_gain
        self.denoise_fwhm_mm = denoise_fwhm_mm
        self.sharpen_fwhm_mm = sharpen_fwhm_mm
        self.denoise_strength = denoise_strength

    def _where(self) -> str:
        return "the automatic homogeneous region" if self.mask is None else f"mask {self.mask!r}"

    def _patch(self, scan) -> _Patch:
        """The crop of ``scan`` around its texture region (automatic, or the mask ``mask``)."""
        if self.mask is None:
            image, array, region, flat = auto_region(scan, tuple(self.exclude), tuple(self.band))
            patch = _Patch(scan.label, image, array, region, float(self.max_fwhm_mm), HIGHPASS_MM, *self._denoiser())
            patch.flat = flat
            return patch
        image, array, region = image_and_mask(scan, self.mask)
        if region.sum() < 20:
            raise HarmkitError(
                f"{scan.label}: mask {self.mask!r} has only {int(region.sum())} voxels; resmatch needs a VOI of at "
                "least 20 voxels"
            )
        return _Patch(scan.label, image, array, region, float(self.max_fwhm_mm), 0.0, *self._denoiser())

    def _denoiser(self) -> tuple[float, float]:
        """The denoiser's window (mm) and strength, for the texture-region crops."""
        return float(self.denoise_fwhm_mm), float(self.denoise_strength)

    def _check(self) -> None:
        if self.statistic not in STATISTICS:
            raise HarmkitError(
                f"resmatch: statistic={self.statistic!r} is not known; use one of {', '.join(STATISTICS)}"
            )
        if self.noise not in ("keep", "match"):
            raise HarmkitError(f"resmatch: noise={self.noise!r} is not known; use 'keep' or 'match'")
        if self.smoother_groups not in SMOOTHER_GROUPS:
            raise HarmkitError(
                f"resmatch: smoother_groups={self.smoother_groups!r} is not known; use one of "
                f"{', '.join(repr(m) for m in SMOOTHER_GROUPS)}"
            )
        if self.smoother_groups == "restore" and self.noise != "match":
            raise HarmkitError(
                "resmatch: smoother_groups='restore' removes a smoother group's noise and adds the reference's, "
                "so it needs noise='match'; use smoother_groups='sharpen' with noise='keep'"
            )
        if not (isinstance(self.denoise_strength, (int, float)) and float(self.denoise_strength) > 0):
            raise HarmkitError(
                "resmatch: denoise_strength must be a number > 0 (the multiple of the expected noise variance "
                f"removed), got {self.denoise_strength!r}"
            )
        if self.sharpen_fwhm_mm is not None and not (
            isinstance(self.sharpen_fwhm_mm, (int, float)) and float(self.sharpen_fwhm_mm) > 0
        ):
            raise HarmkitError(
                f"resmatch: sharpen_fwhm_mm must be a width in mm > 0 (the Gaussian undone in smoother groups), or "
                f"None to fit it; got {self.sharpen_fwhm_mm!r}"
            )
        if not (isinstance(self.denoise_fwhm_mm, (int, float)) and float(self.denoise_fwhm_mm) > 0):
            raise HarmkitError(
                f"resmatch: denoise_fwhm_mm must be a window width in mm > 0, got {self.denoise_fwhm_mm!r}"
            )
        if not (isinstance(self.sharpen_gain, (int, float)) and float(self.sharpen_gain) > 1.0):
            raise HarmkitError(
                f"resmatch: sharpen_gain must be a number > 1 (the largest amplification of any frequency), "
                f"got {self.sharpen_gain!r}"
            )
        if self.mask is not None:
            for name, default in (("exclude", DEFAULT_EXCLUDE), ("band", HOMOGENEOUS_BAND)):
                value = getattr(self, name)
                if (tuple(value) if isinstance(value, (list, tuple)) else value) != default:
                    raise HarmkitError(
                        f"resmatch: {name} applies to the automatic region (mask=None) only; drop it, or drop mask"
                    )
            return
        check_band(self.band, "resmatch")
        if isinstance(self.exclude, str) or not all(isinstance(n, str) for n in self.exclude):
            raise HarmkitError(f"resmatch: exclude must be a list of mask names, e.g. ['lesion']; got {self.exclude!r}")

    def fit(self, cohort, reference_site: str) -> "ResolutionMatching":
        """Choose the Gaussian width of every site group of ``cohort`` (given, or fitted to the reference)."""
        self._check()
        reference_site, _ = reference_scans(cohort, reference_site, "resmatch")
        groups = [g for g in cohort.site_groups if g != reference_site]
        if self.fwhm_mm is not None:
            if not (float(self.fwhm_mm) >= 0):
                raise HarmkitError(f"resmatch: fwhm_mm must be a width in mm >= 0, got {self.fwhm_mm!r}")
            self.reference_site_ = reference_site
            self.fwhm_mm_ = {
                reference_site: 0.0,
                **{g: float(self.fwhm_mm) for g in groups},
            }
            if self.noise == "match":
                self._fit_noise(
                    self._patches(cohort, reference_site, groups), reference_site, groups, self.fwhm_mm_, {}, {}
                )
            amplitudes = getattr(self, "noise_amplitude_", {})
            self.training_ = {
                g: f"smoothed by the given {float(self.fwhm_mm):.3g} mm Gaussian"
                + (f"; noise added, {amplitudes[g]:.3g} per sqrt(SUV)" if amplitudes.get(g, 0.0) >= 0.01 else "")
                for g in groups
            }
            return self

        name = self.statistic
        increasing = name != "cov"  # smoothing raises every statistic except COV
        patches = self._patches(cohort, reference_site, groups)

        def stats(group: str, fwhm: float) -> np.ndarray:
            values = np.asarray([p.statistic(name, fwhm, self.sharpen_gain) for p in patches[group]])
            values = values[np.isfinite(values)]
            if not len(values):
                raise HarmkitError(
                    f"resmatch: statistic {name!r} is undefined in every VOI of site group {group!r} (constant VOI?)"
                )
            return values

        def mean_stat(group: str, fwhm: float) -> float:
            return float(np.mean(stats(group, fwhm)))

        def standard_error(values: np.ndarray) -> float:
            return float(np.std(values, ddof=1) / np.sqrt(len(values))) if len(values) > 1 else 0.0

        rough = sorted({p.label for ps in patches.values() for p in ps if not p.flat})
        if rough:
            warnings.warn(
                f"resmatch: no flat homogeneous tissue in {len(rough)} scan(s) (e.g. {rough[0]}): their texture was "
                "measured in healthy tissue that is not flat, where anatomy adds to the noise texture; the fitted "
                "width is less reliable (a mask_reference VOI and mask='reference' avoid this)",
                ResolutionMatchingWarning,
                stacklevel=2,
            )
        small = sorted({p.label for ps in patches.values() for p in ps if p.mask.sum() < SMALL_VOI_VOXELS})
        if small:
            warnings.warn(
                f"resmatch: {self._where()} has fewer than {SMALL_VOI_VOXELS} voxels in {len(small)} scan(s) "
                f"(e.g. {small[0]}); the texture statistic of such a small VOI is noisy and the fitted width "
                "unreliable",
                ResolutionMatchingWarning,
                stacklevel=2,
            )
        reference_values = stats(reference_site, 0.0)
        target = float(np.mean(reference_values))
        site_stats = {reference_site: target}
        matched = {reference_site: target}
        widths = {reference_site: 0.0}
        unmatched: dict[str, float] = {}
        limits: dict[str, str] = {}
        denoised: dict[str, float] = {}
        sources: dict[str, str] = {}  # restored groups: where the width came from
        edges: dict[str, list[_LesionEdge]] = {}  # lesion edges read for restoring, by site group
        for group in groups:
            group_values = stats(group, 0.0)
            start = float(np.mean(group_values))
            site_stats[group] = start
            noise = math.hypot(standard_error(reference_values), standard_error(group_values))
            if noise > 0 and abs(target - start) < 2 * noise:
                warnings.warn(
                    f"resmatch: the {name} of site group {group!r} ({start:.4g}) and of the reference "
                    f"{reference_site!r} ({target:.4g}) differ by less than twice their standard error; "
                    f"the fitted width for {group!r} is unreliable (more scans or a larger VOI help)",
                    ResolutionMatchingWarning,
                    stacklevel=2,
                )
            gap = (target - start) if increasing else (start - target)
            if gap <= 0:
                if abs(gap) <= self.tolerance * abs(target):
                    widths[group], matched[group] = 0.0, start
                    continue
                if self.smoother_groups in ("sharpen", "restore"):
                    width = (
                        None
                        if self.smoother_groups == "restore"
                        else self._sharpening_width(group, reference_site, patches, target, increasing, limits)
                    )
                    if width is None:  # remove its noise, undo the blur, add the reference's noise
                        denoised[group] = float(np.nanmean([p.noise_level(0.0) for p in patches[group]]))
                        widths[group] = -self._restoring_width(
                            cohort, reference_site, group, patches, start, increasing, denoised[group], sources, edges
                        )
                        matched[group] = start  # replaced by the statistic after the added noise (_fit_noise)
                        continue
                    if width > 0:
                        widths[group] = -width
                        matched[group] = mean_stat(group, -width)
                        continue
                    widths[group], matched[group] = 0.0, start
                    unmatched[group] = start
                    continue
                message = (
                    f"resmatch: the reference site group {reference_site!r} is sharper than site group {group!r} "
                    f"({name} {target:.4g} vs {start:.4g} in {self._where()}); smoothing cannot sharpen, so "
                    f"{group!r} cannot be matched to {reference_site!r}"
                )
                if self.smoother_groups == "error":
                    raise HarmkitError(f"{message}. Use the smoothest site group as the reference")
                warnings.warn(
                    f"{message}: its scans are left unchanged. Use the smoothest site group as the reference, or "
                    "smoother_groups='sharpen'",
                    ResolutionMatchingWarning,
                    stacklevel=2,
                )
                widths[group], matched[group] = 0.0, start
                unmatched[group] = start
                continue

            def residual(w: float, group: str = group) -> float:
                value = mean_stat(group, w)
                return (value - target) if increasing else (target - value)

            hi = float(self.max_fwhm_mm)
            if residual(hi) < 0:
                raise HarmkitError(
                    f"resmatch: site group {group!r} still looks sharper than {reference_site!r} after a {hi:g} mm "
                    f"Gaussian; raise max_fwhm_mm or check {self._where()}"
                )
            from scipy.optimize import brentq

            width = float(brentq(residual, 0.0, hi, xtol=0.01, rtol=1e-4))
            widths[group] = width
            matched[group] = mean_stat(group, width)
        self.reference_site_ = reference_site
        self.fwhm_mm_ = {g: max(w, 0.0) for g, w in widths.items()}
        if self.smoother_groups in ("sharpen", "restore"):
            self.sharpen_fwhm_mm_ = {g: (-w if w < 0 else 0.0) for g, w in widths.items()}
            self.sharpen_limit_ = limits
            self.denoise_amplitude_ = {g: denoised.get(g, 0.0) for g in widths}
            self.restore_width_source_ = sources
        self.site_statistics_ = site_stats
        self.matched_statistics_ = matched
        self.unmatched_ = unmatched
        if self.noise == "match":
            self._fit_noise(patches, reference_site, groups, widths, unmatched, denoised)
        self.training_ = self._summary(groups, widths, limits)
        return self

    def _summary(self, groups: list, widths: dict, limits: dict) -> dict[str, str]:
        """One line per site group saying what was fitted (``harmkit train`` prints it)."""
        name = self.statistic
        target = self.site_statistics_[self.reference_site_]
        amplitudes = getattr(self, "noise_amplitude_", {})
        lines = {}
        for group in groups:
            width = widths[group]
            before, after = self.site_statistics_[group], self.matched_statistics_[group]
            change = f"{name} {before:.3g} -> {after:.3g}, reference {target:.3g}"
            if group in self.unmatched_:
                reason = (
                    "smoother and already as noisy as the reference"
                    if limits.get(group) == "noise"
                    else "smoother than the reference"
                )
                lines[group] = f"unchanged: {reason} ({name} {before:.3g}, reference {target:.3g})"
            elif group in getattr(self, "restore_width_source_", {}):
                lines[group] = (
                    f"restored: its noise removed ({self.denoise_amplitude_[group]:.3g} per sqrt(SUV)), a {-width:.3g} "
                    f"mm Gaussian undone ({WIDTH_SOURCES[self.restore_width_source_[group]]}), the reference's noise "
                    f"added ({change})"
                )
            elif width < 0:
                stop = "the reference's noise level" if limits[group] == "noise" else f"the reference's {name}"
                lines[group] = f"sharpened: a {-width:.3g} mm Gaussian undone, stopped at {stop} ({change})"
            elif width > 0:
                lines[group] = f"smoothed by a {width:.3g} mm Gaussian ({change})"
            else:
                lines[group] = f"unchanged: within tolerance of the reference ({change})"
            if amplitudes.get(group, 0.0) >= 0.01:
                lines[group] += f"; noise added, {amplitudes[group]:.3g} per sqrt(SUV)"
        return lines

    def _sharpening_width(
        self, group: str, reference_site: str, patches: dict, target: float, increasing: bool, limits: dict
    ) -> float | None:
        """The width of the Gaussian to undo in ``group`` (None: restore it instead; 0: leave it unchanged).

        Sharpening is stopped at the first of: the texture statistic reaching
        the reference's, and the noise level in the texture region reaching
        the reference's (an inverse filter amplifies noise, and sharpening
        beyond that point would trade a resolution difference for a noise
        difference). A group already at least as noisy as the reference is
        restored instead (denoised first, see ``smoother_groups``), or, with ``noise="keep"``, left unchanged
        with a warning. ``limits[group]`` records which of the two stopped it.
        """
        gain = self.sharpen_gain
        hi = float(self.max_fwhm_mm)

        def noise(w: float) -> float:
            return float(np.nanmean([p.noise_level(-w, max_gain=gain) for p in patches[group]]))

        def texture_gap(w: float) -> float:
            values = [p.statistic(self.statistic, -w, gain) for p in patches[group]]
            value = float(np.nanmean(values))
            return (value - target) if increasing else (target - value)

        noise_target = float(np.nanmean([p.noise_level(0.0) for p in patches[reference_site]]))
        noise_now = noise(0.0)
        if not noise_now < noise_target:
            if self.noise == "match":
                return None
            warnings.warn(
                f"resmatch: site group {group!r} is smoother than the reference {reference_site!r} and already at "
                f"least as noisy ({noise_now:.3g} vs {noise_target:.3g} per sqrt(SUV) in {self._where()}); "
                "sharpening would make its noise differ more, and restoring it (denoising first) needs "
                "noise='match', so its scans are left unchanged",
                ResolutionMatchingWarning,
                stacklevel=3,
            )
            limits[group] = "noise"
            return 0.0
        candidates = {}
        width = _first_root(lambda w: noise_target - noise(w), hi)
        if width is not None:
            candidates["noise"] = width
        # the texture is searched only up to where the noise stops the sharpening anyway
        width = _first_root(texture_gap, candidates.get("noise", hi))
        if width is not None:
            candidates["statistic"] = width
        if not candidates:
            raise HarmkitError(
                f"resmatch: site group {group!r} still looks smoother and quieter than {reference_site!r} after "
                f"undoing a {hi:g} mm Gaussian; raise max_fwhm_mm or sharpen_gain, or check {self._where()}"
            )
        limit = min(candidates, key=candidates.__getitem__)
        limits[group] = limit
        return candidates[limit]

    def _patches(self, cohort, reference_site: str, groups: list) -> dict[str, list[_Patch]]:
        """Every scan's texture-region crop, by site group."""
        patches: dict[str, list[_Patch]] = {}
        all_scans = [s for s in cohort if s.group in (reference_site, *groups)]
        for scan in progress(all_scans, "resmatch: reading texture regions", min_total=8):
            patches.setdefault(scan.group, []).append(self._patch(scan))
        return patches

    def _fit_noise(
        self, patches: dict, reference_site: str, groups: list, widths: dict, unmatched: dict, denoised: dict
    ) -> None:
        """The amplitude of noise each group needs after filtering to reach the reference's noise level.

        A restored group's ``matched_statistics_`` entry becomes its statistic after the added noise.
        """
        from scipy.optimize import brentq

        def noise(amplitude: float, i: int) -> dict:
            return dict(amplitude=amplitude, noise_fwhm_mm=noise_fwhm, seed=(NOISE_SALT, int(self.random_state), i))

        def level(group: str, amplitude: float) -> float:
            denoise = denoised.get(group, 0.0)
            values = [
                p.noise_level(widths[group], max_gain=self.sharpen_gain, denoise=denoise, **noise(amplitude, i))
                for i, p in enumerate(patches[group])
            ]
            return float(np.nanmean(values))

        noise_fwhm = float(np.nanmean([p.statistic("smoothness", 0.0) for p in patches[reference_site]]))
        target = float(np.nanmean([p.noise_level(0.0) for p in patches[reference_site]]))
        before, after, amplitudes = {reference_site: target}, {reference_site: target}, {reference_site: 0.0}
        for group in groups:
            start = level(group, 0.0)
            before[group] = after[group] = start
            amplitudes[group] = 0.0
            if group in unmatched or not start < target:
                continue
            hi = 2.0 * target
            while level(group, hi) < target and hi < 100 * target:
                hi *= 2.0
            amplitudes[group] = float(brentq(lambda a, g=group: level(g, a) - target, 0.0, hi, xtol=1e-4))
            after[group] = level(group, amplitudes[group])
            if group in denoised:
                self.matched_statistics_[group] = float(
                    np.nanmean(
                        [
                            p.statistic(
                                self.statistic,
                                widths[group],
                                self.sharpen_gain,
                                denoised[group],
                                **noise(amplitudes[group], i),
                            )
                            for i, p in enumerate(patches[group])
                        ]
                    )
                )
        self.noise_fwhm_mm_ = noise_fwhm
        self.noise_amplitude_ = amplitudes
        self.noise_levels_ = before
        self.matched_noise_levels_ = after

    def _restoring_width(
        self,
        cohort,
        reference_site: str,
        group: str,
        patches: dict,
        start: float,
        increasing: bool,
        denoise: float,
        sources: dict,
        read: dict,
    ) -> float:
        """The width of the Gaussian a restored group has undone (given, or fitted on its lesions' edges).

        Fitted: the width whose restoration (denoising, then the regularised inverse) makes the group's
        lesion edges as sharp as the reference's (:class:`_LesionEdge`), so it accounts for what the
        denoiser and the gain do to an edge. Without at least :data:`MIN_EDGE_LESIONS` measurable lesions in
        each group it falls back on the blur between the groups' noise textures, with a warning.
        ``sources[group]`` says which: ``"given"``, ``"lesion edges"`` or ``"noise texture"``. ``read``: the
        lesion edges read so far in this fit, by site group.
        """
        if self.sharpen_fwhm_mm is not None:
            sources[group] = "given"
            return float(self.sharpen_fwhm_mm)
        edges = {site: self._lesion_edges(cohort, site, read) for site in (reference_site, group)}
        counts = {site: len(found) for site, found in edges.items()}
        if min(counts.values()) < MIN_EDGE_LESIONS:
            warnings.warn(
                f"resmatch: too few lesions with a measurable edge (mask 'lesion' of at least about 2 cm: "
                f"{counts[reference_site]} in {reference_site!r}, {counts[group]} in {group!r}, "
                f"{MIN_EDGE_LESIONS} needed in each) to fit the width restoring {group!r}; it is fitted from the "
                "noise textures instead, which is wrong when a reconstruction changes noise and resolution "
                "differently (resolution modelling). Give sharpen_fwhm_mm if you know the resolution difference",
                ResolutionMatchingWarning,
                stacklevel=3,
            )
            sources[group] = "noise texture"
            return self._blur_between(reference_site, group, patches, start, increasing)
        target = float(np.nanmean([e.measured for e in edges[reference_site]]))
        gain, window, strength = float(self.sharpen_gain), float(self.denoise_fwhm_mm), float(self.denoise_strength)

        def sharper_than_target(w: float) -> float:
            restored = [
                e.sigma(restoration_filter(e.array, e.spacing, -w, gain, window, denoise, strength))
                for e in edges[group]
            ]
            return float(np.nanmean(restored)) - target

        sources[group] = "lesion edges"
        if sharper_than_target(0.0) <= 0:
            return 0.0  # its lesions are already as sharp: only the noise is replaced
        width = _first_root(sharper_than_target, float(self.max_fwhm_mm))
        if width is None:
            raise HarmkitError(
                f"resmatch: the lesions of site group {group!r} are still less sharp than {reference_site!r}'s "
                f"after undoing a {self.max_fwhm_mm:g} mm Gaussian; raise max_fwhm_mm or sharpen_gain, or give "
                "sharpen_fwhm_mm"
            )
        return width

    def _lesion_edges(self, cohort, site_group: str, read: dict) -> list[_LesionEdge]:
        """The measurable lesion edges of a site group's scans (those with a 'lesion' mask big enough).

        ``read`` keeps them for the fit, so the reference's scans are read once however many groups are restored.
        """
        if site_group not in read:
            found = []
            scans = [s for s in cohort if s.group == site_group and "lesion" in s.masks]
            for scan in progress(scans, f"resmatch: reading {site_group} lesion edges", min_total=8):
                image, array, lesion = image_and_mask(scan, "lesion")
                edge = _LesionEdge(scan.label, image, array, lesion, self._edge_margin_mm())
                if np.isfinite(edge.measured):
                    found.append(edge)
            read[site_group] = found
        return read[site_group]

    def _edge_margin_mm(self) -> float:
        """How far beyond a lesion's rings the restoration filter reads (denoising window, inverse filter)."""
        return 4.0 * (float(self.denoise_fwhm_mm) + float(self.max_fwhm_mm)) / FWHM_PER_SIGMA

    def _blur_between(self, reference_site: str, group: str, patches: dict, value: float, increasing: bool) -> float:
        """The Gaussian width (mm) that makes the reference group's texture statistic equal to ``value``.

        This is the resolution difference a restored group has undone: its own noise is removed first, so
        its statistic no longer says how sharp it is.
        """
        from scipy.optimize import brentq

        def gap(w: float) -> float:
            mean = float(np.nanmean([p.statistic(self.statistic, w) for p in patches[reference_site]]))
            return (value - mean) if increasing else (mean - value)

        hi = float(self.max_fwhm_mm)
        if gap(hi) > 0:
            raise HarmkitError(
                f"resmatch: the reference {reference_site!r} still looks sharper than site group {group!r} after a "
                f"{hi:g} mm Gaussian; raise max_fwhm_mm or check {self._where()}"
            )
        return float(brentq(gap, 0.0, hi, xtol=0.01, rtol=1e-4))

    def width_for(self, group: str) -> float:
        """The fitted Gaussian FWHM (mm) for ``group``."""
        self.check_fitted()
        if group in self.fwhm_mm_:
            return float(self.fwhm_mm_[group])
        if self.fwhm_mm is not None:
            return float(self.fwhm_mm)
        fitted = ", ".join(repr(g) for g in self.fwhm_mm_)
        raise HarmkitError(
            f"resmatch: site group {group!r} was not in the cohort at fit (fitted: {fitted}); refit with its scans, "
            f"or give fwhm_mm"
        )

    def transform(self, scan, target_site: str | None = None):
        """Return ``scan`` smoothed (or sharpened) by its site group's Gaussian (same grid, SUV mean kept)."""
        self.check_fitted()
        if target_site is not None and str(target_site) != self.reference_site_:
            raise TargetNotSupported(
                f"resmatch was fitted towards {self.reference_site_!r}, not {target_site!r}; fit it with that reference"
            )
        if scan.group == self.reference_site_:
            return scan.with_image(scan.load_image())
        # > 0: smoothing, < 0: undoing a Gaussian (sharpened or restored groups)
        width = self.width_for(scan.group) - float(getattr(self, "sharpen_fwhm_mm_", {}).get(scan.group, 0.0))
        amplitude = float(getattr(self, "noise_amplitude_", {}).get(scan.group, 0.0))
        image = scan.load_image()
        denoise = float(getattr(self, "denoise_amplitude_", {}).get(scan.group, 0.0))
        if width == 0 and amplitude <= 0 and denoise <= 0:
            return scan.with_image(image)
        spacing = tuple(reversed(image.GetSpacing()))
        out = restoration_filter(
            sitk.GetArrayViewFromImage(image),
            spacing,
            width,
            float(self.sharpen_gain),
            float(self.denoise_fwhm_mm),
            denoise,
            float(self.denoise_strength),
        )
        if amplitude > 0:
            seed = (NOISE_SALT, int(self.random_state), zlib.crc32(str(scan.subject_id).encode()))
            out = add_noise(out, spacing, amplitude, float(self.noise_fwhm_mm_), np.random.default_rng(seed))
        return scan.with_image(rebuild(out, image))
