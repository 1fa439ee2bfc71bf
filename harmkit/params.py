"""Plugin parameters: parsing ``--param`` values and checking them against a plugin's constructor.

The lowest layer of the plugin system (it imports nothing of harmkit but
its errors), so that model loading (:mod:`harmkit.interfaces`) and the
registry (:mod:`harmkit.plugins`) share one rule.
"""

from __future__ import annotations

import difflib
from typing import Any

from .errors import HarmkitError


def parse_param_value(text: str) -> Any:
    """A ``--param`` value: JSON (``true``, ``3``, ``0.5``, ``[1, 2]``, ``null``), ``true``/``false``/``none`` and
    ``inf``/``-inf`` in any case, a comma-separated list (``32,32,32``), else the text itself."""
    import json

    text = text.strip()
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        pass
    lowered = text.lower()
    if lowered in ("true", "false"):
        return lowered == "true"
    if lowered in ("none", "null"):
        return None
    if lowered.lstrip("+-") in ("inf", "infinity"):
        return float(lowered)
    if "," in text:
        return [parse_param_value(part) for part in text.split(",")]
    return text


def check_params(cls: type[Any], values: dict[str, Any], where: str = "", fix: str = "") -> dict[str, Any]:
    """Check ``values`` against the constructor of plugin class ``cls``: known names, values of the right type.

    Types come from the constructor's annotations (``bool``, ``int``,
    ``float``, ``str``, ``None``, unions, lists/tuples/sequences, mappings,
    ``Literal``), or from a default value when there is no annotation.
    Returns ``values`` unchanged; raises :class:`HarmkitError` otherwise.
    """
    import inspect

    try:
        signature = inspect.signature(cls.__init__)
    except (TypeError, ValueError):  # pragma: no cover - builtins
        return dict(values)
    parameters = {
        n: p for n, p in signature.parameters.items() if n != "self" and p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)
    }
    takes_any = any(p.kind == p.VAR_KEYWORD for p in signature.parameters.values())
    hints = _type_hints(cls)
    label = getattr(cls, "name", "") or cls.__name__
    for name in values:
        if name not in parameters:
            if takes_any:
                continue
            hint = difflib.get_close_matches(str(name), list(parameters), n=1)
            close = f"; did you mean {hint[0]!r}?" if hint else "."
            raise HarmkitError(
                f"{where}{name}: plugin {label!r} has no parameter {name!r}{close} "
                f"Its parameters: {', '.join(parameters)}{fix}"
            )
    checked = dict(values)
    for name, value in values.items():
        if name not in parameters:
            continue
        expected = hints.get(name, inspect.Parameter.empty)
        if expected is inspect.Parameter.empty:
            default = parameters[name].default
            expected = Any if default is inspect.Parameter.empty or default is None else type(default)
        if not _matches(value, expected) and not isinstance(value, (list, tuple, dict)) and _matches([value], expected):
            checked[name] = value = [value]  # one value where a list is expected: --param combat.smooth_terms=age
        if not _matches(value, expected):
            raise HarmkitError(f"{where}{name}={value!r}: expected {_describe(expected)} for plugin {label!r}{fix}")
    return checked


def _type_hints(cls: type[Any]) -> dict[str, Any]:
    """The constructor's annotations, evaluated one by one (an annotation that cannot be evaluated counts as Any)."""
    import inspect
    import sys
    import typing

    hints: dict[str, Any] = {}
    module = sys.modules.get(cls.__module__)
    namespace = {**vars(typing), **(vars(module) if module else {})}
    for name, parameter in inspect.signature(cls.__init__).parameters.items():
        annotation = parameter.annotation
        if isinstance(annotation, str):
            try:
                annotation = eval(annotation, namespace)  # noqa: S307 - annotations of an installed plugin
            except Exception:  # noqa: BLE001
                annotation = Any
        hints[name] = annotation
    return hints


def _matches(value: Any, expected: Any) -> bool:
    import collections.abc
    import os
    import types
    import typing

    if expected is Any or expected is object:
        return True
    if expected is None or expected is type(None):
        return value is None
    origin = typing.get_origin(expected)
    args = typing.get_args(expected)
    if origin in (typing.Union, types.UnionType):
        return any(_matches(value, a) for a in args)
    if origin is typing.Literal:
        return value in args
    if expected is bool:
        return isinstance(value, bool)
    if expected is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if expected is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if expected is str:
        return isinstance(value, str)
    if expected in (os.PathLike,) or origin is os.PathLike:
        return isinstance(value, (str, os.PathLike))
    sequence_types = (
        list,
        tuple,
        collections.abc.Sequence,
        collections.abc.Iterable,
        collections.abc.Collection,
    )
    if expected in sequence_types or origin in sequence_types:
        if not isinstance(value, (list, tuple)):
            return False
        if not args:
            return True
        if origin is tuple and not (len(args) == 2 and args[1] is Ellipsis):
            return len(value) == len(args) and all(_matches(v, a) for v, a in zip(value, args))
        return all(_matches(v, args[0]) for v in value)
    if expected in (dict, collections.abc.Mapping) or origin in (
        dict,
        collections.abc.Mapping,
    ):
        return isinstance(value, dict)
    if isinstance(expected, type):
        return isinstance(value, expected)
    return True


def _describe(expected: Any) -> str:
    import collections.abc
    import types
    import typing

    if expected is None or expected is type(None):
        return "none"
    origin = typing.get_origin(expected)
    args = typing.get_args(expected)
    if origin in (typing.Union, types.UnionType):
        return " or ".join(dict.fromkeys(_describe(a) for a in args))
    if origin is typing.Literal:
        return "one of " + ", ".join(repr(a) for a in args)
    names = {bool: "true or false", int: "an integer", float: "a number", str: "text"}
    if expected in names:
        return names[expected]
    if origin in (list, tuple, collections.abc.Sequence) or expected in (
        list,
        tuple,
        collections.abc.Sequence,
    ):
        if origin is tuple and args and args[-1] is not Ellipsis:
            return f"a list of {len(args)} values ({', '.join(_describe(a) for a in args)})"
        if not args:
            return "a list (comma-separated)"
        plural = {
            bool: "true/false values",
            int: "integers",
            float: "numbers",
            str: "texts",
        }.get(args[0])
        return f"a list of {plural or _describe(args[0]) + ' values'} (comma-separated)"
    if origin in (dict, collections.abc.Mapping) or expected in (
        dict,
        collections.abc.Mapping,
    ):
        return "a table (JSON object)"
    return getattr(expected, "__name__", str(expected))
