"""The four interfaces every harmkit plugin implements.

They follow scikit-learn's estimator contract: the constructor stores
hyper-parameters and does nothing else; ``fit`` validates, learns, stores
state in attributes whose names end in ``_`` and returns ``self``;
``transform`` checks that ``fit`` ran and never learns. Fitted state is saved
as JSON plus ``.npz`` arrays (never pickle), so loading a model from an
untrusted source cannot execute code.
"""

from __future__ import annotations

import inspect
import json
import os
import tempfile
from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, TypeVar

import numpy as np

from .errors import HarmkitError, NotFittedError

if TYPE_CHECKING:  # pragma: no cover
    import pandas as pd
    import SimpleITK as sitk

    from .bench.context import BenchContext
    from .data import Cohort, Scan

STATE_FILE = "harmkit-model.json"
ARRAYS_FILE = "arrays.npz"


class Component(ABC):  # noqa: B024 - an ABC on purpose: its subclasses are the abstract kinds
    """Base of every plugin class: a registered name, a description, parameters.

    Subclasses set the class attributes ``name`` (the short name users type),
    ``description`` (one line for ``harmkit plugins``) and optionally
    ``aliases``.
    """

    name: ClassVar[str] = ""
    description: ClassVar[str] = ""
    aliases: ClassVar[tuple[str, ...]] = ()
    kind: ClassVar[str] = ""

    def get_params(self) -> dict[str, Any]:
        """Constructor parameters and their current values (scikit-learn style)."""
        sig = inspect.signature(type(self).__init__)
        return {
            p: getattr(self, p)
            for p in sig.parameters
            if p != "self"
            and sig.parameters[p].kind not in (inspect.Parameter.VAR_POSITIONAL, inspect.Parameter.VAR_KEYWORD)
        }

    def set_params(self, **params: Any) -> "Component":
        valid = self.get_params()
        for key, value in params.items():
            if key not in valid:
                raise HarmkitError(
                    f"{self.name or type(self).__name__}: unknown parameter {key!r}; valid parameters: "
                    f"{', '.join(sorted(valid))}"
                )
            setattr(self, key, value)
        return self

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.get_params().items())
        return f"{type(self).__name__}({args})"


