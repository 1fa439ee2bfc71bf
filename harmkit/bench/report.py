"""What a bench hands back: results.json, CSV tables, report.md, a self-contained report.html, a terminal table.

Everything is first written into a staging folder inside the output folder
and moved into place at the end, ``results.json`` last: a run that stops
half-way never leaves a report that looks complete (and a previous
``results.json`` is removed before the new files move in).
"""

from __future__ import annotations

import base64
import datetime as _dt
import html
import json
import math
import os
import platform
import shutil
from pathlib import Path
from typing import Any

SUMMARY_COLUMNS = (
    # (results key, column title, format)
    ("auc", "AUC [95% CI, corrected]", None),
    ("p_paired", "p (corrected t)", "p"),
    ("p_paired_haberl", "p as in Haberl et al.", "p"),
    ("p_delong", "p (DeLong)", "p"),
    ("overlap_voi", "Δoverlap VOI (pp)", "+.1f"),
    ("overlap_ref", "Δoverlap ref. tissue (pp)", "+.1f"),
    ("ssim", "SSIM", ".3f"),
    ("psnr", "PSNR (dB)", ".1f"),
    ("cf_ssim", "SSIM vs truth scan", ".3f"),
    ("cf_feature_ccc", "CCC vs truth features", ".3f"),
    ("gap_closed", "gap closed", "+.0%"),
    ("qc_flagged", "QC flagged", "d"),
)


def fmt(value: Any, spec: str | None) -> str:
    """How the report prints a number (the test of the report uses the same function)."""
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "–"
    if isinstance(value, str):  # a label, e.g. the name of a test
        return value
    if spec == "p":
        return "<0.0001" if value < 1e-4 else f"{value:.4f}"
    if spec == "d":
        return str(int(value))
    return format(value, spec)


def summary_rows(ctx) -> list[dict[str, Any]]:
    """One row per method and reference: the numbers of every evaluator, merged."""
    rows = []
    voi, ref_voi = ctx.config.voi, ctx.config.reference_voi
    for method in ctx.methods:
        for ref in ctx.references:
            key = f"{method.label}|{ref}"
            row: dict[str, Any] = {"method": method.label, "reference": ref}
            for result in ctx.results.values():
                if result.skipped:
                    continue
                row.update(result.summary.get("by_method", {}).get(key, {}))
            row["overlap_voi"] = row.get(f"overlap_improvement_pct_{voi}")
            row["overlap_ref"] = row.get(f"overlap_improvement_pct_{ref_voi}")
            rows.append(row)
    return rows


def interval_text(row: dict[str, Any], low: str, high: str, spec: str = ".3f", sep: str = "–") -> str:
    """``[low–high]`` of two keys of ``row`` (``sep=", "`` for signed bounds); ``–`` when both are missing."""
    if row.get(low) is None and row.get(high) is None:
        return "–"
    return f"[{fmt(row.get(low), spec)}{sep}{fmt(row.get(high), spec)}]"


def auc_text(row: dict[str, Any], haberl: bool = False) -> str:
    """Mean AUC over the splits with its corrected (Nadeau-Bengio) 95 % CI, or the paper's with ``haberl``."""
    if row.get("auc_mean") is None:
        return "–"
    suffix = "_haberl" if haberl else ""
    return f"{row['auc_mean']:.3f} {interval_text(row, 'auc_ci_low' + suffix, 'auc_ci_high' + suffix)}"


def cell_text(row: dict[str, Any], key: str, spec: str | None) -> str:
    """One cell of a summary row: ``auc`` (mean, corrected CI), ``auc_haberl`` (mean, the paper's CI) or a number."""
    if key in ("auc", "auc_haberl"):
        return auc_text(row, haberl=key == "auc_haberl")
    return fmt(row.get(key), spec)


def _cells(row: dict[str, Any]) -> list[str]:
    return [row["method"], row["reference"], *(cell_text(row, key, spec) for key, _, spec in SUMMARY_COLUMNS)]


