"""Statistics used by the benchmark: confidence intervals, paired tests, DeLong's test, CCC.

Everything here is a small function on numpy arrays with no hidden state, so
it can be checked on simulated numbers (see ``tests/test_stats.py``).

Scores over Monte Carlo splits share most of their training rows, so their
Student-t interval and paired t test treat correlated values as independent
and overstate certainty. :func:`corrected_resampled_ttest` and
:func:`corrected_mean_ci` use the corrected resampled t of Nadeau & Bengio
(2003, Machine Learning 52:239, "Inference for the generalization error";
the form of Bouckaert & Frank 2004): the variance of the mean of ``J``
per-split values is ``(1/J + n_test/n_train) S^2`` instead of ``S^2 / J``,
with ``S^2`` their sample variance, and ``t`` has ``J - 1`` degrees of
freedom. :func:`mean_ci` and :func:`paired_test` remain the paper's
(Haberl et al. 2024) uncorrected versions.

DeLong's test follows DeLong, DeLong & Clarke-Pearson (1988, Biometrics 44:837)
in the fast midrank formulation of Sun & Xu (2014, IEEE Signal Processing
Letters 21:1389): the AUC of each score is a two-sample U-statistic, its
structural components (placement values) give the covariance matrix of the
AUCs of several scores computed on the same cases.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from numpy.typing import ArrayLike
from scipy import stats as _st

__all__ = [
    "mean_ci",
    "paired_test",
    "corrected_mean_ci",
    "corrected_resampled_ttest",
    "CorrectedTTest",
    "holm",
    "delong_auc_ci",
    "bootstrap_auc_ci",
    "auc",
    "delong_covariance",
    "delong_test",
    "DeLongResult",
    "concordance_correlation",
    "bootstrap_auc_difference_variance",
]


def mean_ci(values: ArrayLike, confidence: float = 0.95) -> tuple[float, float, float]:
    """Mean of ``values`` and its ``confidence`` interval from Student's t distribution.

    Used for the AUC over Monte Carlo splits, as in the paper (mean and 95 % CI
    over the 100 test-set AUCs). Non-finite values are ignored; with fewer than
    two values the interval is ``(nan, nan)``.
    """
    x = np.asarray(values, dtype=float)
    x = x[np.isfinite(x)]
    if x.size == 0:
        return math.nan, math.nan, math.nan
    mean = float(x.mean())
    if x.size < 2:
        return mean, math.nan, math.nan
    sem = float(x.std(ddof=1) / math.sqrt(x.size))
    if sem == 0.0:
        return mean, mean, mean
    half = float(_st.t.ppf(0.5 + confidence / 2, x.size - 1)) * sem
    return mean, mean - half, mean + half


def paired_test(a: ArrayLike, b: ArrayLike, alpha: float = 0.05) -> tuple[str, float]:
    """Two-sided paired test of ``a`` against ``b`` (same splits / same features, in order).

    The paper's rule: Shapiro-Wilk on the paired differences; if normality is
    not rejected at ``alpha``, Student's paired t test, otherwise the Wilcoxon
    signed-rank test. Returns ``(test name, p value)``; ``p = 1`` when all
    differences are zero, ``nan`` with fewer than three finite pairs.
    """
    a = np.asarray(a, dtype=float)
    b = np.asarray(b, dtype=float)
    if a.shape != b.shape:
        raise ValueError(f"paired_test: a has {a.shape} values, b has {b.shape}")
    keep = np.isfinite(a) & np.isfinite(b)
    d = a[keep] - b[keep]
    if d.size < 3:
        return "none", math.nan
    if np.allclose(d, 0.0, atol=1e-12):
        return "wilcoxon", 1.0
    normal = np.ptp(d) > 0 and _st.shapiro(d).pvalue >= alpha
    if normal:
        return "paired-t", float(_st.ttest_rel(a[keep], b[keep]).pvalue)
    return "wilcoxon", float(_st.wilcoxon(a[keep], b[keep], zero_method="wilcox").pvalue)


def _correction(n_splits: int, n_train: float, n_test: float) -> float:
    """Nadeau & Bengio's variance factor ``1/J + n_test/n_train`` (replaces ``1/J``)."""
    for name, value in (("n_train", n_train), ("n_test", n_test)):
        if not (isinstance(value, (int, float, np.integer, np.floating)) and math.isfinite(value) and value > 0):
            raise ValueError(f"{name} must be a positive number of rows per split, got {value!r}")
    return 1.0 / n_splits + float(n_test) / float(n_train)


