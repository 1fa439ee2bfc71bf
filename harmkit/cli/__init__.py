"""The ``harmkit`` command line.

Each sub-command lives in its own module of this package and is imported only
when used, so ``harmkit --help`` stays fast even though some commands need
torch or pyradiomics.
"""

from __future__ import annotations

import importlib
import importlib.util
import sys
import warnings

import click

from .. import __version__
from ..errors import HarmkitError, HarmkitWarning, io_error

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
    "import": "import_:import_dicom",
    "cache": "cache:cache",
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


@click.group(
    cls=LazyGroup,
    context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100},
)
@click.version_option(__version__, prog_name="harmkit")
def cli() -> None:
    """harmkit: harmonize multicenter PET data and benchmark harmonization methods.

    \b
    Examples:
      harmkit plugins                     list installed methods, extractors, evaluators
      harmkit validate data/manifest.csv  check a cohort before using it
      harmkit bench --methods gan,combat,gan+combat
    """


def _show_warning(message, category, filename, lineno, file=None, line=None) -> None:
    """Warnings of harmkit on one line (no source line); other warnings as Python shows them."""
    if issubclass(category, HarmkitWarning):
        click.echo(f"Warning: {message}", err=True)
    else:
        _python_show_warning(message, category, filename, lineno, file, line)


_python_show_warning = warnings.showwarning


def _error(message: str) -> None:
    from rich.console import Console
    from rich.markup import escape

    Console(stderr=True, highlight=False).print(f"[bold red]Error:[/] {escape(message)}", markup=True, soft_wrap=True)
    sys.exit(2)


def main(argv=None) -> None:
    """Entry point: user mistakes end with one readable line and exit code 2, no traceback.

    A :class:`~harmkit.errors.HarmkitError` and an operating-system error
    (read-only or full disk, missing permission) print ``Error: ...`` and exit
    with status 2; harmkit's warnings print one ``Warning: ...`` line each.
    """
    warnings.showwarning = _show_warning
    try:
        cli.main(args=argv, prog_name="harmkit", standalone_mode=False)
    except HarmkitError as exc:
        _error(str(exc))
    except OSError as exc:
        _error(str(io_error(exc, getattr(exc, "filename", None) or "a file", "use")))
    except MemoryError:
        _error("out of memory; process fewer scans at a time (--jobs 1) or use a machine with more memory")
    except click.exceptions.Abort:
        click.echo("Aborted.", err=True)
        sys.exit(130)
    except click.ClickException as exc:
        exc.show()
        sys.exit(exc.exit_code)
    except click.exceptions.Exit as exc:
        sys.exit(exc.exit_code)
