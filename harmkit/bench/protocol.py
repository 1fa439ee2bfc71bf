"""The benchmark run: one protocol for every method.

Data flows one way::

    cohort ─► image stages (fitted once per method, reused for every reference)
           ─► features from the same VOIs for every method
           ─► the same stratified Monte Carlo splits for every method
           ─► evaluators (image quality · reproducibility · prediction · fidelity · QC)
           ─► report (terminal table, report.md/html, figures, results.json, CSV)

Every expensive stage is cached by content in ``<out>/cache`` (or
``--cache-dir``): a rerun with nothing changed only reads the cache, an added
method computes only that method, and an interrupted run resumes where it
stopped.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import time
import warnings
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Callable

import numpy as np

from ..data import Cohort, Scan
from ..errors import HarmkitError
from ..methods import Method, parse_methods
from .config import BenchConfig, load_config
from .splits import Splits, monte_carlo_splits

# The built-in evaluators run in this order (fidelity reads prediction's AUCs);
# evaluators of third-party plugins run after them, by name.
BUILTIN_EVALUATORS = ("image-quality", "reproducibility", "prediction", "fidelity", "qc")
SIM_SIZES = {"quick": "quick", "paper": "full"}
NON_FEATURE_COLUMNS = ("site", "site_group")


# ---------------------------------------------------------------------------
# the context every evaluator receives
# ---------------------------------------------------------------------------


@dataclass
class BenchContext:
    """Everything a bench produced, handed to each evaluator.

    * ``features[(method_label, reference)][voi]`` -- features after the
      method's *image* stages (index subject_id; columns ``site``,
      ``site_group`` then features). The baseline ``none`` has the same table
      under every reference.
    * ``harmonized[(method_label, reference)]`` -- ``{subject_id: Scan}`` of the
      scans an image stage changed (scans of the reference group are unchanged
      and absent).
    * ``splits`` -- the Monte Carlo splits shared by every method (None when
      the cohort has no usable outcome; ``prediction_skipped`` says why).
    * ``counterfactuals`` / ``cf_features`` / ``truth_features`` -- the
      simulator's ground truth, when the cohort has it.
    * :meth:`feature_stage` and :meth:`harmonized_features` apply a method's
      feature stages (fitted on training rows, or on all rows).
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
    results: dict[str, Any] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    _columns: dict[str, list[str]] = field(default_factory=dict)

    # -- helpers for evaluators ---------------------------------------------
    @property
    def image_methods(self) -> list[Method]:
        return [m for m in self.methods if m.image_stages]

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
            columns = [c for c in base.columns if c not in NON_FEATURE_COLUMNS]
            keep = []
            for column in columns:
                if not all(column in t.columns and np.isfinite(t[column].to_numpy(dtype=float)).all() for t in tables):
                    continue
                spread = base.groupby("site_group")[column].std()
                if (spread.fillna(0) <= 1e-12).any():
                    continue
                keep.append(column)
            if not keep:
                raise HarmkitError(f"VOI {voi!r}: no feature is finite for every scan and varies within each site group; check the masks")
            self._columns[voi] = keep
        return self._columns[voi]

    def feature_stage(self, method: Method, reference: str, train, train_groups, apply_to: list[tuple[Any, Any]]):
        """Fit ``method``'s feature stages on ``train`` and return them applied to each ``(X, groups)``.

        ``train``/``X`` are DataFrames of feature columns; ``*_groups`` the
        site group of each row (the batches). Stages chain: each is fitted on
        the previous stage's output of the training rows.
        """
        return apply_feature_stages(self.stage_specs(method), self.config.seed, reference, train, train_groups, apply_to)

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

        return self.memo("features-all-rows", (method.label, reference, voi, X, plugin_key(self.config, method)), compute)

    def memo(self, name: str, parts: tuple, compute: Callable[[], Any]):
        """``compute()`` once per content key (``name`` + ``parts``), stored in the bench cache."""
        key = self.cache.key("bench-memo", name, *[_hashable(p) for p in parts])
        return self.cache.get_or_compute(key, compute)


