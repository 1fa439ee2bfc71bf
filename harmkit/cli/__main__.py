"""``python -m harmkit.cli``: the same as the ``harmkit`` command."""

from . import main

main()