class Fittable(Component):
    """A component with learned state that can be saved and loaded."""

    def _fitted_attributes(self) -> list[str]:
        return [k for k in vars(self) if k.endswith("_") and not k.startswith("_")]

    def check_fitted(self) -> None:
        """Raise :class:`NotFittedError` unless ``fit`` has run."""
        if not self._fitted_attributes():
            raise NotFittedError(
                f"{self.name or type(self).__name__} is not fitted yet: call fit() first, or load() a saved model"
            )

    def settings(self) -> dict[str, Any]:
        """Everything that decides the fitted model and its output, as JSON-able values (for cache keys).

        The default is the constructor parameters. A plugin whose defaults come
        from elsewhere (a named profile, a configuration file) returns the
        resolved values, so that a changed default never reuses a model fitted
        under the old one.
        """
        return self.get_params()

    # -- persistence -------------------------------------------------------
    def get_state(self) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
        """Fitted state as (JSON-serialisable dict, named numpy arrays).

        The default collects every attribute ending in ``_``: numpy arrays go
        to the array file, everything else must be JSON-serialisable.
        Subclasses with richer state (data frames, networks) override this and
        :meth:`set_state`.
        """
        self.check_fitted()
        meta: dict[str, Any] = {}
        arrays: dict[str, np.ndarray] = {}
        for key in self._fitted_attributes():
            value = getattr(self, key)
            if isinstance(value, np.ndarray):
                if value.dtype == object:
                    raise TypeError(f"{key}: object arrays cannot be saved safely")
                arrays[key] = value
            else:
                json.dumps(value)  # fail early with the attribute's name in the traceback
                meta[key] = value
        return meta, arrays

    def set_state(self, meta: Mapping[str, Any], arrays: Mapping[str, np.ndarray]) -> None:
        for key, value in {**meta, **arrays}.items():
            setattr(self, key, value)

    def save(self, path: str | os.PathLike) -> Path:
        """Write parameters and fitted state to the directory ``path``.

        The directory holds ``harmkit-model.json`` and ``arrays.npz``. It is
        written under a temporary name and renamed, so an interrupted save
        never leaves a model that looks complete. An existing ``path`` is
        replaced only when it is an empty folder or a saved model (it holds
        ``harmkit-model.json``): anything else is an error, never deleted.
        """
        from . import __version__

        path = Path(path)
        _check_model_destination(path)
        meta, arrays = self.get_state()
        document = {
            "format": "harmkit-model/1",
            "plugin": self.name,
            "kind": self.kind,
            "class": f"{type(self).__module__}.{type(self).__qualname__}",
            "harmkit_version": __version__,
            "params": self.get_params(),
            "state": meta,
        }
        import shutil

        from .errors import io_error

        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", dir=path.parent))
        except OSError as exc:
            raise io_error(exc, path) from None
        try:
            (tmp / STATE_FILE).write_text(json.dumps(document, indent=2, default=_json_default))
            np.savez_compressed(tmp / ARRAYS_FILE, **arrays)
            self._save_extra(tmp)
            if path.exists():
                shutil.rmtree(path)
            os.replace(tmp, path)
        except OSError as exc:
            shutil.rmtree(tmp, ignore_errors=True)
            raise io_error(exc, path) from None
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        return path

    def _save_extra(self, directory: Path) -> None:
        """Hook for subclasses that keep more files (e.g. network weights)."""

    def _load_extra(self, directory: Path) -> None:
        """Counterpart of :meth:`_save_extra`."""

    @classmethod
    def load(cls, path: str | os.PathLike) -> "Fittable":
        """Load a model written by :meth:`save`. Arrays load with ``allow_pickle=False``.

        A damaged model folder, or one whose parameters this version of the
        plugin does not know, raises :class:`~harmkit.errors.HarmkitError`
        naming the file and what is wrong.
        """
        import zipfile

        from .params import check_params

        path = Path(path)
        document = read_model_document(path)
        state_file = path / STATE_FILE
        if cls.name and document.get("plugin") not in (cls.name, *cls.aliases):
            raise HarmkitError(
                f"{path}: this model was saved by plugin {document.get('plugin')!r}, not {cls.name!r}; "
                f"load it with harmkit.load_model()"
            )
        params = check_params(
            cls,
            document["params"],
            where=f"{state_file}: parameter ",
            fix="; the model file is damaged or was saved by another version of the plugin: train it again",
        )
        try:
            obj = cls(**params)
        except (TypeError, ValueError) as exc:
            raise HarmkitError(
                f"{state_file}: its parameters are not accepted by {cls.__name__} ({exc}); train the model again"
            ) from None
        try:
            with np.load(path / ARRAYS_FILE, allow_pickle=False) as npz:
                arrays = {k: npz[k] for k in npz.files}
        except FileNotFoundError:
            raise HarmkitError(
                f"{path}: {ARRAYS_FILE} is missing; the model directory is incomplete, save it again"
            ) from None
        except ValueError as exc:
            if "pickle" not in str(exc).lower():
                raise HarmkitError(f"{path / ARRAYS_FILE}: corrupt array file ({exc}); save the model again") from None
            raise HarmkitError(
                f"{path / ARRAYS_FILE} holds pickled (object) arrays; harmkit refuses to load them because unpickling "
                f"a file from an untrusted source can execute code. Save the model again with harmkit"
            ) from None
        except (OSError, EOFError, zipfile.BadZipFile) as exc:
            raise HarmkitError(
                f"{path / ARRAYS_FILE}: corrupt array file ({type(exc).__name__}: {exc}); save the model again"
            ) from None
        try:
            obj.set_state(document["state"], arrays)
            obj._load_extra(path)
        except HarmkitError:
            raise
        except Exception as exc:  # noqa: BLE001 - a damaged state must not end in a traceback
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
            raise HarmkitError(
                f"{path}: the saved state cannot be loaded ({type(exc).__name__}: {first}); the model is damaged "
                f"or was saved by another version of plugin {document.get('plugin')!r}: train or save it again"
            ) from None
        return obj


def _check_model_destination(path: Path) -> None:
    """``path`` may receive a saved model: absent, an empty folder, or a saved model (never anything else)."""
    if not path.exists():
        return
    if not path.is_dir():
        raise HarmkitError(f"{path}: exists and is a file; choose another folder for the model")
    if (path / STATE_FILE).is_file() or not any(path.iterdir()):
        return
    raise HarmkitError(
        f"{path}: exists and is not a saved harmkit model (no {STATE_FILE}); harmkit will not replace it. "
        f"Choose another --out folder, or delete it yourself if you are sure"
    )


def read_model_document(path: Path) -> dict[str, Any]:
    """Read and check the JSON header of a saved model directory."""
    state_file = Path(path) / STATE_FILE
    if not state_file.is_file():
        raise HarmkitError(
            f"{path}: not a saved harmkit model (no {STATE_FILE}); pass the directory written by save() or 'harmkit "
            "train'"
        )
    try:
        document = json.loads(state_file.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise HarmkitError(f"{state_file}: corrupt model file ({exc}); save the model again") from None
    if not isinstance(document, dict):
        raise HarmkitError(f"{state_file}: corrupt model file (not a JSON object); save the model again")
    if document.get("format") != "harmkit-model/1":
        raise HarmkitError(f"{state_file}: unknown model format {document.get('format')!r}")
    for key, kind in (("plugin", str), ("params", dict), ("state", dict)):
        if not isinstance(document.get(key), kind):
            raise HarmkitError(
                f"{state_file}: corrupt model file ({key!r} is missing or not a {kind.__name__}); save the model again"
            )
    return document


def _json_default(value: Any) -> Any:
    if isinstance(value, (np.integer,)):
        return int(value)
    if isinstance(value, (np.floating,)):
        return float(value)
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"cannot store {type(value).__name__} in a model file")


