"""Conformance checks for harmkit plugins, in the spirit of scikit-learn's ``check_estimator``.

A plugin author calls :func:`check_plugin` from their own test suite::

    from harmkit.testing import check_plugin
    from harmkit_foo import FooHarmonizer

    def test_foo_follows_the_harmkit_contract():
        check_plugin(FooHarmonizer(n_iter=3))   # small parameters keep it fast

Every check runs on small synthetic data made here (two or three sites that
really differ), so it needs no files. A failed check raises
:class:`PluginContractError` naming the plugin, the check and what to change.
The checks, by kind:

* every plugin: a registered ``name`` and a one-line ``description``; the
  constructor only stores its arguments (``get_params`` returns exactly them,
  and a copy built from ``get_params()`` has equal parameters);
  ``set_params`` round-trips and refuses an unknown name with a
  :class:`~harmkit.errors.HarmkitError`;
* harmonizers: ``transform`` before ``fit`` raises
  :class:`~harmkit.errors.NotFittedError`; ``fit`` returns ``self``; ``save``
  then ``load`` gives an object of the same class and parameters whose
  outputs are identical, and the saved arrays load with
  ``allow_pickle=False``; two fits with the same parameters (and seed) give
  identical outputs;
* image harmonizers, in addition: the output keeps the input's exact
  geometry and is finite;
* feature harmonizers: the output keeps the input's index and columns;
* feature extractors: ``extract`` returns finite floats, ``feature_classes``
  names the class of every returned feature, and two calls agree;
* evaluators: the parameter contract, and ``requires`` names only strings.

The checks only use the public API (:mod:`harmkit.interfaces`).
"""

from __future__ import annotations

import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from .errors import HarmkitError, NotFittedError
from .interfaces import (
    ARRAYS_FILE,
    Component,
    Evaluator,
    FeatureExtractor,
    FeatureHarmonizer,
    ImageHarmonizer,
)

__all__ = [
    "PluginContractError",
    "check_plugin",
    "synthetic_cohort",
    "synthetic_features",
]


class PluginContractError(AssertionError):
    """A plugin broke the harmkit plugin contract; the message names the check and the fix."""


def check_plugin(plugin: Component, *, cohort=None, features=None, reference: str | None = None) -> list[str]:
    """Run every contract check that applies to ``plugin`` (an instance); return the names of the checks passed.

    ``cohort`` (image harmonizers and extractors) and ``features`` (a
    ``(table, sites)`` pair for feature harmonizers) replace the synthetic data
    when a plugin needs data of its own shape, e.g. masks of its own names;
    ``reference`` is the site group image harmonizers map towards (default:
    the cohort's first, in the synthetic cohort the smooth site A).
    Raises :class:`PluginContractError` on the first failed check.
    """
    if not isinstance(plugin, Component):
        raise PluginContractError(
            f"{plugin!r} is not a harmkit plugin: subclass one of ImageHarmonizer, FeatureHarmonizer, "
            f"FeatureExtractor or Evaluator from harmkit.interfaces"
        )
    checks: list[tuple[str, Callable[[], None]]] = [
        ("name and description", lambda: _check_identity(plugin)),
        ("constructor stores parameters", lambda: _check_params(plugin)),
    ]
    if isinstance(plugin, ImageHarmonizer):
        data = cohort if cohort is not None else synthetic_cohort()
        checks += _harmonizer_checks(plugin, _ImageCase(data, reference))
    elif isinstance(plugin, FeatureHarmonizer):
        table, sites = features if features is not None else synthetic_features()
        checks += _harmonizer_checks(plugin, _FeatureCase(table, sites))
    elif isinstance(plugin, FeatureExtractor):
        data = cohort if cohort is not None else synthetic_cohort(n_per_site=1)
        checks.append(
            (
                "extract returns finite, classified features",
                lambda: _check_extractor(plugin, data),
            )
        )
    elif isinstance(plugin, Evaluator):
        checks.append(("requires names evaluators", lambda: _check_requires(plugin)))
    passed = []
    for title, check in checks:
        try:
            check()
        except PluginContractError as exc:
            raise PluginContractError(f"{_who(plugin)}: check '{title}' failed: {exc}") from None
        passed.append(title)
    return passed


