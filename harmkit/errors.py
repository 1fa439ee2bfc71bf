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


class HarmkitWarning(UserWarning):
    """Something the user should know that does not stop the run (a damaged cache entry, a fallback)."""


def warn(message: str) -> None:
    """Emit ``message`` as a :class:`HarmkitWarning` (the CLI prints it on one line, without a source line)."""
    import warnings

    warnings.warn(message, HarmkitWarning, stacklevel=3)


def io_error(exc: OSError, path, action: str = "write") -> HarmkitError:
    """A :class:`HarmkitError` for an operating-system error on ``path``, with what to do about it.

    Covers the failures a user can fix: a read-only file system or folder,
    a full disk or quota, a missing folder, a path that is a file.
    """
    import errno

    where = getattr(exc, "filename", None) or path
    reason = exc.strerror or str(exc) or type(exc).__name__
    fixes: dict[int | None, str] = {
        errno.ENOSPC: "free some space or choose an output on another disk",
        errno.EDQUOT: "free some space (disk quota exceeded) or choose an output on another disk",
        errno.EROFS: "the file system is read-only; choose an output folder you can write to",
        errno.EACCES: "you have no permission to write there; choose another output folder or fix its permissions",
        errno.EPERM: "the operation is not permitted there; choose another output folder",
        errno.ENOTDIR: "a part of the path is a file, not a folder; choose another path",
        errno.EISDIR: "the path is a folder; give a file name",
        errno.ENOENT: "a folder of the path does not exist; create it or fix the path",
    }
    fix = fixes.get(exc.errno, "check the path and the disk")
    return HarmkitError(f"cannot {action} {where}: {reason}; {fix}")


class EvaluatorSkipped(HarmkitError):
    """An evaluator has nothing to evaluate in this run (no outcome, no ground truth, no image method ...).

    Raise it from :meth:`~harmkit.interfaces.Evaluator.evaluate` with the reason; the bench reports the
    evaluator as skipped and goes on. Any other :class:`HarmkitError` raised by an evaluator stops the
    bench with the evaluator named: a failure is never shown as a skip.
    """


class TargetNotSupported(HarmkitError):
    """An image harmonizer was asked to map towards a site group it cannot map to with this fit.

    Raised by ``transform(scan, target_site=...)`` when, e.g., a model fitted with several site groups
    merged into one source domain is asked to map towards one of them alone. The bench then fits the
    harmonizer once per reference instead of reusing one fit for every direction.
    """
