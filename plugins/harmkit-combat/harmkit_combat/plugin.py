"""Entry point module: registers the ``combat`` feature harmonizer."""

from __future__ import annotations

from harmkit import hookimpl


@hookimpl
def harmkit_feature_harmonizers() -> list[type]:
    from .combat import ComBat

    return [ComBat]
