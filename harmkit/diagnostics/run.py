"""All site-effect diagnostics of one cohort: :func:`diagnose` and the :class:`Diagnostics` it returns."""

from __future__ import annotations

import json
import math
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import HarmkitError

TEXTURE_COLUMNS = {
    # column -> (label in tables and figures, format)
    "tissue_mean_suv": ("tissue SUV", ".2f"),
    "noise_sd_suv": ("noise SD", ".3f"),
    "noise_cov": ("COV", ".3f"),
    "corr_fwhm_inplane_mm": ("noise corr. xy mm", ".1f"),
    "corr_fwhm_axial_mm": ("noise corr. z mm", ".1f"),
    "edge_fwhm_mm": ("edge FWHM mm", ".1f"),
}


@dataclass
class Diagnostics:
    """What :func:`diagnose` found: site predictability, patch separability, texture per site group.

    ``summary`` is JSON-ready (what ``diagnostics.json`` holds); ``texture``
    has one row per scan; ``figures`` maps a name to a PNG written under ``out``.
    """

    summary: dict[str, Any]
    texture: Any  # pandas DataFrame
    features: Any = None  # pandas DataFrame or None
    figures: dict[str, Path] = field(default_factory=dict)

    def table(self):
        """A rich table: one row per site group, then the two separability figures."""
        from rich.table import Table

        table = Table(title=f"site effects: {self.summary['cohort']} (median [IQR] per site group)")
        table.add_column("site group")
        table.add_column("scans", justify="right")
        for label, _ in TEXTURE_COLUMNS.values():
            table.add_column(label, justify="right")
        for group, values in self.summary["texture"]["by_group"].items():
            cells = [group, str(values["scans"])]
            for column, (_, spec) in TEXTURE_COLUMNS.items():
                entry = values.get(column) or {}
                median = entry.get("median")
                if median is None:
                    cells.append("–")
                else:
                    cells.append(f"{format(median, spec)} [{format(entry['q1'], spec)}–{format(entry['q3'], spec)}]")
            table.add_row(*cells)
        return table

    def lines(self) -> list[str]:
        """One line each for the two separability figures (chance levels included)."""
        out = []
        pred = self.summary.get("site_predictability")
        if pred:
            ci = f" [95% CI {pred['ci_low']:.2f}–{pred['ci_high']:.2f}]" if pred.get("ci_low") is not None else ""
            out.append(
                f"feature-level site predictability ({self.summary['voi']} features): AUC {pred['auc']:.3f}{ci} "
                f"(0.5 = sites indistinguishable; {pred['n_features']} features)"
            )
            for pair, value in (pred.get("pairs") or {}).items():
                out.append(f"    {pair}: AUC {value:.3f}")
        patches = self.summary.get("patch_separability")
        if patches:
            out.append(
                f"image-level separability ({patches['patch_size']}^3-voxel patches at "
                f"{'x'.join(f'{s:.2f}' for s in patches['spacing_mm'])} mm, normalised to their mean): "
                f"held-out accuracy {patches['accuracy']:.3f} (chance {patches['chance']:.2f})"
            )
            for pair, value in (patches.get("pairs") or {}).items():
                out.append(f"    {pair}: accuracy {value:.3f}")
        return out


def _quartiles(values) -> dict[str, Any] | None:
    values = np.asarray([v for v in values if v is not None and math.isfinite(v)], dtype=float)
    if values.size == 0:
        return None
    q1, median, q3 = np.percentile(values, [25, 50, 75])
    return {
        "median": float(median),
        "q1": float(q1),
        "q3": float(q3),
        "n": int(values.size),
    }


def texture_statistics(
    cohort,
    tissue_voi: str | None = None,
    edge_voi: str | None = "lesion",
    jobs: int | None = None,
    executor=None,
    progress: bool = False,
    region: dict | None = None,
):
    """Per-scan texture statistics (noise level and texture in homogeneous tissue, edge resolution).

    ``tissue_voi`` names the homogeneous-tissue mask (e.g. ``reference``,
    the simulator's neck-muscle or liver sphere); ``None`` or ``"auto"``
    places one per scan with :func:`harmkit.diagnostics.homogeneous_region`
    (``region`` passes its options). ``edge_voi`` is the hot object whose
    edge gives the effective resolution (``None``: not measured). Returns a
    DataFrame with one row per scan (see ``docs/diagnostics.md``).
    """
    import pandas as pd

    from ..execution import map_once
    from .texture import scan_texture

    if tissue_voi == "auto":
        tissue_voi = None
    if tissue_voi:
        missing = [s.label for s in cohort if tissue_voi not in s.masks]
        if missing:
            raise HarmkitError(
                f"--tissue-voi {tissue_voi}: {len(missing)} scan(s) have no such mask, "
                f"e.g. {missing[0]}; "
                f"masks: {', '.join(cohort.mask_names) or 'none'}; or use --tissue-voi auto"
            )
    items = [(s, tissue_voi, edge_voi, dict(region or {})) for s in cohort]
    results = map_once(scan_texture, items, "texture statistics", executor, jobs, progress)
    failed = [str(r.error) for r in results if not r.ok]
    if failed:
        lines = "\n".join(f"  - {m}" for m in failed)
        raise HarmkitError(f"texture statistics failed for {len(failed)} scan(s):\n{lines}")
    return pd.DataFrame([r.value for r in results])


