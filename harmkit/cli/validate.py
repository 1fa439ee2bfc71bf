"""``harmkit validate``: check a manifest and print its acquisition table (Table 1). Writes only --table."""

from __future__ import annotations

import sys

import click


@click.command()
@click.argument("manifest", type=click.Path(dir_okay=False))
@click.option(
    "--min-scans-per-site",
    default=2,
    show_default=True,
    type=click.IntRange(min=1),
    help="Fewest scans a site group may have (ComBat needs 2; a CycleGAN far more).",
)
@click.option(
    "--require-outcome",
    is_flag=True,
    help="Every scan needs a 0/1 outcome, and both classes must occur.",
)
@click.option(
    "--mask",
    "masks",
    multiple=True,
    metavar="NAME",
    help="A mask every scan must have (repeatable), e.g. --mask lesion.",
)
@click.option(
    "--headers-only",
    is_flag=True,
    help="Check files and geometry from headers only; skip the NaN and empty-mask checks (faster).",
)
@click.option(
    "--jobs",
    type=click.IntRange(min=0),
    default=1,
    show_default=True,
    help="Worker processes checking scans in parallel (0: every core).",
)
@click.option(
    "--scheduler",
    help="Dask scheduler address tcp://HOST:PORT, or 'local' for a local Dask cluster.",
)
@click.option(
    "--bin-width",
    type=click.FloatRange(min=0),
    default=0.25,
    show_default=True,
    help="Bin width (SUV) of the feature extraction to come: a VOI (the --mask masks, else every mask) "
    "may span at most 512 bins. 0 skips this check.",
)
@click.option(
    "--nan-to-zero",
    is_flag=True,
    help="NaN and infinite voxels are a warning (read as 0) instead of an error.",
)
@click.option(
    "--table",
    "table_csv",
    type=click.Path(dir_okay=False),
    default=None,
    help="Also write the acquisition table (Table 1: per site scanner, reconstruction, matrix, voxel "
    "size, scans, outcomes) to this CSV file.",
)
def validate(
    manifest: str,
    min_scans_per_site: int,
    require_outcome: bool,
    masks: tuple[str, ...],
    headers_only: bool,
    jobs: int,
    scheduler: str | None,
    bin_width: float,
    nan_to_zero: bool,
    table_csv: str | None,
) -> None:
    """Check a cohort: files, data, geometry, masks, subject ids, outcomes, sites.

    Reads every image and mask: damaged or truncated files, NaN voxels,
    negative or implausible SUV (with a hint about units), swapped image and
    mask columns, empty masks, grey levels of the binning to come, paired
    scans (pair_id). Prints the acquisition table (Table 1 of a multicenter
    study: per site and protocol the scanner, reconstruction, kernel, scans,
    matrix, voxel size and outcome counts; --table writes it as CSV) and
    every problem, one line each, naming the manifest row and subject.
    Exits with status 1 when there is an error (warnings alone exit 0).
    Nothing else is written. The same checks run before extract, bench,
    train and harmonize (docs/bad-inputs.md).

    \b
    Example:
      harmkit validate data/manifest.csv --mask lesion --require-outcome
      harmkit validate big/manifest.csv --headers-only --jobs 0
      harmkit validate cohort/manifest.csv --table cohort/table1.csv
    """
    from rich.console import Console
    from rich.table import Table

    from ..validation import validate_manifest

    console = Console(highlight=False)
    if not console.is_terminal:  # piped or captured: do not squeeze the table into 80 columns
        console = Console(highlight=False, width=max(console.width, 120))
    report = validate_manifest(
        manifest,
        min_scans_per_site=min_scans_per_site,
        require_outcome=require_outcome,
        masks=list(masks),
        check_voxels=not headers_only,
        progress=console.is_terminal,
        jobs=None if jobs == 0 else jobs,
        scheduler=scheduler,
        nan_to_zero=nan_to_zero,
        bin_width=bin_width or None,
        binned_masks=list(masks) or None,
    )
    summary = report.acquisition_table()
    if table_csv:
        from ..atomic import atomic_file, check_not_an_input

        check_not_an_input(table_csv, report.cohort.input_files(), option="--table")
        with atomic_file(table_csv) as tmp:
            summary.to_csv(tmp, index=False)
    table = Table(title=f"{manifest}: {len(report.cohort)} scans, {len(report.cohort.sites)} sites")
    with_groups = any(s.site_group and s.site_group != s.site for s in report.cohort)
    with_outcome = any(s.outcome is not None for s in report.cohort)
    with_unreadable = bool(len(summary) and summary["unreadable"].sum())
    optional = [c for c in ("scanner", "reconstruction", "kernel") if len(summary) and summary[c].astype(bool).any()]
    columns = [
        "site",
        *(["site group"] if with_groups else []),
        *optional,
        "scans",
        "matrix",
        "slices",
        "voxel size (mm)",
    ]
    columns += (["outcome 1/0/missing"] if with_outcome else []) + (["unreadable"] if with_unreadable else [])
    for column in columns:
        table.add_column(
            column,
            justify="right" if column in ("scans", "unreadable") else "left",
            no_wrap=column not in optional,
        )
    for row in summary.itertuples(index=False):
        cells = [
            row.site,
            *([row.site_group] if with_groups else []),
            *(getattr(row, c) for c in optional),
            str(row.scans),
            row.matrix,
            row.slices,
            row.voxel_mm,
        ]
        cells += [f"{row.outcome_1}/{row.outcome_0}/{row.outcome_missing}"] if with_outcome else []
        cells += [str(row.unreadable)] if with_unreadable else []
        table.add_row(*cells)
    console.print(table)
    if table_csv:
        console.print(f"acquisition table written to {table_csv}")
    for problem in report.problems:
        style = "bold red" if problem.severity == "error" else "yellow"
        console.print(f"[{style}]{problem.severity}:[/] ", end="")
        console.print(str(problem), markup=False, soft_wrap=True)
    n_errors, n_warnings = len(report.errors), len(report.warnings)
    if n_errors:
        console.print(
            f"[bold red]{n_errors} error(s)[/], {n_warnings} warning(s): fix the errors above, then run harmkit "
            "validate again"
        )
        sys.exit(1)
    console.print(f"[green]OK[/]: {len(report.cohort)} scans, {n_warnings} warning(s)")
