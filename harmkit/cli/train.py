"""``harmkit train``: fit an image harmonizer (e.g. the CycleGAN) and save it."""

from __future__ import annotations

import click


@click.command()
@click.option(
    "--method",
    default="gan",
    show_default=True,
    help="Image harmonizer name or alias (see 'harmkit plugins').",
)
@click.option(
    "--cohort",
    "manifest",
    required=True,
    type=click.Path(dir_okay=False),
    help="Manifest CSV of the training cohort.",
)
@click.option(
    "--reference",
    required=True,
    help="Reference site group (or site) the others are harmonized to.",
)
@click.option(
    "--out",
    required=True,
    type=click.Path(file_okay=False),
    help="Model folder to write.",
)
@click.option(
    "--profile",
    type=click.Choice(["quick", "paper"]),
    default=None,
    help="Hyper-parameter profile (CycleGAN; default quick).",
)
@click.option(
    "--device",
    type=click.Choice(["auto", "cpu", "cuda"]),
    default=None,
    help="Where to train (CycleGAN; default auto).",
)
@click.option("--steps", type=int, default=None, help="Training steps (overrides the profile).")
@click.option("--seed", type=int, default=None, help="Random seed.")
@click.option(
    "--param",
    "-p",
    "extra",
    multiple=True,
    metavar="KEY=VALUE",
    help="Any other hyper-parameter, e.g. -p ngf=16 -p patch_size=32,32,32 (unknown names and wrong types are errors).",
)
@click.option(
    "--nan-to-zero",
    is_flag=True,
    help="Read NaN and infinite voxels as 0 SUV instead of refusing the scan.",
)
def train(method, manifest, reference, out, profile, device, steps, seed, extra, nan_to_zero) -> None:
    """Train an image harmonizer on a cohort and save the model to --out.

    The cohort is validated first (see 'harmkit validate'). --out must be new,
    empty or a model written before; it is never a folder holding the cohort.
    Training resumes from its last checkpoint when rerun with the same
    arguments (checkpoints live in .<out>.work next to --out). One CycleGAN
    model serves both directions: harmonize towards the reference by default,
    or towards another site with 'harmkit harmonize --target-site'.

    \b
    Example:
      harmkit train --method gan --cohort data/manifest.csv --reference CHUM-HMR --out models/gan
      harmkit train --cohort data/manifest.csv --reference TUB --out models/gan-paper --profile paper --device cuda
    """
    from rich.console import Console
    from rich.table import Table

    from ..errors import HarmkitError
    from ..image_harmonization import train as train_model
    from ..interfaces import read_model_document
    from ..plugins import parse_param_value

    params = {
        k: v
        for k, v in {
            "profile": profile,
            "device": device,
            "steps": steps,
            "seed": seed,
        }.items()
        if v is not None
    }
    for item in extra:
        if "=" not in item:
            raise HarmkitError(f"--param {item!r}: expected KEY=VALUE, e.g. --param ngf=16")
        key, value = item.split("=", 1)
        params[key.strip()] = parse_param_value(value)
    path = train_model(method, manifest, reference, out, nan_to_zero=nan_to_zero, **params)
    document = read_model_document(path)
    table = Table(title="harmkit train", show_header=False)
    table.add_row("model", str(path))
    table.add_row("method", str(document.get("plugin")))
    table.add_row("reference", str(document["state"].get("reference_site_", reference)))
    for key, value in (document["state"].get("training_") or {}).items():
        table.add_row(key, str(value))
    Console().print(table)
