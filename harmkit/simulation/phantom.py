"""Anatomical phantoms: one subject's true SUV map, organ labels and lesion on a fine grid.

A subject is first *designed* (:func:`draw_design`): scalar parameters only -- latent lesion
biology, organ uptakes, body size, covariates. The design is cheap, so the main process draws
every subject's design (and outcome) before any image exists. :func:`build_phantom` then turns a
design into voxels: organs are ellipsoids and elliptic cylinders painted in anatomical order, the
lesion is a lobulated ellipsoid whose uptake is a log-normal, spatially correlated random field
with a necrotic core. The spatial random fields use their own random stream, so a design fully
determines the phantom given the subject's seed.

Coordinates (mm): x from the patient's right (-) to left (+), y anterior (-) to posterior (+),
z foot (-) to head (+); the field of view is centred on (0, 0, 0).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from scipy.special import ndtr

from .grid import Grid, gaussian_blur
from .presets import FWHM_PER_SIGMA, Preset, SiteSpec

LATENT = ("z_volume", "z_uptake", "z_heterogeneity", "z_necrosis")

# label codes of the truth label map, per anatomy
LABELS = {
    "headneck": {
        "air": 0,
        "soft_tissue": 1,
        "muscle": 2,
        "spine": 3,
        "airway": 4,
        "lungs": 5,
        "parotids": 6,
        "submandibular": 7,
        "tonsils": 8,
        "brain_grey": 9,
        "brain_white": 10,
        "lesion": 11,
    },
    "lung": {
        "air": 0,
        "soft_tissue": 1,
        "spine": 3,
        "blood": 4,
        "lungs": 5,
        "myocardium": 6,
        "heart_blood": 7,
        "liver": 8,
        "spleen": 9,
        "kidneys": 10,
        "lesion": 11,
    },
}

# organ uptake: (median SUV, coefficient of variation across subjects) -- typical 18F-FDG values at 60 min
UPTAKE = {
    "headneck": {
        "soft_tissue": (0.8, 0.12),
        "muscle": (0.7, 0.12),
        "spine": (1.6, 0.15),
        "airway": (0.05, 0.0),
        "lungs": (0.45, 0.15),
        "parotids": (1.9, 0.2),
        "submandibular": (1.8, 0.2),
        "tonsils": (3.0, 0.25),
        "brain_grey": (9.0, 0.2),
    },
    "lung": {
        "soft_tissue": (0.75, 0.12),
        "spine": (1.5, 0.15),
        "blood": (1.7, 0.12),
        "lungs": (0.45, 0.15),
        "myocardium": (3.5, 0.6),
        "liver": (2.2, 0.15),
        "spleen": (1.8, 0.15),
        "kidneys": (2.8, 0.25),
    },
}
WHITE_TO_GREY = 0.45
LIVER_TEXTURE = (
    0.03,
    12.0,
)  # relative SD and correlation FWHM (mm) of healthy liver texture
HN_REFERENCE = (
    (0.0, 54.0, -5.0),
    10.0,
)  # centre (template mm) and radius (mm): paraspinal neck muscle
LUNG_REFERENCE = (
    (-85.0, 5.0, -30.0),
    15.0,
)  # 3 cm sphere, upper right liver lobe (EANM)

# lesion biology: volume median (mL) and log-SD, SUV median and log-SD, volume clip (mL)
LESION = {
    "headneck": {"volume": (12.0, 0.8), "suv": (7.0, 0.3), "clip": (1.0, 80.0)},
    "lung": {"volume": (8.0, 0.9), "suv": (6.0, 0.35), "clip": (0.5, 60.0)},
}


@dataclass
class Phantom:
    """The truth of one subject on the fine grid."""

    grid: Grid
    suv: np.ndarray  # float32 true SUV
    labels: np.ndarray  # uint8 organ labels (see LABELS)
    lesion: np.ndarray  # bool lesion mask
    reference_center: tuple[float, float, float]
    reference_radius: float
    label_codes: dict = field(default_factory=dict)

    def mask(self, name: str) -> np.ndarray:
        """Boolean organ mask by name: ``body``, ``lesion``, ``liver``, ``lungs``, ``kidneys``, ``spleen``..."""
        if name == "body":
            return self.labels > 0
        if name == "lesion":
            return self.lesion
        return self.labels == self.label_codes[name]


def _lognormal(rng: np.random.Generator, median: float, cv: float) -> float:
    if cv <= 0:
        return float(median)
    return float(median * math.exp(math.sqrt(math.log(1 + cv * cv)) * rng.standard_normal()))


def draw_design(
    preset: Preset,
    site: SiteSpec,
    subject_id: str,
    rng: np.random.Generator,
    protocol_index: int,
) -> dict:
    """Draw one subject's scalar parameters: covariates, latent biology, lesion and organ parameters.

    ``protocol_index`` is the subject's grid at its own site; the grid it would get at every other
    site (for counterfactual renderings) is drawn here with the site's protocol frequencies.
    """
    anatomy = preset.anatomy
    z = {name: float(rng.standard_normal()) for name in LATENT}
    lesion = LESION[anatomy]
    volume = float(
        np.clip(
            lesion["volume"][0] * math.exp(lesion["volume"][1] * z["z_volume"]),
            *lesion["clip"],
        )
    )
    design: dict[str, Any] = {
        "subject_id": subject_id,
        "site": site.name,
        "site_group": site.site_group,
        "age": int(round(float(np.clip(site.age_mean + site.age_sd * rng.standard_normal(), 18, 95)))),
        "sex": "F" if rng.random() < site.female_fraction else "M",
        **z,
        "lesion_volume_nominal_ml": volume,
        "lesion_suv": float(lesion["suv"][0] * math.exp(lesion["suv"][1] * z["z_uptake"])),
        "heterogeneity": float(0.08 + 0.32 * ndtr(z["z_heterogeneity"])),
        "texture_corr_mm": float(rng.uniform(3.0, 6.0)),
        "necrotic_fraction": float(0.6 * ndtr(1.2 * z["z_necrosis"] + 0.6 * z["z_volume"] - 1.0)),
        "necrotic_suv_ratio": float(rng.uniform(0.15, 0.3)),
        "lesion_axes": [float(a) for a in np.exp(0.15 * rng.standard_normal(3))],
        "lobulation": float(rng.uniform(0.05, 0.15)),
        "body_scale": float(np.clip(1.0 + 0.05 * rng.standard_normal(), 0.88, 1.12)),
        "uptake": {name: _lognormal(rng, median, cv) for name, (median, cv) in UPTAKE[anatomy].items()},
    }
    if anatomy == "headneck":
        side = 1.0 if rng.random() < 0.5 else -1.0
        design["lesion_center_template"] = [
            side * rng.uniform(8, 22),
            rng.uniform(-25, -5),
            rng.uniform(-15, 12),
        ]
    else:
        side = 1.0 if rng.random() < 0.5 else -1.0
        lung_c, lung_r = (
            ((72.0, 5.0, 80.0), (56.0, 80.0, 108.0)) if side > 0 else ((-72.0, 5.0, 85.0), (60.0, 82.0, 112.0))
        )
        direction = rng.standard_normal(3)
        direction /= np.linalg.norm(direction)
        depth = 0.5 * rng.random() ** (1 / 3)
        design["lesion_center_template"] = [float(c + depth * d * r) for c, d, r in zip(lung_c, direction, lung_r)]
    design["lesion_side"] = "left" if side > 0 else "right"
    grids = {}
    for other in preset.sites:
        if other.name == site.name:
            grids[other.name] = int(protocol_index)
        else:
            weights = np.array([p.count for p in other.protocols], dtype=float)
            grids[other.name] = int(rng.choice(len(weights), p=weights / weights.sum()))
    design["protocol"] = grids
    return design


def _bbox(grid: Grid, center, radii):
    """Index slices (z, y, x) of the grid voxels within the axis-aligned box center +- radii."""
    slices = []
    for axis in (2, 1, 0):
        c = grid.coords(axis)
        lo = np.searchsorted(c, center[axis] - radii[axis], side="left")
        hi = np.searchsorted(c, center[axis] + radii[axis], side="right")
        slices.append(slice(int(lo), int(hi)))
    return tuple(slices)


def _local_mesh(grid: Grid, slices):
    X, Y, Z = grid.mesh()
    return X[:, :, slices[2]], Y[:, slices[1], :], Z[slices[0], :, :]


def _ellipsoid(grid: Grid, center, radii):
    sl = _bbox(grid, center, radii)
    X, Y, Z = _local_mesh(grid, sl)
    inside = ((X - center[0]) / radii[0]) ** 2 + ((Y - center[1]) / radii[1]) ** 2 + (
        (Z - center[2]) / radii[2]
    ) ** 2 <= 1.0
    return sl, inside


def _cylinder(grid: Grid, center_xy, radii_xy, z_range):
    center = (center_xy[0], center_xy[1], 0.5 * (z_range[0] + z_range[1]))
    radii = (radii_xy[0], radii_xy[1], 0.5 * (z_range[1] - z_range[0]))
    sl = _bbox(grid, center, radii)
    X, Y, Z = _local_mesh(grid, sl)
    inside = ((X - center[0]) / radii[0]) ** 2 + ((Y - center[1]) / radii[1]) ** 2 <= 1.0
    inside = np.broadcast_to(inside, (Z.shape[0], inside.shape[1], inside.shape[2]))
    return sl, inside


class _Painter:
    """Paints labelled shapes in anatomical order (later shapes win, optionally only over given labels)."""

    def __init__(self, grid: Grid, scale: float, codes: dict):
        self.grid, self.scale, self.codes = grid, scale, codes
        self.labels = np.zeros(grid.shape, dtype=np.uint8)

    def _s(self, values):
        return tuple(v * self.scale for v in values)

    def paint(self, name, shape, *args, over=None):
        if shape == "ellipsoid":
            center, radii = args
            sl, inside = _ellipsoid(self.grid, self._s(center), self._s(radii))
        else:
            center_xy, radii_xy, z_range = args
            sl, inside = _cylinder(self.grid, self._s(center_xy), self._s(radii_xy), self._s(z_range))
        region = self.labels[sl]
        if over is not None:
            inside = inside & np.isin(region, [self.codes[o] for o in over])
        region[inside] = self.codes[name]


def _headneck_labels(painter: _Painter) -> None:
    p = painter
    p.paint("soft_tissue", "ellipsoid", (0, 10, -150), (185, 105, 125))  # shoulders / upper thorax
    p.paint("soft_tissue", "cylinder", (0, 15), (58, 62), (-90, 40))  # neck
    p.paint("soft_tissue", "ellipsoid", (0, 10, 85), (78, 98, 90))  # head
    p.paint("soft_tissue", "ellipsoid", (0, -35, 25), (55, 45, 35))  # face and jaw
    p.paint("muscle", "ellipsoid", (0, 52, -5), (42, 20, 42), over=["soft_tissue"])
    p.paint("spine", "cylinder", (0, 18), (13, 13), (-200, 30), over=["soft_tissue"])
    p.paint("airway", "cylinder", (0, -22), (9, 8), (-200, 25), over=["soft_tissue"])
    for side in (-1, 1):
        p.paint(
            "lungs",
            "ellipsoid",
            (side * 70, 20, -150),
            (55, 65, 100),
            over=["soft_tissue"],
        )
        p.paint(
            "parotids",
            "ellipsoid",
            (side * 52, 12, 28),
            (12, 20, 20),
            over=["soft_tissue"],
        )
        p.paint(
            "submandibular",
            "ellipsoid",
            (side * 35, -25, 3),
            (11, 11, 10),
            over=["soft_tissue"],
        )
        p.paint(
            "tonsils",
            "ellipsoid",
            (side * 14, -8, 18),
            (7, 8, 11),
            over=["soft_tissue"],
        )
    p.paint("brain_grey", "ellipsoid", (0, 12, 105), (62, 80, 62), over=["soft_tissue"])
    p.paint("brain_white", "ellipsoid", (0, 12, 110), (42, 58, 40), over=["brain_grey"])


def _lung_labels(painter: _Painter) -> None:
    p = painter
    p.paint("soft_tissue", "cylinder", (0, 0), (165, 110), (-400, 400))
    p.paint("spine", "cylinder", (0, 80), (18, 16), (-400, 400))
    p.paint("blood", "cylinder", (12, 50), (12, 12), (-400, 110))
    p.paint("lungs", "ellipsoid", (-72, 5, 85), (60, 82, 112), over=["soft_tissue"])
    p.paint("lungs", "ellipsoid", (72, 5, 80), (56, 80, 108), over=["soft_tissue"])
    p.paint("myocardium", "ellipsoid", (18, -30, 20), (55, 48, 50))
    p.paint("heart_blood", "ellipsoid", (18, -30, 20), (40, 33, 35))
    p.paint("liver", "ellipsoid", (-55, 5, -60), (100, 85, 75))
    p.paint("spleen", "ellipsoid", (88, 45, -60), (32, 42, 52))
    for side in (-1, 1):
        p.paint("kidneys", "ellipsoid", (side * 72, 55, -125), (30, 30, 50))


def _random_field(rng: np.random.Generator, shape, sigma_vox: float) -> np.ndarray:
    """A unit-variance, zero-mean Gaussian random field with Gaussian correlation of ``sigma_vox`` voxels."""
    field_ = gaussian_blur(rng.standard_normal(shape, dtype=np.float32), (sigma_vox,) * 3, mode="wrap")
    field_ -= field_.mean()
    std = float(field_.std())
    return field_ / std if std > 0 else field_


def _rotation(rng: np.random.Generator) -> np.ndarray:
    q, r = np.linalg.qr(rng.standard_normal((3, 3)))
    return q * np.sign(np.diag(r))


def build_phantom(design: dict, preset: Preset, grid: Grid, rng: np.random.Generator) -> Phantom:
    """Voxelize ``design`` on ``grid``; ``rng`` drives the spatial random fields (lesion, liver texture)."""
    anatomy = preset.anatomy
    codes = LABELS[anatomy]
    scale = design["body_scale"]
    painter = _Painter(grid, scale, codes)
    (_headneck_labels if anatomy == "headneck" else _lung_labels)(painter)
    labels = painter.labels
    uptake = dict(design["uptake"])
    if anatomy == "headneck":
        uptake["brain_white"] = uptake["brain_grey"] * WHITE_TO_GREY
    lut = np.zeros(256, dtype=np.float32)
    for name, code in codes.items():
        lut[code] = uptake.get(name, 0.0)
    suv = lut[labels]
    spacing = grid.spacing[0]

    if anatomy == "lung":  # mild healthy-liver texture
        liver = labels == codes["liver"]
        sl = tuple(slice(int(ix.min()), int(ix.max()) + 1) for ix in np.nonzero(liver))
        amplitude, fwhm = LIVER_TEXTURE
        tex = _random_field(rng, liver[sl].shape, fwhm / FWHM_PER_SIGMA / spacing)
        block = suv[sl]
        block[liver[sl]] *= np.exp(amplitude * tex[liver[sl]] - 0.5 * amplitude**2)

    # lesion: lobulated, rotated ellipsoid with correlated log-normal uptake and a necrotic core
    center = np.array(design["lesion_center_template"], dtype=np.float64) * scale
    radius = (3.0 * design["lesion_volume_nominal_ml"] * 1000.0 / (4.0 * math.pi)) ** (1.0 / 3.0)
    axes = np.array(design["lesion_axes"]) / np.prod(design["lesion_axes"]) ** (1 / 3) * radius
    extent = float(axes.max() * (1.0 + 3 * design["lobulation"]) + 2 * spacing)
    sl = _bbox(grid, center, (extent,) * 3)
    X, Y, Z = _local_mesh(grid, sl)
    shape = (Z.shape[0], Y.shape[1], X.shape[2])
    offsets = np.stack(np.broadcast_arrays(X - center[0], Y - center[1], Z - center[2]), axis=-1)
    rot = _rotation(rng)
    local = offsets @ rot.astype(np.float32)
    distance = np.sqrt(((local / axes.astype(np.float32)) ** 2).sum(axis=-1))
    lobes = _random_field(rng, shape, 0.5 * radius / spacing)
    distance = distance * (1.0 + design["lobulation"] * lobes)
    texture = _random_field(rng, shape, design["texture_corr_mm"] / FWHM_PER_SIGMA / spacing)
    h = design["heterogeneity"]
    tissue = labels[sl]
    inside = (distance <= 1.0) & (tissue > 0)
    for name in (
        "brain_grey",
        "brain_white",
    ):  # a head-and-neck primary never grows into the brain
        if name in codes:
            inside &= tissue != codes[name]
    values = design["lesion_suv"] * np.exp(h * texture - 0.5 * h * h)
    values = np.where(
        distance <= design["necrotic_fraction"],
        design["lesion_suv"] * design["necrotic_suv_ratio"],
        values,
    )
    suv[sl][inside] = values[inside].astype(np.float32)
    labels[sl][inside] = codes["lesion"]
    lesion = labels == codes["lesion"]

    ref_center, ref_radius = HN_REFERENCE if anatomy == "headneck" else LUNG_REFERENCE
    return Phantom(
        grid=grid,
        suv=suv.astype(np.float32),
        labels=labels,
        lesion=lesion,
        reference_center=tuple(float(c) * scale for c in ref_center),
        reference_radius=float(ref_radius),
        label_codes=codes,
    )


def fine_grid(preset: Preset, size: str, margin_mm: float = 20.0) -> Grid:
    """The truth grid: the site field of view plus a margin, at the preset's fine spacing for ``size``."""
    spacing = float(preset.fine_mm[size])
    extent = list(preset.fov_mm)
    if size == "full":  # the site grids are wider than the body: the truth must hold all of it
        extent[:2] = [max(e, b) for e, b in zip(extent[:2], preset.body_extent_mm)]
    extent = [e + 2 * margin_mm for e in extent]
    return Grid.covering(extent, (spacing,) * 3)
