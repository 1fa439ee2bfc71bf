"""CycleGAN training with safe, resumable checkpoints (torch + numpy + standard library only).

One :class:`Trainer` learns both directions at once: ``G_ab`` (domain A ->
domain B) and ``G_ba`` (B -> A), judged by ``D_b`` and ``D_a``. Data comes
from two *samplers*, callables ``sample(rng, n) -> float32 array (n, 1, z, y,
x)`` already in the network's [-1, 1] intensity range; all randomness of
training (patch positions, image pool) is drawn from one numpy generator
whose state is checkpointed, and weights are initialised from the seeded
torch generator, so a run interrupted and resumed gives the same weights as
an uninterrupted one on CPU.

Files in ``out_dir``:

- ``checkpoint.pt`` -- networks, optimizers, schedulers, image pools, RNG
  states, step; written to a temporary name and renamed; read back with
  ``torch.load(weights_only=True)``, so a tampered file cannot run code.
- ``losses.csv`` -- one row per step (rows after the last checkpoint are
  dropped on resume, so the log always matches the weights); ``skip_G`` /
  ``skip_D`` are 1 where the NaN guard skipped that update. At each
  checkpoint the row also holds the learning monitor (see :meth:`Trainer.monitor`):
  each discriminator's accuracy on fixed monitor patches (real against
  translated; 0.5 is chance) and a texture statistic of real and translated
  patches, so the log says whether the model learned.
- ``preview_<step>.png`` -- input / A->B output / difference of a fixed patch
  (middle slice) at each checkpoint.
"""

from __future__ import annotations

import contextlib
import csv
import json
import math
import os
import pickle
import struct
import tempfile
import time
import warnings
import zlib
from collections.abc import Callable
from pathlib import Path
from typing import cast

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from .config import NOT_LEARNED, CycleGANConfig
from .intensity import to_network
from .monitor import MONITOR_COLUMNS
from .nets import (
    FilterGenerator3d,
    HighPassDiscriminator3d,
    PatchDiscriminator3d,
    ResnetGenerator3d,
    band_pass,
    gaussian_kernel,
    init_weights,
    separable_blur,
)

Sampler = Callable[[np.random.Generator, int], np.ndarray]
CHECKPOINT = "checkpoint.pt"
LOSSES = "losses.csv"
FORMAT = "harmkit-cyclegan-checkpoint/1"
LOSS_COLUMNS = (
    "step",
    "loss_G",
    "adv_ab",
    "adv_ba",
    "cycle",
    "identity",
    "feature_matching",
    "texture",
    "anatomy",
    "loss_D_a",
    "loss_D_b",
    "lr",
    "skip_G",
    "skip_D",
    "seconds",
)


class CheckpointError(Exception):
    """A checkpoint that cannot or must not be loaded (message says why and what to do)."""


class TrainingError(Exception):
    """Training diverged (message says what happened and what to do)."""


# Voxels of an uptake level a patch needs (inside the bands' border) for the band-energy loss to measure it.
MIN_LEVEL_VOXELS = 27
# Consecutive optimisation steps with a non-finite loss or gradient after which training stops.
MAX_NONFINITE_STEPS = 20


def huber(error: torch.Tensor, beta: float) -> torch.Tensor:
    """``error**2`` below ``beta``, continued linearly above it (same value and slope at ``beta``)."""
    if math.isinf(beta):
        return error.square()
    size = error.abs()
    return torch.where(size < beta, error.square(), 2 * beta * size - beta * beta)


def resolve_precision(precision: str, device: torch.device) -> str:
    """'auto' -> 'bf16' on CUDA with bf16 and on CPUs with native bf16 (AVX512-BF16/AMX), else 'fp32'."""
    if precision != "auto":
        return precision
    if device.type == "cuda":
        return "bf16" if torch.cuda.is_bf16_supported() else "fp32"
    cpu = getattr(torch, "cpu", None)
    native = any(
        getattr(cpu, name, lambda: False)() for name in ("_is_amx_tile_supported", "_is_avx512_bf16_supported")
    )
    return "bf16" if native else "fp32"


GENERATOR_OF_DIRECTION = {"x_to_y": "G_ab", "y_to_x": "G_ba"}
"""The trainer's generator behind each direction of a fitted model (domain x is the trainer's A)."""


