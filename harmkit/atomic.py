"""Safe output: atomic files, and folders harmkit may replace.

Atomic files: write under a temporary name, rename when complete, so an
interrupted run never leaves a file that looks complete. Files get the
permissions an ordinary ``open()`` would give (``0666 & ~umask``), not the
private mode of :func:`tempfile.mkstemp`.

Output guards: no command deletes or overwrites anything it did not create.
A folder harmkit writes carries a marker file (:data:`MARKER`); only such a
folder may be replaced, and never one that holds an input of the run. An
output path equal to an input path is refused.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path

from .errors import HarmkitError, io_error

_UMASK = os.umask(0)
os.umask(_UMASK)

#: File that marks a folder written by harmkit (JSON: the command that wrote it).
MARKER = ".harmkit-output"


@contextmanager
def atomic_file(path: str | os.PathLike, suffix: str | None = None) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; on success it is renamed onto ``path``.

    ``suffix`` defaults to the target's own suffixes, so writers that choose a
    format by extension (SimpleITK, matplotlib) see the right one. On error
    the temporary file is removed and the target is left untouched; an
    operating-system error (read-only, disk full, no permission) becomes a
    :class:`~harmkit.errors.HarmkitError` naming ``path``.

    >>> with atomic_file("table.csv") as tmp:      # doctest: +SKIP
    ...     frame.to_csv(tmp)
    """
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        suffix = "".join(path.suffixes) if suffix is None else suffix
        fd, name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=suffix, dir=path.parent)
        os.close(fd)
    except OSError as exc:
        raise io_error(exc, path) from None
    tmp = Path(name)
    try:
        yield tmp
        os.chmod(tmp, 0o666 & ~_UMASK)
        os.replace(tmp, path)
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        raise io_error(exc, path) from None
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def atomic_write_text(path: str | os.PathLike, text: str) -> Path:
    """Write ``text`` to ``path`` atomically."""
    with atomic_file(path) as tmp:
        tmp.write_text(text)
    return Path(path)


# -- output guards -------------------------------------------------------------


def write_marker(folder: str | os.PathLike, command: str) -> Path:
    """Mark ``folder`` as written by harmkit ``command`` (see :func:`written_by`)."""
    from . import __version__

    document = {"written_by": f"harmkit {command}", "version": __version__}
    return atomic_write_text(Path(folder) / MARKER, json.dumps(document) + "\n")


def written_by(folder: str | os.PathLike) -> str | None:
    """The harmkit command whose marker ``folder`` carries (``"harmonize"``), or ``None``."""
    marker = Path(folder) / MARKER
    try:
        document = json.loads(marker.read_text())
    except (OSError, ValueError):
        return None
    text = document.get("written_by", "") if isinstance(document, dict) else ""
    return text.split(" ", 1)[1] if text.startswith("harmkit ") else None


def inside(path: str | os.PathLike, folder: str | os.PathLike) -> bool:
    """True when ``path`` is ``folder`` or lies under it (after resolving links)."""
    path, folder = Path(path).resolve(), Path(folder).resolve()
    return path == folder or folder in path.parents


def check_not_an_input(path: str | os.PathLike, inputs: Iterable[str | os.PathLike], option: str = "--out") -> None:
    """Refuse an output file ``path`` that is one of ``inputs`` (or a folder holding one)."""
    for source in inputs:
        if source is None or str(source) == "":
            continue
        if inside(source, path):
            raise HarmkitError(
                f"{option} {path}: this is an input of the run ({source}); writing there would destroy it. "
                f"Choose another output path"
            )


def check_output_folder(
    folder: str | os.PathLike,
    inputs: Iterable[str | os.PathLike],
    command: str,
    overwrite: bool = False,
    option: str = "--out",
    accept=None,
    overwrite_option: str = "--overwrite",
) -> None:
    """Make sure harmkit ``command`` may write the folder ``folder``; raise otherwise.

    Allowed: a folder that does not exist, an empty folder, or, with
    ``overwrite``, a folder that ``command`` wrote before (its :data:`MARKER`,
    or ``accept(folder)`` returning true for outputs of older versions)
    and that holds none of ``inputs``. Everything else is refused with a
    message that says why and what to do; nothing is touched.
    """
    folder = Path(folder)
    inputs = [Path(p) for p in inputs if p is not None and str(p) != ""]
    if not folder.exists():
        return
    if not folder.is_dir():
        raise HarmkitError(f"{option} {folder}: exists and is a file, not a folder; choose another output folder")
    holding = [p for p in inputs if inside(p, folder)]
    if holding:
        raise HarmkitError(
            f"{option} {folder}: holds input(s) of this run (e.g. {holding[0]}); harmkit never writes over its inputs. "
            f"Choose a new output folder"
        )
    try:
        empty = not any(folder.iterdir())
    except OSError as exc:
        raise io_error(exc, folder, "read") from None
    if empty:
        return
    ours = written_by(folder) == command or (accept is not None and accept(folder))
    if not overwrite:
        hint = f" or pass {overwrite_option} to replace it" if ours else ""
        raise HarmkitError(f"{option} {folder}: already exists and is not empty; choose another output folder{hint}")
    if not ours:
        raise HarmkitError(
            f"{option} {folder}: was not written by harmkit {command}, so {overwrite_option} will not "
            f"replace it; choose another output folder, or delete it yourself if you are sure"
        )