def _hashable(part: Any) -> Any:
    """DataFrames as (columns, index, values): what identifies a feature table for a cache key."""
    if hasattr(part, "columns") and hasattr(part, "index") and hasattr(part, "to_numpy"):
        return ["frame", [str(c) for c in part.columns], [str(i) for i in part.index], np.ascontiguousarray(part.to_numpy(dtype=float))]
    if isinstance(part, (list, tuple)):
        return [_hashable(p) for p in part]
    return part


def apply_feature_stages(specs: list[tuple[str, dict]], seed: int, reference: str, train, train_groups, apply_to: list[tuple[Any, Any]]):
    """Fit the feature stages ``specs`` on ``train`` and apply them to each ``(X, groups)`` (module level: runs in workers)."""
    from ..plugins import get_harmonizer

    outputs = [x for x, _ in apply_to]
    current_train = train
    for number, (name, params) in enumerate(specs):
        harmonizer = get_harmonizer(name, **params)
        if "random_state" in harmonizer.get_params():
            harmonizer.set_params(random_state=seed)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # small-site warnings of ComBat repeat on every split
            harmonizer.fit(current_train, list(train_groups), None, reference_site=reference)
            outputs = [harmonizer.transform(x, list(groups)) for x, (_, groups) in zip(outputs, apply_to)]
            if number + 1 < len(specs):
                current_train = harmonizer.transform(current_train, list(train_groups))
    return outputs


def plugin_params(config: BenchConfig, name: str) -> dict[str, Any]:
    """Constructor parameters of plugin ``name`` for this bench (profile, then ``params`` of the config).

    Parameters the installed plugin does not accept are dropped (with a note
    in ``results.json``), so a profile written for one plugin version does not
    break another.
    """
    import inspect

    from ..plugins import HARMONIZER_KINDS, get_registry

    params = config.plugin_params(name)
    try:
        info = get_registry().get(name, HARMONIZER_KINDS)
    except HarmkitError:
        return params
    signature = inspect.signature(info.cls.__init__)
    if any(p.kind == p.VAR_KEYWORD for p in signature.parameters.values()):
        return params
    return {k: v for k, v in params.items() if k in signature.parameters}


def plugin_key(config: BenchConfig, method: Method) -> list:
    """What identifies a method's computation: stage names, versions and parameters."""
    from ..plugins import HARMONIZER_KINDS, get_registry

    parts = []
    for stage in method.stages:
        info = get_registry().get(stage.name, HARMONIZER_KINDS)
        parts.append([stage.name, info.distribution, info.version, plugin_params(config, stage.name)])
    return parts


# ---------------------------------------------------------------------------
# per-scan work (module level: it runs in worker processes)
# ---------------------------------------------------------------------------

_MODELS: dict[str, Any] = {}


def _transform_one(item: tuple[str, Scan, str, str]) -> str:
    """Worker: harmonize one scan with the saved model and write the image atomically."""
    model_dir, scan, target, out_path = item
    from ..imageio import same_geometry, write_image
    from ..plugins import load_model

    model = _MODELS.get(model_dir)
    if model is None:
        model = _MODELS[model_dir] = load_model(model_dir)
    result = model.transform(scan, target_site=target)
    image = result.load_image()
    original = scan.load_image()
    if not same_geometry(image, original):
        raise HarmkitError(f"{scan.label}: the image harmonizer returned an image of a different geometry; it must keep size, spacing and origin")
    import SimpleITK as sitk

    values = sitk.GetArrayViewFromImage(image)
    if not np.isfinite(values).all():
        raise HarmkitError(
            f"{scan.label}: the image harmonizer returned {int((~np.isfinite(values)).sum())} non-finite voxel(s) "
            f"(model {model_dir}); its training may have diverged: check its loss log, or change its parameters (--param)"
        )
    write_image(image, out_path)
    return out_path


BODY_THRESHOLD_SUV = 0.1  # the paper's first step of its body masks