def build_generator(config: CycleGANConfig, spacing=None) -> nn.Module:
    """The generator of ``config``; ``spacing`` (x, y, z, mm) of the training grid scales the ``filter``
    generator's sigmas per axis when ``config.filter_mm``."""
    if config.generator == "filter":
        axis_scale = (1.0, 1.0, 1.0)
        if config.filter_mm and spacing is not None:
            sx, sy, sz = (float(s) for s in spacing)
            axis_scale = (sx / sz, sx / sy, 1.0)  # (z, y, x), in units of the x voxel
        return FilterGenerator3d(
            config.filter_sigmas,
            config.suv_max,
            config.suv_scale,
            config.filter_levels,
            noise_sigmas=config.filter_noise_sigmas or None,
            # "noisier": the trainer bounds one generator once it has measured the domains (Trainer.run); the
            # other is unbounded, and the bounded one's weights stay on its bounds after training.
            min_blur=config.filter_min_blur if config.filter_min_blur_towards == "both" else -math.inf,
            axis_scale=axis_scale,
        )
    return ResnetGenerator3d(
        config.ngf,
        config.n_res_blocks,
        config.n_downsampling,
        residual=config.residual,
        upsampling=config.upsampling,
        residual_highpass=config.residual_highpass,
        noise_input=config.noise_input,
    )


def build_discriminator(config: CycleGANConfig) -> nn.Module:
    if config.d_highpass_gain > 0:
        return HighPassDiscriminator3d(
            config.ndf,
            config.n_d_layers,
            gain=config.d_highpass_gain,
            sigmas=config.d_band_sigmas,
            clip=config.d_band_clip,
        )
    return PatchDiscriminator3d(config.ndf, config.n_d_layers)


def build_networks(config: CycleGANConfig, spacing=None) -> dict[str, nn.Module]:
    """The four networks, initialised from the current torch RNG state (``spacing``: see :func:`build_generator`)."""
    nets: dict[str, nn.Module] = {
        "G_ab": build_generator(config, spacing),
        "G_ba": build_generator(config, spacing),
        "D_a": build_discriminator(config),
        "D_b": build_discriminator(config),
    }
    for net in nets.values():
        init_weights(net)
    return nets


class ImagePool:
    """Buffer of generated patches; the discriminator sees a mix of new and older fakes."""

    def __init__(self, size: int) -> None:
        self.size = size
        self.images: list[torch.Tensor] = []

    def query(self, images: torch.Tensor, rng: np.random.Generator) -> torch.Tensor:
        if self.size == 0:
            return images
        out = []
        for image in images:
            image = image[None].detach().clone()
            if len(self.images) < self.size:
                self.images.append(image)
                out.append(image)
            elif rng.random() > 0.5:
                index = int(rng.integers(0, self.size))
                out.append(self.images[index].clone())
                self.images[index] = image
            else:
                out.append(image)
        return torch.cat(out, 0)

    def state(self) -> torch.Tensor:
        if not self.images:
            return torch.zeros(0)
        return torch.cat(self.images, 0).cpu()

    def load(self, stacked: torch.Tensor, device: torch.device) -> None:
        self.images = [t[None].to(device) for t in stacked] if stacked.numel() else []


def lr_factor(step: int, total: int, decay_start: float) -> float:
    """Constant learning rate, then linear decay to zero over the last ``1 - decay_start`` of training."""
    begin = int(total * decay_start)
    if step < begin:
        return 1.0
    return max(0.0, 1.0 - (step - begin) / float(max(total - begin, 1)))


