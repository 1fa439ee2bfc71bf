"""End-to-end ``harmkit bench`` through the command line on a small simulated cohort (slow)."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

HARMKIT = str(Path(sys.executable).with_name("harmkit"))
SMALL = [
    "--subjects-per-site",
    "10",
    "--folds",
    "10",
    "--test-size",
    "0.25",
    "--jobs",
    "2",
    "--quiet",
    "--param",
    "cyclegan.steps=4",
    "--param",
    "cyclegan.texture_patches=32",  # quick's 1024 cost about 25 s per training; these tests check the protocol
]


def run_bench(args, env=None, timeout=600):
    result = subprocess.run(
        [HARMKIT, "bench", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, "COLUMNS": "200", **(env or {})},
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return result


def run_small_bench(out, cache, *extra):
    """The module's bench: the README's methods on the small cohort, into ``out`` with cache ``cache``."""
    return run_bench(
        ["--methods", "gan,combat,gan+combat", "--out", str(out), "--cache-dir", str(cache), *SMALL, *extra]
    )


@pytest.fixture(scope="module")
def small_bench(tmp_path_factory):
    work = tmp_path_factory.mktemp("bench")
    out, cache = work / "out", work / "cache"
    run_small_bench(out, cache)
    return out, cache, json.loads((out / "results.json").read_text())


@pytest.mark.slow
def test_small_bench_writes_every_output(small_bench):
    out, _, results = small_bench
    for name in (
        "report.html",
        "report.md",
        "results.json",
        "tables/summary.csv",
        "tables/splits.csv",
    ):
        assert (out / name).is_file(), name
    for figure in (
        "roc_curves.png",
        "image_quality.png",
        "overlap_per_class.png",
        "cov_distributions.png",
    ):
        assert (out / "figures" / figure).is_file(), figure
    assert list((out / "figures").glob("mip_*.png"))
    assert not list(out.glob(".bench-*")), "staging folder left behind"
    html = (out / "report.html").read_text()
    assert "data:image/png;base64," in html and "src='figures/" not in html
    report = (out / "report.md").read_text()
    assert report.index("## Headline: share of the gap") < report.index("## Summary") < report.index("## Prediction")


@pytest.mark.slow
def test_small_bench_rows_and_sane_numbers(small_bench):
    _, _, results = small_bench
    rows = {(r["method"], r["reference"]): r for r in results["summary"]}
    # the floor (the GAN's pipeline with an identity network) after none, the ceiling last
    assert results["methods"] == [
        "none",
        "resample",
        "gan",
        "combat",
        "gan+combat",
        "oracle",
        "oracle-grid",
    ]
    assert set(rows) == {(m, ref) for m in results["methods"] for ref in results["references"]}
    assert set(results["references"]) == {"CHUM-HMR", "HGJ"}
    per_split = results["evaluators"]["prediction"]["tables"]["auc_per_split"]
    aucs = [r["auc"] for r in per_split if r["auc"] is not None]
    assert aucs and all(0 <= a <= 1 for a in aucs)
    for row in rows.values():
        if row.get("auc_mean") is not None:
            assert 0 <= row["auc_mean"] <= 1
        if row.get("p_delong") is not None:
            assert 0 <= row["p_delong"] <= 1
    # the baseline changes nothing: its overlap "improvement" is exactly zero
    overlap = results["evaluators"]["reproducibility"]["tables"]["overlap_per_feature"]
    assert all(r["improvement"] == 0 for r in overlap if r["method"] == "none")
    assert rows[("none", "HGJ")]["overlap_voi"] == 0
    # image metrics for methods with an image stage, and for the oracle-grid row: what a perfect translation
    # scores against the original (a new noise realisation), which a harmonizer's SSIM is read against
    assert rows[("gan", "HGJ")]["ssim"] is not None and rows[("combat", "HGJ")].get("ssim") is None
    assert -1 <= rows[("gan", "HGJ")]["ssim"] <= 1
    for ref in results["references"]:
        assert 0 < rows[("oracle-grid", ref)]["ssim"] < 1
        assert rows[("oracle", ref)].get("ssim") is None  # on the reference's grid: no voxel-wise comparison


@pytest.mark.slow
def test_small_bench_floor_and_ceiling_rows(small_bench):
    _, _, results = small_bench
    rows = {(r["method"], r["reference"]): r for r in results["summary"]}
    for ref in results["references"]:
        # The identity network through the GAN's pipeline changes no voxel: the floor equals `none` exactly.
        assert rows[("resample", ref)]["overlap_voi"] == 0 and rows[("resample", ref)]["overlap_ref"] == 0
        assert rows[("resample", ref)]["auc_mean"] == rows[("none", ref)]["auc_mean"]
        # The ceiling: the same subjects scanned at the reference agree perfectly with the truth features.
        assert rows[("oracle", ref)]["cf_feature_ccc"] == pytest.approx(1.0)
        assert rows[("oracle", ref)]["overlap_ref"] > 0
        # The oracle on each scan's own grid: closer to the truth than the floor, short of the oracle (on this
        # cohort; resampling is not bound to cost overlap).
        grid = rows[("oracle-grid", ref)]
        assert rows[("none", ref)]["cf_feature_ccc"] < grid["cf_feature_ccc"] < 1
        assert 0 < grid["overlap_ref"] <= rows[("oracle", ref)]["overlap_ref"]
    # Gap closed against the oracle row: the oracle closes all of it, the floor none.
    gap = results["evaluators"]["gap-closed"]
    assert gap["skipped"] is None
    for r in gap["tables"]["gap_closed"]:
        if r["gap_closed"] is None:
            continue
        if r["method"] == "oracle":
            assert r["gap_closed"] == pytest.approx(1.0)
        if r["method"] == "resample":
            assert r["gap_closed"] == pytest.approx(0.0, abs=1e-9)
    # the headline figure comes before the summary table
    assert "gap_closed.png" in results["evaluators"]["gap-closed"]["figures"]["gap_closed"]


@pytest.mark.slow
def test_small_bench_same_folds_for_every_method(small_bench):
    _, _, results = small_bench
    pooled = results["evaluators"]["prediction"]["tables"]["pooled_scores"]
    tested = {}
    for r in pooled:
        tested.setdefault((r["method"], r["reference"]), {})[r["subject_id"]] = r["n_test_splits"]
    first = next(iter(tested.values()))
    assert all(t == first for t in tested.values())
    n_splits = {r["n_splits"] for r in results["evaluators"]["prediction"]["summary"]["by_method"].values()}
    assert n_splits == {10}


@pytest.mark.slow
def test_report_numbers_equal_results_json(small_bench):
    from harmkit.bench.formatting import cell_text

    out, _, results = small_bench
    lines = (out / "report.md").read_text().splitlines()
    start = lines.index("## Summary") + 2
    header = [c.strip() for c in lines[start].strip("|").split("|")]
    body = []
    for line in lines[start + 2 :]:
        if not line.startswith("|"):
            break
        body.append([c.strip().replace("\\|", "|") for c in line.strip().strip("|").split(" | ")])
    assert len(body) == len(results["summary"])
    columns = results["summary_columns"]  # declared by the evaluators on their results
    assert header[2:] == [c["title"] for c in columns]
    assert {"auc", "overlap_voi", "ssim", "cf_feature_ccc", "qc_flagged"} <= {c["key"] for c in columns}
    numbers_seen = 0
    for cells, row in zip(body, results["summary"]):
        assert cells[:2] == [row["method"], row["reference"]]
        for column, cell in zip(columns, cells[2:]):
            key, spec = column["key"], column["format"]
            expected = cell_text(row, key, spec)
            assert cell == expected, (key, cell, expected)
            if key == "auc" and row.get("auc_mean") is not None:
                mean, lo, hi = map(float, re.findall(r"[0-9.]+", cell)[:3])
                assert mean == pytest.approx(row["auc_mean"], abs=5.01e-4)
                assert lo == pytest.approx(row["auc_ci_low"], abs=5.01e-4) and hi == pytest.approx(
                    row["auc_ci_high"], abs=5.01e-4
                )
                numbers_seen += 1
            elif cell not in ("–",) and spec not in ("p", "d", "+.0%", None) and not spec.startswith("ci("):
                assert float(cell.replace("+", "")) == pytest.approx(row[key], abs=0.051)
                numbers_seen += 1
    assert numbers_seen > 10


@pytest.mark.slow
def test_rerun_with_nothing_changed_recomputes_nothing(small_bench):
    out, cache, first = small_bench
    run_small_bench(out, cache)
    second = json.loads((out / "results.json").read_text())
    assert second["cache"]["misses"] == 0
    assert second["summary"] == first["summary"]


@pytest.mark.slow
def test_an_explicit_parameter_equal_to_the_profiles_value_reuses_the_trained_model(small_bench, tmp_path):
    from harmkit_cyclegan.config import get_profile

    _, cache, first = small_bench
    models = sorted(p.name for p in (cache / "models").iterdir())
    out = tmp_path / "same-lr"
    run_small_bench(out, cache, "--param", f"cyclegan.lr={get_profile('quick').lr}")
    again = json.loads((out / "results.json").read_text())
    # the bench keys models on the resolved configuration, not on how it was spelt
    assert sorted(p.name for p in (cache / "models").iterdir()) == models
    assert again["cache"]["misses"] == 0
    assert again["summary"] == first["summary"]


@pytest.mark.slow
def test_an_infinite_parameter_is_written_to_results_json_as_text(small_bench, tmp_path):
    _, cache, _ = small_bench
    out = tmp_path / "inf"
    # -inf (no bound on the blur weights): a results.json in strict JSON that says what was asked
    run_small_bench(out, cache, "--param", "cyclegan.filter_min_blur=-inf")
    text = (out / "results.json").read_text()
    again = json.loads(text, parse_constant=lambda name: pytest.fail(f"results.json holds {name}"))
    assert again["config"]["params"]["cyclegan"]["filter_min_blur"] == "-inf"
    assert again["cache"]["misses"] > 0  # another model than the profile's (its bound is 0)


@pytest.mark.slow
def test_third_party_harmonizer_and_evaluator_run_in_the_bench_by_name(small_bench, example_site, tmp_path):
    _, cache, _ = small_bench
    out = tmp_path / "zscore"
    run_bench(
        [
            "--methods",
            "zscore",
            "--out",
            str(out),
            "--cache-dir",
            str(cache),
            "--param",
            "ks-count.alpha=0.01",
            *SMALL,
        ],
        env={"PYTHONPATH": str(example_site)},
    )
    results = json.loads((out / "results.json").read_text())
    assert results["methods"] == [
        "none",
        "zscore",
        "oracle",
    ]  # no image method: no resample row
    rows = {(r["method"], r["reference"]): r for r in results["summary"]}
    assert rows[("zscore", "HGJ")]["auc_mean"] is not None
    assert rows[("zscore", "HGJ")]["overlap_voi"] is not None
    assert "feature-harmonizer:zscore" in results["versions"]["plugins"]
    # The example's third-party evaluator ran by name through the public API, with its --param.
    assert "evaluator:ks-count" in results["versions"]["plugins"]
    ks = results["evaluators"]["ks-count"]
    assert ks["skipped"] is None and ks["summary"]["alpha"] == 0.01
    per_group = ks["tables"]["per_group"]
    for method, ref in rows:
        counted = sum(r["differing"] for r in per_group if r["method"] == method and r["reference"] == ref)
        assert rows[(method, ref)]["ks_differing"] == counted
        assert 0 <= counted <= per_group[0]["n_features"] * 2
    assert any(r["differing"] > 0 for r in per_group if r["method"] == "none")  # the simulated sites do differ
    report = (out / "report.md").read_text()
    assert "features differing (KS)" in report.split("## Summary")[1].splitlines()[2]
    assert "## Features that still differ between site groups (KS test, example plugin)" in report


def test_misspelt_method_fails_before_simulating_or_writing(tmp_path):
    import subprocess
    import sys

    out = tmp_path / "run"
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "harmkit.cli",
            "bench",
            "--methods",
            "gann",
            "--out",
            str(out),
            "--quiet",
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 2
    assert "did you mean 'gan'" in done.stderr
    assert "Traceback" not in done.stderr
    assert not out.exists()
