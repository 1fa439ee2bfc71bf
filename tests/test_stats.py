"""Statistics of the benchmark: DeLong's test, CIs, paired tests, CCC."""

import math

import numpy as np
import pytest
from sklearn.metrics import roc_auc_score

from harmkit import stats


def _scores(n=120, seed=0, shift=1.0, corr=0.6):
    rng = np.random.default_rng(seed)
    y = (rng.random(n) < 0.4).astype(int)
    common = rng.normal(size=n)
    a = shift * y + corr * common + rng.normal(size=n) * math.sqrt(1 - corr**2)
    b = 0.6 * shift * y + corr * common + rng.normal(size=n) * math.sqrt(1 - corr**2)
    return y, a, b


def test_auc_matches_sklearn_with_ties():
    y, a, _ = _scores()
    a = np.round(a, 1)  # force ties
    assert stats.auc(y, a) == pytest.approx(roc_auc_score(y, a), abs=1e-12)


def test_delong_identical_predictions_give_p_one():
    y, a, _ = _scores()
    result = stats.delong_test(y, a, a.copy())
    assert result.p == 1.0
    assert result.difference == 0.0


def test_delong_aucs_match_sklearn():
    y, a, b = _scores(seed=3)
    result = stats.delong_test(y, a, b)
    assert result.auc_a == pytest.approx(roc_auc_score(y, a))
    assert result.auc_b == pytest.approx(roc_auc_score(y, b))


def test_delong_variance_agrees_with_bootstrap():
    y, a, b = _scores(n=200, seed=7)
    result = stats.delong_test(y, a, b)
    boot = stats.bootstrap_auc_difference_variance(y, a, b, n_boot=3000, seed=1)
    assert result.variance == pytest.approx(boot, rel=0.15)


def test_delong_single_auc_variance_agrees_with_bootstrap():
    y, a, _ = _scores(n=200, seed=11)
    _, cov = stats.delong_covariance(y, a)
    rng = np.random.default_rng(0)
    pos, neg = np.flatnonzero(y == 1), np.flatnonzero(y == 0)
    boots = []
    for _ in range(3000):
        idx = np.concatenate([rng.choice(pos, pos.size), rng.choice(neg, neg.size)])
        boots.append(stats.auc(y[idx], a[idx]))
    assert cov[0, 0] == pytest.approx(np.var(boots, ddof=1), rel=0.15)


def test_delong_detects_a_real_difference_and_not_noise():
    y, a, b = _scores(n=400, seed=5, shift=1.5)
    assert stats.delong_test(y, a, b).p < 0.01
    rng = np.random.default_rng(2)
    null_p = []
    for i in range(200):
        yy = (rng.random(80) < 0.5).astype(int)
        s1, s2 = rng.normal(size=80) + yy, rng.normal(size=80) + yy
        null_p.append(stats.delong_test(yy, s1, s2).p)
    # under the null about 5 % of p-values fall below 0.05
    assert 0.01 <= np.mean(np.array(null_p) < 0.05) <= 0.11


def test_delong_needs_both_classes():
    with pytest.raises(ValueError):
        stats.delong_test([1, 1, 1], [0.1, 0.2, 0.3], [0.3, 0.2, 0.1])


def test_mean_ci_contains_mean_and_shrinks_with_n():
    rng = np.random.default_rng(0)
    small = rng.normal(0.7, 0.05, 10)
    large = rng.normal(0.7, 0.05, 1000)
    m, lo, hi = stats.mean_ci(small)
    assert lo < m < hi
    m2, lo2, hi2 = stats.mean_ci(large)
    assert hi2 - lo2 < hi - lo
    assert lo2 < 0.7 < hi2


def test_paired_test_identical_is_one_and_shift_is_small():
    rng = np.random.default_rng(0)
    a = rng.normal(size=50)
    assert stats.paired_test(a, a)[1] == 1.0
    name, p = stats.paired_test(a + 0.5 + rng.normal(scale=0.1, size=50), a)
    assert p < 1e-6 and name in ("paired-t", "wilcoxon")


def test_concordance_correlation():
    x = np.arange(10.0) - 4.5
    assert stats.concordance_correlation(x, x) == pytest.approx(1.0)
    assert stats.concordance_correlation(x, x + 5) < 0.5  # correlated but biased
    assert stats.concordance_correlation(x, -x) == pytest.approx(-1.0)
