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
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..interfaces import ReportFigure, ReportTable, SummaryColumn
from .formatting import auc_text, cell_text, fmt, interval_text  # noqa: F401 - the report's number formats


@dataclass
class BenchResult:
    """Where a bench wrote its outputs and the numbers it found."""

    out_dir: Path
    results: dict[str, Any]

    @property
    def report(self) -> Path:
        return self.out_dir / "report.html"


def summary_columns(ctx) -> list[SummaryColumn]:
    """The summary table's columns: those each evaluator declared on its result, in the evaluators' order."""
    columns: list[SummaryColumn] = []
    seen: set[str] = set()
    for result in ctx.results.values():
        if result.skipped:
            continue
        for column in result.columns:
            if column.key not in seen:
                seen.add(column.key)
                columns.append(column)
    return columns


def summary_rows(ctx) -> list[dict[str, Any]]:
    """One row per method and reference: the numbers of every evaluator, merged."""
    from .context import row_key

    rows = []
    for method in ctx.methods:
        for ref in ctx.references:
            row: dict[str, Any] = {"method": method.label, "reference": ref}
            for result in ctx.results.values():
                if not result.skipped:
                    row.update(result.summary.get("by_method", {}).get(row_key(method.label, ref), {}))
            rows.append(row)
    return rows


def _cells(row: dict[str, Any], columns: list[SummaryColumn]) -> list[str]:
    return [
        row["method"],
        row["reference"],
        *(cell_text(row, c.key, c.format) for c in columns),
    ]


def _versions(ctx) -> dict[str, Any]:
    from importlib import metadata

    from .. import __version__
    from ..plugins import get_registry

    versions: dict[str, Any] = {
        "harmkit": __version__,
        "python": platform.python_version(),
    }
    for dist in (
        "numpy",
        "scipy",
        "pandas",
        "scikit-learn",
        "scikit-image",
        "SimpleITK",
        "torch",
        "pyradiomics",
        "neuroHarmonize",
    ):
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
    out_dir = ctx.out_dir
    tables_dir = staging / "tables"
    tables_dir.mkdir(exist_ok=True)
    rows = summary_rows(ctx)
    evaluators: dict[str, Any] = {}
    for name, result in ctx.results.items():
        entry: dict[str, Any] = {
            "skipped": result.skipped,
            "summary": result.summary,
            "tables": {},
            "figures": {},
            "columns": [{"key": c.key, "title": c.title, "format": c.format} for c in result.columns],
        }
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
        # a parameter may be infinite (--param cyclegan.filter_min_blur=-inf): written as the text --param reads
        "config": _finite_floats(ctx.config.to_dict(), infinity_as_text=True),
        "cohort": cohort,
        "simulation": cohort_info.get("simulation"),
        "versions": _versions(ctx),
        "seeds": {
            "seed": ctx.config.seed,
            "splits_digest": ctx.splits.digest() if ctx.splits else None,
        },
        "methods": [m.label for m in ctx.methods],
        "references": ctx.references,
        "site_groups": ctx.groups,
        "vois": ctx.vois,
        "feature_columns": {voi: ctx.feature_columns(voi) for voi in ctx.vois},
        "notes": ctx.notes,
        "skipped": {name: r.skipped for name, r in ctx.results.items() if r.skipped},
        "summary": rows,
        "summary_columns": [{"key": c.key, "title": c.title, "format": c.format} for c in summary_columns(ctx)],
        "evaluators": evaluators,
        "timings_s": {k: round(v, 2) for k, v in timings.items()},
        "cache": {
            "root": str(ctx.cache.root),
            "hits": ctx.cache.hits,
            "misses": ctx.cache.misses,
        },
    }
    blocks = _report_blocks(ctx, results)
    (staging / "report.md").write_text(render_markdown(blocks))
    (staging / "report.html").write_text(render_html(blocks, staging))
    results = _finite_floats(results)
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


