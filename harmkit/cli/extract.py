"""``harmkit extract``: a feature table for every scan of a cohort."""

from __future__ import annotations

import time

import click


@click.command()
@click.option(
    "--cohort",
    "manifest",
    required=True,
    type=click.Path(dir_okay=False),
    help="Manifest CSV of the cohort.",
)
@click.option(
    "--voi",
    default="lesion",
    show_default=True,
    help="Mask to extract from (manifest column mask_<VOI>).",
)
@click.option(
    "--out",
    required=True,
    type=click.Path(dir_okay=False),
    help=(
        "Output CSV (a <name>.settings.json with every setting is written next to it). Never an input; an "
        "existing file is replaced only if harmkit extract wrote it."
    ),
)
@click.option(
    "--extractor",
    "extractor_name",
    default="radiomics",
    show_default=True,
    help="Feature extractor plugin.",
)
@click.option(
    "--params",
    "params_file",
    type=click.Path(dir_okay=False, exists=True),
    help="pyradiomics parameter file (YAML/JSON) replacing the default PET settings.",
)
@click.option(
    "--bin-width",
    type=float,
    help="Fixed bin width in SUV (radiomics; default 0.25). A VOI may span at most 512 bins (docs/bad-inputs.md).",
)
@click.option(
    "--spacing",
    type=float,
    help="Isotropic resampling in mm (radiomics; default 3; 0 keeps the native grid).",
)
@click.option(
    "--largest-component",
    is_flag=True,
    help="Keep only the largest connected component of the VOI.",
)
@click.option(
    "--sphere-in",
    "sphere_organ",
    metavar="ORGAN",
    help=(
        "Place a reference sphere in mask ORGAN of every scan (upper right part, fully inside; EANM liver VOI), write "
        "the spheres next to --out, and extract from them instead of --voi."
    ),
)
@click.option(
    "--sphere-diameter",
    type=float,
    default=30.0,
    show_default=True,
    help="Diameter of the --sphere-in sphere in mm.",
)
@click.option(
    "--jobs",
    type=int,
    help="Worker processes (default: every core; 1 runs in this process).",
)
@click.option(
    "--scheduler",
    help="Dask scheduler address tcp://HOST:PORT, or 'local' for a local Dask cluster.",
)
@click.option(
    "--cache-dir",
    "--cache",
    "cache_dir",
    type=click.Path(file_okay=False),
    help=(
        "Cache folder [default: $HARMKIT_CACHE, else $XDG_CACHE_HOME/harmkit, else ~/.cache/harmkit]; "
        "feature tables go to its features/ part, shared with bench and diagnose."
    ),
)
@click.option("--no-cache", is_flag=True, help="Do not read or write the cache.")
@click.option(
    "--keep-going",
    is_flag=True,
    help="Write the table of the scans that worked even if some failed (exit code 1).",
)
@click.option(
    "--nan-to-zero",
    is_flag=True,
    help="Read NaN and infinite voxels as 0 SUV instead of refusing the scan.",
)
def extract(
    manifest,
    voi,
    out,
    extractor_name,
    params_file,
    bin_width,
    spacing,
    largest_component,
    sphere_organ,
    sphere_diameter,
    jobs,
    scheduler,
    cache_dir,
    no_cache,
    keep_going,
    nan_to_zero,
):
    """Extract radiomic features from a VOI of every scan in a cohort.

    One row per scan (subject_id, site, site_group, then features). Every scan
    is validated first (damaged files, NaN voxels, SUV range, the VOI, grey
    levels; see 'harmkit validate'). Scans run in parallel; results are
    cached by content, so a rerun is near instant and a failing scan loses
    nothing already computed.

    \b
    Examples:
      harmkit extract --cohort data/manifest.csv --voi lesion --out features.csv
      harmkit extract --cohort data/manifest.csv --voi reference --out liver.csv --jobs 8
      harmkit extract --cohort m.csv --out f.csv --scheduler tcp://10.0.0.5:8786
      harmkit extract --cohort m.csv --out f.csv --params my_pyradiomics.yaml
      harmkit extract --cohort lung/manifest.csv --sphere-in liver --out liver.csv
    """
    from pathlib import Path

    from rich.console import Console
    from rich.table import Table

    from ..atomic import check_output_folder
    from ..cache import features_dir
    from ..errors import HarmkitError
    from ..extraction import check_feature_output, sidecar_path, write_features
    from ..extraction import extract as run_extract
    from ..manifest import load_cohort
    from ..plugins import get_extractor

    params = {}
    if params_file:
        if bin_width is not None or spacing is not None:
            raise HarmkitError("--params defines every setting; do not combine it with --bin-width or --spacing")
        params["params_file"] = params_file
    if bin_width is not None:
        params["bin_width"] = bin_width
    if spacing is not None:
        params["resampled_spacing"] = None if spacing == 0 else (spacing, spacing, spacing)
    try:
        extractor = get_extractor(extractor_name, **params)
    except TypeError as exc:
        raise HarmkitError(f"--extractor {extractor_name}: does not take these options ({exc})") from None

    started = time.perf_counter()
    cohort = load_cohort(manifest)
    inputs = [*cohort.input_files(), *([Path(params_file)] if params_file else [])]
    check_feature_output(out, inputs)  # before any work: never write over an input or a file harmkit did not write
    if sphere_organ:
        from ..validation import check_cohort
        from ..voi import add_reference_spheres

        if click.get_current_context().get_parameter_source("voi").name != "DEFAULT":
            raise HarmkitError("--sphere-in extracts from the spheres it places; do not combine it with --voi")
        spheres = Path(out).with_name(Path(out).stem + "-spheres")
        check_output_folder(
            spheres,
            inputs,
            "extract",
            overwrite=True,
            option="--sphere-in (folder)",
            accept=lambda folder: _only_spheres(folder),
        )
        cohort = check_cohort(
            cohort,
            masks=[sphere_organ],
            use_masks=[sphere_organ],
            nan_to_zero=nan_to_zero,
            jobs=jobs,
            scheduler=scheduler,
        )
        cohort = add_reference_spheres(
            cohort,
            spheres,
            organ=sphere_organ,
            name="sphere",
            diameter_mm=sphere_diameter,
        )
        voi = "sphere"
        click.echo(
            f"reference spheres ({sphere_diameter:g} mm in {sphere_organ}) written to {spheres}/ (manifest.csv lists "
            "them as mask_sphere)",
            err=True,
        )
    table = run_extract(
        cohort,
        voi=voi,
        extractor=extractor,
        jobs=jobs,
        scheduler=scheduler,
        cache_dir=False if no_cache else features_dir(cache_dir),
        largest_component=largest_component,
        on_error="keep" if keep_going else "raise",
        nan_to_zero=nan_to_zero,
    )
    elapsed = time.perf_counter() - started
    failed = table.attrs.get("failed", {})
    if len(table):
        write_features(table, out)
    console = Console(stderr=True)
    summary = Table(title="harmkit extract", show_header=False)
    summary.add_row(
        "scans",
        f"{len(table)} extracted" + (f", {len(failed)} failed" if failed else ""),
    )
    summary.add_row("features", str(table.shape[1] - 2))
    cache = table.attrs.get("cache", {})
    summary.add_row(
        "cache",
        f"{cache.get('hits', 0)} found, {cache.get('computed', 0)} computed"
        + (f" ({cache['dir']})" if cache.get("dir") else " (disabled)"),
    )
    summary.add_row("time", f"{elapsed:.1f} s")
    summary.add_row(
        "output",
        f"{out} (settings: {sidecar_path(out).name})" if len(table) else "none (no scan worked)",
    )
    console.print(summary)
    if failed:
        for message in failed.values():
            console.print(f"[red]failed:[/] {message}", highlight=False)
        raise SystemExit(1)


def _only_spheres(folder) -> bool:
    """True for a folder that holds only what --sphere-in writes (spheres and their manifest)."""
    return all(p.name == "manifest.csv" or p.name.endswith("_sphere.nii.gz") for p in folder.iterdir())
