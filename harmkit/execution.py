"""Run per-scan work on one machine or a cluster through one interface.

>>> from harmkit.execution import get_executor
>>> with get_executor(jobs=2) as executor:                  # doctest: +SKIP
...     results = executor.map(square, [1, 2, 3], label="squaring")
>>> [r.value for r in results]                              # doctest: +SKIP
[1, 4, 9]

Three engines share the :class:`Executor` interface:

* ``jobs=1``: in this process, no pool (easiest to debug);
* ``jobs=N`` (default: every core this process may use): a local process pool;
* ``scheduler="tcp://HOST:PORT"``: a running Dask distributed cluster, or
  ``scheduler="local"``: a Dask ``LocalCluster`` started for the executor.

Whatever the engine, :meth:`Executor.map` returns one :class:`TaskResult` per
item in input order, and a failing item never loses the others: its
``error`` holds a one-line message and the other items keep their values.
The function must be picklable (defined at module level) and, on a remote
cluster, importable on the workers (install harmkit and its plugins there).
"""

from __future__ import annotations

import multiprocessing
import os
import traceback
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ProcessPoolExecutor, as_completed
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from .errors import HarmkitError
from .toolkit import ProgressBar
from .toolkit import progress as progress_bar

if TYPE_CHECKING:  # distributed is imported only when a Dask executor is made
    from distributed import Client, LocalCluster

__all__ = [
    "TaskResult",
    "Executor",
    "LocalExecutor",
    "DaskExecutor",
    "get_executor",
    "available_cores",
]


@dataclass
class TaskResult:
    """The outcome of one item: ``value`` when it worked, ``error`` (one line) when it failed."""

    value: Any = None
    error: str | None = None
    details: str | None = None  # full traceback of unexpected errors, for logs
    error_class: type | None = None
    """The class of a :class:`HarmkitError` raised by the item (e.g. ``TargetNotSupported``), to act on by type."""

    @property
    def ok(self) -> bool:
        return self.error is None


