"""The plugin-author toolkit: the rules that core and plugins share, each with one home.

A plugin imports these names instead of copying them, so a harmonizer, an
extractor and the core agree on what "the same grid", "the reference site
group" or "a feature column" means:

>>> from harmkit.toolkit import progress, resolve_site_group, same_geometry   # doctest: +SKIP

* :data:`GEOMETRY_TOLERANCE`, :func:`same_geometry`, :func:`geometry_difference`:
  whether an image and a mask (or two images, or two headers) share one voxel
  grid, and what differs when they do not;
* :func:`progress`: the progress bar of every long loop (description, bar,
  count, elapsed and remaining time, optional info text), silent when disabled;
* :func:`resolve_site_group`: a site or site-group name to the site group it
  means, with an error listing the groups when it names neither;
* :data:`NON_FEATURE_COLUMNS`, :data:`FEATURE_INDEX`, :func:`feature_columns`:
  which columns of a feature table are features;
* :func:`image_layout`, :class:`ScanFiles`: where harmkit writes a cohort's
  images and masks (``harmonize`` output, ``write_cohort``);
* :data:`BODY_THRESHOLD_SUV`, :func:`body_mask`, :func:`body_mask_of`: the
  body mask of a scan without a ``mask_body`` (one rule for every command;
  home :mod:`harmkit.voi`).

Everything here is small, documented and stable: plugins may rely on it.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from typing import Any

from .errors import HarmkitError
from .imageio import GEOMETRY_TOLERANCE, geometry_difference, same_geometry
from .manifest import ScanFiles, image_layout
from .voi import BODY_THRESHOLD_SUV, body_mask, body_mask_of

__all__ = [
    "GEOMETRY_TOLERANCE",
    "same_geometry",
    "geometry_difference",
    "progress",
    "ProgressBar",
    "resolve_site_group",
    "NON_FEATURE_COLUMNS",
    "FEATURE_INDEX",
    "feature_columns",
    "image_layout",
    "ScanFiles",
    "BODY_THRESHOLD_SUV",
    "body_mask",
    "body_mask_of",
]

# -- feature tables ----------------------------------------------------------------

#: Columns of a feature table that describe the scan, not its VOI: everything else is a feature.
NON_FEATURE_COLUMNS = ("site", "site_group")

#: Name of a feature table's index (one row per scan); a column of that name, as in a table
#: read back from CSV without ``index_col``, is not a feature either.
FEATURE_INDEX = "subject_id"


def feature_columns(table) -> list[str]:
    """The feature columns of ``table`` (a feature table as :func:`harmkit.extraction.extract` returns it), in order.

    Every column except :data:`NON_FEATURE_COLUMNS` and :data:`FEATURE_INDEX`
    is a feature. Whether the values are numeric is the caller's check.
    """
    return [c for c in table.columns if c not in NON_FEATURE_COLUMNS and c != FEATURE_INDEX]


# -- site groups -------------------------------------------------------------------


def resolve_site_group(cohort, name: str, what: str = "site") -> str:
    """The site group ``name`` designates in ``cohort``.

    The rule: a site-group name is itself; otherwise a site name gives the
    group of that site's scans. Site groups pool sites that share a scanner
    and protocol (manifest column ``site_group``; a site without one is its
    own group), so ``"CHUM"`` and ``"CHUM-HMR"`` both give ``"CHUM-HMR"``
    when CHUM is part of that group.

    ``cohort`` is a :class:`harmkit.data.Cohort` (or any iterable of scans),
    or a ``{site: site group}`` mapping, such as a fitted harmonizer keeps.
    ``what`` names ``name`` in the error (``"--reference"``,
    ``"cyclegan: reference site"``).

    Raises :class:`HarmkitError` listing the site groups when ``name`` is
    neither a site nor a site group of the cohort.
    """
    if isinstance(cohort, Mapping):
        site_groups = {str(site): str(group) for site, group in cohort.items()}
    else:
        site_groups = {}
        for scan in cohort:
            site_groups.setdefault(scan.site, scan.group)
    name = str(name)
    groups = list(dict.fromkeys(site_groups.values()))
    if name in groups:
        return name
    if name in site_groups:
        return site_groups[name]
    listing = ", ".join(groups) or "none"
    raise HarmkitError(f"{what} {name!r} is not a site or site group of the cohort; site groups: {listing}")


# -- progress bars -----------------------------------------------------------------

_shared: dict[str, Any] = {"progress": None, "users": 0}


def _console():
    if "console" not in _shared:
        from rich.console import Console

        _shared["console"] = Console(stderr=True)
    return _shared["console"]


class ProgressBar:
    """One rich progress bar; see :func:`progress`.

    Use it as a context manager (``advance`` / ``update`` inside), or iterate
    over it when it wraps an iterable. Bars opened while another is showing
    join its display as an extra line, so nested loops never fight for the
    terminal.
    """

    def __init__(
        self,
        work: int | Iterable,
        label: str,
        *,
        enabled: bool = True,
        transient: bool = True,
        min_total: int = 1,
        total: int | None = None,
    ) -> None:
        if isinstance(work, int):
            self._items, total = None, work
        else:
            self._items = work
            if total is None:
                try:
                    total = len(work)  # type: ignore[arg-type]  # any Iterable: one without len() is caught below
                except TypeError:
                    total = None
        self.label = label
        self.total = total
        self.transient = transient
        self.enabled = bool(enabled) and (total is None or total >= max(1, min_total))
        self._task = None

    @property
    def active(self) -> bool:
        """True while a bar is shown (enabled and entered)."""
        return self._task is not None

    def __enter__(self) -> "ProgressBar":
        if self.enabled and self._task is None:
            shared = _shared["progress"]
            if shared is None:
                from rich.progress import (
                    BarColumn,
                    MofNCompleteColumn,
                    Progress,
                    TextColumn,
                    TimeElapsedColumn,
                    TimeRemainingColumn,
                )

                shared = Progress(
                    TextColumn("{task.description}"),
                    BarColumn(),
                    MofNCompleteColumn(),
                    TimeElapsedColumn(),
                    TimeRemainingColumn(),
                    TextColumn("{task.fields[info]}"),
                    console=_console(),
                    transient=self.transient,
                )
                shared.start()
                _shared["progress"] = shared
            _shared["users"] += 1
            self._task = shared.add_task(self.label, total=self.total, info="")
        return self

    def advance(self, n: int = 1) -> None:
        """Count ``n`` more items done."""
        if self._task is not None:
            _shared["progress"].advance(self._task, n)

    def update(
        self,
        completed: int | None = None,
        total: int | None = None,
        info: str | None = None,
    ) -> None:
        """Set the count done, the total (when it changed) and the info text shown after the times."""
        if self._task is not None:
            fields: dict[str, Any] = {}
            if completed is not None:
                fields["completed"] = completed
            if total is not None:
                fields["total"] = total
            if info is not None:
                fields["info"] = info
            _shared["progress"].update(self._task, **fields)

    def __exit__(self, *exc) -> None:
        if self._task is not None:
            shared = _shared["progress"]
            if self.transient:
                shared.remove_task(self._task)
            self._task = None
            _shared["users"] -= 1
            if _shared["users"] == 0:
                shared.stop()
                _shared["progress"] = None

    def __iter__(self) -> Iterator:
        if self._items is None:
            raise TypeError("this progress bar counts a total; iterate over a bar made from an iterable")
        if self.active or not self.enabled:
            for item in self._items:
                yield item
                self.advance()
            return
        with self:
            for item in self._items:
                yield item
                self.advance()


def progress(
    work: int | Iterable,
    label: str,
    *,
    enabled: bool = True,
    transient: bool = True,
    min_total: int = 1,
    total: int | None = None,
) -> ProgressBar:
    """A progress bar over ``work``: a number of items, or an iterable to loop over.

    The bar shows ``label``, the bar, ``done/total``, elapsed and remaining
    time, and an info text set with :meth:`ProgressBar.update`. It writes to
    standard error (standard output stays for results) and draws only on a
    terminal.

    Parameters
    ----------
    work : int or iterable
        How many items (then ``advance``/``update`` inside ``with``), or the
        items themselves (then iterate over the bar).
    label : str
        The description in front of the bar.
    enabled : bool, default True
        ``False`` (a ``progress=False`` option) makes every call a no-op.
    transient : bool, default True
        Remove the bar when done; ``False`` leaves the final line on screen.
    min_total : int, default 1
        Show nothing when there are fewer items than this (work too short to watch).
    total : int, optional
        The number of items of an iterable without ``len``.

    >>> for scan in progress(scans, "histmatch: reading VOIs", min_total=8):   # doctest: +SKIP
    ...     ...
    >>> with progress(steps, "CycleGAN training", enabled=show) as bar:        # doctest: +SKIP
    ...     bar.update(step, info=f"G {loss:.3f}")
    """
    return ProgressBar(
        work,
        label,
        enabled=enabled,
        transient=transient,
        min_total=min_total,
        total=total,
    )
