"""ComBat feature harmonizer (plugin harmkit-combat): equal to neuroCombat, safe where neuroHarmonize is not."""

from __future__ import annotations

import contextlib
import io
import json
import warnings

import numpy as np
import pandas as pd
import pytest

pytest.importorskip("neuroHarmonize")
pytest.importorskip("neuroCombat")

from harmkit.errors import HarmkitError  # noqa: E402
from harmkit_combat import ComBat, ComBatTransformer, ComBatWarning, site_difference  # noqa: E402


def make_table(n_per_site=(30, 30, 30), n_features=6, seed=0, covariates=False):
    """Features with a per-site location/scale effect (and optionally age/sex effects)."""
    rng = np.random.default_rng(seed)
    sites = np.concatenate([[f"S{k}"] * n for k, n in enumerate(n_per_site)])
    n = len(sites)
    base = rng.normal(size=(n, n_features)) * rng.uniform(0.5, 2.0, n_features) + rng.uniform(-3, 3, n_features)
    shift = {f"S{k}": rng.normal(scale=1.0, size=n_features) for k in range(len(n_per_site))}
    scale = {f"S{k}": rng.uniform(0.6, 1.6, n_features) for k in range(len(n_per_site))}
    values = np.array([base[i] * scale[s] + shift[s] for i, s in enumerate(sites)])
    cov = pd.DataFrame({"age": rng.uniform(40, 80, n), "sex": rng.integers(0, 2, n).astype(float)})
    if covariates:
        values += np.outer(cov["age"] - 60, rng.normal(scale=0.05, size=n_features)) + np.outer(
            cov["sex"], rng.normal(size=n_features)
        )
    index = pd.Index([f"subj{i:03d}" for i in range(n)], name="subject_id")
    features = pd.DataFrame(values, index=index, columns=[f"glcm_F{j}" for j in range(n_features)])
    cov.index = index
    return features, pd.Series(sites, index=index), cov


def run_neurocombat(features, sites, cov=None, eb=True):
    from neuroCombat import neuroCombat

    covars = pd.DataFrame({"batch": np.asarray(sites)})
    continuous = []
    if cov is not None:
        for c in cov.columns:
            covars[c] = cov[c].to_numpy()
            continuous.append(c)
    with contextlib.redirect_stdout(io.StringIO()), np.errstate(all="ignore"):
        out = neuroCombat(
            features.to_numpy(dtype=float).T,
            covars,
            "batch",
            continuous_cols=continuous,
            eb=eb,
        )
    return out["data"].T


def quiet_fit(model, *args, **kwargs):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ComBatWarning)
        return model.fit(*args, **kwargs)


# ----------------------------------------------------------- equal to neuroCombat
def test_empirical_bayes_equals_neurocombat_without_covariates():
    features, sites, _ = make_table()
    ours = quiet_fit(ComBat(), features, sites).transform(features, sites)
    expected = run_neurocombat(features, sites)
    np.testing.assert_allclose(ours.to_numpy(), expected, rtol=0, atol=1e-8)
    assert not np.allclose(ours.to_numpy(), features.to_numpy())  # it did change something


def test_empirical_bayes_equals_neurocombat_with_covariates():
    features, sites, cov = make_table(covariates=True)
    ours = quiet_fit(ComBat(), features, sites, cov).transform(features, sites, cov)
    expected = run_neurocombat(features, sites, cov)
    np.testing.assert_allclose(ours.to_numpy(), expected, rtol=0, atol=1e-8)


def test_location_scale_without_eb_equals_neurocombat_eb_false():
    features, sites, cov = make_table(covariates=True, seed=3)
    ours = quiet_fit(ComBat(eb=False), features, sites, cov).transform(features, sites, cov)
    expected = run_neurocombat(features, sites, cov, eb=False)
    np.testing.assert_allclose(ours.to_numpy(), expected, rtol=0, atol=1e-8)


def test_output_keeps_index_and_columns():
    features, sites, _ = make_table()
    out = quiet_fit(ComBat(), features, sites).transform(features, sites)
    assert out.index.equals(features.index) and list(out.columns) == list(features.columns)


# ----------------------------------------------------------- reference site
def test_reference_site_rows_come_back_unchanged_and_others_move_onto_it():
    features, sites, _ = make_table(seed=1)
    out = quiet_fit(ComBat(), features, sites, reference_site="S1").transform(features, sites)
    ref = (sites == "S1").to_numpy()
    np.testing.assert_array_equal(out[ref].to_numpy(), features[ref].to_numpy())
    for other in ("S0", "S2"):
        rows = (sites == other).to_numpy()
        before = np.abs(features[rows].mean() - features[ref].mean()).mean()
        after = np.abs(out[rows].mean() - features[ref].mean()).mean()
        assert after < 0.25 * before