class ImageHarmonizer(Fittable):
    """Translates scans into the style of a reference site group.

    ``fit`` learns from a :class:`~harmkit.data.Cohort` (unpaired; it may use
    any scans and masks but never counterfactual rows). ``transform`` returns
    a new :class:`~harmkit.data.Scan` whose image has the input's exact
    geometry (size, spacing, origin, direction) and stays in SUV.
    """

    kind: ClassVar[str] = "image-harmonizer"

    @abstractmethod
    def fit(self, cohort: "Cohort", reference_site: str) -> "ImageHarmonizer":
        """Learn the mapping of every other site group onto ``reference_site`` (a site group name)."""

    @abstractmethod
    def transform(self, scan: "Scan", target_site: str | None = None) -> "Scan":
        """Harmonize one scan towards ``target_site`` (default: the fitted reference)."""

    def resampling_floor(self, scan: "Scan", target_site: str | None = None) -> "Scan":
        """``scan`` through this harmonizer's pipeline with an identity model: the floor it must beat.

        Everything :meth:`transform` does to a scan besides what it learned
        (resampling to a working grid and back, intensity transforms, window
        blending) with the learned part replaced by the identity. The bench
        shows it as the ``resample`` row. The default, for methods that work
        on the scan's own grid, returns the scan unchanged.
        """
        self.check_fitted()
        return scan

    def learning_summary(self) -> dict[str, Any] | None:
        """Did fitting learn anything? ``None`` when the method cannot tell (the default).

        A learned model returns ``{"learned": bool, "message": str, ...}``; the
        bench reports a model with ``learned=False`` as not harmonization.
        """
        return None

    def fit_transform(self, cohort: "Cohort", reference_site: str) -> list["Scan"]:
        self.fit(cohort, reference_site)
        return [self.transform(scan) for scan in cohort]


class FeatureHarmonizer(Fittable):
    """Removes site effects from a feature table (rows: scans, columns: features).

    Usable inside a cross-validation fold: fit on training rows, transform test
    rows. ``sites`` is given separately so it never becomes a model feature.
    """

    kind: ClassVar[str] = "feature-harmonizer"

    @abstractmethod
    def fit(
        self,
        features: "pd.DataFrame",
        sites: Sequence[str],
        covariates: "pd.DataFrame | None" = None,
        reference_site: str | None = None,
    ) -> "FeatureHarmonizer":
        """Learn per-site location/scale effects from ``features``."""

    @abstractmethod
    def transform(
        self,
        features: "pd.DataFrame",
        sites: Sequence[str],
        covariates: "pd.DataFrame | None" = None,
    ) -> "pd.DataFrame":
        """Return a harmonized copy of ``features`` (same index and columns)."""

    def fit_transform(self, features, sites, covariates=None, reference_site=None):
        return self.fit(features, sites, covariates, reference_site).transform(features, sites, covariates)


class FeatureExtractor(Component):
    """Computes named features from an image inside a mask."""

    kind: ClassVar[str] = "feature-extractor"

    @abstractmethod
    def extract(self, image: "sitk.Image", mask: "sitk.Image") -> dict[str, float]:
        """Return ``{feature_name: value}`` for the voxels where ``mask`` is non-zero."""

    @abstractmethod
    def feature_classes(self) -> dict[str, str]:
        """Map each feature name this extractor returns to its class (``firstorder``, ``glcm``, ...)."""

    def settings(self) -> dict[str, Any]:
        """Every setting that affects the values, recorded in results and cache keys."""
        return self.get_params()

    @property
    def version(self) -> str:
        """Version string that changes whenever computed values may change (part of cache keys)."""
        return "0"


@dataclass(frozen=True)
class SummaryColumn:
    """A number an evaluator puts in the bench's summary table (report and terminal).

    ``key`` names an entry of the evaluator's ``summary["by_method"][row]``
    dicts; ``format`` is a format spec (``".3f"``, ``"+.1f"``, ``"+.0%"``),
    ``"p"`` for p-values or ``"d"`` for counts; ``short`` is the terminal's
    column title; ``group`` the terminal table it belongs to (one table per
    group, in order of first appearance).
    """

    key: str
    title: str
    format: str | None = None
    short: str | None = None
    group: str = "harmonization"
    description: str = ""
    """One sentence for the legend under the summary table."""


