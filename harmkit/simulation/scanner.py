"""Scanner models: how a site turns the true SUV map into its reconstructed image.

For a subject, a site and one of the site's acquisition grids, :func:`render` applies in order:

1. **System resolution.** The truth is blurred on the fine grid with the site's Gaussian PSF,
   widened per axis by the site voxel's box response (variance ``(d_site^2 - d_fine^2) / 12``),
   so a reconstructed voxel is the PSF-blurred activity averaged over the voxel.
2. **Voxel grid.** The blurred truth is sampled at the site grid's voxel centres (linear,
   separable; outside the truth is air).
3. **Reconstruction noise.** White Gaussian noise on the site grid is smoothed to the site's
   noise correlation length (its texture) and scaled voxel-wise by ``sqrt(activity)``, so its
   variance grows linearly with activity, as for Poisson data reconstructed by OSEM.
4. **Post-filter.** A Gaussian post-reconstruction filter smooths signal and noise together.
5. **Calibration.** The image is multiplied by ``1 + calibration_bias``; negative values are set
   to 0 (OSEM images are non-negative).

The noise amplitude is set so that ``noise_cov_at_suv1`` is the voxel COV of the final image where
the noise-free value is SUV 1 (before the per-scan noise scale and calibration). With ``rng=None``
no noise is added and the rendering is a deterministic function of truth, site and grid.
"""

from __future__ import annotations

import math

import numpy as np

from .grid import (
    Grid,
    gaussian_blur,
    gaussian_kernel,
    resample_linear,
    resample_nearest,
)
from .presets import FWHM_PER_SIGMA, GridProtocol, Preset, ScannerModel

NOISE_FLOOR_SUV = 0.01  # activity below which noise stops shrinking (air, randoms/scatter floor)


def site_grid(protocol: GridProtocol, preset: Preset, size: str) -> Grid:
    """The grid of ``protocol``: the paper's matrix at ``full``; at ``quick`` the same voxel size
    with the matrix cropped to the preset's field of view. Axially both cover ``fov_mm[2]``."""
    vx, vy, vz = protocol.voxel_mm
    nz = int(math.ceil(preset.fov_mm[2] / vz - 1e-6))
    if size == "full":
        nx, ny = protocol.matrix
    else:
        nx = int(math.ceil(preset.fov_mm[0] / vx - 1e-6))
        ny = int(math.ceil(preset.fov_mm[1] / vy - 1e-6))
    return Grid.centered((nx, ny, nz), protocol.voxel_mm)


def resolution_sigma_mm(scanner: ScannerModel, fine: Grid, grid: Grid) -> tuple[float, float, float]:
    """Per-axis standard deviation (mm) of the blur applied on the fine grid: PSF plus voxel box."""
    psf = scanner.psf_fwhm_mm / FWHM_PER_SIGMA
    sx, sy, sz = (
        math.sqrt(psf * psf + max(d_site * d_site - d_fine * d_fine, 0.0) / 12.0)
        for d_site, d_fine in zip(grid.spacing, fine.spacing)
    )
    return sx, sy, sz


def blur_truth(truth: np.ndarray, fine: Grid, grid: Grid, scanner: ScannerModel) -> np.ndarray:
    """Step 1: the truth blurred by the site's PSF and voxel response, still on the fine grid."""
    sigma_mm = resolution_sigma_mm(scanner, fine, grid)
    return gaussian_blur(truth, [s / d for s, d in zip(sigma_mm, fine.spacing)], mode="nearest")


def _sigmas(fwhm_mm: float, grid: Grid):
    return [fwhm_mm / FWHM_PER_SIGMA / d for d in grid.spacing]


def noise_amplitude(scanner: ScannerModel, grid: Grid) -> float:
    """Scale of the unit-variance correlated noise such that the post-filtered noise has
    standard deviation ``noise_cov_at_suv1`` at SUV 1 (exact for stationary noise)."""
    ratio = 1.0
    for s_corr, s_post in zip(
        _sigmas(scanner.noise_corr_fwhm_mm, grid),
        _sigmas(scanner.postfilter_fwhm_mm, grid),
    ):
        k_corr = gaussian_kernel(s_corr)
        k_both = np.convolve(k_corr, gaussian_kernel(s_post))
        ratio *= float((k_both**2).sum() / (k_corr**2).sum())
    return scanner.noise_cov_at_suv1 / math.sqrt(ratio)