class Trainer:
    """Trains a CycleGAN between samplers A and B, checkpointing into ``out_dir``."""

    seconds: float = 0.0
    """Wall-clock seconds of :meth:`run`, recorded by the caller that timed it."""
    bounded_generator: str | None = None
    """``filter_min_blur_towards="noisier"``: the generator the bound was put on (``"G_ab"`` or ``"G_ba"``)."""
    healthy_band_shift: float | None = None
    """``filter_min_blur_towards="noisier"``: B's minus A's mean log band energy in healthy tissue (> 0: B noisier)."""

    def __init__(
        self,
        config: CycleGANConfig,
        sample_a: Sampler,
        sample_b: Sampler,
        out_dir: str | os.PathLike,
        device: str | torch.device = "cpu",
        progress: Callable[[int, int, dict], None] | None = None,
        monitor: tuple[np.ndarray, np.ndarray] | None = None,
        spacing: tuple[float, float, float] | None = None,
    ) -> None:
        """``spacing`` (x, y, z, mm) of the patches: the ``filter`` generator's sigmas per axis (``filter_mm``)."""
        self.config = config.validated()
        self.monitor_patches = monitor
        """Fixed patches ``(A, B)`` (n, 1, z, y, x), ideally of scans held out of training, for :meth:`monitor`."""
        self.sample_a = sample_a
        self.sample_b = sample_b
        self.out_dir = Path(out_dir)
        self.device = torch.device(device)
        self.precision = resolve_precision(config.precision, self.device)
        self.progress = progress
        self.memory_format = torch.channels_last_3d if config.channels_last else torch.contiguous_format

        torch.manual_seed(config.seed)
        self.rng = np.random.default_rng(config.seed)
        self.nets = build_networks(config, spacing)
        for name, net in self.nets.items():
            # Module.to takes memory_format (documented); torch's overloads for it omit the keyword.
            self.nets[name] = net.to(self.device, memory_format=self.memory_format)  # type: ignore[call-overload]
        betas = (config.beta1, config.beta2)
        self.opt_G = torch.optim.Adam(
            list(self.nets["G_ab"].parameters()) + list(self.nets["G_ba"].parameters()),
            lr=config.lr,
            betas=betas,
        )
        self.opt_D = torch.optim.Adam(
            list(self.nets["D_a"].parameters()) + list(self.nets["D_b"].parameters()),
            lr=config.lr if config.lr_d is None else config.lr_d,
            betas=betas,
        )
        schedule = lambda step: lr_factor(step, config.steps, config.decay_start)  # noqa: E731
        self.sched_G = torch.optim.lr_scheduler.LambdaLR(self.opt_G, schedule)
        self.sched_D = torch.optim.lr_scheduler.LambdaLR(self.opt_D, schedule)
        self.pool_a = ImagePool(config.pool_size)
        self.pool_b = ImagePool(config.pool_size)
        self.step = 0
        self.skipped_steps = 0
        """Updates skipped because a loss or gradient was not finite (NaN guard; see train_step)."""
        self._nonfinite_run = 0
        self._preview: np.ndarray | None = None
        self._anatomy_kernel = gaussian_kernel(config.cycle_sigma) if config.cycle_sigma > 0 else None
        self._texture_kernels = [gaussian_kernel(s) for s in config.texture_sigmas]
        self._texture_shift: torch.Tensor | None = None
        self._level_kernel = gaussian_kernel(2.0)
        suv_bounds = np.array([config.body_threshold, *config.texture_levels])
        self._level_bounds = [float(v) for v in to_network(suv_bounds, config.suv_max, config.suv_scale)]

    @property
    def preview(self) -> np.ndarray:
        """A fixed patch of domain A, drawn from its own generator so it never shifts the training stream."""
        if self._preview is None:
            self._preview = self.sample_a(np.random.default_rng(self.config.seed + 7919), 1)
        return self._preview

    # -- checkpoints ----------------------------------------------------------
    @property
    def checkpoint_path(self) -> Path:
        return self.out_dir / CHECKPOINT

    def state_dict(self) -> dict:
        return {
            "format": FORMAT,
            "step": self.step,
            "skipped_steps": self.skipped_steps,
            "config": self.config.to_dict(),
            "precision": self.precision,
            "nets": {name: net.state_dict() for name, net in self.nets.items()},
            "optimizers": {"G": self.opt_G.state_dict(), "D": self.opt_D.state_dict()},
            "schedulers": {
                "G": self.sched_G.state_dict(),
                "D": self.sched_D.state_dict(),
            },
            "pools": {"a": self.pool_a.state(), "b": self.pool_b.state()},
            # The bound's decision, so a reused finished training (which reads no data) can still report it.
            "bound": {"generator": self.bounded_generator, "healthy_band_shift": self.healthy_band_shift},
            "rng": {
                "torch": torch.get_rng_state(),
                "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
                "numpy": json.dumps(self.rng.bit_generator.state),
            },
        }

    def save_checkpoint(self) -> Path:
        """Write the whole training state atomically (temporary file, then rename)."""
        self.out_dir.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{CHECKPOINT}.", dir=self.out_dir)
        os.close(fd)
        try:
            torch.save(self.state_dict(), tmp)
            os.replace(tmp, self.checkpoint_path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        return self.checkpoint_path

    def load_checkpoint(self, path: str | os.PathLike | None = None) -> int:
        """Restore everything from a checkpoint; returns its step."""
        state = load_checkpoint(path or self.checkpoint_path, map_location=self.device)
        saved = state["config"]
        current = self.config.to_dict()
        # A field missing from an older checkpoint had its default value then.
        defaults = CycleGANConfig().to_dict()
        changed = sorted(k for k in current if k not in NOT_LEARNED and saved.get(k, defaults[k]) != current[k])
        if changed:
            raise CheckpointError(
                f"{path or self.checkpoint_path}: written with different hyper-parameters ({', '.join(changed)}); "
                f"use a fresh output folder or the same settings to resume"
            )
        for name, net in self.nets.items():
            net.load_state_dict(state["nets"][name])
        self.opt_G.load_state_dict(state["optimizers"]["G"])
        self.opt_D.load_state_dict(state["optimizers"]["D"])
        self.sched_G.load_state_dict(state["schedulers"]["G"])
        self.sched_D.load_state_dict(state["schedulers"]["D"])
        self.pool_a.load(state["pools"]["a"], self.device)
        self.pool_b.load(state["pools"]["b"], self.device)
        torch.set_rng_state(state["rng"]["torch"])
        if state["rng"]["cuda"] and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(state["rng"]["cuda"])
        self.rng.bit_generator.state = json.loads(state["rng"]["numpy"])
        self.step = int(state["step"])
        self.skipped_steps = int(state.get("skipped_steps", 0))
        bound = state.get("bound") or {}  # absent from checkpoints before plugin 0.10.1
        if bound.get("generator"):
            self.bounded_generator = str(bound["generator"])
            self.healthy_band_shift = float(bound["healthy_band_shift"])
            generator = self.nets[self.bounded_generator]
            assert isinstance(generator, FilterGenerator3d)
            generator.min_blur = self._bounds_for(generator)
        return self.step

    # -- training ---------------------------------------------------------------
    def _autocast(self):
        if self.precision == "bf16":
            return torch.autocast(device_type=self.device.type, dtype=torch.bfloat16)
        return contextlib.nullcontext()

    def _batch(self, sampler: Sampler) -> torch.Tensor:
        array = np.ascontiguousarray(sampler(self.rng, self.config.batch_size), dtype=np.float32)
        return torch.from_numpy(array).to(self.device).contiguous(memory_format=self.memory_format)

    def _anatomy(self, x: torch.Tensor) -> torch.Tensor:
        """What the cycle and identity losses compare: the patch, or its Gaussian blur when ``cycle_sigma`` > 0.

        Blurred, the losses keep anatomy and uptake but leave the noise realisation free, which no
        translation between noise textures can reproduce after a round trip (see docs/methods/cyclegan.md).
        """
        if self._anatomy_kernel is None:
            return x
        return separable_blur(x, self._anatomy_kernel)

    def band_log_energy(self, x: torch.Tensor, levels: torch.Tensor) -> torch.Tensor:
        """Per patch, uptake level and band of ``texture_sigmas``: the mean of ``log(band^2)`` over the level's voxels.

        Returns (n, levels, bands). The mean of the log, not the log of the mean: the few voxels at edges and hot
        spots, whose band energy is orders of magnitude above the noise's, would otherwise decide it, while for
        noise it moves exactly with ``2 log(noise SD)``. ``levels`` (n, L, z, y, x) are the 0/1 masks of
        :meth:`level_masks` of the *source* patch, used for a source and its translation alike.
        """
        weight = self._interior(levels).flatten(2)  # (n, L, voxels)
        count = weight.sum(dim=2).clamp(min=1.0)
        body = weight.amax(dim=1)  # (n, voxels)
        values = []
        for band in band_pass(x.float(), self._texture_kernels):
            energy = self._interior(band).pow(2).flatten(1)  # (n, voxels)
            # A floor relative to the patch's own mean energy keeps log() finite and its gradient bounded,
            # and scales with the band, so scaling the noise by k still moves the statistic by exactly 2 log k.
            mean = (energy * body).sum(dim=1, keepdim=True) / body.sum(dim=1, keepdim=True).clamp(min=1.0)
            log_energy = torch.log(energy + 1e-3 * mean.detach() + 1e-12)
            values.append((log_energy[:, None, :] * weight).sum(dim=2) / count)
        return torch.stack(values, dim=2)

    def level_masks(self, x: torch.Tensor) -> torch.Tensor:
        """0/1 masks (n, L, z, y, x) of the patch's uptake levels: the patch, Gaussian-smoothed over 2 voxels,
        between the body threshold and the first of ``texture_levels``, between that and the next, ... (one level,
        the body, when ``texture_levels`` is empty)."""
        smooth = separable_blur(x.float(), self._level_kernel)
        bounds = [*self._level_bounds, float("inf")]
        return torch.cat([((smooth > low) & (smooth <= high)).float() for low, high in zip(bounds, bounds[1:])], dim=1)

    def _present(self, levels: torch.Tensor) -> torch.Tensor:
        """(n, L) 1 where a patch has enough voxels of a level (inside the bands' border) to measure it."""
        return (self._interior(levels).flatten(2).sum(dim=2) >= MIN_LEVEL_VOXELS).float()

    def _interior(self, x: torch.Tensor) -> torch.Tensor:
        """``x`` (n, c, z, y, x) without the border of the widest band kernel, where replicated edges distort bands."""
        edge = len(self._texture_kernels[-1]) // 2
        return x[..., edge:-edge, edge:-edge, edge:-edge] if edge else x

    @property
    def texture_shift(self) -> torch.Tensor:
        """Mean log band energy of domain B minus that of domain A, per uptake level and band (what A->B must add).

        Measured once, on ``texture_patches`` patches of each domain drawn from their own random generator
        (so it never shifts the training stream and is the same on resume). A level that one domain's patches
        never reach gets a shift of 0.
        """
        if self._texture_shift is None:
            rng = np.random.default_rng(self.config.seed + 15485863)
            means = []
            for sampler in (self.sample_a, self.sample_b):
                patches = torch.from_numpy(np.ascontiguousarray(sampler(rng, self.config.texture_patches), np.float32))
                with torch.no_grad():
                    patches = patches.to(self.device)
                    levels = self.level_masks(patches)
                    present = self._present(levels)[:, :, None]  # (n, L, 1)
                    energy = self.band_log_energy(patches, levels)
                    total = present.sum(dim=0)
                    means.append(((energy * present).sum(dim=0) / total.clamp(min=1.0), total > 0))
            (mean_a, seen_a), (mean_b, seen_b) = means
            self._texture_shift = torch.where(seen_a & seen_b, mean_b - mean_a, torch.zeros_like(mean_a))
        return self._texture_shift

    def _texture_loss(self, real_a, fake_b, real_b, fake_a) -> torch.Tensor:
        """Band-energy loss: each translation changes its source patch's log band energies by the domains' shift.

        The target is the patch's own energy plus the shift of each uptake level, not the domain mean, so a
        patch of bright or edge-rich anatomy is not pushed towards an average patch: only the change between the
        sites is asked for.
        """
        shift = self.texture_shift
        terms = []
        for real, fake, sign in ((real_a, fake_b, 1.0), (real_b, fake_a, -1.0)):
            with torch.no_grad():
                levels = self.level_masks(real)
                present = self._present(levels)[:, :, None].expand(-1, -1, shift.shape[-1])
                source = self.band_log_energy(real, levels)
            target = source + sign * shift
            error = huber(self.band_log_energy(fake, levels) - target, self.config.texture_beta)
            terms.append((error * present).sum() / present.sum().clamp(min=1.0))
        return self.config.lambda_texture * (terms[0] + terms[1])

    def train_step(self) -> dict[str, float]:
        """One optimisation step of both generators, then both discriminators."""
        cfg = self.config
        G_ab, G_ba, D_a, D_b = (self.nets[k] for k in ("G_ab", "G_ba", "D_a", "D_b"))
        real_a = self._batch(self.sample_a)
        real_b = self._batch(self.sample_b)

        for d in (D_a, D_b):
            d.requires_grad_(False)
        with self._autocast():
            fake_b = G_ab(real_a)
            rec_a = G_ba(fake_b)
            fake_a = G_ba(real_b)
            rec_b = G_ab(fake_a)
            score_b, fake_features_b = _judge(D_b, fake_b)
            score_a, fake_features_a = _judge(D_a, fake_a)
            adv_ab = _lsgan(score_b, True)
            adv_ba = _lsgan(score_a, True)
            if cfg.lambda_feature_matching > 0:
                with torch.no_grad():
                    real_features_b = _judge(D_b, real_b)[1]
                    real_features_a = _judge(D_a, real_a)[1]
            if cfg.lambda_identity > 0:
                idt_b = G_ab(real_b)
                idt_a = G_ba(real_a)
            if cfg.noise_free_constraints and cfg.noise_input:
                # the constraints judge the translations without their added noise (a zero noise channel)
                clean_b, clean_a = _without_noise(G_ab, real_a), _without_noise(G_ba, real_b)
                rec_a, rec_b = _without_noise(G_ba, clean_b), _without_noise(G_ab, clean_a)
                if cfg.lambda_identity > 0:
                    idt_b, idt_a = _without_noise(G_ab, real_b), _without_noise(G_ba, real_a)
            else:
                clean_b, clean_a = fake_b, fake_a
        anatomy = self._anatomy
        cycle = cfg.lambda_cycle * (
            F.l1_loss(anatomy(rec_a.float()), anatomy(real_a)) + F.l1_loss(anatomy(rec_b.float()), anatomy(real_b))
        )
        if cfg.lambda_identity > 0:
            identity = (
                cfg.lambda_cycle
                * cfg.lambda_identity
                * (
                    F.l1_loss(anatomy(idt_b.float()), anatomy(real_b))
                    + F.l1_loss(anatomy(idt_a.float()), anatomy(real_a))
                )
            )
        else:
            identity = torch.zeros((), device=self.device)
        if cfg.lambda_feature_matching > 0:
            matching = cfg.lambda_feature_matching * (
                _feature_matching(fake_features_b, real_features_b)
                + _feature_matching(fake_features_a, real_features_a)
            )
        else:
            matching = torch.zeros((), device=self.device)
        if cfg.lambda_texture > 0:
            texture = self._texture_loss(real_a, fake_b, real_b, fake_a)
        else:
            texture = torch.zeros((), device=self.device)
        if cfg.lambda_anatomy > 0:
            kept = cfg.lambda_anatomy * (
                F.l1_loss(anatomy(clean_b.float()), anatomy(real_a))
                + F.l1_loss(anatomy(clean_a.float()), anatomy(real_b))
            )
        else:
            kept = torch.zeros((), device=self.device)
        loss_G = adv_ab + adv_ba + cycle + identity + matching + texture + kept
        self.opt_G.zero_grad(set_to_none=True)
        loss_G.backward()
        finite_G = _finite_update(loss_G, self.opt_G)
        if finite_G:
            self.opt_G.step()
            for generator in (G_ab, G_ba):
                if isinstance(generator, FilterGenerator3d):
                    generator.constrain_()

        for d in (D_a, D_b):
            d.requires_grad_(True)
        pooled_b = self.pool_b.query(fake_b.detach().float(), self.rng).contiguous(memory_format=self.memory_format)
        pooled_a = self.pool_a.query(fake_a.detach().float(), self.rng).contiguous(memory_format=self.memory_format)
        with self._autocast():
            loss_D_b = 0.5 * (_lsgan(D_b(real_b), True) + _lsgan(D_b(pooled_b), False))
            loss_D_a = 0.5 * (_lsgan(D_a(real_a), True) + _lsgan(D_a(pooled_a), False))
        self.opt_D.zero_grad(set_to_none=True)
        (loss_D_a + loss_D_b).backward()
        finite_D = _finite_update(loss_D_a + loss_D_b, self.opt_D)
        if finite_D:
            self.opt_D.step()
        # NaN guard: a step whose loss or gradients are not finite (e.g. a bf16 overflow) changes no
        # weights; it is counted, logged (as NaN losses) and training goes on with the next batch.
        if finite_G and finite_D:
            self._nonfinite_run = 0
        else:
            self.skipped_steps += 1
            self._nonfinite_run += 1
            if self._nonfinite_run >= MAX_NONFINITE_STEPS:
                raise TrainingError(
                    f"training diverged: {self._nonfinite_run} consecutive steps up to step {self.step + 1} had a "
                    f"non-finite loss or gradient (precision {self.precision}); retry with precision='fp32', a lower "
                    f"lr (now {cfg.lr:g}) or residual=True"
                )
        lr = self.opt_G.param_groups[0]["lr"]
        with warnings.catch_warnings():
            # A skipped (non-finite) first update makes torch warn that the schedule ran before the
            # optimizer; the schedule counts steps, skipped or not, so the warning does not apply.
            warnings.filterwarnings(
                "ignore",
                message="Detected call of `lr_scheduler.step",
                category=UserWarning,
            )
            self.sched_G.step()
            self.sched_D.step()
        self.step += 1
        values = {
            "loss_G": loss_G,
            "adv_ab": adv_ab,
            "adv_ba": adv_ba,
            "cycle": cycle,
            "identity": identity,
            "feature_matching": matching,
            "texture": texture,
            "anatomy": kept,
            "loss_D_a": loss_D_a,
            "loss_D_b": loss_D_b,
        }
        result = {k: float(v.detach()) for k, v in values.items()}
        result["lr"] = lr
        result["skip_G"] = 0 if finite_G else 1
        result["skip_D"] = 0 if finite_D else 1
        return result

    def run(self, resume: bool = True, stop_after: int | None = None) -> "Trainer":
        """Train to ``config.steps``, resuming from ``out_dir``'s checkpoint when there is one.

        ``stop_after`` ends this call after that many steps without a final
        checkpoint (what an interrupted run leaves behind; used by tests).
        """
        self.out_dir.mkdir(parents=True, exist_ok=True)
        if resume and self.checkpoint_path.exists():
            self.load_checkpoint()
        if self.step < self.config.steps:
            self.bound_towards_noisier()
        _truncate_log(self.out_dir / LOSSES, self.step)
        total = self.config.steps
        done_here = 0
        with open(self.out_dir / LOSSES, "a", newline="") as handle:
            writer = csv.writer(handle)
            if handle.tell() == 0:
                writer.writerow(LOSS_COLUMNS + MONITOR_COLUMNS)
            while self.step < total:
                if stop_after is not None and done_here >= stop_after:
                    return self
                started = time.perf_counter()
                losses = self.train_step()
                seconds = time.perf_counter() - started
                done_here += 1
                checkpoint = self.step % self.config.checkpoint_every == 0 or self.step == total
                monitored = self.monitor() if checkpoint and self.monitor_patches is not None else {}
                row = [
                    self.step,
                    *(f"{losses[k]:.6g}" for k in LOSS_COLUMNS[1:-1]),
                    f"{seconds:.4f}",
                ]
                writer.writerow(row + [f"{monitored[k]:.4f}" if k in monitored else "" for k in MONITOR_COLUMNS])
                handle.flush()
                if checkpoint:
                    self.save_checkpoint()
                    self.write_preview()
                if self.progress is not None:
                    self.progress(self.step, total, losses)
        return self

    def bound_towards_noisier(self) -> None:
        """With ``filter_min_blur_towards="noisier"``, put ``filter_min_blur`` on the generator towards the noisier
        domain: the one whose healthy tissue (the uptake levels below the top one) has the more band energy, the
        mean of :attr:`texture_shift` over those levels and every band. Deterministic (the shift is measured on
        patches of their own generator), so a resumed training bounds the same generator."""
        cfg = self.config
        if cfg.generator != "filter" or cfg.filter_min_blur_towards != "noisier" or self.bounded_generator:
            return
        shift = self.texture_shift
        healthy = shift[:-1] if shift.shape[0] > 1 else shift
        self.healthy_band_shift = float(healthy.mean())
        self.bounded_generator = "G_ab" if self.healthy_band_shift > 0 else "G_ba"
        generator = self.nets[self.bounded_generator]
        assert isinstance(generator, FilterGenerator3d)
        generator.min_blur = self._bounds_for(generator)
        generator.constrain_()

    def _bounds_for(self, generator: FilterGenerator3d) -> tuple[float, ...]:
        """``filter_min_blur`` as one bound per uptake level of ``generator``."""
        bounds = self.config.filter_min_blur
        return bounds * (len(generator.levels) + 1) if len(bounds) == 1 else bounds

    def monitor(self, batch: int = 8) -> dict[str, float]:
        """Learning monitor on the fixed patches: discriminator accuracies and texture statistics.

        ``acc_D_b`` is D_b's accuracy at telling real B patches (mean score > 0.5)
        from A patches translated by G_ab (score < 0.5), averaged over both
        kinds (0.5: chance); ``acc_D_a`` likewise. ``tex_*`` is the mean over
        patches of the SD of ``patch - Gaussian(patch, 1 voxel)`` in network
        units: the translation A->B has learned the texture when ``tex_ab``
        moves from ``tex_a`` towards ``tex_b``.
        """
        if self.monitor_patches is None:
            return {}
        nets = self.nets
        for net in nets.values():
            net.eval()
        scores: dict[str, list[np.ndarray]] = {k: [] for k in ("real_a", "real_b", "fake_a", "fake_b")}
        textures: dict[str, list[np.ndarray]] = {k: [] for k in ("a", "b", "ab", "ba")}
        try:
            with self._evaluation_rng(), torch.no_grad(), self._autocast():
                for domain, patches in zip("ab", self.monitor_patches):
                    other = "b" if domain == "a" else "a"
                    G = nets[f"G_{domain}{other}"]
                    for first in range(0, len(patches), batch):
                        x = torch.from_numpy(np.ascontiguousarray(patches[first : first + batch], dtype=np.float32))
                        x = x.to(self.device).contiguous(memory_format=self.memory_format)
                        y = G(x).float()
                        scores[f"real_{domain}"].append(_patch_scores(nets[f"D_{domain}"](x)))
                        scores[f"fake_{other}"].append(_patch_scores(nets[f"D_{other}"](y)))
                        textures[domain].append(_high_pass_sd(x.float()))
                        textures[f"{domain}{other}"].append(_high_pass_sd(y))
        finally:
            for net in nets.values():
                net.train()
        joined = {k: np.concatenate(v) for k, v in scores.items()}
        result = {
            f"acc_D_{d}": 0.5 * (float((joined[f"real_{d}"] > 0.5).mean()) + float((joined[f"fake_{d}"] < 0.5).mean()))
            for d in "ab"
        }
        result.update({f"tex_{k}": float(np.concatenate(v).mean()) for k, v in textures.items()})
        return result

    @contextlib.contextmanager
    def _evaluation_rng(self):
        """torch's random stream for a measurement (a noise input's draws): the same at every checkpoint, and the
        training stream is left as it was, so monitoring and previews never change training or its resumption."""
        devices = [self.device] if self.device.type == "cuda" else []
        with torch.random.fork_rng(devices=devices):
            torch.manual_seed(self.config.seed + 7919)
            yield

    @property
    def finished(self) -> bool:
        return self.step >= self.config.steps

    def write_preview(self) -> Path:
        """PNG of the preview patch's middle slice: input | A->B output | difference."""
        G = self.nets["G_ab"]
        G.eval()
        with self._evaluation_rng(), torch.no_grad(), self._autocast():
            x = torch.from_numpy(self.preview).to(self.device).contiguous(memory_format=self.memory_format)
            y = G(x).float()
        G.train()
        mid = x.shape[2] // 2
        a = x[0, 0, mid].cpu().numpy()
        b = y[0, 0, mid].cpu().numpy()
        diff = b - a
        scale = max(float(np.abs(diff).max()), 1e-6)
        panels = [(a + 1) / 2, (b + 1) / 2, diff / (2 * scale) + 0.5]
        gap = np.ones((a.shape[0], 2), dtype=np.float32)
        image = np.concatenate([panels[0], gap, panels[1], gap, panels[2]], axis=1)
        path = self.out_dir / f"preview_{self.step:07d}.png"
        write_png(path, np.clip(np.nan_to_num(image * 255), 0, 255).astype(np.uint8)[::-1])
        return path

    def generator_state(self) -> dict[str, dict[str, torch.Tensor]]:
        """CPU state dicts of both generators (what inference needs): ``x_to_y`` (A->B) and ``y_to_x``."""
        return {
            k: {n: t.detach().cpu().contiguous() for n, t in self.nets[v].state_dict().items()}
            for k, v in GENERATOR_OF_DIRECTION.items()
        }


def _patch_scores(prediction: torch.Tensor) -> np.ndarray:
    """One realness score per patch: the mean of the PatchGAN's output map."""
    return prediction.float().mean(dim=tuple(range(1, prediction.dim()))).cpu().numpy()


def _high_pass_sd(patches: torch.Tensor) -> np.ndarray:
    """Per patch: SD of ``patch - Gaussian(patch, sigma 1 voxel)`` over the patch's interior (float32 batch)."""
    high = (patches - separable_blur(patches, gaussian_kernel(1.0)))[:, :, 2:-2, 2:-2, 2:-2]
    return high.flatten(1).std(dim=1).cpu().numpy()


def _judge(discriminator: nn.Module, x: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
    """A discriminator's realness map and its layer activations (both PatchGAN kinds provide them)."""
    return cast(PatchDiscriminator3d | HighPassDiscriminator3d, discriminator).forward_with_features(x)


def _feature_matching(fake: list[torch.Tensor], real: list[torch.Tensor]) -> torch.Tensor:
    """Squared distance between the mean discriminator activations (per layer and channel) of fakes and reals."""
    total = torch.zeros((), device=fake[0].device)
    for f, r in zip(fake, real):
        total = total + F.mse_loss(f.float().mean(dim=(0, 2, 3, 4)), r.float().mean(dim=(0, 2, 3, 4)))
    return total


def _finite_update(loss: torch.Tensor, optimizer: torch.optim.Optimizer) -> bool:
    """True when ``loss`` and every gradient of ``optimizer``'s parameters are finite."""
    if not bool(torch.isfinite(loss.detach())):
        return False
    grads = [p.grad for group in optimizer.param_groups for p in group["params"] if p.grad is not None]
    if not grads:
        return True
    norms = torch._foreach_norm(grads) if hasattr(torch, "_foreach_norm") else [g.norm() for g in grads]
    return bool(torch.isfinite(torch.stack(norms)).all())


def _without_noise(generator: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """``generator``'s translation of ``x`` (one channel) with a zero noise channel: no noise is added."""
    return generator(torch.cat([x, torch.zeros_like(x)], dim=1))


def _lsgan(prediction: torch.Tensor, real: bool) -> torch.Tensor:
    prediction = prediction.float()
    target = torch.ones_like(prediction) if real else torch.zeros_like(prediction)
    return F.mse_loss(prediction, target)


def load_checkpoint(
    path: str | os.PathLike,
    map_location: str | torch.device = "cpu",
    expected_format: str = FORMAT,
    what: str = "checkpoint",
) -> dict:
    """Read a training checkpoint (or another harmkit tensor file of ``expected_format``).

    Loads with ``weights_only=True``: anything but tensors and plain data is
    refused, so a tampered file cannot execute code.
    """
    path = Path(path)
    try:
        state = torch.load(path, map_location=map_location, weights_only=True)
    except FileNotFoundError:
        raise CheckpointError(f"{path}: {what} not found") from None
    except (
        pickle.UnpicklingError,
        RuntimeError,
        AttributeError,
        ValueError,
        EOFError,
    ) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise CheckpointError(
            f"{path}: refused to load this {what}: it is damaged or holds objects other than tensors and "
            f"plain data ({first}); only load files you trust or trained yourself"
        ) from None
    if not isinstance(state, dict) or state.get("format") != expected_format:
        raise CheckpointError(f"{path}: not a harmkit CycleGAN {what}")
    return state


def save_state_dict(state: dict, path: str | os.PathLike) -> Path:
    """``torch.save`` to a temporary name, then rename."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    os.close(fd)
    try:
        torch.save(state, tmp)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def _truncate_log(path: Path, step: int) -> None:
    """Keep only the rows up to ``step`` (those that match the checkpointed weights)."""
    if not path.exists():
        return
    with open(path, newline="") as handle:
        rows = list(csv.reader(handle))
    kept = [rows[0]] + [r for r in rows[1:] if r and int(r[0]) <= step] if rows else []
    if len(kept) == len(rows):
        return
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent, text=True)
    with os.fdopen(fd, "w", newline="") as handle:
        csv.writer(handle).writerows(kept)
    os.replace(tmp, path)


def write_png(path: str | os.PathLike, image: np.ndarray) -> Path:
    """Write an 8-bit grayscale PNG with the standard library (no imaging dependency)."""
    image = np.ascontiguousarray(image, dtype=np.uint8)
    height, width = image.shape
    raw = b"".join(b"\x00" + image[row].tobytes() for row in range(height))

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    payload = b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0))
    payload += chunk(b"IDAT", zlib.compress(raw, 6)) + chunk(b"IEND", b"")
    path = Path(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    with os.fdopen(fd, "wb") as handle:
        handle.write(payload)
    os.replace(tmp, path)
    return path
