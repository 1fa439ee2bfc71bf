"""``harmkit harmonize``: apply a saved image harmonizer to a cohort."""

from __future__ import annotations

import click


@click.command()
@click.option("--model", "model_dir", required=True, type=click.Path(file_okay=False), help="Model folder written by 'harmkit train'.")
@click.option("--cohort", "manifest", required=True, type=click.Path(dir_okay=False), help="Manifest CSV of the scans to harmonize.")
@click.option("--out", required=True, type=click.Path(file_okay=False), help="Output folder (harmonized NIfTI + manifest.csv).")
@click.option("--target-site", default=None, help="Harmonize towards this site group instead of the model's reference.")
@click.option("--overwrite", is_flag=True, help="Replace an existing, non-empty --out.")
def harmonize(model_dir, manifest, out, target_site, overwrite) -> None:
    """Harmonize every scan of a cohort with a trained model; write NIfTI images and a manifest.

    Images keep their input grid (size, spacing, origin, direction) and SUV
    units; masks in the output manifest point to the original mask files. The
    output appears only when complete.

    \b
    Example:
      harmkit harmonize --model models/gan --cohort data/manifest.csv --out harmonized/
      harmkit extract harmonized/manifest.csv ...
    """
    from rich.console import Console

    from ..image_harmonization import harmonize as run

    path = run(model_dir, manifest, out, target_site=target_site, overwrite=overwrite)
    Console().print(f"harmonized cohort written: [bold]{path}[/]")
