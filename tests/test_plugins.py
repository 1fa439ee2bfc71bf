"""The plugin system: registry rules, real entry points, and the out-of-tree example plugin."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import types
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import harmkit
from harmkit import FeatureHarmonizer, HarmkitError
from harmkit.plugins import Registry

EXAMPLE = Path(__file__).parent / "plugins" / "harmkit-example"


class Twin(FeatureHarmonizer):
    name = "twin"
    description = "identity"

    def fit(self, features, sites, covariates=None, reference_site=None):
        self.fitted_ = True
        return self

    def transform(self, features, sites, covariates=None):
        return features


class OtherTwin(Twin):
    description = "another identity claiming the same name"


def plugin_module(**hooks) -> types.ModuleType:
    module = types.ModuleType(f"fake_{id(hooks)}")
    for hook, classes in hooks.items():
        setattr(module, hook, harmkit.hookimpl(lambda classes=classes: classes))
    return module


def test_registered_plugin_carries_kind_distribution_version_and_description():
    registry = Registry()
    registry.register_module(plugin_module(harmkit_feature_harmonizers=[Twin]), "harmkit-twin", "2.1", "twin")
    (info,) = registry.all()
    assert (
        info.name,
        info.kind,
        info.distribution,
        info.version,
        info.description,
    ) == ("twin", "feature-harmonizer", "harmkit-twin", "2.1", "identity")
    assert registry.get("twin", "feature-harmonizer").cls is Twin


def test_two_distributions_claiming_one_name_is_an_error_naming_both():
    registry = Registry()
    registry.register_module(plugin_module(harmkit_feature_harmonizers=[Twin]), "harmkit-one", "1.0", "one")
    registry.register_module(
        plugin_module(harmkit_feature_harmonizers=[OtherTwin]),
        "harmkit-two",
        "1.0",
        "two",
    )
    with pytest.raises(HarmkitError) as info:
        registry.get("twin", ("image-harmonizer", "feature-harmonizer"))
    assert "two plugins claim the name 'twin'" in str(info.value)
    assert "harmkit-one" in str(info.value) and "harmkit-two" in str(info.value)
    assert [e.distribution for e in registry.errors] == ["harmkit-two"]


def test_image_and_feature_harmonizers_share_one_namespace():
    class ImageTwin(harmkit.ImageHarmonizer):
        name = "twin"

        def fit(self, cohort, reference_site):
            return self

        def transform(self, scan, target_site=None):
            return scan

    registry = Registry()
    registry.register_module(plugin_module(harmkit_feature_harmonizers=[Twin]), "harmkit-one", "1.0", "one")
    registry.register_module(
        plugin_module(harmkit_image_harmonizers=[ImageTwin]),
        "harmkit-img",
        "1.0",
        "img",
    )
    assert "harmkit-img" in registry.errors[0].error


def test_a_class_of_the_wrong_kind_is_reported_and_the_others_load():
    registry = Registry()
    registry.register_module(
        plugin_module(harmkit_image_harmonizers=[Twin], harmkit_feature_harmonizers=[Twin]),
        "harmkit-mixed",
        "1.0",
        "mixed",
    )
    assert [p.name for p in registry.all()] == ["twin"]
    assert "is not a ImageHarmonizer subclass" in registry.errors[0].error


def test_a_hook_that_raises_is_reported():
    def broken():
        raise RuntimeError("no licence file")

    module = types.ModuleType("broken_hook")
    module.harmkit_feature_harmonizers = harmkit.hookimpl(broken)
    registry = Registry()
    registry.register_module(module, "harmkit-broken", "0.1", "broken")
    assert registry.errors[0].error == "RuntimeError: no licence file"


def write_distribution(site: Path, dist: str, module: str, source: str) -> None:
    """An installed distribution as pip would leave it: a module plus a dist-info with an entry point."""
    (site / f"{module}.py").write_text(textwrap.dedent(source))
    info = site / f"{dist.replace('-', '_')}-1.0.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {dist}\nVersion: 1.0\n")
    (info / "entry_points.txt").write_text(f"[harmkit]\n{module} = {module}\n")


TWIN_SOURCE = """
    import harmkit

    class {cls}(harmkit.FeatureHarmonizer):
        name = "{name}"
        description = "test plugin"

        def fit(self, features, sites, covariates=None, reference_site=None):
            return self

        def transform(self, features, sites, covariates=None):
            return features

    @harmkit.hookimpl
    def harmkit_feature_harmonizers():
        return [{cls}]
