"""Where CycleGAN inference time goes on a lung-sized scan, and what worker threads cost.

1. One process: the stages of ``CycleGANHarmonizer.translate`` for a scan of the lung preset's BUD-VPHD
   site (84x59x110 at 4.07x4.07x3.0 mm) translated on TUB's 2.04x2.04x3.0 mm grid, the training grid of
   ``harmkit bench --preset lung`` (167x118x110 voxels, 24 windows of 64^3): resampling there, the
   sliding-window network passes, the SUV transform and resampling the change back.
2. The network on one 64^3 window with torch's ``nn.Conv3d`` and with harmkit's inference convolutions
   (``harmkit_cyclegan.nets.Conv3d``: oneDNN called directly, a one-channel output as a depthwise sum), on 1
   thread and on every core, in one run so the ratio is fair.
3. A pool of 2 workers translating 4 scans, once with the workers sharing the cores (harmkit's default:
   cores // workers torch threads each) and once with every worker using every core (OMP_NUM_THREADS
   set to the core count: what happened before the pool limited threads).

    python benchmarks/cyclegan_inference.py
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

SHAPE = (110, 59, 84)  # (z, y, x)
SPACING = (4.07, 4.07, 3.0)  # (x, y, z)
TRAIN_SPACING = (2.04, 2.04, 3.0)


def make_model(folder: Path) -> Path:
    """A quick-profile model whose generators are trained for 2 steps (the cost does not depend on the weights)."""
    import harmkit as hk
    from harmkit.testing import synthetic_cohort

    cohort = synthetic_cohort(n_per_site=2, shape=(32, 40, 40))
    gan = hk.get_harmonizer("gan", steps=2, progress=False, spacing=TRAIN_SPACING, monitor_patches=0)
    gan.fit(cohort, "A")
    # Random-looking generators: perturb the zero last convolution so the network does real work.
    import torch

    for state in gan._generators.values():
        for value in state.values():
            if value.dtype.is_floating_point:
                value.add_(0.01 * torch.randn_like(value))
    return gan.save(folder / "model")


def make_scan(seed: int):
    import SimpleITK as sitk

    from harmkit.data import Scan

    rng = np.random.default_rng(seed)
    array = np.abs(rng.normal(1.0, 0.3, SHAPE)).astype(np.float32)
    image = sitk.GetImageFromArray(array)
    image.SetSpacing(SPACING)
    return Scan(f"S{seed}", "B", image)


def stages(model_dir: Path) -> None:
    import SimpleITK as sitk
    import torch

    import harmkit as hk
    from harmkit_cyclegan.config import CycleGANConfig
    from harmkit_cyclegan.harmonizer import resample_to_spacing
    from harmkit_cyclegan.inference import sliding_window
    from harmkit_cyclegan.intensity import to_network
    from harmkit_cyclegan.training import resolve_precision

    torch.set_num_threads(len(os.sched_getaffinity(0)))
    gan = hk.load_model(model_dir)
    config = CycleGANConfig.from_dict(gan.config_)
    image = make_scan(0).load_image()
    net = gan._network("x_to_y")
    t = time.perf_counter()
    resampled = resample_to_spacing(image, gan.spacing_, sitk.sitkLinear)
    t_resample = time.perf_counter() - t
    values = to_network(sitk.GetArrayViewFromImage(resampled))
    precision = resolve_precision(config.precision, torch.device("cpu"))
    t = time.perf_counter()
    sliding_window(
        values,
        net,
        config.window,
        config.overlap,
        channels_last=True,
        precision=precision,
    )
    t_net = time.perf_counter() - t
    t = time.perf_counter()
    gan.translate(image, "x_to_y")
    t_total = time.perf_counter() - t
    print(
        f"scan {SHAPE[::-1]} voxels at {SPACING} mm -> training grid {resampled.GetSize()} "
        f"({np.prod(resampled.GetSize()) / 1e6:.2f} M voxels), precision {precision}, "
        f"{torch.get_num_threads()} threads"
    )
    print(f"  resample to the training grid {t_resample:6.2f} s")
    print(f"  network (sliding window)      {t_net:6.2f} s")
    print(f"  whole translate               {t_total:6.2f} s  (rest: SUV transform, change resampled back)")


def convolutions(model_dir: Path) -> None:
    """Seconds per 64^3 window of the generator with torch's convolutions and with harmkit's."""
    import torch
    from torch import nn

    import harmkit as hk
    from harmkit_cyclegan import nets

    net = hk.load_model(model_dir)._network("x_to_y")
    window = torch.rand(1, 1, 64, 64, 64).to(memory_format=torch.channels_last_3d) * 2 - 1
    fast_forward = nets.Conv3d._conv_forward

    def seconds(forward, repeats: int = 5) -> float:
        nets.Conv3d._conv_forward = forward  # type: ignore[method-assign]
        try:
            with torch.inference_mode():
                net(window)  # warm-up
                started = time.perf_counter()
                for _ in range(repeats):
                    net(window)
            return (time.perf_counter() - started) / repeats
        finally:
            nets.Conv3d._conv_forward = fast_forward  # type: ignore[method-assign]

    for threads in sorted({1, len(os.sched_getaffinity(0))}):
        torch.set_num_threads(threads)
        plain, fast = seconds(nn.Conv3d._conv_forward), seconds(fast_forward)
        print(
            f"one 64^3 window, {threads} thread(s): torch's nn.Conv3d {plain * 1000:5.0f} ms, "
            f"harmkit's inference convolutions {fast * 1000:5.0f} ms ({plain / fast:.1f}x faster)"
        )


def pool(model_dir: Path, env_threads: str | None) -> float:
    """Seconds for 2 workers to translate 4 scans (a child process, so the environment is fresh)."""
    env = dict(os.environ)
    env.pop("OMP_NUM_THREADS", None)
    if env_threads:
        env["OMP_NUM_THREADS"] = env_threads
    here, model = str(Path(__file__).parent), str(model_dir)
    code = (
        f"import sys, time; sys.path.insert(0, {here!r}); import cyclegan_inference as b; "
        "from harmkit.execution import LocalExecutor; t = time.perf_counter(); "
        f"ex = LocalExecutor(jobs=2, progress=False); r = ex.map(b.translate_one, [({model!r}, i) for i in range(4)]); "
        "ex.close(); assert all(x.ok for x in r), r; print(time.perf_counter() - t)"
    )
    out = subprocess.run(
        [sys.executable, "-c", code],
        env=env,
        capture_output=True,
        text=True,
        check=True,
    )
    return float(out.stdout.strip().splitlines()[-1])


def translate_one(item) -> None:
    import harmkit as hk

    model_dir, seed = item
    hk.load_model(model_dir).transform(make_scan(seed), target_site="A")


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        model_dir = make_model(Path(tmp))
        stages(model_dir)
        convolutions(model_dir)
        cores = len(os.sched_getaffinity(0))
        shared = pool(model_dir, None)
        every = pool(model_dir, str(cores))
        print(
            f"2 workers, 4 scans: {shared:.1f} s sharing {cores} cores ({max(1, cores // 2)} thread(s) each); "
            f"{every:.1f} s with {cores} threads each ({every / shared:.2f}x slower)"
        )


if __name__ == "__main__":
    main()
