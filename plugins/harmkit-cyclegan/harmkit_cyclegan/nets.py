"""The published 3D CycleGAN networks (torch only).

Generator: a 3D ResNet -- 7^3 convolution to ``ngf`` features, two stride-2
3^3 convolutions (2*ngf, 4*ngf), ``n_res_blocks`` residual blocks, two
stride-2 transposed convolutions back, a 7^3 convolution to one channel and
tanh; instance normalisation, reflection padding, ReLU.

With ``residual=True`` (not in the paper; the ``quick`` profile) the
generator instead outputs ``input + residual``: the final 7^3 convolution
(no tanh) predicts a correction that is added to the input, and that
convolution starts at zero (:meth:`ResnetGenerator3d.zero_residual`), so an
untrained generator is exactly the identity. Training then only has to learn
the difference between the sites rather than re-synthesise the whole image,
which keeps anatomy and SUV intact when the training budget is small. The
output is not clamped inside the network; the SUV transform clips it to
[-1, 1] (see intensity.py). The parameter names of the two variants are the
same.

Discriminator: a 3D PatchGAN -- 4^3 convolutions with ``ndf``, 2*ndf, 4*ndf
(stride 2) and 8*ndf (stride 1) features, instance normalisation except on
the first, LeakyReLU(0.2), then a 4^3 convolution to one channel. With three
stride-2 layers each output voxel sees 70^3 input voxels.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn


class Conv3d(nn.Conv3d):
    """``nn.Conv3d`` (same parameters, same state dict) that is faster on a CPU in fp32 without gradients.

    Inference and the learning monitor only; training runs ``nn.Conv3d`` unchanged (its backward through
    oneDNN directly was slower, measured in docs/performance.md), so trained weights do not change.

    - It calls oneDNN directly. torch sends some 3D convolutions with few channels on windows of 18^3 to 38^3
      voxels, exactly the ``quick`` generator's, to a generic path up to 18x slower (measured: 16 to 8 channels
      on 34^3 voxels, 58 ms against 3.2 ms). The numbers differ by float rounding only.
    - A convolution to one channel runs as a depthwise convolution summed over channels: oneDNN pads the single
      output channel to eight, so the final 7^3 convolution otherwise costs as much as one to eight channels
      (measured 5x faster on 70^3 voxels).

    With gradients, under autocast, on other devices and in other dtypes it is ``nn.Conv3d``.
    """

    def _conv_forward(self, input: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
        if not _direct_onednn(self, input):
            return super()._conv_forward(input, weight, bias)
        padding = list(self.padding)  # a tuple of ints: _direct_onednn refuses "same" and "valid"
        stride, dilation = list(self.stride), list(self.dilation)
        if self.out_channels == 1 and self.groups == 1 and self.in_channels > 1:
            channels = self.in_channels
            per_channel = torch.ops.aten.mkldnn_convolution(
                input, weight.reshape(channels, 1, *weight.shape[2:]), None, padding, stride, dilation, channels
            )
            out = per_channel.sum(dim=1, keepdim=True)
            return out if bias is None else out + bias.view(1, -1, 1, 1, 1)
        return torch.ops.aten.mkldnn_convolution(input, weight, bias, padding, stride, dilation, self.groups)


def _direct_onednn(conv: nn.Conv3d, input: torch.Tensor) -> bool:
    return (
        not torch.is_grad_enabled()
        and input.device.type == "cpu"
        and input.dtype == torch.float32
        and conv.weight.dtype == torch.float32
        and conv.padding_mode == "zeros"
        and not isinstance(conv.padding, str)
        and torch.backends.mkldnn.is_available()
        and bool(torch.backends.mkldnn.enabled)
        and not torch.is_autocast_enabled("cpu")
    )


class ResidualBlock(nn.Module):
    """Two reflection-padded 3^3 convolutions with instance norm and a skip connection."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.body = nn.Sequential(
            nn.ReflectionPad3d(1),
            Conv3d(channels, channels, kernel_size=3),
            nn.InstanceNorm3d(channels),
            nn.ReLU(inplace=True),
            nn.ReflectionPad3d(1),
            Conv3d(channels, channels, kernel_size=3),
            nn.InstanceNorm3d(channels),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.body(x)


