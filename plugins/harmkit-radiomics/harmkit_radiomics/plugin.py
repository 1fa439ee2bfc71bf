"""Entry point of the harmkit-radiomics distribution (group ``harmkit``)."""

from __future__ import annotations

from harmkit import hookimpl


@hookimpl
def harmkit_feature_extractors() -> list[type]:
    from .extractor import RadiomicsExtractor

    return [RadiomicsExtractor]
