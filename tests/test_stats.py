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
    for _ in range(200):
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


# --- corrected resampled t (Nadeau & Bengio 2003) ------------------------------------------------------------------

A5 = [0.71, 0.74, 0.69, 0.80, 0.77]  # method A, five splits
B5 = [0.70, 0.70, 0.71, 0.74, 0.73]  # method B, the same splits


def _t4_two_sided_p(t):
    """Two-sided p of Student's t with 4 degrees of freedom, in closed form (no scipy)."""
    u = t * t / 4
    cdf = 0.5 + 3 / 8 * abs(t) / math.sqrt(1 + u) * (1 - t * t / (12 * (1 + u)))
    return 2 * (1 - cdf)


def test_corrected_ttest_equals_hand_computation_of_the_published_formula():
    # d = a - b = (0.01, 0.04, -0.02, 0.06, 0.04); mean 0.026; S^2 = 0.00392 / 4 = 0.00098
    # Nadeau & Bengio: t = mean / sqrt((1/J + n2/n1) S^2) = 0.026 / sqrt((1/5 + 20/80) * 0.00098) = 0.026 / 0.021
    result = stats.corrected_resampled_ttest(A5, B5, n_train=80, n_test=20)
    assert result.mean == pytest.approx(0.026, abs=1e-12)
    assert result.se == pytest.approx(0.021, abs=1e-12)
    assert result.t == pytest.approx(26 / 21, abs=1e-10)
    assert result.df == 4 and result.n_splits == 5
    assert result.p == pytest.approx(_t4_two_sided_p(26 / 21), abs=1e-10)


def test_corrected_ttest_is_student_paired_t_with_inflated_variance():
    from scipy.stats import ttest_rel

    rng = np.random.default_rng(4)
    a, b = rng.normal(0.75, 0.05, 100), rng.normal(0.74, 0.05, 100)
    corrected = stats.corrected_resampled_ttest(a, b, n_train=160, n_test=40)
    student = ttest_rel(a, b)
    # variance (1/J + n_test/n_train) S^2 instead of S^2 / J:
    # t shrinks by sqrt(1 / (1 + J n_test / n_train)) = sqrt(1/26)
    assert corrected.t == pytest.approx(student.statistic / math.sqrt(1 + 100 * 40 / 160), abs=1e-10)
    assert corrected.p > student.pvalue


def test_corrected_ttest_ignores_non_finite_pairs():
    a = np.array(A5 + [np.nan, 0.9])
    b = np.array(B5 + [0.5, np.inf])
    assert stats.corrected_resampled_ttest(a, b, 80, 20).t == pytest.approx(26 / 21, abs=1e-10)


def test_corrected_ttest_identical_scores_give_p_one_and_constant_shift_p_zero():
    same = stats.corrected_resampled_ttest(A5, A5, 80, 20)
    assert (same.t, same.p) == (0.0, 1.0)
    shifted = stats.corrected_resampled_ttest(np.array(A5) + 0.1, A5, 80, 20)
    assert shifted.p == 0.0 and shifted.t == math.inf


def test_corrected_ttest_rejects_bad_split_sizes():
    with pytest.raises(ValueError, match="n_train"):
        stats.corrected_resampled_ttest(A5, B5, n_train=0, n_test=20)


def test_corrected_ttest_rejects_unpaired_scores():
    with pytest.raises(ValueError, match="a has 5 values, b has 4"):
        stats.corrected_resampled_ttest(A5, B5[:4], n_train=80, n_test=20)


def test_corrected_ci_of_the_difference_excludes_zero_exactly_when_p_below_alpha():
    rng = np.random.default_rng(1)
    for shift in (0.0, 0.01, 0.02, 0.04):
        a = rng.normal(0.75 + shift, 0.04, 50)
        b = rng.normal(0.75, 0.04, 50)
        r = stats.corrected_resampled_ttest(a, b, 80, 20)
        assert (r.ci_low > 0 or r.ci_high < 0) == (r.p < 0.05)


