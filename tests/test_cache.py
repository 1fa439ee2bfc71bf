"""The content-addressed cache: stable keys, exact round trips, atomic entries."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import SimpleITK as sitk

from harmkit.cache import Cache, hash_parts


def test_key_is_stable_and_ignores_dict_order():
    a = Cache.key(b"abc", np.arange(4), {"x": 1, "y": [1.5, "s"]})
    b = Cache.key(b"abc", np.arange(4), {"y": [1.5, "s"], "x": 1})
    assert a == b and len(a) == 64


@pytest.mark.parametrize(
    "left, right",
    [
        (("1",), (1,)),
        (("ab", "c"), ("a", "bc")),
        ((np.zeros(4, np.float32),), (np.zeros(4, np.float64),)),
        ((np.zeros((2, 3)),), (np.zeros((3, 2)),)),
        (({"binWidth": 0.25},), ({"binWidth": 0.5},)),
    ],
)
def test_different_inputs_give_different_keys(left, right):
    assert hash_parts(*left) != hash_parts(*right)


def test_files_are_hashed_by_content_not_name(tmp_path):
    (tmp_path / "a.bin").write_bytes(b"same")
    (tmp_path / "b.bin").write_bytes(b"same")
    (tmp_path / "c.bin").write_bytes(b"other")
    assert Cache.key(Path(tmp_path / "a.bin")) == Cache.key(Path(tmp_path / "b.bin"))
    assert Cache.key(Path(tmp_path / "a.bin")) != Cache.key(Path(tmp_path / "c.bin"))


def test_images_are_hashed_with_their_geometry():
    image = sitk.GetImageFromArray(np.ones((3, 3, 3), np.float32))
    moved = sitk.Image(image)
    moved.SetSpacing((2.0, 2.0, 2.0))
    assert Cache.key(image) == Cache.key(sitk.Image(image))
    assert Cache.key(image) != Cache.key(moved)


def test_dataframe_round_trip_is_exact(tmp_path):
    cache = Cache(tmp_path)
    frame = pd.DataFrame(
        {
            "site": ["A", "B", None],
            "glcm_Contrast": [0.1, 1 / 3, np.nan],
            "n": np.array([1, 2, 3], np.int64),
            "flag": [True, False, True],
        },
        index=pd.Index(["s1", "s2", "s3"], name="subject_id"),
    )
    frame.attrs["feature_classes"] = {"glcm_Contrast": "glcm"}
    key = cache.key("table")
    assert cache.get(key) is None
    cache.put(key, frame)
    loaded = cache.get(key)
    pd.testing.assert_frame_equal(loaded, frame)
    assert loaded.attrs == frame.attrs
    assert loaded["glcm_Contrast"].iloc[1] == 1 / 3  # bit-exact floats
    assert (cache.hits, cache.misses) == (1, 1)


def test_arrays_json_and_series_round_trip(tmp_path):
    cache = Cache(tmp_path)
    array = np.random.default_rng(0).normal(size=(4, 5)).astype(np.float32)
    cache.put("a" * 64, array)
    np.testing.assert_array_equal(cache.get("a" * 64), array)
    cache.put("b" * 64, {"w": array, "b": np.arange(3)})
    got = cache.get("b" * 64)
    assert list(got) == ["w", "b"] and np.array_equal(got["b"], np.arange(3))
    cache.put("c" * 64, {"features": {"x": 1.5}, "version": "3.0.1"})
    assert cache.get("c" * 64) == {"features": {"x": 1.5}, "version": "3.0.1"}
    series = pd.Series([1.0, 2.0], index=["p", "q"], name="ovl")
    cache.put("d" * 64, series)
    pd.testing.assert_series_equal(cache.get("d" * 64), series)


def test_unsupported_values_fail_without_leaving_an_entry(tmp_path):
    cache = Cache(tmp_path)
    with pytest.raises(TypeError):
        cache.put("e" * 64, {"bad": object()})
    assert "e" * 64 not in cache
    assert not any(p.name.startswith(".") for p in tmp_path.rglob("*"))  # no temporary left behind


def test_damaged_entry_is_a_miss_and_is_replaced(tmp_path):
    cache = Cache(tmp_path)
    key = cache.key("x")
    cache.put(key, {"v": 1})
    (cache.path(key) / "entry.json").write_text("{not json")
    assert cache.get(key) is None
    cache.put(key, {"v": 2})
    assert cache.get(key) == {"v": 2}


def test_disabled_cache_stores_nothing():
    cache = Cache(None)
    assert cache.put(cache.key("k"), {"v": 1}) == {"v": 1}
    assert cache.get(cache.key("k")) is None


def test_get_or_compute_computes_once(tmp_path):
    cache = Cache(tmp_path)
    calls = []
    compute = lambda: calls.append(1) or [1, 2]  # noqa: E731
    assert cache.get_or_compute(cache.key("z"), compute) == [1, 2]
    assert cache.get_or_compute(cache.key("z"), compute) == [1, 2]
    assert len(calls) == 1
