"""Histogram matching to a reference site group that keeps what PET values mean.

Two modes:

* ``mode="scale"`` (default): **healthy-tissue scaling.** Every scan's
  *healthy level* is the interquartile mean SUV (the mean of the middle
  half of the values) of its healthy background tissue
  (:func:`harmkit_histmatch.tissue.healthy_tissue`: the body without the
  lesion mask, without hot organs and without air or the body's rim, chosen
  on a locally averaged copy of the image). A site group's level is the
  median of its scans' levels; every scan of a group is multiplied by
  ``reference level / group level``. One factor per site group: the map is
  monotone, passes through 0 and keeps every SUV ratio (lesion to liver,
  lesion to background), and a patient's own uptake relative to other
  patients of the site is kept. It corrects a site's calibration (or any
  site-wide SUV scale); it does not change resolution or noise.
* ``mode="nyul"``: the Nyul & Udupa landmark matching of earlier harmkit
  versions: a scan's own quantiles inside the body mask at the landmark
  percentiles are mapped onto the reference group's pooled quantiles by a
  monotone piecewise-linear function (Nyul & Udupa 1999; Nyul, Udupa & Zhang
  2000). Whole-body percentiles depend on each patient's tumour burden and
  the upper landmarks on the lesion itself, so this mode changes what an SUV
  means; it is kept for comparison.

Why one factor per site group and the middle of healthy tissue (measured on
the simulated head-and-neck preset; ``docs/methods/histmatch.md``): the healthy
level of a subject varies by 10-13 % between subjects of one site but by only
3 % between the same subject's scans at two sites, so a per-scan factor would
erase biology four times larger than the site effect it corrects; the plain
mean of healthy tissue moves with the noise level (negative values clipped to
0 in noisy scans) twice as much as the middle of the distribution does; the
median of images stored in steps (1/256 SUV in the simulator, an int16 slope
in DICOM) moves in those steps, the interquartile mean does not; and a
multi-landmark fit turns a difference in noise spread into an intensity
change.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

from harmkit.errors import HarmkitError, TargetNotSupported
from harmkit.toolkit import progress

from ._scans import PerGroupHarmonizer, image_and_mask, mask_array, rebuild, reference_scans
from .tissue import DEFAULT_BAND, DEFAULT_SMOOTHING_MM, check_band, healthy_tissue

# Percentile grid that summarises each reference scan (0.1 % steps). Written as
# k / 1000 so that every landmark percentile p (given in %) maps onto exactly
# the same float as p / 100.
_GRID = np.arange(1001) / 1000.0
DEFAULT_LANDMARKS = (
    1.0,
    5.0,
    10.0,
    20.0,
    30.0,
    40.0,
    50.0,
    60.0,
    70.0,
    80.0,
    90.0,
    95.0,
    99.0,
    99.5,
)
MODES = ("scale", "nyul")
DEFAULT_EXCLUDE = ("lesion",)
DEFAULT_SIGNIFICANCE = 2.0
MIN_HEALTHY_VOXELS = 500  # fewer healthy voxels than this and the healthy level is not trusted


def scale_z(reference_levels: Sequence[float], group_levels: Sequence[float]) -> float | None:
    """How many standard errors the log ratio of two groups' median levels lies from 0 (``None``: unknown).

    The standard error of each group's median is ``1.2533 * SD / sqrt(n)`` of
    its scans' log levels (the normal approximation); with fewer than two
    scans in a group, or no spread at all, it is unknown.
    """
    ref = np.log(np.asarray(reference_levels, dtype=float))
    grp = np.log(np.asarray(group_levels, dtype=float))
    if len(ref) < 2 or len(grp) < 2:
        return None
    se = 1.2533 * math.hypot(ref.std(ddof=1) / math.sqrt(len(ref)), grp.std(ddof=1) / math.sqrt(len(grp)))
    return abs(float(np.median(ref) - np.median(grp))) / se if se > 0 else None


def _shown(z: float | None, significance: float) -> bool:
    """Whether a factor with ``z`` standard errors from 1 is applied: always when ``z`` is unknown."""
    return z is None or z > significance


def healthy_level(
    scan,
    mask: str = "body",
    exclude: Sequence[str] = DEFAULT_EXCLUDE,
    band: Sequence[float] = DEFAULT_BAND,
    smoothing_mm: float = DEFAULT_SMOOTHING_MM,
) -> tuple[float, int]:
    """The interquartile mean SUV of ``scan``'s healthy background tissue, and the number of its voxels.

    The interquartile mean is the mean of the values between the 25th and the
    75th percentile: as robust as the median, but not stuck to the steps in
    which an image is stored.

    Healthy tissue is :func:`harmkit_histmatch.tissue.healthy_tissue` of the
    scan's ``mask`` (``"body"``: the scan's body mask, or harmkit's rule,
    :func:`harmkit.voi.body_mask`, when it has none), without the masks named
    in ``exclude`` that the scan has. The level is scale-equivariant: an image
    multiplied by ``c`` has ``c`` times the level (the same voxels are chosen).
    """
    image, array, body = image_and_mask(scan, mask)
    excluded = np.zeros_like(body)
    for name in exclude:
        if name in scan.masks:
            excluded |= mask_array(scan, name, image)
    spacing = tuple(reversed(image.GetSpacing()))
    healthy = healthy_tissue(array, body, spacing, excluded, check_band(band, "histmatch"), float(smoothing_mm))
    count = int(healthy.sum())
    if count < MIN_HEALTHY_VOXELS:
        raise HarmkitError(
            f"{scan.label}: only {count} voxel(s) of healthy tissue (mask {mask!r} minus {list(exclude)}, local mean "
            f"within {list(band)} times the body's median); histmatch needs {MIN_HEALTHY_VOXELS}. Check the body "
            "mask, or widen band"
        )
    values = array[healthy]
    low, high = np.percentile(values, [25.0, 75.0])
    level = float(values[(values >= low) & (values <= high)].mean(dtype=np.float64))
    if not level > 0:
        raise HarmkitError(f"{scan.label}: the mean SUV of its healthy tissue is {level:g}; is the image in SUV?")
    return level, count


class HistogramMatching(PerGroupHarmonizer):
    """Match each site group's SUV scale to the reference group's, in healthy tissue (or Nyul landmarks).

    Parameters
    ----------
    mode : {"scale", "nyul"}, default "scale"
        ``"scale"``: one multiplicative factor per site group, the ratio of
        the reference group's healthy-tissue level to the group's (see the
        module docs). ``"nyul"``: per-scan piecewise-linear matching of body
        quantiles to the reference group's pooled quantiles.
    mask : str, default "body"
        Mask (manifest column ``mask_<name>``) that bounds the tissue looked at.
        ``"body"`` falls back on harmkit's body-mask rule
        (:func:`harmkit.voi.body_mask`) for a scan without ``mask_body``.
    exclude : sequence of str, default ("lesion",)
        Scale mode: masks left out of the healthy tissue when a scan has them
        (lesions, or hot organs you have masks for). A scan without them is
        fine: hot structures are left out by ``band`` anyway.
    band : (float, float), default (0.5, 2.0)
        Scale mode: healthy tissue is where the local mean SUV lies within
        ``low`` to ``high`` times the median local mean of the body
        (``0 < low < 1 < high``).
    smoothing_mm : float, default 10.0
        Scale mode: FWHM (mm) of the Gaussian local mean that decides which
        voxels are healthy tissue (> 0).
    significance : float, default 2.0
        Scale mode: a site group's factor is applied only when its log
        differs from 0 by more than this many standard errors (from the
        spread of the scans' healthy levels, which is mostly biology: about
        15 % between subjects); otherwise the group keeps factor 1. ``0``
        applies every measured factor. With fewer than two scans in the group
        or the reference the error is unknown and the factor is applied.
    landmarks : sequence of float or None, default None
        Nyul mode: percentiles (0-100, strictly increasing) used as landmarks;
        ``None``: (1, 5, 10, 20, ..., 90, 95, 99, 99.5). An error in scale mode.
    outside : {"keep", "map"} or None, default None
        Nyul mode: voxels outside ``mask`` unchanged (``"keep"``, the default
        when ``None``) or mapped by the same function. An error in scale mode,
        which multiplies the whole image (a factor maps 0 to 0: no seam).

    Fitted attributes, scale mode: ``reference_site_``, ``site_levels_``
    ({site group: median over its scans of their healthy levels, SUV}),
    ``measured_scales_`` ({site group: reference level / group level}),
    ``scale_z_`` ({site group: standard errors of that factor's log from 0,
    ``None`` when unknown}),
    ``scales_`` ({site group: factor applied}, 1 for the reference and for
    factors within ``significance``), ``n_scans_`` ({site group: scans}),
    ``training_`` ({other site group: one line saying what was fitted; ``harmkit
    train`` prints it}). Nyul
    mode: ``reference_site_``, ``landmarks_`` (percentiles),
    ``reference_landmarks_`` (pooled reference quantiles, SUV),
    ``n_reference_scans_``, ``n_reference_voxels_``.

    Scans of the reference group come back unchanged.
    """

    name = "histmatch"
    description = (
        "Histogram matching that keeps SUV ratios: one factor per site group from healthy-tissue levels (or Nyul "
        "landmarks, mode=nyul)"
    )

    def __init__(
        self,
        mode: str = "scale",
        mask: str = "body",
        exclude: Sequence[str] = DEFAULT_EXCLUDE,
        band: Sequence[float] = DEFAULT_BAND,
        smoothing_mm: float = DEFAULT_SMOOTHING_MM,
        significance: float = DEFAULT_SIGNIFICANCE,
        landmarks: Sequence[float] | None = None,
        outside: str | None = None,
    ):
        self.mode = mode
        self.mask = mask
        self.exclude = exclude
        self.band = band
        self.smoothing_mm = smoothing_mm
        self.significance = significance
        self.landmarks = landmarks
        self.outside = outside

    def _check(self) -> None:
        if self.mode not in MODES:
            raise HarmkitError(f"histmatch: mode={self.mode!r} is not known; use one of {', '.join(MODES)}")
        if self.mode == "scale":
            for name in ("landmarks", "outside"):
                if getattr(self, name) is not None:
                    raise HarmkitError(f"histmatch: {name} applies to mode='nyul' only; drop it, or set mode='nyul'")
            check_band(self.band, "histmatch")
            if isinstance(self.exclude, str) or not all(isinstance(n, str) for n in self.exclude):
                raise HarmkitError(
                    f"histmatch: exclude must be a list of mask names, e.g. ['lesion']; got {self.exclude!r}"
                )
            if not (float(self.significance) >= 0):
                raise HarmkitError(f"histmatch: significance must be a number >= 0, got {self.significance!r}")
            if not (float(self.smoothing_mm) > 0):
                raise HarmkitError(f"histmatch: smoothing_mm must be a width in mm > 0, got {self.smoothing_mm!r}")
            return
        for name, default in (
            ("exclude", DEFAULT_EXCLUDE),
            ("band", DEFAULT_BAND),
            ("smoothing_mm", DEFAULT_SMOOTHING_MM),
            ("significance", DEFAULT_SIGNIFICANCE),
        ):
            value = getattr(self, name)
            if (tuple(value) if isinstance(value, (list, tuple)) else value) != default:
                raise HarmkitError(f"histmatch: {name} applies to mode='scale' only; drop it, or set mode='scale'")
        if self.outside not in (None, "keep", "map"):
            raise HarmkitError(f"histmatch: outside={self.outside!r} is not known; use 'keep' or 'map'")

    def _levels(self) -> np.ndarray:
        p = np.asarray(DEFAULT_LANDMARKS if self.landmarks is None else self.landmarks, dtype=float)
        if p.ndim != 1 or len(p) < 2 or np.any(np.diff(p) <= 0) or p[0] < 0 or p[-1] > 100:
            raise HarmkitError(
                "histmatch: landmarks must be at least two strictly increasing percentiles in [0, 100], got "
                f"{list(self.landmarks or ())}"
            )
        return p / 100.0

    def fit(self, cohort, reference_site: str) -> "HistogramMatching":
        """Learn the factor of every site group (scale mode) or the reference group's pooled quantiles (nyul).

        ``reference_site`` is a site or a site group (see
        :func:`harmkit.toolkit.resolve_site_group`). Scale mode reads every
        scan of the cohort once; nyul mode only the reference group's.
        """
        self._check()
        if self.mode == "nyul":
            return self._fit_nyul(cohort, reference_site)
        reference, _ = reference_scans(cohort, reference_site, "histmatch")
        levels: dict[str, list[float]] = {}
        for scan in progress(list(cohort), "histmatch: healthy-tissue levels", min_total=8):
            level, _ = healthy_level(scan, self.mask, tuple(self.exclude), tuple(self.band), float(self.smoothing_mm))
            levels.setdefault(scan.group, []).append(level)
        site_levels = {group: float(np.median(values)) for group, values in levels.items()}
        measured = {group: site_levels[reference] / level for group, level in site_levels.items()}
        measured[reference] = 1.0
        z: dict[str, float | None] = {group: scale_z(levels[reference], levels[group]) for group in levels}
        z[reference] = 0.0
        self.reference_site_ = reference
        self.site_levels_ = site_levels
        self.measured_scales_ = measured
        self.scale_z_ = z
        self.scales_ = {
            group: factor if _shown(z[group], float(self.significance)) else 1.0 for group, factor in measured.items()
        }
        self.n_scans_ = {group: len(values) for group, values in levels.items()}
        # one line per site group: what harmkit train prints
        self.training_ = {}
        for group, factor in measured.items():
            if group == reference:
                continue
            sure = "z unknown: too few scans" if z[group] is None else f"z = {z[group]:.2g}"
            self.training_[group] = (
                f"x{factor:.4g} (healthy level {site_levels[group]:.3g} vs {site_levels[reference]:.3g}, {sure})"
                if self.scales_[group] != 1.0
                else f"unchanged: measured x{factor:.4g} not shown beyond the patients' spread ({sure})"
            )
        return self

    def _fit_nyul(self, cohort, reference_site: str) -> "HistogramMatching":
        levels = self._levels()
        reference, scans = reference_scans(cohort, reference_site, "histmatch")
        quantiles, counts = [], []
        for scan in progress(scans, f"histmatch: reference {reference}", min_total=8):
            _, array, mask = image_and_mask(scan, self.mask)
            voxels = array[mask]
            quantiles.append(quantiles_of(voxels, _GRID))
            counts.append(voxels.size)
        self.reference_site_ = reference
        self.landmarks_ = (levels * 100.0).tolist()
        self.reference_landmarks_ = pooled_quantiles(np.asarray(quantiles), np.asarray(counts, dtype=float), levels)
        self.n_reference_scans_ = len(scans)
        self.n_reference_voxels_ = int(np.sum(counts))
        return self

    def scale_for(self, group: str) -> float:
        """Scale mode: the factor fitted for site group ``group``."""
        self.check_fitted()
        if group in self.scales_:
            return float(self.scales_[group])
        fitted = ", ".join(repr(g) for g in self.scales_)
        raise HarmkitError(
            f"histmatch: site group {group!r} was not in the cohort at fit (fitted: {fitted}); refit with its scans"
        )

    def transform(self, scan, target_site: str | None = None):
        """Return ``scan`` on the reference group's SUV scale (same grid, float32)."""
        self.check_fitted()
        if target_site is not None and str(target_site) != self.reference_site_:
            raise TargetNotSupported(
                f"histmatch was fitted towards {self.reference_site_!r}, not {target_site!r}; fit it with that "
                "reference"
            )
        if scan.group == self.reference_site_:
            return scan.with_image(scan.load_image())
        if self.mode == "scale":
            import SimpleITK as sitk

            factor = self.scale_for(scan.group)
            image = scan.load_image()
            array = sitk.GetArrayViewFromImage(image).astype(np.float32) * np.float32(factor)
            return scan.with_image(rebuild(array, image))
        image, array, mask = image_and_mask(scan, self.mask)
        levels = np.asarray(self.landmarks_, dtype=float) / 100.0
        source = quantiles_of(array[mask], levels)
        target = np.asarray(self.reference_landmarks_, dtype=float)
        out = array.copy()
        if self.outside == "map":
            out = piecewise_linear(array, source, target).astype(np.float32)
        else:
            out[mask] = piecewise_linear(array[mask], source, target)
        return scan.with_image(rebuild(out, image))