"""


def test_entry_points_broken_import_and_duplicate_names(tmp_path, monkeypatch):
    """Real entry points found on sys.path: a failing import is reported, others load, a name clash names both."""
    write_distribution(
        tmp_path,
        "harmkit-broken",
        "hktest_broken",
        "raise ImportError('needs libfoo')\n",
    )
    write_distribution(
        tmp_path,
        "harmkit-good",
        "hktest_good",
        TWIN_SOURCE.format(cls="Good", name="hktest-good"),
    )
    write_distribution(
        tmp_path,
        "harmkit-clash-a",
        "hktest_clash_a",
        TWIN_SOURCE.format(cls="ClashA", name="hktest-clash"),
    )
    write_distribution(
        tmp_path,
        "harmkit-clash-b",
        "hktest_clash_b",
        TWIN_SOURCE.format(cls="ClashB", name="hktest-clash"),
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    registry = Registry().load_entry_points()
    broken = [e for e in registry.errors if e.distribution == "harmkit-broken"]
    assert len(broken) == 1 and broken[0].error == "ImportError: needs libfoo"
    assert "needs libfoo" in broken[0].details  # the traceback, for harmkit plugins --errors
    good = registry.get("hktest-good", "feature-harmonizer")
    assert (good.distribution, good.version) == ("harmkit-good", "1.0")
    with pytest.raises(HarmkitError) as info:
        registry.get("hktest-clash", "feature-harmonizer")
    assert "harmkit-clash-a" in str(info.value) and "harmkit-clash-b" in str(info.value)
    with pytest.raises(
        HarmkitError,
        match="Plugins that failed to load: hktest_broken \\(ImportError: needs libfoo\\)",
    ):
        registry.get("missing", "feature-harmonizer")
    for module in ("hktest_good", "hktest_clash_a", "hktest_clash_b"):
        sys.modules.pop(module, None)


# -- the example third-party plugin ------------------------------------------------------------


def run_with(site: Path, args: list[str]) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(site), "COLUMNS": "200"}
    return subprocess.run(args, env=env, capture_output=True, text=True, timeout=120)


def test_example_plugin_is_listed_by_harmkit_plugins(example_site):
    harmkit_script = Path(sys.executable).with_name("harmkit")
    result = run_with(example_site, [str(harmkit_script), "plugins"])
    assert result.returncode == 0, result.stderr
    line = next(line for line in result.stdout.splitlines() if " zscore " in line)
    for cell in (
        "feature-harmonizer",
        "standardize",
        "harmkit-example 0.1.0",
        "Per-site standardization",
    ):
        assert cell in line


def test_example_plugin_is_usable_by_name_without_changing_core(example_site, tmp_path):
    script = f"""
import json, numpy as np, pandas as pd, harmkit as hk
features = pd.DataFrame({{"f": [1.0, 2.0, 3.0, 10.0, 20.0, 30.0]}})
sites = ["A", "A", "A", "B", "B", "B"]
model = hk.get_harmonizer("zscore").fit(features, sites, reference_site="A")
out = model.transform(features, sites)
model.save({str(tmp_path / "model")!r})
again = hk.load_model({str(tmp_path / "model")!r}).transform(features, sites)
print(json.dumps({{"out": out["f"].round(6).tolist(), "again": again["f"].round(6).tolist(),
                   "cls": type(model).__module__, "method": [s.name for s in hk.parse_method("standardize").stages]}}))
