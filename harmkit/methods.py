"""Method pipelines: ``gan+combat`` is an image stage, then a feature stage."""

from __future__ import annotations

from dataclasses import dataclass

from .errors import HarmkitError
from .plugins import HARMONIZER_KINDS, Registry, get_registry

BASELINE = "none"


@dataclass(frozen=True)
class Stage:
    """One step of a method: a registered harmonizer and its kind."""

    name: str  # canonical plugin name (aliases resolved)
    kind: str  # "image-harmonizer" or "feature-harmonizer"

    @property
    def is_image(self) -> bool:
        return self.kind == "image-harmonizer"


@dataclass(frozen=True)
class Method:
    """A parsed method string; ``label`` is what the user typed (normalised).

    ``control`` marks the rows a bench adds to give every image method a floor
    and a ceiling: ``"resample"`` (the identity through the image method's own
    resampling), ``"oracle"`` (each scan replaced by the same subject
    really scanned at the reference site) and ``"oracle-grid"`` (that scan
    resampled onto the original scan's grid: what the grid alone costs a
    perfect translation). A control has no stages.
    """

    label: str
    stages: tuple[Stage, ...]
    control: str = ""

    @property
    def image_stages(self) -> tuple[Stage, ...]:
        return tuple(s for s in self.stages if s.is_image)

    @property
    def feature_stages(self) -> tuple[Stage, ...]:
        return tuple(s for s in self.stages if not s.is_image)

    @property
    def is_baseline(self) -> bool:
        return not self.stages and not self.control


def parse_method(text: str, registry: "Registry | None" = None) -> Method:
    """Parse ``"gan+combat"`` into its stages; ``"none"`` is the unharmonized baseline.

    Image stages must come before feature stages: features are computed from
    images, so an image stage after a feature stage would have no effect.
    Unknown names fail with the list of available names and a close match.
    ``registry`` defaults to the installed plugins (:func:`harmkit.plugins.get_registry`).

    >>> parse_method("none").stages
    ()
    """
    label = text.strip().lower()
    if not label:
        raise HarmkitError("empty method name; use e.g. 'none', 'combat' or 'gan+combat'")
    if label == BASELINE:
        return Method(BASELINE, ())
    registry = registry if registry is not None else get_registry()
    stages: list[Stage] = []
    parts = [part.strip() for part in label.split("+")]
    if "" in parts:
        raise HarmkitError(f"method {text!r} has an empty stage; join stage names with single '+', e.g. 'gan+combat'")
    label = "+".join(parts)
    for part in parts:
        if part == BASELINE:
            raise HarmkitError(f"method {text!r}: 'none' cannot be combined with other stages")
        info = registry.get(part, HARMONIZER_KINDS)
        stages.append(Stage(info.name, info.kind))
    seen_feature = False
    for stage in stages:
        if not stage.is_image:
            seen_feature = True
        elif seen_feature:
            raise HarmkitError(
                f"method {text!r}: image stage {stage.name!r} comes after a feature stage; "
                f"write image stages first, e.g. 'gan+combat'"
            )
    return Method(label, tuple(stages))


def parse_methods(text: str, registry: "Registry | None" = None) -> list[Method]:
    """Parse a comma-separated list; the baseline ``none`` is always included first.

    >>> [m.label for m in parse_methods("none")]
    ['none']
    """
    methods = [parse_method(part, registry) for part in text.split(",") if part.strip()]
    labels = [m.label for m in methods]
    duplicates = sorted({label for label in labels if labels.count(label) > 1})
    if duplicates:
        raise HarmkitError(f"method(s) listed twice: {', '.join(duplicates)}")
    if BASELINE not in labels:
        methods.insert(0, Method(BASELINE, ()))
    return methods
