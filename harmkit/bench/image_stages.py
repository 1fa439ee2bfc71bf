"""Image stages of a bench run: body masks, fitting each image harmonizer, harmonizing towards each reference.

Fitted models and harmonized images are cached by content, so a rerun or an
added method recomputes only what changed. Per-scan work runs in the
executor's workers (module-level functions).
"""

from __future__ import annotations

import json
import time
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from ..data import Cohort, Scan
from ..errors import HarmkitError, TargetNotSupported
from ..interfaces import apply_run_parameters
from ..methods import Method
from ..voi import BODY_THRESHOLD_SUV, body_mask
from .cohort import image_digest, scan_digest
from .stages import plugin_params

if TYPE_CHECKING:  # pragma: no cover
    from .context import BenchContext

_MODELS: dict[str, Any] = {}
LEARNING_FILE = "learning.json"  # an image model's learning_summary(), beside the cached model


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
        raise HarmkitError(
            f"{scan.label}: the image harmonizer returned an image of a different geometry; it must keep size, spacing "
            "and origin"
        )
    import SimpleITK as sitk

    values = sitk.GetArrayViewFromImage(image)
    if not np.isfinite(values).all():
        raise HarmkitError(
            f"{scan.label}: the image harmonizer returned {int((~np.isfinite(values)).sum())} non-finite voxel(s) "
            f"(model {model_dir}); its training may have diverged: check its loss log, or change its parameters "
            "(--param)"
        )
    write_image(image, out_path)
    return out_path


def _body_mask_one(item: tuple[Scan, str]) -> str:
    """Worker: the scan's body mask by the one rule (:func:`harmkit.voi.body_mask`), written atomically."""
    from ..imageio import write_image

    scan, out_path = item
    write_image(body_mask(scan.load_image()), out_path)
    return out_path


def add_body_masks(ctx: "BenchContext", console) -> None:
    """Scans without a ``body`` mask get one by thresholding (cached); the report notes it."""
    missing = [s for s in ctx.cohort if "body" not in s.masks]
    if not missing:
        return
    items, paths = [], {}
    for scan in missing:
        key = ctx.cache.key("body-mask", image_digest(scan), BODY_THRESHOLD_SUV, "v1")
        path = ctx.cache.image_path("masks", key)
        paths[scan.subject_id] = path
        if not path.is_file():
            items.append((scan, str(path)))
    if items:
        console.log(f"{len(items)} scan(s) have no body mask: thresholding at SUV {BODY_THRESHOLD_SUV}")
        results = ctx.executor.map(_body_mask_one, items, label="body masks")
        failed = [(item[0], r.error) for item, r in zip(items, results) if not r.ok]
        if failed:
            raise HarmkitError(
                f"could not make a body mask for {failed[0][0].label}: {failed[0][1]}; add a mask_body column to the "
                "manifest"
            )
    scans = [
        replace(s, masks={**s.masks, "body": paths[s.subject_id]}) if s.subject_id in paths else s for s in ctx.cohort
    ]
    ctx.cohort = Cohort(scans, ctx.cohort.root, ctx.cohort.manifest, ctx.cohort.metadata)
    ctx.notes.append(
        f"{len(missing)} scan(s) had no body mask: made one as SUV >= {BODY_THRESHOLD_SUV} (largest connected "
        "component, holes filled), the paper's first step; used by image harmonizers, image quality and QC"
    )