def _versions(ctx) -> dict[str, Any]:
    from importlib import metadata

    from .. import __version__
    from ..plugins import get_registry

    versions: dict[str, Any] = {"harmkit": __version__, "python": platform.python_version()}
    for dist in ("numpy", "scipy", "pandas", "scikit-learn", "scikit-image", "SimpleITK", "torch", "pyradiomics", "neuroHarmonize"):
        try:
            versions[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            pass
    versions["plugins"] = {f"{p.kind}:{p.name}": f"{p.distribution} {p.version}" for p in get_registry().all()}
    return versions


def _records(frame) -> list[dict[str, Any]]:
    import numpy as np

    frame = frame.replace([np.inf, -np.inf], np.nan)
    return json.loads(frame.to_json(orient="records", double_precision=15))


def write_outputs(ctx, staging: Path, cohort_info: dict, timings: dict) -> Any:
    """Write results.json, tables/*.csv, figures, report.md and report.html; move them into place."""
    from .protocol import BenchResult

    out_dir = ctx.out_dir
    tables_dir = staging / "tables"
    tables_dir.mkdir(exist_ok=True)
    rows = summary_rows(ctx)
    evaluators: dict[str, Any] = {}
    for name, result in ctx.results.items():
        entry: dict[str, Any] = {"skipped": result.skipped, "summary": result.summary, "tables": {}, "figures": {}}
        for tname, frame in result.tables.items():
            if frame is None or frame.empty:
                continue
            path = tables_dir / f"{name}__{tname}.csv"
            frame.to_csv(path, index=False)
            entry["tables"][tname] = _records(frame)
        for fname, path in result.figures.items():
            entry["figures"][fname] = f"figures/{Path(path).name}"
        evaluators[name] = entry
    import pandas as pd

    pd.DataFrame(rows).to_csv(tables_dir / "summary.csv", index=False)
    if ctx.splits is not None:
        ctx.splits.to_frame().to_csv(tables_dir / "splits.csv", index=False)
    cohort = {k: v for k, v in cohort_info.items() if k != "simulation"}
    results = {
        "format": "harmkit-bench/1",
        "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "config": ctx.config.to_dict(),
        "cohort": cohort,
        "simulation": cohort_info.get("simulation"),
        "versions": _versions(ctx),
        "seeds": {"seed": ctx.config.seed, "splits_digest": ctx.splits.digest() if ctx.splits else None},
        "methods": [m.label for m in ctx.methods],
        "references": ctx.references,
        "site_groups": ctx.groups,
        "vois": ctx.vois,
        "feature_columns": {voi: ctx.feature_columns(voi) for voi in ctx.vois},
        "notes": ctx.notes,
        "skipped": {name: r.skipped for name, r in ctx.results.items() if r.skipped},
        "summary": rows,
        "evaluators": evaluators,
        "timings_s": {k: round(v, 2) for k, v in timings.items()},
        "cache": {"root": str(ctx.cache.root), "hits": ctx.cache.hits, "misses": ctx.cache.misses},
    }
    blocks = _report_blocks(ctx, results)
    (staging / "report.md").write_text(render_markdown(blocks))
    (staging / "report.html").write_text(render_html(blocks, staging))
    (staging / "results.json").write_text(json.dumps(results, indent=1, allow_nan=False, default=_json_default))
    # move into place: the old results.json goes first, the new one comes last
    (out_dir / "results.json").unlink(missing_ok=True)
    for name in ("figures", "tables", "report.md", "report.html", "results.json"):
        target = out_dir / name
        if target.is_dir():
            shutil.rmtree(target)
        os.replace(staging / name, target)
    shutil.rmtree(staging, ignore_errors=True)
    return BenchResult(out_dir, results)


def _json_default(value: Any) -> Any:
    import numpy as np

    if isinstance(value, (np.integer,)):
        return int(value)
    if isinstance(value, (np.floating,)):
        value = float(value)
        return value if math.isfinite(value) else None
    if isinstance(value, (Path,)):
        return str(value)
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, (set, tuple)):
        return list(value)
    return str(value)


# ---------------------------------------------------------------------------
# report blocks: one description, two renderings (markdown and HTML)
# ---------------------------------------------------------------------------


