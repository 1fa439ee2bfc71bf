"""Errors a user can act on.

A :class:`HarmkitError` carries a message meant for the person who ran the
command: it names the file, subject, site or option at fault and says what to
do. The CLI prints it on one line without a traceback. Programming errors
remain ordinary exceptions.
"""


class HarmkitError(Exception):
    """A mistake in user input (file, manifest row, option) with a fix in its message."""


class ManifestError(HarmkitError):
    """One or more problems found in a manifest; ``problems`` lists them one per row."""

    def __init__(self, manifest, problems):
        self.manifest = manifest
        self.problems = list(problems)
        lines = "\n".join(f"  - {p}" for p in self.problems)
        super().__init__(f"{manifest}: {len(self.problems)} problem(s):\n{lines}")


class NotFittedError(HarmkitError):
    """``transform`` was called before ``fit``."""
