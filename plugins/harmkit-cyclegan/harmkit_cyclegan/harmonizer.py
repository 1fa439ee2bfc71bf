"""The CycleGAN :class:`~harmkit.interfaces.ImageHarmonizer` (the SimpleITK-facing side).

``fit`` resamples every scan to one training spacing, writes the volumes and
body masks to a :class:`~harmkit.volumestore.VolumeStore`, and trains one
CycleGAN between the reference site group and all other groups (merged into
one source domain, as the paper merged CHUM and HMR). One training gives both
directions: ``transform(scan)`` maps towards the reference, and
``transform(scan, target_site=<a source group>)`` maps the other way. Fitting
again with the other group of a two-group cohort as reference reuses the
trained networks.

``transform`` resamples the scan to the training spacing, converts SUV with
the fixed transform of :mod:`.intensity`, runs sliding-window inference,
converts back to SUV and resamples onto the input's exact grid.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
import time
import zlib
from pathlib import Path
from typing import Any

import numpy as np
import SimpleITK as sitk

from harmkit.errors import HarmkitError, TargetNotSupported
from harmkit.interfaces import ImageHarmonizer
from harmkit.toolkit import body_mask, progress, resolve_site_group

from .config import NOT_LEARNED, PARAMETER_NAMES, CycleGANConfig, get_profile
from .intensity import to_network, to_suv
from .monitor import learning_verdict, read_monitor

GENERATORS_FILE = "generators.pt"
GENERATORS_FORMAT = "harmkit-cyclegan-generators/1"


class CycleGANHarmonizer(ImageHarmonizer):
    """3D CycleGAN image harmonizer (Haberl et al. 2024), quantitative in SUV.

    Parameters
    ----------
    profile : ``"quick"`` (default: generators that can only change resolution
        and noise, trained in a few minutes on a CPU), ``"texture"`` (a small
        residual ResNet with the texture losses, at a cost to lesion features) or
        ``"paper"`` (the published architecture and settings); see
        docs/methods/cyclegan.md. Every other parameter left
        at ``None`` takes the profile's value; see
        :class:`harmkit_cyclegan.config.CycleGANConfig` for their meaning.
    device : ``"auto"`` (CUDA when available), ``"cpu"`` or ``"cuda"``.
    work_dir : folder for the volume store, checkpoints, loss log and
        previews. An interrupted ``fit`` with the same ``work_dir`` resumes,
        and a finished training is reused. ``None``: a temporary folder.
    progress : show rich progress bars.
    threads : torch CPU threads while fitting and transforming (``None``: torch's
        default). On a CPU shared with other work, 1 avoids thread contention.
    """

    name = "cyclegan"
    aliases = ("gan",)
    description = "3D CycleGAN (Haberl et al. 2024): unpaired image-to-image translation in SUV, both directions"

    def __init__(
        self,
        profile: str = "quick",
        steps: int | None = None,
        seed: int | None = None,
        device: str = "auto",
        work_dir: str | None = None,
        progress: bool = True,
        threads: int | None = None,
        generator: str | None = None,
        filter_sigmas: Any = None,
        filter_noise_sigmas: Any = None,
        filter_levels: Any = None,
        filter_min_blur: Any = None,
        filter_min_blur_towards: str | None = None,
        filter_mm: bool | None = None,
        noise_free_constraints: bool | None = None,
        ngf: int | None = None,
        n_res_blocks: int | None = None,
        residual: bool | None = None,
        upsampling: str | None = None,
        ndf: int | None = None,
        n_d_layers: int | None = None,
        d_highpass_gain: float | None = None,
        d_band_sigmas: Any = None,
        d_band_clip: float | None = None,
        patch_size: Any = None,
        batch_size: int | None = None,
        spacing: Any = None,
        lr: float | None = None,
        lr_d: float | None = None,
        beta1: float | None = None,
        beta2: float | None = None,
        decay_start: float | None = None,
        lambda_cycle: float | None = None,
        lambda_identity: float | None = None,
        cycle_sigma: float | None = None,
        lambda_feature_matching: float | None = None,
        lambda_texture: float | None = None,
        lambda_anatomy: float | None = None,
        texture_sigmas: Any = None,
        texture_levels: Any = None,
        texture_beta: float | None = None,
        residual_highpass: float | None = None,
        noise_input: bool | None = None,
        texture_patches: int | None = None,
        pool_size: int | None = None,
        body_fraction: float | None = None,
        hot_fraction: float | None = None,
        hot_suv: float | None = None,
        centre_margin_mm: float | None = None,
        body_threshold: float | None = None,
        suv_max: float | None = None,
        suv_scale: float | None = None,
        monitor_holdout: float | None = None,
        monitor_patches: int | None = None,
        window: Any = None,
        overlap: float | None = None,
        blend_sigma: float | None = None,
        infer_batch: int | None = None,
        precision: str | None = None,
        channels_last: bool | None = None,
        checkpoint_every: int | None = None,
    ) -> None:
        self.profile = profile
        self.steps = steps
        self.seed = seed
        self.device = device
        self.work_dir = work_dir
        self.progress = progress
        self.threads = threads
        self.generator = generator
        self.filter_sigmas = filter_sigmas
        self.filter_noise_sigmas = filter_noise_sigmas
        self.filter_levels = filter_levels
        self.filter_min_blur = filter_min_blur
        self.filter_min_blur_towards = filter_min_blur_towards
        self.filter_mm = filter_mm
        self.noise_free_constraints = noise_free_constraints
        self.ngf = ngf
        self.n_res_blocks = n_res_blocks
        self.residual = residual
        self.upsampling = upsampling
        self.ndf = ndf
        self.n_d_layers = n_d_layers
        self.d_highpass_gain = d_highpass_gain
        self.d_band_sigmas = d_band_sigmas
        self.d_band_clip = d_band_clip
        self.patch_size = patch_size
        self.batch_size = batch_size
        self.spacing = spacing
        self.lr = lr
        self.lr_d = lr_d
        self.beta1 = beta1
        self.beta2 = beta2
        self.decay_start = decay_start
        self.lambda_cycle = lambda_cycle
        self.lambda_identity = lambda_identity
        self.cycle_sigma = cycle_sigma
        self.lambda_feature_matching = lambda_feature_matching
        self.lambda_texture = lambda_texture
        self.lambda_anatomy = lambda_anatomy
        self.texture_sigmas = texture_sigmas
        self.texture_levels = texture_levels
        self.texture_beta = texture_beta
        self.residual_highpass = residual_highpass
        self.noise_input = noise_input
        self.texture_patches = texture_patches
        self.pool_size = pool_size
        self.body_fraction = body_fraction
        self.hot_fraction = hot_fraction
        self.hot_suv = hot_suv
        self.centre_margin_mm = centre_margin_mm
        self.body_threshold = body_threshold
        self.suv_max = suv_max
        self.suv_scale = suv_scale
        self.monitor_holdout = monitor_holdout
        self.monitor_patches = monitor_patches
        self.window = window
        self.overlap = overlap
        self.blend_sigma = blend_sigma
        self.infer_batch = infer_batch
        self.precision = precision
        self.channels_last = channels_last
        self.checkpoint_every = checkpoint_every

    # -- configuration -------------------------------------------------------
    def make_config(self) -> CycleGANConfig:
        """The profile with this harmonizer's explicit parameters applied."""
        try:
            base = get_profile(self.profile)
            overrides = {k: getattr(self, k) for k in PARAMETER_NAMES if hasattr(self, k)}
            return base.with_overrides(**overrides)
        except ValueError as exc:
            raise HarmkitError(f"cyclegan: {exc}") from None

    def settings(self) -> dict:
        """The resolved configuration (profile plus explicit parameters): what decides the model and its output."""
        return self.make_config().to_dict()

    def _torch_device(self):
        import torch

        if self.device == "auto":
            return torch.device("cuda" if torch.cuda.is_available() else "cpu")
        if self.device not in ("cpu", "cuda") and not str(self.device).startswith("cuda:"):
            raise HarmkitError(f"cyclegan: device {self.device!r} unknown; use 'auto', 'cpu' or 'cuda'")
        if str(self.device).startswith("cuda") and not torch.cuda.is_available():
            raise HarmkitError("cyclegan: device 'cuda' requested but torch sees no CUDA GPU; use --device cpu")
        return torch.device(self.device)

    # -- fit -----------------------------------------------------------------
    def fit(self, cohort, reference_site: str) -> "CycleGANHarmonizer":
        """Train (or reuse) a CycleGAN between ``reference_site`` and every other site group."""
        config = self.make_config()
        reference = resolve_site_group(cohort, reference_site, what="cyclegan: reference site")
        groups = cohort.site_groups
        sources = [g for g in groups if g != reference]
        if not sources:
            raise HarmkitError(
                f"cyclegan: the cohort has only site group {reference!r}; harmonization needs scans of at least one "
                "other site"
            )
        domain_pair = sorted([tuple(sorted(sources)), (reference,)])
        fingerprint = _cohort_fingerprint(cohort)
        key = _training_key(domain_pair, config, fingerprint)
        site_groups = {s.site: s.group for s in cohort}
        if getattr(self, "training_key_", None) == key and self._generators is not None:
            # Same data, same split: the trained networks already give both directions.
            self.reference_site_ = reference
            self.site_groups_ = site_groups
            return self

        temporary = None
        if self.work_dir is None:
            temporary = tempfile.mkdtemp(prefix="harmkit-cyclegan-")
            run_dir = Path(temporary)
        else:
            run_dir = Path(self.work_dir) / f"run-{key[:16]}"
        try:
            spacing = config.spacing or _median_spacing(cohort.by_group(reference))
            with _torch_threads(self.threads):
                trainer = self._train(cohort, config, domain_pair, spacing, run_dir)
            self._generators = trainer.generator_state()
            self._nets = {}
            losses = run_dir / "training" / "losses.csv"
            self._training_log = losses.read_text() if losses.exists() else ""
            self._training_dir = None if temporary else run_dir / "training"
        finally:
            if temporary is not None:
                shutil.rmtree(temporary, ignore_errors=True)
        from .training import GENERATOR_OF_DIRECTION  # torch stays unimported until a model is fitted or used

        self.config_ = config.to_dict()
        self.domains_ = {"x": list(domain_pair[0]), "y": list(domain_pair[1])}
        self.reference_site_ = reference
        self.site_groups_ = site_groups
        self.spacing_ = [float(s) for s in spacing]
        self.training_key_ = key
        self.training_ = {
            "steps": trainer.step,
            "precision": trainer.precision,
            "device": str(trainer.device),
            "seconds": round(trainer.seconds, 1),
            "skipped_steps": trainer.skipped_steps,
            "scans": len(cohort),
            **(
                {
                    "sharpening_bounded": next(
                        d for d, g in GENERATOR_OF_DIRECTION.items() if g == trainer.bounded_generator
                    ),
                    "healthy_band_shift": round(float(trainer.healthy_band_shift), 4),
                }
                if trainer.bounded_generator and trainer.healthy_band_shift is not None
                else {}
            ),
            **learning_verdict(read_monitor(self._training_log)),
        }
        return self

    def learning_summary(self) -> dict[str, Any] | None:
        """Did training learn? Discriminator accuracy and texture movement on held-out monitor patches.

        ``None`` for a model trained before the monitor existed. ``learned`` is
        false when both discriminators stayed at chance for the whole run: the
        generators then had no signal to move towards the other site, and the
        outputs are not harmonization (whatever else they are).
        """
        training = getattr(self, "training_", {}) or {}
        if not training.get("monitored"):
            return None
        learned = not training["discriminators_at_chance"]
        fraction = training.get("texture_fraction_ab")
        message = (
            f"discriminator accuracy on held-out patches {training['final_acc_D_a']:.2f} / "
            f"{training['final_acc_D_b']:.2f} (0.5 = chance)"
            + (f"; texture moved {fraction:.0%} of the way towards the other domain" if fraction is not None else "")
        )
        if not learned:
            message = "the discriminators stayed at chance for the whole training run: " + message
        bounded = training.get("sharpening_bounded")
        if bounded:
            target = ", ".join(self.domains_["y" if bounded == "x_to_y" else "x"])
            message += (
                f"; blur weights bounded (filter_min_blur) towards {target}, the noisier domain in healthy tissue "
                f"(band energy {training['healthy_band_shift']:+.2f} log)"
            )
        return {"learned": learned, "message": message, **training}

    def _train(self, cohort, config: CycleGANConfig, domain_pair, spacing, run_dir: Path):
        from .training import (
            CHECKPOINT,
            CheckpointError,
            Trainer,
            TrainingError,
            load_checkpoint,
        )

        run_dir.mkdir(parents=True, exist_ok=True)
        checkpoint = run_dir / "training" / CHECKPOINT
        store_path = run_dir / "volumes.h5"
        store = None
        try:
            finished = checkpoint.exists() and load_checkpoint(checkpoint)["step"] >= config.steps
            if finished:  # a finished training: load it, no data needed
                sample_x = sample_y = _no_data
            monitor = None
            if not finished:
                store = self._volume_store(cohort, config, spacing, store_path)
                transform = lambda patch: to_network(patch, config.suv_max, config.suv_scale)  # noqa: E731
                train_x, watch_x = _split_monitor(_keys_of(store, domain_pair[0]), config)
                train_y, watch_y = _split_monitor(_keys_of(store, domain_pair[1]), config)
                focus = config.hot_fraction
                sample_x = store.sampler(
                    train_x, config.patch_size, config.body_fraction, transform, focus_fraction=focus
                )
                sample_y = store.sampler(
                    train_y, config.patch_size, config.body_fraction, transform, focus_fraction=focus
                )
                if config.monitor_patches > 0:
                    # Drawn once, from their own generator: the training stream is the same with or without them.
                    rng = np.random.default_rng(config.seed + 104729)
                    monitor = tuple(
                        store.sampler(keys, config.patch_size, config.body_fraction, transform)(
                            rng, config.monitor_patches
                        )
                        for keys in (watch_x, watch_y)
                    )
            device = self._torch_device()
            with progress(
                config.steps,
                "CycleGAN training",
                enabled=self.progress and not finished,
            ) as bar:
                trainer = Trainer(
                    config,
                    sample_x,
                    sample_y,
                    run_dir / "training",
                    device=device,
                    progress=_loss_reporter(bar),
                    monitor=monitor,
                    spacing=spacing,
                )
                started = time.perf_counter()
                trainer.run()
                trainer.seconds = time.perf_counter() - started
        except (CheckpointError, TrainingError) as exc:
            raise HarmkitError(f"cyclegan: {exc}") from None
        finally:
            if store is not None:
                store.file.close()
        # The store is only needed to resume an unfinished training.
        store_path.unlink(missing_ok=True)
        return trainer

    def _volume_store(self, cohort, config: CycleGANConfig, spacing, path: Path):
        from harmkit.volumestore import VolumeStore

        if path.exists():
            try:
                store = VolumeStore(path)
                if len(store) == len(cohort):
                    return store
                store.file.close()
            except HarmkitError:
                pass
            path.unlink()
        bar = progress(len(cohort), "Writing volume store", enabled=self.progress)
        with bar, VolumeStore.create(path) as writer:
            for index, scan in enumerate(cohort):
                image = scan.load_image()
                # harmkit's one body-mask rule (largest component, holes filled), at this model's threshold.
                try:
                    mask = scan.load_mask("body") if "body" in scan.masks else body_mask(image, config.body_threshold)
                except HarmkitError as exc:
                    raise HarmkitError(f"cyclegan: {scan.label}: {exc}") from None
                image = resample_to_spacing(image, spacing, sitk.sitkLinear)
                mask = resample_to_spacing(mask, spacing, sitk.sitkNearestNeighbor)
                mask = _inner_part(mask, config.centre_margin_mm)
                values, body = sitk.GetArrayFromImage(image), sitk.GetArrayFromImage(mask)
                writer.add(
                    f"{index:06d}",
                    values,
                    spacing=image.GetSpacing(),
                    mask=body,
                    focus=(body > 0) & (values > config.hot_suv) if config.hot_fraction > 0 else None,
                    origin=image.GetOrigin(),
                    direction=image.GetDirection(),
                    chunks=(32, 32, 32),
                    seed=index,
                    subject=scan.subject_id,
                    site=scan.site,
                    group=scan.group,
                )
                bar.advance()
        return VolumeStore(path)

    # -- transform -----------------------------------------------------------
    def transform(self, scan, target_site: str | None = None):
        """Harmonize ``scan`` towards ``target_site`` (default: the reference); same grid, SUV.

        A scan that already belongs to the target's domain is returned unchanged.
        """
        self.check_fitted()
        target = (
            resolve_site_group(self.site_groups_, target_site, what="cyclegan: target site")
            if target_site
            else self.reference_site_
        )
        if target in self.domains_["y"]:
            target_domain = "y"
        elif target in self.domains_["x"]:
            target_domain = "x"
        else:
            known = sorted(self.domains_["x"] + self.domains_["y"])
            raise HarmkitError(
                f"cyclegan: target site {target_site!r} was not part of training; use one of {', '.join(known)}"
            )
        if len(self.domains_[target_domain]) > 1:
            raise TargetNotSupported(
                f"cyclegan: this model was fitted towards {self.reference_site_!r} with site groups "
                f"{', '.join(self.domains_[target_domain])} merged into one source domain, so it cannot map towards "
                f"{target!r} alone; fit it with reference_site={target!r}"
            )
        image = scan.load_image()
        if scan.group in self.domains_[target_domain]:
            return scan.with_image(image)
        direction = "x_to_y" if target_domain == "y" else "y_to_x"
        with _torch_threads(self.threads):
            return scan.with_image(self.translate(image, direction))

    def resampling_floor(self, scan, target_site: str | None = None):
        """The scan through this pipeline with the identity network: the scan itself, exactly.

        Only the network's change is resampled back to the scan's grid (see
        :meth:`translate`), so an identity network changes no voxel, whatever
        the grids (tested); nothing needs to run.
        """
        self.check_fitted()
        return scan.with_image(scan.load_image())

    def translate(self, image: sitk.Image, direction: str = "x_to_y") -> sitk.Image:
        """Run one generator on a SimpleITK SUV image; returns SUV on the input's grid.

        Only the network's *change* travels between grids: the generator runs on
        the scan resampled to the training spacing, its output minus its input
        (in SUV) is resampled back onto the scan's own grid and added to the
        original voxels. So the identity network returns the scan exactly, and
        resampling never blurs what the network leaves alone. Voxels above
        ``suv_max`` (clipped by the intensity transform) keep their own value.
        """
        from .inference import sliding_window
        from .training import resolve_precision

        config = CycleGANConfig.from_dict(self.config_)
        net = self._network(direction)
        device = next(net.parameters()).device
        precision = resolve_precision(config.precision, device)
        resampled = resample_to_spacing(image, self.spacing_, sitk.sitkLinear)
        values = to_network(sitk.GetArrayViewFromImage(resampled), config.suv_max, config.suv_scale)
        windows = _count_windows(values.shape, config.window, config.overlap)

        noise = None
        if config.noise_input:
            # one noise volume per scan and seed: windows overlap, and blending independent draws would thin it
            digest = zlib.crc32(np.ascontiguousarray(values).tobytes())
            noise = np.random.default_rng([config.seed, digest]).standard_normal(values.shape, dtype=np.float32)

        def change(batch):
            return net(batch).float() - batch[:, :1].float()

        with progress(windows, "CycleGAN inference", enabled=self.progress, min_total=9) as bar:
            residual = sliding_window(
                values,
                change,
                config.window,
                overlap=config.overlap,
                batch_size=config.infer_batch,
                sigma_scale=config.blend_sigma,
                device=device,
                precision=precision,
                channels_last=config.channels_last,
                progress=lambda done, total: bar.update(done, total),
                # Windows of air only (no voxel above the body threshold) are left unchanged, not run.
                skip_below=float(to_network(np.array([config.body_threshold]), config.suv_max, config.suv_scale)[0]),
                extra=noise,
            )
        residual += values
        correction = to_suv(residual, config.suv_max, config.suv_scale)
        correction -= to_suv(values, config.suv_max, config.suv_scale)
        del values, residual
        correction_image = sitk.GetImageFromArray(correction)
        correction_image.CopyInformation(resampled)
        if correction_image.GetSize() != image.GetSize() or not np.allclose(
            correction_image.GetSpacing(), image.GetSpacing()
        ):
            correction_image = sitk.Resample(
                correction_image,
                image,
                sitk.Transform(),
                sitk.sitkLinear,
                0.0,
                sitk.sitkFloat32,
            )
        original = sitk.GetArrayFromImage(image).astype(np.float32)
        change_suv = sitk.GetArrayViewFromImage(correction_image)
        # Above suv_max the transform clips: keep the input's own value there. The network's SUVs are >= 0;
        # interpolating its change must not make a voxel negative that was not (nor more negative than it was).
        out_array = np.maximum(original + change_suv, np.minimum(original, 0.0))
        out_array = np.where(original > config.suv_max, original, out_array).astype(np.float32)
        out = sitk.GetImageFromArray(out_array)
        out.CopyInformation(image)
        return out

    def _network(self, direction: str):
        import torch

        from .training import build_generator

        nets = self.__dict__.setdefault("_nets", {})
        if direction not in nets:
            config = CycleGANConfig.from_dict(self.config_)
            device = self._torch_device()
            net = build_generator(config, self.spacing_)
            assert self._generators is not None  # only a fitted or loaded model makes networks
            net.load_state_dict(self._generators[direction])
            net.eval().requires_grad_(False)
            memory_format = torch.channels_last_3d if config.channels_last else torch.contiguous_format
            # Module.to takes memory_format (documented); torch's overloads for it omit the keyword.
            nets[direction] = net.to(device, memory_format=memory_format)  # type: ignore[call-overload]
        return nets[direction]

    # -- persistence ---------------------------------------------------------
    _generators: dict | None = None
    _nets: dict[str, Any]  # generators built on first use, by direction (see _network)
    _training_log: str = ""
    _training_dir: Path | None = None

    def get_state(self):
        self.check_fitted()
        meta = {
            k: getattr(self, k)
            for k in (
                "config_",
                "domains_",
                "reference_site_",
                "site_groups_",
                "spacing_",
                "training_key_",
                "training_",
            )
        }
        return meta, {}

    def _save_extra(self, directory: Path) -> None:
        from .training import save_state_dict

        assert self._generators is not None  # only a fitted model is saved
        save_state_dict(
            {"format": GENERATORS_FORMAT, **self._generators},
            directory / GENERATORS_FILE,
        )
        training = directory / "training"
        training.mkdir(exist_ok=True)
        if self._training_log:
            (training / "losses.csv").write_text(self._training_log)
        if self._training_dir is not None and Path(self._training_dir).is_dir():
            for png in sorted(Path(self._training_dir).glob("preview_*.png")):
                shutil.copy2(png, training / png.name)

    def _load_extra(self, directory: Path) -> None:
        from .training import CheckpointError, load_checkpoint

        path = Path(directory) / GENERATORS_FILE
        if not path.is_file():
            raise HarmkitError(f"{directory}: {GENERATORS_FILE} is missing; save or train the model again")
        try:
            state = load_checkpoint(path, expected_format=GENERATORS_FORMAT, what="generator file")
        except CheckpointError as exc:
            raise HarmkitError(str(exc)) from None
        self._generators = {k: state[k] for k in ("x_to_y", "y_to_x")}
        self._nets = {}