def _body_mask_one(item: tuple[Scan, str]) -> str:
    """Worker: a body mask (SUV > 0.1, largest connected component, holes filled) written atomically."""
    import SimpleITK as sitk

    from ..imageio import write_image

    scan, out_path = item
    image = scan.load_image()
    mask = sitk.BinaryThreshold(image, BODY_THRESHOLD_SUV, 1e30, 1, 0)
    components = sitk.RelabelComponent(sitk.ConnectedComponent(mask), sortByObjectSize=True)
    mask = sitk.Cast(components == 1, sitk.sitkUInt8)
    mask = sitk.BinaryFillhole(mask)
    write_image(sitk.Cast(mask, sitk.sitkUInt8), out_path)
    return out_path


def _add_body_masks(ctx: "BenchContext", console) -> None:
    """Scans without a ``body`` mask get one by thresholding (cached); the report notes it."""
    missing = [s for s in ctx.cohort if "body" not in s.masks]
    if not missing:
        return
    items, paths = [], {}
    for scan in missing:
        key = ctx.cache.key("body-mask", _image_digest(scan), BODY_THRESHOLD_SUV, "v1")
        path = ctx.cache.root / "masks" / key[:2] / f"{key[:24]}.nii.gz"
        paths[scan.subject_id] = path
        if not path.is_file():
            items.append((scan, str(path)))
    if items:
        console.log(f"{len(items)} scan(s) have no body mask: thresholding at SUV {BODY_THRESHOLD_SUV}")
        results = ctx.executor.map(_body_mask_one, items, label="body masks")
        failed = [(item[0], r.error) for item, r in zip(items, results) if not r.ok]
        if failed:
            raise HarmkitError(f"could not make a body mask for {failed[0][0].label}: {failed[0][1]}; add a mask_body column to the manifest")
    scans = [replace(s, masks={**s.masks, "body": paths[s.subject_id]}) if s.subject_id in paths else s for s in ctx.cohort]
    ctx.cohort = Cohort(scans, ctx.cohort.root, ctx.cohort.manifest, ctx.cohort.metadata)
    ctx.notes.append(
        f"{len(missing)} scan(s) had no body mask: made one as SUV > {BODY_THRESHOLD_SUV} (largest connected component, holes filled), "
        "the paper's first step; used by image harmonizers, image quality and QC"
    )


# ---------------------------------------------------------------------------
# the run
# ---------------------------------------------------------------------------


