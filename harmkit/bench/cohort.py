"""The cohort of a bench run: loaded from --cohort or simulated (once, cached), checked before any work."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any

from ..data import Cohort, Scan
from ..errors import HarmkitError
from ..toolkit import resolve_site_group
from .config import BenchConfig

SIM_SIZES = {"quick": "quick", "paper": "full"}


def simulator_digest(preset: str) -> str:
    """A hash of the preset's parameters and of the simulator's source code: part of a cached cohort's name."""
    import hashlib

    from .. import simulation
    from ..simulation.presets import get_preset

    digest = hashlib.sha256(repr(get_preset(preset)).encode())
    for source in sorted(Path(simulation.__file__).parent.glob("*.py")):
        digest.update(source.read_bytes())
    return digest.hexdigest()


def references_of(config: BenchConfig, cohort: Cohort, groups: list[str]) -> list[str]:
    """The site groups each method maps towards: every group (``--reference all``) or the one named."""
    if config.reference in (None, "", "all"):
        return list(groups)
    return [resolve_site_group(cohort, config.reference, what="--reference")]


def load_bench_cohort(config: BenchConfig, console) -> tuple[Cohort, dict[str, Any]]:
    """The cohort of the run: ``--cohort`` or the simulated preset (simulated once, cached)."""
    from ..manifest import load_cohort

    info: dict[str, Any] = {}
    if config.cohort:
        manifest = Path(config.cohort)
        info["source"] = "manifest"
    else:
        size = SIM_SIZES[config.profile]
        name = f"{config.preset}-{size}-seed{config.seed}" + (
            f"-n{config.subjects_per_site}" if config.subjects_per_site else ""
        )
        # The cache is shared by every run: a changed simulator or preset must not reuse an old cohort.
        name += f"-{simulator_digest(config.preset)[:10]}"
        folder = config.cache_path / "cohorts" / name
        manifest = folder / "manifest.csv"
        done = folder / ".complete"
        if not done.is_file():
            from ..simulation import simulate

            console.log(f"simulating the {config.preset!r} preset ({size} size, seed {config.seed}) into {folder}")
            if folder.exists():
                shutil.rmtree(folder)  # an interrupted simulation: start again
            kwargs: dict[str, Any] = dict(
                preset=config.preset,
                out=folder,
                seed=config.seed,
                size=size,
                jobs=config.jobs,
            )
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
    cohort = check_bench_cohort(config, cohort)  # before any scan is hashed, harmonized or extracted
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


def check_bench_cohort(config: BenchConfig, cohort: Cohort) -> Cohort:
    """The checks of :func:`harmkit.validation.check_cohort` for this bench, and what the bench writes."""
    from ..atomic import inside
    from ..cache import Cache
    from ..plugins import get_extractor
    from ..validation import bin_width_of, check_cohort

    reason = Cache.usable(config.cache_path)
    if reason:
        raise HarmkitError(
            f"--cache-dir {config.cache_path}: cannot write there ({reason}); the bench keeps its "
            f"models and harmonized images in its cache: choose a writable folder with --cache-dir"
        )
    report_paths = [config.out_dir / name for name in ("figures", "tables", "report.md", "report.html", "results.json")]
    for source in cohort.input_files():
        if any(inside(source, target) for target in report_paths):
            raise HarmkitError(
                f"--out {config.out_dir}: the bench would replace {source}, an input of this run; choose another --out"
            )
    if config.voi not in cohort.mask_names:
        raise HarmkitError(
            f"--voi {config.voi}: no scan has a mask {config.voi!r}; masks in the cohort: "
            f"{', '.join(cohort.mask_names) or 'none'}; choose one with --voi"
        )
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
    return check_cohort(
        cohort,
        min_scans_per_site=2,
        masks=[config.voi],
        nan_to_zero=config.nan_to_zero,
        bin_width=bin_width_of(get_extractor(config.extractor)),
        binned_masks=vois,
        bin_width_option=None,
        jobs=config.jobs,
        scheduler=config.scheduler,
        progress=config.progress,
    )


def image_digest(scan: Scan) -> str:
    """The content hash of ``scan``'s image (its bytes, not its file name)."""
    from ..cache import hash_parts

    return hash_parts(_content(scan.image))


def scan_digest(scan: Scan) -> str:
    """The content hash of everything an image harmonizer is handed with ``scan``: for its cache keys.

    The image and every mask by content (an edited body, reference or lesion
    mask refits a model that reads it: histmatch's healthy tissue leaves the
    lesion out), the site, group, covariates, outcome, pair and NaN rule.
    """
    from ..cache import hash_parts

    return hash_parts(
        _content(scan.image),
        sorted((name, hash_parts(_content(mask))) for name, mask in scan.masks.items()),
        scan.subject_id,
        scan.site,
        scan.group,
        json.dumps(scan.covariates, sort_keys=True, default=str),
        scan.outcome,
        scan.pair_id,
        scan.nan_to_zero,
    )


def _content(item: Any) -> Any:
    """A path as a Path (hashed by its bytes), an in-memory image as it is."""
    return Path(item) if isinstance(item, (str, os.PathLike)) else item