# ---------------------------------------------------------------------------
# synthetic data
# ---------------------------------------------------------------------------


def synthetic_features(n_per_site: int = 20, n_features: int = 6, seed: int = 0):
    """A feature table of three sites with additive and multiplicative site effects, and the site of each row."""
    import pandas as pd

    rng = np.random.default_rng(seed)
    sites = np.repeat(["S0", "S1", "S2"], n_per_site)
    shift = {"S0": 0.0, "S1": 1.5, "S2": -1.0}
    scale = {"S0": 1.0, "S1": 1.6, "S2": 0.7}
    values = rng.normal(size=(len(sites), n_features)) + 5.0
    values = np.array([v * scale[s] + shift[s] for v, s in zip(values, sites)])
    index = [f"P{i:03d}" for i in range(len(sites))]
    table = pd.DataFrame(values, index=index, columns=[f"feature_{j}" for j in range(n_features)])
    return table, pd.Series(sites, index=index, name="site")


def synthetic_cohort(n_per_site: int = 2, shape=(20, 24, 24), seed: int = 0):
    """Two sites, A (blurred, little noise) and B (sharp, noisy), of small PET-like scans.

    Each scan has an ellipsoid body (SUV about 1) with a hot sphere, and the
    masks ``body``, ``lesion`` (the sphere) and ``reference`` (a cube of
    homogeneous tissue), all on the image grid.
    """
    import SimpleITK as sitk
    from scipy import ndimage

    from .data import Cohort, Scan

    scans = []
    for site_index, site in enumerate("AB"):
        for i in range(n_per_site):
            rng = np.random.default_rng(seed + 100 * site_index + i)
            z, y, x = np.meshgrid(*[np.linspace(-1, 1, n) for n in shape], indexing="ij")
            body = (z / 0.9) ** 2 + (y / 0.8) ** 2 + (x / 0.8) ** 2 <= 1
            centre = rng.uniform(-0.2, 0.2, 3)
            lesion = (z - centre[0]) ** 2 + (y - 0.35 - centre[1]) ** 2 + (x - centre[2]) ** 2 <= 0.25**2
            image = np.where(body, 1.0, 0.0) + np.where(lesion, rng.uniform(4, 8), 0.0)
            if site == "A":
                image = ndimage.gaussian_filter(image, 1.2) + rng.normal(0, 0.03, shape)
            else:
                image = image + rng.normal(0, 0.2, shape) * np.sqrt(np.maximum(image, 0.05))
            reference = np.zeros(shape, dtype=bool)
            reference[6:12, 4:10, 9:15] = True
            reference &= body & ~ndimage.binary_dilation(lesion, iterations=2)
            itk = sitk.GetImageFromArray(np.maximum(image, 0).astype(np.float32))
            itk.SetSpacing((4.0, 4.0, 4.0))
            masks = {}
            for name, array in (
                ("body", body),
                ("lesion", lesion),
                ("reference", reference),
            ):
                mask = sitk.GetImageFromArray(array.astype(np.uint8))
                mask.CopyInformation(itk)
                masks[name] = mask
            scans.append(Scan(f"{site}{i}", site, itk, masks, outcome=i % 2))
    return Cohort(scans)


# ---------------------------------------------------------------------------
# checks shared by every kind
# ---------------------------------------------------------------------------


def _who(plugin: Component) -> str:
    return f"{type(plugin).__name__} ({getattr(plugin, 'name', '') or 'no name'})"


