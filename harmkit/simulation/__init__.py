"""Simulated multicenter PET cohorts with known ground truth.

>>> import harmkit as hk
>>> manifest = hk.simulate("headneck", out="sim", subjects_per_site=5)   # doctest: +SKIP

Each subject is an anatomical phantom (:mod:`.phantom`) rendered through documented scanner models
(:mod:`.scanner`) of the sites of a preset (:mod:`.presets`); the outcome follows a logistic model of
the lesion's latent biology (:mod:`.outcome`). See ``docs/simulator.md``.
"""

from .cohort import plan_cohort, simulate, simulate_subject
from .presets import PRESETS, get_preset

__all__ = ["simulate", "plan_cohort", "simulate_subject", "get_preset", "PRESETS"]
