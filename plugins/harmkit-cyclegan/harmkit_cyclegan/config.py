"""Every hyper-parameter of the 3D CycleGAN, and the two profiles.

``paper`` holds the published architecture and optimisation settings (the
reference implementation's defaults, as listed in docs/methods/cyclegan.md);
``quick`` is a small model that trains in a few minutes on a 2-core CPU.
Any field can be overridden on top of a profile. Imports only the standard
library, so it can be used on a machine that has nothing but torch and numpy.

Array axis order is (z, y, x) throughout, as in ``SimpleITK.GetArrayFromImage``.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, fields, replace
from typing import Any

Triple = tuple[int, int, int]


@dataclass(frozen=True)
class CycleGANConfig:
    """Hyper-parameters of one CycleGAN model and its training run."""

    # --- generator ------------------------------------------------------------
    generator: str = "resnet"
    """``"resnet"``: the published 3D ResNet (the fields below up to ``residual``). ``"filter"``: a generator that
    can only change resolution and add noise, with a few weights per Gaussian of ``filter_sigmas``
    (:class:`~harmkit_cyclegan.nets.FilterGenerator3d`; not in the paper, needs ``noise_input``)."""
    filter_sigmas: tuple[float, ...] = (0.5, 1.0, 2.0, 3.0)
    """Gaussian sigmas (voxels) of the ``filter`` generator's blur weights (and its noise grains unless
    ``filter_noise_sigmas`` is set)."""
    filter_noise_sigmas: tuple[float, ...] = ()
    """Gaussian sigmas (voxels) of the ``filter`` generator's noise grains; (): those of ``filter_sigmas``. A coarse
    noise grain only adds noise; a coarse blur also reshapes every structure of that size (lesions)."""
    filter_levels: tuple[float, ...] = ()
    """SUV thresholds of the ``filter`` generator's uptake levels, each with its own blur weights (so the background
    can be smoothed while lesion edges are kept); (): one set of weights."""
    filter_min_blur: tuple[float, ...] = (-math.inf,)
    """Lower bound of the ``filter`` generator's blur weights, one for every uptake level (lowest first) or one for
    all: 0 allows blurring only, -0.5 a mild sharpening, -inf any. A sharpening also amplifies the source's own
    noise, which keeps its grain (see docs/methods/cyclegan.md, "Sharpening or noise")."""
    filter_min_blur_towards: str = "both"
    """Which ``filter`` generators ``filter_min_blur`` bounds: ``"both"``, or ``"noisier"``: only the one towards the
    domain whose healthy tissue (uptake below the top of ``texture_levels``) has the more band energy, measured on
    ``texture_patches`` patches of each domain before training. Towards a noisier site the added variance should be
    the target's noise, not the source's own noise sharpened; towards a quieter, sharper site sharpening is what
    it needs (docs/methods/cyclegan.md, "A bound towards the noisier site")."""
    filter_mm: bool = False
    """The ``filter`` generator's sigmas in units of the training grid's in-plane (x) voxel on every axis, so its
    blurs and noise grains are isotropic in mm on an anisotropic grid; False: in voxels of each axis (isotropic in
    voxels). PET noise and resolution are isotropic in mm, and on the lung's 2.04 x 2.04 x 3 mm grid noise made in
    voxels is too correlated between slices (docs/methods/cyclegan.md, "Grains in mm")."""
    ngf: int = 64
    """Feature maps of the generator's first 7^3 convolution (then 2x, 4x after the downsamplings)."""
    n_res_blocks: int = 9
    """Residual blocks at the bottleneck (the paper used 9)."""
    n_downsampling: int = 2
    """Stride-2 convolutions down (and transposed convolutions up); patches and windows must be multiples of 2**n."""
    upsampling: str = "transpose"
    """How the generator doubles its resolution: ``"transpose"`` (stride-2 transposed convolutions, as published)
    or ``"resize"`` (a 3^3 convolution, then trilinear doubling). Transposed convolutions overlap unevenly
    and paint a checkerboard at the voxel scale, which is exactly where PET noise texture lives (measured in
    docs/methods/cyclegan.md); resizing does not."""
    noise_input: bool = False
    """The generators also read a channel of standard normal noise (fresh per training patch; at inference one
    seeded noise volume per scan, so overlapping windows agree), from which they can make the noise a noisier site
    adds: a deterministic generator can only reshape the noise already in its input (not in the paper)."""
    residual_highpass: float = 0.0
    """> 0: a residual generator's correction is high-passed (minus its Gaussian blur of this sigma, in voxels)
    before it is added, so a translation cannot change uptake at coarser scales, only texture and edges (not in
    the paper; see docs/methods/cyclegan.md). 0: off."""
    residual: bool = False
    """Global skip connection: output = input + a learned correction whose last convolution starts at zero, so
    the untrained generator is the identity (not in the paper; on in ``quick``, see docs/methods/cyclegan.md)."""
    # --- discriminator (3D PatchGAN) --------------------------------------
    ndf: int = 64
    """Feature maps of the discriminator's first 4^3 convolution (64-128-256-512)."""
    n_d_layers: int = 3
    """Stride-2 layers of the PatchGAN; 3 gives a 70^3 receptive field."""
    d_highpass_gain: float = 0.0
    """> 0: the discriminators also see ``gain * (patch - Gaussian blur of it)`` as a second channel, where
    noise texture lives (not in the paper; on in ``quick``, see docs/methods/cyclegan.md). 0: the published D."""
    d_band_sigmas: tuple[float, ...] = (1.0,)
    """Gaussian sigmas (voxels) of the discriminators' band-pass channels when ``d_highpass_gain`` > 0: one channel
    ``x - blur(x, s1)``, then ``blur(x, s1) - blur(x, s2)``, ... Increasing; (1.0,) is the single high-pass copy."""
    d_band_clip: float = 0.0
    """> 0: each amplified band channel is soft-clipped to +-this (tanh), so that anatomy edges saturate and noise
    texture, not edge sharpness, decides what the discriminators see. 0: no clipping."""
    # --- losses and optimisation ------------------------------------------
    lambda_cycle: float = 10.0
    """Weight of the cycle-consistency L1 loss."""
    lambda_identity: float = 0.5
    """Identity loss weight, relative to ``lambda_cycle`` (as in the CycleGAN code)."""
    lambda_feature_matching: float = 0.0
    """> 0: the generators also match the mean activations of the discriminator's layers on real target patches
    (feature matching, Salimans et al. 2016), a direct signal towards the target's texture statistics that does not
    wait for the adversarial game to settle (not in the paper; see docs/methods/cyclegan.md). 0: off."""
    lambda_texture: float = 0.0
    """> 0: weight of the band-energy loss. For each band of ``texture_sigmas`` (and uptake level of
    ``texture_levels``) it compares the mean of log(band^2) over a translated patch's body voxels with its source
    patch's, shifted by the domains' difference (measured once, on ``texture_patches`` patches of each domain), so
    each translation changes the noise power at each grain size by the sites' ratio (not in the paper; see
    docs/methods/cyclegan.md). 0: off."""
    lambda_anatomy: float = 0.0
    """> 0: weight of an L1 loss between each translation and its source, both blurred by ``cycle_sigma``: a
    translation may change texture, not uptake or anatomy at coarser scales (not in the paper). 0: off."""
    noise_free_constraints: bool = False
    """Generators with a noise input (``noise_input``): the cycle, identity and anatomy losses see translations made
    with a zero noise channel, so they constrain what a translation does to the image and leave the amount of added
    noise (of any grain) to the adversarial and band-energy losses (not in the paper). Without a noise input there
    is no added noise, and this changes nothing."""
    texture_beta: float = 0.5
    """Error (log band energy) above which the band-energy loss grows linearly instead of quadratically: a
    domain gap of several units must not outweigh every other loss. ``inf``: squared everywhere."""
    texture_sigmas: tuple[float, ...] = (1.0, 2.0)
    """Gaussian sigmas (voxels) of the band-energy loss's bands, as ``d_band_sigmas``."""
    texture_levels: tuple[float, ...] = ()
    """SUV thresholds that split the body into uptake levels for the band-energy loss, each with its own shift
    (noise power grows with uptake, and sites differ at lesion edges by resolution, not noise); () one level."""
    texture_patches: int = 64
    """Patches per domain from which the band-energy loss measures each domain's mean log band energy."""
    cycle_sigma: float = 0.0
    """> 0: the cycle and identity losses compare Gaussian-blurred patches (sigma in voxels), so they keep anatomy
    and uptake but not the noise realisation, which a translation between noise textures cannot give back after a
    round trip (not in the paper; see docs/methods/cyclegan.md). 0: the published full-resolution L1."""
    lr: float = 2e-4
    """Adam learning rate of the generators (and of the discriminators unless ``lr_d`` is set)."""
    lr_d: float | None = None
    """Adam learning rate of the discriminators; None: ``lr`` (the paper's single rate)."""
    beta1: float = 0.5
    beta2: float = 0.999
    decay_start: float = 0.5
    """Fraction of ``steps`` after which the learning rate decays linearly to zero."""
    pool_size: int = 50
    """Image pool of generated patches shown to the discriminators (0 disables it)."""
    steps: int = 200_000
    """Optimisation steps (one batch of each domain per step)."""
    batch_size: int = 1
    # --- data ---------------------------------------------------------------
    patch_size: Triple = (64, 128, 128)
    """Training patch (z, y, x) in voxels at the training spacing."""
    spacing: tuple[float, float, float] | None = None
    """Training voxel spacing (x, y, z) in mm; None: the median spacing of the reference site group."""
    body_fraction: float = 0.9
    """Share of training patches centred on a voxel inside the body mask (the rest anywhere)."""
    hot_fraction: float = 0.0
    """Share of training patches centred on a voxel of uptake above ``hot_suv`` (lesions, hot organs), which
    patches centred anywhere in the body seldom contain, so the generators learn what to do with them too
    (not in the paper; see docs/methods/cyclegan.md). 0: off."""
    hot_suv: float = 4.0
    """SUV above which a body voxel counts as hot for ``hot_fraction``."""
    centre_margin_mm: float = 0.0
    """Body-centred patches are centred at least this far inside the body (0: anywhere in it). Keeps the body's
    outline, whose sharpness also differs between sites, from dominating what the discriminators judge."""
    body_threshold: float = 0.1
    """SUV threshold for a body mask where the manifest has no ``mask_body`` (the paper's 0.1 SUV); the mask is
    harmkit's one rule (:func:`harmkit.voi.body_mask`: largest component, holes filled) at this threshold."""
    suv_max: float = 50.0
    """SUV mapped to +1 by the intensity transform; higher SUVs are clipped (see intensity.py)."""
    suv_scale: float = 1.0
    """SUV scale of the log compression ``log1p(SUV / suv_scale)``."""
    # --- learning monitor ---------------------------------------------------
    monitor_holdout: float = 0.15
    """Share of each domain's scans kept out of training to monitor it (when the domain has >= 5 scans; else
    the monitor reads training scans). Not in the paper, which trained on every scan."""
    monitor_patches: int = 32
    """Fixed patches per domain on which each checkpoint measures discriminator accuracy and texture (0: off)."""
    # --- inference ----------------------------------------------------------
    window: Triple = (64, 128, 128)
    """Sliding-window size (z, y, x); the reference used 128x128x64 (x, y, z)."""
    overlap: float = 0.85
    """Fraction of the window shared by neighbouring windows."""
    blend_sigma: float = 0.125
    """Gaussian blending weight: sigma as a fraction of the window size."""
    infer_batch: int = 1
    """Windows evaluated together during inference (memory grows with it)."""
    # --- execution ----------------------------------------------------------
    precision: str = "auto"
    """'fp32', 'bf16' (autocast) or 'auto' (bf16 on CUDA and on CPUs with native bf16, else fp32)."""
    channels_last: bool = True
    """Use the channels_last_3d memory format (faster 3D convolutions on CPU)."""
    checkpoint_every: int = 1000
    """Steps between checkpoints (each writes a PNG of input / output / difference)."""
    seed: int = 0

    # ------------------------------------------------------------------------
    def with_overrides(self, **overrides: Any) -> "CycleGANConfig":
        """A copy with the given fields changed (``None`` values are ignored)."""
        known = {f.name for f in fields(self)}
        unknown = sorted(set(overrides) - known)
        if unknown:
            raise ValueError(
                f"unknown CycleGAN hyper-parameter(s) {', '.join(unknown)}; valid: {', '.join(sorted(known))}"
            )
        changes = {k: _normalise(k, v) for k, v in overrides.items() if v is not None}
        return replace(self, **changes).validated()

    def validated(self) -> "CycleGANConfig":
        """Check consistency; raise ``ValueError`` naming the parameter."""
        multiple = 2**self.n_downsampling
        for name in ("patch_size", "window"):
            value = getattr(self, name)
            if len(value) != 3 or any(int(v) <= 0 or int(v) % multiple for v in value):
                raise ValueError(f"{name}={value}: need three positive sizes (z, y, x), each a multiple of {multiple}")
        for size in self.patch_size:
            for _ in range(self.n_d_layers):
                size = (size - 2) // 2 + 1
            if size - 1 < 2:
                raise ValueError(
                    f"patch_size={self.patch_size}: too small for a PatchGAN with n_d_layers={self.n_d_layers}; "
                    f"use at least {2**self.n_d_layers * 3} voxels per axis or fewer layers"
                )
        if not 0.0 <= self.overlap < 1.0:
            raise ValueError(f"overlap={self.overlap}: must be in [0, 1)")
        if not 0.0 <= self.decay_start <= 1.0:
            raise ValueError(f"decay_start={self.decay_start}: must be in [0, 1]")
        if self.precision not in ("auto", "fp32", "bf16"):
            raise ValueError(f"precision={self.precision!r}: use 'auto', 'fp32' or 'bf16'")
        if not 0.0 <= self.monitor_holdout < 0.5 or self.monitor_patches < 0:
            raise ValueError("monitor_holdout must be in [0, 0.5) and monitor_patches non-negative")
        if self.steps < 1 or self.batch_size < 1 or self.infer_batch < 1 or self.checkpoint_every < 1:
            raise ValueError("steps, batch_size, infer_batch and checkpoint_every must be positive")
        if self.lr <= 0 or (self.lr_d is not None and self.lr_d <= 0) or self.d_highpass_gain < 0:
            raise ValueError("lr and lr_d must be positive and d_highpass_gain non-negative")
        for name in ("d_band_sigmas", "texture_sigmas"):
            sigmas = getattr(self, name)
            if not sigmas or any(s <= 0 for s in sigmas) or any(b <= a for a, b in zip(sigmas, sigmas[1:])):
                raise ValueError(f"{name}={sigmas}: need one or more positive, increasing sigmas (voxels)")
        if self.lambda_anatomy < 0 or (self.lambda_anatomy > 0 and self.cycle_sigma <= 0):
            raise ValueError(
                f"lambda_anatomy={self.lambda_anatomy}: must be >= 0, and needs cycle_sigma > 0 (its blur; unblurred, "
                "it would forbid every change)"
            )
        levels = self.texture_levels
        if any(v <= self.body_threshold for v in levels) or any(b <= a for a, b in zip(levels, levels[1:])):
            raise ValueError(
                f"texture_levels={levels}: need increasing SUVs above body_threshold={self.body_threshold}"
            )
        if self.residual_highpass < 0 or (self.residual_highpass > 0 and not self.residual):
            raise ValueError(
                f"residual_highpass={self.residual_highpass}: must be >= 0, and needs residual=True (it filters the "
                "residual generator's correction)"
            )
        if not self.texture_beta > 0:
            raise ValueError(f"texture_beta={self.texture_beta}: must be > 0 (inf: a squared loss)")
        if self.lambda_texture < 0 or self.texture_patches < 1:
            raise ValueError("lambda_texture must be >= 0 (0: off) and texture_patches positive")
        if self.generator not in ("resnet", "filter"):
            raise ValueError(f"generator={self.generator!r}: use 'resnet' (published) or 'filter'")
        if self.generator == "filter" and not self.noise_input:
            raise ValueError(
                "generator='filter' needs noise_input=True (its noise must be one volume per scan at inference)"
            )
        for name in ("filter_sigmas", "filter_noise_sigmas"):
            sigmas = getattr(self, name)
            if (
                (name == "filter_sigmas" and not sigmas)
                or any(s <= 0 for s in sigmas)
                or any(b <= a for a, b in zip(sigmas, sigmas[1:]))
            ):
                raise ValueError(f"{name}={sigmas}: need one or more positive, increasing sigmas (voxels)")
        levels = self.filter_levels
        bounds = self.filter_min_blur
        if len(bounds) not in (1, len(levels) + 1) or any(math.isnan(b) or b > 0 for b in bounds):
            raise ValueError(
                f"filter_min_blur={bounds}: need one bound <= 0 (0: no sharpening; -inf: no bound), or one per uptake "
                f"level of filter_levels={levels} ({len(levels) + 1}, lowest level first)"
            )
        if any(v <= 0 for v in levels) or any(b <= a for a, b in zip(levels, levels[1:])):
            raise ValueError(f"filter_levels={levels}: need increasing positive SUVs")
        if self.filter_min_blur_towards not in ("both", "noisier"):
            raise ValueError(f"filter_min_blur_towards={self.filter_min_blur_towards!r}: use 'both' or 'noisier'")
        if self.upsampling not in ("transpose", "resize"):
            raise ValueError(f"upsampling={self.upsampling!r}: use 'transpose' (published) or 'resize'")
        if self.d_band_clip < 0:
            raise ValueError(f"d_band_clip={self.d_band_clip}: must be >= 0 (0: no clipping)")
        if not 0.0 <= self.hot_fraction <= 1.0 or self.hot_suv <= 0:
            raise ValueError(
                f"hot_fraction={self.hot_fraction}, hot_suv={self.hot_suv}: need 0 <= fraction <= 1, SUV > 0"
            )
        if self.centre_margin_mm < 0:
            raise ValueError(f"centre_margin_mm={self.centre_margin_mm}: must be >= 0")
        if self.lambda_feature_matching < 0:
            raise ValueError(f"lambda_feature_matching={self.lambda_feature_matching}: must be >= 0 (0: off)")
        if self.cycle_sigma < 0:
            raise ValueError(f"cycle_sigma={self.cycle_sigma}: must be >= 0 (0: no blur)")
        if self.suv_max <= 0 or self.suv_scale <= 0:
            raise ValueError("suv_max and suv_scale must be positive")
        return self

    def to_dict(self) -> dict[str, Any]:
        return {k: (list(v) if isinstance(v, tuple) else v) for k, v in asdict(self).items()}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "CycleGANConfig":
        return cls().with_overrides(**data)