def _finite_floats(value: Any, infinity_as_text: bool = False) -> Any:
    """``value`` with every NaN or infinite float as None (strict JSON has neither), or infinities as "inf"/"-inf"."""
    if isinstance(value, float) and not math.isfinite(value):
        if infinity_as_text and not math.isnan(value):
            return "inf" if value > 0 else "-inf"
        return None
    if isinstance(value, dict):
        return {k: _finite_floats(v, infinity_as_text) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite_floats(v, infinity_as_text) for v in value]
    return value


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
    b.append(
        (
            "p",
            f"Cohort: {cohort.get('source')} — {cohort['n_scans']} scans, manifest `{cohort['manifest']}`. "
            f"Site groups: " + "; ".join(f"{g} ({', '.join(s)})" for g, s in cohort["site_groups"].items()) + ".",
        )
    )
    b.append(
        (
            "p",
            f"Methods: {', '.join(results['methods'])}. References (each site group serves once): "
            f"{', '.join(ctx.references)}. VOIs: {', '.join(ctx.vois)}. "
            + (
                f"Splits: {cfg.folds} stratified Monte Carlo {1 - cfg.test_size:.0%}/{cfg.test_size:.0%}, seed "
                f"{cfg.seed}, the same for every method (digest {results['seeds']['splits_digest']}). Feature stages "
                "(ComBat) fitted on "
                + (
                    "the training rows of each split (leakage-free)."
                    if cfg.fit_on == "train"
                    else "all rows, as in the paper (leaks test rows into the harmonization)."
                )
                if ctx.splits is not None
                else "No splits: prediction was skipped (see below). Feature stages fitted on all rows."
            ),
        )
    )
    b.append(
        (
            "p",
            f"harmkit {results['versions']['harmkit']}, created {results['created']}, profile `{cfg.profile}`, total "
            f"time {results['timings_s'].get('total', 0):.0f} s. "
            "Every number below is in `results.json`; tables in `tables/*.csv`. docs/bench.md explains each number.",
        )
    )
    for name in ctx.results:
        if _placement(name) == "headline":
            b += _section_blocks(ctx, results, name)
    b.append(("h2", "Summary"))
    columns = summary_columns(ctx)
    header = ["method", "reference", *(c.title for c in columns)]
    b.append(("table", header, [_cells(r, columns) for r in results["summary"]], "summary"))
    legend = [f"{c.title}: {c.description}" for c in columns if c.description]
    if legend:
        b.append(
            (
                "p",
                " ".join(text if text.endswith(".") else text + "." for text in legend),
            )
        )
    if results["skipped"]:
        b.append(("h2", "Skipped"))
        for name, why in results["skipped"].items():
            b.append(("p", f"**{name}** was skipped: {why}"))
    for note in results["notes"]:
        b.append(("p", f"Note: {note}"))
    for name in ctx.results:
        if _placement(name) == "section":
            b += _section_blocks(ctx, results, name)
    b.append(("h2", "Timings"))
    b.append(
        (
            "table",
            ["stage", "seconds"],
            [[k, f"{v:.1f}"] for k, v in results["timings_s"].items()],
            "timings",
        )
    )
    return b


def _evaluator_class(name: str):
    from ..plugins import get_registry

    info = {p.name: p for p in get_registry().all() if p.kind == "evaluator"}.get(name)
    return info.cls if info is not None else None


def _placement(name: str) -> str:
    return getattr(_evaluator_class(name), "placement", "section")


def _section_blocks(ctx, results: dict, name: str) -> list[tuple]:
    """An evaluator's report section: its title, then its blocks; figures it did not place come last."""
    result = ctx.results[name]
    if result.skipped or not (result.report or result.figures):
        return []
    b: list[tuple] = [("h2", getattr(_evaluator_class(name), "title", "") or f"Evaluator {name}")]
    figures = results["evaluators"][name]["figures"]
    shown = set()
    for block in result.report:
        if isinstance(block, str):
            b.append(("p", block))
        elif isinstance(block, ReportTable):
            b.append(("table", block.header, block.rows, block.ident or name))
        elif isinstance(block, ReportFigure) and block.name in figures:
            b.append(
                (
                    "fig",
                    figures[block.name],
                    block.caption or block.name.replace("_", " "),
                )
            )
            shown.add(block.name)
    for key, path in figures.items():
        if key not in shown:
            b.append(("fig", path, key.replace("_", " ")))
    return b


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
        "table{border-collapse:collapse;margin:1em 0;font-size:13px}"
        "th,td{border:1px solid #ccc;padding:3px 7px;text-align:right}"
        "th{background:#f0f0f0}td:first-child,td:nth-child(2){text-align:left}"
        "img{max-width:100%;border:1px solid #eee;margin:.5em 0}"
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
            parts.append(
                f"<table id='{ident}'><tr>" + "".join(f"<th>{html.escape(str(h))}</th>" for h in header) + "</tr>"
            )
            for row in rows:
                parts.append("<tr>" + "".join(f"<td>{html.escape(str(c))}</td>" for c in row) + "</tr>")
            parts.append("</table>")
        elif kind == "fig":
            path = root / block[1]
            data = base64.b64encode(path.read_bytes()).decode() if path.is_file() else ""
            parts.append(
                f"<figure><img alt='{html.escape(block[2])}' "
                f"src='data:image/png;base64,{data}'><figcaption>{html.escape(block[2])}</figcaption></figure>"
            )
    parts.append("</body></html>")
    return "\n".join(parts)


def print_summary(ctx, console) -> None:
    """The summary in the terminal (rich): one row per method and reference, one table per column group.

    Groups keep each table readable in an 80-column terminal; columns
    without any number are left out. Each evaluator names its columns'
    groups and may give a group a caption.
    """
    from rich.table import Table

    rows = summary_rows(ctx)
    columns = summary_columns(ctx)
    captions: dict[str, str] = {}
    for result in ctx.results.values():
        if not result.skipped:
            captions.update(result.captions)
    groups = list(dict.fromkeys(c.group for c in columns))
    for group in groups:
        wanted = [c for c in columns if c.group == group]
        cells = {c.key: [cell_text(row, c.key, c.format) for row in rows] for c in wanted}
        keep = [c for c in wanted if any(text != "–" for text in cells[c.key])]
        if not keep:
            continue
        table = Table(
            title=f"harmkit bench: {group}",
            caption=captions.get(group),
            caption_justify="left",
            show_lines=False,
            padding=(0, 1),
        )
        table.add_column("method", no_wrap=True)
        table.add_column("reference", no_wrap=True)
        for column in keep:
            table.add_column(column.short or column.title, justify="right", overflow="fold")
        for i, row in enumerate(rows):
            table.add_row(row["method"], row["reference"], *(cells[c.key][i] for c in keep))
        console.print(table)
    for name, result in ctx.results.items():
        if result.skipped:
            console.print(f"[yellow]{name} skipped:[/] {result.skipped}")
