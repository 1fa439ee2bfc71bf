"""harmkit.testing.check_plugin: every registered plugin passes the contract; broken plugins fail it by name."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from harmkit import FeatureHarmonizer, list_plugins
from harmkit.testing import PluginContractError, check_plugin, synthetic_features

# Small settings so the checks run in seconds; fp32 because bf16 autocast on CPU is not bit-reproducible.
FAST = {
    "cyclegan": dict(
        ngf=2,
        ndf=2,
        n_res_blocks=1,
        n_d_layers=2,
        patch_size=16,
        window=(16, 16, 16),
        steps=2,
        threads=1,
        progress=False,
        device="cpu",
        precision="fp32",
    ),
}


@pytest.mark.parametrize("info", list_plugins(), ids=lambda info: f"{info.kind}:{info.name}")
def test_every_registered_plugin_passes_the_contract(info, one_torch_thread):
    passed = check_plugin(info.cls(**FAST.get(info.name, {})))
    assert "name and description" in passed and "constructor stores parameters" in passed
    if info.kind.endswith("harmonizer"):
        assert "save and load round trip without pickle" in passed and "same parameters, same outputs" in passed


def test_the_example_third_party_plugin_passes_the_contract():
    sys.path.insert(0, str(Path(__file__).parent / "plugins" / "harmkit-example"))
    try:
        from harmkit_example.zscore import ZScoreHarmonizer
    finally:
        sys.path.pop(0)
    assert len(check_plugin(ZScoreHarmonizer())) == 6


class _Shift(FeatureHarmonizer):
    """A correct little harmonizer: subtract each site's mean (jittered by ``noise``, drawn from ``random_state``)."""

    name = "shift"
    description = "per-site mean shift"

    def __init__(self, noise: float = 0.0, random_state: int | None = 0):
        self.noise = noise
        self.random_state = random_state

    def fit(self, features, sites, covariates=None, reference_site=None):
        rng = np.random.default_rng(self.random_state)
        frame = features.assign(_site=list(sites))
        means = {s: g.drop(columns="_site").mean().to_numpy() for s, g in frame.groupby("_site")}
        self.means_ = {s: (v + self.noise * rng.normal(size=v.shape)).tolist() for s, v in means.items()}
        return self

    def transform(self, features, sites, covariates=None):
        self.check_fitted()
        shift = np.array([self.means_[s] for s in sites])
        out = features.to_numpy(dtype=float) - shift
        return pd.DataFrame(out, index=features.index, columns=features.columns)


def test_a_correct_small_harmonizer_passes():
    assert len(check_plugin(_Shift())) == 6


def test_fit_that_does_not_return_self_fails_with_the_check_named():
    class NoSelf(_Shift):
        def fit(self, *args, **kwargs):
            super().fit(*args, **kwargs)

    with pytest.raises(
        PluginContractError,
        match=r"NoSelf \(shift\): check 'fit returns self' failed: fit\(\) must return self",
    ):
        check_plugin(NoSelf())


def test_unseeded_randomness_fails_the_determinism_check():
    with pytest.raises(PluginContractError, match="same parameters, same outputs.*seed parameter"):
        check_plugin(_Shift(noise=0.1, random_state=None))


def test_a_constructor_that_changes_its_arguments_fails():
    class Rounding(_Shift):
        def __init__(self, noise: float = 0.0, random_state: int | None = 0):
            self.noise = round(noise + 1)
            self.random_state = random_state

    with pytest.raises(PluginContractError, match="constructor stores parameters"):
        check_plugin(Rounding(noise=0.3))


def test_transform_before_fit_must_raise_not_fitted_error():
    class Eager(_Shift):
        def transform(self, features, sites, covariates=None):
            return features

    with pytest.raises(PluginContractError, match="NotFittedError"):
        check_plugin(Eager())


def test_a_model_that_loses_state_on_save_fails_the_round_trip():
    class Forgetful(_Shift):
        def get_state(self):
            meta, arrays = super().get_state()
            return {k: {s: [0.0] * len(v) for s, v in val.items()} for k, val in meta.items()}, arrays

    with pytest.raises(PluginContractError, match="saved and loaded model gives other outputs"):
        check_plugin(Forgetful())


def test_a_plugin_without_a_name_fails():
    class Nameless(_Shift):
        name = ""

    with pytest.raises(PluginContractError, match="class attribute 'name'"):
        check_plugin(Nameless())


def test_synthetic_features_really_differ_between_sites():
    table, sites = synthetic_features()
    means = table.groupby(sites.to_numpy()).mean().mean(axis=1)
    assert means["S1"] - means["S0"] > 1 and means["S0"] - means["S2"] > 0.5