def run_bench(config: BenchConfig | None = None, **options: Any) -> "BenchResult":
    """Run the benchmark and write the report; returns a :class:`BenchResult`.

    ``config`` is a :class:`BenchConfig` or ``None``; keyword ``options`` (the
    command-line options, e.g. ``methods="gan,combat"``, ``folds=10``) override it.

    >>> import harmkit as hk
    >>> result = hk.bench(methods="combat", folds=10)      # doctest: +SKIP
    >>> result.out_dir / "report.html"                      # doctest: +SKIP
    """
    from ..cache import Cache
    from ..execution import get_executor

    if config is None:
        config = load_config(options.pop("config", None), options)
    else:
        config = replace(config, **{k: v for k, v in options.items() if v is not None}).validate()
    # Fail on a misspelt method before simulating or writing anything.
    methods = parse_methods(config.methods)
    started = time.time()
    timings: dict[str, float] = {}
    out_dir = config.out_dir
    out_dir.mkdir(parents=True, exist_ok=True)
    cache = Cache(config.cache_path)
    console = _console(config)

    t = time.time()
    cohort, cohort_info = _load_cohort(config, console)
    timings["cohort"] = time.time() - t
    groups = cohort.site_groups
    if len(groups) < 2:
        raise HarmkitError(
            f"the cohort has a single site group ({groups[0]}); harmonization needs at least two. "
            f"Check the 'site' column of the manifest, or do not merge every site with --site-groups"
        )
    references = _references(config, cohort, groups)
    for voi in (config.voi,):
        missing = [s.label for s in cohort if voi not in s.masks]
        if missing:
            raise HarmkitError(
                f"--voi {voi}: {len(missing)} scan(s) have no mask {voi!r}, e.g. {missing[0]}; "
                f"masks in the cohort: {', '.join(cohort.mask_names)}; choose one with --voi"
            )
    vois = [config.voi]
    if config.reference_voi and config.reference_voi != config.voi and all(config.reference_voi in s.masks for s in cohort):
        vois.append(config.reference_voi)

    staging = Path(tempfile.mkdtemp(prefix=".bench-", dir=out_dir))
    figure_dir = staging / "figures"
    figure_dir.mkdir()
    executor = get_executor(config.jobs, config.scheduler, progress=config.progress)
    try:
        ctx = BenchContext(config, cohort, groups, references, methods, executor, cache, out_dir, figure_dir)
        if len(vois) == 1:
            ctx.notes.append(f"no reference-tissue VOI {config.reference_voi!r} in every scan: reproducibility uses the {config.voi!r} VOI only")

        t = time.time()
        _add_body_masks(ctx, console)
        _run_image_stages(ctx, console)
        timings["image stages"] = time.time() - t

        t = time.time()
        _extract_all(ctx, vois, console)
        timings["features"] = time.time() - t

        _prepare_outcome(ctx)
        _prepare_ground_truth(ctx, cohort_info, vois, console)

        t = time.time()
        for name in _evaluator_names():
            from ..plugins import get_evaluator

            console.log(f"evaluator [bold]{name}[/]")
            t_eval = time.time()
            evaluator = get_evaluator(name)
            try:
                result = evaluator.evaluate(ctx)
            except HarmkitError as exc:
                from ..interfaces import EvaluationResult

                result = EvaluationResult(name=name, skipped=str(exc))
            ctx.results[name] = result
            timings[f"evaluator {name}"] = time.time() - t_eval
        timings["evaluators"] = time.time() - t
    finally:
        executor.close()

    from .report import write_outputs

    timings["total"] = time.time() - started
    result = write_outputs(ctx, staging, cohort_info, timings)
    from .report import print_summary

    print_summary(ctx, console)
    console.print(f"report: {out_dir / 'report.html'}  ({out_dir / 'report.md'}, {out_dir / 'results.json'})")
    return result


@dataclass
class BenchResult:
    """Where a bench wrote its outputs and the numbers it found."""

    out_dir: Path
    results: dict[str, Any]

    @property
    def report(self) -> Path:
        return self.out_dir / "report.html"


def _console(config: BenchConfig):
    from rich.console import Console

    return Console(quiet=not config.progress, highlight=False, log_path=False)


def _evaluator_names() -> list[str]:
    from ..plugins import get_registry

    registered = [p.name for p in get_registry().all() if p.kind == "evaluator"]
    return [n for n in BUILTIN_EVALUATORS if n in registered] + sorted(n for n in registered if n not in BUILTIN_EVALUATORS)


def _references(config: BenchConfig, cohort: Cohort, groups: list[str]) -> list[str]:
    if config.reference in (None, "", "all"):
        return list(groups)
    if config.reference in groups:
        return [config.reference]
    for scan in cohort:
        if scan.site == config.reference:
            return [scan.group]
    raise HarmkitError(f"--reference {config.reference!r}: not a site or site group of the cohort; site groups: {', '.join(groups)} (or 'all')")


