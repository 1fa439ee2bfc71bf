"""Hook specifications: the contract between harmkit and its plugins.

A plugin is a module named by an entry point in the ``harmkit`` group::

    [project.entry-points.harmkit]
    foo = "harmkit_foo.plugin"

that implements one or more of these hooks with ``@harmkit.hookimpl``. Each
hook returns a list of classes; harmkit registers them under their ``name``
(and ``aliases``). Built-in plugins use exactly the same door.
"""

from __future__ import annotations

import pluggy

PROJECT = "harmkit"
hookspec = pluggy.HookspecMarker(PROJECT)
hookimpl = pluggy.HookimplMarker(PROJECT)


@hookspec
def harmkit_image_harmonizers() -> list[type]:
    """Return :class:`~harmkit.interfaces.ImageHarmonizer` subclasses this plugin provides."""


@hookspec
def harmkit_feature_harmonizers() -> list[type]:
    """Return :class:`~harmkit.interfaces.FeatureHarmonizer` subclasses this plugin provides."""


@hookspec
def harmkit_feature_extractors() -> list[type]:
    """Return :class:`~harmkit.interfaces.FeatureExtractor` subclasses this plugin provides."""


@hookspec
def harmkit_evaluators() -> list[type]:
    """Return :class:`~harmkit.interfaces.Evaluator` subclasses this plugin provides."""


HOOKS_BY_KIND = {
    "image-harmonizer": "harmkit_image_harmonizers",
    "feature-harmonizer": "harmkit_feature_harmonizers",
    "feature-extractor": "harmkit_feature_extractors",
    "evaluator": "harmkit_evaluators",
}
