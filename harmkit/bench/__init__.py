"""``harmkit bench``: every method through one protocol, with one report.

>>> import harmkit as hk
>>> result = hk.bench(methods="gan,combat,gan+combat")   # doctest: +SKIP
>>> result.report                                         # doctest: +SKIP
PosixPath('harmkit-runs/bench-headneck/report.html')

See :mod:`harmkit.bench.run` for the protocol, :mod:`harmkit.bench.context` for
what evaluators receive, and docs/bench.md for a walk through a run and every
number in the report.
"""

from .config import BenchConfig, load_config
from .context import BenchContext
from .report import BenchResult
from .run import run_bench
from .splits import Splits, monte_carlo_splits

__all__ = [
    "BenchConfig",
    "BenchContext",
    "BenchResult",
    "Splits",
    "load_config",
    "monte_carlo_splits",
    "run_bench",
]