def _load_cohort(config: BenchConfig, console) -> tuple[Cohort, dict[str, Any]]:
    """The cohort of the run: ``--cohort`` or the simulated preset (simulated once, cached)."""
    from ..data import load_cohort

    info: dict[str, Any] = {}
    if config.cohort:
        manifest = Path(config.cohort)
        info["source"] = "manifest"
    else:
        size = SIM_SIZES[config.profile]
        name = f"{config.preset}-{size}-seed{config.seed}" + (f"-n{config.subjects_per_site}" if config.subjects_per_site else "")
        folder = config.cache_path / "cohorts" / name
        manifest = folder / "manifest.csv"
        done = folder / ".complete"
        if not done.is_file():
            from ..simulation import simulate

            console.log(f"simulating the {config.preset!r} preset ({size} size, seed {config.seed}) into {folder}")
            if folder.exists():
                shutil.rmtree(folder)  # an interrupted simulation: start again
            kwargs = dict(preset=config.preset, out=folder, seed=config.seed, size=size, jobs=config.jobs)
            if config.subjects_per_site:
                kwargs["subjects_per_site"] = config.subjects_per_site
            manifest = Path(simulate(**kwargs))
            done.write_text(str(manifest.name))
        info["source"] = f"simulated preset {config.preset} ({size}, seed {config.seed})"
        info["preset"] = config.preset
    cohort = load_cohort(manifest)
    groups = config.site_group_map(cohort.sites)
    if groups:
        cohort = cohort.regroup(groups)
    cohort = _check_bench_cohort(config, cohort)  # before any scan is hashed, harmonized or extracted
    info["manifest"] = str(manifest)
    info["n_scans"] = len(cohort)
    info["sites"] = {site: sum(s.site == site for s in cohort) for site in cohort.sites}
    info["site_groups"] = {g: sorted({s.site for s in cohort if s.group == g}) for g in cohort.site_groups}
    sim_json = manifest.parent / "simulation.json"
    if sim_json.is_file():
        try:
            info["simulation"] = json.loads(sim_json.read_text())
        except json.JSONDecodeError:
            info["simulation"] = None
    return cohort, info


def _check_bench_cohort(config: BenchConfig, cohort: Cohort) -> Cohort:
    """The checks of :func:`harmkit.validation.check_cohort` for this bench, and what the bench writes."""
    from ..atomic import inside
    from ..cache import Cache
    from ..plugins import get_extractor
    from ..validation import bin_width_of, check_cohort

    reason = Cache.usable(config.cache_path)
    if reason:
        raise HarmkitError(f"--cache-dir {config.cache_path}: cannot write there ({reason}); the bench keeps its "
                           f"models and harmonized images in its cache: choose a writable folder with --cache-dir")
    report_paths = [config.out_dir / name for name in ("figures", "tables", "report.md", "report.html", "results.json")]
    for source in cohort.input_files():
        if any(inside(source, target) for target in report_paths):
            raise HarmkitError(f"--out {config.out_dir}: the bench would replace {source}, an input of this run; "
                               f"choose another --out")
    if config.voi not in cohort.mask_names:
        raise HarmkitError(f"--voi {config.voi}: no scan has a mask {config.voi!r}; masks in the cohort: "
                           f"{', '.join(cohort.mask_names) or 'none'}; choose one with --voi")
    if config.reference_voi not in (None, "", "reference", config.voi):
        lacking = [s for s in cohort if config.reference_voi not in s.masks]
        if lacking:
            raise HarmkitError(
                f"--reference-voi {config.reference_voi}: {len(lacking)} of {len(cohort)} scan(s) have no mask "
                f"{config.reference_voi!r}, e.g. {lacking[0].label}; masks in the cohort: "
                f"{', '.join(cohort.mask_names)}. "
                f"Fill the 'mask_{config.reference_voi}' column, or choose another --reference-voi"
            )
    vois = [v for v in (config.voi, config.reference_voi) if v]
    return check_cohort(cohort, min_scans_per_site=2, masks=[config.voi], nan_to_zero=config.nan_to_zero,
                        bin_width=bin_width_of(get_extractor(config.extractor)), binned_masks=vois,
                        bin_width_option=None,
                        jobs=config.jobs, scheduler=config.scheduler, progress=config.progress)


def _image_digest(scan: Scan) -> str:
    from ..cache import hash_parts

    image = scan.image if not isinstance(scan.image, (str, os.PathLike)) else Path(scan.image)
    return hash_parts(image)


class _TargetNotFitted(Exception):
    """An image model fitted towards one reference cannot transform towards another."""


