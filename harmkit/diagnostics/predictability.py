"""Feature-level site predictability: the cross-validated AUC of a classifier that guesses the site from features.

The standard "batch leakage" check: if a simple classifier can tell which
site group a scan comes from using only its radiomic features, the features
carry the site. AUC 0.5 means the site groups cannot be told apart; 1 means
every scan's site is recognisable. With more than two groups the AUC is the
macro average over every pair of groups (one-vs-one, Hand & Till), which is
also 0.5 by chance.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np

from ..errors import HarmkitError
from ..toolkit import feature_columns


def _model(C: float, seed: int):
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    return make_pipeline(StandardScaler(), LogisticRegression(C=C, max_iter=5000, random_state=seed))


def _auc(y: np.ndarray, probability: np.ndarray) -> float:
    from sklearn.metrics import roc_auc_score

    if probability.shape[1] == 2:
        return float(roc_auc_score(y, probability[:, 1]))
    return float(roc_auc_score(y, probability, multi_class="ovo", average="macro"))


def hanley_mcneil_ci(auc: float, n_positive: int, n_negative: int, confidence: float = 0.95) -> tuple[float, float]:
    """Normal-approximation confidence interval of an AUC (Hanley & McNeil 1982), clipped to [0, 1]."""
    from scipy.stats import norm

    q1, q2 = auc / (2 - auc), 2 * auc * auc / (1 + auc)
    variance = (auc * (1 - auc) + (n_positive - 1) * (q1 - auc * auc) + (n_negative - 1) * (q2 - auc * auc)) / (
        n_positive * n_negative
    )
    half = float(norm.ppf(0.5 + confidence / 2)) * math.sqrt(max(variance, 0.0))
    return max(0.0, auc - half), min(1.0, auc + half)


def _usable(X: np.ndarray) -> np.ndarray:
    """Columns finite for every row and not constant."""
    finite = np.isfinite(X).all(axis=0)
    spread = np.zeros(X.shape[1], dtype=bool)
    spread[finite] = X[:, finite].std(axis=0) > 1e-12 * (1 + np.abs(X[:, finite]).max(axis=0))
    return finite & spread


def _cross_validated(
    X,
    y: np.ndarray,
    labels: np.ndarray,
    folds: int,
    repeats: int,
    seed: int,
    C: float,
    fold_transform=None,
) -> tuple[list[float], np.ndarray]:
    from sklearn.model_selection import StratifiedKFold
    from threadpoolctl import threadpool_limits

    n_classes = int(y.max()) + 1
    aucs, mean_probability = [], np.zeros((len(y), n_classes))
    # One BLAS thread: on a few hundred rows, threads cost more than they save (2.1x slower on 2 cores in
    # benchmarks/evaluator_workers.py), and the numbers then do not depend on the machine's core count.
    with threadpool_limits(1):
        for repeat in range(repeats):
            probability = np.zeros((len(y), n_classes))
            splits = StratifiedKFold(folds, shuffle=True, random_state=seed + repeat).split(np.zeros(len(y)), y)
            for train, test in splits:
                if fold_transform is None:
                    x_train, x_test = X.iloc[train], X.iloc[test]
                else:
                    x_train, x_test = fold_transform(
                        X.iloc[train], list(labels[train]), X.iloc[test], list(labels[test])
                    )
                model = _model(C, seed).fit(np.asarray(x_train, dtype=float), y[train])
                probability[test] = model.predict_proba(np.asarray(x_test, dtype=float))
            aucs.append(_auc(y, probability))
            mean_probability += probability / repeats
    return aucs, mean_probability


def site_predictability(
    features,
    groups: Sequence[str] | None = None,
    folds: int = 5,
    repeats: int = 5,
    seed: int = 0,
    C: float = 1.0,
    fold_transform=None,
) -> dict[str, Any]:
    """Cross-validated AUC of a classifier that predicts the site group from features (0.5: indistinguishable).

    Parameters
    ----------
    features : DataFrame
        One row per scan. Columns ``site``, ``site_group`` and ``subject_id``
        are not features; every other column is, except those not finite in
        every row or constant (dropped, and counted in ``n_features``).
    groups : sequence, optional
        The site group of each row; default the ``site_group`` column.
    folds, repeats, seed :
        Stratified ``folds``-fold cross-validation, repeated ``repeats`` times
        with shuffles ``seed``, ``seed + 1``, ...; the reported AUC is the
        mean over repeats of the AUC of the pooled out-of-fold predictions.
    C :
        Inverse L2 strength of the logistic regression (on standardized
        features, scaler fitted on the training folds).
    fold_transform : callable, optional
        ``fold_transform(train, train_groups, test, test_groups) -> (train', test')``
        applied in every fold before the classifier: a feature harmonizer
        fitted on the training rows only. A harmonizer fitted on *every* row
        removes the site means exactly, which pushes the cross-validated AUC
        below 0.5 (the held-out rows sit on the far side of their own
        group's training mean); fitting it inside the folds avoids that.

    Returns a dict: ``auc``, ``auc_sd`` (over repeats), ``ci_low``/``ci_high``
    (95 %, Hanley-McNeil, two groups), ``groups``, ``n`` (per group),
    ``n_features``, ``pairs`` ({"A vs B": AUC} when there are more than two
    groups), ``classifier``, ``folds``, ``repeats``.
    """
    import pandas as pd

    if not isinstance(features, pd.DataFrame):
        raise HarmkitError("site predictability needs a feature table (a pandas DataFrame, one row per scan)")
    if groups is None:
        if "site_group" not in features.columns:
            raise HarmkitError(
                "the feature table has no 'site_group' column; pass the site group of each row as groups="
            )
        groups = features["site_group"]
    labels = np.asarray([str(g) for g in groups])
    if len(labels) != len(features):
        raise HarmkitError(f"{len(labels)} site groups for {len(features)} feature rows; give one per row")
    names = list(dict.fromkeys(labels))
    counts = {g: int((labels == g).sum()) for g in names}
    if len(names) < 2:
        raise HarmkitError(
            f"site predictability needs at least two site groups; the table has one ({names[0] if names else 'none'})"
        )
    n_splits = min(int(folds), min(counts.values()))
    if n_splits < 2:
        small = [g for g, n in counts.items() if n < 2]
        raise HarmkitError(
            f"site predictability: site group(s) {', '.join(small)} have fewer than 2 scans; merge or remove them"
        )
    columns = feature_columns(features)
    X = features[columns].apply(pd.to_numeric, errors="coerce").to_numpy(dtype=float)
    keep = _usable(X)
    if not keep.any():
        raise HarmkitError(
            "site predictability: no feature column is finite in every row and varies; check the feature table"
        )
    X = features[[c for c, k in zip(columns, keep) if k]].apply(pd.to_numeric, errors="coerce").astype(float)
    y = np.array([names.index(g) for g in labels])
    aucs, probability = _cross_validated(X, y, labels, n_splits, int(repeats), int(seed), float(C), fold_transform)
    auc = float(np.mean(aucs))
    result: dict[str, Any] = {
        "auc": auc,
        "auc_sd": float(np.std(aucs)),
        "ci_low": None,
        "ci_high": None,
        "groups": names,
        "n": counts,
        "n_features": int(keep.sum()),
        "classifier": f"logistic regression (L2, C={C:g}) on standardized features",
        "folds": int(n_splits),
        "repeats": int(repeats),
    }
    if len(names) == 2:
        result["ci_low"], result["ci_high"] = hanley_mcneil_ci(auc, counts[names[1]], counts[names[0]])
    else:
        pairs = {}
        for i, a in enumerate(names):
            for b in names[i + 1 :]:
                rows = (labels == a) | (labels == b)
                sub = site_predictability(
                    features.loc[rows],
                    labels[rows],
                    folds,
                    repeats,
                    seed,
                    C,
                    fold_transform,
                )
                pairs[f"{a} vs {b}"] = sub["auc"]
        result["pairs"] = pairs
    result["scores"] = probability
    return result