def summarize_texture(texture) -> dict[str, Any]:
    """Median and quartiles of each texture statistic per site group."""
    by_group = {}
    for group, sub in texture.groupby("site_group", sort=False):
        entry: dict[str, Any] = {"scans": int(len(sub))}
        for column in TEXTURE_COLUMNS:
            entry[column] = _quartiles(sub[column].tolist())
        by_group[str(group)] = entry
    return {
        "by_group": by_group,
        "tissue_source": sorted(set(texture["tissue_source"])),
    }


def _load_features(features, cohort, voi, extractor, jobs, cache_dir, progress):
    import pandas as pd

    if features is None:
        from ..extraction import extract

        return extract(
            cohort,
            voi=voi,
            extractor=extractor,
            jobs=jobs,
            cache_dir=cache_dir,
            progress=progress,
        )
    if isinstance(features, (str, os.PathLike)):
        from ..extraction import read_features

        features = read_features(features)
    if not isinstance(features, pd.DataFrame):
        raise HarmkitError("features= takes a DataFrame or the path of a feature CSV written by harmkit extract")
    groups = {s.subject_id: s.group for s in cohort}
    missing = [sid for sid in groups if sid not in features.index]
    if missing:
        raise HarmkitError(
            f"the feature table has no row for {len(missing)} scan(s) of the cohort, e.g. {missing[0]}; "
            "extract features for this cohort (harmkit extract) or let harmkit diagnose extract them"
        )
    table = features.loc[list(groups)].copy()
    table["site_group"] = [groups[sid] for sid in table.index]
    return table


def diagnose(
    cohort,
    voi: str = "lesion",
    out: str | os.PathLike | None = None,
    tissue_voi: str | None = None,
    features=None,
    extractor=None,
    spacing: Sequence[float] | None = None,
    patch_size: int = 32,
    patches_per_scan: int = 16,
    folds: int = 5,
    seed: int = 0,
    jobs: int | None = None,
    cache_dir=None,
    progress: bool = True,
) -> Diagnostics:
    """Measure how the site groups of a cohort differ: features, image patches, noise texture, resolution.

    Parameters
    ----------
    cohort : Cohort or manifest path
    voi : str
        The VOI whose features feed the site-predictability classifier and
        whose edge gives the effective resolution (``lesion``).
    out : folder, optional
        Where ``diagnostics.json``, ``texture_per_scan.csv`` and the figures
        go (each written atomically).
    tissue_voi : str, optional
        Homogeneous-tissue mask for noise statistics; default ``reference``
        when every scan has it, else ``auto`` (a sphere found per scan).
    features : DataFrame or CSV path, optional
        Precomputed features of ``voi`` (``harmkit extract``); default: extract
        them with ``extractor`` (the radiomics plugin), cached.
    spacing, patch_size, patches_per_scan :
        Grid and patches of the image-level classifier
        (:func:`harmkit.diagnostics.patch_separability`).
    folds, seed :
        Cross-validation folds and seed of both classifiers.

    >>> import harmkit as hk
    >>> result = hk.diagnose("sim/manifest.csv", voi="lesion", out="diag")   # doctest: +SKIP
    >>> result.summary["patch_separability"]["accuracy"]                    # doctest: +SKIP
    """
    from ..data import Cohort
    from ..manifest import load_cohort
    from .patches import patch_separability
    from .predictability import site_predictability

    if not isinstance(cohort, Cohort):
        cohort = load_cohort(cohort)
    if len(cohort.site_groups) < 2:
        raise HarmkitError(
            f"the cohort has a single site group ({cohort.site_groups[0]}); site effects need at least two"
        )
    missing = [s.label for s in cohort if voi not in s.masks]
    if missing:
        raise HarmkitError(
            f"--voi {voi}: {len(missing)} scan(s) have no mask {voi!r}, e.g. {missing[0]}; "
            f"masks in the cohort: {', '.join(cohort.mask_names) or 'none'}"
        )
    if tissue_voi is None:
        tissue_voi = "reference" if all("reference" in s.masks for s in cohort) else "auto"
    from ..execution import get_executor

    executor = get_executor(jobs=jobs, progress=progress)
    try:
        texture = texture_statistics(cohort, tissue_voi, voi, executor=executor)
        patches = patch_separability(
            cohort,
            spacing,
            patch_size,
            patches_per_scan,
            folds,
            seed,
            executor=executor,
        )
    finally:
        executor.close()
    table = _load_features(features, cohort, voi, extractor, jobs, cache_dir, progress)
    predictability = site_predictability(table, folds=folds, seed=seed)
    summary = {
        "format": "harmkit-diagnostics/1",
        "cohort": str(cohort.manifest) if cohort.manifest else "in-memory cohort",
        "voi": voi,
        "tissue_voi": tissue_voi,
        "site_groups": {g: list(dict.fromkeys(s.site for s in cohort if s.group == g)) for g in cohort.site_groups},
        "scans": {g: sum(1 for s in cohort if s.group == g) for g in cohort.site_groups},
        "site_predictability": {k: v for k, v in predictability.items() if k != "scores"},
        "patch_separability": {k: v for k, v in patches.items() if k not in ("descriptors", "labels")},
        "texture": summarize_texture(texture),
        "seed": seed,
    }
    result = Diagnostics(summary, texture, table)
    if out is not None:
        result.figures = write_outputs(result, patches, Path(out))
    return result


