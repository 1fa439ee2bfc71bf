"""Resolution matching: an EARL-style Gaussian post-filter.

PET centres align the recovery of different scanners by smoothing the sharper
reconstruction with a Gaussian until it matches the smoother one (the EARL
accreditation approach). :class:`ResolutionMatching` does this for every site
group that is sharper than the reference group. The filter width is either
given (``fwhm_mm``) or fitted: the width whose smoothing makes the site
group's *noise texture* in the reference-tissue VOI match the reference
group's.

The default texture statistic, ``"smoothness"``, is the noise FWHM in mm
estimated from the correlation of neighbouring voxels inside the VOI: for a
Gaussian-correlated field the correlation at one voxel step ``d`` is
``rho = exp(-4 ln2 d^2 / FWHM^2)``, so ``FWHM = d sqrt(4 ln2 / -ln rho)``,
averaged over the three axes. Being in millimetres it compares sites with
different voxel sizes. ``"correlation"`` (the mean neighbouring-voxel
correlation itself) and ``"cov"`` (coefficient of variation in the VOI) are
alternatives; COV also depends on the injected dose and scan time.

The width is found by bisection, smoothing crops of the actual scans around
the VOI, so discretisation and anisotropic voxels are accounted for.
Smoothing can only blur: when the reference is the sharper group, fitting
refuses.
"""

from __future__ import annotations

import math
import warnings

import numpy as np

from harmkit.errors import HarmkitError, TargetNotSupported
from harmkit.interfaces import ImageHarmonizer
from harmkit.toolkit import progress

from ._scans import image_and_mask, rebuild, reference_scans

FWHM_PER_SIGMA = 2.0 * math.sqrt(2.0 * math.log(2.0))
STATISTICS = ("smoothness", "correlation", "cov")
SMALL_VOI_VOXELS = 200  # below this the texture statistic of one VOI is too noisy to trust


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


class _Patch:
    """A crop of one scan around its VOI, wide enough for the largest kernel tried."""

    def __init__(self, scan, mask_name: str, max_fwhm_mm: float):
        image, array, mask = image_and_mask(scan, mask_name)
        self.spacing = tuple(reversed(image.GetSpacing()))  # (z, y, x) like the array
        margin = [int(math.ceil(4.0 * max_fwhm_mm / FWHM_PER_SIGMA / s)) + 1 for s in self.spacing]
        where = np.nonzero(mask)
        box = tuple(
            slice(max(0, int(w.min()) - m), min(n, int(w.max()) + 1 + m)) for w, m, n in zip(where, margin, mask.shape)
        )
        self.array = np.ascontiguousarray(array[box])
        self.mask = np.ascontiguousarray(mask[box])
        self.label = scan.label
        if self.mask.sum() < 20:
            raise HarmkitError(
                f"{scan.label}: mask {mask_name!r} has only {int(self.mask.sum())} voxels; resmatch needs a VOI of at "
                "least 20 voxels"
            )

    def statistic(self, name: str, fwhm_mm: float) -> float:
        return texture_statistic(
            name,
            gaussian_smooth(self.array, self.spacing, fwhm_mm),
            self.mask,
            self.spacing,
        )