def _check_identity(plugin: Component) -> None:
    if not isinstance(plugin.name, str) or not plugin.name.strip():
        raise PluginContractError("set the class attribute 'name' to the short name users type")
    if not isinstance(plugin.description, str) or not plugin.description.strip():
        raise PluginContractError("set the class attribute 'description' to one line for 'harmkit plugins'")
    if plugin.name != plugin.name.strip() or "+" in plugin.name or "," in plugin.name:
        raise PluginContractError(f"name {plugin.name!r}: no spaces at the ends, no '+' or ',' (they separate methods)")


def _check_params(plugin: Component) -> None:
    params = plugin.get_params()
    for key in params:
        if not hasattr(plugin, key):
            raise PluginContractError(f"the constructor argument {key!r} is not stored as attribute self.{key}")
    try:
        clone = type(plugin)(**params)
    except Exception as exc:  # noqa: BLE001 - any failure breaks the contract
        raise PluginContractError(
            f"{type(plugin).__name__}(**get_params()) failed: {type(exc).__name__}: {exc}"
        ) from None
    if not _equal(clone.get_params(), params):
        raise PluginContractError(
            "a copy built from get_params() reports other parameters: store each argument unchanged"
        )
    fitted = [k for k in vars(clone) if k.endswith("_") and not k.startswith("_")]
    if fitted:
        raise PluginContractError(f"the constructor sets fitted attribute(s) {', '.join(fitted)}; only fit() may")
    if params:
        key, value = next(iter(params.items()))
        if clone.set_params(**{key: value}) is not clone:
            raise PluginContractError("set_params() must return self")
    try:
        clone.set_params(no_such_parameter_xyz=1)
    except HarmkitError:
        pass
    else:
        raise PluginContractError("set_params() accepted an unknown parameter; it must raise HarmkitError naming it")


def _equal(a: Any, b: Any) -> bool:
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(_equal(a[k], b[k]) for k in a)
    if isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)):
        return len(a) == len(b) and all(_equal(x, y) for x, y in zip(a, b))
    if isinstance(a, np.ndarray) or isinstance(b, np.ndarray):
        return np.array_equal(np.asarray(a), np.asarray(b))
    if isinstance(a, float) and isinstance(b, float) and np.isnan(a) and np.isnan(b):
        return True
    return bool(a == b)


# ---------------------------------------------------------------------------
# harmonizers
# ---------------------------------------------------------------------------


class _ImageCase:
    """How to fit, apply and compare an image harmonizer on a cohort."""

    def __init__(self, cohort, reference: str | None) -> None:
        self.cohort = cohort
        groups = cohort.site_groups
        if len(groups) < 2:
            raise PluginContractError("the cohort for an image harmonizer needs two site groups")
        self.reference = reference or groups[0]
        self.probe = next(s for s in cohort if s.group != self.reference)

    def fit(self, plugin):
        return plugin.fit(self.cohort, self.reference)

    def apply(self, plugin) -> np.ndarray:
        import SimpleITK as sitk

        from .imageio import same_geometry

        out = plugin.transform(self.probe).load_image()
        original = self.probe.load_image()
        if not same_geometry(out, original):
            raise PluginContractError(
                "transform changed the image geometry; return the input's size, spacing, origin and direction"
            )
        values = sitk.GetArrayFromImage(out)
        if not np.isfinite(values).all():
            raise PluginContractError("transform returned non-finite voxels")
        return values

    def unfitted(self, plugin) -> None:
        plugin.transform(self.probe)


class _FeatureCase:
    """How to fit, apply and compare a feature harmonizer on a table."""

    def __init__(self, table, sites) -> None:
        self.table, self.sites = table, list(sites)

    def fit(self, plugin):
        return plugin.fit(self.table, self.sites)

    def apply(self, plugin) -> np.ndarray:
        out = plugin.transform(self.table, self.sites)
        if not (out.index.equals(self.table.index) and list(out.columns) == list(self.table.columns)):
            raise PluginContractError("transform must return the input's index and columns, in the same order")
        return out.to_numpy(dtype=float)

    def unfitted(self, plugin) -> None:
        plugin.transform(self.table, self.sites)


