"""Feature stages and plugin parameters of a bench run (no state; module-level so it runs in workers).

:func:`apply_feature_stages` fits a method's feature stages (e.g. ComBat) on
training rows and applies them; :func:`plugin_params` and :func:`plugin_key`
say with which parameters a plugin runs and what identifies its computation
in the cache.
"""

from __future__ import annotations

import warnings
from typing import Any

import numpy as np

from ..errors import HarmkitError
from ..interfaces import apply_run_parameters
from ..methods import Method
from .config import BenchConfig


def hashable(part: Any) -> Any:
    """DataFrames as (columns, index, values): what identifies a feature table for a cache key."""
    if hasattr(part, "columns") and hasattr(part, "index") and hasattr(part, "to_numpy"):
        return [
            "frame",
            [str(c) for c in part.columns],
            [str(i) for i in part.index],
            np.ascontiguousarray(part.to_numpy(dtype=float)),
        ]
    if isinstance(part, (list, tuple)):
        return [hashable(p) for p in part]
    return part


def apply_feature_stages(
    specs: list[tuple[str, dict]],
    seed: int,
    reference: str | None,
    train,
    train_groups,
    apply_to: list[tuple[Any, Any]],
):
    """Fit the feature stages ``specs`` on ``train`` and apply them to each ``(X, groups)``.

    Module level: runs in workers.
    """
    from ..plugins import get_harmonizer

    outputs = [x for x, _ in apply_to]
    current_train = train
    for number, (name, params) in enumerate(specs):
        harmonizer = apply_run_parameters(get_harmonizer(name, **params), random_state=seed, seed=seed, progress=False)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # small-site warnings of ComBat repeat on every split
            harmonizer.fit(current_train, list(train_groups), None, reference_site=reference)
            outputs = [harmonizer.transform(x, list(groups)) for x, (_, groups) in zip(outputs, apply_to)]
            if number + 1 < len(specs):
                current_train = harmonizer.transform(current_train, list(train_groups))
    return outputs


def plugin_params(config: BenchConfig, name: str, kinds: tuple[str, ...] | None = None) -> dict[str, Any]:
    """Constructor parameters of plugin ``name`` for this bench (profile, then ``params`` of the config).

    Parameters the installed plugin does not accept are dropped (with a note
    in ``results.json``), so a profile written for one plugin version does not
    break another.
    """
    import inspect

    from ..plugins import HARMONIZER_KINDS, get_registry

    params = config.plugin_params(name)
    try:
        info = get_registry().get(name, kinds or HARMONIZER_KINDS)
    except HarmkitError:
        return params
    signature = inspect.signature(info.cls.__init__)
    if any(p.kind == p.VAR_KEYWORD for p in signature.parameters.values()):
        return params
    return {k: v for k, v in params.items() if k in signature.parameters}


def plugin_key(config: BenchConfig, method: Method) -> list:
    """What identifies a method's computation: stage names, versions and resolved settings.

    The settings, not the parameters as given: the same configuration spelt another way (a parameter set to
    its default) is the same computation, and a plugin release with other defaults is another.
    """
    from ..plugins import HARMONIZER_KINDS, get_harmonizer, get_registry

    parts = []
    for stage in method.stages:
        info = get_registry().get(stage.name, HARMONIZER_KINDS)
        parts.append(
            [
                stage.name,
                info.distribution,
                info.version,
                get_harmonizer(stage.name, **plugin_params(config, stage.name)).settings(),
            ]
        )
    return parts
