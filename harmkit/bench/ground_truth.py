"""What a bench compares with: the outcome (with its splits) and, when the cohort has it, ground truth.

Ground truth is the same subject really scanned at the reference site: the
simulator's counterfactual scans (``simulation.json`` beside the manifest)
and its true activity maps (the oracle).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING

from ..data import Cohort, Scan
from ..errors import HarmkitError
from ..methods import Method
from .features import extract_features
from .splits import monte_carlo_splits

if TYPE_CHECKING:  # pragma: no cover
    from .context import BenchContext


def prepare_outcome(ctx: "BenchContext") -> None:
    import pandas as pd

    outcomes = pd.Series({s.subject_id: s.outcome for s in ctx.cohort}, dtype=object)
    known = outcomes.dropna()
    if known.empty:
        ctx.prediction_skipped = (
            "the cohort has no outcome column (or no outcome values), so there is nothing to predict"
        )
        return
    counts = known.astype(int).value_counts()
    if len(counts) < 2 or counts.min() < 2:
        ctx.prediction_skipped = f"the outcome needs at least 2 subjects of each class (found {dict(counts)})"
        return
    ctx.outcome = known.astype(int)
    try:
        ctx.splits = monte_carlo_splits(
            list(ctx.outcome.index),
            ctx.outcome.to_numpy(),
            ctx.config.folds,
            ctx.config.test_size,
            ctx.config.seed,
        )
    except HarmkitError as exc:
        ctx.prediction_skipped = str(exc)
    if len(known) < len(outcomes):
        ctx.notes.append(f"{len(outcomes) - len(known)} scan(s) without outcome are left out of prediction")


def prepare_ground_truth(ctx: "BenchContext", cohort_info: dict, vois: list[str], console) -> None:
    """Counterfactual scans and truth images of a simulated cohort (simulation.json beside the manifest)."""
    from ..manifest import load_cohort

    manifest = Path(cohort_info["manifest"])
    sim_path = manifest.parent / "simulation.json"
    if not sim_path.is_file():
        if any(scan.pair_id for scan in ctx.cohort):
            _paired_ground_truth(ctx, vois, console)
            return
        ctx.fidelity_skipped = (
            "the cohort has no ground truth: no simulation.json beside the manifest and no pair_id column "
            "(a pair_id marks scans of the same subject or phantom at different sites; docs/real-data.md)"
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
    ctx.ground_truth = counterfactual_lookup(cf)
    ctx.ground_truth_source = "same subject rendered by the first site (alphabetical) of the reference group"
    # only the counterfactuals fidelity compares with: each non-reference subject at each reference group
    needed = {}
    for ref in ctx.references:
        for scan in ctx.cohort:
            if scan.group != ref:
                target = ctx.counterfactual(scan.subject_id, ref)
                if target is not None:
                    needed[target.subject_id] = target
    for voi in vois:
        if needed and all(voi in s.masks for s in needed.values()):
            console.log(f"features of {len(needed)} counterfactual scans in VOI [bold]{voi}[/]")
            cohort = Cohort(list(needed.values()), cf.root, cf.manifest)
            ctx.cf_features[voi] = extract_features(ctx, cohort, voi, "counterfactual")
    truth = truth_cohort(manifest.parent, sim, ctx)
    if truth is not None and ctx.config.voi in truth.mask_names:
        console.log("features of the truth images (oracle)")
        ctx.truth_features = extract_features(ctx, truth, ctx.config.voi, "truth")


def _paired_ground_truth(ctx: "BenchContext", vois: list[str], console) -> None:
    """Ground truth from the manifest's ``pair_id`` column: a scan's partner at the reference group."""
    from ..pairs import partner_scans

    ctx.ground_truth = partner_scans(ctx.cohort)
    ctx.ground_truth_source = "the partner scan (same pair_id: same subject or phantom) at the reference site group"
    needed = {scan.subject_id: scan for scan in ctx.ground_truth.values()}
    for voi in vois:
        if needed and all(voi in s.masks for s in needed.values()):
            console.log(f"features of {len(needed)} partner scans in VOI [bold]{voi}[/]")
            ctx.cf_features[voi] = extract_features(ctx, Cohort(list(needed.values()), ctx.cohort.root), voi, "partner")
    ctx.fidelity_skipped = "no partner scan at any reference site group" if not ctx.ground_truth else None


def add_oracle_row(ctx: "BenchContext", vois: list[str]) -> None:
    """The ceiling: an ``oracle`` row whose non-reference scans are the same subjects scanned at the reference.

    Added last, whenever the cohort has ground truth for every non-reference
    scan in every VOI; its features are the counterfactual scans' features.
    """
    if not ctx.ground_truth or any(voi not in ctx.cf_features for voi in vois):
        return
    missing = [
        s.label
        for ref in ctx.references
        for s in ctx.cohort
        if s.group != ref and ctx.counterfactual(s.subject_id, ref) is None
    ]
    if missing:
        ctx.notes.append(
            f"no oracle row: {len(missing)} scan(s) have no ground truth at a reference, e.g. {missing[0]}"
        )
        return
    ctx.methods = [*ctx.methods, Method("oracle", (), control="oracle")]


GRID_ORACLE = "oracle-grid"


def _resample_onto(item: tuple[Scan, Scan, str]) -> str:
    """Worker: the counterfactual's image resampled (linear) onto the scan's voxel grid, written atomically."""
    import SimpleITK as sitk

    from ..imageio import write_image

    scan, counterfactual, out_path = item
    grid = scan.load_image()
    image = sitk.Resample(counterfactual.load_image(), grid, sitk.Transform(), sitk.sitkLinear, 0.0, sitk.sitkFloat32)
    write_image(image, out_path)
    return out_path


def add_grid_oracle_row(ctx: "BenchContext") -> None:
    """The oracle on each scan's own grid: an ``oracle-grid`` row, for image harmonizers that keep the grid.

    Each non-reference scan is replaced by its counterfactual at the reference, linearly resampled onto the
    scan's own voxel grid, and its features are taken with the scan's own masks: a perfect translation
    returned on the source grid, as harmkit's image harmonizers return it. It shows what the grid alone costs;
    it is not a bound (a harmonizer may match the reference's feature distributions more closely than the
    resampled truth does). Added after the ``oracle`` row when the run has an image method, the cohort is
    simulated (its counterfactuals share the scans' physical space; a real partner scan need not) and at
    least one scan's grid differs from its counterfactual's; otherwise the row would equal ``oracle``.
    """
    from dataclasses import replace

    from ..imageio import geometry_difference, read_header
    from .cohort import image_digest

    if ctx.counterfactuals is None or not ctx.image_methods or not any(m.control == "oracle" for m in ctx.methods):
        return

    def grid(scan: Scan):
        if isinstance(scan.image, (str, Path)):
            try:
                return read_header(scan.image)  # the header only, not the voxels
            except RuntimeError:  # e.g. a DICOM series folder
                pass
        return scan.load_image()

    pairs: dict[str, list[tuple[Scan, Scan]]] = {ref: [] for ref in ctx.references}
    for ref in ctx.references:
        for scan in ctx.cohort:
            counterfactual = ctx.counterfactual(scan.subject_id, ref) if scan.group != ref else None
            if counterfactual is not None:  # every non-reference scan has one: the oracle row exists
                pairs[ref].append((scan, counterfactual))
    if all(geometry_difference(grid(scan), grid(cf)) is None for items in pairs.values() for scan, cf in items):
        return
    for ref, items in pairs.items():
        paths = {
            scan.subject_id: ctx.cache.image_path(
                "images", ctx.cache.key("grid-oracle", image_digest(scan), image_digest(cf), "v1")
            )
            for scan, cf in items
        }
        work = [(scan, cf, str(paths[scan.subject_id])) for scan, cf in items if not paths[scan.subject_id].is_file()]
        results = ctx.map(_resample_onto, work, label=f"{GRID_ORACLE} -> {ref}") if work else []
        for (scan, _, _), result in zip(work, results):
            if not result.ok:
                raise HarmkitError(
                    f"{GRID_ORACLE}: resampling the counterfactual of {scan.label} failed: {result.error}"
                )
        # the scan's own masks (a copy of the mapping, not shared with the cohort's scan)
        ctx.harmonized[(GRID_ORACLE, ref)] = {
            scan.subject_id: replace(scan, image=paths[scan.subject_id], masks=dict(scan.masks)) for scan, _ in items
        }
    ctx.methods = [*ctx.methods, Method(GRID_ORACLE, (), control=GRID_ORACLE)]


def counterfactual_lookup(counterfactuals: Cohort) -> dict[tuple[str, str], Scan]:
    """``(subject_id, site group) -> Scan`` of the same subject at that group (its first site, alphabetically)."""
    lookup: dict[tuple[str, str], Scan] = {}
    for scan in sorted(counterfactuals, key=lambda s: s.site):
        subject = str(scan.covariates.get("source_subject") or scan.subject_id.split("@")[0])
        lookup.setdefault((subject, scan.group), scan)
    return lookup


def truth_cohort(root: Path, sim: dict, ctx: "BenchContext") -> Cohort | None:
    """Truth images (noise-free, fine grid) as a cohort, when the simulator wrote a manifest for them."""
    from ..manifest import load_cohort

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
    mask_col = next(
        (c for c in (f"truth_{voi}", f"truth_mask_{voi}", f"mask_{voi}", "truth_mask") if c in table.columns),
        None,
    )
    if image_col is None or mask_col is None or "subject_id" not in table.columns:
        return None
    scans = []
    real = {s.subject_id: s for s in ctx.cohort}
    for row in table.itertuples(index=False):
        sid = str(row.subject_id)
        if sid not in real:
            continue
        scans.append(
            Scan(
                sid,
                real[sid].site,
                root / getattr(row, image_col),
                {ctx.config.voi: root / getattr(row, mask_col)},
                real[sid].outcome,
                site_group=real[sid].group,
            )
        )
    return Cohort(scans, root) if scans else None
