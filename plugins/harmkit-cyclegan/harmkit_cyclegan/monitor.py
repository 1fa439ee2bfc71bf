"""Reading the CycleGAN's learning monitor from ``losses.csv``, and a checkerboard test (numpy, no torch).

At each checkpoint :meth:`harmkit_cyclegan.training.Trainer.monitor` measures,
on fixed patches of scans held out of training, how well each discriminator
tells real patches from translated ones and how far the translated patches'
texture moved towards the target domain; the values are the last columns of
that checkpoint's row in ``losses.csv``.
"""

from __future__ import annotations

import csv

import numpy as np

MONITOR_COLUMNS = ("acc_D_a", "acc_D_b", "tex_a", "tex_b", "tex_ab", "tex_ba")
"""Learning monitor, filled at checkpoint rows of losses.csv: discriminator accuracies (real vs translated
monitor patches) and the mean high-pass SD (texture) of real A, real B, A->B and B->A patches."""
# A discriminator whose monitor accuracy stays inside this band at every checkpoint has learned nothing.
CHANCE_BAND = (0.4, 0.6)


def read_monitor(losses_csv: str) -> list[dict[str, float]]:
    """The monitor rows (checkpoint steps) of a ``losses.csv`` text: ``[{"step": ..., "acc_D_a": ...}, ...]``."""
    rows = list(csv.DictReader(losses_csv.splitlines()))
    out = []
    for row in rows:
        if all(row.get(k) not in (None, "") for k in MONITOR_COLUMNS):
            out.append(
                {
                    "step": int(row["step"]),
                    **{k: float(row[k]) for k in MONITOR_COLUMNS},
                }
            )
    return out


def learning_verdict(monitor_rows: list[dict[str, float]]) -> dict[str, object]:
    """Whether training learned, from the monitor rows: discriminator accuracy and texture movement.

    ``discriminators_at_chance`` is true when both discriminators stayed within
    :data:`CHANCE_BAND` at every checkpoint. ``texture_fraction_ab`` (``_ba``) is
    how far the final A->B (B->A) translations' texture moved from the source
    domain's towards the target's (0: not at all, 1: all the way; None when
    the domains' textures do not differ).
    """
    if not monitor_rows:
        return {"monitored": False}
    low, high = CHANCE_BAND
    at_chance = all(low <= r[f"acc_D_{d}"] <= high for r in monitor_rows for d in "ab")
    last = monitor_rows[-1]
    gap = last["tex_b"] - last["tex_a"]
    usable = abs(gap) > 1e-6
    return {
        "monitored": True,
        "discriminators_at_chance": at_chance,
        "final_acc_D_a": last["acc_D_a"],
        "final_acc_D_b": last["acc_D_b"],
        "texture_fraction_ab": (last["tex_ab"] - last["tex_a"]) / gap if usable else None,
        "texture_fraction_ba": (last["tex_b"] - last["tex_ba"]) / gap if usable else None,
    }


def checkerboard_share(change: np.ndarray) -> float:
    """Energy of a translation's change at the highest frequency along the last axis, against its whole energy.

    White noise has a share of 1. A stride-2 transposed convolution paints a period-2 pattern with shares of 5-9
    (measured, docs/methods/cyclegan.md), which a texture statistic mistakes for learned noise. NaN for no change.
    """
    change = np.asarray(change, dtype=np.float64)
    change = change - change.mean()
    alternating = (-1.0) ** np.arange(change.shape[-1])
    whole = float((change**2).sum(-1).mean())
    return float(((change * alternating).sum(-1) ** 2).mean()) / whole if whole > 0 else float("nan")