def corrected_mean_ci(
    values: ArrayLike, n_train: float, n_test: float, confidence: float = 0.95
) -> tuple[float, float, float]:
    """Mean of per-split ``values`` and its corrected resampled-t ``confidence`` interval.

    ``values`` are one score per Monte Carlo split (e.g. test AUCs), each
    split trained on ``n_train`` rows and tested on ``n_test`` rows (averages
    when sizes vary). The half-width is ``t_{J-1} * sqrt((1/J + n_test/n_train)
    S^2)`` with ``J`` finite values and ``S^2`` their sample variance
    (``ddof=1``), Nadeau & Bengio (2003). Non-finite values are ignored;
    with fewer than two values the interval is ``(nan, nan)``.
    """
    x = np.asarray(values, dtype=float)
    x = x[np.isfinite(x)]
    if x.size == 0:
        return math.nan, math.nan, math.nan
    mean = float(x.mean())
    if x.size < 2:
        return mean, math.nan, math.nan
    se = math.sqrt(_correction(x.size, n_train, n_test) * float(x.var(ddof=1)))
    if se == 0.0:
        return mean, mean, mean
    half = float(_st.t.ppf(0.5 + confidence / 2, x.size - 1)) * se
    return mean, mean - half, mean + half


@dataclass(frozen=True)
class CorrectedTTest:
    """Corrected resampled t test of paired per-split scores (Nadeau & Bengio 2003)."""

    mean: float  # mean over splits of a - b
    t: float
    p: float  # two-sided
    df: int
    se: float  # corrected standard error of the mean difference
    ci_low: float  # corrected confidence interval of the mean difference
    ci_high: float
    n_splits: int  # J: splits with a finite score for both methods
    n_train: float
    n_test: float
    confidence: float


def corrected_resampled_ttest(
    a: ArrayLike, b: ArrayLike, n_train: float, n_test: float, confidence: float = 0.95
) -> CorrectedTTest:
    """Two-sided corrected resampled t test that two methods' mean per-split scores are equal.

    ``a[j]`` and ``b[j]`` are the scores of two methods on split ``j`` (same
    training and test rows); every split trains on ``n_train`` rows and tests
    on ``n_test``. With ``d = a - b`` over the ``J`` splits where both are
    finite::

        t = mean(d) / sqrt((1/J + n_test/n_train) * var(d, ddof=1)),   df = J - 1

    which is Student's paired t with the variance ``var(d)/J`` inflated for the
    overlap of the training sets (Nadeau & Bengio 2003). Identical scores give
    ``t = 0, p = 1``; constant non-zero differences ``t = ±inf, p = 0``; fewer
    than two pairs give ``nan``. ``ci_low``/``ci_high`` bound the mean
    difference at ``confidence``.
    """
    a = np.asarray(a, dtype=float)
    b = np.asarray(b, dtype=float)
    if a.shape != b.shape:
        raise ValueError(
            f"corrected_resampled_ttest: a has {a.size} values, b has {b.size}; "
            "give both methods' scores on the same splits"
        )
    keep = np.isfinite(a) & np.isfinite(b)
    d = a[keep] - b[keep]
    j = int(d.size)
    nan = math.nan
    if j < 2:
        _correction(max(j, 1), n_train, n_test)  # still reject bad sizes
        mean = float(d.mean()) if j else nan
        return CorrectedTTest(
            mean,
            nan,
            nan,
            max(j - 1, 0),
            nan,
            nan,
            nan,
            j,
            float(n_train),
            float(n_test),
            confidence,
        )
    mean = float(d.mean())
    se = math.sqrt(_correction(j, n_train, n_test) * float(d.var(ddof=1)))
    if se == 0.0:
        t, p = (0.0, 1.0) if mean == 0.0 else (math.copysign(math.inf, mean), 0.0)
        lo = hi = mean
    else:
        t = mean / se
        p = float(2 * _st.t.sf(abs(t), j - 1))
        half = float(_st.t.ppf(0.5 + confidence / 2, j - 1)) * se
        lo, hi = mean - half, mean + half
    return CorrectedTTest(mean, t, p, j - 1, se, lo, hi, j, float(n_train), float(n_test), confidence)


