"""Tests for defocus.optics.render: the exact oracle, the layered fast path and the occlusion renderer.

Checklist per renderer (kornia style): smoke, shapes (B, N, C, H, W) with odd sizes, identity at zero blur, constants
preserved, agreement with an explicit double sum (exact), monotonic blur, float64 gradcheck (image and depth, near the
focal plane included), no dead zone, layered ≈ exact on natural-looking images, occlusion order, input errors.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from defocus.data.procedural import make_scene
from defocus.errors import DefocusError, InputError
from defocus.optics.camera import PRESETS, ThinLensCamera
from defocus.optics.psf import discrete_gaussian_1d, disk_weights, kernel_radius
from defocus.optics.render import (
    RENDER_METHODS,
    default_levels,
    render_exact,
    render_layered,
    render_occlusion,
)

from conftest import render_stack  # noqa: E402 - the renderer of a method, called directly

NYU = PRESETS["nyuv2"].camera
PSFS = ("gaussian", "disk")
METHODS = ("exact", "layered")
ALL = [(m, p) for m in ("exact", "layered", "occlusion") for p in PSFS] + [
    ("layered", "gennorm"), ("occlusion", "gennorm")]
F64 = torch.float64


def _k_px_per_dioptre(camera: ThinLensCamera, fd: float) -> float:
    """K = A·s/p written out from the thin-lens formula (independent of ThinLensCamera's methods)."""
    f = camera.focal_length_m
    return (f / camera.f_number) * (fd * f / (fd - f)) / camera.pixel_size_m


def _depth_for_size(size_px: float, fd: float, psf: str, behind: bool = True, camera=NYU) -> float:
    """The depth (behind or in front of the focal plane) at which the PSF size (σ or radius) is ``size_px``."""
    coc = size_px * (2.0 if psf == "disk" else 4.0)
    delta = coc / _k_px_per_dioptre(camera, fd)
    return 1.0 / (1.0 / fd - delta) if behind else 1.0 / (1.0 / fd + delta)


def _rand(*shape, seed=0, dtype=torch.float32) -> torch.Tensor:
    return torch.rand(*shape, generator=torch.Generator().manual_seed(seed), dtype=dtype)


# --------------------------------------------------------------------------------------------- smoke, shapes
@pytest.mark.parametrize("method,psf", ALL)
def test_smoke_shapes_odd_sizes(method, psf):
    b, n, c, h, w = 2, 3, 3, 7, 11
    aif = _rand(b, c, h, w)
    depth = 0.8 + 3.0 * _rand(b, 1, h, w, seed=1)
    focus = torch.tensor([[1.0, 1.5, 2.5], [0.7, 2.0, 6.0]])
    out = render_stack(aif, depth, focus, NYU, psf=psf, method=method)
    assert out.shape == (b, n, c, h, w)
    assert out.dtype == torch.float32
    assert torch.isfinite(out).all()
    assert out.min() >= -1e-6 and out.max() <= 1 + 1e-6


@pytest.mark.parametrize("method,psf", ALL)
def test_single_channel_single_focus_1d_focus(method, psf):
    aif = _rand(1, 1, 5, 9)
    depth = torch.full((1, 1, 5, 9), 1.3)
    out = render_stack(aif, depth, torch.tensor([2.0]), NYU, psf=psf, method=method)
    assert out.shape == (1, 1, 1, 5, 9)
    # (N,) focus broadcasts over the batch
    aif2 = _rand(2, 3, 6, 5)
    out2 = render_stack(aif2, torch.full((2, 1, 6, 5), 1.3), torch.tensor([1.0, 2.0]), NYU, psf=psf, method=method)
    focus2 = torch.tensor([[1.0, 2.0]] * 2)
    out2b = render_stack(aif2, torch.full((2, 1, 6, 5), 1.3), focus2, NYU, psf=psf, method=method)
    assert out2.shape == (2, 2, 3, 6, 5)
    torch.testing.assert_close(out2, out2b)


def test_float64_in_float64_out():
    aif = _rand(1, 3, 6, 7, dtype=F64)
    depth = torch.full((1, 1, 6, 7), 1.5, dtype=F64)
    for m in METHODS:
        assert render_stack(aif, depth, torch.tensor([[1.0]]), NYU, method=m).dtype == F64


# ----------------------------------------------------------------------------------------------- identities
@pytest.mark.parametrize("method,psf", ALL)
def test_in_focus_is_identity(method, psf):
    aif = _rand(2, 3, 9, 8)
    depth = torch.full((2, 1, 9, 8), 1.7)
    depth[1] = 2.5
    focus = torch.tensor([[1.7, 1.7], [2.5, 2.5]])
    out = render_stack(aif, depth, focus, NYU, psf=psf, method=method)
    atol = 1e-5 if method == "occlusion" else 1e-7  # occlusion goes through linear light and back
    torch.testing.assert_close(out, aif[:, None].expand_as(out), atol=atol, rtol=0)


@pytest.mark.parametrize("method,psf", [(m, p) for m in METHODS for p in PSFS])
def test_tends_smoothly_to_identity(method, psf):
    """As σ → 0 the change from the sharp image shrinks like σ² (no jump, no dead zone)."""
    aif = _rand(1, 3, 9, 10, dtype=F64)
    errs = []
    for size in (0.02, 0.01, 0.005):
        d = _depth_for_size(size, 1.0, psf)
        out = render_stack(aif, torch.full((1, 1, 9, 10), d, dtype=F64), torch.tensor([[1.0]], dtype=F64), NYU,
                           psf=psf, method=method)
        errs.append(float((out[:, 0] - aif).abs().max()))
    assert errs[0] > 1e-6
    assert errs[0] / errs[1] == pytest.approx(4.0, rel=0.05)
    assert errs[1] / errs[2] == pytest.approx(4.0, rel=0.05)


@pytest.mark.parametrize("method,psf", ALL)
def test_constant_image_stays_constant(method, psf):
    h, w = 13, 15
    aif = torch.empty(2, 3, h, w)
    aif[:, 0], aif[:, 1], aif[:, 2] = 0.37, 0.8, 0.05
    # a depth map with sharp edges and a wide range of blur sizes (σ up to ~8 px)
    depth = 0.6 + 4.0 * _rand(2, 1, h, w, seed=3)
    depth[:, :, 4:9, 3:10] = 0.7
    focus = torch.tensor([[1.0, 3.0, 6.0], [0.8, 1.5, 2.0]])
    out = render_stack(aif, depth, focus, NYU, psf=psf, method=method)
    torch.testing.assert_close(out, aif[:, None].expand_as(out), atol=2e-5, rtol=0)


# ------------------------------------------------------------------------------ exact vs explicit double sum
def _direct_double_sum(aif: torch.Tensor, depth: torch.Tensor, focus: torch.Tensor, camera: ThinLensCamera,
                       psf: str, radius: int) -> torch.Tensor:
    """The exact renderer's definition literally: out(p) = Σ_q k_q(p − q)·I(q) / Σ_q k_q(p − q), q over the image, plain Python loops.

    k_q is normalised over its full (2R+1)² window: for the Gaussian, g_q ⊗ g_q with g_q the discrete Gaussian of
    σ_q on −R..R (sums to 1); for the disk, disk weights of radius r_q divided by their sum over the window.
    """
    b_, c_, h, w = aif.shape
    n_ = focus.shape[1]
    out = torch.zeros(b_, n_, c_, h, w, dtype=F64)
    offs = range(-radius, radius + 1)
    for b in range(b_):
        for n in range(n_):
            fd = float(focus[b, n])
            k = _k_px_per_dioptre(camera, fd)
            kernels = {}
            for qy in range(h):
                for qx in range(w):
                    coc = k * abs(1.0 / fd - 1.0 / float(depth[b, 0, qy, qx]))  # CoC diameter in pixels
                    if psf == "gaussian":
                        g = discrete_gaussian_1d(torch.tensor(coc / 4.0, dtype=F64), radius).tolist()
                        kernels[qy, qx] = [[g[dy + radius] * g[dx + radius] for dx in offs] for dy in offs]
                    else:
                        grid = torch.arange(-radius, radius + 1, dtype=F64)
                        raw = disk_weights(torch.tensor(coc / 2.0, dtype=F64), grid[:, None], grid[None, :])
                        kernels[qy, qx] = (raw / raw.sum()).tolist()
            for py in range(h):
                for px in range(w):
                    num = [0.0] * c_
                    den = 0.0
                    for qy in range(h):
                        for qx in range(w):
                            dy, dx = py - qy, px - qx
                            if abs(dy) > radius or abs(dx) > radius:
                                continue
                            wgt = kernels[qy, qx][dy + radius][dx + radius]
                            den += wgt
                            for ch in range(c_):
                                num[ch] += wgt * float(aif[b, ch, qy, qx])
                    for ch in range(c_):
                        out[b, n, ch, py, px] = num[ch] / den
    return out


def _tiny_scene():
    h, w = 5, 6
    aif = _rand(2, 3, h, w, seed=7, dtype=F64)
    depth = 0.6 + 3.0 * _rand(2, 1, h, w, seed=8, dtype=F64)
    depth[0, 0, 2, 2] = 1.0  # exactly in focus for focus[0, 0]
    depth[1, 0, 1, :] = 2.5 * (1 + 1e-3)  # just behind the focal plane of focus[1, 1]: σ < 1 px
    focus = torch.tensor([[1.0, 4.0], [0.9, 2.5]], dtype=F64)
    return aif, depth, focus


@pytest.mark.parametrize("psf", PSFS)
def test_exact_equals_direct_double_sum(psf):
    aif, depth, focus = _tiny_scene()
    size = depth.new_tensor(
        [[_k_px_per_dioptre(NYU, float(f)) for f in row] for row in focus]
    )[:, :, None, None] * (1 / focus[:, :, None, None] - 1 / depth).abs() / (4.0 if psf == "gaussian" else 2.0)
    assert float(size.max()) > 3.0 and float(size.min()) < 0.2  # wide and narrow kernels in one image
    radius = kernel_radius(float(size.max()), psf)  # the oracle's window: ≥ 3.5σ of the widest kernel
    expected = _direct_double_sum(aif, depth, focus, NYU, psf, radius)
    out = render_exact(aif, depth, focus, NYU, psf)
    torch.testing.assert_close(out, expected, rtol=0, atol=1e-12)
    # the window choice does not matter: a much wider window changes the result by far less than an 8-bit level
    wide = _direct_double_sum(aif[:1, :1], depth[:1], focus[:1], NYU, psf, 30)
    assert (out[:1, :, :1] - wide).abs().max().item() < 2e-4


# ------------------------------------------------------------------------------------------ monotonic blur
def _impulse_variance(out: torch.Tensor) -> torch.Tensor:
    """Second moment E[ρ²] about the centre of each (H, W) response, (B, N, C) → (B,)."""
    img = out[:, 0, 0]
    h, w = img.shape[-2:]
    yy, xx = torch.meshgrid(torch.arange(h, dtype=F64) - h // 2, torch.arange(w, dtype=F64) - w // 2, indexing="ij")
    return (img * (yy**2 + xx**2)).sum((-1, -2)) / img.sum((-1, -2))


@pytest.mark.parametrize("method,psf", ALL)
def test_blur_grows_with_dioptre_offset(method, psf):
    fd = 2.0
    deltas = [0.0, 0.005, 0.02, 0.05, 0.1, 0.2, 0.3]  # |1/fd − 1/d|, dioptres; σ up to ≈ 2 px
    h = w = 41
    aif = torch.zeros(1, 1, h, w, dtype=F64)
    aif[0, 0, h // 2, w // 2] = 1.0
    kwargs = {"linear_light": False} if method == "occlusion" else {}
    variances = {}
    for side in (+1, -1):  # behind and in front of the focal plane
        d = torch.tensor([1.0 / (1.0 / fd - side * dl) for dl in deltas], dtype=F64)
        depth = d[:, None, None, None].expand(-1, 1, h, w).contiguous()
        out = render_stack(aif.expand(len(deltas), -1, -1, -1), depth, torch.full((len(deltas), 1), fd, dtype=F64),
                           NYU, psf=psf, method=method, **kwargs)
        variances[side] = _impulse_variance(out)
        assert (variances[side][1:] > variances[side][:-1]).all(), variances[side]
        assert variances[side][0].item() == pytest.approx(0.0, abs=1e-12)
    # the same dioptre offset blurs alike on either side of the focal plane
    torch.testing.assert_close(variances[+1], variances[-1], rtol=1e-6, atol=1e-9)
    if psf == "gaussian" and method == "exact":
        # the discrete Gaussian's 2-D second moment is exactly 2σ²
        sigma = torch.tensor(deltas, dtype=F64) * _k_px_per_dioptre(NYU, fd) / 4.0
        torch.testing.assert_close(variances[+1], 2 * sigma**2, rtol=1e-3, atol=1e-9)


def test_high_frequency_energy_decreases():
    rgb, _ = make_scene(11, 32, 40)
    aif = rgb[None]
    energies = []
    for dl in (0.0, 0.05, 0.15, 0.3, 0.5):
        depth = torch.full((1, 1, 32, 40), 1.0 / (1.0 - dl))
        out = render_layered(aif, depth, torch.tensor([[1.0]]), NYU)[:, 0]
        centre = out[..., 1:-1, 1:-1]
        lap = 4 * centre - out[..., :-2, 1:-1] - out[..., 2:, 1:-1] - out[..., 1:-1, :-2] - out[..., 1:-1, 2:]
        energies.append(float((lap**2).mean()))
    assert all(a > b for a, b in zip(energies, energies[1:])), energies


# ----------------------------------------------------------------------------------------------- gradients
def _grad_scene(psf: str):
    """A 4x5 scene where some pixels are within one pixel of blur of the focal plane (σ or r < 1 px)."""
    h, w = 4, 5
    aif = _rand(1, 2, h, w, seed=21, dtype=F64)
    fd = torch.tensor([[1.0, 1.25]], dtype=F64)
    # sizes avoid the layered renderer's level values (0.5, 0.75, 1, 1.125, 1.5, ...), where its weights have kinks
    sizes = torch.tensor(
        [
            [0.05, 0.1, 0.3, 0.6, 0.9],
            [1.3, 0.2, 0.45, 2.2, 0.15],
            [0.07, 0.8, 1.7, 0.35, 0.55],
            [2.7, 0.25, 0.12, 0.95, 0.4],
        ]
    )
    depth = torch.empty(1, 1, h, w, dtype=F64)
    for y in range(h):
        for x in range(w):
            # alternate in front of / behind the focal plane of the first focus distance
            depth[0, 0, y, x] = _depth_for_size(float(sizes[y, x]), 1.0, psf, behind=(x + y) % 2 == 0)
    return aif, depth, fd


@pytest.mark.parametrize("method,psf", [(m, p) for m in METHODS for p in PSFS])
def test_gradcheck_aif_and_depth(method, psf):
    aif, depth, fd = _grad_scene(psf)
    aif.requires_grad_(True)
    depth.requires_grad_(True)
    fn = lambda a, d: render_stack(a, d, fd, NYU, psf=psf, method=method)  # noqa: E731
    # exact+disk back-propagates offset by offset through autograd: the full Jacobian (one backward per output
    # element) takes seconds, so it is checked along random directions (gradcheck's fast mode) there
    fast = method == "exact" and psf == "disk"
    assert torch.autograd.gradcheck(fn, (aif, depth), eps=1e-7, atol=1e-6, rtol=1e-4, fast_mode=fast)


@pytest.mark.parametrize("method,psf", [(m, p) for m in METHODS for p in PSFS])
def test_depth_gradient_no_dead_zone(method, psf):
    """Where the blur is only σ ≈ 0.1 px (r ≈ 0.2 px for the disk), d loss / d depth is clearly non-zero."""
    h, w = 7, 8
    aif = _rand(1, 3, h, w, seed=4, dtype=F64)
    size = 0.1 if psf == "gaussian" else 0.2
    depth = torch.full((1, 1, h, w), _depth_for_size(size, 1.0, psf), dtype=F64, requires_grad=True)
    weights = _rand(1, 1, 3, h, w, seed=5, dtype=F64) - 0.5
    out = render_stack(aif, depth, torch.tensor([[1.0]], dtype=F64), NYU, psf=psf, method=method)
    (grad,) = torch.autograd.grad((out * weights).sum(), depth)
    assert (grad.abs() > 1e-4).all(), grad
    assert grad.abs().median().item() > 1e-2
    # and it is the true derivative: central differences on one pixel
    y, x, eps = 3, 4, 1e-6

    def loss(d: torch.Tensor) -> float:
        out = render_stack(aif, d, torch.tensor([[1.0]], dtype=F64), NYU, psf=psf, method=method)
        return float((out * weights).sum())

    with torch.no_grad():
        dp, dm = depth.clone(), depth.clone()
        dp[0, 0, y, x] += eps
        dm[0, 0, y, x] -= eps
        fd_grad = (loss(dp) - loss(dm)) / (2 * eps)
    assert grad[0, 0, y, x].item() == pytest.approx(fd_grad, rel=1e-4)


@pytest.mark.parametrize("psf", PSFS)
def test_occlusion_differentiable_in_image(psf):
    aif = _rand(1, 3, 9, 10, seed=2).requires_grad_(True)
    depth = 0.8 + 2 * _rand(1, 1, 9, 10, seed=3)
    out = render_occlusion(aif, depth, torch.tensor([[1.0, 2.0]]), NYU, psf)
    out.sum().backward()
    assert aif.grad is not None and torch.isfinite(aif.grad).all() and aif.grad.abs().sum() > 0


# ------------------------------------------------------------------------------------------ layered vs exact
def _rel_mae(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).abs().mean() / b.abs().mean())


@pytest.mark.parametrize("psf", PSFS)
def test_layered_matches_exact_procedural(psf):
    # focus 1..6 m and depths 1.33..2.5 m (0.4..0.75 dioptres): σ up to ≈ 4 px
    rgb, depth = make_scene(5, 48, 64, (1.33, 2.5))
    focus = torch.tensor([list(PRESETS["nyuv2"].focus_distances_m)])
    sigma = NYU.coc_px(depth[None, None].double(), focus.double()[:, :, None, None, None]) / 4
    assert 3.5 < float(sigma.max()) < 4.5
    exact = render_exact(rgb[None], depth[None], focus, NYU, psf)
    layered = render_layered(rgb[None], depth[None], focus, NYU, psf)
    assert _rel_mae(layered, exact) < 0.01
    # per image too
    for n in range(focus.shape[1]):
        assert _rel_mae(layered[:, n], exact[:, n]) < 0.01


def test_layered_finer_levels_closer_to_exact():
    rgb, depth = make_scene(6, 40, 48, (1.0, 4.0))
    focus = torch.tensor([[1.0, 4.0]])
    exact = render_exact(rgb[None], depth[None], focus, NYU)
    errs = [_rel_mae(render_layered(rgb[None], depth[None], focus, NYU, level_ratio=r), exact) for r in (2.0, 1.25)]
    assert errs[1] < errs[0]
    assert errs[1] < 0.005


def _load_nyu_small(shared_data, factor: int = 8):
    from PIL import Image

    folder = shared_data / "rgbd" / "nyuv2_labeled_0045_hollyjackson"
    rgb = np.asarray(Image.open(folder / "rgb_0045.png").convert("RGB"), dtype=np.float64) / 255.0
    depth = np.asarray(Image.open(folder / "depth_0045_0.1mm.png"), dtype=np.float64) * 1e-4  # uint16 0.1 mm → m
    h, w = rgb.shape[0] // factor, rgb.shape[1] // factor
    rgb = rgb[: h * factor, : w * factor].reshape(h, factor, w, factor, 3).mean(axis=(1, 3))  # area
    depth = depth[::factor, ::factor][:h, :w]  # nearest
    return torch.from_numpy(rgb.transpose(2, 0, 1).copy())[None], torch.from_numpy(depth.copy())[None, None]


@pytest.mark.parametrize("psf", PSFS)
def test_layered_matches_exact_nyu_frame(shared_data, psf):
    aif, depth = _load_nyu_small(shared_data, 8)  # 640x480 → 80x60
    assert aif.shape == (1, 3, 60, 80) and float(depth.min()) > 0.5
    # the preset's 12 µm pitch belongs to its 320x240 images; 80x60 is a quarter of that
    camera = NYU.resized(0.25)
    focus = torch.tensor([list(PRESETS["nyuv2"].focus_distances_m)], dtype=F64)
    exact = render_exact(aif, depth, focus, camera, psf)
    layered = render_layered(aif, depth, focus, camera, psf)
    assert float(camera.coc_px(depth, focus[:, :, None, None, None]).max()) > 6.0  # real blur, not a no-op
    assert _rel_mae(layered, exact) < 0.01


# ------------------------------------------------------------------------------------------------- occlusion
def _square_scene(h=40, w=40, near=2.0, far=3.0):
    """A red near square (rows/cols 14..25) in front of a far green/blue checkerboard plane."""
    yy, xx = torch.meshgrid(torch.arange(h), torch.arange(w), indexing="ij")
    checker = ((yy // 2 + xx // 2) % 2).to(F64)
    aif = torch.zeros(1, 3, h, w, dtype=F64)
    aif[0, 1] = 0.2 + 0.6 * checker
    aif[0, 2] = 0.8 - 0.6 * checker
    inside = (yy >= 14) & (yy < 26) & (xx >= 14) & (xx < 26)
    aif[0, :, inside] = torch.tensor([1.0, 0.0, 0.0], dtype=F64)[:, None]
    depth = torch.where(inside, torch.tensor(near, dtype=F64), torch.tensor(far, dtype=F64))[None, None]
    ring_out = ((yy == 13) | (yy == 26)) & (xx >= 16) & (xx < 24) | ((xx == 13) | (xx == 26)) & (yy >= 16) & (yy < 24)
    ring_in = ((yy == 14) | (yy == 25)) & (xx >= 16) & (xx < 24) | ((xx == 14) | (xx == 25)) & (yy >= 16) & (yy < 24)
    far_bg = ((yy - 19.5).abs() > 13) | ((xx - 19.5).abs() > 13)
    return aif, depth, ring_out, ring_in, far_bg


@pytest.mark.parametrize("method,psf", ALL)
def test_blurred_foreground_spreads_over_sharp_background(method, psf):
    aif, depth, ring_out, _, far_bg = _square_scene()
    out = render_stack(aif, depth, torch.tensor([[3.0]], dtype=F64), NYU, psf=psf, method=method)[0, 0]
    # the square (CoC ≈ 4.4 px) spills red onto the in-focus background just outside its edge...
    assert out[0, ring_out].min().item() > 0.1
    # ...while the background away from the square stays sharp
    torch.testing.assert_close(out[:, far_bg], aif[0][:, far_bg], atol=1e-5, rtol=0)


@pytest.mark.parametrize("psf", PSFS)
def test_occlusion_sharp_foreground_not_covered_by_background_blur(psf):
    aif, depth, ring_out, ring_in, far_bg = _square_scene()
    focus = torch.tensor([[2.0]], dtype=F64)  # on the near square; background CoC ≈ 4.5 px
    out = render_occlusion(aif, depth, focus, NYU, psf)[0, 0]
    # the square's edge stays sharp: its own pixels keep their colour...
    torch.testing.assert_close(out[:, ring_in], aif[0][:, ring_in], atol=1e-4, rtol=0)
    # ...and it does not spread onto the background
    assert out[0, ring_out].max().item() < 1e-4
    # the background itself is blurred (checker contrast drops)
    assert (out[1:, far_bg] - aif[0][1:, far_bg]).abs().mean().item() > 0.05
    # contrast: without occlusion (exact), the blurred background bleeds into the square's edge
    ex = render_exact(aif, depth, focus, NYU, psf)[0, 0]
    assert ex[1:, ring_in].max().item() > 0.05


# ---------------------------------------------------------------------------------------------------- errors
@pytest.mark.parametrize("method", RENDER_METHODS)
def test_input_errors(method):
    aif = torch.rand(1, 3, 6, 7)
    depth = torch.full((1, 1, 6, 7), 1.5)
    focus = torch.tensor([[1.0, 2.0]])
    bad = [
        (aif[0], depth, focus, "aif"),
        (aif[None], depth, focus, "aif"),
        (aif, depth[0], focus, "depth"),
        (aif, torch.full((1, 1, 6, 8), 1.5), focus, "depth"),
        (aif, torch.full((1, 3, 6, 7), 1.5), focus, "depth"),
        (aif, torch.full((2, 1, 6, 7), 1.5), focus, "depth"),
        (aif, depth, torch.tensor([[1.0], [2.0]]), "focus"),
        (aif, depth, torch.ones(1, 2, 1), "focus"),
        (aif, depth, torch.ones(1, 0), "focus"),
        (aif, depth, torch.tensor([[1.0, math.nan]]), "focus"),
        (aif, depth, torch.tensor([[1.0, -2.0]]), "focus"),
        (aif, torch.zeros(1, 1, 6, 7), focus, "depth"),
        (aif, torch.full((1, 1, 6, 7), math.inf), focus, "depth"),
    ]
    for a, d, f, what in bad:
        with pytest.raises(DefocusError, match=what):
            render_stack(a, d, f, NYU, method=method)
    with pytest.raises(InputError, match="unknown PSF"):
        render_stack(aif, depth, focus, NYU, psf="box", method=method)
    for d, f in ((torch.zeros(1, 1, 6, 7), focus), (depth, torch.tensor([[1.0, -2.0]]))):  # bad values, not shapes
        with pytest.raises(InputError):
            render_stack(aif, d, f, NYU, method=method)


def test_unknown_method():
    from defocus.optics.forward import ForwardModel

    with pytest.raises(InputError, match="unknown render method 'fast'") as exc:
        ForwardModel(NYU, method="fast")
    for m in RENDER_METHODS:
        assert m in str(exc.value)


def test_default_levels():
    lv = default_levels(7.3, "gaussian")
    assert lv[0] == 0.0 and lv[1] == 0.5 and lv[-1] >= 7.3 and lv[-2] < 7.3
    assert all(b / a == pytest.approx(1.5) for a, b in zip(lv[1:], lv[2:]))
    assert default_levels(0.0, "disk") == [0.0, 1.0]
    assert len(default_levels(8.0, "gaussian", 1.25)) > len(default_levels(8.0, "gaussian", 2.0))


# -------------------------------------------------------------------------------------- generalised Gaussian
def test_gennorm_is_not_rendered_exactly():
    aif, depth = _rand(1, 3, 8, 8), torch.full((1, 1, 8, 8), 2.0)
    with pytest.raises(InputError, match="gennorm with 'layered' or 'occlusion'"):
        render_exact(aif, depth, torch.tensor([[1.0]]), NYU, "gennorm")


def test_gennorm_layered_blur_sits_between_gaussian_and_disk():
    # Same second moment, different shape: a flat-topped PSF keeps less of a point's energy at its centre than the
    # Gaussian and more than the disk at the same blur.
    aif = torch.zeros(1, 1, 41, 41, dtype=F64)
    aif[..., 20, 20] = 1.0
    depth = torch.full((1, 1, 41, 41), 2.0, dtype=F64)
    fd = torch.tensor([[1.0]], dtype=F64)
    centre = {p: float(render_layered(aif, depth, fd, NYU, p, level_ratio=1.05)[0, 0, 0, 20, 20]) for p in
              ("gaussian", "gennorm", "disk")}
    assert centre["gaussian"] > centre["gennorm"] > centre["disk"]
