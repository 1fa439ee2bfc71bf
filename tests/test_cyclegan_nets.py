"""CycleGAN building blocks: published network structure, receptive field, SUV transform, sliding window."""

from __future__ import annotations

import math

import numpy as np
import pytest

torch = pytest.importorskip("torch")
from torch import nn  # noqa: E402

from harmkit_cyclegan.config import PROFILES, get_profile  # noqa: E402
from harmkit_cyclegan.inference import sliding_window, window_starts  # noqa: E402
from harmkit_cyclegan.intensity import to_network, to_suv  # noqa: E402
from harmkit_cyclegan.monitor import checkerboard_share  # noqa: E402
from harmkit_cyclegan.nets import (  # noqa: E402
    Conv3d,
    FilterGenerator3d,
    PatchDiscriminator3d,
    ResidualBlock,
    ResnetGenerator3d,
    init_weights,
    receptive_field,
)  # noqa: E402

# Two cores shared with other work: one torch thread avoids OpenMP contention.
pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _layers(module, kinds):
    return [m for m in module.modules() if isinstance(m, kinds)]


def test_paper_profile_generator_has_the_published_layers():
    cfg = PROFILES["paper"]
    gen = ResnetGenerator3d(cfg.ngf, cfg.n_res_blocks, cfg.n_downsampling)
    seq = list(gen.model)
    # 7^3 conv to 64 features after reflection padding 3, instance norm, ReLU
    assert isinstance(seq[0], nn.ReflectionPad3d) and seq[0].padding == (3,) * 6
    assert (seq[1].in_channels, seq[1].out_channels, seq[1].kernel_size) == (
        1,
        64,
        (7, 7, 7),
    )
    assert isinstance(seq[2], nn.InstanceNorm3d) and isinstance(seq[3], nn.ReLU)
    convs = [m for m in seq if isinstance(m, nn.Conv3d)]
    down = [c for c in convs if c.stride == (2, 2, 2)]
    assert [(c.in_channels, c.out_channels, c.kernel_size[0]) for c in down] == [
        (64, 128, 3),
        (128, 256, 3),
    ]
    blocks = [m for m in seq if isinstance(m, ResidualBlock)]
    assert len(blocks) == 9
    for block in blocks:
        inner = list(block.body)
        assert [type(m) for m in inner] == [
            nn.ReflectionPad3d,
            Conv3d,
            nn.InstanceNorm3d,
            nn.ReLU,
            nn.ReflectionPad3d,
            Conv3d,
            nn.InstanceNorm3d,
        ]
        assert all(c.in_channels == c.out_channels == 256 for c in inner if isinstance(c, nn.Conv3d))
    up = [m for m in seq if isinstance(m, nn.ConvTranspose3d)]
    assert [(u.in_channels, u.out_channels, u.stride) for u in up] == [
        (256, 128, (2, 2, 2)),
        (128, 64, (2, 2, 2)),
    ]
    assert isinstance(seq[-3], nn.ReflectionPad3d)
    assert (seq[-2].in_channels, seq[-2].out_channels, seq[-2].kernel_size) == (
        64,
        1,
        (7, 7, 7),
    )
    assert isinstance(seq[-1], nn.Tanh)
    assert not _layers(gen, (nn.BatchNorm3d,))
    assert len(_layers(gen, nn.InstanceNorm3d)) == 1 + 2 + 9 * 2 + 2


def test_generator_keeps_the_patch_shape():
    gen = ResnetGenerator3d(ngf=2, n_res_blocks=1)
    out = gen(torch.zeros(2, 1, 12, 16, 20))
    assert out.shape == (2, 1, 12, 16, 20)
    assert out.abs().max() <= 1


