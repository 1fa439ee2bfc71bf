"""Reproducibility statistics: OVL validated against the analytic normal case, class tables, COV tests, figures."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from harmkit.reproducibility import (
    class_summary,
    cov_comparison,
    feature_overlap,
    normal_overlap,
    overlap_change,
    overlap_coefficient,
    plot_cov_by_site,
    plot_overlap_by_class,
)


def test_two_samples_of_one_normal_overlap_almost_completely():
    rng = np.random.default_rng(0)
    assert overlap_coefficient(rng.normal(size=5000), rng.normal(size=5000)) > 0.95


@pytest.mark.parametrize("d", [0.25, 1.0, 2.0, 3.0])
def test_shifted_normals_match_the_analytic_overlap(d):
    rng = np.random.default_rng(int(d * 100))
    estimate = overlap_coefficient(rng.normal(0, 1, 20000), rng.normal(d, 1, 20000))
    assert estimate == pytest.approx(normal_overlap(d), abs=0.02)


def test_analytic_reference_values():
    assert normal_overlap(0) == 1.0
    assert normal_overlap(2) == pytest.approx(0.3173, abs=1e-4)  # 2 Φ(-1)


def test_overlap_is_symmetric_scale_invariant_and_handles_unequal_sizes():
    rng = np.random.default_rng(1)
    a, b = rng.normal(0, 1, 300), rng.normal(1, 1.5, 80)
    ovl = overlap_coefficient(a, b)
    assert ovl == pytest.approx(overlap_coefficient(b, a), abs=1e-9)
    assert ovl == pytest.approx(overlap_coefficient(1000 * a + 7, 1000 * b + 7), abs=1e-3)
    assert 0 < ovl < 1


def test_disjoint_and_degenerate_samples():
    assert overlap_coefficient([0, 0.1, 0.2], [100, 100.1, 100.2]) < 1e-6
    assert overlap_coefficient([2, 2, 2], [2, 2]) == 1.0
    assert overlap_coefficient([2, 2, 2], [3, 3]) == 0.0
    assert overlap_coefficient([2, 2, 2], [1.0, 5.0, 9.0]) < 0.5
    assert np.isnan(overlap_coefficient([1.0], [1.0, 2.0]))
    assert overlap_coefficient([0, 1, np.nan, 2], [0, 1, 2]) == pytest.approx(1.0, abs=1e-6)


def _tables(seed=0, n_a=40, n_b=30, shift=1.5, shrink=0.2):
    """Before: site B shifted; after: the shift shrunk to ``shrink`` of it, for two classes."""
    rng = np.random.default_rng(seed)
    names = [f"glcm_F{i}" for i in range(8)] + [f"ngtdm_F{i}" for i in range(5)]
    sites = ["A"] * n_a + ["B"] * n_b
    base = rng.normal(size=(n_a + n_b, len(names)))
    offsets = np.r_[np.zeros(n_a), np.ones(n_b)][:, None] * shift * (1 + np.arange(len(names)) / len(names))
    index = pd.Index([f"s{i}" for i in range(n_a + n_b)], name="subject_id")
    before = pd.DataFrame(base + offsets, index=index, columns=names)
    after = pd.DataFrame(base + shrink * offsets, index=index, columns=names)
    for table in (before, after):
        table.insert(0, "site", sites)
        table.insert(1, "site_group", sites)
        table.attrs["feature_classes"] = {n: n.split("_")[0] for n in names}
    return before, after


def test_feature_overlap_per_feature_and_class():
    before, _ = _tables()
    table = feature_overlap(before)
    assert list(table.columns) == ["class", "overlap", "n_a", "n_b"]
    assert table.shape[0] == 13 and set(table["class"]) == {"glcm", "ngtdm"}
    assert (table["n_a"] == 40).all() and (table["n_b"] == 30).all()
    assert table.attrs["group_a"] == "A" and table["overlap"].between(0, 1).all()


def test_more_than_two_groups_need_names():
    before, _ = _tables()
    before["site_group"] = ["A"] * 20 + ["C"] * 20 + ["B"] * 30
    with pytest.raises(ValueError, match="exactly two"):
        feature_overlap(before)
    assert feature_overlap(before, group_a="A", group_b="B")["n_a"].eq(20).all()


def test_harmonization_that_removes_the_shift_improves_overlap_significantly():
    before, after = _tables()
    change = overlap_change(before, after)
    assert (change["improvement"] > 0).all()
    summary = class_summary(change)
    assert list(summary.index) == ["glcm", "ngtdm"]
    assert summary.loc["glcm", "n_features"] == 8
    assert summary.loc["glcm", "wilcoxon_p"] < 0.01  # 8 of 8 improve: exact two-sided p = 2/256
    assert np.isnan(summary.loc["ngtdm", "wilcoxon_p"])  # 5 features: no test, as in the paper
    assert summary.loc["glcm", "improvement_mean"] == pytest.approx(
        change.loc[change["class"] == "glcm", "improvement"].mean()
    )
    assert summary.loc["glcm", "after_mean"] > summary.loc["glcm", "before_mean"]


def test_no_change_gives_no_significant_improvement():
    before, _ = _tables()
    summary = class_summary(overlap_change(before, before.copy()))
    assert summary.loc["glcm", "improvement_mean"] == 0 and summary.loc["glcm", "wilcoxon_p"] == 1.0


def _covs(seed=0):
    rng = np.random.default_rng(seed)
    ids = [f"r{i}" for i in range(50)] + [f"h{i}" for i in range(50)]
    sites = pd.Series(["REF"] * 50 + ["OTHER"] * 50, index=ids)
    before = pd.Series(np.r_[rng.normal(0.09, 0.01, 50), rng.normal(0.14, 0.02, 50)], index=ids)
    after = pd.Series(rng.normal(0.095, 0.012, 50), index=ids[50:])  # only the harmonized site
    return before, after, sites


def test_cov_comparison_reports_medians_iqrs_and_tests():
    before, after, sites = _covs()
    result = cov_comparison(before, after, sites, reference_site="REF")
    per_site = result["per_site"]
    assert per_site.loc[("REF", "before"), "median"] == pytest.approx(np.median(before[:50]))
    assert per_site.loc[("OTHER", "after"), "iqr"] == pytest.approx(np.subtract(*np.percentile(after, [75, 25])))
    assert per_site.loc[("REF", "after"), "n"] == 50  # unchanged reference stands for itself
    row = result["tests"].loc["OTHER"]
    assert row["mwu_before_p"] < 1e-6
    assert row["distance_after"] < row["distance_before"] and row["distance_p"] < 1e-4 and row["distance_shrank"]


def test_cov_distance_does_not_shrink_when_nothing_changes():
    before, _, sites = _covs()
    row = cov_comparison(before, before[50:], sites, reference_site="REF")["tests"].loc["OTHER"]
    assert not row["distance_shrank"] and row["distance_p"] == 1.0


def test_cov_comparison_unknown_reference_site():
    before, after, sites = _covs()
    with pytest.raises(ValueError, match="reference site 'X'"):
        cov_comparison(before, after, sites, reference_site="X")


def test_figures_are_written_as_png(tmp_path):
    before, after = _tables()
    path = plot_overlap_by_class(overlap_change(before, after), tmp_path / "fig" / "overlap.png", title="B → A")
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    cov_before, cov_after, sites = _covs()
    path = plot_cov_by_site(cov_before, cov_after, sites, "REF", tmp_path / "cov.png")
    assert path.stat().st_size > 1000
    assert not [p for p in tmp_path.rglob(".*")]