def quantiles_of(values: np.ndarray, levels: np.ndarray) -> np.ndarray:
    """Quantiles of ``values`` at ``levels`` (0-1), linear interpolation between order statistics.

    One code path for fit and transform, so a scan matched to itself maps exactly onto itself.
    """
    ordered = np.sort(np.asarray(values).ravel())  # in the input's precision (float32 images sort faster)
    position = np.asarray(levels, dtype=np.float64) * (ordered.size - 1)
    lower = np.floor(position).astype(np.int64)
    upper = np.minimum(lower + 1, ordered.size - 1)
    fraction = position - lower
    low = ordered[lower].astype(np.float64)
    return low + (ordered[upper].astype(np.float64) - low) * fraction


def pooled_quantiles(quantiles: np.ndarray, counts: np.ndarray, levels: np.ndarray) -> np.ndarray:
    """Quantiles at ``levels`` of the mixture of several distributions given by their quantile grids.

    Row ``i`` of ``quantiles`` holds distribution ``i``'s quantiles at
    :data:`_GRID`; ``counts`` weights the mixture (voxel numbers, so the result
    is the quantile of all reference voxels pooled).
    """
    weights = counts / counts.sum()
    if len(quantiles) == 1:
        return np.interp(levels, _GRID, quantiles[0])
    values = np.unique(quantiles.ravel())
    cdf = np.zeros_like(values)
    for w, q in zip(weights, quantiles):
        cdf += w * np.interp(values, q, _GRID, left=0.0, right=1.0)
    return np.interp(levels, cdf, values)


def piecewise_linear(x: np.ndarray, source: np.ndarray, target: np.ndarray) -> np.ndarray:
    """Monotone piecewise-linear map taking ``source`` landmarks to ``target``, linear beyond the ends.

    Tied source landmarks (a flat stretch of the histogram) are merged, their
    targets averaged, so the map stays a function and stays monotone.
    """
    source = np.asarray(source, dtype=float)
    target = np.asarray(target, dtype=float)
    uniq, inverse = np.unique(source, return_inverse=True)
    if len(uniq) < len(source):
        target = np.bincount(inverse, weights=target) / np.bincount(inverse)
        source = uniq
    x64 = np.asarray(x, dtype=np.float64)
    if len(source) == 1:  # a constant image: shift it
        return (x64 + (target[0] - source[0])).astype(np.float32)
    y = np.interp(x64, source, target)
    lo_slope = (target[1] - target[0]) / (source[1] - source[0])
    hi_slope = (target[-1] - target[-2]) / (source[-1] - source[-2])
    below = x64 < source[0]
    above = x64 > source[-1]
    y[below] = target[0] + (x64[below] - source[0]) * lo_slope
    y[above] = target[-1] + (x64[above] - source[-1]) * hi_slope
    return y.astype(np.float32)