def _fit_image_model(ctx: BenchContext, stage, current: Cohort, current_key: str, fit_ref: str, console) -> tuple[str, Path]:
    """Fit (or find in the cache) the model of ``stage`` on ``current`` with reference ``fit_ref``."""
    from ..plugins import HARMONIZER_KINDS, get_harmonizer, get_registry

    params = plugin_params(ctx.config, stage.name)
    info = get_registry().get(stage.name, HARMONIZER_KINDS)
    model_key = ctx.cache.key("image-model", current_key, stage.name, info.distribution, info.version, params, fit_ref, ctx.config.seed)
    model_dir = ctx.cache.root / "models" / model_key[:24]
    if not (model_dir / "harmkit-model.json").is_file():
        console.log(f"fitting image stage [bold]{stage.name}[/] on {len(current)} scans (reference {fit_ref})")
        t0 = time.time()
        harmonizer = get_harmonizer(stage.name, **params)
        current_params = harmonizer.get_params()
        for name in ("random_state", "seed"):
            if name in current_params and current_params[name] is None:
                harmonizer.set_params(**{name: ctx.config.seed})
        if "progress" in current_params and not ctx.config.progress:
            harmonizer.set_params(progress=False)
        if "work_dir" in current_params and current_params["work_dir"] is None:
            # checkpoints inside the bench cache: an interrupted fit resumes on the next run
            harmonizer.set_params(work_dir=str(ctx.cache.root / "work" / model_key[:24]))
        harmonizer.fit(current, fit_ref)
        harmonizer.save(model_dir)
        (model_dir / "fit-seconds.txt").write_text(f"{time.time() - t0:.1f}\n")
    return model_key, model_dir


def _transform_towards(ctx: BenchContext, label: str, stage, model_key: str, model_dir: Path, current: Cohort, ref: str, digests: dict, first: bool) -> dict[str, Path]:
    """Harmonize every scan of ``current`` outside group ``ref`` towards ``ref``; files cached by content."""
    items, outputs = [], {}
    for scan in current:
        if scan.group == ref:
            continue
        source = digests[scan.subject_id] if first else str(scan.image)
        key = ctx.cache.key("harmonized", model_key, source, ref)
        out_path = ctx.cache.root / "images" / key[:2] / f"{key[:24]}.nii.gz"
        outputs[scan.subject_id] = out_path
        if not out_path.is_file():
            items.append((str(model_dir), scan, ref, str(out_path)))
    if items:
        results = ctx.executor.map(_transform_one, items, label=f"{label}: {stage.name} -> {ref}")
        failed = [(item[1], r.error) for item, r in zip(items, results) if not r.ok]
        if failed and len(failed) == len(items) and "fitted towards" in (failed[0][1] or ""):
            raise _TargetNotFitted(failed[0][1])
        if failed:
            scan, error = failed[0]
            raise HarmkitError(f"image stage {stage.name!r} failed on {len(failed)} scan(s) towards {ref}; first: {scan.label}: {error}")
    return outputs


def _run_image_stages(ctx: BenchContext, console) -> None:
    """Fit each image stage once (per method prefix) and harmonize the non-reference scans towards each reference.

    The first image stage of a method sees the original cohort whatever the
    reference, so it is fitted once (reference: the first site group) and
    reused for every direction with ``transform(scan, target_site=ref)``; a
    harmonizer that can only map towards the reference it was fitted with is
    fitted once per reference instead. Later stages of a chain see a
    reference-specific input and are fitted per reference.
    """
    digests = {s.subject_id: _image_digest(s) for s in ctx.cohort}
    cohort_key = ctx.cache.key("cohort", sorted((s.subject_id, s.site, s.group, digests[s.subject_id]) for s in ctx.cohort))
    failed: dict[str, str] = {}
    for method in ctx.methods:
        for ref in ctx.references:
            ctx.harmonized[(method.label, ref)] = {}
        if not method.image_stages:
            continue
        try:
            _run_method_image_stages(ctx, method, digests, cohort_key, console)
        except HarmkitError as exc:
            failed[method.label] = str(exc)
            console.print(f"[red]method {method.label} dropped:[/] {exc}")
    if failed:
        ctx.methods = [m for m in ctx.methods if m.label not in failed]
        for label, message in failed.items():
            ctx.notes.append(f"method {label!r} was dropped from this bench because its image stage failed: {message}")
            for ref in ctx.references:
                ctx.harmonized.pop((label, ref), None)