def available_cores() -> int:
    """Number of CPU cores this process may run on."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):  # pragma: no cover - non-Linux
        return max(1, os.cpu_count() or 1)


def run_task(fn: Callable[[Any], Any], item: Any) -> TaskResult:
    """Call ``fn(item)`` and capture any exception as a :class:`TaskResult`.

    A :class:`HarmkitError` is a user-facing problem: its message is kept as
    is. Any other exception becomes ``"<Type>: <message>"`` with the
    traceback in ``details``.
    """
    try:
        return TaskResult(value=fn(item))
    except HarmkitError as exc:
        return TaskResult(error=str(exc), error_class=type(exc))
    except Exception as exc:  # noqa: BLE001 - one item's failure must not stop the others
        message = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
        return TaskResult(
            error=f"{type(exc).__name__}: {message}" if message else type(exc).__name__,
            details=traceback.format_exc(),
        )


class Executor:
    """Maps a function over items; subclasses choose where the calls run."""

    engine: str = ""

    def __init__(self, progress: bool = True):
        self.progress = progress

    @property
    def workers(self) -> int:
        """How many items run at the same time."""
        return 1

    def map(self, fn: Callable[[Any], Any], items: Iterable[Any], label: str = "working") -> list[TaskResult]:
        """Apply ``fn`` to every item; one :class:`TaskResult` per item, in input order."""
        items = list(items)
        if not items:
            return []
        with progress_bar(len(items), label, enabled=self.progress, transient=False) as progress:
            return self._map(fn, items, progress)

    def _map(self, fn, items: Sequence[Any], progress: ProgressBar) -> list[TaskResult]:
        results = []
        for item in items:
            results.append(run_task(fn, item))
            progress.advance()
        return results

    def close(self) -> None:
        """Release workers (no-op for the in-process engine)."""

    def __enter__(self) -> "Executor":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def describe(self) -> dict[str, Any]:
        """Engine and worker count, for run records."""
        return {"engine": self.engine, "workers": self.workers}

    def __repr__(self) -> str:
        return f"{type(self).__name__}(workers={self.workers})"


class InProcessExecutor(Executor):
    """Runs every item in this process, one after the other (``jobs=1``)."""

    engine = "in-process"


class LocalExecutor(Executor):
    """A pool of ``jobs`` worker processes on this machine.

    Workers are forked from this process when that is safe: when it runs a
    single thread and has not loaded torch (whose OpenMP threads do not
    survive a fork). Forked workers start fast, inherit everything already
    imported, and work from any script, ``python -`` or a notebook. Otherwise
    they start from a clean ``forkserver`` process, which, like ``spawn``,
    imports the main script again in each worker: scripts then need the usual
    ``if __name__ == "__main__":`` guard. ``HARMKIT_START_METHOD`` (``fork``,
    ``forkserver``, ``spawn``) overrides the choice.

    All workers start before the progress bar (a thread) appears and stay
    alive across :meth:`map` calls until :meth:`close`. If a worker dies
    (segmentation fault, out of memory), the items it took down are retried
    one at a time, so only the item that kills its worker reports an error.
    """

    engine = "process-pool"

    def __init__(self, jobs: int, progress: bool = True):
        super().__init__(progress)
        self.jobs = int(jobs)
        self._pool: ProcessPoolExecutor | None = None
        self.start_method: str | None = None

    @property
    def workers(self) -> int:
        return self.jobs

    def map(self, fn, items, label: str = "working") -> list[TaskResult]:
        items = list(items)
        if items:
            self._get_pool()  # start workers now, before the progress bar's thread exists
        return super().map(fn, items, label)

    def _get_pool(self) -> ProcessPoolExecutor:
        if self._pool is None:
            self.start_method = _start_method()
            self._pool = ProcessPoolExecutor(
                max_workers=self.jobs,
                mp_context=multiprocessing.get_context(self.start_method),
                initializer=limit_threads,
                initargs=(threads_per_worker(self.jobs),),
            )
            if self.start_method == "fork":
                # a fork-context pool launches every worker at its first submit
                self._pool.submit(_noop).result()
        return self._pool

    def _reset_pool(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=False, cancel_futures=True)
            self._pool = None

    def _map(self, fn, items, progress) -> list[TaskResult]:
        results: list[TaskResult | None] = [None] * len(items)
        broken: list[int] = []
        pool = self._get_pool()
        futures = {pool.submit(run_task, fn, item): i for i, item in enumerate(items)}
        for future in as_completed(futures):
            index = futures[future]
            try:
                results[index] = future.result()
                progress.advance()
            except BrokenProcessPool:
                broken.append(index)
        if broken:
            # A worker died and took its pool down: retry those items one at a time.
            self._reset_pool()
            for index in sorted(broken):
                try:
                    results[index] = self._get_pool().submit(run_task, fn, items[index]).result()
                except BrokenProcessPool:
                    results[index] = TaskResult(
                        error="the worker process died while processing this item (crash or out of memory)"
                    )
                    self._reset_pool()
                progress.advance()
        return results  # type: ignore[return-value]  # every slot was filled above

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True)
            self._pool = None


def _noop() -> None:
    return None


THREAD_VARIABLES = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS")


def threads_per_worker(workers: int) -> int:
    """The cores this process may use, shared out among ``workers`` processes (at least 1 each)."""
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        cores = os.cpu_count() or 1
    return max(1, cores // max(1, workers))


def limit_threads(threads: int) -> None:
    """Worker initializer: at most ``threads`` OpenMP/BLAS threads (torch, numpy) in this worker.

    Without it every worker's torch starts one thread per core: 2 workers on 2 cores run 4 busy threads,
    and torch's training and inference slow down far more than 2x (docs/execution.md). A thread count the
    user set in the environment is kept.
    """
    for name in THREAD_VARIABLES:
        os.environ.setdefault(name, str(threads))
    import sys

    if "torch" in sys.modules:  # imported before the worker started (fork after torch is avoided, but be safe)
        sys.modules["torch"].set_num_threads(int(os.environ["OMP_NUM_THREADS"]))


def _start_method() -> str:
    """``fork`` when it is safe here (one thread, no torch), else ``forkserver`` (or ``spawn``)."""
    import sys
    import threading

    methods = multiprocessing.get_all_start_methods()
    chosen = os.environ.get("HARMKIT_START_METHOD", "").strip()
    if chosen:
        if chosen not in methods:
            raise HarmkitError(f"HARMKIT_START_METHOD={chosen!r}: use one of {', '.join(methods)}")
        return chosen
    if "fork" in methods and threading.active_count() == 1 and "torch" not in sys.modules:
        return "fork"
    return "forkserver" if "forkserver" in methods else "spawn"


class DaskExecutor(Executor):
    """Runs items on a Dask distributed cluster.

    ``scheduler`` is a scheduler address (``tcp://HOST:PORT``) or ``"local"``
    to start a ``LocalCluster`` with ``jobs`` single-threaded workers
    (``processes=False`` keeps them as threads in this process, which starts
    faster but shares the interpreter lock). Workers of a remote cluster need
    harmkit and the plugins in use installed in the same versions.
    """

    engine = "dask"

    def __init__(
        self,
        scheduler: str,
        jobs: int | None = None,
        progress: bool = True,
        processes: bool = True,
    ):
        super().__init__(progress)
        try:
            from distributed import Client, LocalCluster
        except ImportError:  # pragma: no cover - dask is a core dependency
            raise HarmkitError("--scheduler needs dask distributed: pip install 'dask[distributed]'") from None
        self.scheduler = scheduler
        self._cluster: LocalCluster | None = None
        self._client: Client | None = None
        address: LocalCluster | str
        if scheduler == "local":
            self._cluster = LocalCluster(
                n_workers=jobs or available_cores(),
                threads_per_worker=1,
                processes=processes,
                dashboard_address=None,
                silence_logs=40,
            )
            address = self._cluster
        else:
            if not scheduler.startswith(("tcp://", "tls://", "inproc://", "ws://", "wss://", "ucx://")):
                raise HarmkitError(
                    f"--scheduler {scheduler!r}: expected a Dask scheduler address such as tcp://HOST:8786, or 'local'"
                )
            address = scheduler
        try:
            self._client = Client(address, timeout="20s", set_as_default=False)
        except (OSError, TimeoutError) as exc:
            if self._cluster is not None:
                self._cluster.close()
            raise HarmkitError(
                f"cannot connect to the Dask scheduler at {scheduler} ({exc}); start one with 'dask scheduler' and "
                f"'dask worker {scheduler}', or use --scheduler local"
            ) from None

    def _connected(self) -> Client:
        if self._client is None:
            raise HarmkitError("this Dask executor is closed; make a new one to run more work")
        return self._client

    @property
    def workers(self) -> int:
        info = self._connected().scheduler_info()
        return sum(w.get("nthreads", 1) for w in info.get("workers", {}).values()) or 1

    def _map(self, fn, items, progress) -> list[TaskResult]:
        from distributed import as_completed as dask_as_completed

        client = self._connected()
        futures = client.map(run_task, [fn] * len(items), items, pure=False)
        position = {f.key: i for i, f in enumerate(futures)}
        results: list[TaskResult | None] = [None] * len(items)
        for future in dask_as_completed(futures, loop=client.loop):
            index = position[future.key]
            try:
                results[index] = future.result()
            except Exception as exc:  # worker lost, unpicklable result, ...
                results[index] = TaskResult(error=f"Dask task failed: {type(exc).__name__}: {exc}")
            progress.advance()
        return results  # type: ignore[return-value]  # every slot was filled above

    def describe(self) -> dict[str, Any]:
        return {
            "engine": self.engine,
            "workers": self.workers,
            "scheduler": self.scheduler,
        }

    def close(self) -> None:
        if self._client is not None:
            self._client.close()
            self._client = None
        if self._cluster is not None:
            self._cluster.close()
            self._cluster = None


def get_executor(
    jobs: int | None = None,
    scheduler: str | None = None,
    progress: bool = True,
    **options: Any,
) -> Executor:
    """The executor for ``jobs`` and ``scheduler``.

    * ``scheduler`` set: a :class:`DaskExecutor` (``"local"`` starts a
      LocalCluster of ``jobs`` workers; extra ``options`` such as
      ``processes=False`` go to it).
    * ``jobs`` is ``None``: a :class:`LocalExecutor` using every available core.
    * ``jobs == 1``: an :class:`InProcessExecutor` (no pool).
    * ``jobs > 1``: a :class:`LocalExecutor` of that many processes.

    Use it as a context manager (or call ``close()``) to release workers.
    """
    if jobs is not None:
        try:
            jobs = int(jobs)
        except (TypeError, ValueError):
            raise HarmkitError(f"--jobs {jobs!r}: expected a positive whole number") from None
        if jobs < 1:
            raise HarmkitError(f"--jobs {jobs}: expected a positive whole number (1 runs in this process)")
    if scheduler:
        return DaskExecutor(scheduler, jobs=jobs, progress=progress, **options)
    if options:
        raise HarmkitError(f"unknown executor option(s) {', '.join(sorted(options))} (only Dask clusters take options)")
    n = available_cores() if jobs is None else jobs
    if n == 1:
        return InProcessExecutor(progress=progress)
    return LocalExecutor(n, progress=progress)


def map_once(
    fn: Callable[[Any], Any],
    items: list,
    label: str,
    executor: Executor | None = None,
    jobs: int | None = None,
    progress: bool = False,
) -> list[TaskResult]:
    """``fn`` over ``items`` on ``executor``, or on workers started for this call alone (``jobs``) and then closed."""
    if executor is not None:
        return executor.map(fn, items, label=label)
    with get_executor(jobs=jobs, progress=progress) as own:
        return own.map(fn, items, label=label)
