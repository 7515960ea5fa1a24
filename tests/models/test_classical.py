"""Tests of the classical depth-from-focus baseline (defocus.models.classical): the function, its module form
(ClassicalEstimator) and the differentiable building blocks (focus measure, pre-filter)."""

from __future__ import annotations

import math
import time

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from defocus.color import to_grey
from defocus.errors import DefocusError
from defocus.models.classical import (
    ClassicalEstimator,
    classical_depth_from_focus,
    gaussian_presmooth,
    sum_modified_laplacian,
)
from defocus.models.prediction import Prediction

FOCUS = [0.5, 0.7, 1.0, 1.5, 2.5]  # metres
PX_PER_DIOPTRE = 3.0  # blur σ in pixels = 3 · |1/fd − 1/d|


def gaussian_blur(img: torch.Tensor, sigma: float) -> torch.Tensor:
    """Blur (C, H, W) with a separable Gaussian of std ``sigma`` px (reflect padding); σ = 0 is the identity."""
    if sigma < 1e-6:
        return img.clone()
    r = max(1, math.ceil(3 * sigma))
    x = torch.arange(-r, r + 1, dtype=torch.float64)
    k = torch.exp(-(x**2) / (2 * sigma**2))
    k = (k / k.sum()).to(img.dtype)
    c = img.shape[0]
    out = F.pad(img[None], (r, r, r, r), mode="reflect")
    out = F.conv2d(out, k.view(1, 1, 1, -1).expand(c, 1, 1, -1), groups=c)
    out = F.conv2d(out, k.view(1, 1, -1, 1).expand(c, 1, -1, 1), groups=c)
    return out[0]


