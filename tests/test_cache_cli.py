"""One cache for every command: its default, ``harmkit cache info`` and ``harmkit cache clear``."""

from __future__ import annotations

import os
import time
from pathlib import Path

import numpy as np
import pytest

from harmkit.bench.config import BenchConfig
from harmkit.cache import (
    CACHEDIR_TAG,
    Cache,
    cache_info,
    clear_cache,
    default_cache_dir,
    features_dir,
    parse_age,
)
from harmkit.cli import main

FAST = "setting:\n  binWidth: 0.25\nfeatureClass:\n  firstorder: [Mean, Maximum]\n"
DAY = 86400.0


def cli(capsys, *args) -> tuple[int, str]:
    try:
        main([str(a) for a in args])
        code = 0
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else 1
    captured = capsys.readouterr()
    text = "".join(" " if 0x2500 <= ord(ch) <= 0x257F else ch for ch in captured.out + captured.err)  # table lines
    return code, " ".join(text.split())


def fill(root: Path) -> dict[str, Path]:
    """A cache with 2 results, 1 feature table, 1 harmonized image, 1 model and a file that is not the cache's."""
    cache = Cache(root)
    keys = [cache.key("result", i) for i in range(2)]
    for i, key in enumerate(keys):
        cache.put(key, {"auc": 0.5 + i / 10})
    features = Cache(features_dir(root))
    feature_key = features.key("features", 1)
    features.put(feature_key, np.arange(1000.0))
    image = root / "images" / "ab" / f"ab{'0' * 22}.nii.gz"
    image.parent.mkdir(parents=True)
    image.write_bytes(b"\0" * 4096)
    model = root / "models" / ("c" * 24)
    model.mkdir(parents=True)
    (model / "model.json").write_text("{}")
    notes = root / "notes.txt"
    notes.write_text("mine, not the cache's")
    return {
        "result": cache.path(keys[0]),
        "features": features.path(feature_key),
        "image": image,
        "model": model,
        "notes": notes,
    }


def age(path: Path, seconds: float) -> None:
    """Make every file under ``path`` (and ``path``) look written ``seconds`` ago."""
    when = time.time() - seconds
    for item in [path, *path.rglob("*")] if path.is_dir() else [path]:
        os.utime(item, (when, when))


def test_default_cache_honours_harmkit_cache_then_xdg_then_home(monkeypatch, tmp_path):
    monkeypatch.setenv("HARMKIT_CACHE", str(tmp_path / "mine"))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert default_cache_dir() == tmp_path / "mine"
    monkeypatch.delenv("HARMKIT_CACHE")
    assert default_cache_dir() == tmp_path / "xdg" / "harmkit"
    monkeypatch.delenv("XDG_CACHE_HOME")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert default_cache_dir() == tmp_path / "home" / ".cache" / "harmkit"


def test_bench_uses_the_same_cache_whatever_its_out(private_cache, tmp_path):
    first = BenchConfig(out=str(tmp_path / "A")).cache_path
    second = BenchConfig(out=str(tmp_path / "B")).cache_path
    assert first == second == private_cache
    assert BenchConfig(out=str(tmp_path / "A"), cache_dir=str(tmp_path / "c")).cache_path == tmp_path / "c"


def test_cache_info_counts_entries_and_bytes_per_kind(tmp_path):
    fill(tmp_path / "c")
    info = cache_info(tmp_path / "c")
    assert info.kinds["results"].entries == 2 and info.kinds["features"].entries == 1
    assert info.kinds["images"].entries == 1 and info.kinds["images"].bytes == 4096
    assert info.kinds["models"].entries == 1 and info.kinds["cohorts"].entries == 0
    assert info.kinds["features"].bytes > 8000  # 1000 float64 values
    assert [p.name for p in info.other_paths] == ["notes.txt"]
    assert (tmp_path / "c" / CACHEDIR_TAG).is_file()


def test_cache_info_command_prints_kinds_sizes_and_the_folder(capsys, private_cache):
    fill(private_cache)
    code, out = cli(capsys, "cache", "info")
    assert code == 0
    assert str(private_cache) in out and "$HARMKIT_CACHE" in out
    assert "features 1" in out and "images 1 4.0 KiB" in out and "results 2" in out and "total 5" in out
    assert "1 other item(s)" in out and "harmkit never deletes them" in out


def test_cache_clear_deletes_entries_and_keeps_other_files(capsys, private_cache):
    paths = fill(private_cache)
    code, out = cli(capsys, "cache", "clear")
    assert code == 0 and "deleted 5 cache entries" in out
    assert cache_info(private_cache).entries == 0
    assert paths["notes"].read_text() == "mine, not the cache's"
    assert not paths["image"].exists() and not paths["model"].exists()


def test_cache_clear_older_than_keeps_recent_entries(capsys, tmp_path):
    paths = fill(tmp_path / "c")
    age(paths["image"], 40 * DAY)
    age(paths["result"], 40 * DAY)
    code, out = cli(capsys, "cache", "clear", "--cache-dir", tmp_path / "c", "--older-than", "30d")
    assert code == 0 and "deleted 2 cache entries" in out
    assert not paths["image"].exists() and not paths["result"].exists()
    assert paths["features"].exists() and paths["model"].exists()


def test_cache_clear_by_kind_and_dry_run(tmp_path):
    paths = fill(tmp_path / "c")
    planned = clear_cache(tmp_path / "c", kinds=["images", "models"], dry_run=True)
    assert planned.entries == 2 and paths["image"].exists() and paths["model"].exists()
    clear_cache(tmp_path / "c", kinds=["images", "models"])
    assert not paths["image"].exists() and not paths["model"].exists() and paths["features"].exists()


@pytest.mark.parametrize(
    "args, words",
    [
        (["--older-than", "soon"], "expected an age such as 30d"),
        (["--kind", "pictures"], "unknown cache kind(s) pictures"),
    ],
)
def test_bad_clear_options_are_one_line_errors(capsys, tmp_path, args, words):
    fill(tmp_path / "c")
    code, out = cli(capsys, "cache", "clear", "--cache-dir", tmp_path / "c", *args)
    assert code == 2 and words in out and "Traceback" not in out
    assert cache_info(tmp_path / "c").entries == 5


def test_ages_are_read_in_their_units():
    assert parse_age("30d") == 30 * DAY and parse_age("12h") == 12 * 3600 and parse_age("2w") == 14 * DAY
    assert parse_age("90m") == 5400 and parse_age("7") == 7 * DAY


def test_extract_stores_features_in_the_shared_cache(capsys, private_cache, tiny_cohort, tmp_path):
    params = tmp_path / "fast.yaml"
    params.write_text(FAST)
    args = [
        "extract",
        "--cohort",
        tiny_cohort,
        "--out",
        tmp_path / "f.csv",
        "--params",
        params,
        "--jobs",
        "1",
    ]
    code, out = cli(capsys, *args)
    assert code == 0, out
    assert cache_info(private_cache).kinds["features"].entries >= 6
    code, out = cli(capsys, *args[:4], tmp_path / "g.csv", *args[5:])
    assert code == 0 and "6 found, 0 computed" in out
