"""``harmkit harmonize``: apply a saved image harmonizer to a cohort."""

from __future__ import annotations

import click


@click.command()
@click.option(
    "--model",
    "model_dir",
    required=True,
    type=click.Path(file_okay=False),
    help="Model folder written by 'harmkit train'.",
)
@click.option(
    "--cohort",
    "manifest",
    required=True,
    type=click.Path(dir_okay=False),
    help="Manifest CSV of the scans to harmonize.",
)
@click.option(
    "--out",
    required=True,
    type=click.Path(file_okay=False),
    help="Output folder (harmonized NIfTI + manifest.csv).",
)
@click.option(
    "--target-site",
    default=None,
    help="Harmonize towards this site group instead of the model's reference.",
)
@click.option(
    "--overwrite",
    is_flag=True,
    help="Replace an --out that harmkit harmonize wrote before (never another folder, never one holding an input).",
)
@click.option(
    "--nan-to-zero",
    is_flag=True,
    help="Read NaN and infinite voxels as 0 SUV instead of refusing the scan.",
)
def harmonize(model_dir, manifest, out, target_site, overwrite, nan_to_zero) -> None:
    """Harmonize every scan of a cohort with a trained model; write NIfTI images and a manifest.

    The cohort is validated first (see 'harmkit validate'). Images keep their
    input grid (size, spacing, origin, direction) and SUV units; masks in the
    output manifest point to the original mask files. The output appears only
    when complete. --overwrite replaces only a folder harmkit harmonize wrote
    (it carries a .harmkit-output marker) and never one holding an input.

    \b
    Example:
      harmkit harmonize --model models/gan --cohort data/manifest.csv --out harmonized/
      harmkit extract harmonized/manifest.csv ...
    """
    from rich.console import Console

    from ..image_harmonization import harmonize as run

    path = run(
        model_dir,
        manifest,
        out,
        target_site=target_site,
        overwrite=overwrite,
        nan_to_zero=nan_to_zero,
    )
    Console().print(f"harmonized cohort written: [bold]{path}[/]")