def _run_method_image_stages(ctx: BenchContext, method: Method, digests: dict, cohort_key: str, console) -> None:
    """Fit and apply the image stages of one method, towards every reference."""
    for ref in ctx.references:
        current = ctx.cohort
        current_key = cohort_key
        changed: dict[str, Scan] = {}
        for index, stage in enumerate(method.image_stages):
            fit_ref = ctx.references[0] if index == 0 else ref
            model_key, model_dir = _fit_image_model(ctx, stage, current, current_key, fit_ref, console)
            try:
                outputs = _transform_towards(ctx, method.label, stage, model_key, model_dir, current, ref, digests, index == 0)
            except _TargetNotFitted:
                ctx.notes.append(f"image stage {stage.name!r} maps only towards the reference it was fitted with: fitted once per reference")
                model_key, model_dir = _fit_image_model(ctx, stage, current, current_key, ref, console)
                outputs = _transform_towards(ctx, method.label, stage, model_key, model_dir, current, ref, digests, index == 0)
            new_scans = []
            for scan in current:
                if scan.subject_id in outputs:
                    harmonized = replace(scan, image=outputs[scan.subject_id], masks=dict(scan.masks))
                    changed[scan.subject_id] = harmonized
                    new_scans.append(harmonized)
                else:
                    new_scans.append(scan)
            current = Cohort(new_scans, ctx.cohort.root, ctx.cohort.manifest, ctx.cohort.metadata)
            current_key = ctx.cache.key("stage-output", model_key, ref)
        ctx.harmonized[(method.label, ref)] = changed


def _cohort_for(ctx: BenchContext, method: Method, ref: str) -> Cohort:
    changed = ctx.harmonized.get((method.label, ref), {})
    scans = [changed.get(s.subject_id, s) for s in ctx.cohort]
    return Cohort(scans, ctx.cohort.root, ctx.cohort.manifest, ctx.cohort.metadata)


def extract_features(ctx: BenchContext, cohort: Cohort, voi: str, what: str):
    """Features of ``cohort`` in ``voi`` through :func:`harmkit.extraction.extract` (cached by content)."""
    from ..extraction import extract
    from ..plugins import get_extractor

    extractor = get_extractor(ctx.config.extractor)
    table = extract(
        cohort,
        voi=voi,
        extractor=extractor,
        cache_dir=ctx.cache.root / "features",
        executor=ctx.executor,
        progress=ctx.config.progress,
    )
    if "site_group" not in table.columns:
        table.insert(1, "site_group", [cohort.get(s).group for s in table.index])
    else:
        table["site_group"] = [cohort.get(s).group for s in table.index]
    classes = table.attrs.get("feature_classes") or {}
    if not classes and hasattr(extractor, "feature_classes"):
        classes = extractor.feature_classes()
    ctx.feature_classes.update(classes)
    return table


def _extract_all(ctx: BenchContext, vois: list[str], console) -> None:
    baseline = {}
    for voi in vois:
        console.log(f"features of the original scans in VOI [bold]{voi}[/]")
        baseline[voi] = extract_features(ctx, ctx.cohort, voi, "original")
    done: dict[tuple, dict] = {}
    for method in ctx.methods:
        for ref in ctx.references:
            if not method.image_stages:
                ctx.features[(method.label, ref)] = baseline
                continue
            image_label = "+".join(s.name for s in method.image_stages)
            key = (image_label, ref)
            if key not in done:
                cohort = _cohort_for(ctx, method, ref)
                tables = {}
                for voi in vois:
                    console.log(f"features after [bold]{image_label}[/] -> {ref} in VOI [bold]{voi}[/]")
                    tables[voi] = extract_features(ctx, cohort, voi, f"{image_label}->{ref}")
                done[key] = tables
            ctx.features[(method.label, ref)] = done[key]