def _report_blocks(ctx, results: dict) -> list[tuple]:
    cfg = ctx.config
    b: list[tuple] = []
    b.append(("h1", "harmkit bench report"))
    cohort = results["cohort"]
    b.append(("p", f"Cohort: {cohort.get('source')} — {cohort['n_scans']} scans, manifest `{cohort['manifest']}`. "
                   f"Site groups: " + "; ".join(f"{g} ({', '.join(s)})" for g, s in cohort["site_groups"].items()) + "."))
    b.append(("p", f"Methods: {', '.join(results['methods'])}. References (each site group serves once): {', '.join(ctx.references)}. "
                   f"VOIs: {', '.join(ctx.vois)}. "
                   + (f"Splits: {cfg.folds} stratified Monte Carlo {1 - cfg.test_size:.0%}/{cfg.test_size:.0%}, seed {cfg.seed}, "
                      f"the same for every method (digest {results['seeds']['splits_digest']}). Feature stages (ComBat) fitted on "
                      + ("the training rows of each split (leakage-free)." if cfg.fit_on == "train" else "all rows, as in the paper (leaks test rows into the harmonization).")
                      if ctx.splits is not None else "No splits: prediction was skipped (see below). Feature stages fitted on all rows.")))
    b.append(("p", f"harmkit {results['versions']['harmkit']}, created {results['created']}, profile `{cfg.profile}`, total time {results['timings_s'].get('total', 0):.0f} s. "
                   "Every number below is in `results.json`; tables in `tables/*.csv`. docs/bench.md explains each number."))
    b.append(("h2", "Summary"))
    header = ["method", "reference", *(title for _, title, _ in SUMMARY_COLUMNS)]
    b.append(("table", header, [_cells(r) for r in results["summary"]], "summary"))
    b.append(("p", "AUC: mean test AUC over the splits with its 95 % CI from the corrected resampled t "
                   "(Nadeau & Bengio 2003), which allows for the overlap of the splits' training rows; "
                   "p (corrected t): corrected resampled t test of the per-split AUCs vs `none`; "
                   "p as in Haberl et al.: the paper's uncorrected rule (Shapiro-Wilk, then paired t or Wilcoxon over "
                   "the splits), too small because the splits overlap, for comparison with the paper; p (DeLong): "
                   "DeLong test on each subject's mean out-of-split prediction vs `none`. No p-value here is adjusted "
                   "for multiple comparisons; Holm-adjusted ones are in the Prediction section. "
                   "Δoverlap: mean change of the "
                   "overlap coefficient between site groups (percentage points) over all features. SSIM/PSNR: harmonized vs original "
                   "in the body mask. SSIM vs truth scan / CCC vs truth features: agreement with the same subject scanned at the reference "
                   "site (simulated cohorts only). Gap closed: share of the baseline-to-oracle AUC gap the method closes."))
    if results["skipped"]:
        b.append(("h2", "Skipped"))
        for name, why in results["skipped"].items():
            b.append(("p", f"**{name}** was skipped: {why}"))
    for note in results["notes"]:
        b.append(("p", f"Note: {note}"))
    ev = results["evaluators"]
    # prediction
    if "prediction" in ev and not ev["prediction"]["skipped"]:
        s = ev["prediction"]["summary"]
        b.append(("h2", "Prediction"))
        b.append(("p", f"{s['classifier']}; VOI `{s['voi']}`, {s['n_features']} features, {s['n_subjects']} subjects "
                       f"({s['n_positive']} positive), {s['folds']} splits. DeLong input: {s['delong_input']}."))
        b.append(("p", _prediction_statistics_text(s)))
        header, rows = _prediction_table(results["summary"], s.get("n_bootstrap", "–"))
        b.append(("table", header, rows, "prediction"))
        for key in ("roc", "auc_splits"):
            if key in ev["prediction"]["figures"]:
                b.append(("fig", ev["prediction"]["figures"][key], key.replace("_", " ")))
    # reproducibility
    if "reproducibility" in ev and not ev["reproducibility"]["skipped"]:
        b.append(("h2", "Reproducibility (feature overlap between site groups)"))
        per_class = ev["reproducibility"]["tables"].get("overlap_per_class", [])
        rows = [[r["method"], r["reference"], r.get("group", ""), r["voi"], r["class"], str(r["n_features"]), fmt(r["overlap_before_mean"], ".3f"),
                 fmt(r["overlap_after_mean"], ".3f"), f"{fmt(r['improvement_pct_mean'], '+.1f')} ± {fmt(r['improvement_pct_sd'], '.1f')}", fmt(r.get("p_wilcoxon"), "p")]
                for r in per_class if r["method"] != "none"]
        b.append(("table", ["method", "reference", "compared group", "VOI", "class", "n", "overlap before", "overlap after", "improvement (pp, mean ± SD)", "p (Wilcoxon)"], rows, "overlap"))
        cov = ev["reproducibility"]["tables"].get("cov_by_group", [])
        if cov:
            rows = [[r["method"], r["reference"], r["voi"], r["site_group"], fmt(r.get("cov_median_before"), ".3f"), fmt(r.get("cov_median_after"), ".3f"),
                     fmt(r.get("p_mannwhitney_vs_reference_before"), "p"), fmt(r.get("p_mannwhitney_vs_reference_after"), "p")] for r in cov]
            b.append(("table", ["method", "reference", "VOI", "site group", "median COV before", "median COV after", "p vs reference before", "p vs reference after"], rows, "cov"))
        for key in ("overlap_per_class", "cov_distributions"):
            if key in ev["reproducibility"]["figures"]:
                b.append(("fig", ev["reproducibility"]["figures"][key], key.replace("_", " ")))
    # image quality
    if "image-quality" in ev and not ev["image-quality"]["skipped"]:
        s = ev["image-quality"]["summary"]
        b.append(("h2", "Image quality (harmonized vs original)"))
        b.append(("p", f"Data range: {s['data_range']}. SSIM: {s['ssim']}. NRMSE: {s['nrmse']}."))
        rows = [[r["method"], r["reference"], r["mask"], fmt(r.get("ssim_mean"), ".3f"), fmt(r.get("ssim_min"), ".3f"), fmt(r.get("psnr_mean"), ".1f"), fmt(r.get("nrmse_mean"), ".3f")]
                for r in ev["image-quality"]["tables"].get("by_mask", [])]
        b.append(("table", ["method", "reference", "mask", "SSIM mean", "SSIM min", "PSNR mean (dB)", "NRMSE mean"], rows, "quality"))
        if "quality_boxplots" in ev["image-quality"]["figures"]:
            b.append(("fig", ev["image-quality"]["figures"]["quality_boxplots"], "image quality per mask"))
    # fidelity
    if "fidelity" in ev and not ev["fidelity"]["skipped"]:
        s = ev["fidelity"]["summary"]
        b.append(("h2", "Fidelity against the ground truth (simulation)"))
        oracle = s.get("oracle")
        b.append(("p", (f"Oracle AUC (features of the true activity maps, same splits; corrected 95 % CI): "
                        f"{fmt(oracle['auc_mean'], '.3f')} "
                        f"[{fmt(oracle['auc_ci_low'], '.3f')}–{fmt(oracle['auc_ci_high'], '.3f')}]. " if oracle else f"No oracle AUC: {s.get('oracle_note')}. ")
                       + f"Counterfactual: {s['counterfactual']}. nMAE: {s['nmae']}. Voxels: {s['voxel_metrics']}."))
        rows = [[r["method"], r["reference"], fmt(r.get("cf_ssim"), ".3f"), fmt(r.get("cf_psnr"), ".1f"), fmt(r.get("cf_feature_nmae"), ".3f"),
                 fmt(r.get("cf_feature_ccc"), ".3f"), fmt(r.get("gap_closed"), "+.0%")] for r in results["summary"]]
        b.append(("table", ["method", "reference", "SSIM vs counterfactual", "PSNR vs counterfactual", "feature nMAE (median)", "feature CCC (mean)", "gap closed"], rows, "fidelity"))
        if "fidelity_ccc" in ev["fidelity"]["figures"]:
            b.append(("fig", ev["fidelity"]["figures"]["fidelity_ccc"], "feature fidelity per class"))
    # QC
    if "qc" in ev and not ev["qc"]["skipped"]:
        s = ev["qc"]["summary"]
        b.append(("h2", "QC: suspicious changes and MIPs"))
        b.append(("p", f"Rule: {s['rule']}. Flagged scans: {s['n_flagged']}."))
        flagged = ev["qc"]["tables"].get("flagged", [])
        if flagged:
            rows = [[r["method"], r["reference"], r["subject_id"], r["site"], r.get("reason", ""), fmt(r["edge_mean_abs_pct"], ".1f"), fmt(r["interior_mean_abs_pct"], ".1f")] for r in flagged[:30]]
            b.append(("table", ["method", "reference", "subject", "site", "reason", "edge mean |%diff|", "interior mean |%diff|"], rows, "qc"))
            if len(flagged) > 30:
                b.append(("p", f"… and {len(flagged) - 30} more in `tables/qc__flagged.csv`."))
        for key, path in ev["qc"]["figures"].items():
            b.append(("fig", path, key.replace("mip_", "MIPs ").replace("_", " → ")))
    # other evaluators (plugins)
    for name, entry in ev.items():
        if name in ("prediction", "reproducibility", "image-quality", "fidelity", "qc") or entry["skipped"]:
            continue
        b.append(("h2", f"Evaluator {name}"))
        for key, path in entry["figures"].items():
            b.append(("fig", path, key))
    b.append(("h2", "Timings"))
    b.append(("table", ["stage", "seconds"], [[k, f"{v:.1f}"] for k, v in results["timings_s"].items()], "timings"))
    return b