def _harmonizer_checks(plugin, case) -> list[tuple[str, Callable[[], None]]]:
    fresh = lambda: type(plugin)(**plugin.get_params())  # noqa: E731
    state: dict[str, Any] = {}

    def unfitted() -> None:
        try:
            case.unfitted(fresh())
        except NotFittedError:
            return
        except HarmkitError as exc:
            raise PluginContractError(f"transform before fit raised HarmkitError, not NotFittedError: {exc}") from None
        raise PluginContractError(
            "transform before fit must raise harmkit.errors.NotFittedError (see Fittable.check_fitted)"
        )

    def fit_returns_self() -> None:
        model = fresh()
        returned = case.fit(model)
        if returned is not model:
            raise PluginContractError("fit() must return self")
        state["model"], state["output"] = model, case.apply(model)

    def save_load() -> None:
        model = state["model"]
        with tempfile.TemporaryDirectory(prefix="harmkit-check-") as tmp:
            path = Path(model.save(Path(tmp) / "model"))
            arrays = path / ARRAYS_FILE
            if arrays.is_file():
                with np.load(arrays, allow_pickle=False) as npz:
                    for key in npz.files:
                        npz[key]  # raises on object (pickled) arrays
            loaded = type(model).load(path)
            if type(loaded) is not type(model) or not _equal(loaded.get_params(), model.get_params()):
                raise PluginContractError("load() must return the same class with the same parameters")
            if not np.array_equal(case.apply(loaded), state["output"], equal_nan=True):
                raise PluginContractError("a saved and loaded model gives other outputs than the model itself")

    def deterministic() -> None:
        again = fresh()
        case.fit(again)
        if not np.array_equal(case.apply(again), state["output"], equal_nan=True):
            raise PluginContractError(
                "two fits with the same parameters gave different outputs; draw randomness from a seed parameter "
                "('random_state' or 'seed')"
            )

    return [
        ("transform before fit raises NotFittedError", unfitted),
        ("fit returns self", fit_returns_self),
        ("save and load round trip without pickle", save_load),
        ("same parameters, same outputs", deterministic),
    ]


# ---------------------------------------------------------------------------
# extractors and evaluators
# ---------------------------------------------------------------------------


def _check_extractor(plugin: FeatureExtractor, cohort) -> None:
    scan = cohort[0]
    mask_name = "lesion" if "lesion" in scan.masks else next(iter(scan.masks))
    image, mask = scan.load_image(), scan.load_mask(mask_name)
    first = plugin.extract(image, mask)
    if not isinstance(first, dict) or not first:
        raise PluginContractError("extract() must return a non-empty dict {feature_name: value}")
    bad = [k for k, v in first.items() if not isinstance(k, str) or not np.isfinite(float(v))]
    if bad:
        raise PluginContractError(f"extract() returned non-finite or unnamed values for {', '.join(map(str, bad[:5]))}")
    classes = plugin.feature_classes()
    unclassified = sorted(set(first) - set(classes))
    if unclassified:
        raise PluginContractError(f"feature_classes() names no class for {', '.join(unclassified[:5])}")
    second = plugin.extract(image, mask)
    if first.keys() != second.keys() or not all(float(first[k]) == float(second[k]) for k in first):
        raise PluginContractError("two extract() calls on the same image and mask gave different values")
    if not isinstance(plugin.settings(), dict) or not isinstance(plugin.version, str):
        raise PluginContractError("settings() must return a dict and version a string (they key the feature cache)")


def _check_requires(plugin: Evaluator) -> None:
    requires = getattr(plugin, "requires", ())
    if not isinstance(requires, (tuple, list)) or not all(isinstance(r, str) and r for r in requires):
        raise PluginContractError("'requires' must be a tuple of evaluator names")
    if plugin.name in requires:
        raise PluginContractError("an evaluator cannot require itself")