def _prepare_outcome(ctx: BenchContext) -> None:
    import pandas as pd

    outcomes = pd.Series({s.subject_id: s.outcome for s in ctx.cohort}, dtype=object)
    known = outcomes.dropna()
    if known.empty:
        ctx.prediction_skipped = "the cohort has no outcome column (or no outcome values), so there is nothing to predict"
        return
    counts = known.astype(int).value_counts()
    if len(counts) < 2 or counts.min() < 2:
        ctx.prediction_skipped = f"the outcome needs at least 2 subjects of each class (found {dict(counts)})"
        return
    ctx.outcome = known.astype(int)
    try:
        ctx.splits = monte_carlo_splits(list(ctx.outcome.index), ctx.outcome.to_numpy(), ctx.config.folds, ctx.config.test_size, ctx.config.seed)
    except HarmkitError as exc:
        ctx.prediction_skipped = str(exc)
    if len(known) < len(outcomes):
        ctx.notes.append(f"{len(outcomes) - len(known)} scan(s) without outcome are left out of prediction")


def _prepare_ground_truth(ctx: BenchContext, cohort_info: dict, vois: list[str], console) -> None:
    """Counterfactual scans and truth images of a simulated cohort (simulation.json beside the manifest)."""
    from ..data import load_cohort

    manifest = Path(cohort_info["manifest"])
    sim_path = manifest.parent / "simulation.json"
    if not sim_path.is_file():
        ctx.fidelity_skipped = (
            "the cohort has no counterfactual scans (no simulation.json beside the manifest): "
            "real patients are scanned at one site only, so there is no ground truth to compare with"
        )
        return
    sim = json.loads(sim_path.read_text())
    cf_name = sim.get("counterfactual_manifest")
    if not cf_name or not (manifest.parent / cf_name).is_file():
        ctx.fidelity_skipped = f"{sim_path} names no counterfactual manifest (counterfactual_manifest)"
        return
    cf = load_cohort(manifest.parent / cf_name)
    groups = ctx.config.site_group_map(cf.sites)
    if groups:
        cf = cf.regroup(groups)
    ctx.counterfactuals = cf
    # only the counterfactuals fidelity compares with: each non-reference subject at each reference group
    from ..evaluators.fidelity import counterfactual_lookup, target_scan

    lookup = counterfactual_lookup(ctx)
    needed = {}
    for ref in ctx.references:
        for scan in ctx.cohort:
            if scan.group != ref:
                target = target_scan(ctx, lookup, scan.subject_id, ref)
                if target is not None:
                    needed[target.subject_id] = target
    voi = ctx.config.voi
    if needed and all(voi in s.masks for s in needed.values()):
        console.log(f"features of {len(needed)} counterfactual scans in VOI [bold]{voi}[/]")
        ctx.cf_features[voi] = extract_features(ctx, Cohort(list(needed.values()), cf.root, cf.manifest), voi, "counterfactual")
    truth = _truth_cohort(manifest.parent, sim, ctx)
    if truth is not None and ctx.config.voi in truth.mask_names:
        console.log("features of the truth images (oracle)")
        ctx.truth_features = extract_features(ctx, truth, ctx.config.voi, "truth")


def _truth_cohort(root: Path, sim: dict, ctx: BenchContext) -> Cohort | None:
    """Truth images (noise-free, fine grid) as a cohort, when the simulator wrote a manifest for them."""
    from ..data import load_cohort

    for key in ("truth_manifest",):
        name = sim.get(key)
        if name and (root / name).is_file():
            return load_cohort(root / name, validate=False)
    import pandas as pd

    name = sim.get("truth_table")
    if not name or not (root / name).is_file():
        return None
    table = pd.read_csv(root / name)
    image_col = next((c for c in ("truth_image", "image") if c in table.columns), None)
    voi = ctx.config.voi
    mask_col = next((c for c in (f"truth_{voi}", f"truth_mask_{voi}", f"mask_{voi}", "truth_mask") if c in table.columns), None)
    if image_col is None or mask_col is None or "subject_id" not in table.columns:
        return None
    scans = []
    real = {s.subject_id: s for s in ctx.cohort}
    for row in table.itertuples(index=False):
        sid = str(getattr(row, "subject_id"))
        if sid not in real:
            continue
        scans.append(Scan(sid, real[sid].site, root / getattr(row, image_col), {ctx.config.voi: root / getattr(row, mask_col)}, real[sid].outcome, site_group=real[sid].group))
    return Cohort(scans, root) if scans else None
