"""Errors a user can act on.

A :class:`HarmkitError` carries a message meant for the person who ran the
command: it names the file, subject, site or option at fault and says what to
do. The CLI prints it on one line without a traceback. Programming errors
remain ordinary exceptions.
"""

from __future__ import annotations

from dataclasses import dataclass


class HarmkitError(Exception):
    """A mistake in user input (file, manifest row, option) with a fix in its message."""


@dataclass(frozen=True)
class Problem:
    """One problem found in a cohort, located by manifest row and subject.

    ``severity`` is ``"error"`` (the cohort cannot be used as is) or
    ``"warning"`` (it can, but the user should look). ``str(problem)`` is the
    message a user reads: where, what, and how to fix it.
    """

    message: str
    row: int | None = None
    subject: str | None = None
    site: str | None = None
    severity: str = "error"

    @property
    def where(self) -> str:
        parts = []
        if self.row is not None:
            parts.append(f"row {self.row}")
        details = []
        if self.subject:
            details.append(f"subject {self.subject}")
        if self.site:
            details.append(f"site {self.site}")
        if details:
            parts.append(f"({', '.join(details)})")
        return " ".join(parts)

    def __str__(self) -> str:
        where = self.where
        return f"{where}: {self.message}" if where else self.message


class ManifestError(HarmkitError):
    """One or more problems found in a manifest; ``problems`` lists them one per row."""

    def __init__(self, manifest, problems):
        self.manifest = manifest
        self.problems = list(problems)
        lines = "\n".join(f"  - {p}" for p in self.problems)
        super().__init__(f"{manifest}: {len(self.problems)} problem(s):\n{lines}")


class NotFittedError(HarmkitError):
    """``transform`` was called before ``fit``."""