def _normalise(name: str, value: Any) -> Any:
    if name in ("patch_size", "window"):
        if isinstance(value, int):
            value = (value, value, value)
        return tuple(int(v) for v in value)
    if name in (
        "d_band_sigmas",
        "texture_sigmas",
        "texture_levels",
        "filter_sigmas",
        "filter_noise_sigmas",
        "filter_levels",
        "filter_min_blur",
    ):
        if isinstance(value, (int, float)):
            value = (value,)
        return tuple(float(v) for v in value)
    if name == "spacing":
        if isinstance(value, (int, float)):
            value = (value, value, value)
        return tuple(float(v) for v in value)
    return value


PROFILES: dict[str, CycleGANConfig] = {
    # The published architecture and optimisation settings. `steps` was not
    # published; 200k single-patch steps match CycleGAN's 100 + 100 epochs of ~1000 images.
    "paper": CycleGANConfig(),
}

# The small residual ResNet the `quick` profile used up to plugin 0.4.1: a few minutes of training on a 2-core CPU
# (benchmarks/cyclegan.py, docs/performance.md). It stays the identity within 400 CPU steps; `texture` builds on it.
SMALL_RESNET = CycleGANConfig(
    ngf=8,
    residual=True,
    # Transposed convolutions painted a voxel-scale checkerboard that passed for learned texture
    # (docs/methods/cyclegan.md, "What the generators really changed").
    upsampling="resize",
    n_res_blocks=4,
    ndf=8,
    patch_size=(32, 32, 32),
    batch_size=1,
    steps=400,
    window=(64, 64, 64),
    overlap=0.25,
    infer_batch=1,
    checkpoint_every=100,
)

