"""``harmkit simulate``: write a simulated multicenter PET cohort with known ground truth."""

from __future__ import annotations

import click


@click.command()
@click.option(
    "--preset",
    default="headneck",
    show_default=True,
    type=click.Choice(["headneck", "lung"]),
    help="Study to mirror: headneck (CHUM, HGJ, HMR) or lung (TUB, BUD-VPHD, BUD-SharpIR).",
)
@click.option(
    "--out",
    "out",
    required=True,
    type=click.Path(file_okay=False),
    help="Output folder (must not exist or be empty).",
)
@click.option(
    "--seed",
    default=0,
    show_default=True,
    type=click.IntRange(min=0),
    help="Random seed; same seed, byte-identical files.",
)
@click.option(
    "--subjects-per-site",
    type=click.IntRange(min=1),
    default=None,
    help="Subjects at every site instead of the paper's counts (site prevalences kept).",
)
@click.option(
    "--size",
    default="quick",
    show_default=True,
    type=click.Choice(["quick", "full"]),
    help="quick: paper voxel sizes, matrices cropped to the field of view; full: the paper's matrices.",
)
@click.option(
    "--jobs",
    type=click.IntRange(min=1),
    default=None,
    help="Worker processes [default: every core].",
)
@click.option(
    "--no-counterfactuals",
    is_flag=True,
    help="Skip rendering every subject through every site.",
)
@click.option(
    "--no-noise",
    is_flag=True,
    help="Noise-free images (for checks of the scanner models).",
)
@click.option(
    "--force",
    is_flag=True,
    help="Replace an output folder that harmkit simulate wrote before (it holds simulation.json); never another.",
)
def simulate(
    preset,
    out,
    seed,
    subjects_per_site,
    size,
    jobs,
    no_counterfactuals,
    no_noise,
    force,
) -> None:
    """Simulate a multicenter PET cohort: phantoms rendered through each site's scanner model.

    Writes manifest.csv (the scans), counterfactuals.csv (every subject through every site),
    truth.csv and truth/ (latent lesion biology, true SUV maps) and simulation.json (every
    parameter and the seed). Files appear only when the whole cohort is written.

    \b
    Examples:
      harmkit simulate --preset headneck --out sim_hn
      harmkit simulate --preset lung --out sim_lung --subjects-per-site 20 --seed 7 --jobs 2
    """
    import time
    from pathlib import Path

    from rich.console import Console
    from rich.table import Table

    from ..atomic import check_output_folder
    from ..simulation import simulate as run_simulation

    # --force replaces only a simulated cohort: never a folder of the user's own files
    check_output_folder(
        Path(out),
        [],
        "simulate",
        overwrite=force,
        option="--out",
        overwrite_option="--force",
        accept=lambda folder: (folder / "simulation.json").is_file() and (folder / "manifest.csv").is_file(),
    )
    started = time.perf_counter()
    manifest = run_simulation(
        preset=preset,
        out=out,
        seed=seed,
        subjects_per_site=subjects_per_site,
        size=size,
        jobs=jobs,
        counterfactuals=not no_counterfactuals,
        noise=not no_noise,
        force=force,
    )
    elapsed = time.perf_counter() - started
    import json

    params = json.loads((manifest.parent / "simulation.json").read_text())
    table = Table(title=f"simulated {preset} cohort (seed {seed}, {size})")
    for column in ("site", "site group", "scans", "outcome=1", "expected", "grids"):
        table.add_column(column)
    for site in params["preset"]["sites"]:
        name = site["name"]
        grids = ", ".join(g["protocol"] for g in params["site_grids"][name])
        table.add_row(
            name,
            site["site_group"],
            str(params["counts"][name]),
            str(params["outcome_counts"][name]),
            f"{params['expected_outcome_counts'][name]:.1f}",
            grids,
        )
    console = Console()
    console.print(table)
    console.print(f"wrote {manifest} in {elapsed:.0f} s")
