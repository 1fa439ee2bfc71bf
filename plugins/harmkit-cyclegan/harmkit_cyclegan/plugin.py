"""Entry point of the harmkit-cyclegan distribution (group ``harmkit``)."""

from __future__ import annotations

import harmkit


@harmkit.hookimpl
def harmkit_image_harmonizers() -> list[type]:
    from .harmonizer import CycleGANHarmonizer

    return [CycleGANHarmonizer]
