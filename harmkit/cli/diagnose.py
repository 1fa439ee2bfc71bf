"""``harmkit diagnose``: how do the site groups of a cohort differ?"""

from __future__ import annotations

import click


def _spacing(ctx, param, value):
    if value is None:
        return None
    try:
        parts = [float(v) for v in value.replace("x", ",").split(",")]
    except ValueError:
        parts = []
    if len(parts) == 1:
        parts = parts * 3
    if len(parts) != 3 or min(parts) <= 0:
        raise click.BadParameter(f"{value!r}: give one spacing in mm (e.g. 4) or three, x,y,z (e.g. 3.52,3.52,3.27)")
    return tuple(parts)


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
    help="VOI whose features feed the site classifier and whose edge gives the resolution (mask_<VOI>).",
)
@click.option(
    "--out",
    required=True,
    type=click.Path(file_okay=False),
    help="Folder for diagnostics.json, texture_per_scan.csv and the figures.",
)
@click.option(
    "--tissue-voi",
    default=None,
    help="Homogeneous-tissue mask for noise statistics, or 'auto' to find one per scan "
    "[default: reference if every scan has it, else auto].",
)
@click.option(
    "--features",
    "features_csv",
    type=click.Path(dir_okay=False, exists=True),
    help="Features of --voi already extracted (harmkit extract); default: extract them (radiomics, cached).",
)
@click.option(
    "--extractor",
    "extractor_name",
    default="radiomics",
    show_default=True,
    help="Feature extractor plugin.",
)
@click.option(
    "--spacing",
    callback=_spacing,
    default=None,
    help="Grid of the patch classifier in mm, one value or x,y,z [default: the cohort's median spacing].",
)
@click.option(
    "--patch-size",
    type=click.IntRange(min=8),
    default=32,
    show_default=True,
    help="Patch edge in voxels.",
)
@click.option(
    "--patches-per-scan",
    type=click.IntRange(min=1),
    default=16,
    show_default=True,
    help="Random patches per scan.",
)
@click.option(
    "--folds",
    type=click.IntRange(min=2),
    default=5,
    show_default=True,
    help="Cross-validation folds of both classifiers.",
)
@click.option(
    "--seed",
    type=click.IntRange(min=0),
    default=0,
    show_default=True,
    help="Seed of patches and folds.",
)
@click.option(
    "--jobs",
    type=click.IntRange(min=1),
    default=None,
    help="Worker processes [default: every core].",
)
@click.option(
    "--cache-dir",
    "--cache",
    "cache_dir",
    type=click.Path(file_okay=False),
    help="Cache folder [default: $HARMKIT_CACHE, else ~/.cache/harmkit]; features go to its features/ part.",
)
@click.option("--no-cache", is_flag=True, help="Do not read or write the feature cache.")
def diagnose(
    manifest,
    voi,
    out,
    tissue_voi,
    features_csv,
    extractor_name,
    spacing,
    patch_size,
    patches_per_scan,
    folds,
    seed,
    jobs,
    cache_dir,
    no_cache,
) -> None:
    """Measure site effects: can the site groups be told apart, and how do their images differ?

    Prints, per site group, the noise SD, COV and noise correlation length in
    homogeneous tissue and the effective resolution at the VOI's edge, then
    the cross-validated AUC of a classifier that predicts the site group
    from the VOI's features (0.5 = indistinguishable) and the held-out
    accuracy of a classifier on image-patch texture. docs/diagnostics.md
    explains every number.

    \b
    Examples:
      harmkit diagnose --cohort sim/manifest.csv --voi lesion --out diag
      harmkit diagnose --cohort sts.csv --voi lesion --out diag --tissue-voi auto --patch-size 16
      harmkit diagnose --cohort m.csv --voi lesion --out diag --features lesion.csv
    """
    import time

    from rich.console import Console

    from ..cache import features_dir
    from ..diagnostics import diagnose as run_diagnose
    from ..errors import HarmkitError
    from ..plugins import get_extractor

    started = time.perf_counter()
    extractor = None
    if not features_csv:
        try:
            extractor = get_extractor(extractor_name)
        except TypeError as exc:
            raise HarmkitError(f"--extractor {extractor_name}: cannot be created ({exc})") from None
    result = run_diagnose(
        manifest,
        voi=voi,
        out=out,
        tissue_voi=tissue_voi,
        features=features_csv,
        extractor=extractor,
        spacing=spacing,
        patch_size=patch_size,
        patches_per_scan=patches_per_scan,
        folds=folds,
        seed=seed,
        jobs=jobs,
        cache_dir=False if no_cache else features_dir(cache_dir),
    )
    console = Console(width=max(Console().width, 120))
    console.print(result.table())
    for line in result.lines():
        console.print(line, highlight=False)
    console.print(
        f"wrote {out}/diagnostics.json, texture_per_scan.csv and figures in {time.perf_counter() - started:.0f} s",
        highlight=False,
    )