def texture(h: int = 64, w: int = 64, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.rand(3, h, w, generator=g)


def plane_stack(depth_m: float, focus=FOCUS, tex: torch.Tensor | None = None) -> torch.Tensor:
    """Synthetic focal stack (N, 3, H, W) of a fronto-parallel textured plane at ``depth_m``."""
    t = texture() if tex is None else tex
    return torch.stack([gaussian_blur(t, PX_PER_DIOPTRE * abs(1 / fd - 1 / depth_m)) for fd in focus])


def test_plane_between_frames_beats_nearest_frame():
    d = 1.2
    depth, aif, conf = classical_depth_from_focus(plane_stack(d), torch.tensor(FOCUS))
    assert depth.shape == (1, 64, 64) and aif.shape == (3, 64, 64) and conf.shape == (1, 64, 64)
    est = depth.median().item()
    assert abs(est - d) / d < 0.05
    nearest = min(FOCUS, key=lambda fd: abs(fd - d))  # 1.0 m, 17 % off
    assert abs(est - d) < abs(nearest - d)


@pytest.mark.parametrize("d", [1.1, 1.3, 0.6])
def test_plane_asymmetric_positions_beat_nearest_frame(d):
    est = classical_depth_from_focus(plane_stack(d), FOCUS)[0].median().item()
    nearest = min(FOCUS, key=lambda fd: abs(1 / fd - 1 / d))
    assert abs(est - d) < abs(nearest - d)
    assert abs(est - d) / d < 0.08


def test_plane_at_a_focus_distance():
    depth, aif, conf = classical_depth_from_focus(plane_stack(1.0), FOCUS)
    assert depth.median().item() == pytest.approx(1.0, rel=0.03)
    assert conf.median().item() > 0.3
    assert depth.min().item() >= 0.5 - 1e-6 and depth.max().item() <= 2.5 + 1e-6


def test_order_invariance():
    stack = plane_stack(1.2)
    d_ref, aif_ref, c_ref = classical_depth_from_focus(stack, FOCUS)
    perm = torch.tensor([3, 0, 4, 2, 1])
    d_p, aif_p, c_p = classical_depth_from_focus(stack[perm], torch.tensor(FOCUS)[perm])
    torch.testing.assert_close(d_p, d_ref)
    torch.testing.assert_close(aif_p, aif_ref)
    torch.testing.assert_close(c_p, c_ref)


def test_exact_gaussian_peak_with_nonuniform_dioptres():
    # Contrast-scaled copies of one texture: SML is homogeneous in contrast, so F_i = a_i · F_tex and
    # ln F is exactly a parabola in dioptres; the 3-point fit must return its vertex for uneven spacing.
    t = texture(32, 32)
    focus = [0.4, 0.6, 0.75, 1.3, 3.0]  # dioptres 2.5, 1.67, 1.33, 0.77, 0.33: uneven
    x_hat, s = 1.2, 0.5  # true peak (dioptres) and Gaussian width
    a = [math.exp(-((1 / fd - x_hat) ** 2) / (2 * s * s)) for fd in focus]
    stack = torch.stack([(0.5 + ai * (t - 0.5)).double() for ai in a])
    depth, _, _ = classical_depth_from_focus(stack, focus)
    torch.testing.assert_close(depth, torch.full_like(depth, 1 / x_hat), rtol=1e-6, atol=0)


def test_ends_of_stack_and_depth_range_clamp():
    # A plane beyond the farthest frame: the far frame wins, no extrapolation past the stack.
    depth = classical_depth_from_focus(plane_stack(4.0), FOCUS)[0]
    torch.testing.assert_close(depth, torch.full_like(depth, 2.5))
    # depth_range_m clamps the output too
    depth = classical_depth_from_focus(plane_stack(4.0), FOCUS, depth_range_m=(0.1, 2.0))[0]
    torch.testing.assert_close(depth, torch.full_like(depth, 2.0))


def test_single_image():
    img = texture(16, 20)
    depth, aif, conf = classical_depth_from_focus(img[None], [1.7])
    torch.testing.assert_close(depth, torch.full((1, 16, 20), 1.7))
    torch.testing.assert_close(aif, img)
    assert torch.all(conf == 0)


def test_two_images_pick_sharpest_frame():
    t = texture(24, 24)
    stack = torch.stack([gaussian_blur(t, 2.0), t])
    depth, aif, _ = classical_depth_from_focus(stack, [3.0, 0.8])
    torch.testing.assert_close(depth, torch.full_like(depth, 0.8))
    torch.testing.assert_close(aif, t)


def test_aif_takes_the_sharp_frame():
    t = texture()
    stack = plane_stack(1.5, tex=t)  # the 1.5 m frame (index 3) is exactly sharp
    _, aif, _ = classical_depth_from_focus(stack, FOCUS)
    torch.testing.assert_close(aif, t)


def test_two_planes_and_confidence():
    # left half at 0.7 m, right half at 2.5 m; a flat grey strip has no focus cue -> low confidence
    t = texture(48, 96)
    near, far = plane_stack(0.7, tex=t), plane_stack(2.5, tex=t)
    stack = torch.cat([near[..., :48], far[..., 48:]], dim=-1)
    stack[:, :, :8, :] = 0.5
    # No pre-filter here: its 2-pixel reach would carry texture into the 8-row flat strip this test relies on.
    depth, _, conf = classical_depth_from_focus(stack, FOCUS, presmooth_sigma=0.0)
    assert depth[0, 20:, 10:38].median().item() == pytest.approx(0.7, rel=0.03)
    assert depth[0, 20:, 58:86].median().item() == pytest.approx(2.5, rel=0.03)
    assert conf[0, :2].max().item() < 1e-3
    assert conf[0, 20:].median().item() > 0.3
    assert conf.min().item() >= 0 and conf.max().item() <= 1


def test_batched_matches_unbatched():
    s1, s2 = plane_stack(1.2), plane_stack(0.8, tex=texture(seed=1))
    f2 = [2.5, 1.5, 1.0, 0.7, 0.5]
    d, aif, conf = classical_depth_from_focus(torch.stack([s1, s2.flip(0)]), torch.tensor([FOCUS, f2]))
    assert d.shape == (2, 1, 64, 64) and aif.shape == (2, 3, 64, 64) and conf.shape == (2, 1, 64, 64)
    for b, (s, f) in enumerate([(s1, FOCUS), (s2.flip(0), f2)]):
        db, ab, cb = classical_depth_from_focus(s, f)
        torch.testing.assert_close(d[b], db)
        torch.testing.assert_close(aif[b], ab)
        torch.testing.assert_close(conf[b], cb)
    # a (N,) focus vector is shared by the batch
    d_shared = classical_depth_from_focus(torch.stack([s1, s1]), FOCUS)[0]
    torch.testing.assert_close(d_shared[1], d_shared[0])


def test_sml_of_constant_image_is_zero_and_positive_on_texture():
    assert sum_modified_laplacian(torch.full((2, 10, 10), 0.3)).abs().max().item() < 1e-6
    assert sum_modified_laplacian(texture()[0]).min().item() > 0


def test_speed_vga_stack():
    stack = torch.rand(5, 3, 240, 320)
    classical_depth_from_focus(stack, FOCUS)  # warm-up
    t0 = time.perf_counter()
    classical_depth_from_focus(stack, FOCUS)
    assert time.perf_counter() - t0 < 1.0


@pytest.mark.parametrize(
    "images, focus",
    [
        (torch.rand(3, 8, 8), [1.0, 2.0, 3.0]),  # 3-D
        (torch.rand(3, 4, 8, 8), [1.0, 2.0, 3.0]),  # 4 channels
        (torch.rand(3, 3, 8, 8), [1.0, 2.0]),  # count mismatch
        (torch.rand(3, 3, 8, 8), [1.0, 0.0, 3.0]),  # non-positive focus
        (torch.rand(3, 3, 8, 8), [1.0, float("nan"), 3.0]),  # non-finite focus
        (torch.rand(2, 3, 3, 8, 8), torch.ones(3, 3)),  # batched focus of the wrong batch size
        (torch.randint(0, 255, (3, 3, 8, 8), dtype=torch.uint8), [1.0, 2.0, 3.0]),  # not float
        (torch.full((3, 3, 8, 8), float("nan")), [1.0, 2.0, 3.0]),
        (torch.rand(0, 3, 8, 8), []),  # empty stack
    ],
)
def test_bad_input(images, focus):
    with pytest.raises(DefocusError):
        classical_depth_from_focus(images, focus)


def test_bad_window_and_range():
    with pytest.raises(DefocusError):
        classical_depth_from_focus(torch.rand(2, 3, 8, 8), [1.0, 2.0], window=4)
    with pytest.raises(DefocusError):
        classical_depth_from_focus(torch.rand(2, 3, 8, 8), [1.0, 2.0], depth_range_m=(2.0, 1.0))


def test_presmoothing_makes_the_baseline_robust_to_noise():
    # A plane at 1.2 m with a smooth, low-contrast texture (natural images have little energy at the pixel
    # frequency) and the sensor noise of the realistic protocol (σ = 0.005): the Gaussian pre-filter must give a
    # much smaller depth error than the raw modified Laplacian, which the noise dominates.
    gen = torch.Generator().manual_seed(3)
    smooth = gaussian_blur(texture(48, 48), 1.5)
    stack = plane_stack(1.2, tex=0.5 + 0.02 * (smooth - smooth.mean()) / smooth.std())
    noisy = (stack + 0.005 * torch.randn(stack.shape, generator=gen)).clamp(0, 1)
    err = {}
    for sigma in (0.0, 1.0):
        depth, _, _ = classical_depth_from_focus(noisy, FOCUS, presmooth_sigma=sigma)
        err[sigma] = (depth[0, 8:-8, 8:-8] - 1.2).abs().mean().item()
    assert err[1.0] < 0.5 * err[0.0]


# ------------------------------------------------------------------------------------ building blocks: values
def _np_sml(grey: np.ndarray, window: int) -> np.ndarray:
    """Sum-modified Laplacian of one (H, W) image by explicit loops (replicate padding at both steps)."""
    h, w = grey.shape
    p = np.pad(grey, 1, mode="edge")
    ml = np.zeros((h, w))
    for y in range(h):
        for x in range(w):
            c = 2 * p[y + 1, x + 1]
            ml[y, x] = abs(c - p[y + 1, x] - p[y + 1, x + 2]) + abs(c - p[y, x + 1] - p[y + 2, x + 1])
    r = window // 2
    q = np.pad(ml, r, mode="edge")
    return np.array([[q[y : y + window, x : x + window].sum() for x in range(w)] for y in range(h)])


def _np_presmooth(grey: np.ndarray, sigma: float) -> np.ndarray:
    """Gaussian blur of one (H, W) image with a full 2-D kernel of radius ceil(2σ), replicate padding."""
    r = max(1, math.ceil(2 * sigma))
    t = np.arange(-r, r + 1)
    k2 = np.exp(-(t[:, None] ** 2 + t[None, :] ** 2) / (2 * sigma**2))
    k2 /= k2.sum()
    p = np.pad(grey, r, mode="edge")
    h, w = grey.shape
    return np.array([[(p[y : y + 2 * r + 1, x : x + 2 * r + 1] * k2).sum() for x in range(w)] for y in range(h)])


@pytest.mark.parametrize("window", [1, 3, 5])
def test_sml_matches_loop_reference(window):
    g = torch.rand(2, 6, 7, generator=torch.Generator().manual_seed(30), dtype=torch.float64)
    out = sum_modified_laplacian(g, window)
    assert out.shape == g.shape and out.dtype == torch.float64
    for i in range(2):
        np.testing.assert_allclose(out[i].numpy(), _np_sml(g[i].numpy(), window), rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("sigma", [0.5, 1.0, 1.7])
def test_presmooth_matches_reference(sigma):
    g = torch.rand(3, 9, 8, generator=torch.Generator().manual_seed(31), dtype=torch.float64)
    out = gaussian_presmooth(g, sigma)
    assert out.shape == g.shape and out.dtype == torch.float64
    for i in range(3):
        np.testing.assert_allclose(out[i].numpy(), _np_presmooth(g[i].numpy(), sigma), rtol=1e-10, atol=1e-12)
    # constants stay constant; σ <= 0 is the identity
    torch.testing.assert_close(gaussian_presmooth(torch.full((5, 6), 0.4), sigma), torch.full((5, 6), 0.4))
    assert gaussian_presmooth(g, 0.0) is g


def test_sml_rejects_bad_windows():
    for window in (0, 2, 4, -3, 3.0):
        with pytest.raises(DefocusError):
            sum_modified_laplacian(torch.rand(8, 8), window)


# --------------------------------------------------------------------------------- building blocks: gradcheck
# The estimator itself is not differentiable (argmax over the stack, a gather, no_grad); its focus measure and
# pre-filter are, almost everywhere (|·| has a kink at 0, which random inputs do not hit).
@pytest.mark.parametrize("window", [1, 3])
def test_sml_gradcheck(window):
    g = torch.rand(2, 5, 6, generator=torch.Generator().manual_seed(32), dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda x: sum_modified_laplacian(x, window), (g,))


def test_presmooth_gradcheck():
    g = torch.rand(2, 6, 5, generator=torch.Generator().manual_seed(33), dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda x: gaussian_presmooth(x, 0.8), (g,))
    # and through the whole focus measure as the estimator composes it
    rgb = torch.rand(2, 3, 6, 5, generator=torch.Generator().manual_seed(34), dtype=torch.float64,
                     requires_grad=True)
    assert torch.autograd.gradcheck(lambda x: sum_modified_laplacian(gaussian_presmooth(to_grey(x), 1.0), 3),
                                    (rgb,))


# ---------------------------------------------------------------------------------------- ClassicalEstimator
def _batch():
    s1, s2 = plane_stack(1.2, tex=texture(24, 24)), plane_stack(0.8, tex=texture(24, 24, seed=1))
    f2 = [2.5, 1.5, 1.0, 0.7, 0.5]
    return torch.stack([s1, s2.flip(0)]), torch.tensor([FOCUS, f2])


def test_estimator_equals_function():
    stack, focus = _batch()
    est = ClassicalEstimator(window=7, presmooth_sigma=0.5)
    assert isinstance(est, nn.Module) and list(est.parameters()) == []
    assert "window=7" in repr(est) and "presmooth_sigma=0.5" in repr(est)
    pred = est(stack, focus)
    assert isinstance(pred, Prediction)
    assert pred.depth.shape == (2, 1, 24, 24) and pred.aif.shape == (2, 3, 24, 24)
    assert pred.confidence.shape == (2, 1, 24, 24) and pred.inv_depth.shape == (2, 1, 24, 24)
    assert pred.attention is None
    depth, aif, conf = classical_depth_from_focus(stack, focus, window=7, presmooth_sigma=0.5)
    assert torch.equal(pred.depth, depth) and torch.equal(pred.aif, aif) and torch.equal(pred.confidence, conf)
    torch.testing.assert_close(pred.inv_depth, 1.0 / depth)
    # the options matter: other settings give another answer (so the module really passes them on)
    assert not torch.equal(ClassicalEstimator()(stack, focus).confidence, conf)
    # a fixed σ = 1 equals the function's defaults; the default "auto" picks σ per stack from its noise
    assert torch.equal(ClassicalEstimator(presmooth_sigma=1.0)(stack, focus).depth,
                       classical_depth_from_focus(stack, focus)[0])
    auto = ClassicalEstimator()
    depth_auto = auto(stack, focus).depth
    assert len(auto.last_presmooth_sigmas) == 2
    for i, sigma in enumerate(auto.last_presmooth_sigmas):
        assert torch.equal(depth_auto[i : i + 1],
                           classical_depth_from_focus(stack[i : i + 1], focus[i : i + 1], presmooth_sigma=sigma)[0])


def test_estimator_ignores_k_and_applies_depth_range():
    stack, focus = _batch()
    est = ClassicalEstimator(presmooth_sigma=1.0)  # the function's default pre-filter
    ref = est(stack, focus)
    k = torch.full((2, 5), 20.0)
    assert torch.equal(est(stack, focus, k).depth, ref.depth)
    want = classical_depth_from_focus(stack, focus, depth_range_m=(0.9, 1.1))[0]
    assert float(want.max()) <= 1.1 + 1e-6 and float(want.min()) >= 0.9 - 1e-6
    assert not torch.equal(want, ref.depth)
    assert torch.equal(est(stack, focus, depth_range=(0.9, 1.1)).depth, want)
    # (B, 2) ranges: each stack gets its own
    rows = torch.tensor([[0.9, 1.1], [0.5, 3.0]], dtype=torch.float64)
    per = est(stack, focus, depth_range=rows).depth
    assert torch.equal(per[:1], want[:1])
    assert torch.equal(per[1:], classical_depth_from_focus(stack, focus, depth_range_m=(0.5, 3.0))[0][1:])
    with pytest.raises(DefocusError, match="depth_range"):
        est(stack, focus, depth_range=(1.0, 1.5, 2.0))


@pytest.mark.parametrize(
    "stack, focus",
    [
        (torch.rand(5, 3, 8, 8), torch.tensor(FOCUS)),  # unbatched stack: the module wants (B, N, 3, H, W)
        (torch.rand(1, 5, 1, 8, 8), torch.tensor([FOCUS])),  # one channel
        (torch.rand(1, 5, 3, 8, 8), torch.tensor(FOCUS)),  # (N,) focus
        (torch.rand(1, 5, 3, 8, 8), torch.tensor([FOCUS[:4]])),  # focus for 4 of 5 images
        (torch.rand(2, 5, 3, 8, 8), torch.tensor([FOCUS])),  # focus for a batch of 1
    ],
)
def test_estimator_rejects_bad_shapes(stack, focus):
    with pytest.raises(DefocusError):
        ClassicalEstimator()(stack, focus)


def test_estimator_rejects_bad_values():
    stack = torch.rand(1, 3, 3, 8, 8)
    with pytest.raises(DefocusError):
        ClassicalEstimator()(stack, torch.tensor([[1.0, 0.0, 2.0]]))
    with pytest.raises(DefocusError):
        ClassicalEstimator()(stack, torch.tensor([[1.0, 1.5, 2.0]]), depth_range=(2.0, 1.0))
    with pytest.raises(DefocusError):
        ClassicalEstimator(window=4)(stack, torch.tensor([[1.0, 1.5, 2.0]]))


# ------------------------------------------------------------------------------------ adaptive pre-filter
def test_noise_estimate_recovers_added_gaussian_noise():
    from defocus.models.classical import estimate_noise_sigma

    g = torch.Generator().manual_seed(0)
    # Smooth images (a ramp): the mask is blind to them, so the estimate is the noise alone.
    yy, xx = torch.meshgrid(torch.linspace(0, 1, 64), torch.linspace(0, 1, 80), indexing="ij")
    clean = (0.2 + 0.5 * (0.6 * xx + 0.4 * yy)).expand(2, 3, 3, 64, 80).clone()
    assert float(estimate_noise_sigma(clean).max()) < 1e-6
    for sigma in (0.005, 0.02):
        noisy = clean + sigma * torch.randn(clean.shape, generator=g)
        est = estimate_noise_sigma(noisy)
        assert est.shape == (2,)
        # Grey = luma of three independent channels: σ_grey = σ·sqrt(0.299² + 0.587² + 0.114²).
        want = sigma * math.sqrt(0.299**2 + 0.587**2 + 0.114**2)
        assert torch.allclose(est, torch.full((2,), want, dtype=torch.float64), rtol=0.1)
    assert estimate_noise_sigma(noisy[0]).dim() == 0
    with pytest.raises(DefocusError, match="too small"):
        estimate_noise_sigma(torch.rand(1, 3, 2, 8))


def test_adaptive_prefilter_separates_the_two_protocols():
    from defocus.demo import make_test_stack
    from defocus.models.classical import choose_presmooth_sigma, estimate_noise_sigma

    for protocol, want in (("paper", 0.0), ("realistic", 1.0)):
        for preset in ("nyuv2", "defocusnet"):
            st = make_test_stack(preset, protocol, 0)
            assert choose_presmooth_sigma(float(estimate_noise_sigma(st.images))) == want, (preset, protocol)
    est = ClassicalEstimator()  # "auto" by default
    st = make_test_stack("nyuv2", "realistic", 0)
    pred = est(st.images[None], st.focus_distances_m[None])
    assert est.last_presmooth_sigmas == [1.0]
    torch.testing.assert_close(pred.depth, classical_depth_from_focus(st.images[None], st.focus_distances_m[None],
                                                                      presmooth_sigma=1.0)[0])
    with pytest.raises(DefocusError, match="presmooth_sigma"):
        ClassicalEstimator(presmooth_sigma="sometimes")


def test_estimator_cue_fill_replaces_only_cueless_pixels():
    # A flat grey window in a textured procedural scene: the plain estimate there is a guess; with the fill the
    # cue-less pixels take values from the cued ones (within their range, smoother), cued pixels are unchanged.
    from defocus.data.procedural import SCENE_DEPTH_RANGE_M, make_scene
    from defocus.data.synthesis import synthesize_stack
    from defocus.optics.camera import get_preset

    nyu = get_preset("nyuv2")
    rgb, depth = make_scene(12, 64, 64, SCENE_DEPTH_RANGE_M["nyuv2"])
    rgb[:, 10:54, 10:54] = 0.5
    fd = torch.tensor([nyu.focus_distances_m])
    stack = synthesize_stack(rgb, depth, fd[0], nyu.camera, "paper")[None]
    plain = ClassicalEstimator()(stack, fd, depth_range=nyu.depth_range_m)
    filled = ClassicalEstimator(cue_fill_threshold=0.5)(stack, fd, depth_range=nyu.depth_range_m)
    torch.testing.assert_close(filled.confidence, plain.confidence)
    torch.testing.assert_close(filled.aif, plain.aif)
    cue = (plain.confidence / (1.0 - 1.0 / 5)).clamp(0, 1)[0, 0]
    keep = cue >= 0.5
    torch.testing.assert_close(filled.depth[0, 0][keep], plain.depth[0, 0][keep], rtol=1e-5, atol=1e-5)
    window = torch.zeros_like(keep)
    window[14:50, 14:50] = True
    low = window & ~keep
    assert float(low.float().sum()) > 0.5 * float(window.float().sum())  # most of the flat window has no cue
    assert not torch.allclose(filled.depth[0, 0][low], plain.depth[0, 0][low])
    ring = plain.depth[0, 0][keep]
    assert float(filled.depth[0, 0][low].min()) >= float(ring.min()) - 1e-4
    assert float(filled.depth[0, 0][low].max()) <= float(ring.max()) + 1e-4
    assert float((1 / filled.depth[0, 0][window]).std()) < float((1 / plain.depth[0, 0][window]).std())
    near, far = nyu.depth_range_m
    assert float(filled.depth.min()) >= near - 1e-6 and float(filled.depth.max()) <= far + 1e-6
    # one image has no cue at all: the estimate is unchanged
    one = ClassicalEstimator(cue_fill_threshold=0.5)(stack[:, :1], fd[:, :1], depth_range=nyu.depth_range_m)
    torch.testing.assert_close(one.depth, ClassicalEstimator()(stack[:, :1], fd[:, :1],
                                                               depth_range=nyu.depth_range_m).depth)
    with pytest.raises(DefocusError, match="cue_fill_threshold"):
        ClassicalEstimator(cue_fill_threshold=1.5)
