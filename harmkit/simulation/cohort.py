"""Generate a simulated multicenter cohort: plan every subject, render in parallel, write the files.

:func:`simulate` is the public entry point (``harmkit simulate`` and ``hk.simulate``). The main
process draws every subject's design and outcome (cheap scalars), then one task per subject
builds the phantom and renders it through its own site and, for the counterfactuals, through every
site. Each subject's random streams are ``SeedSequence(seed, spawn_key=(1, subject_index, k))``,
so results do not depend on the number of workers or the order in which they finish.
"""

from __future__ import annotations

import csv
import json
import math
import os
import shutil
import tempfile
from pathlib import Path

import numpy as np

from ..atomic import atomic_file, atomic_write_text
from ..errors import HarmkitError
from .grid import Grid
from .outcome import calibrate_intercept, linear_predictor, probability
from .phantom import LATENT, build_phantom, draw_design, fine_grid
from .presets import SIZES, Preset, get_preset
from .scanner import blur_truth, render, resample_labels, site_grid, sphere_mask
from .writer import write_volume

MASKS = {
    "headneck": ("body", "lesion", "reference"),
    "lung": ("body", "lesion", "reference", "liver", "lungs", "kidneys", "spleen"),
}
COUNTERFACTUAL_MANIFEST = "counterfactuals.csv"
TRUTH_TABLE = "truth.csv"
FORMAT_VERSION = 1

# spawn keys: (1, subject, k) per subject streams, (2, site) per-site grid allocation
_DESIGN, _FIELDS, _NOISE0 = 0, 1, 2


def _stream(seed: int, *key: int) -> np.random.Generator:
    return np.random.default_rng(np.random.SeedSequence(seed, spawn_key=key))


def _allocate(counts, n: int) -> list[int]:
    """Split ``n`` scans over protocols in proportion to ``counts`` (largest remainder)."""
    total = sum(counts)
    exact = [c * n / total for c in counts]
    base = [int(math.floor(e)) for e in exact]
    order = sorted(range(len(counts)), key=lambda k: (-(exact[k] - base[k]), k))
    for k in order[: n - sum(base)]:
        base[k] += 1
    return base


def plan_cohort(preset: Preset | str, seed: int = 0, subjects_per_site: int | None = None) -> list[dict]:
    """Every subject's design: covariates, latent biology, grids, outcome probability and outcome.

    Cheap (no images). Site ``j`` has ``subjects_per_site`` subjects, or the paper's count when
    ``None``; its acquisition grids are split in Table 1's proportions and shuffled by the seed.
    """
    preset = get_preset(preset) if isinstance(preset, str) else preset
    designs = []
    index = 0
    for j, site in enumerate(preset.sites):
        n = site.n_subjects if subjects_per_site is None else int(subjects_per_site)
        protocols = [k for k, c in enumerate(_allocate([p.count for p in site.protocols], n)) for _ in range(c)]
        protocols = [protocols[k] for k in _stream(seed, 2, j).permutation(n)]
        alpha = calibrate_intercept(site.prevalence, preset.outcome_coef)
        for k in range(n):
            rng = _stream(seed, 1, index, _DESIGN)
            design = draw_design(preset, site, f"{site.name}-{k + 1:03d}", rng, protocols[k])
            eta = linear_predictor(design, preset.outcome_coef)
            design.update(
                index=index,
                outcome_intercept=alpha,
                linear_predictor=eta,
                outcome_probability=probability(alpha, eta),
            )
            design["outcome"] = int(rng.random() < design["outcome_probability"])
            designs.append(design)
            index += 1
    return designs


def _rel(path: Path, root: Path) -> str:
    return path.relative_to(root).as_posix()


def _write(array: np.ndarray, grid: Grid, path: Path, suv: bool = False) -> None:
    write_volume(array, grid, path, suv=suv)