"""
    result = run_with(example_site, [sys.executable, "-c", script])
    assert result.returncode == 0, result.stderr
    answer = json.loads(result.stdout.strip().splitlines()[-1])
    # site B (mean 20, sd 8.165) mapped onto site A (mean 2, sd 0.8165): 10, 20, 30 -> 1, 2, 3
    assert answer["out"] == [1.0, 2.0, 3.0, 1.0, 2.0, 3.0]
    assert answer["again"] == answer["out"]
    assert answer["cls"] == "harmkit_example.zscore" and answer["method"] == ["zscore"]


def test_example_plugin_is_not_visible_without_its_folder():
    assert "zscore" not in [p.name for p in harmkit.list_plugins()]


# -- the zscore harmonizer itself (imported from the source folder) ----------------------------


@pytest.fixture
def zscore(monkeypatch):
    monkeypatch.syspath_prepend(str(EXAMPLE))
    from harmkit_example.zscore import ZScoreHarmonizer

    return ZScoreHarmonizer


def test_zscore_without_reference_gives_mean_0_sd_1_per_site(zscore):
    rng = np.random.default_rng(1)
    features = pd.DataFrame(
        {
            "a": np.r_[rng.normal(5, 2, 20), rng.normal(-3, 0.5, 30)],
            "b": np.r_[np.ones(20), rng.normal(0, 1, 30)],
        }
    )
    sites = ["X"] * 20 + ["Y"] * 30
    out = zscore().fit_transform(features, sites)
    for _site, rows in (("X", slice(0, 20)), ("Y", slice(20, 50))):
        assert out["a"].iloc[rows].mean() == pytest.approx(0, abs=1e-12)
        assert out["a"].iloc[rows].std(ddof=0) == pytest.approx(1)
    assert (out["b"].iloc[:20] == 0).all()  # a constant feature is only shifted


def test_zscore_learns_on_train_rows_and_applies_to_test_rows(zscore):
    train = pd.DataFrame({"a": [0.0, 2.0, 10.0, 14.0]}, index=["t1", "t2", "t3", "t4"])
    test = pd.DataFrame({"a": [1.0, 12.0]}, index=["u1", "u2"])
    model = zscore().fit(train, ["A", "A", "B", "B"], reference_site="B")
    out = model.transform(test, ["A", "B"])
    assert list(out.index) == ["u1", "u2"]
    assert out["a"].tolist() == pytest.approx([12.0, 12.0])  # both at their site's mean -> B's mean


def test_zscore_errors_name_the_site(zscore):
    features = pd.DataFrame({"a": [1.0, 2.0, 3.0]})
    with pytest.raises(HarmkitError, match="site 'B' has 1 training row"):
        zscore().fit(features, ["A", "A", "B"])
    model = zscore().fit(features[:2], ["A", "A"])
    with pytest.raises(HarmkitError, match="site\\(s\\) C were not in the training rows"):
        model.transform(features[:1], ["C"])
    with pytest.raises(HarmkitError, match="reference site 'Z' has no training rows"):
        zscore().fit(features[:2], ["A", "A"], reference_site="Z")


@pytest.mark.parametrize(
    "text, value",
    [
        ("3", 3),
        ("0.5", 0.5),
        ("TRUE", True),
        ("None", None),
        ("32,32,32", [32, 32, 32]),
        ("0.5, 1,2", [0.5, 1, 2]),
        ("inf", float("inf")),
        ("-Infinity", float("-inf")),
        ("1,inf", [1, float("inf")]),
        ("resnet", "resnet"),
        ("[1, 2]", [1, 2]),
    ],
)
def test_param_values_are_parsed_as_a_user_types_them(text, value):
    from harmkit.params import parse_param_value

    assert parse_param_value(text) == value
