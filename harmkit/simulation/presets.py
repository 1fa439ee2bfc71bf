"""Presets: the sites, scanner models, acquisition grids and cohort sizes of a simulated study.

Two presets mirror the two cohorts of Haberl et al. (2024), Table 1:

* ``headneck`` -- CHUM, HGJ, HMR (head-and-neck field of view, distant-metastasis outcome);
  CHUM and HMR share the GE Discovery STE and its protocol, so their ``site_group`` is ``CHUM-HMR``.
* ``lung`` -- TUB (Siemens Biograph mCT) and BUD (GE Discovery IQ) with BUD's two
  reconstructions as separate sites ``BUD-VPHD`` and ``BUD-SharpIR`` (``site_group`` ``BUD``).

Scan counts, matrices and voxel sizes are those of Table 1. The paper does not report
iterations, subsets or PSF modelling for most sites, so the scanner-model parameters below
(PSF, post-filter, noise level and texture, calibration bias) are plausible values for the
named systems and reconstructions, chosen to reproduce the paper's measurable site
differences (the liver-VOI COV medians of Fig. 6) and, for head and neck, site differences at
least as large as those measured between real FDG-PET protocols (HGJ's reference-VOI COV at
least 1.76x CHUM-HMR's; ``docs/real-data.md``). ``docs/simulator.md`` lists them and their sources.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

from ..errors import HarmkitError

FWHM_PER_SIGMA = 2.3548200450309493  # 2 * sqrt(2 * ln 2)


@dataclass(frozen=True)
class ScannerModel:
    """What a site's scanner and reconstruction do to the true activity distribution.

    * ``psf_fwhm_mm`` -- system + reconstruction resolution (Gaussian PSF applied to the truth).
    * ``postfilter_fwhm_mm`` -- Gaussian post-reconstruction filter, applied on the site's grid to
      signal and noise alike.
    * ``noise_corr_fwhm_mm`` -- correlation length (FWHM) of reconstruction noise before the
      post-filter: the noise *texture* (iterative reconstruction and PSF modelling make it blobbier).
    * ``noise_cov_at_suv1`` -- voxel coefficient of variation of the final image where the
      noise-free value is SUV 1; the noise standard deviation grows as ``sqrt(activity)`` (Poisson-like),
      so the COV at SUV ``m`` is ``noise_cov_at_suv1 / sqrt(m)``.
    * ``noise_scale_sd`` -- spread (log-normal SD) of the per-scan noise level (dose, weight, uptake time).
    * ``calibration_bias`` -- relative SUV calibration error of the site (0.02 = reads 2 % high).
    """

    scanner: str
    reconstruction: str
    psf_fwhm_mm: float
    postfilter_fwhm_mm: float
    noise_corr_fwhm_mm: float
    noise_cov_at_suv1: float
    noise_scale_sd: float
    calibration_bias: float


@dataclass(frozen=True)
class GridProtocol:
    """One acquisition grid of a site: transaxial matrix, voxel size (x, y, z) in mm, number of scans (Table 1)."""

    matrix: tuple[int, int]
    voxel_mm: tuple[float, float, float]
    count: int

    @property
    def label(self) -> str:
        return f"{self.matrix[0]}x{self.matrix[1]} {'x'.join(f'{v:g}' for v in self.voxel_mm)}mm"


@dataclass(frozen=True)
class SiteSpec:
    """A site: its scanner model, its grid mix, its cohort (counts, outcome, demographics)."""

    name: str
    site_group: str
    scanner: ScannerModel
    protocols: tuple[GridProtocol, ...]
    outcome_count: float  # expected positive outcomes at full size (paper's DM count)
    age_mean: float
    age_sd: float
    female_fraction: float

    @property
    def n_subjects(self) -> int:
        return sum(p.count for p in self.protocols)

    @property
    def prevalence(self) -> float:
        return self.outcome_count / self.n_subjects


@dataclass(frozen=True)
class Preset:
    """A simulated study: anatomy, sites, field of view, fine (truth) grid and outcome model."""

    name: str
    anatomy: str  # "headneck" or "lung"
    description: str
    sites: tuple[SiteSpec, ...]
    fov_mm: tuple[float, float, float]  # site field of view (x, y, z) at size "quick"; z also at "full"
    body_extent_mm: tuple[float, float]  # transaxial extent (x, y) of the largest body; the truth covers it at "full"
    fine_mm: dict  # {"quick": mm, "full": mm}: isotropic spacing of the true SUV map
    outcome_name: str
    outcome_coef: dict  # logistic coefficients of the standardized latent biology

    def site(self, name: str) -> SiteSpec:
        for site in self.sites:
            if site.name == name:
                return site
        raise HarmkitError(
            f"preset {self.name!r} has no site {name!r} (sites: {', '.join(s.name for s in self.sites)})"
        )

    def to_dict(self) -> dict:
        data = asdict(self)
        for site, spec in zip(data["sites"], self.sites):
            site["n_subjects_full"] = spec.n_subjects
            site["prevalence"] = spec.prevalence
        return data


# --- head and neck (CHUM, HGJ, HMR) -------------------------------------------------------------
DISCOVERY_STE = ScannerModel(
    scanner="GE Discovery STE",
    reconstruction="OSEM (iterations/subsets not reported), Gaussian post-filter",
    psf_fwhm_mm=5.5,
    postfilter_fwhm_mm=5.0,
    noise_corr_fwhm_mm=5.0,
    noise_cov_at_suv1=0.20,
    noise_scale_sd=0.15,
    calibration_bias=0.0,
)
DISCOVERY_ST = ScannerModel(
    scanner="GE Discovery ST",
    reconstruction="OSEM (iterations/subsets not reported), Gaussian post-filter",
    psf_fwhm_mm=6.8,
    postfilter_fwhm_mm=7.0,
    noise_corr_fwhm_mm=7.0,
    noise_cov_at_suv1=0.45,
    noise_scale_sd=0.15,
    calibration_bias=-0.03,
)

HEADNECK = Preset(
    name="headneck",
    anatomy="headneck",
    description="Head-and-neck cancer cohort of three Quebec centres (Vallieres et al.; Haberl et al. 2024 Table 1)",
    sites=(
        SiteSpec(
            "CHUM",
            "CHUM-HMR",
            DISCOVERY_STE,
            (
                GridProtocol((144, 144), (4.0, 4.0, 4.0), 43),
                GridProtocol((128, 128), (3.52, 3.52, 3.27), 17),
                GridProtocol((128, 128), (5.47, 5.47, 3.27), 5),
            ),
            outcome_count=3,
            age_mean=63,
            age_sd=9,
            female_fraction=16 / 65,
        ),
        SiteSpec(
            "HGJ",
            "HGJ",
            DISCOVERY_ST,
            (
                GridProtocol((128, 128), (3.52, 3.52, 3.27), 90),
                GridProtocol((128, 128), (4.69, 4.69, 3.27), 1),
            ),
            outcome_count=16,
            age_mean=61,
            age_sd=11,
            female_fraction=17 / 91,
        ),
        SiteSpec(
            "HMR",
            "CHUM-HMR",
            DISCOVERY_STE,
            (
                GridProtocol((128, 128), (3.52, 3.52, 3.27), 30),
                GridProtocol((128, 128), (5.47, 5.47, 3.27), 11),
            ),
            outcome_count=11,
            age_mean=67,
            age_sd=9,
            female_fraction=10 / 41,
        ),
    ),
    fov_mm=(240.0, 240.0, 200.0),
    body_extent_mm=(420.0, 260.0),
    fine_mm={"quick": 2.5, "full": 2.0},
    outcome_name="distant metastasis",
    outcome_coef={
        "z_heterogeneity": 1.0,
        "z_volume": 0.7,
        "z_uptake": 0.4,
        "z_necrosis": 0.3,
    },
)

# --- lung (TUB, BUD with two reconstructions) ----------------------------------------------------
LUNG = Preset(
    name="lung",
    anatomy="lung",
    description="Dual-centre NSCLC cohort, Tuebingen and Budapest (Haberl et al. 2024 Table 1)",
    sites=(
        SiteSpec(
            "TUB",
            "TUB",
            ScannerModel(
                scanner="Siemens Biograph mCT",
                reconstruction="OSEM 2 iterations 21 subsets, 2 mm Gaussian post-filter",
                psf_fwhm_mm=5.0,
                postfilter_fwhm_mm=2.0,
                noise_corr_fwhm_mm=4.0,
                noise_cov_at_suv1=0.19,
                noise_scale_sd=0.20,
                calibration_bias=0.0,
            ),
            (GridProtocol((400, 400), (2.04, 2.04, 3.0), 168),),
            outcome_count=42,
            age_mean=66,
            age_sd=9,
            female_fraction=65 / 168,
        ),
        SiteSpec(
            "BUD-VPHD",
            "BUD",
            ScannerModel(
                scanner="GE Discovery IQ",
                reconstruction="VUE Point HD (OSEM, no PSF modelling), Gaussian post-filter",
                psf_fwhm_mm=6.0,
                postfilter_fwhm_mm=5.0,
                noise_corr_fwhm_mm=6.0,
                noise_cov_at_suv1=0.138,
                noise_scale_sd=0.08,
                calibration_bias=0.02,
            ),
            (GridProtocol((168, 168), (4.07, 4.07, 3.0), 53),),
            outcome_count=13,
            age_mean=63,
            age_sd=8,
            female_fraction=62 / 97,
        ),
        SiteSpec(
            "BUD-SharpIR",
            "BUD",
            ScannerModel(
                scanner="GE Discovery IQ",
                reconstruction="SharpIR (OSEM with PSF modelling), Gaussian post-filter",
                psf_fwhm_mm=4.5,
                postfilter_fwhm_mm=5.0,
                noise_corr_fwhm_mm=8.0,
                noise_cov_at_suv1=0.143,
                noise_scale_sd=0.08,
                calibration_bias=0.02,
            ),
            (GridProtocol((256, 256), (2.73, 2.73, 3.26), 44),),
            outcome_count=11,
            age_mean=63,
            age_sd=8,
            female_fraction=62 / 97,
        ),
    ),
    fov_mm=(340.0, 240.0, 330.0),
    body_extent_mm=(380.0, 260.0),
    fine_mm={"quick": 3.0, "full": 2.0},
    outcome_name="synthetic event (no outcome in the paper's lung cohort)",
    outcome_coef={
        "z_heterogeneity": 1.0,
        "z_volume": 0.7,
        "z_uptake": 0.4,
        "z_necrosis": 0.3,
    },
)

PRESETS = {p.name: p for p in (HEADNECK, LUNG)}
SIZES = ("quick", "full")


def get_preset(name: str) -> Preset:
    """The preset called ``name`` (``headneck`` or ``lung``)."""
    try:
        return PRESETS[name]
    except KeyError:
        raise HarmkitError(f"unknown simulation preset {name!r}; choose one of: {', '.join(PRESETS)}") from None
