"""Paired scans: one subject or phantom scanned (or reconstructed) at several site groups.

A ``pair_id`` column in the manifest says that its scans show the same
subject or object: a traveling phantom scanned at every site, a patient
scanned twice (test-retest) on two scanners, or one acquisition
reconstructed with two protocols. Such scans are ground truth on real data:
a harmonized scan from site group A can be compared with its partner that
was really acquired at site group B.

Rules (checked by :func:`pair_problems`, reported by ``harmkit validate``):

* every scan of a ``pair_id`` is at a different site group (two scans of one
  pair within a site group is an error naming both rows);
* a ``pair_id`` used by one scan only is a warning (its partner is missing);
* a pair may span more than two site groups (a phantom traveling to every site).

>>> from harmkit.pairs import partner_scans
>>> partners = partner_scans(cohort)                      # doctest: +SKIP
>>> partners[("phantom-A", "siteB")].subject_id            # doctest: +SKIP
'phantom-B'
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable

from .data import Cohort, Scan
from .errors import ManifestError, Problem

__all__ = ["pair_problems", "partner_scans", "pairs"]


def pairs(cohort: Iterable[Scan]) -> dict[str, list[Scan]]:
    """``{pair_id: [scans]}`` in manifest order, for every scan that declares a ``pair_id``."""
    grouped: dict[str, list[Scan]] = defaultdict(list)
    for scan in cohort:
        if scan.pair_id:
            grouped[str(scan.pair_id)].append(scan)
    return dict(grouped)


def pair_problems(cohort: Iterable[Scan]) -> list[Problem]:
    """Problems of the ``pair_id`` column: duplicates within a site group (errors), lone pair ids (warnings)."""
    problems: list[Problem] = []
    for pair_id, scans in pairs(cohort).items():
        if len(scans) == 1:
            scan = scans[0]
            problems.append(
                _problem(
                    scan,
                    f"pair_id {pair_id!r} is used by this scan only, so it has no partner to compare with; add the "
                    f"partner scan's row with the same pair_id, or clear the cell",
                    "warning",
                )
            )
            continue
        first_in_group: dict[str, Scan] = {}
        for scan in scans:
            first = first_in_group.setdefault(scan.group, scan)
            if first is scan:
                continue
            where = f"row {first.row}" if first.row is not None else f"subject {first.subject_id!r}"
            problems.append(
                _problem(
                    scan,
                    f"pair_id {pair_id!r} is used twice in site group {scan.group!r} (also {where}); a pair links "
                    f"scans at different site groups: give one of them another pair_id, or clear it",
                )
            )
    return problems


def partner_scans(cohort: Cohort | Iterable[Scan]) -> dict[tuple[str, str], Scan]:
    """``{(subject_id, target site group): partner scan}`` for every scan with a ``pair_id``.

    For a scan of subject ``s`` whose ``pair_id`` is shared by a scan at site
    group ``g`` (not its own), ``partners[(s, g)]`` is that scan: what ``s``
    really looks like at ``g``. A fidelity evaluation harmonizes ``s``
    towards ``g`` and compares the result with ``partners[(s, g)]``. Scans
    without a ``pair_id``, or whose ``pair_id`` no other scan uses, have no
    entry. Pairs that break the rules of :func:`pair_problems` raise
    :class:`~harmkit.errors.ManifestError` naming the rows.
    """
    scans = list(cohort)
    errors = [p for p in pair_problems(scans) if p.severity == "error"]
    if errors:
        raise ManifestError(getattr(cohort, "manifest", None) or "cohort", errors)
    partners: dict[tuple[str, str], Scan] = {}
    for group in pairs(scans).values():
        for scan in group:
            for other in group:
                if other.group != scan.group:
                    partners[(scan.subject_id, other.group)] = other
    return partners


def _problem(scan: Scan, message: str, severity: str = "error") -> Problem:
    return Problem(
        message,
        row=scan.row,
        subject=scan.subject_id or None,
        site=scan.site or None,
        severity=severity,
    )