class ResolutionMatching(ImageHarmonizer):
    """Smooth sharper site groups with a Gaussian so they match the reference group (EARL-style).

    Parameters
    ----------
    fwhm_mm : float or None, default None
        Filter width (FWHM, mm) applied to every non-reference scan. ``None``:
        fit one width per site group from the data.
    mask : str, default "reference"
        Mask (manifest column ``mask_<name>``) of a homogeneous healthy-tissue
        VOI (e.g. a liver sphere) where the texture statistic is measured.
    statistic : {"smoothness", "correlation", "cov"}, default "smoothness"
        Texture statistic matched between site groups (see module docs).
    max_fwhm_mm : float, default 20.0
        Largest width tried when fitting.
    tolerance : float, default 0.05
        A site group at most this much (relative) smoother than the reference
        gets width 0 instead of an error.

    Fitted attributes: ``reference_site_``; ``fwhm_mm_`` ({site group: width
    in mm}, 0 for the reference); with fitted widths also
    ``site_statistics_`` ({site group: statistic before smoothing}) and
    ``matched_statistics_`` ({site group: statistic after smoothing}).

    Scans of the reference group come back unchanged.
    """

    name = "resmatch"
    description = "Resolution matching: Gaussian post-filter of sharper sites, width given or fitted (EARL-style)"

    def __init__(
        self,
        fwhm_mm: float | None = None,
        mask: str = "reference",
        statistic: str = "smoothness",
        max_fwhm_mm: float = 20.0,
        tolerance: float = 0.05,
    ):
        self.fwhm_mm = fwhm_mm
        self.mask = mask
        self.statistic = statistic
        self.max_fwhm_mm = max_fwhm_mm
        self.tolerance = tolerance

    def fit(self, cohort, reference_site: str) -> "ResolutionMatching":
        """Choose the Gaussian width of every site group of ``cohort`` (given, or fitted to the reference)."""
        if self.statistic not in STATISTICS:
            raise HarmkitError(
                f"resmatch: statistic={self.statistic!r} is not known; use one of {', '.join(STATISTICS)}"
            )
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
            return self

        name = self.statistic
        increasing = name != "cov"  # smoothing raises every statistic except COV
        patches: dict[str, list[_Patch]] = {}
        all_scans = [s for s in cohort if s.group in (reference_site, *groups)]
        for scan in progress(all_scans, "resmatch: reading VOIs", min_total=8):
            patches.setdefault(scan.group, []).append(_Patch(scan, self.mask, float(self.max_fwhm_mm)))

        def stats(group: str, fwhm: float) -> np.ndarray:
            values = np.asarray([p.statistic(name, fwhm) for p in patches[group]])
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

        small = sorted({p.label for ps in patches.values() for p in ps if p.mask.sum() < SMALL_VOI_VOXELS})
        if small:
            warnings.warn(
                f"resmatch: mask {self.mask!r} has fewer than {SMALL_VOI_VOXELS} voxels in {len(small)} scan(s) "
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
                raise HarmkitError(
                    f"resmatch: the reference site group {reference_site!r} is sharper than site group {group!r} "
                    f"({name} {target:.4g} vs {start:.4g} in mask {self.mask!r}); smoothing cannot sharpen, so "
                    f"{group!r} cannot be matched to {reference_site!r}. Use the smoothest site group as the reference"
                )

            def residual(w: float, group: str = group) -> float:
                value = mean_stat(group, w)
                return (value - target) if increasing else (target - value)

            hi = float(self.max_fwhm_mm)
            if residual(hi) < 0:
                raise HarmkitError(
                    f"resmatch: site group {group!r} still looks sharper than {reference_site!r} after a {hi:g} mm "
                    f"Gaussian; raise max_fwhm_mm or check mask {self.mask!r}"
                )
            from scipy.optimize import brentq

            width = float(brentq(residual, 0.0, hi, xtol=0.01, rtol=1e-4))
            widths[group] = width
            matched[group] = mean_stat(group, width)
        self.reference_site_ = reference_site
        self.fwhm_mm_ = widths
        self.site_statistics_ = site_stats
        self.matched_statistics_ = matched
        return self

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
        """Return ``scan`` smoothed by its site group's Gaussian (same grid, SUV mean kept)."""
        self.check_fitted()
        if target_site is not None and str(target_site) != self.reference_site_:
            raise TargetNotSupported(
                f"resmatch was fitted towards {self.reference_site_!r}, not {target_site!r}; fit it with that reference"
            )
        if scan.group == self.reference_site_:
            return scan.with_image(scan.load_image())
        width = self.width_for(scan.group)
        image = scan.load_image()
        if width <= 0:
            return scan.with_image(image)
        import SimpleITK as sitk

        array = sitk.GetArrayViewFromImage(image)
        smoothed = gaussian_smooth(array, tuple(reversed(image.GetSpacing())), width)
        return scan.with_image(rebuild(smoothed, image))
