"""Stratified Monte Carlo train/test splits, shared by every method of a bench.

The paper's protocol: patients are randomly assigned (without replacement)
to a training (80 %) and a test (20 %) set, stratified by outcome, repeated
100 times. One :class:`Splits` object is drawn once per bench from the seed,
the outcome labels and the subject ids, so every method sees exactly the same
training and test rows; it is saved in ``results.json`` and ``splits.csv``.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from ..errors import HarmkitError


@dataclass(frozen=True)
class Splits:
    """``test_masks[i, j]`` is True when subject ``subjects[j]`` is in the test set of split ``i``."""

    subjects: tuple[str, ...]
    test_masks: np.ndarray  # (n_splits, n_subjects) bool
    seed: int
    test_size: float

    @property
    def n_splits(self) -> int:
        return int(self.test_masks.shape[0])

    def __iter__(self):
        """Yield ``(train_indices, test_indices)`` per split (positions into ``subjects``)."""
        for mask in self.test_masks:
            yield np.flatnonzero(~mask), np.flatnonzero(mask)

    def digest(self) -> str:
        """Content hash of the splits (subjects and assignments), for cache keys and checks."""
        h = hashlib.sha256()
        h.update("\n".join(self.subjects).encode())
        h.update(np.packbits(self.test_masks).tobytes())
        return h.hexdigest()[:16]

    def to_frame(self):
        """Long table: split, subject_id, set (train/test)."""
        import pandas as pd

        rows = [
            (i, subject, "test" if self.test_masks[i, j] else "train")
            for i in range(self.n_splits)
            for j, subject in enumerate(self.subjects)
        ]
        return pd.DataFrame(rows, columns=["split", "subject_id", "set"])


def monte_carlo_splits(
    subjects: Sequence[str],
    outcome: Sequence[int],
    n_splits: int = 100,
    test_size: float = 0.2,
    seed: int = 0,
) -> Splits:
    """Draw ``n_splits`` stratified random train/test splits of ``subjects``.

    Raises :class:`HarmkitError` when a class has too few subjects to appear in
    both the training and the test set of every split.
    """
    from sklearn.model_selection import StratifiedShuffleSplit

    y = np.asarray(outcome, dtype=int)
    if len(subjects) != len(y):
        raise ValueError("subjects and outcome differ in length")
    if not 0 < test_size < 1:
        raise HarmkitError(f"--test-size {test_size}: expected a fraction between 0 and 1, e.g. 0.2")
    if n_splits < 1:
        raise HarmkitError(f"--folds {n_splits}: expected a positive number of Monte Carlo splits, e.g. 100")
    counts = np.bincount(y, minlength=2)
    if (counts < 2).any():
        raise HarmkitError(
            f"the outcome needs at least 2 subjects of each class for stratified splits (found {counts[0]} with "
            f"outcome 0, {counts[1]} with outcome 1)"
        )
    n_test = int(np.ceil(test_size * len(y)))
    if n_test < 2 or len(y) - n_test < 2:
        raise HarmkitError(
            f"--test-size {test_size} leaves too few subjects in the training or test set ({len(y)} subjects)"
        )
    sss = StratifiedShuffleSplit(n_splits=n_splits, test_size=test_size, random_state=seed)
    masks = np.zeros((n_splits, len(y)), dtype=bool)
    for i, (_, test) in enumerate(sss.split(np.zeros(len(y)), y)):
        masks[i, test] = True
    return Splits(tuple(str(s) for s in subjects), masks, int(seed), float(test_size))