def _fit_image_model(
    ctx: "BenchContext", stage, current: Cohort, current_key: str, fit_ref: str, console
) -> tuple[str, Path]:
    """Fit (or find in the cache) the model of ``stage`` on ``current`` with reference ``fit_ref``."""
    from ..plugins import HARMONIZER_KINDS, get_harmonizer, get_registry

    params = plugin_params(ctx.config, stage.name)
    info = get_registry().get(stage.name, HARMONIZER_KINDS)
    harmonizer = get_harmonizer(stage.name, **params)
    # keyed on the resolved settings, not the explicit parameters: a plugin's changed default refits
    model_key = ctx.cache.key(
        "image-model",
        current_key,
        stage.name,
        info.distribution,
        info.version,
        harmonizer.settings(),
        fit_ref,
        ctx.config.seed,
    )
    model_dir = ctx.cache.root / "models" / model_key[:24]
    if not (model_dir / "harmkit-model.json").is_file():
        console.log(f"fitting image stage [bold]{stage.name}[/] on {len(current)} scans (reference {fit_ref})")
        t0 = time.time()
        # checkpoints inside the bench cache: an interrupted fit resumes on the next run
        work_dir = str(ctx.cache.root / "work" / model_key[:24])
        apply_run_parameters(
            harmonizer,
            random_state=ctx.config.seed,
            seed=ctx.config.seed,
            progress=ctx.config.progress,
            work_dir=work_dir,
        )
        harmonizer.fit(current, fit_ref)
        harmonizer.save(model_dir)
        (model_dir / "fit-seconds.txt").write_text(f"{time.time() - t0:.1f}\n")
        learning = harmonizer.learning_summary()
        if learning is not None:
            (model_dir / LEARNING_FILE).write_text(json.dumps(learning, default=float))
    learning_file = model_dir / LEARNING_FILE
    if learning_file.is_file():
        ctx.learning[(stage.name, fit_ref, model_key)] = json.loads(learning_file.read_text())
    return model_key, model_dir


def _transform_towards(
    ctx: "BenchContext",
    label: str,
    stage,
    model_key: str,
    model_dir: Path,
    current: Cohort,
    ref: str,
    digests: dict,
    first: bool,
) -> dict[str, Path]:
    """Harmonize every scan of ``current`` outside group ``ref`` towards ``ref``; files cached by content."""
    items, outputs = [], {}
    for scan in current:
        if scan.group == ref:
            continue
        source = digests[scan.subject_id] if first else str(scan.image)
        key = ctx.cache.key("harmonized", model_key, source, ref)
        out_path = ctx.cache.image_path("images", key)
        outputs[scan.subject_id] = out_path
        if not out_path.is_file():
            items.append((str(model_dir), scan, ref, str(out_path)))
    if items:
        results = ctx.executor.map(_transform_one, items, label=f"{label}: {stage.name} -> {ref}")
        failed = [(item[1], r.error) for item, r in zip(items, results) if not r.ok]
        unsupported = [
            r for r in results if r.error_class is not None and issubclass(r.error_class, TargetNotSupported)
        ]
        if failed and len(unsupported) == len(items):
            raise TargetNotSupported(failed[0][1])
        if failed:
            scan, error = failed[0]
            raise HarmkitError(
                f"image stage {stage.name!r} failed on {len(failed)} scan(s) towards {ref}; first: {scan.label}: "
                f"{error}"
            )
    return outputs


def run_image_stages(ctx: "BenchContext", console) -> None:
    """Fit each image stage once (per method prefix) and harmonize the non-reference scans towards each reference.

    The first image stage of a method sees the original cohort whatever the
    reference, so it is fitted once (reference: the first site group) and
    reused for every direction with ``transform(scan, target_site=ref)``; a
    harmonizer that can only map towards the reference it was fitted with is
    fitted once per reference instead. Later stages of a chain see a
    reference-specific input and are fitted per reference.
    """
    # masks and covariates too: a harmonizer may read any of them, and an edited mask must refit, not reuse
    digests = {s.subject_id: scan_digest(s) for s in ctx.cohort}
    cohort_key = ctx.cache.key("cohort", sorted(digests.items()), "v2")
    failed: dict[str, str] = {}
    first_models: dict[tuple[str, str], tuple[str, Path]] = {}
    for method in ctx.methods:
        for ref in ctx.references:
            ctx.harmonized[(method.label, ref)] = {}
        if not method.image_stages:
            continue
        try:
            _run_method_image_stages(ctx, method, digests, cohort_key, console, first_models)
        except HarmkitError as exc:
            failed[method.label] = str(exc)
            console.print(f"[red]method {method.label} dropped:[/] {exc}")
    if failed:
        ctx.methods = [m for m in ctx.methods if m.label not in failed]
        for label, message in failed.items():
            ctx.notes.append(f"method {label!r} was dropped from this bench because its image stage failed: {message}")
            for ref in ctx.references:
                ctx.harmonized.pop((label, ref), None)
    _add_resample_rows(ctx, first_models, digests)


