"""Train an image harmonizer and apply a saved one to a cohort (any image-harmonizer plugin).

>>> import harmkit as hk
>>> hk.train("gan", "data/manifest.csv", reference="CHUM-HMR", out="models/gan")   # doctest: +SKIP
>>> hk.harmonize("models/gan", "data/manifest.csv", out="harmonized/")             # doctest: +SKIP
PosixPath('harmonized/manifest.csv')

``harmonize`` writes one NIfTI per scan plus a manifest (the same format as
the input's, masks pointing to the original mask files) and a
``harmonize.json`` with the model's provenance. Everything is written to a
temporary folder next to ``out`` and renamed when complete, so an interrupted
run never leaves an output that looks finished.

Both validate the cohort first (:func:`harmkit.validation.check_cohort`) and
never write over their inputs: ``out`` must be new, empty, or (``harmonize``
with ``overwrite``) a folder ``harmonize`` wrote before, recognised by its
marker file, holding no input of the run.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from dataclasses import replace
from pathlib import Path
from typing import Any

from .data import Cohort
from .errors import HarmkitError
from .interfaces import ImageHarmonizer
from .manifest import load_cohort
from .plugins import get_registry, load_model

OUTPUT_MANIFEST = "manifest.csv"
PROVENANCE = "harmonize.json"


def _as_cohort(cohort: Cohort | str | os.PathLike) -> Cohort:
    return cohort if isinstance(cohort, Cohort) else load_cohort(cohort)


def make_image_harmonizer(method: str, **params: Any) -> ImageHarmonizer:
    """Instantiate image harmonizer ``method`` (name or alias) with ``params``, naming bad parameters.

    Unknown names and values of the wrong type raise :class:`HarmkitError`
    (with a close match), before any work.
    """
    from .plugins import check_params

    info = get_registry().get(method, "image-harmonizer")
    params = check_params(info.cls, params, where="--param ")
    harmonizer = info.cls()
    harmonizer.set_params(**params)
    return harmonizer


def train(
    method: str,
    cohort: Cohort | str | os.PathLike,
    reference: str,
    out: str | os.PathLike,
    nan_to_zero: bool = False,
    **params: Any,
) -> Path:
    """Fit the image harmonizer ``method`` on ``cohort`` towards site group ``reference``; save it to ``out``.

    ``params`` are the harmonizer's hyper-parameters (for ``gan``: ``profile``,
    ``steps``, ``seed``, ``device``, ...). A harmonizer with a ``work_dir``
    parameter (the CycleGAN) that is not given one keeps its checkpoints in
    ``.<out name>.work`` next to ``out``, so rerunning an interrupted
    ``train`` resumes it. ``out`` must be new, empty or a saved model, and
    hold no input. ``nan_to_zero`` reads NaN/infinite voxels as 0 instead of
    refusing the scan. Returns the model folder.
    """
    from .atomic import check_output_folder
    from .interfaces import STATE_FILE
    from .validation import check_cohort

    out = Path(out)
    harmonizer = make_image_harmonizer(method, **params)
    cohort = _as_cohort(cohort)
    check_output_folder(
        out,
        cohort.input_files(),
        "train",
        overwrite=True,
        accept=lambda f: (f / STATE_FILE).is_file(),
    )
    cohort = check_cohort(cohort, min_scans_per_site=1, nan_to_zero=nan_to_zero)
    if "work_dir" in harmonizer.get_params() and harmonizer.get_params()["work_dir"] is None:
        harmonizer.set_params(work_dir=str((out.parent / f".{out.name}.work").resolve()))
    harmonizer.fit(cohort, reference)
    return harmonizer.save(out)


def harmonize(
    model_dir: str | os.PathLike,
    cohort: Cohort | str | os.PathLike,
    out: str | os.PathLike,
    target_site: str | None = None,
    overwrite: bool = False,
    progress: bool = True,
    nan_to_zero: bool = False,
) -> Path:
    """Apply the saved image harmonizer in ``model_dir`` to every scan of ``cohort``.

    Writes one image per scan where :func:`harmkit.manifest.image_layout`
    puts it (``out/images/<subject>/<site>_pet.nii.gz``, same grid as the
    input, SUV; in-memory masks beside it),
    ``out/manifest.csv``, ``out/harmonize.json`` and the marker
    ``out/.harmkit-output``; returns the manifest path. ``target_site``
    defaults to the model's reference. An existing, non-empty ``out`` is an
    error unless ``overwrite``, and even then it is replaced only when
    ``harmonize`` wrote it and it holds no input (manifest, image, mask or
    model file) of this run. ``nan_to_zero`` reads NaN/infinite voxels as 0
    instead of refusing the scan.
    """
    from .atomic import check_output_folder, write_marker
    from .errors import io_error
    from .imageio import write_image
    from .manifest import image_layout, write_manifest
    from .toolkit import progress as progress_bar
    from .validation import check_cohort

    model = load_model(model_dir)
    if not isinstance(model, ImageHarmonizer):
        raise HarmkitError(
            f"{model_dir}: holds a {model.kind} ({model.name}); 'harmonize' applies image harmonizers. "
            f"Feature harmonizers run inside 'harmkit bench'"
        )
    cohort = _as_cohort(cohort)
    out = Path(out)
    inputs = [*cohort.input_files(), *Path(model_dir).rglob("*"), Path(model_dir)]
    check_output_folder(out, inputs, "harmonize", overwrite=overwrite)
    cohort = check_cohort(cohort, min_scans_per_site=1, nan_to_zero=nan_to_zero)
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", suffix=".partial", dir=out.parent))
    except OSError as exc:
        raise io_error(exc, out) from None
    try:
        written = []
        layout = image_layout(tmp, cohort)
        for scan in progress_bar(cohort, "Harmonizing scans", enabled=progress):
            result = model.transform(scan, target_site)
            files = layout[scan.subject_id]
            image_path = write_image(result.load_image(), files.image)
            masks = {}
            for name, mask in scan.masks.items():
                if isinstance(mask, (str, os.PathLike)):
                    masks[name] = Path(mask).resolve()
                else:
                    masks[name] = write_image(scan.load_mask(name), files.mask(name))
            written.append(replace(result, image=image_path, masks=masks))
        write_manifest(written, tmp / OUTPUT_MANIFEST)
        provenance = {
            "model": str(Path(model_dir).resolve()),
            "plugin": model.name,
            "params": model.get_params(),
            "reference_site": getattr(model, "reference_site_", None),
            "target_site": target_site,
            "source_manifest": str(cohort.manifest.resolve()) if cohort.manifest else None,
            "scans": len(written),
        }
        (tmp / PROVENANCE).write_text(json.dumps(provenance, indent=2, default=str))
        write_marker(tmp, "harmonize")
        os.chmod(tmp, 0o777 & ~_umask())  # mkdtemp makes a private folder; the output is an ordinary one
        if out.exists():  # checked above: empty, or a harmonize output holding no input
            trash = Path(tempfile.mkdtemp(prefix=f".{out.name}.old-", dir=out.parent))
            os.replace(out, trash / "old")
            os.replace(tmp, out)
            shutil.rmtree(trash, ignore_errors=True)
        else:
            os.replace(tmp, out)
    except OSError as exc:
        shutil.rmtree(tmp, ignore_errors=True)
        raise io_error(exc, out) from None
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out / OUTPUT_MANIFEST


def _umask() -> int:
    from .atomic import _UMASK

    return _UMASK
