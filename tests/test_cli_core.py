"""The core command line: --version, plugins, validate (exit codes, messages, nothing written)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from conftest import edit_manifest, snapshot, write_scan

import harmkit
from harmkit.cli import main


def run_cli(capsys, *args: str) -> tuple[int, str, str]:
    with pytest.raises(SystemExit) as info:
        main(list(args))
        raise SystemExit(0)
    out, err = capsys.readouterr()
    return info.value.code or 0, out, err


def test_version(capsys):
    code, out, _ = run_cli(capsys, "--version")
    assert code == 0 and out.strip() == f"harmkit, version {harmkit.__version__}"


@pytest.mark.parametrize("command", ["plugins", "validate"])
def test_help_gives_an_example(capsys, command):
    code, out, _ = run_cli(capsys, command, "--help")
    assert code == 0 and "Example:" in out and f"harmkit {command}" in out


def test_plugins_lists_installed_plugins(capsys):
    code, out, _ = run_cli(capsys, "plugins")
    assert code == 0
    header = next(line for line in out.splitlines() if "name" in line and "kind" in line)
    for column in ("aliases", "distribution", "description"):
        assert column in header
    for info in harmkit.list_plugins():
        assert info.name in out and info.distribution in out


def test_validate_clean_cohort_prints_the_site_table_and_exits_0(capsys, tiny_cohort):
    before = snapshot(tiny_cohort.parent)
    code, out, _ = run_cli(capsys, "validate", str(tiny_cohort), "--mask", "lesion", "--require-outcome")
    assert code == 0
    assert "voxel size (mm)" in out and "2.00×2.00×3.00" in out and "3.00×3.00×3.00" in out
    assert "outcome 1/0/missing" in out and "1/2/0" in out
    assert "OK: 6 scans" in out
    assert snapshot(tiny_cohort.parent) == before


def test_validate_errors_exit_1_naming_row_and_subject(capsys, tiny_cohort):
    edit_manifest(tiny_cohort, 2, image="images/nowhere.nii.gz")
    write_scan(
        tiny_cohort.parent / "images",
        "B0_lesion.nii.gz",
        np.zeros((6, 8, 8), np.uint8),
        spacing=(3.0, 3.0, 3.0),
    )
    before = snapshot(tiny_cohort.parent)
    code, out, _ = run_cli(capsys, "validate", str(tiny_cohort))
    assert code == 1
    assert "error: row 2 (subject A1, site A): image file not found" in out
    assert "error: row 4 (subject B0, site B): mask 'lesion' is empty" in out
    assert "2 error(s)" in out and "unreadable" in out  # the table counts the scan it could not read
    assert snapshot(tiny_cohort.parent) == before


def test_validate_headers_only_skips_voxels(capsys, tiny_cohort):
    write_scan(
        tiny_cohort.parent / "images",
        "B0_lesion.nii.gz",
        np.zeros((6, 8, 8), np.uint8),
        spacing=(3.0, 3.0, 3.0),
    )
    assert run_cli(capsys, "validate", str(tiny_cohort), "--headers-only")[0] == 0


def test_validate_small_site_option(capsys, tiny_cohort):
    code, out, _ = run_cli(capsys, "validate", str(tiny_cohort), "--min-scans-per-site", "4")
    assert code == 1 and "site group 'A' has 3 scan(s) but at least 4 are needed" in out


def test_validate_not_a_manifest_is_one_line_without_traceback(tmp_path):
    (tmp_path / "m.csv").write_text("id,image\n1,x\n")
    script = Path(sys.executable).with_name("harmkit")
    result = subprocess.run(
        [str(script), "validate", str(tmp_path / "m.csv")],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2
    assert "Error:" in result.stderr and "missing column(s) subject_id, site" in result.stderr
    assert "Traceback" not in result.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.csv"]


def test_validate_real_ibsi_subset(capsys, ibsi_manifest):
    code, out, _ = run_cli(capsys, "validate", str(ibsi_manifest), "--mask", "lesion")
    assert code == 0
    rows = [line for line in out.splitlines() if "mm " in line and "│" in line]
    assert [r.split("│")[1].strip() for r in rows] == ["3.906mm", "4.688mm", "5.469mm"]
    assert all(r.split("│")[2].strip() == "2" for r in rows)
