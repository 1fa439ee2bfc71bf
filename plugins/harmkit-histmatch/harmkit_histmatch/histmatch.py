"""Histogram matching to a reference site group (Nyúl-style landmarks).

Fit: every reference scan's intensity distribution inside its body mask is
summarised by 1001 quantiles; the pooled distribution of the reference group
is their voxel-count weighted mixture, and its quantiles at the landmark
percentiles are the *reference landmarks*.

Transform: a scan's own quantiles at the same percentiles (inside its body
mask) are mapped onto the reference landmarks by a monotone piecewise-linear
function, extended beyond the first and last landmark with the slope of the
end segments (Nyúl & Udupa 1999; Nyúl, Udupa & Zhang 2000). Values stay in
SUV. Voxels outside the body mask are left unchanged by default
(``outside="keep"``): they are air and table, whose values the landmarks say
nothing about; ``outside="map"`` applies the same function everywhere.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from harmkit.errors import HarmkitError, TargetNotSupported
from harmkit.interfaces import ImageHarmonizer
from harmkit.toolkit import progress

from ._scans import image_and_mask, rebuild, reference_scans

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


class HistogramMatching(ImageHarmonizer):
    """Map each scan's intensity quantiles inside the body onto the reference group's.

    Parameters
    ----------
    mask : str, default "body"
        Name of the mask (manifest column ``mask_<name>``) whose voxels define
        the intensity distribution, in reference and source scans alike.
    landmarks : sequence of float, default (1, 5, 10, 20, ..., 90, 95, 99, 99.5)
        Percentiles (0-100, strictly increasing) used as matching landmarks.
    outside : {"keep", "map"}, default "keep"
        What happens to voxels outside ``mask``: left unchanged, or mapped by
        the same function as the voxels inside.

    Fitted attributes: ``reference_site_``, ``landmarks_`` (percentiles),
    ``reference_landmarks_`` (pooled reference quantiles, SUV),
    ``n_reference_scans_``, ``n_reference_voxels_``.

    Scans of the reference group come back unchanged.
    """

    name = "histmatch"
    description = "Histogram matching to the reference site group's pooled body-mask quantiles (Nyul landmarks)"

    def __init__(
        self,
        mask: str = "body",
        landmarks: Sequence[float] = DEFAULT_LANDMARKS,
        outside: str = "keep",
    ):
        self.mask = mask
        self.landmarks = landmarks
        self.outside = outside

    def _levels(self) -> np.ndarray:
        p = np.asarray(self.landmarks, dtype=float)
        if p.ndim != 1 or len(p) < 2 or np.any(np.diff(p) <= 0) or p[0] < 0 or p[-1] > 100:
            raise HarmkitError(
                "histmatch: landmarks must be at least two strictly increasing percentiles in [0, 100], got "
                f"{list(self.landmarks)}"
            )
        if self.outside not in ("keep", "map"):
            raise HarmkitError(f"histmatch: outside={self.outside!r} is not known; use 'keep' or 'map'")
        return p / 100.0

    def fit(self, cohort, reference_site: str) -> "HistogramMatching":
        """Learn the pooled intensity quantiles inside ``mask`` of the site group ``reference_site`` names (a site
        or a site group; see :func:`harmkit.toolkit.resolve_site_group`)."""
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

    def transform(self, scan, target_site: str | None = None):
        """Return ``scan`` with its intensities mapped onto the reference landmarks (same grid)."""
        self.check_fitted()
        if target_site is not None and str(target_site) != self.reference_site_:
            raise TargetNotSupported(
                f"histmatch was fitted towards {self.reference_site_!r}, not {target_site!r}; fit it with that "
                "reference"
            )
        if scan.group == self.reference_site_:
            return scan.with_image(scan.load_image())
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
