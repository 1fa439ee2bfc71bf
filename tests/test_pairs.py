"""Paired scans (pair_id): the manifest column, its rules, and partner_scans."""

from __future__ import annotations

import csv
from pathlib import Path

import pytest

from harmkit.data import Cohort, Scan
from harmkit.errors import ManifestError
from harmkit.manifest import read_manifest, write_manifest
from harmkit.pairs import pair_problems, partner_scans
from harmkit.validation import validate_manifest


def with_pairs(manifest: Path, pair_ids: dict[int, str], **extra: dict[int, str]) -> Path:
    """Add a pair_id column (and other columns) to ``manifest``: ``{data row (1-based): value}``."""
    with manifest.open(newline="") as handle:
        rows = list(csv.DictReader(handle))
    columns = {"pair_id": pair_ids, **extra}
    for number, row in enumerate(rows, start=1):
        for column, values in columns.items():
            row[column] = values.get(number, "")
    with manifest.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    return manifest


def scan(subject: str, site: str, pair_id: str | None, row: int, group: str | None = None) -> Scan:
    return Scan(subject, site, image=None, pair_id=pair_id, row=row, site_group=group)


def test_pair_id_is_read_as_text_not_as_a_covariate(tiny_cohort):
    cohort = read_manifest(with_pairs(tiny_cohort, {1: "007", 4: "007"}))
    assert cohort[0].pair_id == "007" and cohort[3].pair_id == "007" and cohort[1].pair_id is None
    assert "pair_id" not in cohort[0].covariates


def test_pair_id_survives_a_manifest_round_trip(tiny_cohort, tmp_path):
    cohort = read_manifest(with_pairs(tiny_cohort, {1: "P1", 4: "P1"}))
    again = read_manifest(write_manifest(cohort, tmp_path / "copy" / "manifest.csv"))
    assert [s.pair_id for s in again] == ["P1", None, None, "P1", None, None]


def test_partner_scans_maps_subject_and_target_group_to_the_partner():
    cohort = Cohort([scan("a1", "A", "P1", 1), scan("b1", "B", "P1", 2), scan("a2", "A", None, 3)])
    partners = partner_scans(cohort)
    assert partners[("a1", "B")].subject_id == "b1" and partners[("b1", "A")].subject_id == "a1"
    assert set(partners) == {("a1", "B"), ("b1", "A")}


def test_a_phantom_at_three_sites_has_a_partner_at_each_other_site():
    cohort = Cohort(
        [
            scan("ph@A", "A", "ph", 1),
            scan("ph@B", "B", "ph", 2),
            scan("ph@C", "C", "ph", 3),
        ]
    )
    partners = partner_scans(cohort)
    assert {g for (s, g) in partners if s == "ph@A"} == {"B", "C"}
    assert partners[("ph@C", "A")].subject_id == "ph@A" and len(partners) == 6


def test_partners_follow_site_groups_not_sites():
    cohort = Cohort([scan("a", "CHUM", "P", 1, group="CHUM-HMR"), scan("b", "HGJ", "P", 2)])
    assert set(partner_scans(cohort)) == {("a", "HGJ"), ("b", "CHUM-HMR")}


def test_a_pair_id_used_once_is_a_warning(tiny_cohort):
    report = validate_manifest(with_pairs(tiny_cohort, {2: "lonely"}))
    assert report.ok
    (warning,) = [p for p in report.warnings if "pair_id" in p.message]
    assert warning.row == 2 and "'lonely' is used by this scan only" in warning.message
    assert "add the partner scan's row" in warning.message


def test_two_scans_of_a_pair_in_one_site_group_is_an_error_naming_both_rows(
    tiny_cohort,
):
    report = validate_manifest(with_pairs(tiny_cohort, {1: "P", 2: "P", 4: "P"}))
    (error,) = [p for p in report.errors if "pair_id" in p.message]
    assert error.row == 2 and "used twice in site group 'A' (also row 1)" in error.message
    assert "give one of them another pair_id" in error.message


def test_merged_sites_make_a_pair_within_one_group_an_error(tiny_cohort):
    manifest = with_pairs(tiny_cohort, {1: "P", 4: "P"}, site_group={n: "AB" for n in range(1, 7)})
    report = validate_manifest(manifest)
    assert [p.row for p in report.errors if "pair_id" in p.message] == [4]


def test_partner_scans_refuses_broken_pairs_naming_the_rows():
    cohort = Cohort([scan("a1", "A", "P", 3), scan("a2", "A", "P", 5)])
    with pytest.raises(ManifestError) as info:
        partner_scans(cohort)
    assert "row 5" in str(info.value) and "also row 3" in str(info.value)


def test_scans_without_pair_ids_have_no_problems_and_no_partners():
    cohort = Cohort([scan("a", "A", None, 1), scan("b", "B", None, 2)])
    assert pair_problems(cohort) == [] and partner_scans(cohort) == {}
