"""The benchmark run: one protocol for every method.

Data flows one way::

    cohort ─► image stages (fitted once per method, reused for every reference)
           ─► features from the same VOIs for every method
           ─► the same stratified Monte Carlo splits for every method
           ─► evaluators (each reads the public BenchContext; ``requires`` orders them)
           ─► report (terminal table, report.md/html, figures, results.json, CSV)

Every expensive stage is cached by content in the cache folder (``--cache-dir``):
a rerun with nothing changed only reads the cache, an added method computes
only that method, and an interrupted run resumes where it stopped.
"""

from __future__ import annotations

import shutil
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

from ..errors import EvaluatorSkipped, HarmkitError
from ..interfaces import EvaluationResult, apply_run_parameters
from ..methods import parse_methods
from .cohort import load_bench_cohort, references_of
from .config import BenchConfig, load_config
from .context import BenchContext
from .features import extract_all
from .ground_truth import add_grid_oracle_row, add_oracle_row, prepare_ground_truth, prepare_outcome
from .image_stages import add_body_masks, run_image_stages
from .report import BenchResult, print_summary, write_outputs
from .stages import plugin_params


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
    cohort, cohort_info = load_bench_cohort(config, console)
    timings["cohort"] = time.time() - t
    groups = cohort.site_groups
    if len(groups) < 2:
        raise HarmkitError(
            f"the cohort has a single site group ({groups[0]}); harmonization needs at least two. "
            f"Check the 'site' column of the manifest, or do not merge every site with --site-groups"
        )
    references = references_of(config, cohort, groups)
    for voi in (config.voi,):
        missing = [s.label for s in cohort if voi not in s.masks]
        if missing:
            raise HarmkitError(
                f"--voi {voi}: {len(missing)} scan(s) have no mask {voi!r}, e.g. {missing[0]}; "
                f"masks in the cohort: {', '.join(cohort.mask_names)}; choose one with --voi"
            )
    vois = [config.voi]
    if (
        config.reference_voi
        and config.reference_voi != config.voi
        and all(config.reference_voi in s.masks for s in cohort)
    ):
        vois.append(config.reference_voi)

    staging = Path(tempfile.mkdtemp(prefix=".bench-", dir=out_dir))
    figure_dir = staging / "figures"
    figure_dir.mkdir()
    executor = get_executor(config.jobs, config.scheduler, progress=config.progress)
    try:
        ctx = BenchContext(
            config,
            cohort,
            groups,
            references,
            methods,
            executor,
            cache,
            out_dir,
            figure_dir,
        )
        if len(vois) == 1:
            ctx.notes.append(
                f"no reference-tissue VOI {config.reference_voi!r} in every scan: reproducibility uses the "
                f"{config.voi!r} VOI only"
            )

        t = time.time()
        add_body_masks(ctx, console)
        run_image_stages(ctx, console)
        timings["image stages"] = time.time() - t
        note_learning(ctx)

        t = time.time()
        prepare_outcome(ctx)
        prepare_ground_truth(ctx, cohort_info, vois, console)
        add_oracle_row(ctx, vois)
        add_grid_oracle_row(ctx)
        extract_all(ctx, vois, console)
        timings["features"] = time.time() - t

        t = time.time()
        run_evaluators(ctx, console, timings)
        timings["evaluators"] = time.time() - t
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)  # nothing half-written stays behind
        raise
    finally:
        executor.close()

    timings["total"] = time.time() - started
    result = write_outputs(ctx, staging, cohort_info, timings)
    print_summary(ctx, console)
    console.print(f"report: {out_dir / 'report.html'}  ({out_dir / 'report.md'}, {out_dir / 'results.json'})")
    return result


def run_evaluators(ctx: BenchContext, console, timings: dict[str, float]) -> None:
    """Run every registered evaluator, each after the evaluators it requires, with its ``--param`` options.

    An evaluator that raises :class:`EvaluatorSkipped` (or returns a result
    with ``skipped``) is reported as skipped; any other error stops the bench
    with the evaluator named. An evaluator whose requirement is not installed
    is skipped; one whose requirement skipped runs and reads that skip.
    """
    from ..plugins import get_evaluator, get_registry

    # registration order: harmkit's own evaluators in harmkit.builtin's order, then plugins' by entry point
    infos = {p.name: p for p in get_registry().plugins.values() if p.kind == "evaluator"}
    for name in evaluator_order({n: tuple(getattr(i.cls, "requires", ())) for n, i in infos.items()}):
        info = infos[name]
        console.log(f"evaluator [bold]{name}[/]")
        started = time.time()
        evaluator = get_evaluator(name, **plugin_params(ctx.config, name, ("evaluator",)))
        apply_run_parameters(
            evaluator,
            random_state=ctx.config.seed,
            seed=ctx.config.seed,
            progress=ctx.config.progress,
        )
        # A required evaluator that skipped still ran: the evaluator sees its result (and .skipped) and decides.
        missing = [r for r in getattr(evaluator, "requires", ()) if r not in ctx.results]
        try:
            if missing:
                raise EvaluatorSkipped(f"it needs evaluator(s) {', '.join(missing)}, which are not installed")
            result = evaluator.evaluate(ctx)
        except EvaluatorSkipped as exc:
            result = EvaluationResult(name=name, skipped=str(exc))
        except HarmkitError as exc:
            raise HarmkitError(
                f"evaluator {name!r} (from {info.distribution} {info.version}) failed: {exc}. Fix the cause, or "
                f"uninstall that plugin to run the bench without it"
            ) from None
        except Exception as exc:  # a bug: keep the traceback, but say where
            if sys.version_info >= (3, 11):  # Python 3.10 has no exception notes
                exc.add_note(f"in evaluator {name!r} from {info.distribution} {info.version}")
            raise
        if not isinstance(result, EvaluationResult):
            raise HarmkitError(
                f"evaluator {name!r} (from {info.distribution}) returned {type(result).__name__}, "
                f"not an EvaluationResult; see docs/plugin-authors.md"
            )
        ctx.results[name] = result
        timings[f"evaluator {name}"] = time.time() - started


def evaluator_order(requires: dict[str, tuple[str, ...]]) -> list[str]:
    """Evaluator names in the given order, except that each comes after those it requires.

    A requirement that is not installed is left to the evaluator (it is
    skipped with the reason); a cycle is an error naming it.
    """
    order: list[str] = []
    state: dict[str, str] = {}

    def visit(name: str, path: tuple[str, ...]) -> None:
        if state.get(name) == "done":
            return
        if state.get(name) == "visiting":
            raise HarmkitError(f"evaluators require each other in a cycle: {' -> '.join(path + (name,))}")
        state[name] = "visiting"
        for needed in requires.get(name, ()):
            if needed in requires:
                visit(needed, path + (name,))
        state[name] = "done"
        order.append(name)

    for name in requires:
        visit(name, ())
    return order


def note_learning(ctx: BenchContext) -> None:
    """Say in the report when an image model's training learned nothing (its rows are then no harmonization)."""
    for (stage, reference, _), summary in sorted(ctx.learning.items()):
        if summary.get("learned") is False:
            ctx.notes.append(
                f"image stage {stage!r} (fitted with reference {reference}) did not learn: {summary.get('message')}. "
                f"Read its rows as the image pipeline with an untrained model, not as harmonization"
            )
        elif summary.get("message"):
            ctx.notes.append(f"image stage {stage!r} (fitted with reference {reference}): {summary['message']}")


def _console(config: BenchConfig):
    from rich.console import Console

    return Console(quiet=not config.progress, highlight=False, log_path=False)