class ResnetGenerator3d(nn.Module):
    """3D ResNet generator (one input and one output channel).

    ``residual=False``: the published generator, output ``tanh(...)`` in [-1, 1].
    ``residual=True``: output ``input + conv(...)`` (a global skip connection), not clamped: a clamp at -1
    would give a negative correction in air no gradient, and the generator learned to park its output
    there (measured, docs/methods/cyclegan.md); the SUV transform clips at inference.
    ``residual_highpass`` > 0: the correction minus its Gaussian blur of that sigma (voxels) is added.
    ``noise_input``: a second input channel of standard normal noise, so the generator can add noise that is not
    in its input (towards a noisier site); a one-channel input gets fresh noise, a two-channel one is used as is.
    """

    def __init__(
        self,
        ngf: int = 64,
        n_res_blocks: int = 9,
        n_downsampling: int = 2,
        residual: bool = False,
        upsampling: str = "transpose",
        residual_highpass: float = 0.0,
        noise_input: bool = False,
    ) -> None:
        super().__init__()
        if upsampling not in ("transpose", "resize"):
            raise ValueError(f"upsampling={upsampling!r}: use 'transpose' or 'resize'")
        self.residual = bool(residual)
        self.noise_input = bool(noise_input)
        # Not persistent: models saved before the option load unchanged, and the kernel follows from the config.
        self.register_buffer(
            "highpass_kernel",
            gaussian_kernel(residual_highpass) if residual and residual_highpass > 0 else None,
            persistent=False,
        )
        layers: list[nn.Module] = [
            nn.ReflectionPad3d(3),
            Conv3d(2 if noise_input else 1, ngf, kernel_size=7),
            nn.InstanceNorm3d(ngf),
            nn.ReLU(inplace=True),
        ]
        for i in range(n_downsampling):
            mult = 2**i
            layers += [
                Conv3d(ngf * mult, ngf * mult * 2, kernel_size=3, stride=2, padding=1),
                nn.InstanceNorm3d(ngf * mult * 2),
                nn.ReLU(inplace=True),
            ]
        mult = 2**n_downsampling
        layers += [ResidualBlock(ngf * mult) for _ in range(n_res_blocks)]
        for i in range(n_downsampling):
            mult = 2 ** (n_downsampling - i)
            if upsampling == "transpose":
                up: list[nn.Module] = [
                    nn.ConvTranspose3d(
                        ngf * mult,
                        ngf * mult // 2,
                        kernel_size=3,
                        stride=2,
                        padding=1,
                        output_padding=1,
                    )
                ]
            else:  # "resize": a 3^3 convolution, then trilinear doubling (smooth: no checkerboard)
                # Convolving before doubling costs an eighth of convolving after it (measured 4x faster
                # on CPU, fwd + bwd); trilinear rather than nearest leaves no 2-voxel blocks.
                up = [
                    nn.ReflectionPad3d(1),
                    Conv3d(ngf * mult, ngf * mult // 2, kernel_size=3),
                    nn.Upsample(scale_factor=2, mode="trilinear", align_corners=False),
                ]
            layers += [*up, nn.InstanceNorm3d(ngf * mult // 2), nn.ReLU(inplace=True)]
        layers += [nn.ReflectionPad3d(3), Conv3d(ngf, 1, kernel_size=7)]
        if not self.residual:
            layers.append(nn.Tanh())
        self.model = nn.Sequential(*layers)
        if self.residual:
            self.zero_residual()

    @property
    def last_conv(self) -> nn.Conv3d:
        """The final convolution (to one channel)."""
        return [m for m in self.model if isinstance(m, nn.Conv3d)][-1]

    def zero_residual(self) -> None:
        """Zero the final convolution of a residual generator, making it the identity map."""
        if self.residual:
            with torch.no_grad():
                self.last_conv.weight.zero_()
                if self.last_conv.bias is not None:
                    self.last_conv.bias.zero_()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.noise_input:
            if x.shape[1] == 1:  # training: fresh noise each call; inference passes a whole-scan noise channel
                x = torch.cat([x, torch.randn_like(x)], dim=1)
            image = x[:, :1]
        else:
            image = x
        if not self.residual:
            return self.model(x)
        correction = self.model(x)
        kernel = self.highpass_kernel
        if isinstance(kernel, torch.Tensor):
            # the change keeps no component coarser than the kernel: uptake and anatomy stay, texture may move
            correction = correction - separable_blur(correction, kernel)
        return image + correction


LEVEL_WIDTH = 0.1
"""Width, in log SUV, of the blend between two uptake levels of the filter generator (about 20 % SUV from 12 % to
88 % membership)."""


class FilterGenerator3d(nn.Module):
    """A generator that can only do what separates PET sites: change resolution and noise (not in the paper).

    In SUV, ``out = s + sum_j a_j (G_j * s - s) + s**p * sum_k b_k N_k``: ``G_j`` are Gaussian blurs of
    ``sigmas`` (voxels), so positive ``a_j`` blur and negative ones sharpen (unsharp masking); ``N_k`` are the
    noise channel blurred by the Gaussians of ``noise_sigmas`` (default: ``sigmas``) and scaled to unit SD, so
    ``b_k`` sets how much noise of each grain is added; ``s**p`` makes the added noise grow with uptake
    (Poisson-like at p = 0.5, where it starts). Blurs keep the mean, so uptake stays; no anatomy can be invented or
    removed.

    With ``levels`` (SUV thresholds), each uptake level of the scan smoothed over 2 voxels has its own ``a_j``,
    blended across the thresholds over about 20 % of SUV: a site's noise is removed by blurring the background,
    while lesions, whose features depend on their edges, may keep or sharpen theirs.

    ``min_blur`` bounds the ``a`` from below, one bound for every level (lowest first) or one for all (0: blur
    only; the trainer projects the weights onto the bounds after each step, :meth:`constrain_`). Every ``a`` and
    ``b`` starts at zero: the untrained generator is the identity. Input and output are in the
    network's intensity range (the transform of intensity.py, ``suv_max`` and ``suv_scale``); it runs in fp32
    under autocast (it is cheap, and SUV differences of a few percent are what it learns). The input has two
    channels, image and noise; a one-channel input gets fresh noise.
    """

    def __init__(
        self,
        sigmas: tuple[float, ...] = (0.5, 1.0, 2.0, 3.0),
        suv_max: float = 50.0,
        suv_scale: float = 1.0,
        levels: tuple[float, ...] = (),
        noise_sigmas: tuple[float, ...] | None = None,
        min_blur: float | tuple[float, ...] = -math.inf,
        axis_scale: tuple[float, float, float] = (1.0, 1.0, 1.0),
    ) -> None:
        super().__init__()
        self.axis_scale = tuple(float(a) for a in axis_scale)
        self.levels = tuple(float(v) for v in levels)
        bounds = (min_blur,) if isinstance(min_blur, (int, float)) else tuple(min_blur)
        if len(bounds) == 1:
            bounds = bounds * (len(self.levels) + 1)
        if len(bounds) != len(self.levels) + 1:
            raise ValueError(f"min_blur={min_blur}: need one bound, or one per uptake level ({len(self.levels) + 1})")
        self.min_blur = tuple(float(b) for b in bounds)
        self.sigmas = tuple(float(s) for s in sigmas)
        self.noise_sigmas = self.sigmas if noise_sigmas is None else tuple(float(s) for s in noise_sigmas)
        self.suv_max = float(suv_max)
        self.suv_scale = float(suv_scale)
        self.blur_weights = nn.Parameter(torch.zeros(len(self.levels) + 1, len(self.sigmas)))
        self.noise_weights = nn.Parameter(torch.zeros(len(self.noise_sigmas)))
        self.noise_power = nn.Parameter(torch.tensor(0.5))
        # one kernel per distinct sigma, blur and noise grains alike
        self._all_sigmas = sorted(set(self.sigmas) | set(self.noise_sigmas))
        for index, sigma in enumerate(self._all_sigmas):
            for axis, scale in enumerate(self.axis_scale):
                self.register_buffer(f"kernel{index}_{axis}", gaussian_kernel(sigma * scale), persistent=False)
        self.register_buffer("level_kernel", gaussian_kernel(2.0), persistent=False)

    @torch.no_grad()
    def constrain_(self) -> None:
        """Project the blur weights onto their bounds (``min_blur``), after each optimiser step."""
        for level, bound in enumerate(self.min_blur):
            if math.isfinite(bound):
                self.blur_weights[level].clamp_(min=bound)

    def _bounded_blur_weights(self) -> torch.Tensor:
        if not any(math.isfinite(b) for b in self.min_blur):
            return self.blur_weights
        rows = [w.clamp(min=b) if math.isfinite(b) else w for w, b in zip(self.blur_weights, self.min_blur)]
        return torch.stack(rows)

    def _kernels(self, sigmas: tuple[float, ...]) -> list[tuple[torch.Tensor, ...]]:
        """Per sigma, its (z, y, x) 1D kernels."""
        return [
            tuple(getattr(self, f"kernel{self._all_sigmas.index(sigma)}_{axis}") for axis in range(3))
            for sigma in sigmas
        ]

    # intensity.py's transform, in torch (test_cyclegan_nets checks that the two agree).
    def to_suv(self, x: torch.Tensor) -> torch.Tensor:
        half_range = math.log1p(self.suv_max / self.suv_scale) / 2
        return self.suv_scale * torch.expm1((x.clamp(-1.0, 1.0) + 1.0) * half_range)

    def to_network(self, suv: torch.Tensor) -> torch.Tensor:
        half_range = math.log1p(self.suv_max / self.suv_scale) / 2
        return torch.log1p(suv.clamp(0.0, self.suv_max) / self.suv_scale) / half_range - 1.0

    def level_weights(self, suv: torch.Tensor) -> torch.Tensor:
        """(n, levels + 1, z, y, x) soft memberships of each voxel's smoothed uptake in the levels; they sum to 1."""
        if not self.levels:
            return torch.ones_like(suv)
        kernel = self.level_kernel
        assert isinstance(kernel, torch.Tensor)
        log_smooth = torch.log(separable_blur(suv, kernel).clamp(min=1e-6))
        above = [torch.sigmoid((log_smooth - math.log(t)) / LEVEL_WIDTH) for t in self.levels]
        bounds = [torch.ones_like(suv), *above, torch.zeros_like(suv)]
        return torch.cat([upper - lower for upper, lower in zip(bounds, bounds[1:])], dim=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        with torch.autocast(device_type=x.device.type, enabled=False):
            x = x.float()
            image = x[:, :1]
            noise = x[:, 1:2] if x.shape[1] > 1 else torch.randn_like(image)
            suv = self.to_suv(image)
            with torch.no_grad():
                membership = self.level_weights(suv)
            out = suv
            weights = self._bounded_blur_weights()
            for index, kernel in enumerate(self._kernels(self.sigmas)):
                a = (membership * weights[:, index].view(1, -1, 1, 1, 1)).sum(dim=1, keepdim=True)
                out = out + a * (separable_blur(suv, kernel) - suv)
            grain = torch.zeros_like(suv)
            for b, kernel in zip(self.noise_weights, self._kernels(self.noise_sigmas)):
                kz, ky, kx = kernel
                # SD of white noise after the blur; the isotropic form keeps earlier models' output to the bit
                if self.axis_scale == (1.0, 1.0, 1.0):
                    unit_sd = kx.square().sum() ** 1.5
                else:
                    unit_sd = (kz.square().sum() * ky.square().sum() * kx.square().sum()) ** 0.5
                grain = grain + b * separable_blur(noise, kernel) / unit_sd
            out = out + suv.clamp(min=1e-6) ** self.noise_power * grain
            # Only the change crosses the transform's round trip: zero weights give back the input to the bit.
            return image + (self.to_network(out) - self.to_network(suv))


class PatchDiscriminator3d(nn.Module):
    """3D PatchGAN discriminator: one realness score per overlapping input patch."""

    def __init__(self, ndf: int = 64, n_layers: int = 3, in_channels: int = 1) -> None:
        super().__init__()
        layers: list[nn.Module] = [
            Conv3d(in_channels, ndf, kernel_size=4, stride=2, padding=1),
            nn.LeakyReLU(0.2, inplace=True),
        ]
        mult = 1
        for n in range(1, n_layers + 1):
            previous, mult = mult, min(2**n, 8)
            stride = 2 if n < n_layers else 1
            layers += [
                Conv3d(ndf * previous, ndf * mult, kernel_size=4, stride=stride, padding=1),
                nn.InstanceNorm3d(ndf * mult),
                nn.LeakyReLU(0.2, inplace=True),
            ]
        layers += [Conv3d(ndf * mult, 1, kernel_size=4, stride=1, padding=1)]
        self.model = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self._score(self.model[:-1](x))

    def _score(self, x: torch.Tensor) -> torch.Tensor:
        # The final convolution (to one channel) runs in fp32: under bf16 autocast on a CPU, oneDNN returned
        # non-finite weight gradients for it in up to 6 of 20 calls (measured, docs/methods/cyclegan.md), and the
        # NaN guard then skipped the discriminators' update. It is a small share of the discriminator's work.
        final = self.model[-1]
        assert isinstance(final, nn.Conv3d)
        with torch.autocast(device_type=x.device.type, enabled=False):
            return final(x.to(final.weight.dtype))

    def forward_with_features(self, x: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """The realness map and the activations after every LeakyReLU (for feature matching)."""
        features = []
        for layer in list(self.model)[:-1]:
            x = layer(x)
            if isinstance(layer, nn.LeakyReLU):
                features.append(x)
        return self._score(x), features


class HighPassDiscriminator3d(nn.Module):
    """A PatchGAN that sees the patch and amplified band-pass copies of it (1 + len(sigmas) input channels).

    Noise texture (its amplitude and grain) lives at the highest spatial frequencies, where it is small
    next to the anatomy in the network's intensity range. The extra channels are the differences of
    successive Gaussian blurs, ``gain * (x - blur_1(x))``, ``gain * (blur_1(x) - blur_2(x))``, ... (sigmas
    in voxels), which put the noise of each grain size on the same scale as the image, so the
    discriminator judges texture from its first steps. Noise smoothed over more than a voxel (most PET
    reconstructions) sits mostly in the second band. With ``clip`` > 0 each amplified band is soft-clipped
    to +-clip (``clip * tanh(band / clip)``). Not in the paper; ``d_highpass_gain``, ``d_band_sigmas`` and
    ``d_band_clip`` in the config.
    """

    def __init__(
        self,
        ndf: int = 64,
        n_layers: int = 3,
        gain: float = 8.0,
        sigmas: tuple[float, ...] = (1.0,),
        clip: float = 0.0,
    ) -> None:
        super().__init__()
        self.gain = float(gain)
        self.clip = float(clip)
        self.sigmas = tuple(float(s) for s in sigmas)
        self.patch = PatchDiscriminator3d(ndf, n_layers, in_channels=1 + len(self.sigmas))
        for index, sigma in enumerate(self.sigmas):
            self.register_buffer(f"kernel{index}", gaussian_kernel(sigma), persistent=False)

    def bands(self, x: torch.Tensor) -> list[torch.Tensor]:
        """The band-pass copies of ``x`` (before the gain), finest first."""
        return band_pass(x, [getattr(self, f"kernel{index}") for index in range(len(self.sigmas))])

    def channels(self, x: torch.Tensor) -> torch.Tensor:
        """The PatchGAN's input: the patch and its amplified (optionally soft-clipped) bands."""
        amplified = [self.gain * band for band in self.bands(x)]
        if self.clip > 0:
            # Soft clipping: noise stays linear, anatomy edges (far larger) saturate, so edge sharpness,
            # which also differs between sites, cannot outweigh the noise texture.
            amplified = [self.clip * torch.tanh(band / self.clip) for band in amplified]
        return torch.cat([x, *amplified], dim=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.patch(self.channels(x))

    def forward_with_features(self, x: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """The realness map and the PatchGAN's activations after every LeakyReLU (for feature matching)."""
        return self.patch.forward_with_features(self.channels(x))


def gaussian_kernel(sigma: float) -> torch.Tensor:
    """Normalised 1D Gaussian of ``sigma`` voxels, truncated at about 2 sigma (at least 3 taps)."""
    radius = max(1, int(round(2 * sigma)))
    offsets = torch.arange(-radius, radius + 1, dtype=torch.float32)
    kernel = torch.exp(-0.5 * (offsets / sigma) ** 2)
    return kernel / kernel.sum()


def band_pass(x: torch.Tensor, kernels: list[torch.Tensor]) -> list[torch.Tensor]:
    """Differences of successive Gaussian blurs: ``x - blur_1(x)``, ``blur_1(x) - blur_2(x)``, ... (finest first)."""
    out, previous = [], x
    for kernel in kernels:
        blurred = separable_blur(x, kernel)
        out.append(previous - blurred)
        previous = blurred
    return out


def separable_blur(x: torch.Tensor, kernel: torch.Tensor | tuple[torch.Tensor, ...]) -> torch.Tensor:
    """Blur a one-channel batch ``(n, 1, z, y, x)`` along all three axes with a 1D kernel, or one per axis
    ``(z, y, x)`` (replicated edges)."""
    kz, ky, kx = (kernel, kernel, kernel) if isinstance(kernel, torch.Tensor) else kernel
    rz, ry, rx = (k.numel() // 2 for k in (kz, ky, kx))
    out = F.pad(x, (rx, rx, ry, ry, rz, rz), mode="replicate")
    out = F.conv3d(out, kz.to(device=x.device, dtype=x.dtype).view(1, 1, -1, 1, 1))
    out = F.conv3d(out, ky.to(device=x.device, dtype=x.dtype).view(1, 1, 1, -1, 1))
    return F.conv3d(out, kx.to(device=x.device, dtype=x.dtype).view(1, 1, 1, 1, -1))


def receptive_field(module: nn.Module) -> int:
    """Receptive field (voxels along one axis) of a plain stack of convolutions."""
    convs = [m for m in module.modules() if isinstance(m, nn.Conv3d)]
    field = 1
    for conv in reversed(convs):
        field = (field - 1) * conv.stride[0] + conv.kernel_size[0]
    return field


def init_weights(module: nn.Module, gain: float = 0.02) -> None:
    """CycleGAN's initialisation: conv weights ~ N(0, 0.02), biases 0.

    The final convolution of a residual generator is then set to zero again
    (the untrained generator stays the identity).
    """
    for m in module.modules():
        if isinstance(m, (nn.Conv3d, nn.ConvTranspose3d)):
            nn.init.normal_(m.weight, 0.0, gain)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
    for m in module.modules():
        if isinstance(m, ResnetGenerator3d):
            m.zero_residual()


def count_parameters(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def conv_flops(module: nn.Module, input_shape: tuple[int, ...]) -> int:
    """Multiply-add FLOPs (2 per MAC) of every 3D (transposed) convolution for one forward pass."""
    total = 0
    hooks = []

    def hook(m, inputs, output):
        nonlocal total
        if isinstance(m, nn.ConvTranspose3d):
            voxels = inputs[0].shape[0] * inputs[0][0, 0].numel()
        else:
            voxels = output.shape[0] * output[0, 0].numel()
        k = m.kernel_size[0] * m.kernel_size[1] * m.kernel_size[2]
        total += 2 * voxels * k * m.in_channels * m.out_channels // m.groups

    for m in module.modules():
        if isinstance(m, (nn.Conv3d, nn.ConvTranspose3d)):
            hooks.append(m.register_forward_hook(hook))
    try:
        with torch.no_grad():
            module(torch.zeros(input_shape, device=next(module.parameters()).device))
    finally:
        for h in hooks:
            h.remove()
    return total