# -- helpers ---------------------------------------------------------------------
def resample_to_spacing(image: sitk.Image, spacing, interpolator=sitk.sitkLinear) -> sitk.Image:
    """``image`` on a grid of ``spacing`` (x, y, z) covering the same extent; unchanged if already there."""
    spacing = tuple(float(s) for s in spacing)
    old = image.GetSpacing()
    if np.allclose(old, spacing, rtol=1e-4, atol=1e-6):
        return image
    size = [max(1, int(round(n * o / s))) for n, o, s in zip(image.GetSize(), old, spacing)]
    # Keep the physical centre of the first voxel's corner: shift the origin by half a voxel difference.
    direction = np.asarray(image.GetDirection()).reshape(3, 3)
    shift = direction @ ((np.asarray(spacing) - np.asarray(old)) / 2.0)
    origin = tuple(np.asarray(image.GetOrigin()) + shift)
    pixel = image.GetPixelID()
    return sitk.Resample(
        image,
        size,
        sitk.Transform(),
        interpolator,
        origin,
        spacing,
        image.GetDirection(),
        0.0,
        pixel,
    )


def _inner_part(mask: sitk.Image, margin_mm: float) -> sitk.Image:
    """The voxels of ``mask`` at least ``margin_mm`` inside it; the whole mask when that leaves nothing."""
    if margin_mm <= 0:
        return mask
    from scipy import ndimage

    inside = sitk.GetArrayViewFromImage(mask) != 0
    depth = ndimage.distance_transform_edt(inside, sampling=mask.GetSpacing()[::-1])
    inner = depth >= margin_mm
    if not inner.any():
        return mask
    out = sitk.GetImageFromArray(inner.astype(np.uint8))
    out.CopyInformation(mask)
    return out