def _prediction_statistics_text(s: dict[str, Any]) -> str:
    """What the Prediction table's statistics are, from the prediction evaluator's summary."""
    corr = s.get("correction", {})
    return (f"AUC [95% CI, corrected]: {s['ci']} (here J = {s['folds']}, n_train = {fmt(corr.get('n_train'), '.1f')}, "
            f"n_test = {fmt(corr.get('n_test'), '.1f')}: the variance of the mean is "
            f"{fmt(corr.get('factor'), '.3f')}·S² instead of S²/{s['folds']}). "
            "ΔAUC: mean per-split difference to `none` with the same corrected CI. "
            f"p (corrected t): {s['paired_test']}. Holm-adjusted p: {s['holm_family']}. "
            f"Columns \"as in Haberl et al.\": {s['haberl']}. "
            f"Pooled AUC: AUC of the pooled out-of-split predictions, with DeLong's 95 % CI and a {s['bootstrap']} "
            "(both treat the pooled scores as fixed: they leave out the variability of model training).")


def _prediction_table(summary: list[dict[str, Any]], n_bootstrap: Any) -> tuple[list[str], list[list[str]]]:
    """Header and rows of the report's Prediction table: corrected statistics first, the paper's labelled."""
    header = ["method", "reference", "AUC [95% CI, corrected]", "95% CI as in Haberl et al.",
              "ΔAUC [95% CI, corrected]", "t (corrected)", "p (corrected t)", "p (corrected t, Holm)",
              "test as in Haberl et al.", "p as in Haberl et al.", "p (DeLong, pooled)", "p (DeLong, Holm)",
              "median p (DeLong per split)", "pooled AUC", "DeLong 95% CI",
              f"bootstrap 95% CI ({n_bootstrap} resamples)"]
    rows = []
    for r in summary:
        delta = "–"
        if r.get("delta_auc") is not None:
            ci = interval_text(r, "delta_auc_ci_low", "delta_auc_ci_high", "+.3f", ", ")
            delta = f"{fmt(r['delta_auc'], '+.3f')} {ci}"
        rows.append([
            r["method"], r["reference"], auc_text(r), interval_text(r, "auc_ci_low_haberl", "auc_ci_high_haberl"),
            delta,
            fmt(r.get("t_corrected"), "+.2f"), fmt(r.get("p_paired"), "p"), fmt(r.get("p_paired_holm"), "p"),
            fmt(r.get("paired_test_haberl"), None), fmt(r.get("p_paired_haberl"), "p"),
            fmt(r.get("p_delong"), "p"), fmt(r.get("p_delong_holm"), "p"), fmt(r.get("p_delong_split_median"), "p"),
            fmt(r.get("auc_pooled"), ".3f"), interval_text(r, "auc_pooled_delong_ci_low", "auc_pooled_delong_ci_high"),
            interval_text(r, "auc_pooled_boot_ci_low", "auc_pooled_boot_ci_high"),
        ])
    return header, rows