@pytest.mark.parametrize(
    "in_channels, out_channels, kernel, stride, padding",
    [(1, 8, 7, 1, 0), (16, 8, 3, 1, 0), (8, 16, 3, 2, 1), (8, 1, 7, 1, 0), (8, 1, 4, 1, 1)],
)
@pytest.mark.parametrize("channels_last", [False, True])
def test_inference_convolutions_equal_torch_and_training_runs_torch_itself(
    in_channels, out_channels, kernel, stride, padding, channels_last
):
    torch.manual_seed(0)
    conv = Conv3d(in_channels, out_channels, kernel_size=kernel, stride=stride, padding=padding)
    x = torch.randn(2, in_channels, 18, 20, 22)
    if channels_last:
        x = x.to(memory_format=torch.channels_last_3d)
    expected = torch.nn.functional.conv3d(x, conv.weight, conv.bias, stride, padding)
    with torch.inference_mode():
        fast = conv(x)
    assert fast.shape == expected.shape
    torch.testing.assert_close(fast, expected.detach(), rtol=1e-5, atol=1e-5)
    # With gradients (training) it is torch's own convolution, to the bit: trained weights do not change.
    assert torch.equal(conv(x), expected)
    with torch.autocast("cpu", dtype=torch.bfloat16), torch.inference_mode():
        assert conv(x).dtype == torch.bfloat16


def test_a_generator_translates_the_same_with_the_fast_inference_convolutions():
    torch.manual_seed(0)
    gen = ResnetGenerator3d(ngf=8, n_res_blocks=2, residual=True, upsampling="resize").eval()
    with torch.no_grad():
        for parameter in gen.parameters():
            parameter.add_(0.02 * torch.randn_like(parameter))  # the zero last convolution too: a real change
    x = torch.rand(1, 1, 32, 32, 32) * 2 - 1
    with torch.inference_mode():
        fast = gen(x)
    reference = gen(x).detach()  # gradients on: torch's convolutions throughout
    assert (reference - x).abs().max() > 0.1
    torch.testing.assert_close(fast, reference, rtol=1e-4, atol=1e-4)


def test_an_untrained_residual_generator_is_exactly_the_identity():
    from harmkit_cyclegan.training import build_networks

    torch.manual_seed(0)
    cfg = get_profile("quick").with_overrides(generator="resnet", ngf=4, n_res_blocks=1)
    assert cfg.residual and not get_profile("paper").residual
    nets = build_networks(cfg)  # CycleGAN's N(0, 0.02) initialisation, then the residual path is zeroed
    x = torch.rand(2, 1, 16, 20, 24) * 2 - 1
    for name in ("G_ab", "G_ba"):
        assert nets[name].residual
        assert torch.equal(nets[name](x), x)
    # The same parameter names as the published generator: checkpoints and saved models load either way.
    plain = ResnetGenerator3d(4, 1, upsampling=cfg.upsampling)
    assert list(plain.state_dict()) == list(nets["G_ab"].state_dict())
    # One optimisation step moves it away from the identity (the zeroed convolution still learns).
    gen = nets["G_ab"]
    opt = torch.optim.Adam(gen.parameters(), lr=1e-3)
    loss = (gen(x) - (x + 0.1)).abs().mean()
    loss.backward()
    opt.step()
    assert not torch.equal(gen(x), x)


def test_paper_profile_discriminator_is_a_70_voxel_patchgan():
    cfg = PROFILES["paper"]
    disc = PatchDiscriminator3d(cfg.ndf, cfg.n_d_layers)
    convs = _layers(disc, nn.Conv3d)
    assert [(c.out_channels, c.kernel_size[0], c.stride[0]) for c in convs] == [
        (64, 4, 2),
        (128, 4, 2),
        (256, 4, 2),
        (512, 4, 1),
        (1, 4, 1),
    ]
    seq = list(disc.model)
    assert isinstance(seq[1], nn.LeakyReLU) and seq[1].negative_slope == 0.2  # no norm on the first layer
    assert len(_layers(disc, nn.InstanceNorm3d)) == 3
    assert all(m.negative_slope == 0.2 for m in _layers(disc, nn.LeakyReLU))
    assert receptive_field(disc) == 70