def holm(pvalues: ArrayLike) -> np.ndarray:
    """Holm's (1979) step-down adjusted p-values, in the order given.

    The family is the finite p-values; ``nan`` entries stay ``nan`` and do not
    count. With ``m`` finite p-values sorted ascending, the ``i``-th (1-based)
    becomes ``max_{k <= i} min(1, (m - k + 1) p_(k))``. Rejecting where the
    adjusted p is below ``alpha`` controls the family-wise error rate at
    ``alpha``.
    """
    p = np.asarray(pvalues, dtype=float).ravel()
    out = np.full(p.shape, math.nan)
    idx = np.flatnonzero(np.isfinite(p))
    if idx.size == 0:
        return out
    if ((p[idx] < 0) | (p[idx] > 1)).any():
        raise ValueError("p-values must lie in [0, 1]")
    order = idx[np.argsort(p[idx], kind="stable")]
    m = order.size
    scaled = np.minimum(1.0, (m - np.arange(m)) * p[order])
    out[order] = np.maximum.accumulate(scaled)
    return out


def _midrank(x: np.ndarray) -> np.ndarray:
    """Midranks (1-based; ties get the mean of their ranks)."""
    return _st.rankdata(x, method="average")


def _check_labels(y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    y = np.asarray(y).astype(int).ravel()
    if not set(np.unique(y)) <= {0, 1}:
        raise ValueError("labels must be 0/1")
    pos, neg = y == 1, y == 0
    if pos.sum() == 0 or neg.sum() == 0:
        raise ValueError("DeLong's test needs at least one positive and one negative case")
    return pos, neg


def auc(y: ArrayLike, score: ArrayLike) -> float:
    """Area under the ROC curve (Mann-Whitney form; ties count one half)."""
    pos, neg = _check_labels(np.asarray(y))
    s = np.asarray(score, dtype=float)
    m, n = int(pos.sum()), int(neg.sum())
    ranks = _midrank(s)
    return float((ranks[pos].sum() - m * (m + 1) / 2) / (m * n))


def delong_covariance(y: ArrayLike, scores: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """AUCs of ``k`` scores on the same cases and their DeLong covariance matrix.

    ``scores`` has shape ``(k, n_cases)`` (or ``(n_cases,)`` for one score).
    Returns ``(aucs (k,), covariance (k, k))``.
    """
    pos, neg = _check_labels(np.asarray(y))
    s = np.atleast_2d(np.asarray(scores, dtype=float))
    m, n = int(pos.sum()), int(neg.sum())
    k = s.shape[0]
    x, yy = s[:, pos], s[:, neg]
    tx = np.empty((k, m))
    ty = np.empty((k, n))
    tz = np.empty((k, m + n))
    for r in range(k):
        tx[r] = _midrank(x[r])
        ty[r] = _midrank(yy[r])
        tz[r] = _midrank(np.concatenate([x[r], yy[r]]))
    aucs = (tz[:, :m].sum(axis=1) / m - (m + 1) / 2) / n
    v01 = (tz[:, :m] - tx) / n  # placement of each positive among the negatives
    v10 = 1.0 - (tz[:, m:] - ty) / m  # placement of each negative among the positives
    sx = np.atleast_2d(np.cov(v01)) if m > 1 else np.zeros((k, k))
    sy = np.atleast_2d(np.cov(v10)) if n > 1 else np.zeros((k, k))
    return aucs, sx / m + sy / n


@dataclass(frozen=True)
class DeLongResult:
    """DeLong's paired test of two AUCs computed on the same cases."""

    auc_a: float
    auc_b: float
    difference: float  # auc_a - auc_b
    variance: float  # variance of the difference
    z: float
    p: float
    n_positive: int
    n_negative: int


def delong_test(y: ArrayLike, score_a: ArrayLike, score_b: ArrayLike) -> DeLongResult:
    """Two-sided DeLong test that two correlated AUCs (same cases) are equal.

    Identical scores give a zero difference with zero variance: ``z = 0``,
    ``p = 1``.
    """
    pos, _ = _check_labels(np.asarray(y))
    aucs, cov = delong_covariance(y, np.vstack([np.asarray(score_a, float), np.asarray(score_b, float)]))
    diff = float(aucs[0] - aucs[1])
    var = float(cov[0, 0] + cov[1, 1] - 2 * cov[0, 1])
    if var <= 1e-15:
        z, p = 0.0, 1.0 if abs(diff) < 1e-12 else 0.0
    else:
        z = diff / math.sqrt(var)
        p = float(2 * _st.norm.sf(abs(z)))
    return DeLongResult(
        float(aucs[0]),
        float(aucs[1]),
        diff,
        max(var, 0.0),
        z,
        p,
        int(pos.sum()),
        int((~pos).sum()),
    )


def delong_auc_ci(y: ArrayLike, score: ArrayLike, confidence: float = 0.95) -> tuple[float, float, float]:
    """AUC of ``score`` and its DeLong ``confidence`` interval: ``AUC ± z * sqrt(var)``, clipped to [0, 1].

    The variance is DeLong's (:func:`delong_covariance`), as pROC's
    ``ci.auc(method = "delong")``.
    """
    aucs, cov = delong_covariance(y, np.asarray(score, float))
    value = float(aucs[0])
    half = float(_st.norm.ppf(0.5 + confidence / 2)) * math.sqrt(max(float(cov[0, 0]), 0.0))
    return value, max(0.0, value - half), min(1.0, value + half)


def _bootstrap_aucs(y: np.ndarray, s: np.ndarray, n_boot: int, seed: int, batch: int = 256) -> np.ndarray:
    """AUCs of ``n_boot`` stratified bootstrap resamples (positives and negatives resampled separately)."""
    pos, neg = np.flatnonzero(y == 1), np.flatnonzero(y == 0)
    m, n = pos.size, neg.size
    rng = np.random.default_rng(seed)
    out = np.empty(n_boot)
    for start in range(0, n_boot, batch):
        k = min(batch, n_boot - start)
        idx = np.concatenate([rng.choice(pos, (k, m)), rng.choice(neg, (k, n))], axis=1)
        ranks = _st.rankdata(s[idx], method="average", axis=1)
        out[start : start + k] = (ranks[:, :m].sum(axis=1) - m * (m + 1) / 2) / (m * n)
    return out


def bootstrap_auc_ci(
    y: ArrayLike,
    score: ArrayLike,
    n_boot: int = 2000,
    seed: int = 0,
    confidence: float = 0.95,
) -> tuple[float, float, float]:
    """AUC of ``score`` and its stratified percentile bootstrap ``confidence`` interval.

    Each of the ``n_boot`` resamples draws the positive cases and the
    negative cases with replacement, each class keeping its size (as pROC's
    ``ci.auc(method = "bootstrap", stratified = TRUE)``); the interval holds
    the central ``confidence`` share of the resampled AUCs (linear
    interpolation between order statistics). Deterministic for a ``seed``.
    """
    pos, _ = _check_labels(np.asarray(y))
    if n_boot < 2:
        raise ValueError(f"n_boot must be at least 2, got {n_boot}")
    yy = pos.astype(int)
    s = np.asarray(score, float)
    boots = _bootstrap_aucs(yy, s, int(n_boot), seed)
    lo, hi = np.quantile(boots, [0.5 - confidence / 2, 0.5 + confidence / 2])
    return auc(yy, s), float(lo), float(hi)


def bootstrap_auc_difference_variance(
    y: ArrayLike,
    score_a: ArrayLike,
    score_b: ArrayLike,
    n_boot: int = 2000,
    seed: int = 0,
) -> float:
    """Variance of ``AUC(a) - AUC(b)`` over stratified bootstrap resamples of the cases.

    The reference against which :func:`delong_test`'s variance is checked.
    """
    y = np.asarray(y).astype(int)
    a = np.asarray(score_a, float)
    b = np.asarray(score_b, float)
    rng = np.random.default_rng(seed)
    pos_idx, neg_idx = np.flatnonzero(y == 1), np.flatnonzero(y == 0)
    diffs = np.empty(n_boot)
    for i in range(n_boot):
        idx = np.concatenate([rng.choice(pos_idx, pos_idx.size), rng.choice(neg_idx, neg_idx.size)])
        diffs[i] = auc(y[idx], a[idx]) - auc(y[idx], b[idx])
    return float(diffs.var(ddof=1))


def concordance_correlation(x: ArrayLike, y: ArrayLike) -> float:
    """Lin's concordance correlation coefficient (1989): agreement with the identity line.

    ``2 cov(x, y) / (var x + var y + (mean x - mean y)^2)``, population moments.
    ``nan`` when fewer than two finite pairs or both inputs are constant and different.
    """
    xs, ys = np.asarray(x, float), np.asarray(y, float)
    keep = np.isfinite(xs) & np.isfinite(ys)
    xs, ys = xs[keep], ys[keep]
    if xs.size < 2:
        return math.nan
    mx, my = xs.mean(), ys.mean()
    vx, vy = xs.var(), ys.var()
    cov = ((xs - mx) * (ys - my)).mean()
    denom = vx + vy + (mx - my) ** 2
    if denom == 0:
        return 1.0
    return float(2 * cov / denom)