def correlated_noise(grid: Grid, scanner: ScannerModel, rng: np.random.Generator) -> np.ndarray:
    """Unit-variance Gaussian noise on ``grid`` with the site's correlation length (its texture)."""
    white = rng.standard_normal(grid.shape, dtype=np.float32)
    sigmas = _sigmas(scanner.noise_corr_fwhm_mm, grid)
    variance = float(np.prod([(gaussian_kernel(s) ** 2).sum() for s in sigmas]))
    return gaussian_blur(white, sigmas, mode="wrap") / np.float32(math.sqrt(variance))


def render(
    blurred: np.ndarray,
    fine: Grid,
    grid: Grid,
    scanner: ScannerModel,
    rng: np.random.Generator | None = None,
    noise_scale: float = 1.0,
) -> np.ndarray:
    """Steps 2-5: the site's image (float32 SUV on ``grid``) from the output of :func:`blur_truth`.

    ``rng=None`` renders without noise; ``noise_scale`` multiplies the noise SD of this scan.
    """
    mean = resample_linear(blurred, fine, grid)
    image = mean
    if rng is not None:
        amplitude = np.float32(noise_amplitude(scanner, grid) * noise_scale)
        noise = correlated_noise(grid, scanner, rng)
        noise *= np.sqrt(np.maximum(mean, np.float32(NOISE_FLOOR_SUV)))
        noise *= amplitude
        image = mean + noise
    image = gaussian_blur(image, _sigmas(scanner.postfilter_fwhm_mm, grid), mode="nearest")
    image *= np.float32(1.0 + scanner.calibration_bias)
    np.maximum(image, 0, out=image)
    return image


def resample_mask(mask: np.ndarray, fine: Grid, grid: Grid) -> np.ndarray:
    """A fine-grid mask on ``grid``: voxels at least half covered (linear partial-volume estimate).

    A non-empty mask never becomes empty: if no voxel reaches one half, the most covered voxel is kept.
    """
    fraction = resample_linear(mask.astype(np.float32), fine, grid)
    out = fraction >= 0.5
    if mask.any() and not out.any():
        out = fraction >= fraction.max() - 1e-6
    return out.astype(np.uint8)


def resample_labels(labels: np.ndarray, fine: Grid, grid: Grid) -> np.ndarray:
    """The truth label map on ``grid`` (nearest neighbour; air outside the truth)."""
    return resample_nearest(labels, fine, grid, outside=0)


def sphere_mask(grid: Grid, center, radius: float) -> np.ndarray:
    """Voxels of ``grid`` whose centre lies within ``radius`` mm of ``center``."""
    X, Y, Z = grid.mesh()
    inside = (X - center[0]) ** 2 + (Y - center[1]) ** 2 + (Z - center[2]) ** 2 <= radius * radius
    return inside.astype(np.uint8)


def point_response_fwhm(
    scanner: ScannerModel, voxel_mm, fine_mm: float, half_width_mm: float = 40.0
) -> tuple[float, float, float]:
    """Effective resolution measured from an image: FWHM (mm, x/y/z) of a rendered point source.

    A point source (one fine voxel at the field centre) is rendered through the site's model
    without noise; the FWHM of each axis is ``2.355 x`` the standard deviation of the image's
    line-spread profile along that axis (second moment), as for a Gaussian response. The result
    includes the PSF, the voxel size and the post-filter, i.e. what an observer of the images sees.
    """
    n_fine = 2 * int(math.ceil(half_width_mm / fine_mm)) + 1
    fine = Grid.centered((n_fine,) * 3, (fine_mm,) * 3)
    truth = np.zeros(fine.shape, dtype=np.float32)
    truth[n_fine // 2, n_fine // 2, n_fine // 2] = 1.0
    size = [2 * int(math.ceil(half_width_mm / v)) + 1 for v in voxel_mm]
    grid = Grid.centered(size, voxel_mm)
    image = render(blur_truth(truth, fine, grid, scanner), fine, grid, scanner, rng=None).astype(np.float64)
    fwhm = []
    for axis in range(3):
        profile = image.sum(axis=tuple(a for a in range(3) if a != 2 - axis))
        x = grid.coords(axis).astype(np.float64)
        weight = profile / profile.sum()
        mean = (weight * x).sum()
        fwhm.append(float(FWHM_PER_SIGMA * math.sqrt((weight * (x - mean) ** 2).sum())))
    return fwhm[0], fwhm[1], fwhm[2]
