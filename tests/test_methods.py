"""Method strings: stages, aliases, baseline, helpful errors (on a fresh registry of test classes)."""

from __future__ import annotations

import types

import pytest

import harmkit
from harmkit import FeatureHarmonizer, HarmkitError, ImageHarmonizer
from harmkit.methods import parse_method, parse_methods
from harmkit.plugins import Registry


class Gan(ImageHarmonizer):
    name = "cyclegan"
    aliases = ("gan",)

    def fit(self, cohort, reference_site):
        return self

    def transform(self, scan, target_site=None):
        return scan


class HistMatch(Gan):
    name = "histmatch"
    aliases = ()


class Combat(FeatureHarmonizer):
    name = "combat"

    def fit(self, features, sites, covariates=None, reference_site=None):
        return self

    def transform(self, features, sites, covariates=None):
        return features


@pytest.fixture
def registry() -> Registry:
    module = types.ModuleType("fake_plugin")
    module.harmkit_image_harmonizers = harmkit.hookimpl(lambda: [Gan, HistMatch])
    module.harmkit_feature_harmonizers = harmkit.hookimpl(lambda: [Combat])
    reg = Registry()
    reg.register_module(module, "harmkit-fake", "1.0", "fake")
    return reg


def test_image_then_feature_stage(registry):
    method = parse_method("gan+combat", registry)
    assert [(s.name, s.kind) for s in method.stages] == [
        ("cyclegan", "image-harmonizer"),
        ("combat", "feature-harmonizer"),
    ]
    assert [s.name for s in method.image_stages] == ["cyclegan"] and [s.name for s in method.feature_stages] == [
        "combat"
    ]
    assert method.label == "gan+combat"


def test_alias_and_canonical_name_give_the_same_stage(registry):
    assert parse_method("gan", registry).stages == parse_method("cyclegan", registry).stages


def test_case_and_spaces_are_normalised(registry):
    assert parse_method(" GAN + ComBat ", registry).label == "gan+combat"


def test_none_is_the_baseline(registry):
    method = parse_method("none", registry)
    assert method.is_baseline and method.stages == ()


def test_unknown_name_lists_available_names_and_a_close_match(registry):
    with pytest.raises(HarmkitError) as info:
        parse_method("combatt", registry)
    message = str(info.value)
    assert "unknown image-harmonizer or feature-harmonizer 'combatt'" in message
    assert "did you mean 'combat'?" in message
    assert "Available: combat, cyclegan, histmatch, gan" in message


def test_feature_stage_before_image_stage_is_an_error(registry):
    with pytest.raises(HarmkitError, match="image stage 'cyclegan' comes after a feature stage"):
        parse_method("combat+gan", registry)


def test_two_image_stages_chain(registry):
    assert [s.name for s in parse_method("histmatch+gan+combat", registry).stages] == [
        "histmatch",
        "cyclegan",
        "combat",
    ]


def test_none_cannot_be_combined(registry):
    with pytest.raises(HarmkitError, match="'none' cannot be combined"):
        parse_method("none+combat", registry)


@pytest.mark.parametrize("text", ["", "  ", "gan++combat", "gan+"])
def test_empty_names_and_stages_are_errors(registry, text):
    with pytest.raises(HarmkitError):
        parse_method(text, registry)


def test_parse_methods_always_starts_with_the_baseline(registry):
    assert [m.label for m in parse_methods("gan,combat,gan+combat", registry)] == [
        "none",
        "gan",
        "combat",
        "gan+combat",
    ]
    assert [m.label for m in parse_methods("combat,none", registry)] == [
        "combat",
        "none",
    ]


def test_parse_methods_refuses_duplicates(registry):
    with pytest.raises(HarmkitError, match="listed twice: combat"):
        parse_methods("combat, combat", registry)
