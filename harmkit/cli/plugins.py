"""``harmkit plugins``: what is installed."""

from __future__ import annotations

import click


@click.command()
@click.option(
    "--errors",
    "show_errors",
    is_flag=True,
    help="Show the full traceback of plugins that failed to load.",
)
def plugins(show_errors: bool) -> None:
    """List installed plugins: name, kind, providing distribution and version, description.

    \b
    Example:
      harmkit plugins
    """
    from rich.console import Console
    from rich.table import Table

    from ..plugins import get_registry

    registry = get_registry()
    console = Console()
    if not console.is_terminal:  # piped or captured: do not squeeze the table into 80 columns
        console = Console(width=max(console.width, 140))
    table = Table(title="harmkit plugins", show_lines=False)
    for column in ("name", "kind", "aliases", "distribution"):
        table.add_column(column, no_wrap=True)
    table.add_column("description")
    for info in registry.all():
        table.add_row(
            info.name,
            info.kind,
            ", ".join(info.aliases),
            f"{info.distribution} {info.version}",
            info.description,
        )
    console.print(table)
    for error in registry.errors:
        console.print(
            f"[red]failed to load[/] entry point {error.entry_point!r} of {error.distribution}: {error.error}"
        )
        if show_errors:
            console.print(error.details)
