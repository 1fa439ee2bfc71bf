"""The estimator contract of the interfaces and the Fittable save/load round trip (JSON + npz, no pickle)."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from harmkit import FeatureExtractor, FeatureHarmonizer, HarmkitError
from harmkit.errors import NotFittedError
from harmkit.interfaces import ARRAYS_FILE, STATE_FILE


class Shift(FeatureHarmonizer):
    """Subtracts the per-site mean: enough state to exercise save/load."""

    name = "shift"
    description = "test harmonizer"

    def __init__(self, scale: float = 1.0, label: str = "x"):
        self.scale = scale
        self.label = label

    def fit(self, features, sites, covariates=None, reference_site=None):
        sites = np.asarray(sites)
        self.sites_ = sorted(set(sites.tolist()))
        self.mean_ = np.stack([features[sites == s].to_numpy().mean(axis=0) for s in self.sites_])
        self.n_rows_ = int(len(features))
        return self

    def transform(self, features, sites, covariates=None):
        self.check_fitted()
        index = [self.sites_.index(s) for s in sites]
        return features - self.mean_[index] * self.scale


@pytest.fixture
def table():
    features = pd.DataFrame({"a": [1.0, 2.0, 3.0, 10.0, 12.0], "b": [0.5, 0.5, 1.0, 4.0, 5.0]})
    return features, ["s1", "s1", "s1", "s2", "s2"]


def test_constructor_only_stores_parameters():
    model = Shift(scale=2.0)
    assert model.get_params() == {"scale": 2.0, "label": "x"}
    assert repr(model) == "Shift(scale=2.0, label='x')"
    assert not [k for k in vars(model) if k.endswith("_")]


def test_set_params_refuses_unknown_names():
    with pytest.raises(HarmkitError, match="unknown parameter 'scal'; valid parameters: label, scale"):
        Shift().set_params(scal=3)
    assert Shift().set_params(scale=3).scale == 3


def test_fit_returns_self_and_transform_needs_fit(table):
    features, sites = table
    with pytest.raises(NotFittedError, match="shift is not fitted yet"):
        Shift().transform(features, sites)
    model = Shift()
    assert model.fit(features, sites) is model


def test_save_load_round_trip(tmp_path, table):
    features, sites = table
    model = Shift(scale=0.5, label="y").fit(features, sites)
    saved = model.save(tmp_path / "model")
    assert sorted(p.name for p in saved.iterdir()) == [ARRAYS_FILE, STATE_FILE]
    assert [p.name for p in tmp_path.iterdir()] == ["model"]  # no temporary directory left behind
    document = json.loads((saved / STATE_FILE).read_text())
    assert document["plugin"] == "shift" and document["params"] == {
        "scale": 0.5,
        "label": "y",
    }
    assert document["state"] == {"sites_": ["s1", "s2"], "n_rows_": 5}
    loaded = Shift.load(saved)
    assert loaded.get_params() == model.get_params()
    np.testing.assert_array_equal(loaded.mean_, model.mean_)
    pd.testing.assert_frame_equal(loaded.transform(features, sites), model.transform(features, sites))


def test_save_replaces_an_existing_model(tmp_path, table):
    features, sites = table
    Shift().fit(features[:3], sites[:3]).save(tmp_path / "m")
    Shift().fit(features, sites).save(tmp_path / "m")
    assert Shift.load(tmp_path / "m").n_rows_ == 5


def test_unfitted_model_cannot_be_saved(tmp_path):
    with pytest.raises(NotFittedError):
        Shift().save(tmp_path / "m")
    assert not (tmp_path / "m").exists()


def test_object_arrays_are_refused_when_saving(tmp_path, table):
    model = Shift().fit(*table)
    model.mean_ = np.array([{"a": 1}, None], dtype=object)
    with pytest.raises(TypeError, match="mean_: object arrays cannot be saved safely"):
        model.save(tmp_path / "m")
    assert list(tmp_path.iterdir()) == []


def test_pickled_arrays_are_refused_when_loading(tmp_path, table):
    saved = Shift().fit(*table).save(tmp_path / "m")
    np.savez(saved / ARRAYS_FILE, mean_=np.array([object()], dtype=object))  # what an attacker could ship
    with pytest.raises(HarmkitError, match="refuses to load them"):
        Shift.load(saved)


def test_loading_with_the_wrong_class_names_the_plugin(tmp_path, table):
    class Other(Shift):
        name = "other"

    saved = Shift().fit(*table).save(tmp_path / "m")
    with pytest.raises(HarmkitError, match="saved by plugin 'shift', not 'other'"):
        Other.load(saved)


@pytest.mark.parametrize(
    "damage, words",
    [
        (lambda d: (d / STATE_FILE).unlink(), "not a saved harmkit model"),
        (lambda d: (d / STATE_FILE).write_text("{"), "corrupt model file"),
        (
            lambda d: (d / STATE_FILE).write_text('{"format": "other/9"}'),
            "unknown model format",
        ),
        (lambda d: (d / ARRAYS_FILE).unlink(), "arrays.npz is missing"),
    ],
)
def test_damaged_model_directories_give_clear_errors(tmp_path, table, damage, words):
    saved = Shift().fit(*table).save(tmp_path / "m")
    damage(saved)
    with pytest.raises(HarmkitError, match=words):
        Shift.load(saved)


def test_non_json_state_fails_on_save(tmp_path, table):
    model = Shift().fit(*table)
    model.sites_ = {object()}
    with pytest.raises(TypeError):
        model.save(tmp_path / "m")


def test_feature_extractor_defaults():
    class Mean(FeatureExtractor):
        name = "mean"

        def __init__(self, bins: int = 8):
            self.bins = bins

        def extract(self, image, mask):
            return {"firstorder_Mean": 0.0}

        def feature_classes(self):
            return {"firstorder_Mean": "firstorder"}

    assert Mean(bins=4).settings() == {"bins": 4}
    assert Mean().version == "0" and Mean.kind == "feature-extractor"


def test_interfaces_are_abstract():
    with pytest.raises(TypeError):
        FeatureHarmonizer()