def test_reference_site_rows_unchanged_when_applied_to_new_rows():
    features, sites, _ = make_table(n_per_site=(40, 40, 40), seed=2)
    train = np.arange(len(features)) % 4 != 0
    model = quiet_fit(ComBat(), features[train], sites[train], reference_site="S0")
    test = ~train
    out = model.transform(features[test], sites[test])
    ref = (sites[test] == "S0").to_numpy()
    np.testing.assert_array_equal(out[ref].to_numpy(), features[test][ref].to_numpy())


# ----------------------------------------------------------- fit on some rows, apply to others
def test_fit_on_train_apply_to_test_equals_transductive_when_train_is_all_rows():
    from neuroHarmonize import harmonizationLearn

    features, sites, cov = make_table(covariates=True, seed=4)
    covars = pd.DataFrame(
        {
            "SITE": sites.to_numpy(),
            "age": cov["age"].to_numpy(),
            "sex": cov["sex"].to_numpy(),
        }
    )
    with contextlib.redirect_stdout(io.StringIO()), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        _, transductive = harmonizationLearn(features.to_numpy(), covars)
    model = quiet_fit(ComBat(), features, sites, cov)
    np.testing.assert_allclose(
        model.transform(features, sites, cov).to_numpy(),
        transductive,
        atol=1e-10,
        rtol=0,
    )


def test_apply_equals_neuroharmonize_transductive_result_in_reference_mode():
    from neuroHarmonize import harmonizationLearn

    features, sites, cov = make_table(covariates=True, seed=10)
    covars = pd.DataFrame(
        {
            "SITE": sites.to_numpy(),
            "age": cov["age"].to_numpy(),
            "sex": cov["sex"].to_numpy(),
        }
    )
    with contextlib.redirect_stdout(io.StringIO()), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        _, transductive = harmonizationLearn(features.to_numpy(), covars, ref_batch="S0")
    model = quiet_fit(ComBat(), features, sites, cov, reference_site="S0")
    np.testing.assert_allclose(
        model.transform(features, sites, cov).to_numpy(),
        transductive,
        atol=1e-10,
        rtol=0,
    )


def test_rows_are_harmonized_independently_of_the_batch_they_come_in():
    features, sites, cov = make_table(covariates=True, seed=5)
    model = quiet_fit(ComBat(), features, sites, cov)
    whole = model.transform(features, sites, cov)
    part = model.transform(features.iloc[7:19], sites.iloc[7:19], cov.iloc[7:19])
    np.testing.assert_allclose(part.to_numpy(), whole.iloc[7:19].to_numpy(), atol=1e-12)


# ----------------------------------------------------------- traps of neuroHarmonize
def test_site_with_one_scan_is_refused_naming_the_site():
    features, sites, _ = make_table(n_per_site=(30, 30, 1))
    with pytest.raises(HarmkitError, match="'S2'.*single scan"):
        ComBat().fit(features, sites)


def test_one_missing_value_is_refused_naming_feature_and_subject():
    features, sites, _ = make_table()
    features.iloc[5, 2] = np.nan
    with pytest.raises(HarmkitError, match=r"glcm_F2.*subj005"):
        ComBat().fit(features, sites)
    model = quiet_fit(ComBat(), make_table()[0], sites)
    with pytest.raises(HarmkitError, match=r"glcm_F2.*subj005"):
        model.transform(features, sites)


def test_site_unseen_at_fit_is_refused_naming_the_site():
    features, sites, _ = make_table()
    model = quiet_fit(ComBat(), features, sites)
    new_sites = sites.copy()
    new_sites.iloc[:3] = "NEW"
    with pytest.raises(HarmkitError, match="'NEW'.*not in the training rows"):
        model.transform(features, new_sites)


def test_reordered_covariate_columns_give_the_same_result():
    features, sites, cov = make_table(covariates=True, seed=6)
    model = quiet_fit(ComBat(), features, sites, cov)
    a = model.transform(features, sites, cov)
    b = model.transform(features, sites, cov[["sex", "age"]])
    np.testing.assert_allclose(a.to_numpy(), b.to_numpy(), atol=1e-12)
    # and fitting on the reordered frame learns the same model
    c = quiet_fit(ComBat(), features, sites, cov[["sex", "age"]]).transform(features, sites, cov)
    np.testing.assert_allclose(a.to_numpy(), c.to_numpy(), atol=1e-10)


def test_covariate_rows_in_another_order_are_aligned_by_index():
    features, sites, cov = make_table(covariates=True, seed=6)
    model = quiet_fit(ComBat(), features, sites, cov)
    shuffled = cov.sample(frac=1.0, random_state=0)
    np.testing.assert_allclose(
        model.transform(features, sites, shuffled).to_numpy(),
        model.transform(features, sites, cov).to_numpy(),
        atol=1e-12,
    )