# The small ResNet with the discriminators' view and the losses that make a small model learn the sites' noise
# texture on a CPU (docs/methods/cyclegan.md, "A discriminator that sees texture" and "A loss on the sites' noise
# power"); `quick` and `texture` both build on it.
_TEXTURE_TRAINING = replace(
    SMALL_RESNET,
    d_highpass_gain=8.0,  # discriminators that see band-pass copies, where noise texture lives
    d_band_sigmas=(1.0, 2.0),
    lr_d=1e-3,
    cycle_sigma=2.0,  # round trips keep anatomy and uptake, not the noise realisation
    lambda_texture=10.0,  # the band-energy loss, per uptake level
    texture_levels=(1.5, 4.0),
    texture_patches=128,
    noise_input=True,  # towards a noisier site, noise the input does not hold
    lambda_anatomy=10.0,  # the coarse image stays
    hot_fraction=0.3,  # patches centred on hot voxels often enough to learn lesions
)

# The bench's default (plugin 0.6.0; 0.7.0 below): generators that can only blur or sharpen (by at most about a
# voxel), below and above SUV 1.5, and add noise whose grain and strength they learn (docs/methods/cyclegan.md, "A
# generator that can only change resolution and noise" and "Blurs of at most a voxel"). Coarser blurs, learned for the
# reference tissue's noise, reshaped lesions of the same uptake, and a separate level above SUV 4 learned blurs that
# took the lesions away from their counterfactuals (lung preset: lesion CCC below the `resample` floor in both
# directions with 0.5.0's sigmas up to 3 voxels and three levels, above it with these). Coarse noise grains stay:
# added noise reshapes no structure.
PROFILES["quick"] = replace(
    _TEXTURE_TRAINING,
    generator="filter",
    filter_sigmas=(0.5, 1.0),
    filter_noise_sigmas=(0.5, 1.0, 2.0, 3.0),
    filter_levels=(1.5,),
    # 0.7.0: cycle, identity and anatomy losses judge the translations without their added noise, which a σ = 2
    # blur does not remove when its grain is coarse: they charged for the coarse noise of the lung's BUD scans, and
    # the model blurred TUB's noise away without adding BUD's ("Sharpening or noise").
    noise_free_constraints=True,
    # 0.10.0: the generator towards the noisier site blurs, never sharpens; its added variance is the target's noise,
    # not the source's own coarse noise sharpened (lung -> TUB: NGTDM +19.2 -> +27.5 pp, lesion CCC 0.818 -> 0.855).
    # Towards a quieter, sharper site (head and neck -> CHUM-HMR) the generator still sharpens ("A bound towards the
    # noisier site").
    filter_min_blur=(0.0,),
    filter_min_blur_towards="noisier",
    # 0.11.0: the sites' band-energy shift, which sets how much noise each translation adds or removes, measured on
    # 1024 patches per domain instead of 128. On 128 it varied with the seed (lung, 90 scans: +1.03 to +1.38 log; the
    # worst seed moved the reference tissue +12 pp towards TUB instead of +30); on 1024 it was +1.19 to +1.22 there,
    # though the full lung cohort still measured +1.09 and +1.24 at two seeds ("The band-energy shift and the seed").
    texture_patches=1024,
    lr=1e-2,  # a few weights of order 1 to learn in 1000 steps
    steps=1000,
)

# The small ResNet with the texture losses (docs/methods/cyclegan.md, "A loss on the sites' noise power" and
# "Uptake kept by construction, and a noise input"). On the default head-and-neck bench three of four seeds moved
# the reference tissue towards the noisier site, one of them with the lesion CCC above the floor, and none towards
# the sharper site. Not the default.
PROFILES["texture"] = replace(
    _TEXTURE_TRAINING,
    lr=5e-4,
    # Windows of the patch size: the instance-normalised generator then sees the statistics it learned on.
    window=(32, 32, 32),
)


def get_profile(name: str) -> CycleGANConfig:
    """The named profile (``paper``, ``quick`` or ``texture``)."""
    try:
        return PROFILES[name]
    except KeyError:
        raise ValueError(f"unknown CycleGAN profile {name!r}; use one of {', '.join(PROFILES)}") from None


NOT_LEARNED = frozenset({"checkpoint_every", "window", "overlap", "blend_sigma", "infer_batch"})
"""Fields that change logging or inference only: a training may resume, or be reused, with other values."""

PARAMETER_NAMES: tuple[str, ...] = tuple(f.name for f in fields(CycleGANConfig))
