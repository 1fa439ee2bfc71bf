"""``harmkit bench``: benchmark harmonization methods on one cohort, with one report."""

from __future__ import annotations

import click


@click.command()
@click.option(
    "--methods",
    "-m",
    default=None,
    help=(
        "Comma-separated methods, e.g. gan,combat,gan+combat (the baseline 'none' is always added). Default: "
        "gan,combat,gan+combat."
    ),
)
@click.option(
    "--cohort",
    type=click.Path(dir_okay=False),
    default=None,
    help="Manifest CSV of a real cohort. Default: simulate --preset (once, cached).",
)
@click.option(
    "--preset",
    type=click.Choice(["headneck", "lung"]),
    default=None,
    help="Simulated cohort when no --cohort is given. Default: headneck.",
)
@click.option(
    "--reference",
    default=None,
    help="Reference site group (or a site of it), or 'all': every site group serves once (default).",
)
@click.option(
    "--site-groups",
    "site_groups",
    multiple=True,
    help="Merge sites into one group, e.g. CHUM+HMR (repeatable).",
)
@click.option(
    "--voi",
    default=None,
    help="Mask used for features and prediction. Default: lesion.",
)
@click.option(
    "--reference-voi",
    "reference_voi",
    default=None,
    help="Healthy reference-tissue mask for reproducibility. Default: reference.",
)
@click.option(
    "--folds",
    type=int,
    default=None,
    help="Number of stratified Monte Carlo splits. Default: 100.",
)
@click.option(
    "--test-size",
    "test_size",
    type=float,
    default=None,
    help="Test fraction of each split. Default: 0.2.",
)
@click.option(
    "--seed",
    type=int,
    default=None,
    help="Seed of the simulation, the splits and the models. Default: 0.",
)
@click.option(
    "--profile",
    type=click.Choice(["quick", "paper"]),
    default=None,
    help="quick: small models and cohort (minutes on a laptop); paper: the published sizes.",
)
@click.option(
    "--fit-on",
    "fit_on",
    type=click.Choice(["train", "all"]),
    default=None,
    help=(
        "Fit feature stages (ComBat) on each split's training rows (default, leakage-free) or on all rows (the paper)."
    ),
)
@click.option(
    "--jobs",
    "-j",
    type=int,
    default=None,
    help="Worker processes for per-scan work. Default: every core.",
)
@click.option(
    "--scheduler",
    default=None,
    help="Dask scheduler address (tcp://HOST:8786) or 'local'.",
)
@click.option(
    "--out",
    "-o",
    type=click.Path(file_okay=False),
    default=None,
    help="Output folder. Default: harmkit-runs/bench-<preset>.",
)
@click.option(
    "--cache-dir",
    "cache_dir",
    type=click.Path(file_okay=False),
    default=None,
    help=(
        "Cache folder. Default: the one cache of every command ($HARMKIT_CACHE, else "
        "$XDG_CACHE_HOME/harmkit, else ~/.cache/harmkit; see 'harmkit cache info')."
    ),
)
@click.option(
    "--subjects-per-site",
    "subjects_per_site",
    type=int,
    default=None,
    help="Simulated cohorts: subjects per site (overrides the preset size).",
)
@click.option(
    "--config",
    "config_file",
    type=click.Path(dir_okay=False),
    default=None,
    help="TOML file with any of these options (command-line options win).",
)
@click.option(
    "--param",
    "params",
    multiple=True,
    help=(
        "Plugin parameter, e.g. cyclegan.steps=200 (repeatable); unknown plugins, parameters or wrong types are errors."
    ),
)
@click.option(
    "--nan-to-zero",
    "nan_to_zero",
    is_flag=True,
    default=None,
    help="Read NaN and infinite voxels as 0 SUV instead of refusing the scan.",
)
@click.option("--quiet", "-q", is_flag=True, help="No progress output.")
def bench(config_file, params, quiet, site_groups, **options) -> None:
    """Benchmark harmonization methods on equal terms and write a report.

    The cohort is validated first (every scan's data read; see 'harmkit
    validate'). Every method runs through the same protocol: image stages fitted once and
    reused for every reference, features from the same VOIs, the same
    stratified Monte Carlo splits, feature stages fitted on training rows.
    Outputs: a terminal table, OUT/report.html (self-contained), OUT/report.md,
    OUT/results.json and OUT/tables/*.csv. Reruns reuse the cache, whatever
    their --out: 'harmkit cache info' shows its size, 'harmkit cache clear'
    empties it.

    \b
    Examples:
      harmkit bench --methods gan,combat,gan+combat
      harmkit bench --cohort data/manifest.csv --methods combat,histmatch --voi tumour
      harmkit bench --config bench.toml --folds 10
    """
    from ..bench import run_bench
    from ..bench.config import load_config
    from ..errors import HarmkitError
    from ..plugins import parse_param_value

    parsed: dict = {}
    for text in params:
        if "=" not in text or "." not in text.split("=", 1)[0]:
            raise HarmkitError(f"--param {text!r}: expected PLUGIN.NAME=VALUE, e.g. cyclegan.steps=200")
        target, value = text.split("=", 1)
        plugin, name = (part.strip() for part in target.split(".", 1))
        if not plugin or not name:
            raise HarmkitError(f"--param {text!r}: expected PLUGIN.NAME=VALUE, e.g. cyclegan.steps=200")
        parsed.setdefault(plugin, {})[name] = parse_param_value(value)
    options["site_groups"] = list(site_groups) or None
    if quiet:
        options["progress"] = False
    config = load_config(config_file, options)
    if parsed:
        from ..plugins import check_plugin_params

        merged = {k: dict(v) for k, v in config.params.items()}
        for plugin, values in check_plugin_params(parsed).items():  # before any work: unknown names, wrong types
            merged.setdefault(plugin, {}).update(values)
        config.params = merged
    run_bench(config)
