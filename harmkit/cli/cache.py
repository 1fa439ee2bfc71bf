"""``harmkit cache``: where the one cache of every command lives, how large it is, and clearing it."""

from __future__ import annotations

import click

CACHE_DIR_HELP = "Cache folder [default: $HARMKIT_CACHE, else $XDG_CACHE_HOME/harmkit, else ~/.cache/harmkit]."


@click.group()
def cache() -> None:
    """Show or clear the cache that bench, extract and diagnose share.

    Every stage result is stored by content (inputs, parameters, code
    version), so one cache serves every run and output folder: a bench rerun
    into a new --out with nothing changed reads everything from it.

    \b
    Examples:
      harmkit cache info
      harmkit cache clear --older-than 30d
      harmkit cache clear --kind images --kind models
    """


@cache.command()
@click.option(
    "--cache-dir",
    "cache_dir",
    type=click.Path(file_okay=False),
    default=None,
    help=CACHE_DIR_HELP,
)
def info(cache_dir: str | None) -> None:
    """Entries and size per kind of the cache (feature tables, harmonized images, models, ...)."""
    from rich.console import Console
    from rich.table import Table

    from ..cache import CACHE_KINDS, cache_dir_source, cache_info

    info = cache_info(cache_dir)
    console = Console(highlight=False)
    if not console.is_terminal:
        console = Console(highlight=False, width=max(console.width, 120))
    where = "--cache-dir" if cache_dir else cache_dir_source()
    table = Table(title=f"harmkit cache: {info.root} ({where})")
    for column in ("kind", "entries", "size", "oldest", "newest", "holds"):
        table.add_column(
            column, justify="right" if column in ("entries", "size") else "left", no_wrap=column != "holds"
        )
    for kind, description in CACHE_KINDS.items():
        item = info.kinds[kind]
        table.add_row(
            kind,
            str(item.entries),
            _size(item.bytes),
            _when(item.oldest),
            _when(item.newest),
            description,
        )
    table.add_row("total", str(info.entries), _size(info.bytes), "", "", "")
    console.print(table)
    if not info.root.exists():
        console.print(f"{info.root} does not exist yet: nothing is cached")
    if info.other_paths:
        console.print(
            f"{len(info.other_paths)} other item(s) ({_size(info.other_bytes)}) in {info.root} are not cache "
            f"entries; harmkit never deletes them (e.g. {info.other_paths[0].name})"
        )


@cache.command()
@click.option(
    "--cache-dir",
    "cache_dir",
    type=click.Path(file_okay=False),
    default=None,
    help=CACHE_DIR_HELP,
)
@click.option(
    "--older-than",
    "older_than",
    metavar="AGE",
    default=None,
    help="Only entries written longer ago than AGE, e.g. 30d, 12h, 90m, 2w (a bare number is days).",
)
@click.option(
    "--kind",
    "kinds",
    multiple=True,
    metavar="KIND",
    help="Only this kind (repeatable): features, images, models, masks, results, cohorts, work.",
)
@click.option("--dry-run", is_flag=True, help="Say what would be deleted; delete nothing.")
def clear(cache_dir: str | None, older_than: str | None, kinds: tuple[str, ...], dry_run: bool) -> None:
    """Delete cache entries (all, or those older than --older-than, or of --kind).

    Only entries harmkit wrote are deleted; other files in the folder stay.
    A later run recomputes what it needs. Do not clear while a run uses the
    cache.

    \b
    Examples:
      harmkit cache clear
      harmkit cache clear --older-than 30d --dry-run
    """
    from ..cache import clear_cache, default_cache_dir, parse_age

    root = cache_dir or default_cache_dir()
    removed = clear_cache(
        root,
        None if older_than is None else parse_age(older_than),
        list(kinds) or None,
        dry_run,
    )
    verb = "would delete" if dry_run else "deleted"
    click.echo(
        f"{verb} {removed.entries} cache entr{'y' if removed.entries == 1 else 'ies'} "
        f"({_size(removed.bytes)}) in {root}"
    )


def _size(n: int) -> str:
    value = float(n)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if value < 1024 or unit == "GiB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{value:.1f} TiB"  # pragma: no cover - unreachable


def _when(timestamp: float | None) -> str:
    import datetime as dt

    return "" if timestamp is None else dt.datetime.fromtimestamp(timestamp).strftime("%Y-%m-%d %H:%M")