def simulate_subject(task: dict) -> dict:
    """Build one subject's phantom, render it through its site (and every site), write its files.

    Module-level and driven by a plain dict so that process pools and Dask can run it.
    Returns relative paths and truth figures for the manifests and the truth table.
    """
    preset = get_preset(task["preset"])
    design, seed, size, root = (
        task["design"],
        task["seed"],
        task["size"],
        Path(task["root"]),
    )
    subject, index = design["subject_id"], design["index"]
    fine = fine_grid(preset, size)
    phantom = build_phantom(design, preset, fine, _stream(seed, 1, index, _FIELDS))

    truth_dir = root / "truth"
    truth_files = {
        "truth_image": truth_dir / f"{subject}_suv.nii.gz",
        "truth_lesion": truth_dir / f"{subject}_lesion.nii.gz",
        "truth_labels": truth_dir / f"{subject}_labels.nii.gz",
    }
    _write(phantom.suv, fine, truth_files["truth_image"], suv=True)
    _write(phantom.lesion.astype(np.uint8), fine, truth_files["truth_lesion"])
    _write(phantom.labels, fine, truth_files["truth_labels"])
    lesion_values = phantom.suv[phantom.lesion]
    result = {
        "subject_id": subject,
        "truth": {
            **{k: _rel(v, root) for k, v in truth_files.items()},
            "lesion_volume_ml": float(phantom.lesion.sum() * fine.voxel_volume_ml),
            "lesion_mean_suv": float(lesion_values.mean()),
            "lesion_max_suv": float(lesion_values.max()),
            "reference_center_mm": list(phantom.reference_center),
            "reference_radius_mm": phantom.reference_radius,
        },
        "renderings": [],
    }
    for j, site in enumerate(preset.sites):
        own = site.name == design["site"]
        if not own and not task["counterfactuals"]:
            continue
        protocol = site.protocols[design["protocol"][site.name]]
        grid = site_grid(protocol, preset, size)
        blurred = blur_truth(phantom.suv, fine, grid, site.scanner)
        folder = root / ("scans" if own else "counterfactuals") / subject / site.name
        masks = {}
        labels = resample_labels(phantom.labels, fine, grid)
        for name in MASKS[preset.anatomy]:
            if name == "reference":
                mask = sphere_mask(grid, phantom.reference_center, phantom.reference_radius)
            elif name == "body":
                mask = (labels > 0).astype(np.uint8)
            else:
                mask = (labels == phantom.label_codes[name]).astype(np.uint8)
            path = folder / f"mask_{name}.nii.gz"
            _write(mask, grid, path)
            masks[name] = _rel(path, root)
        kinds = (["scan"] if own else []) + (["counterfactual"] if task["counterfactuals"] else [])
        for kind in kinds:
            replicate = 0 if kind == "scan" else 1
            if task["noise"]:
                rng = _stream(seed, 1, index, _NOISE0 + 2 * j + replicate)
                noise_scale = float(math.exp(site.scanner.noise_scale_sd * rng.standard_normal()))
            else:
                rng, noise_scale = None, 1.0
            image = render(blurred, fine, grid, site.scanner, rng, noise_scale)
            name = "pet.nii.gz" if kind == "scan" else "pet_counterfactual.nii.gz"
            path = folder / name
            _write(image, grid, path, suv=True)
            result["renderings"].append(
                {
                    "kind": kind,
                    "site": site.name,
                    "site_group": site.site_group,
                    "image": _rel(path, root),
                    "masks": masks,
                    "noise_scale": noise_scale,
                    "grid": protocol.label,
                }
            )
    return result


def _run(tasks: list[dict], jobs: int | None, progress: bool) -> list[dict]:
    label = "simulating subjects"
    try:
        from ..execution import get_executor
    except ImportError:  # pragma: no cover - the executor ships with harmkit
        return [simulate_subject(t) for t in tasks]
    with get_executor(jobs=jobs, progress=progress) as executor:
        results = executor.map(simulate_subject, tasks, label=label)
    failed = [(t["design"]["subject_id"], r.error) for t, r in zip(tasks, results) if r.error]
    if failed:
        lines = "; ".join(f"{s}: {e}" for s, e in failed[:5])
        raise HarmkitError(f"simulation failed for {len(failed)} subject(s): {lines}")
    return [r.value for r in results]


