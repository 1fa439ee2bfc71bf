"""The outcome model: a logistic model of the lesion's latent biology with site-specific prevalence.

Each subject has four independent standard-normal latent variables (``z_volume``, ``z_uptake``,
``z_heterogeneity``, ``z_necrosis``) that set its lesion's volume, SUV level, texture amplitude and
necrotic core (see :mod:`harmkit.simulation.phantom`). The outcome probability is

    p = 1 / (1 + exp(-(alpha_site + sum_k beta_k z_k)))

with the preset's coefficients ``beta`` (shared by all sites, so the biology-outcome relation is
the same everywhere) and a per-site intercept ``alpha_site`` calibrated so that the *expected*
prevalence over the population equals the site's (e.g. 3/65 DM at CHUM). Because the linear
predictor ``eta = beta . z`` is normal with SD ``|beta|``, the calibration solves
``E[sigmoid(alpha + eta)] = prevalence`` by Gauss-Hermite quadrature.
"""

from __future__ import annotations

import math

import numpy as np
from scipy.optimize import brentq
from scipy.special import expit

_NODES, _WEIGHTS = np.polynomial.hermite_e.hermegauss(80)
_WEIGHTS = _WEIGHTS / _WEIGHTS.sum()


def linear_predictor(design: dict, coef: dict) -> float:
    """``sum_k beta_k z_k`` of one subject's latent variables."""
    return float(sum(beta * design[name] for name, beta in coef.items()))


def expected_prevalence(alpha: float, coef: dict) -> float:
    """Population prevalence ``E[sigmoid(alpha + eta)]`` for intercept ``alpha``."""
    scale = math.sqrt(sum(b * b for b in coef.values()))
    return float((_WEIGHTS * expit(alpha + scale * _NODES)).sum())


def calibrate_intercept(prevalence: float, coef: dict) -> float:
    """The intercept whose expected prevalence is ``prevalence`` (0 < prevalence < 1)."""
    if not 0.0 < prevalence < 1.0:
        raise ValueError(f"prevalence must be in (0, 1), got {prevalence}")
    return float(brentq(lambda a: expected_prevalence(a, coef) - prevalence, -40.0, 40.0, xtol=1e-12))


def probability(alpha: float, eta: float) -> float:
    """Outcome probability for intercept ``alpha`` and linear predictor ``eta``."""
    return float(expit(alpha + eta))
