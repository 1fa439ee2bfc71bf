"""Entry point module: registers the ``histmatch`` and ``resmatch`` image harmonizers."""

from __future__ import annotations

from harmkit import hookimpl


@hookimpl
def harmkit_image_harmonizers() -> list[type]:
    from .histmatch import HistogramMatching
    from .resmatch import ResolutionMatching

    return [HistogramMatching, ResolutionMatching]