@dataclass
class ReportTable:
    """A table of an evaluator's report section: header and rows of already formatted cells."""

    header: list[str]
    rows: list[list[str]]
    ident: str = ""


@dataclass(frozen=True)
class ReportFigure:
    """A figure of an evaluator's report section: ``name`` is a key of ``EvaluationResult.figures``."""

    name: str
    caption: str = ""


ReportBlock = Any
"""One block of a report section: a paragraph (``str``, with ``**bold**`` and ```code```), a
:class:`ReportTable` or a :class:`ReportFigure`."""


@dataclass
class EvaluationResult:
    """What an evaluator returns: named tables, figure files, summary numbers, its report section.

    * ``tables`` -- data frames, written as ``tables/<evaluator>__<name>.csv`` and into ``results.json``;
    * ``figures`` -- PNG files the evaluator wrote into ``context.figure_dir``;
    * ``summary`` -- JSON-able numbers; ``summary["by_method"]["<method>|<reference>"]`` holds the row
      numbers that ``columns`` put in the summary table (see :func:`harmkit.bench.context.row_key`);
    * ``columns`` -- the :class:`SummaryColumn` entries this evaluator adds to the summary table;
    * ``report`` -- its section of report.md/report.html, as blocks (see :data:`ReportBlock`);
    * ``captions`` -- a caption per terminal table group;
    * ``skipped`` -- why the evaluator had nothing to evaluate (prefer raising
      :class:`~harmkit.errors.EvaluatorSkipped`).
    """

    name: str
    tables: dict[str, "pd.DataFrame"] = field(default_factory=dict)
    figures: dict[str, Path] = field(default_factory=dict)
    summary: dict[str, Any] = field(default_factory=dict)
    skipped: str | None = None
    columns: list[SummaryColumn] = field(default_factory=list)
    report: list[ReportBlock] = field(default_factory=list)
    captions: dict[str, str] = field(default_factory=dict)


class Evaluator(Component):
    """Consumes what a benchmark run produced and returns tables, figures and statistics.

    Subclasses set ``name`` and ``description`` (as every plugin), optionally
    ``title`` (the heading of their report section) and ``requires`` (names
    of evaluators whose results they read through ``context.result(name)``;
    the bench runs those first). Constructor parameters are the evaluator's
    options, set with ``--param EVALUATOR.NAME=VALUE``. :meth:`evaluate`
    reads only the public :class:`harmkit.bench.context.BenchContext` and
    raises :class:`~harmkit.errors.EvaluatorSkipped` when it has nothing to
    evaluate. See docs/plugin-authors.md.
    """

    kind: ClassVar[str] = "evaluator"
    title: ClassVar[str] = ""
    requires: ClassVar[tuple[str, ...]] = ()
    placement: ClassVar[str] = "section"
    """Where the report puts this evaluator's section: ``"section"`` (after the summary, in run order) or
    ``"headline"`` (before the summary table)."""

    @abstractmethod
    def evaluate(self, context: "BenchContext") -> EvaluationResult:
        """Evaluate one bench run (see :class:`harmkit.bench.context.BenchContext`)."""


RUN_PARAMETERS: dict[str, str] = {
    "random_state": "seed of the run (the bench's --seed) for a plugin's random draws",
    "seed": "the same, for plugins that call it seed",
    "progress": "False when the run is quiet (--quiet): no progress bars",
    "work_dir": "a folder of the run's cache where the plugin may keep checkpoints (resumed on rerun)",
    "device": "'cpu', 'cuda' or 'auto' (--device) for plugins that compute on an accelerator",
}
"""Constructor parameters with these names are set by the run, for every kind of plugin alike, when the
user left them at ``None`` (``progress``: whenever the run is quiet). Declare the ones you need, with the
default ``None``; harmkit never sets a parameter a plugin does not declare."""


C = TypeVar("C", bound=Component)


def apply_run_parameters(plugin: C, **values: Any) -> C:
    """Set the :data:`RUN_PARAMETERS` that ``plugin`` declares and the user left unset; return ``plugin``.

    ``values`` holds the run's values (``random_state=0, progress=False, ...``); ``None`` values are ignored.
    ``progress=False`` always wins (a quiet run stays quiet).
    """
    unknown = sorted(set(values) - set(RUN_PARAMETERS))
    if unknown:
        raise ValueError(f"not run parameters: {', '.join(unknown)}; run parameters: {', '.join(RUN_PARAMETERS)}")
    current = plugin.get_params()
    for name, value in values.items():
        if value is None or name not in current:
            continue
        if current[name] is None or (name == "progress" and value is False):
            setattr(plugin, name, value)
    return plugin


KINDS = {
    ImageHarmonizer.kind: ImageHarmonizer,
    FeatureHarmonizer.kind: FeatureHarmonizer,
    FeatureExtractor.kind: FeatureExtractor,
    Evaluator.kind: Evaluator,
}