def test_corrected_mean_ci_equals_hand_computation():
    values = [
        0.70,
        0.74,
        0.66,
        0.78,
    ]  # mean 0.72, S^2 = (0.0004 + 0.0004 + 0.0036 + 0.0036) / 3 = 0.008 / 3
    mean, lo, hi = stats.corrected_mean_ci(values, n_train=80, n_test=20)
    half = 3.182446305284263 * math.sqrt((1 / 4 + 20 / 80) * 0.008 / 3)  # t_{0.975, 3}
    assert mean == pytest.approx(0.72, abs=1e-12)
    assert lo == pytest.approx(0.72 - half, abs=1e-10) and hi == pytest.approx(0.72 + half, abs=1e-10)


def test_corrected_mean_ci_is_wider_than_the_student_interval():
    rng = np.random.default_rng(0)
    aucs = rng.normal(0.7, 0.05, 100)
    _, lo, hi = stats.corrected_mean_ci(aucs, 160, 40)
    _, lo_t, hi_t = stats.mean_ci(aucs)
    assert (hi - lo) / (hi_t - lo_t) == pytest.approx(math.sqrt(1 + 100 * 40 / 160), rel=1e-10)


# --- Holm -----------------------------------------------------------------------------------------------------------


def test_holm_equals_hand_computation_and_leaves_nan_out_of_the_family():
    # four finite p: sorted 0.005 (x4), 0.01 (x3), 0.03 (x2), 0.04 (x1, then the running maximum 0.06)
    adjusted = stats.holm([0.01, 0.04, np.nan, 0.03, 0.005])
    np.testing.assert_allclose(adjusted, [0.03, 0.06, np.nan, 0.06, 0.02], atol=1e-15)


def test_holm_caps_adjusted_p_at_one():
    np.testing.assert_array_equal(stats.holm([0.6, 0.7]), [1.0, 1.0])


def test_holm_agrees_with_statsmodels():
    multitest = pytest.importorskip("statsmodels.stats.multitest")
    p = np.random.default_rng(3).uniform(0, 0.3, 12)
    np.testing.assert_allclose(stats.holm(p), multitest.multipletests(p, method="holm")[1], atol=1e-15)


# --- confidence intervals of one AUC --------------------------------------------------------------------------------


def test_delong_auc_ci_is_auc_plus_minus_z_sd():
    y, a, _ = _scores(n=200, seed=2)
    value, lo, hi = stats.delong_auc_ci(y, a)
    _, cov = stats.delong_covariance(y, a)
    assert value == pytest.approx(roc_auc_score(y, a))
    assert hi - value == pytest.approx(1.959963984540054 * math.sqrt(cov[0, 0]), abs=1e-12)
    assert value - lo == pytest.approx(hi - value, abs=1e-12)


def test_bootstrap_auc_ci_is_seeded_and_agrees_with_delong():
    y, a, _ = _scores(n=300, seed=6)
    first = stats.bootstrap_auc_ci(y, a, n_boot=2000, seed=5)
    assert stats.bootstrap_auc_ci(y, a, n_boot=2000, seed=5) == first
    assert stats.bootstrap_auc_ci(y, a, n_boot=2000, seed=6) != first
    value, lo, hi = first
    _, dlo, dhi = stats.delong_auc_ci(y, a)
    assert lo < value < hi
    assert hi - lo == pytest.approx(dhi - dlo, rel=0.15)


def test_bootstrap_auc_ci_keeps_both_classes_in_every_resample():
    # two positives among 40: unstratified resamples would often hold no positive at all
    y = np.array([1, 1] + [0] * 38)
    score = np.linspace(0, 1, 40)[::-1]
    value, lo, hi = stats.bootstrap_auc_ci(y, score, n_boot=500, seed=0)
    assert value == 1.0 and lo == 1.0 and hi == 1.0