def _median_spacing(scans) -> tuple[float, float, float]:
    spacings = []
    for scan in scans:
        if isinstance(scan.image, sitk.Image):
            spacings.append(scan.image.GetSpacing())
        else:
            reader = sitk.ImageFileReader()
            reader.SetFileName(str(scan.image))
            try:
                reader.ReadImageInformation()
                spacings.append(reader.GetSpacing())
            except RuntimeError:
                spacings.append(scan.load_image().GetSpacing())
    sx, sy, sz = np.median(np.asarray(spacings), axis=0)
    return float(sx), float(sy), float(sz)


def _no_data(rng, n):
    raise RuntimeError("a finished training asked for data")


def _split_monitor(keys: list[str], config: CycleGANConfig) -> tuple[list[str], list[str]]:
    """(training keys, monitor keys): a seeded ``monitor_holdout`` share held out when there are >= 5 scans."""
    count = int(round(len(keys) * config.monitor_holdout))
    if len(keys) < 5 or count < 1:
        return keys, keys
    order = np.random.default_rng(config.seed + 7).permutation(len(keys))
    held = {keys[i] for i in order[:count]}
    return [k for k in keys if k not in held], sorted(held)


def _keys_of(store, groups) -> list[str]:
    keys = [k for g in groups for k in store.keys(group=g)]
    if not keys:
        raise HarmkitError(f"cyclegan: no scans of site group(s) {', '.join(groups)} in the volume store")
    return keys


