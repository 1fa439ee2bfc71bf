"""The public context every evaluator receives: what a bench run produced, and helpers to read it.

An evaluator (built-in or from a plugin package) reads only this class and
:mod:`harmkit.bench.stages`; see docs/plugin-authors.md for a walk-through.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..data import Cohort, Scan
from ..errors import HarmkitError
from ..interfaces import EvaluationResult
from ..methods import Method
from ..toolkit import feature_columns
from .config import BenchConfig
from .splits import Splits
from .stages import apply_feature_stages, hashable, plugin_key, plugin_params


def row_key(method: str, reference: str) -> str:
    """Key of one summary row (``summary["by_method"][row_key(...)]``): method label and reference site group."""
    return f"{method}|{reference}"


@dataclass
class BenchContext:
    """Everything a bench produced, handed to each evaluator (read it; do not change it).

    What the run produced:

    * ``config`` -- the run's :class:`~harmkit.bench.config.BenchConfig`
      (``seed``, ``voi``, ``reference_voi``, ``folds``, ``fit_on`` ...);
    * ``cohort``, ``groups`` (site groups), ``references`` (the groups each
      method maps towards), ``methods`` (:class:`~harmkit.methods.Method`, the
      baseline ``none`` first), ``vois``;
    * ``features[(method_label, reference)][voi]`` -- features after the
      method's *image* stages (index subject_id; columns ``site``,
      ``site_group`` then features); read it with :meth:`features_of`;
    * ``harmonized[(method_label, reference)]`` -- the scans an image stage
      changed; read it with :meth:`changed_scans`;
    * ``outcome`` and ``splits`` -- the Monte Carlo splits shared by every
      method (None when the cohort has no usable outcome;
      ``prediction_skipped`` says why);
    * ground truth, when the cohort has it: :meth:`counterfactual`,
      ``cf_features[voi]`` (features of the counterfactual scans),
      ``truth_features`` (features of the true activity maps, the oracle);
      ``fidelity_skipped`` says why there is none;
    * ``figure_dir`` -- where an evaluator writes its figures.

    Helpers: :meth:`map` (parallel over the run's workers), :meth:`memo` and
    :meth:`cache_key` (content-addressed cache), :meth:`feature_columns`,
    :meth:`harmonized_features` and :meth:`feature_stage` (a method's
    feature stages), :meth:`method_key`, :meth:`result` (a required
    evaluator's result).
    """

    config: BenchConfig
    cohort: Cohort
    groups: list[str]
    references: list[str]
    methods: list[Method]
    executor: Any
    cache: Any
    out_dir: Path
    figure_dir: Path
    features: dict[tuple[str, str], dict[str, Any]] = field(default_factory=dict)
    feature_classes: dict[str, str] = field(default_factory=dict)
    harmonized: dict[tuple[str, str], dict[str, Scan]] = field(default_factory=dict)
    outcome: Any = None  # pandas Series (subject_id -> 0/1) or None
    splits: Splits | None = None
    prediction_skipped: str | None = None
    counterfactuals: Cohort | None = None
    cf_features: dict[str, Any] = field(default_factory=dict)
    truth_features: Any = None
    fidelity_skipped: str | None = None
    ground_truth: dict[tuple[str, str], Scan] = field(default_factory=dict)
    ground_truth_source: str = ""
    results: dict[str, EvaluationResult] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    learning: dict[tuple[str, str, str], dict[str, Any]] = field(default_factory=dict)
    _columns: dict[str, list[str]] = field(default_factory=dict)

    # -- helpers for evaluators ---------------------------------------------
    @property
    def image_methods(self) -> list[Method]:
        """The methods with at least one image stage."""
        return [m for m in self.methods if m.image_stages]

    def features_of(self, method: Method | str, reference: str, voi: str):
        """The feature table after ``method``'s image stages towards ``reference`` (before its feature stages)."""
        label = method if isinstance(method, str) else method.label
        return self.features[(label, reference)][voi]

    def changed_scans(self, method: Method | str, reference: str) -> dict[str, Scan]:
        """``{subject_id: Scan}`` of the scans ``method``'s image stages changed towards ``reference``.

        Scans of the reference group, and every scan of a method without an image stage, are unchanged and absent.
        """
        label = method if isinstance(method, str) else method.label
        return self.harmonized.get((label, reference), {})

    def cohort_for(self, method: Method | str, reference: str) -> Cohort:
        """The cohort as ``method``'s image stages left it towards ``reference`` (unchanged scans as they were)."""
        changed = self.changed_scans(method, reference)
        scans = [changed.get(s.subject_id, s) for s in self.cohort]
        return Cohort(scans, self.cohort.root, self.cohort.manifest, self.cohort.metadata)

    def counterfactual(self, subject_id: str, reference: str) -> Scan | None:
        """The same subject really scanned at site group ``reference`` (ground truth), or None."""
        return self.ground_truth.get((str(subject_id), reference))

    def result(self, name: str) -> EvaluationResult | None:
        """The result of evaluator ``name``, which ran before this one (list it in your ``requires``)."""
        return self.results.get(name)

    def map(self, fn: Callable[[Any], Any], items, label: str = "working") -> list:
        """``fn`` over ``items`` on the run's workers (processes or a Dask cluster), results in input order.

        ``fn`` must be a module-level function. Returns one
        :class:`~harmkit.execution.TaskResult` per item (``.ok``, ``.value``,
        ``.error``); a progress bar shows ``label``.
        """
        return self.executor.map(fn, items, label=label)

    def cache_key(self, *parts: Any) -> str:
        """A content key for ``parts`` (data frames, arrays, lists, numbers, text) in the run's cache."""
        return self.cache.key("bench-memo", *[hashable(p) for p in parts])

    def cache_get(self, key: str) -> Any:
        """The value stored under ``key`` (from :meth:`cache_key`) in the run's cache, or None."""
        return self.cache.get(key)

    def cache_put(self, key: str, value: Any) -> Any:
        """Store ``value`` under ``key`` in the run's cache; returns ``value``."""
        return self.cache.put(key, value)

    def method_key(self, method: Method) -> list:
        """What identifies ``method``'s computation (stage names, plugin versions, parameters): for cache keys."""
        return plugin_key(self.config, method)

    @property
    def vois(self) -> list[str]:
        return list(self.features[(self.methods[0].label, self.references[0])])

    def feature_columns(self, voi: str) -> list[str]:
        """Feature columns used for ``voi``: finite in every method's table and
        not constant within any site group of the baseline (ComBat and
        standardization need a spread). The same columns for every method."""
        if voi not in self._columns:
            tables = [t[voi] for t in self.features.values() if voi in t]
            base = self.features[("none", self.references[0])][voi]
            columns = feature_columns(base)
            keep = []
            for column in columns:
                if not all(column in t.columns and np.isfinite(t[column].to_numpy(dtype=float)).all() for t in tables):
                    continue
                spread = base.groupby("site_group")[column].std()
                if (spread.fillna(0) <= 1e-12).any():
                    continue
                keep.append(column)
            if not keep:
                raise HarmkitError(
                    f"VOI {voi!r}: no feature is finite for every scan and varies within each site group; check the "
                    "masks"
                )
            self._columns[voi] = keep
        return self._columns[voi]

    def feature_stage(
        self,
        method: Method,
        reference: str | None,
        train,
        train_groups,
        apply_to: list[tuple[Any, Any]],
    ):
        """Fit ``method``'s feature stages on ``train`` and return them applied to each ``(X, groups)``.

        ``train``/``X`` are DataFrames of feature columns; ``*_groups`` the
        site group of each row (the batches). Stages chain: each is fitted on
        the previous stage's output of the training rows.
        """
        return apply_feature_stages(
            self.stage_specs(method),
            self.config.seed,
            reference,
            train,
            train_groups,
            apply_to,
        )

    def stage_specs(self, method: Method) -> list[tuple[str, dict]]:
        """``[(plugin name, parameters)]`` of ``method``'s feature stages (picklable)."""
        return [(stage.name, plugin_params(self.config, stage.name)) for stage in method.feature_stages]

    def harmonized_features(self, method: Method, reference: str, voi: str):
        """Features of every scan after all of ``method``'s stages, feature stages fitted on all rows.

        Used by the reproducibility and fidelity evaluators, which compare
        distributions of the whole cohort and never see the outcome.
        """
        table = self.features[(method.label, reference)][voi]
        columns = self.feature_columns(voi)
        X = table[columns].astype(float)
        if not method.feature_stages:
            return X

        def compute():
            return self.feature_stage(method, reference, X, table["site_group"], [(X, table["site_group"])])[0]

        return self.memo(
            "features-all-rows",
            (method.label, reference, voi, X, plugin_key(self.config, method)),
            compute,
        )

    def memo(self, name: str, parts: tuple, compute: Callable[[], Any]):
        """``compute()`` once per content key (``name`` + ``parts``), stored in the bench cache.

        Put everything the result depends on into ``parts`` (tables, the
        method's :meth:`method_key`, your parameters, a version string), so a
        change recomputes and an unchanged rerun only reads the cache.
        """
        return self.cache.get_or_compute(self.cache_key(name, *parts), compute)