def test_missing_covariate_column_at_transform_is_named():
    features, sites, cov = make_table(covariates=True)
    model = quiet_fit(ComBat(), features, sites, cov)
    with pytest.raises(HarmkitError, match="'sex'"):
        model.transform(features, sites, cov[["age"]])


def test_reference_site_not_found_is_refused_naming_it():
    features, sites, _ = make_table()
    with pytest.raises(HarmkitError, match="reference site 'HGJ'.*'S0'"):
        ComBat().fit(features, sites, reference_site="HGJ")


def test_feature_constant_within_a_site_is_passed_through_and_reported():
    features, sites, _ = make_table(seed=7)
    features.loc[(sites == "S1").to_numpy(), "glcm_F3"] = 2.5
    with pytest.warns(ComBatWarning, match="glcm_F3.*S1"):
        model = ComBat().fit(features, sites)
    assert model.constant_features_ == {"glcm_F3": ["S1"]}
    out = model.transform(features, sites)
    np.testing.assert_array_equal(out["glcm_F3"].to_numpy(), features["glcm_F3"].to_numpy())
    assert np.isfinite(out.to_numpy()).all()
    others = features.drop(columns="glcm_F3")
    alone = quiet_fit(ComBat(), others, sites).transform(others, sites)
    np.testing.assert_allclose(out.drop(columns="glcm_F3").to_numpy(), alone.to_numpy(), atol=1e-12)


def test_covariate_confounded_with_site_is_refused_naming_it():
    features, sites, cov = make_table()
    cov["scanner_dose"] = sites.map({"S0": 1.0, "S1": 2.0, "S2": 3.0})
    with pytest.raises(HarmkitError, match="'scanner_dose'.*confounded with site"):
        ComBat().fit(features, sites, cov)


def test_non_numeric_covariate_is_refused_naming_it():
    features, sites, cov = make_table()
    cov["sex"] = np.where(cov["sex"] > 0, "F", "M")
    with pytest.raises(HarmkitError, match="'sex' is not numeric"):
        ComBat().fit(features, sites, cov)


def test_metadata_columns_are_carried_through_unchanged():
    features, sites, _ = make_table()
    table = features.copy()
    table.insert(0, "site", sites)
    out = quiet_fit(ComBat(), table, sites).transform(table, sites)
    assert list(out.columns) == list(table.columns)
    assert (out["site"] == table["site"]).all()
    np.testing.assert_allclose(out.drop(columns="site").to_numpy(), run_neurocombat(features, sites), atol=1e-8)


# ----------------------------------------------------------- persistence
def test_save_load_is_json_and_npz_and_reproduces_transform(tmp_path):
    import harmkit

    features, sites, cov = make_table(covariates=True, seed=8)
    model = quiet_fit(ComBat(), features, sites, cov, reference_site="S2")
    path = model.save(tmp_path / "combat")
    assert sorted(p.name for p in path.iterdir()) == [
        "arrays.npz",
        "harmkit-model.json",
    ]
    document = json.loads((path / "harmkit-model.json").read_text())
    assert document["plugin"] == "combat" and document["state"]["reference_site_"] == "S2"
    with np.load(path / "arrays.npz", allow_pickle=False) as npz:
        assert "gamma_star_" in npz.files
    loaded = harmkit.load_model(path)
    assert isinstance(loaded, ComBat)
    np.testing.assert_array_equal(
        loaded.transform(features, sites, cov).to_numpy(),
        model.transform(features, sites, cov).to_numpy(),
    )


def test_unfitted_transform_is_refused():
    features, sites, _ = make_table()
    with pytest.raises(HarmkitError, match="not fitted"):
        ComBat().transform(features, sites)


# ----------------------------------------------------------- smooth (GAM) covariates
def test_smooth_age_term_removes_site_effect_better_than_linear_when_age_effect_is_curved(
    tmp_path,
):
    rng = np.random.default_rng(11)
    n = 80
    sites = pd.Series(["A"] * n + ["B"] * n)
    age = np.concatenate([rng.uniform(20, 60, n), rng.uniform(40, 80, n)])  # ages differ by site
    effect = 4.0 * np.sin((age - 20) / 60 * np.pi)  # curved age effect
    truth = np.column_stack(
        [
            effect + rng.normal(scale=0.3, size=2 * n),
            -effect + rng.normal(scale=0.3, size=2 * n),
        ]
    )
    observed = truth + np.where(sites.to_numpy()[:, None] == "B", [1.5, -1.0], 0.0)
    features = pd.DataFrame(observed, columns=["f0", "f1"])
    cov = pd.DataFrame({"age": age})
    linear = quiet_fit(ComBat(eb=False), features, sites, cov, reference_site="A").transform(features, sites, cov)
    smooth_model = quiet_fit(ComBat(eb=False, smooth_terms=["age"]), features, sites, cov, reference_site="A")
    smooth = smooth_model.transform(features, sites, cov)
    b = (sites == "B").to_numpy()
    err_linear = np.abs(linear[b].to_numpy() - truth[b]).mean()
    err_smooth = np.abs(smooth[b].to_numpy() - truth[b]).mean()
    assert err_smooth < 0.7 * err_linear
    loaded = ComBat.load(smooth_model.save(tmp_path / "gam"))
    np.testing.assert_allclose(loaded.transform(features, sites, cov).to_numpy(), smooth.to_numpy(), atol=1e-10)