def _cohort_fingerprint(cohort) -> str:
    rows = []
    for scan in cohort:
        if isinstance(scan.image, (str, os.PathLike)):
            image = str(Path(scan.image).resolve())
        else:  # an in-memory image: its voxels and geometry
            digest = hashlib.sha256(np.ascontiguousarray(sitk.GetArrayViewFromImage(scan.image)).tobytes())
            digest.update(
                repr(
                    (
                        scan.image.GetSpacing(),
                        scan.image.GetOrigin(),
                        scan.image.GetDirection(),
                    )
                ).encode()
            )
            image = digest.hexdigest()
        rows.append([scan.subject_id, scan.site, scan.group, image])
    return hashlib.sha256(json.dumps(rows).encode()).hexdigest()


def _training_key(domain_pair, config: CycleGANConfig, fingerprint: str) -> str:
    params = {k: v for k, v in config.to_dict().items() if k not in NOT_LEARNED}
    blob = json.dumps(
        {
            "domains": [list(d) for d in domain_pair],
            "config": params,
            "data": fingerprint,
        },
        sort_keys=True,
    )
    return hashlib.sha256(blob.encode()).hexdigest()


def _count_windows(shape, window, overlap) -> int:
    from .inference import window_starts

    count = 1
    for s, w in zip(shape, window):
        count *= len(window_starts(s, w, overlap))
    return count


class _torch_threads:
    """Set torch's CPU thread count for a block (``None``: leave it)."""

    def __init__(self, threads: int | None) -> None:
        self.threads, self.before = threads, None

    def __enter__(self):
        if self.threads:
            import torch

            self.before = torch.get_num_threads()
            torch.set_num_threads(int(self.threads))
        return self

    def __exit__(self, *exc):
        if self.before is not None:
            import torch

            torch.set_num_threads(self.before)
        return False


def _loss_reporter(bar):
    """``report(done, total, losses)`` for the trainer: the bar's count and the latest G and D losses."""

    def report(done, total, losses=None):
        text = ""
        if losses and "loss_G" in losses:
            text = f"G {losses['loss_G']:.3f}  D {losses['loss_D_a'] + losses['loss_D_b']:.3f}"
        bar.update(done, total, info=text)

    return report
