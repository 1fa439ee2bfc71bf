"""The executor: input order, isolated failures, identical results on every engine."""

from __future__ import annotations

import math
import os

import pytest

from harmkit.errors import HarmkitError
from harmkit.execution import (
    DaskExecutor,
    InProcessExecutor,
    LocalExecutor,
    TaskResult,
    get_executor,
)


def slow_square(x):
    if x == 3:
        raise HarmkitError("item 3 is bad: fix it")
    if x == 5:
        raise ValueError("five\nsecond line")
    return x * x


def die_on_seven(x):
    if x == 7:
        os._exit(13)  # a worker that crashes hard (like a segfault)
    return -x


def worker_threads(_):
    import torch

    return os.environ.get("OMP_NUM_THREADS"), torch.get_num_threads()


def test_pool_workers_share_the_cores_instead_of_each_taking_all(monkeypatch):
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    monkeypatch.setenv("HARMKIT_START_METHOD", "spawn")  # a clean worker that imports torch itself
    cores = len(os.sched_getaffinity(0))
    with LocalExecutor(jobs=2, progress=False) as executor:
        results = executor.map(worker_threads, [0, 1], "threads")
    expected = max(1, cores // 2)
    assert [r.value for r in results] == [(str(expected), expected)] * 2


def test_jobs_one_runs_in_process_without_pool():
    executor = get_executor(jobs=1, progress=False)
    assert isinstance(executor, InProcessExecutor)
    assert [r.value for r in executor.map(math.sqrt, [4, 9], "roots")] == [2.0, 3.0]


def test_default_uses_every_core():
    with get_executor(progress=False) as executor:
        assert executor.workers == (
            os.cpu_count() if hasattr(os, "sched_getaffinity") is False else len(os.sched_getaffinity(0))
        )


@pytest.mark.parametrize("jobs", [1, 2])
def test_failing_items_keep_the_others_in_input_order(jobs):
    with get_executor(jobs=jobs, progress=False) as executor:
        results = executor.map(slow_square, range(8), "squares")
    assert [r.value for r in results if r.ok] == [0, 1, 4, 16, 36, 49]
    assert results[3].error == "item 3 is bad: fix it"
    assert results[5].error == "ValueError: five"
    assert "Traceback" in results[5].details
    assert all(isinstance(r, TaskResult) for r in results)


def test_process_pool_survives_a_crashing_worker():
    with LocalExecutor(2, progress=False) as executor:
        results = executor.map(die_on_seven, range(10), "crashy")
        assert "worker process died" in results[7].error
        assert [r.value for i, r in enumerate(results) if i != 7] == [-i for i in range(10) if i != 7]
        # the pool is usable again afterwards
        assert [r.value for r in executor.map(die_on_seven, [1, 2], "again")] == [
            -1,
            -2,
        ]


def test_bad_jobs_value_is_a_user_error():
    with pytest.raises(HarmkitError, match="--jobs 0"):
        get_executor(jobs=0)


def test_bad_scheduler_address_is_a_user_error():
    with pytest.raises(HarmkitError, match="scheduler"):
        get_executor(scheduler="my-cluster:8786")


def test_dask_local_cluster_gives_the_same_results_as_the_pool():
    with get_executor(jobs=2, progress=False) as pool:
        expected = pool.map(slow_square, range(8), "pool")
    with get_executor(jobs=2, scheduler="local", progress=False, processes=False) as dask:
        assert isinstance(dask, DaskExecutor)
        assert dask.workers == 2
        got = dask.map(slow_square, range(8), "dask")
    assert [(r.value, r.error) for r in got] == [(r.value, r.error) for r in expected]


def test_pool_works_from_a_script_read_on_stdin():
    import subprocess
    import sys

    code = (
        "from harmkit.execution import get_executor\n"
        "import math\n"
        "with get_executor(jobs=2, progress=False) as ex:\n"
        "    print([r.value for r in ex.map(math.sqrt, [4, 9, 16], 'x')], ex.start_method)\n"
    )
    result = subprocess.run([sys.executable, "-"], input=code, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["[2.0,", "3.0,", "4.0]", "fork"]


def test_pool_with_threads_running_uses_forkserver():
    import threading

    stop = threading.Event()
    thread = threading.Thread(target=stop.wait)
    thread.start()
    try:
        with LocalExecutor(2, progress=False) as executor:
            assert [r.value for r in executor.map(math.sqrt, [4, 9], "x")] == [2.0, 3.0]
            assert executor.start_method == "forkserver"
    finally:
        stop.set()
        thread.join()


def test_start_method_can_be_forced(monkeypatch):
    monkeypatch.setenv("HARMKIT_START_METHOD", "spawn")
    with LocalExecutor(2, progress=False) as executor:
        assert [r.value for r in executor.map(math.sqrt, [4], "x")] == [2.0]
        assert executor.start_method == "spawn"
    monkeypatch.setenv("HARMKIT_START_METHOD", "teleport")
    with pytest.raises(HarmkitError, match="HARMKIT_START_METHOD"):
        LocalExecutor(2, progress=False).map(math.sqrt, [4], "x")