def test_smooth_term_must_be_a_covariate():
    features, sites, cov = make_table()
    with pytest.raises(HarmkitError, match="'bmi'"):
        ComBat(smooth_terms=["bmi"]).fit(features, sites, cov)


# ----------------------------------------------------------- do the sites differ?
def test_site_difference_counts_features_that_differ():
    rng = np.random.default_rng(12)
    a = rng.normal(size=(40, 4))
    b = rng.normal(size=(40, 4))
    b[:, :2] += 2.0  # two features shifted at site B
    features = pd.DataFrame(np.vstack([a, b]), columns=list("wxyz"))
    sites = ["A"] * 40 + ["B"] * 40
    for test in ("ks", "ad"):
        report = site_difference(features, sites, test=test)
        assert report.n_features == 4
        assert list(report.table.index[report.table["differs"]]) == ["w", "x"]
        assert report.small_sites == []


def test_small_sites_are_warned_about_and_report_is_a_fitted_attribute():
    features, sites, _ = make_table(n_per_site=(30, 12, 30))
    with pytest.warns(ComBatWarning, match="'S1' has 12 scans"):
        model = ComBat().fit(features, sites)
    report = model.site_difference_
    assert report["small_sites"] == ["S1"] and report["site_counts"]["S1"] == 12
    assert 0 <= report["n_differing"] <= report["n_features"] == 6
    json.dumps(report)


def test_site_test_can_be_skipped_but_small_sites_are_still_warned_about():
    features, sites, _ = make_table(n_per_site=(30, 12, 30))
    with pytest.warns(ComBatWarning, match="'S1' has 12 scans"):
        model = ComBat(site_test=None).fit(features, sites)
    assert model.site_difference_ is None


# ----------------------------------------------------------- scikit-learn
def test_transformer_in_cross_val_score_fits_per_fold_and_hides_the_site():
    from sklearn.base import clone
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import StratifiedKFold, cross_val_score
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    features, sites, cov = make_table(n_per_site=(40, 40, 40), covariates=True, seed=9)
    y = (
        features["glcm_F0"] + np.random.default_rng(0).normal(size=len(features)) > features["glcm_F0"].median()
    ).astype(int)
    X = features.copy()
    X["site"] = sites
    X["age"] = cov["age"]
    pipe = make_pipeline(
        ComBatTransformer(covariate_columns=["age"]),
        StandardScaler(),
        LogisticRegression(),
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ComBatWarning)
        scores = cross_val_score(pipe, X, y, cv=StratifiedKFold(4, shuffle=True, random_state=0))
        assert np.isfinite(scores).all() and len(scores) == 4
        # a fitted step equals ComBat fitted on the same training rows
        train, test = X.iloc[:90], X.iloc[90:]
        step = clone(pipe.steps[0][1]).fit(train)
        expected = (
            ComBat()
            .fit(features.iloc[:90], sites.iloc[:90], cov[["age"]].iloc[:90])
            .transform(features.iloc[90:], sites.iloc[90:], cov[["age"]].iloc[90:])
        )
    out = step.transform(test)
    assert "site" not in out.columns and "age" not in out.columns
    np.testing.assert_allclose(out.to_numpy(), expected.to_numpy(), atol=1e-12)
    assert list(step.get_feature_names_out()) == list(features.columns)


def test_transformer_without_site_column_says_which_column_it_needs():
    features, _, _ = make_table()
    with pytest.raises(HarmkitError, match="no site column 'site'"):
        ComBatTransformer().fit(features)


# ----------------------------------------------------------- plugin
def test_registered_as_combat_from_its_own_distribution():
    import harmkit

    info = {p.name: p for p in harmkit.list_plugins()}["combat"]
    assert info.distribution == "harmkit-combat" and info.kind == "feature-harmonizer"
    assert isinstance(harmkit.get_harmonizer("combat", eb=False), ComBat)
