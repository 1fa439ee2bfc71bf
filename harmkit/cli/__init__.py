"""The ``harmkit`` command line.

Each sub-command lives in its own module of this package and is imported only
when used, so ``harmkit --help`` stays fast even though some commands need
torch or pyradiomics.
"""

from __future__ import annotations

import importlib
import importlib.util
import sys

import click

from .. import __version__
from ..errors import HarmkitError

# name -> "module:function" (module relative to this package)
COMMANDS = {
    "plugins": "plugins:plugins",
    "validate": "validate:validate",
    "simulate": "simulate:simulate",
    "extract": "extract:extract",
    "train": "train:train",
    "harmonize": "harmonize:harmonize",
    "bench": "bench:bench",
    "diagnose": "diagnose:diagnose",
}


class LazyGroup(click.Group):
    """A click group that imports a command's module only when that command runs."""

    def list_commands(self, ctx):
        return [name for name, target in COMMANDS.items() if _module_exists(target)]

    def get_command(self, ctx, name):
        target = COMMANDS.get(name)
        if target is None or not _module_exists(target):
            return None
        module_name, attribute = target.split(":")
        module = importlib.import_module(f"{__name__}.{module_name}")
        return getattr(module, attribute)


def _module_exists(target: str) -> bool:
    return importlib.util.find_spec(f"{__name__}.{target.split(':')[0]}") is not None


@click.group(cls=LazyGroup, context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(__version__, prog_name="harmkit")
def cli() -> None:
    """harmkit: harmonize multicenter PET data and benchmark harmonization methods.

    \b
    Examples:
      harmkit plugins                     list installed methods, extractors, evaluators
      harmkit validate data/manifest.csv  check a cohort before using it
      harmkit bench --methods gan,combat,gan+combat
    """


def main(argv=None) -> None:
    """Entry point: user mistakes end with one readable line and exit code 2, no traceback."""
    try:
        cli.main(args=argv, prog_name="harmkit", standalone_mode=False)
    except HarmkitError as exc:
        from rich.console import Console

        Console(stderr=True, highlight=False).print(f"[bold red]Error:[/] {exc}", markup=True, soft_wrap=True)
        sys.exit(2)
    except click.exceptions.Abort:
        click.echo("Aborted.", err=True)
        sys.exit(130)
    except click.ClickException as exc:
        exc.show()
        sys.exit(exc.exit_code)
    except click.exceptions.Exit as exc:
        sys.exit(exc.exit_code)