def _floor_one(item: tuple[str, Scan, str, str]) -> str | None:
    """Worker: the scan through the model's pipeline with an identity model; None when that changes no voxel."""
    import SimpleITK as sitk

    from ..imageio import write_image
    from ..plugins import load_model

    model_dir, scan, target, out_path = item
    model = _MODELS.get(model_dir)
    if model is None:
        model = _MODELS[model_dir] = load_model(model_dir)
    image = model.resampling_floor(scan, target_site=target).load_image()
    if np.array_equal(sitk.GetArrayViewFromImage(image), sitk.GetArrayViewFromImage(scan.load_image()), equal_nan=True):
        return None
    write_image(image, out_path)
    return out_path


def _add_resample_rows(ctx: "BenchContext", first_models: dict, digests: dict) -> None:
    """The floor of every image stage: a ``resample`` row, the identity through that stage's own pipeline.

    One row per distinct first image stage (``resample`` when there is one,
    ``resample(<stage>)`` otherwise), right after the baseline. Scans whose
    floor changes no voxel stay the original scans.
    """
    from ..interfaces import ImageHarmonizer
    from ..plugins import HARMONIZER_KINDS, get_registry

    stages = list(dict.fromkeys(name for name, _ in first_models))
    rows = []
    for name in stages:
        label = "resample" if len(stages) == 1 else f"resample({name})"
        # A harmonizer that keeps ImageHarmonizer's floor works on the scan's own grid: nothing to run.
        identity = get_registry().get(name, HARMONIZER_KINDS).cls.resampling_floor is ImageHarmonizer.resampling_floor
        for ref in ctx.references:
            model_key, model_dir = first_models[(name, ref)]
            items, paths = [], {}
            for scan in ctx.cohort:
                if scan.group == ref or identity:
                    continue
                key = ctx.cache.key("resampling-floor", model_key, digests[scan.subject_id], ref)
                path = ctx.cache.image_path("images", key)
                marker = path.with_suffix(".unchanged")
                if path.is_file():
                    paths[scan.subject_id] = path
                elif not marker.is_file():
                    items.append((str(model_dir), scan, ref, str(path)))
            results = ctx.map(_floor_one, items, label=f"{label} -> {ref}") if items else []
            for (_, scan, _, path), result in zip(items, results):
                if not result.ok:
                    raise HarmkitError(
                        f"the resampling floor of image stage {name!r} failed on {scan.label}: {result.error}"
                    )
                if result.value is None:
                    Path(path).with_suffix(".unchanged").parent.mkdir(parents=True, exist_ok=True)
                    Path(path).with_suffix(".unchanged").touch()
                else:
                    paths[scan.subject_id] = Path(path)
            ctx.harmonized[(label, ref)] = {
                sid: replace(
                    ctx.cohort.get(sid),
                    image=path,
                    masks=dict(ctx.cohort.get(sid).masks),
                )
                for sid, path in paths.items()
            }
        rows.append(Method(label, (), control="resample"))
    if rows:
        at = 1 if ctx.methods and ctx.methods[0].is_baseline else 0
        ctx.methods = ctx.methods[:at] + rows + ctx.methods[at:]


def _run_method_image_stages(
    ctx: "BenchContext",
    method: Method,
    digests: dict,
    cohort_key: str,
    console,
    first_models: dict,
) -> None:
    """Fit and apply the image stages of one method, towards every reference."""
    for ref in ctx.references:
        current = ctx.cohort
        current_key = cohort_key
        changed: dict[str, Scan] = {}
        for index, stage in enumerate(method.image_stages):
            fit_ref = ctx.references[0] if index == 0 else ref
            model_key, model_dir = _fit_image_model(ctx, stage, current, current_key, fit_ref, console)
            try:
                outputs = _transform_towards(
                    ctx,
                    method.label,
                    stage,
                    model_key,
                    model_dir,
                    current,
                    ref,
                    digests,
                    index == 0,
                )
            except TargetNotSupported:
                ctx.notes.append(
                    f"image stage {stage.name!r} maps only towards the reference it was fitted with: fitted once per "
                    "reference"
                )
                model_key, model_dir = _fit_image_model(ctx, stage, current, current_key, ref, console)
                outputs = _transform_towards(
                    ctx,
                    method.label,
                    stage,
                    model_key,
                    model_dir,
                    current,
                    ref,
                    digests,
                    index == 0,
                )
            if index == 0:
                first_models[(stage.name, ref)] = (model_key, model_dir)
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
