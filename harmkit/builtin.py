"""harmkit's own evaluators, registered through the ``harmkit`` entry point like any plugin."""

from __future__ import annotations

from .hookspecs import hookimpl


@hookimpl
def harmkit_evaluators() -> list[type]:
    # Filled in as evaluators land (harmkit/evaluators/).
    return []