def _md_cell(text: str) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


def render_markdown(blocks: list[tuple]) -> str:
    out = []
    for block in blocks:
        kind = block[0]
        if kind == "h1":
            out.append(f"# {block[1]}\n")
        elif kind == "h2":
            out.append(f"## {block[1]}\n")
        elif kind == "p":
            out.append(f"{block[1]}\n")
        elif kind == "table":
            header, rows = block[1], block[2]
            out.append("| " + " | ".join(_md_cell(h) for h in header) + " |")
            out.append("|" + "---|" * len(header))
            out += ["| " + " | ".join(_md_cell(c) for c in row) + " |" for row in rows]
            out.append("")
        elif kind == "fig":
            out.append(f"![{block[2]}]({block[1]})\n")
    return "\n".join(out) + "\n"


def _inline(text: str) -> str:
    import re

    text = html.escape(text)
    text = re.sub(r"\*\*(.+?)\*\*", r"<b>\1</b>", text)
    return re.sub(r"`(.+?)`", r"<code>\1</code>", text)


def render_html(blocks: list[tuple], root: Path) -> str:
    """A single HTML file: figures embedded as base64 PNG, no external resources."""
    parts = [
        "<!DOCTYPE html><html><head><meta charset='utf-8'><title>harmkit bench report</title><style>"
        "body{font-family:system-ui,sans-serif;max-width:1200px;margin:2em auto;padding:0 1em;color:#222}"
        "table{border-collapse:collapse;margin:1em 0;font-size:13px}th,td{border:1px solid #ccc;padding:3px 7px;text-align:right}"
        "th{background:#f0f0f0}td:first-child,td:nth-child(2){text-align:left}img{max-width:100%;border:1px solid #eee;margin:.5em 0}"
        "code{background:#f5f5f5;padding:0 3px}figure{margin:1em 0}figcaption{font-size:12px;color:#555}"
        "</style></head><body>"
    ]
    for block in blocks:
        kind = block[0]
        if kind == "h1":
            parts.append(f"<h1>{html.escape(block[1])}</h1>")
        elif kind == "h2":
            parts.append(f"<h2>{html.escape(block[1])}</h2>")
        elif kind == "p":
            parts.append(f"<p>{_inline(block[1])}</p>")
        elif kind == "table":
            header, rows, ident = block[1], block[2], block[3]
            parts.append(f"<table id='{ident}'><tr>" + "".join(f"<th>{html.escape(str(h))}</th>" for h in header) + "</tr>")
            for row in rows:
                parts.append("<tr>" + "".join(f"<td>{html.escape(str(c))}</td>" for c in row) + "</tr>")
            parts.append("</table>")
        elif kind == "fig":
            path = root / block[1]
            data = base64.b64encode(path.read_bytes()).decode() if path.is_file() else ""
            parts.append(f"<figure><img alt='{html.escape(block[2])}' src='data:image/png;base64,{data}'><figcaption>{html.escape(block[2])}</figcaption></figure>")
    parts.append("</body></html>")
    return "\n".join(parts)


