"""Atomic file output: write under a temporary name, rename when complete.

An interrupted run therefore never leaves a file that looks complete. Files
get the permissions an ordinary ``open()`` would give (``0666 & ~umask``),
not the private mode of :func:`tempfile.mkstemp`.
"""

from __future__ import annotations

import os
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

_UMASK = os.umask(0)
os.umask(_UMASK)


@contextmanager
def atomic_file(path: str | os.PathLike, suffix: str | None = None) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; on success it is renamed onto ``path``.

    ``suffix`` defaults to the target's own suffixes, so writers that choose a
    format by extension (SimpleITK, matplotlib) see the right one. On error
    the temporary file is removed and the target is left untouched.

    >>> with atomic_file("table.csv") as tmp:      # doctest: +SKIP
    ...     frame.to_csv(tmp)
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(prefix=f".{path.name}.", suffix="".join(path.suffixes) if suffix is None else suffix, dir=path.parent)
    os.close(fd)
    tmp = Path(name)
    try:
        yield tmp
        os.chmod(tmp, 0o666 & ~_UMASK)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def atomic_write_text(path: str | os.PathLike, text: str) -> Path:
    """Write ``text`` to ``path`` atomically."""
    with atomic_file(path) as tmp:
        tmp.write_text(text)
    return Path(path)
