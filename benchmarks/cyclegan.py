"""CycleGAN speed and memory: training step, achieved GFLOP/s, sliding-window inference.

For the ``quick`` and ``paper`` profiles, on CPU (default) or CUDA, it prints:

- the training step time of what we ship (bf16 autocast where the hardware
  has native bf16, channels_last_3d) and of plain eager fp32 (contiguous) of
  the same architecture;
- achieved GFLOP/s of that step as a fraction of this machine's dense matmul
  GFLOP/s, measured in the same run (fp32 matmul for fp32, bf16 matmul for
  bf16);
- sliding-window inference voxels/s and peak memory on a whole-body-sized
  400x400x300 volume (peak resident memory of a child process that runs only
  the inference, through the harmonizer's own ``translate``, on CPU; peak
  allocated GPU memory on CUDA).

Where a full measurement would take hours on this CPU (the paper profile's
128x128x64 patches and 0.85-overlap windows) it times a part and
extrapolates; those rows say so in the ``note`` column.

FLOP convention: every 3D (transposed) convolution counts 2 FLOPs per
multiply-add; a training step is 6 generator passes and 6 discriminator
passes (4 G + 2 identity; 2 D for the generator loss, 4 for the
discriminator loss), each counted as forward + backward = 3x its forward FLOPs.

Usage::

    python benchmarks/cyclegan.py                     # CPU, quick + paper
    python benchmarks/cyclegan.py --profiles quick --device cpu --json out.json
    python benchmarks/cyclegan.py --suite gpu --device cuda   # what cyclegan_gpu.sh runs

Needs only torch and numpy (plus SimpleITK and harmkit for the CPU
inference-through-the-harmonizer rows), so it runs on a bare GPU machine.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "plugins" / "harmkit-cyclegan"))

import numpy as np  # noqa: E402
import torch  # noqa: E402

from harmkit_cyclegan.config import get_profile  # noqa: E402
from harmkit_cyclegan.inference import sliding_window, window_starts  # noqa: E402
from harmkit_cyclegan.nets import PatchDiscriminator3d, conv_flops  # noqa: E402
from harmkit_cyclegan.training import Trainer, build_generator  # noqa: E402

VOLUME = (300, 400, 400)  # (z, y, x): 400x400x300 voxels


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def matmul_gflops(device: torch.device, dtype: torch.dtype, n: int = 2048, seconds: float = 1.5) -> float:
    """Dense n x n matmul throughput (GFLOP/s), best of repeated timings."""
    if device.type == "cuda":
        n = 8192
    a = torch.randn(n, n, device=device, dtype=dtype)
    b = torch.randn(n, n, device=device, dtype=dtype)
    for _ in range(2):
        a @ b
    sync(device)
    best = math.inf
    deadline = time.perf_counter() + seconds
    while time.perf_counter() < deadline:
        started = time.perf_counter()
        a @ b
        sync(device)
        best = min(best, time.perf_counter() - started)
    return 2 * n**3 / best / 1e9


def step_flops(config, patch) -> int:
    """FLOPs of one training step (convention in the module docstring)."""
    shape = (config.batch_size, 1, *patch)
    with torch.device("meta"):  # shapes only: no memory, no compute
        gen = build_generator(config)
        disc = PatchDiscriminator3d(config.ndf, config.n_d_layers)
    return 3 * (6 * conv_flops(gen, shape) + 6 * conv_flops(disc, shape))


def time_training(config, patch, device, precision, channels_last, warmup=1, steps=3, max_seconds=60.0):
    """Seconds per training step and peak GPU memory (bytes, CUDA only)."""
    cfg = config.with_overrides(patch_size=patch, precision=precision, channels_last=channels_last, steps=10_000)
    sample = lambda rng, n: rng.uniform(-1, 1, (n, 1, *patch)).astype(np.float32)  # noqa: E731
    trainer = Trainer(cfg, sample, sample, out_dir="/nonexistent-not-written", device=device)
    for _ in range(warmup):
        trainer.train_step()
    sync(device)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
    times = []
    budget = time.perf_counter() + max_seconds
    for _ in range(steps):
        started = time.perf_counter()
        trainer.train_step()
        sync(device)
        times.append(time.perf_counter() - started)
        if time.perf_counter() > budget:
            break
    peak = torch.cuda.max_memory_allocated() if device.type == "cuda" else None
    del trainer
    return float(np.median(times)), peak


def window_count(shape, window, overlap) -> int:
    return math.prod(len(window_starts(s, w, overlap)) for s, w in zip(shape, window))


def part_shape(shape, window, overlap, max_windows):
    """A sub-volume of ``shape`` needing at most ``max_windows`` windows (grown z, then y, then x)."""
    part = [min(s, w) for s, w in zip(shape, window)]
    if max_windows is None or window_count(shape, window, overlap) <= max_windows:
        return tuple(shape)
    for axis in range(3):
        while part[axis] < shape[axis]:
            trial = list(part)
            trial[axis] += 1
            if window_count(trial, window, overlap) > max_windows:
                break
            part = trial
    return tuple(part)


def infer_direct(config, shape, device, precision, channels_last, max_windows=None):
    """Sliding-window inference with the torch/numpy core only (GPU machine): seconds, windows, peak GPU bytes."""
    net = build_generator(config).to(device).eval()
    if channels_last:
        net = net.to(memory_format=torch.channels_last_3d)
    full = window_count(shape, config.window, config.overlap)
    part = part_shape(shape, config.window, config.overlap, max_windows)
    volume = np.random.default_rng(0).uniform(-1, 1, part).astype(np.float32)
    sliding_window(
        volume[: config.window[0], : config.window[1], : config.window[2]],
        net,
        config.window,
        config.overlap,
        config.infer_batch,
        device=device,
        precision=precision,
        channels_last=channels_last,
    )  # warm-up
    sync(device)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
    started = time.perf_counter()
    sliding_window(
        volume,
        net,
        config.window,
        config.overlap,
        config.infer_batch,
        device=device,
        precision=precision,
        channels_last=channels_last,
    )
    sync(device)
    seconds = time.perf_counter() - started
    peak = torch.cuda.max_memory_allocated() if device.type == "cuda" else None
    done = window_count(part, config.window, config.overlap)
    return seconds, done, full, peak


def infer_child(profile: str, precision: str, channels_last: bool, shape, max_windows) -> dict:
    """Run harmonizer inference in a child process; return its timing and peak resident memory."""
    spec = {
        "profile": profile,
        "precision": precision,
        "channels_last": channels_last,
        "shape": shape,
        "max_windows": max_windows,
    }
    args = [
        sys.executable,
        __file__,
        "--threads",
        str(torch.get_num_threads()),
        "--_child",
        json.dumps(spec),
    ]
    result = subprocess.run(
        args,
        capture_output=True,
        text=True,
        env={
            **os.environ,
            "PYTHONPATH": os.pathsep.join(
                [
                    str(ROOT),
                    str(ROOT / "plugins" / "harmkit-cyclegan"),
                    os.environ.get("PYTHONPATH", ""),
                ]
            ),
        },
    )
    if result.returncode != 0:
        raise RuntimeError(f"inference child failed:\n{result.stderr[-3000:]}")
    data = json.loads(result.stdout.strip().splitlines()[-1])
    data["child_peak_rss_bytes"] = data.pop("self_peak_rss_bytes")
    return data


def _child(spec: dict) -> None:
    """Inside the child: build a harmonizer with random generator weights and time translate()."""
    import SimpleITK as sitk

    from harmkit_cyclegan.harmonizer import CycleGANHarmonizer

    config = get_profile(spec["profile"]).with_overrides(
        precision=spec["precision"], channels_last=spec["channels_last"]
    )
    shape = tuple(spec["shape"])
    full = window_count(shape, config.window, config.overlap)
    shape = part_shape(shape, config.window, config.overlap, spec["max_windows"])
    torch.manual_seed(0)
    gan = CycleGANHarmonizer(
        profile=spec["profile"],
        device="cpu",
        progress=False,
        precision=spec["precision"],
        channels_last=spec["channels_last"],
    )
    gan.config_ = config.to_dict()
    gan.spacing_ = [2.0, 2.0, 3.0]
    gan._generators = {"x_to_y": build_generator(config).state_dict()}
    rng = np.random.default_rng(0)
    image = sitk.GetImageFromArray(rng.gamma(2.0, 0.5, shape).astype(np.float32))
    image.SetSpacing((2.0, 2.0, 3.0))
    started = time.perf_counter()
    out = gan.translate(image, "x_to_y")
    seconds = time.perf_counter() - started
    assert out.GetSize() == image.GetSize()
    print(
        json.dumps(
            {
                "seconds": seconds,
                "voxels": int(np.prod(shape)),
                "windows": window_count(shape, config.window, config.overlap),
                "windows_full": full,
                "part": list(shape),
                "self_peak_rss_bytes": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024,
            }
        )
    )


def shipped_precision(device: torch.device) -> str:
    from harmkit_cyclegan.training import resolve_precision

    return resolve_precision("auto", device)


def cpu_suite(profiles, device, results):
    fp32_peak = matmul_gflops(device, torch.float32)
    bf16_peak = matmul_gflops(device, torch.bfloat16)
    shipped = shipped_precision(device)
    results["matmul_gflops"] = {"fp32": fp32_peak, "bf16": bf16_peak}
    print(
        f"# device: {device}  torch {torch.__version__}  threads {torch.get_num_threads()}  shipped precision: "
        f"{shipped}"
    )
    print(f"# dense matmul 2048^2: fp32 {fp32_peak:.0f} GFLOP/s, bf16 {bf16_peak:.0f} GFLOP/s (measured now)")
    rows = results.setdefault("rows", [])
    print_rows([], header=True)
    for profile in profiles:
        config = get_profile(profile)
        # The paper's 64x128x128 patch takes minutes per step on this CPU: time 32^3 and scale by voxels.
        patch = config.patch_size if profile == "quick" else (32, 32, 32)
        flops = step_flops(config, patch)
        scale = math.prod(config.patch_size) / math.prod(patch)
        for label, precision, channels_last in (
            ("shipped", shipped, True),
            ("eager fp32", "fp32", False),
        ):
            seconds, _ = time_training(
                config,
                patch,
                device,
                precision,
                channels_last,
                steps=3 if profile == "quick" else 2,
            )
            gflops = flops / seconds / 1e9
            peak = bf16_peak if precision == "bf16" else fp32_peak
            note = (
                ""
                if scale == 1
                else f"timed at {patch[0]}^3 patches; x{scale:.0f} voxels for the paper's {config.patch_size}"
            )
            rows.append(
                {
                    "profile": profile,
                    "variant": label,
                    "precision": precision,
                    "what": "train step",
                    "seconds": seconds,
                    "seconds_full_patch_est": seconds * scale,
                    "gflops": gflops,
                    "fraction_of_matmul": gflops / peak,
                    "note": note,
                }
            )
            print_rows(rows[-1:], header=False)
        for label, precision, channels_last in (
            ("shipped", shipped, True),
            ("eager fp32", "fp32", False),
        ):
            max_windows = None
            if profile == "paper":
                max_windows = 1
            elif precision == "fp32":
                max_windows = 64
            data = infer_child(profile, precision, channels_last, VOLUME, max_windows)
            per_window = data["seconds"] / data["windows"]
            full_seconds = (
                per_window * data["windows_full"] if data["windows"] < data["windows_full"] else data["seconds"]
            )
            voxels_s = math.prod(VOLUME) / full_seconds
            note = (
                ""
                if data["windows"] == data["windows_full"]
                else (
                    f"timed {data['windows']} of {data['windows_full']} windows on a "
                    f"{'x'.join(map(str, data['part'][::-1]))} part; full volume extrapolated; peak RSS is the part's"
                )
            )
            rows.append(
                {
                    "profile": profile,
                    "variant": label,
                    "precision": precision,
                    "what": "inference 400x400x300",
                    "seconds": full_seconds,
                    "voxels_per_s": voxels_s,
                    "peak_rss_gib": data["child_peak_rss_bytes"] / 2**30,
                    "note": note,
                }
            )
            print_rows(rows[-1:], header=False)


def gpu_suite(device, results, small=False):
    """Paper profile training fp32 / bf16, inference on 400x400x300, peak GPU memory (cyclegan_gpu.sh)."""
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True
        name = torch.cuda.get_device_name(device)
    else:
        name = "cpu"
    results["device_name"] = name
    results["tf32_convolutions"] = bool(torch.backends.cudnn.allow_tf32) if device.type == "cuda" else None
    fp32_peak = matmul_gflops(device, torch.float32)
    bf16_peak = matmul_gflops(device, torch.bfloat16)
    results["matmul_gflops"] = {"fp32": fp32_peak, "bf16": bf16_peak}
    print(
        f"# device: {name}  torch {torch.__version__}  matmul fp32 {fp32_peak:.0f} GFLOP/s, bf16 {bf16_peak:.0f} "
        "GFLOP/s" + (f"  (cudnn TF32 convolutions: {torch.backends.cudnn.allow_tf32})" if device.type == "cuda" else "")
    )
    config = get_profile("paper")
    if small:  # for testing the script on a CPU: tiny sizes
        config = config.with_overrides(
            ngf=4,
            ndf=4,
            n_res_blocks=1,
            patch_size=(24, 32, 32),
            window=(24, 32, 32),
            overlap=0.5,
        )
    patch = config.patch_size
    flops = step_flops(config, patch)
    rows = results.setdefault("rows", [])
    results["errors"] = []
    channels_last = device.type == "cpu"
    print_rows([], header=True)
    for precision in ("fp32", "bf16"):
        try:
            seconds, peak = time_training(
                config,
                patch,
                device,
                precision,
                channels_last=channels_last,
                warmup=3 if device.type == "cuda" else 1,
                steps=10 if device.type == "cuda" else 2,
            )
        except Exception as exc:  # keep the other figures
            results["errors"].append(f"train {precision}: {type(exc).__name__}: {exc}")
            print(f"# train {precision} failed: {exc}", flush=True)
            continue
        gflops = flops / seconds / 1e9
        rows.append(
            {
                "profile": "paper" if not small else "paper (tiny sizes)",
                "variant": precision,
                "precision": precision,
                "what": f"train step {patch}",
                "seconds": seconds,
                "steps_per_s": 1 / seconds,
                "gflops": gflops,
                "fraction_of_matmul": gflops / (bf16_peak if precision == "bf16" else fp32_peak),
                "peak_gpu_gib": None if peak is None else peak / 2**30,
                "note": "",
            }
        )
        print_rows(rows[-1:], header=False)
        if device.type == "cuda":
            torch.cuda.empty_cache()
    shape = VOLUME if not small else (30, 40, 40)
    for profile in ("quick", "paper"):
        cfg = config if profile == "paper" else get_profile("quick")
        if small and profile == "quick":
            cfg = cfg.with_overrides(ngf=4, n_res_blocks=1, window=(24, 32, 32))
        max_windows = 800 if (profile == "paper" and not small) else None
        precision = "bf16"
        try:
            seconds, done, full, peak = infer_direct(
                cfg,
                shape,
                device,
                precision,
                channels_last=channels_last,
                max_windows=max_windows,
            )
        except Exception as exc:
            results["errors"].append(f"inference {profile}: {type(exc).__name__}: {exc}")
            print(f"# inference {profile} failed: {exc}", flush=True)
            continue
        full_seconds = seconds * full / done
        note = "" if done == full else f"timed {done} of {full} windows (z-slab); full volume extrapolated"
        rows.append(
            {
                "profile": profile if not small else f"{profile} (tiny sizes)",
                "variant": precision,
                "precision": precision,
                "what": f"inference {shape[2]}x{shape[1]}x{shape[0]} window {cfg.window} overlap {cfg.overlap}",
                "seconds": full_seconds,
                "voxels_per_s": math.prod(shape) / full_seconds,
                "peak_gpu_gib": None if peak is None else peak / 2**30,
                "windows": full,
                "note": note,
            }
        )
        print_rows(rows[-1:], header=False)
        if device.type == "cuda":
            torch.cuda.empty_cache()


COLUMNS = [
    "profile",
    "variant",
    "what",
    "seconds",
    "steps_per_s",
    "gflops",
    "fraction_of_matmul",
    "voxels_per_s",
    "peak_rss_gib",
    "peak_gpu_gib",
    "note",
]


def print_rows(rows, header=True, columns=None):
    present = columns or COLUMNS
    if header:
        print("| " + " | ".join(present) + " |")
        print("|" + "---|" * len(present))
    for r in rows:
        cells = []
        for c in present:
            v = r.get(c)
            if v is None:
                cells.append("")
            elif isinstance(v, float):
                cells.append(f"{v:.3g}" if c != "voxels_per_s" else f"{v:,.0f}")
            else:
                cells.append(str(v))
        print("| " + " | ".join(cells) + " |")
    sys.stdout.flush()


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--profiles", default="quick,paper")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--suite", choices=["cpu", "gpu"], default="cpu")
    parser.add_argument("--small", action="store_true", help="tiny sizes (tests the GPU suite on a CPU)")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    parser.add_argument("--json", default=None, help="also write the figures to this JSON file")
    parser.add_argument("--_child", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    if args._child:
        _child(json.loads(args._child))
        return
    device = torch.device(args.device)
    results = {
        "device": str(device),
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
    }
    if args.suite == "gpu":
        gpu_suite(device, results, small=args.small)
    else:
        cpu_suite([p for p in args.profiles.split(",") if p], device, results)
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
