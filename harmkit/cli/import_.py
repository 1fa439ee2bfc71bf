"""``harmkit import``: a DICOM tree in, a cohort harmkit reads out (SUV NIfTI, masks, manifest.csv)."""

from __future__ import annotations

import click


@click.command(name="import")
@click.argument("dicom_dir", type=click.Path(file_okay=False))
@click.option(
    "--out",
    "-o",
    required=True,
    type=click.Path(file_okay=False),
    help="Output folder for manifest.csv, images/ and import.json (new, or an earlier import with --overwrite).",
)
@click.option(
    "--roi",
    "rois",
    multiple=True,
    metavar="PATTERN[=MASK]",
    help="RTSTRUCT ROI / SEG segment names to import as mask MASK (glob, case-insensitive), e.g. "
    "--roi 'GTV*=lesion' (repeatable). Without =MASK the mask is named after the pattern.",
)
@click.option(
    "--merge-rois",
    is_flag=True,
    help="Several ROIs matching one --roi become their union (else an error).",
)
@click.option(
    "--site-map",
    type=click.Path(dir_okay=False),
    help="CSV naming sites from header values: a 'site' column (optional 'site_group') and match columns "
    "such as institution, model, reconstruction, series_description (glob patterns).",
)
@click.option(
    "--pairs",
    is_flag=True,
    help="Give PET series of one PatientID at different sites a common pair_id (traveling subject or "
    "phantom, test-retest, two reconstructions).",
)
@click.option(
    "--skip-broken",
    is_flag=True,
    help="Leave out scans with a problem (broken file, missing series or ROI) and import the rest; "
    "default: any problem stops the import and nothing is written.",
)
@click.option(
    "--overwrite",
    is_flag=True,
    help="Replace --out if an earlier harmkit import wrote it.",
)
@click.option(
    "--jobs",
    type=click.IntRange(min=0),
    default=1,
    show_default=True,
    help="Worker processes reading headers and converting series (0: every core).",
)
def import_dicom(dicom_dir, out, rois, merge_rois, site_map, pairs, skip_broken, overwrite, jobs) -> None:
    """Import PET DICOM series, with RTSTRUCT/SEG masks, as a cohort.

    Walks DICOM_DIR (any layout), converts every attenuation-corrected PET
    series to SUVbw NIfTI, rasterizes the --roi ROIs of the RTSTRUCTs and
    SEGs that belong to each series onto its grid, and writes manifest.csv
    with site (InstitutionName, or --site-map), scanner, reconstruction,
    kernel, matrix, voxel size, injected dose, uptake time, weight, age and
    sex. Every problem is listed at once, naming the file and the fix; the
    output is complete or absent. docs/dicom-import.md explains every rule.

    \b
    Examples:
      harmkit import dicom/ --out cohort --roi 'GTV*=lesion'
      harmkit import dicom/ --out cohort --roi 'GTVp=lesion' --roi 'Liver=liver' --site-map sites.csv
      harmkit import phantom-tour/ --out phantom --roi 'Sphere 37*=sphere' --pairs
      harmkit validate cohort/manifest.csv --table cohort/acquisition.csv
    """
    import sys
    import time

    from rich.console import Console
    from rich.table import Table

    from ..importing import import_dicom as run_import

    started = time.perf_counter()
    console = Console(stderr=True, highlight=False)
    result = run_import(
        dicom_dir,
        out,
        rois=rois,
        site_map=site_map,
        pairs=pairs,
        merge_rois=merge_rois,
        skip_broken=skip_broken,
        overwrite=overwrite,
        jobs=None if jobs == 0 else jobs,
        progress=console.is_terminal,
    )
    summary = Table(title="harmkit import", show_header=False)
    summary.add_row(
        "read",
        f"{result.files} DICOM files" + (f", {result.not_dicom} other files skipped" if result.not_dicom else ""),
    )
    summary.add_row(
        "scans",
        f"{result.scans} PET series imported"
        + (f", {len(result.skipped)} problem(s) skipped" if result.skipped else ""),
    )
    if result.roi_names:
        common = sorted(result.roi_names.items(), key=lambda kv: (-kv[1], kv[0]))[:12]
        summary.add_row(
            "ROI names",
            ", ".join(f"{name} ({n})" for name, n in common) + (" ..." if len(result.roi_names) > 12 else ""),
        )
    summary.add_row("manifest", str(result.manifest))
    summary.add_row("time", f"{time.perf_counter() - started:.1f} s")
    console.print(summary)
    for note in result.notes:
        console.print(f"note: {note}", markup=False)
    console.print(f"next: harmkit validate {result.manifest}", markup=False)
    sys.stdout.flush()