def _write_csv(path: Path, header: list[str], rows: list[list]) -> None:
    with atomic_file(path) as tmp, open(tmp, "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(header)
        writer.writerows(rows)


def _fmt(value):
    if isinstance(value, float):
        return f"{value:.6g}"
    return value


def _write_outputs(root: Path, preset: Preset, designs: list[dict], results: list[dict], params: dict) -> Path:
    from ..data import Scan
    from ..manifest import write_manifest

    by_subject = {r["subject_id"]: r for r in results}
    scans, counterfactuals = [], []
    for design in designs:
        result = by_subject[design["subject_id"]]
        covariates = {"age": design["age"], "sex": design["sex"]}
        for rendering in result["renderings"]:
            masks = {k: root / v for k, v in rendering["masks"].items()}
            if rendering["kind"] == "scan":
                scans.append(
                    Scan(
                        design["subject_id"],
                        design["site"],
                        root / rendering["image"],
                        masks,
                        design["outcome"],
                        dict(covariates),
                        design["site_group"],
                    )
                )
            else:
                counterfactuals.append(
                    Scan(
                        f"{design['subject_id']}@{rendering['site']}",
                        rendering["site"],
                        root / rendering["image"],
                        masks,
                        design["outcome"],
                        {
                            "source_subject": design["subject_id"],
                            "source_site": design["site"],
                            **covariates,
                        },
                        rendering["site_group"],
                    )
                )
    manifest = write_manifest(scans, root / "manifest.csv", covariate_columns=["age", "sex"])
    if counterfactuals:
        write_manifest(
            counterfactuals,
            root / COUNTERFACTUAL_MANIFEST,
            covariate_columns=["source_subject", "source_site", "age", "sex"],
        )

    header = [
        "subject_id",
        "site",
        "site_group",
        *LATENT,
        "lesion_volume_nominal_ml",
        "lesion_volume_ml",
        "lesion_suv",
        "lesion_mean_suv",
        "lesion_max_suv",
        "heterogeneity",
        "texture_corr_mm",
        "necrotic_fraction",
        "necrotic_suv_ratio",
        "lobulation",
        "lesion_side",
        "lesion_center_x_mm",
        "lesion_center_y_mm",
        "lesion_center_z_mm",
        "body_scale",
        "linear_predictor",
        "outcome_intercept",
        "outcome_probability",
        "outcome",
        "scan_grid",
        "scan_noise_scale",
        "truth_image",
        "truth_lesion",
        "truth_labels",
    ]
    uptake_names = sorted(designs[0]["uptake"]) if designs else []
    header += [f"uptake_{name}" for name in uptake_names]
    rows = []
    for design in designs:
        result = by_subject[design["subject_id"]]
        truth = result["truth"]
        scan = next(r for r in result["renderings"] if r["kind"] == "scan")
        center = [c * design["body_scale"] for c in design["lesion_center_template"]]
        values = {
            **design,
            **truth,
            "lesion_center_x_mm": center[0],
            "lesion_center_y_mm": center[1],
            "lesion_center_z_mm": center[2],
            "scan_grid": scan["grid"],
            "scan_noise_scale": scan["noise_scale"],
        }
        row = [_fmt(values[h]) for h in header[: -len(uptake_names) or None]]
        row += [_fmt(design["uptake"][name]) for name in uptake_names]
        rows.append(row)
    _write_csv(root / TRUTH_TABLE, header, rows)

    params["counts"] = {site.name: sum(1 for d in designs if d["site"] == site.name) for site in preset.sites}
    params["outcome_counts"] = {
        site.name: sum(d["outcome"] for d in designs if d["site"] == site.name) for site in preset.sites
    }
    params["expected_outcome_counts"] = {
        site.name: sum(d["outcome_probability"] for d in designs if d["site"] == site.name) for site in preset.sites
    }
    params["outcome_intercepts"] = {
        site.name: calibrate_intercept(site.prevalence, preset.outcome_coef) for site in preset.sites
    }
    text = json.dumps(params, indent=2, sort_keys=True) + "\n"
    atomic_write_text(root / "simulation.json", text)
    return manifest


def simulate(
    preset: str = "headneck",
    out: str | os.PathLike | None = None,
    seed: int = 0,
    subjects_per_site: int | None = None,
    size: str = "quick",
    jobs: int | None = None,
    counterfactuals: bool = True,
    noise: bool = True,
    force: bool = False,
    progress: bool = True,
) -> Path:
    """Simulate a multicenter PET cohort with known ground truth; return the path of ``manifest.csv``.

    Parameters
    ----------
    preset:
        ``"headneck"`` (CHUM, HGJ, HMR; 65/91/41 scans) or ``"lung"`` (TUB, BUD-VPHD, BUD-SharpIR; 168/53/44).
    out:
        Output folder. It must not exist or be empty (``force=True`` replaces it). Files are written
        to a temporary sibling folder that is renamed to ``out`` only when everything is written.
    seed:
        Same seed, byte-identical files; any non-negative integer.
    subjects_per_site:
        Subjects per site (the same number at every site) instead of the paper's counts; the
        expected outcome prevalence of each site is kept.
    size:
        ``"quick"``: the paper's voxel sizes with matrices cropped to the preset's field of view;
        ``"full"``: the paper's matrices (much larger files, slower).
    jobs:
        Worker processes (``None``: every core; ``1``: in this process).
    counterfactuals:
        Also render every subject through every site (``counterfactuals.csv``).
    noise:
        ``False`` renders noise-free images (a subject's counterfactual at its own site then equals its scan).

    Writes ``manifest.csv``, ``counterfactuals.csv``, ``truth.csv``, ``truth/`` and ``simulation.json``.

    >>> import harmkit as hk
    >>> manifest = hk.simulate("headneck", out="sim", seed=0, subjects_per_site=5)   # doctest: +SKIP
    >>> cohort = hk.load_cohort(manifest)                                            # doctest: +SKIP
    """
    preset_obj = get_preset(preset)
    if out is None:
        raise HarmkitError("simulate: give an output folder (out=...)")
    if size not in SIZES:
        raise HarmkitError(f"unknown size {size!r}; choose one of: {', '.join(SIZES)}")
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise HarmkitError(f"seed must be a non-negative whole number, got {seed!r}")
    if subjects_per_site is not None:
        if (
            isinstance(subjects_per_site, bool)
            or not isinstance(subjects_per_site, (int, np.integer))
            or subjects_per_site < 1
        ):
            raise HarmkitError(f"subjects per site must be a positive whole number, got {subjects_per_site!r}")
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise HarmkitError(f"output {out} exists and is not a folder; choose another --out")
    if out.is_dir() and any(out.iterdir()) and not force:
        raise HarmkitError(f"output folder {out} is not empty; choose a new --out or pass --force to replace it")
    out.parent.mkdir(parents=True, exist_ok=True)

    designs = plan_cohort(preset_obj, int(seed), subjects_per_site)
    from .. import __version__

    params = {
        "format_version": FORMAT_VERSION,
        "harmkit_version": __version__,
        "preset": preset_obj.to_dict(),
        "seed": int(seed),
        "size": size,
        "subjects_per_site": subjects_per_site,
        "noise": bool(noise),
        "counterfactuals": bool(counterfactuals),
        "fine_grid": fine_grid(preset_obj, size).to_dict(),
        "site_grids": {
            site.name: [{"protocol": p.label, **site_grid(p, preset_obj, size).to_dict()} for p in site.protocols]
            for site in preset_obj.sites
        },
        "masks": list(MASKS[preset_obj.anatomy]),
        "counterfactual_manifest": COUNTERFACTUAL_MANIFEST if counterfactuals else None,
        "truth_table": TRUTH_TABLE,
        "truth_dir": "truth",
        "seeding": "numpy SeedSequence(seed, spawn_key=(1, subject_index, stream)); stream 0 design, 1 spatial fields, "
        "2 + 2*site_index + replicate noise (replicate 0 scan, 1 counterfactual); SeedSequence(seed, spawn_key=(2, "
        "site_index)) grid allocation",
    }
    staging = Path(tempfile.mkdtemp(prefix=f".{out.name}.partial-", dir=out.parent))
    try:
        tasks = [
            {
                "preset": preset_obj.name,
                "design": d,
                "seed": int(seed),
                "size": size,
                "root": str(staging),
                "noise": bool(noise),
                "counterfactuals": bool(counterfactuals),
            }
            for d in designs
        ]
        results = _run(tasks, jobs, progress)
        _write_outputs(staging, preset_obj, designs, results, params)
        for path in staging.rglob("*"):  # temporary files are created private; the cohort is not
            os.chmod(path, 0o755 if path.is_dir() else 0o644)
        os.chmod(staging, 0o755)
        if out.exists():
            trash = Path(tempfile.mkdtemp(prefix=f".{out.name}.old-", dir=out.parent))
            os.replace(out, trash / "old")
            os.replace(staging, out)
            shutil.rmtree(trash, ignore_errors=True)
        else:
            os.replace(staging, out)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return out / "manifest.csv"