def write_outputs(result: Diagnostics, patches: dict, out: Path) -> dict[str, Path]:
    """Write diagnostics.json, texture_per_scan.csv and the figures into ``out``."""
    from ..atomic import atomic_file, atomic_write_text

    out.mkdir(parents=True, exist_ok=True)
    figures = {
        "texture": texture_figure(result.texture, out / "texture_by_group.png"),
        "patches": patch_figure(patches, out / "patch_descriptors.png"),
    }
    with atomic_file(out / "texture_per_scan.csv") as tmp:
        result.texture.to_csv(tmp, index=False)
    summary = dict(
        result.summary,
        figures={k: v.name for k, v in figures.items()},
        tables={"texture": "texture_per_scan.csv"},
    )
    text = json.dumps(summary, indent=1, allow_nan=False, default=_json_default) + "\n"
    atomic_write_text(out / "diagnostics.json", text)
    result.summary = summary
    return figures


def _json_default(value):
    if isinstance(value, np.integer):
        return int(value)
    if isinstance(value, np.floating):
        value = float(value)
        return value if math.isfinite(value) else None
    if isinstance(value, np.ndarray):
        return value.tolist()
    return str(value)


def _save(fig, path: Path) -> Path:
    """Save a matplotlib figure as PNG atomically (ordinary file permissions) and close it."""
    import matplotlib.pyplot as plt

    from ..atomic import atomic_file

    with atomic_file(path) as tmp:
        fig.savefig(tmp, dpi=90, bbox_inches="tight")
    plt.close(fig)
    return path


def texture_figure(texture, path: Path) -> Path:
    """Box plots per site group of every texture statistic."""
    from ..figures import boxplot
    from ..figures import plt as _plt

    plt = _plt()
    groups = list(dict.fromkeys(texture["site_group"]))
    fig, axes = plt.subplots(1, len(TEXTURE_COLUMNS), figsize=(2.6 * len(TEXTURE_COLUMNS), 3.2))
    for ax, (column, (label, _)) in zip(axes, TEXTURE_COLUMNS.items()):
        data = [texture.loc[texture["site_group"] == g, column].dropna().to_numpy(dtype=float) for g in groups]
        if any(len(d) for d in data):
            boxplot(ax, [d if len(d) else [np.nan] for d in data], groups)
        ax.set_title(label, fontsize=8)
        ax.tick_params(axis="x", labelsize=7, rotation=30)
        ax.tick_params(axis="y", labelsize=7)
    sources = ", ".join(sorted(set(texture["tissue_source"])))
    fig.suptitle(f"texture per site group (homogeneous tissue: {sources})", fontsize=9)
    fig.tight_layout()
    return _save(fig, path)


def patch_figure(patches: dict, path: Path) -> Path:
    """Distribution of each patch descriptor per site group, with the held-out accuracy in the title."""
    from ..figures import boxplot
    from ..figures import plt as _plt
    from .patches import DESCRIPTORS

    plt = _plt()
    X, labels = patches["descriptors"], patches["labels"]
    groups = list(dict.fromkeys(labels))
    names = list(DESCRIPTORS)
    ncols = 5
    nrows = (len(names) + ncols - 1) // ncols
    fig, axes = plt.subplots(nrows, ncols, figsize=(2.6 * ncols, 2.6 * nrows), squeeze=False)
    for ax in axes.ravel()[len(names) :]:
        ax.set_visible(False)
    for j, (ax, name) in enumerate(zip(axes.ravel(), names)):
        data = [X[labels == g, j][np.isfinite(X[labels == g, j])] for g in groups]
        boxplot(ax, data, groups, showfliers=False)
        ax.set_title(name, fontsize=8)
        ax.tick_params(axis="x", labelsize=7, rotation=30)
        ax.tick_params(axis="y", labelsize=7)
    fig.suptitle(
        f"patch descriptors ({patches['patch_size']}^3 voxels, patch / own mean): held-out accuracy "
        f"{patches['accuracy']:.2f} (chance {patches['chance']:.2f})",
        fontsize=9,
    )
    fig.tight_layout()
    return _save(fig, path)