def print_summary(ctx, console) -> None:
    """The summary in the terminal (rich): one row per method and reference.

    Two tables (prediction; harmonization effects) so that it stays readable
    in an 80-column terminal; columns without any number are left out. The
    prediction table shows the corrected CI and p-values first and the
    paper's (Haberl et al.) in labelled columns.
    """
    from rich.table import Table

    specs = {key: spec for key, _, spec in SUMMARY_COLUMNS}
    specs.update({"auc_haberl": None, "paired_test_haberl": None})
    short = {"auc": "AUC [95% CI]", "p_paired": "p", "p_delong": "p DeLong", "auc_haberl": "AUC [95% CI]",
             "p_paired_haberl": "p", "paired_test_haberl": "test", "overlap_voi": "Δovl VOI",
             "overlap_ref": "Δovl ref", "ssim": "SSIM", "psnr": "PSNR", "cf_ssim": "SSIM truth", "cf_feature_ccc": "CCC truth",
             "gap_closed": "gap closed", "qc_flagged": "QC flag"}
    groups = (
        ("prediction", ["auc", "p_paired", "p_delong", "gap_closed"],
         "95% CI and p vs none: corrected resampled t over the splits (Nadeau & Bengio 2003). "
         "Holm-adjusted p-values: report.md."),
        ("prediction as in Haberl et al. (uncorrected, for comparison with the paper)",
         ["auc_haberl", "p_paired_haberl", "paired_test_haberl"],
         "Student-t CI over the splits; Shapiro-Wilk, then paired t or Wilcoxon. The splits overlap: too optimistic."),
        ("harmonization: feature overlap (pp), image change, agreement with truth, QC",
         ["overlap_voi", "overlap_ref", "ssim", "psnr", "cf_ssim", "cf_feature_ccc", "qc_flagged"], None),
    )
    rows = summary_rows(ctx)
    for title, wanted, caption in groups:
        cells = {key: [cell_text(row, key, specs[key]) for row in rows] for key in wanted}
        keep = [key for key in wanted if any(c != "–" for c in cells[key])]
        if not keep:
            continue
        table = Table(title=f"harmkit bench: {title}", caption=caption, caption_justify="left", show_lines=False,
                      padding=(0, 1))
        table.add_column("method", no_wrap=True)
        table.add_column("reference", no_wrap=True)
        for key in keep:
            table.add_column(short[key], justify="right", overflow="fold")
        for i, row in enumerate(rows):
            table.add_row(row["method"], row["reference"], *(cells[key][i] for key in keep))
        console.print(table)
    for name, result in ctx.results.items():
        if result.skipped:
            console.print(f"[yellow]{name} skipped:[/] {result.skipped}")
