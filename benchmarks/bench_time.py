"""Wall-clock time of the main job, ``harmkit bench --methods gan,combat,gan+combat``: first run and rerun.

The first run starts from an empty output folder (it simulates the cohort,
trains the CycleGAN, extracts every feature); the second run repeats the same
command and should only read the cache. Usage::

    python benchmarks/bench_time.py [--out DIR] [--keep] [-- extra bench options]

Prints a table; ``--json FILE`` also writes the figures. The target (issue 6):
first run (plus environment setup) under 15 minutes on a 2-core machine,
rerun under one minute.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def run(command: list[str]) -> float:
    start = time.perf_counter()
    result = subprocess.run(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    elapsed = time.perf_counter() - start
    if result.returncode != 0:
        sys.exit(f"failed ({result.returncode}): {' '.join(command)}\n{result.stderr[-3000:]}")
    return elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", help="output folder (default: a fresh temporary folder)")
    parser.add_argument("--keep", action="store_true", help="keep the output folder")
    parser.add_argument("--json", help="also write the figures to this JSON file")
    parser.add_argument("extra", nargs="*", help="extra options for harmkit bench")
    args = parser.parse_args()
    harmkit = str(Path(sys.executable).with_name("harmkit"))
    out = Path(args.out) if args.out else Path(tempfile.mkdtemp(prefix="bench-time-")) / "run"
    if out.exists():
        shutil.rmtree(out)
    command = [
        harmkit,
        "bench",
        "--methods",
        "gan,combat,gan+combat",
        "--out",
        str(out),
        "--quiet",
        *args.extra,
    ]
    first = run(command)
    first_stages = json.loads((out / "results.json").read_text()).get("timings_s")
    second = run(command)
    results = json.loads((out / "results.json").read_text())
    figures = {
        "command": " ".join(command[1:]),
        "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores",
        "first_run_s": round(first, 1),
        "rerun_s": round(second, 1),
        "first_run_stage_timings_s": first_stages,
        "rerun_stage_timings_s": results.get("timings_s"),
        "load_average": os.getloadavg(),
    }
    print(f"{'run':<12}{'seconds':>10}")
    print(f"{'first':<12}{first:>10.1f}")
    print(f"{'rerun':<12}{second:>10.1f}")
    print("first run stages:", first_stages)
    print("rerun stages:", results.get("timings_s"))
    print("load average (1, 5, 15 min):", ", ".join(f"{v:.1f}" for v in os.getloadavg()))
    if args.json:
        Path(args.json).write_text(json.dumps(figures, indent=1))
    if not args.keep and not args.out:
        shutil.rmtree(out.parent, ignore_errors=True)


if __name__ == "__main__":
    main()