def test_one_discriminator_output_sees_exactly_70_voxels_per_axis():
    torch.manual_seed(0)
    disc = PatchDiscriminator3d(ndf=2, n_layers=3).double()
    # Instance norm mixes every voxel of a channel (a global statistic); the
    # receptive field is that of the convolution stack, so take the norms out.
    disc.model = nn.Sequential(*[nn.Identity() if isinstance(m, nn.InstanceNorm3d) else m for m in disc.model])
    x = torch.randn(1, 1, 88, 88, 88, dtype=torch.float64, requires_grad=True)
    out = disc(x)
    centre = tuple(s // 2 for s in out.shape[2:])
    out[(0, 0, *centre)].backward()
    nonzero = x.grad[0, 0].abs() > 0
    for axis in range(3):
        other = tuple(a for a in range(3) if a != axis)
        idx = np.flatnonzero(nonzero.any(dim=other[1]).any(dim=other[0]).numpy())
        assert idx.max() - idx.min() + 1 == 70


def test_suv_transform_round_trips_and_is_the_same_for_every_scan():
    rng = np.random.default_rng(0)
    suv = np.concatenate([rng.uniform(0, 50, 10000), [0.0, 0.1, 1.0, 2.5, 50.0]]).astype(np.float32)
    y = to_network(suv)
    assert y.min() >= -1 and y.max() <= 1
    assert y[-5] == -1 and y[-1] == pytest.approx(1.0)
    assert np.all(np.diff(to_network(np.sort(suv))) >= 0)
    np.testing.assert_allclose(to_suv(y), suv, rtol=2e-5, atol=2e-5)
    # A fixed transform: a voxel's value does not depend on the rest of its scan.
    np.testing.assert_array_equal(to_network(suv[:5]), y[:5])
    np.testing.assert_array_equal(to_network(suv[:5] * 1.0), to_network(np.concatenate([suv[:5], [49.0]]))[:5])
    np.testing.assert_allclose(
        to_suv(to_network(suv, 20, 0.5), 20, 0.5),
        np.minimum(suv, 20),
        rtol=2e-5,
        atol=2e-5,
    )


def test_window_positions_cover_any_size_with_the_last_window_flush():
    assert window_starts(10, 16, 0.5) == [0]
    starts = window_starts(101, 32, 0.25)
    assert starts[0] == 0 and starts[-1] == 101 - 32
    assert max(np.diff(starts)) <= 24


def test_sliding_window_blends_back_the_volume_with_bounded_batches():
    rng = np.random.default_rng(0)
    volume = rng.normal(size=(37, 50, 23)).astype(np.float32)  # not multiples of the window or of 4
    seen = []

    def predictor(batch):
        seen.append(tuple(batch.shape))
        return batch * 2 + 1

    calls = []
    out = sliding_window(
        volume,
        predictor,
        (16, 24, 32),
        overlap=0.5,
        batch_size=3,
        progress=lambda d, t: calls.append((d, t)),
    )
    assert out.shape == volume.shape and out.dtype == np.float32
    np.testing.assert_allclose(out, volume * 2 + 1, rtol=1e-5, atol=1e-5)
    assert all(s[0] <= 3 and s[1:] == (1, 16, 24, 32) for s in seen)  # never more than one batch of windows
    assert calls[-1][0] == calls[-1][1] == sum(s[0] for s in seen)


def test_quick_and_paper_profiles_are_valid_and_overrides_are_checked():
    assert get_profile("quick").ngf < get_profile("paper").ngf
    assert get_profile("paper").window == (64, 128, 128) and get_profile("paper").overlap == 0.85
    with pytest.raises(ValueError, match="window"):
        get_profile("quick").with_overrides(window=(30, 64, 64))
    with pytest.raises(ValueError, match="unknown"):
        get_profile("quick").with_overrides(nfg=3)


def test_networks_training_and_inference_import_only_torch_and_numpy():
    """The GPU machine has torch and numpy only: these modules must not need anything else."""
    import subprocess
    import sys
    from pathlib import Path

    import harmkit_cyclegan

    blocker = (
        "import sys, importlib.abc\n"
        "class Block(importlib.abc.MetaPathFinder):\n"
        "    def find_spec(self, name, path, target=None):\n"
        "        if name.split('.')[0] in (\n"
        "            'SimpleITK', 'harmkit', 'radiomics', 'neuroHarmonize', 'h5py', 'scipy', 'pandas'\n"
        "        ):\n"
        "            raise ImportError('blocked: ' + name)\n"
        "sys.meta_path.insert(0, Block())\n"
        "import harmkit_cyclegan.config, harmkit_cyclegan.intensity, harmkit_cyclegan.nets\n"
        "import harmkit_cyclegan.training, harmkit_cyclegan.inference\n"
        "print('ok')\n"
    )
    package_root = str(Path(harmkit_cyclegan.__file__).resolve().parents[1])
    result = subprocess.run(
        [sys.executable, "-c", blocker],
        capture_output=True,
        text=True,
        env={"PYTHONPATH": package_root, "PATH": ""},
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "ok"


def test_high_pass_discriminator_sees_noise_amplified_and_smooth_regions_as_zero():
    from harmkit_cyclegan.nets import HighPassDiscriminator3d

    disc = HighPassDiscriminator3d(ndf=2, n_layers=2, gain=8.0)
    flat = torch.full((1, 1, 24, 24, 24), 0.3)
    ramp = torch.linspace(-1, 1, 24).view(1, 1, 24, 1, 1).expand(1, 1, 24, 24, 24)
    # A constant and (away from the edges) a linear ramp have no high-pass content.
    assert torch.allclose(disc.bands(flat)[0], torch.zeros_like(flat), atol=1e-6)
    assert torch.allclose(disc.bands(ramp)[0][..., 3:-3, :, :], torch.zeros_like(ramp)[..., 3:-3, :, :], atol=1e-5)
    torch.manual_seed(0)
    noise = 0.05 * torch.randn(1, 1, 24, 24, 24)
    high = disc.gain * disc.bands(noise)[0]
    assert high.std() > 4 * noise.std()  # white noise survives the high-pass, amplified by the gain
    assert disc(flat + noise).shape[:2] == (1, 1)
    assert disc.patch.model[0].in_channels == 2


def test_band_pass_discriminator_splits_noise_by_grain_and_the_bands_add_up():
    from harmkit_cyclegan.nets import HighPassDiscriminator3d, gaussian_kernel, separable_blur

    disc = HighPassDiscriminator3d(ndf=2, n_layers=2, gain=8.0, sigmas=(1.0, 2.0))
    assert disc.patch.model[0].in_channels == 3
    torch.manual_seed(0)
    white = torch.randn(1, 1, 32, 32, 32)
    blobby = separable_blur(white, gaussian_kernel(1.5))  # noise correlated over a few voxels
    inner = (..., slice(6, -6), slice(6, -6), slice(6, -6))
    fine_white, mid_white = (band[inner].std() for band in disc.bands(white))
    fine_blobby, mid_blobby = (band[inner].std() for band in disc.bands(blobby))
    # White noise is mostly in the finest band; blobby noise has moved to the second one.
    assert fine_white > mid_white
    assert mid_blobby > fine_blobby
    # The bands and the last blur give the patch back (a Laplacian-pyramid split, nothing lost).
    rebuilt = sum(disc.bands(blobby)) + separable_blur(blobby, gaussian_kernel(2.0))
    assert torch.allclose(rebuilt, blobby, atol=1e-5)


def test_windows_of_air_only_are_not_run_and_leave_no_change():
    volume = np.full((24, 40, 40), -1.0, dtype=np.float32)  # air everywhere (network units) ...
    volume[4:20, 4:16, 4:16] = 0.2  # ... but a body in one corner
    calls = []

    def plus_one(batch):
        calls.append(batch.shape[0])
        return torch.ones_like(batch)

    every = sliding_window(volume, plus_one, (16, 16, 16), overlap=0.0)
    assert np.all(every == pytest.approx(1.0)) and len(calls) == 18  # 2 x 3 x 3 windows
    calls.clear()
    change = sliding_window(volume, plus_one, (16, 16, 16), overlap=0.0, skip_below=-0.99)
    assert len(calls) == 2  # only the windows that hold part of the body (both z positions, y = x = 0)
    assert np.allclose(change[4:16, 4:16, 4:16], 1.0)  # the body got the network's output
    assert np.all(change[:, 24:, 24:] == 0.0)  # far air: no change


def test_resize_upsampling_paints_no_checkerboard_on_a_smooth_input():
    """Transposed convolutions overlap unevenly and leave a period-2 pattern; resize-convolution does not."""
    torch.manual_seed(0)
    z, y, x = torch.meshgrid(*[torch.linspace(-1, 1, 32)] * 3, indexing="ij")
    smooth = (0.4 * torch.exp(-(x**2 + y**2 + z**2) / 0.5) - 0.5).view(1, 1, 32, 32, 32)

    def checkerboard(upsampling: str) -> float:
        torch.manual_seed(0)
        net = ResnetGenerator3d(ngf=4, n_res_blocks=1, n_downsampling=2, upsampling=upsampling)
        init_weights(net)
        with torch.no_grad():
            return checkerboard_share(net(smooth)[0, 0, 4:-4, 4:-4, 4:-4].numpy())

    # White noise has a share of 1. Measured at seeds 0 / 1 / 2: resize 0.03 / 0.04 / 0.02, transpose 2.7 / 2.1 / 2.9.
    assert checkerboard("resize") < 0.3
    assert checkerboard("transpose") > 1.5


def test_checkerboard_share_is_about_one_for_white_noise_and_large_for_a_period_two_pattern():
    rng = np.random.default_rng(0)
    white = rng.normal(size=(16, 16, 32))
    pattern = white * 0.2 + (-1.0) ** np.arange(32)
    assert 0.7 < checkerboard_share(white) < 1.3
    assert checkerboard_share(pattern) > 10
    assert np.isnan(checkerboard_share(np.zeros((4, 4, 8))))


def test_a_high_passed_residual_changes_texture_but_no_coarse_uptake():
    from harmkit_cyclegan.nets import gaussian_kernel, separable_blur

    torch.manual_seed(1)
    x = torch.rand(1, 1, 48, 48, 48) * 2 - 1
    plain = ResnetGenerator3d(4, 1, residual=True, upsampling="resize")
    filtered = ResnetGenerator3d(4, 1, residual=True, upsampling="resize", residual_highpass=3.0)
    init_weights(plain)
    nn.init.normal_(plain.last_conv.weight, 0.0, 0.05)
    nn.init.constant_(plain.last_conv.bias, 0.2)  # a trained generator's uptake offset
    # The kernel is not stored: both load each other's weights, and models saved before the option load too.
    assert list(filtered.state_dict()) == list(plain.state_dict())
    filtered.load_state_dict(plain.state_dict())
    with torch.no_grad():
        change_plain, change_filtered = plain(x) - x, filtered(x) - x
    kernel = gaussian_kernel(3.0)
    inner = (slice(None), slice(None), *[slice(8, -8)] * 3)
    # uptake over a region several sigmas wide: the plain generator's offset, none after the filter
    offset = change_plain[inner].mean().abs()
    assert offset > 0.15
    assert change_filtered[inner].mean().abs() < 0.1 * offset, (change_filtered[inner].mean(), offset)
    # ... while the fine part of the change is the same one
    fine = (change_plain - separable_blur(change_plain, kernel))[inner]
    assert torch.allclose(change_filtered[inner], fine, atol=1e-5)
    with pytest.raises(ValueError, match="residual_highpass"):
        get_profile("paper").with_overrides(residual_highpass=2.0)


def test_the_noise_channel_is_one_volume_so_overlapping_windows_see_the_same_noise():
    rng = np.random.default_rng(2)
    volume = rng.normal(size=(37, 50, 23)).astype(np.float32)
    noise = rng.normal(size=volume.shape).astype(np.float32)
    shapes = []

    def predictor(batch):
        shapes.append(tuple(batch.shape[1:]))
        return batch[:, 1:] + 0 * batch[:, :1]

    # Each voxel's blend of overlapping windows gives back exactly the noise there: every window saw the same
    # values (independent draws per window would blend to a smaller SD).
    out = sliding_window(volume, predictor, (16, 24, 32), overlap=0.5, extra=noise)
    np.testing.assert_allclose(out, noise, rtol=1e-5, atol=1e-5)
    assert set(shapes) == {(2, 16, 24, 32)}
    # A generator with a noise input draws fresh noise for a one-channel patch (training) and starts as the
    # identity either way.
    torch.manual_seed(0)
    gen = ResnetGenerator3d(4, 1, residual=True, upsampling="resize", noise_input=True)
    init_weights(gen)
    x = torch.rand(1, 1, 16, 16, 16)
    assert torch.equal(gen(x), x)
    assert torch.equal(gen(torch.cat([x, torch.randn_like(x)], dim=1)), x)
    nn.init.normal_(gen.last_conv.weight, 0.0, 0.05)
    assert not torch.equal(gen(x), gen(x))  # two draws
    fixed = torch.cat([x, torch.randn_like(x)], dim=1)
    assert torch.equal(gen(fixed), gen(fixed))


def _suv_phantom(shape=(24, 24, 24)) -> np.ndarray:
    """A smooth body of SUV 1 with a hot sphere of SUV 8 and a cold corner of air (network units)."""
    z, y, x = np.indices(shape)
    centre = np.array(shape) / 2
    suv = np.ones(shape, np.float32)
    suv[(z - centre[0]) ** 2 + (y - centre[1]) ** 2 + (x - centre[2]) ** 2 < 16] = 8.0
    suv[:4, :4, :4] = 0.0
    return to_network(suv)[None, None]


def test_an_untrained_filter_generator_is_the_identity_and_keeps_the_scan_in_bf16_autocast():
    generator = FilterGenerator3d()
    x = torch.from_numpy(_suv_phantom())
    noise = torch.randn_like(x)
    with torch.no_grad():
        out = generator(torch.cat([x, noise], dim=1))
        with torch.autocast("cpu", dtype=torch.bfloat16):
            out_bf16 = generator(torch.cat([x, noise], dim=1))
    assert out.dtype == out_bf16.dtype == torch.float32  # the generator runs in fp32 under autocast
    assert torch.equal(out, x) and torch.equal(out_bf16, x)  # to the bit: only a change crosses the SUV transform


def test_the_filter_generator_blurs_without_moving_uptake_and_adds_noise_that_grows_with_it():
    torch.manual_seed(0)
    generator = FilterGenerator3d(sigmas=(1.0, 2.0))
    x = torch.from_numpy(_suv_phantom((32, 32, 32)))
    suv = generator.to_suv(x)
    with torch.no_grad():
        generator.blur_weights.copy_(torch.tensor([1.0, 0.0]))  # a Gaussian blur of sigma 1 voxel
        blurred = generator.to_suv(generator(torch.cat([x, torch.zeros_like(x)], dim=1)))
    # the blur keeps the total uptake (replicated edges: the body reaches the border) and softens the sphere's rim
    assert abs(float(blurred.sum() / suv.sum()) - 1.0) < 1e-3
    assert float(blurred[0, 0, 16, 16, 16]) == pytest.approx(8.0, rel=1e-3)  # the centre is 4 voxels from the rim
    assert float(blurred[0, 0, 16, 16, 13]) < 7.0 and float(blurred[0, 0, 16, 16, 12]) > 2.0  # rim in, air out
    halves = np.ones((32, 48, 48), np.float32)
    halves[..., 24:] = 9.0
    halves[:4, :4, :4] = 0.0  # a corner of air
    x = torch.from_numpy(to_network(halves)[None, None])
    suv = generator.to_suv(x)
    with torch.no_grad():
        generator.blur_weights.zero_()
        generator.noise_weights.copy_(torch.tensor([0.2, 0.0]))  # noise of SD 0.2 at SUV 1, grain of 1 voxel
        noise = generator.to_suv(generator(torch.cat([x, torch.randn_like(x)], dim=1))) - suv
    # away from the volume's border (replicated edges correlate the noise) and from the step between the halves
    low, high = noise[0, 0, 6:-6, 6:-6, 4:18], noise[0, 0, 6:-6, 6:-6, 30:44]  # seeds 0-5: 2.83-3.29
    assert float(low.std()) == pytest.approx(0.2, rel=0.15)
    # Poisson-like at the start: the SD grows with the square root of the uptake
    assert float(high.std() / low.std()) == pytest.approx(3.0, rel=0.15)
    assert float(noise[0, 0, :4, :4, :4].abs().max()) < 1e-3  # air (SUV 0) gets no noise


def test_the_filter_generator_needs_the_scan_wide_noise_channel():
    with pytest.raises(ValueError, match="noise_input"):
        get_profile("quick").with_overrides(generator="filter", noise_input=False)
    with pytest.raises(ValueError, match="generator="):
        get_profile("quick").with_overrides(generator="unet")


def test_the_filter_generator_uses_the_same_suv_transform_as_everything_else():
    generator = FilterGenerator3d(suv_max=30.0, suv_scale=0.5)
    suv = np.array([0.0, 0.05, 0.5, 1.0, 3.0, 12.0, 29.0, 30.0], np.float32)
    network = to_network(suv, 30.0, 0.5)
    assert np.allclose(generator.to_network(torch.from_numpy(suv)).numpy(), network, atol=1e-6)
    assert np.allclose(generator.to_suv(torch.from_numpy(network)).numpy(), to_suv(network, 30.0, 0.5), rtol=1e-5)


def test_the_filter_generators_noise_grains_can_be_coarser_than_its_blurs():
    torch.manual_seed(0)
    generator = FilterGenerator3d(sigmas=(0.5, 1.0), noise_sigmas=(0.5, 3.0))
    assert generator.blur_weights.shape == (1, 2) and generator.noise_weights.shape == (2,)
    flat = torch.from_numpy(to_network(np.ones((40, 40, 40), np.float32))[None, None])
    noise = torch.randn_like(flat)
    with torch.no_grad():
        assert torch.equal(generator(torch.cat([flat, noise], dim=1)), flat)  # untrained: the identity
        grains = []
        for weights in ([0.2, 0.0], [0.0, 0.2]):
            generator.noise_weights.copy_(torch.tensor(weights))
            added = generator.to_suv(generator(torch.cat([flat, noise], dim=1))) - 1.0
            grains.append(added[0, 0, 10:-10, 10:-10, 10:-10])
    for grain in grains:
        # SD 0.2 at SUV 1, whatever the grain (seeds 0-2: 0.200-0.204 fine, 0.182-0.204 coarse)
        assert float(grain.std()) == pytest.approx(0.2, rel=0.2)
    # the coarse grain is correlated over neighbours, the fine one hardly (seeds 0-2: 0.27-0.28 and 0.96-0.97)
    neighbour_correlation = [
        float(torch.corrcoef(torch.stack([g[:, :, :-1].flatten(), g[:, :, 1:].flatten()]))[0, 1]) for g in grains
    ]
    assert neighbour_correlation[0] < 0.5 < 0.9 < neighbour_correlation[1], neighbour_correlation
    with pytest.raises(ValueError, match="filter_noise_sigmas"):
        get_profile("quick").with_overrides(filter_noise_sigmas=(2.0, 1.0))


def test_a_bound_on_the_blur_weights_keeps_the_filter_generator_from_sharpening_more():
    torch.manual_seed(0)
    x = torch.from_numpy(_suv_phantom((32, 32, 32)))
    inputs = torch.cat([x, torch.zeros_like(x)], dim=1)  # no noise: only the blur acts
    bounded, mild, free = (FilterGenerator3d(sigmas=(1.0,), min_blur=m) for m in (0.0, -0.2, -math.inf))
    with torch.no_grad():
        for generator in (bounded, mild, free):
            generator.blur_weights.fill_(-0.5)  # a sharpening
        assert torch.equal(bounded(inputs), x)  # clamped to 0: the identity
        free.blur_weights.fill_(-0.2)
        assert torch.equal(mild(inputs), free(inputs))  # clamped to the bound
    bounded.constrain_()
    mild.constrain_()
    assert float(bounded.blur_weights.detach().min()) == 0.0
    assert float(mild.blur_weights.detach().min()) == pytest.approx(-0.2)
    for bad in (0.1, math.nan):
        with pytest.raises(ValueError, match="filter_min_blur"):
            get_profile("quick").with_overrides(filter_min_blur=bad)


def test_a_blur_bound_per_uptake_level_forbids_sharpening_the_background_and_keeps_it_for_hot_uptake():
    torch.manual_seed(0)
    suv = torch.ones(1, 1, 32, 32, 32)
    suv[..., 16:] = 8.0  # a background of SUV 1 and a hot half of SUV 8, both with a noise texture
    textured = FilterGenerator3d().to_network(suv * (1 + 0.1 * torch.randn_like(suv)))
    inputs = torch.cat([textured, torch.zeros_like(textured)], dim=1)
    per_level = FilterGenerator3d(sigmas=(1.0,), levels=(3.0,), min_blur=(0.0, -math.inf))
    free = FilterGenerator3d(sigmas=(1.0,), levels=(3.0,))
    with torch.no_grad():
        for generator in (per_level, free):
            generator.blur_weights.fill_(-0.5)  # a sharpening at both levels
        bounded_out, free_out = per_level(inputs), free(inputs)
    background, core = (..., slice(2, 10)), (..., slice(22, 30))
    change = (bounded_out - textured).abs()
    assert float(change[background].max()) < 1e-3  # SUV 1: held at the identity
    assert float((free_out - textured).abs()[background].mean()) > 0.005  # unbounded: sharpened
    assert torch.allclose(bounded_out[core], free_out[core], atol=1e-4)  # SUV 8: sharpened as without a bound
    assert float(change[core].mean()) > 0.005
    per_level.constrain_()
    assert per_level.blur_weights[0].tolist() == [0.0] and per_level.blur_weights[1].tolist() == [-0.5]
    quick = get_profile("quick")
    assert quick.with_overrides(filter_min_blur=(0.0, -math.inf)).filter_min_blur == (0.0, -math.inf)
    with pytest.raises(ValueError, match="one per uptake"):
        quick.with_overrides(filter_min_blur=(0.0, 0.0, -math.inf))  # quick has two levels, not three


def _added_noise(generator, shape=(40, 40, 40), weights=None):
    flat = torch.from_numpy(to_network(np.ones(shape, np.float32))[None, None])
    noise = torch.randn_like(flat)
    with torch.no_grad():
        generator.noise_weights.copy_(torch.tensor(weights))
        return (generator.to_suv(generator(torch.cat([flat, noise], dim=1))) - 1.0)[0, 0, 8:-8, 8:-8, 8:-8]


def _lag_one_correlation(grain, axis):
    a, b = grain.narrow(axis, 0, grain.shape[axis] - 1), grain.narrow(axis, 1, grain.shape[axis] - 1)
    return float(torch.corrcoef(torch.stack([a.flatten(), b.flatten()]))[0, 1])


def test_grains_in_mm_are_less_correlated_across_thicker_slices_and_unchanged_on_an_isotropic_grid():
    from harmkit_cyclegan.training import build_generator

    config = get_profile("quick").with_overrides(filter_mm=True)
    assert config.filter_noise_sigmas == (0.5, 1.0, 2.0, 3.0)
    weights = [0.0, 0.2, 0.0, 0.0]  # the 1-voxel grain only
    torch.manual_seed(0)
    lung = _added_noise(build_generator(config, spacing=(2.04, 2.04, 3.0)), weights=weights)
    torch.manual_seed(0)
    in_voxels = _added_noise(
        build_generator(config.with_overrides(filter_mm=False), (2.04, 2.04, 3.0)), weights=weights
    )
    # A Gaussian grain of 1 x-voxel (2.04 mm) is 0.68 slices of 3 mm: neighbours along z correlate less than
    # along x (about exp(-1/4) = 0.78 against exp(-1/(4 * 0.68**2)) = 0.58; seeds 0-2: x 0.77-0.78, z 0.54-0.57);
    # in voxels, the same on every axis (0.77-0.78 on each).
    x_corr, z_corr = _lag_one_correlation(lung, 2), _lag_one_correlation(lung, 0)
    assert 0.7 < x_corr < 0.85 and 0.45 < z_corr < 0.65, (x_corr, z_corr)
    assert abs(_lag_one_correlation(in_voxels, 0) - _lag_one_correlation(in_voxels, 2)) < 0.05
    # the grain keeps the SD its weight asks for on any grid (0.2 at SUV 1)
    assert float(lung.std()) == pytest.approx(0.2, rel=0.1)
    assert float(in_voxels.std()) == pytest.approx(0.2, rel=0.1)
    # On an isotropic grid (head and neck's 4 mm) grains in mm are grains in voxels, to the bit.
    torch.manual_seed(1)
    iso_mm = _added_noise(build_generator(config, spacing=(4.0, 4.0, 4.0)), weights=weights)
    torch.manual_seed(1)
    iso_voxels = _added_noise(build_generator(config.with_overrides(filter_mm=False), (4.0, 4.0, 4.0)), weights=weights)
    assert torch.equal(iso_mm, iso_voxels)
