"""Tests of defocus.metrics: depth metrics against hand arithmetic, masks, PSNR/SSIM."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torch import nn

from defocus.errors import DefocusError
from defocus.metrics import SSIM, depth_metrics, mean_metrics, psnr, ssim, ssim_map


def test_depth_metrics_by_hand():
    pred = torch.tensor([[1.0, 2.0]])
    gt = torch.tensor([[2.0, 2.0]])
    m = depth_metrics(pred, gt)
    # |d-g|/g = [1/2, 0]          -> AbsRel = 0.25
    assert m["abs_rel"] == pytest.approx(0.25)
    # (d-g)^2/g = [1/2, 0]        -> SqRel = 0.25
    assert m["sq_rel"] == pytest.approx(0.25)
    # (d-g)^2 = [1, 0]            -> RMSE = sqrt(0.5)
    assert m["rmse"] == pytest.approx(math.sqrt(0.5))
    # (ln1 - ln2)^2 = ln(2)^2, 0  -> RMSElog = ln(2) / sqrt(2)
    assert m["rmse_log"] == pytest.approx(math.log(2.0) / math.sqrt(2.0))
    # max ratios = [2, 1]: 2 < 1.25 no, 2 < 1.5625 no, 2 < 1.953125 no -> δ1 = δ2 = δ3 = 0.5
    assert m["delta1"] == pytest.approx(0.5)
    assert m["delta2"] == pytest.approx(0.5)
    assert m["delta3"] == pytest.approx(0.5)
    assert m["n_valid"] == 2


def test_depth_metrics_deltas_thresholds():
    # ratios 1.2 (< 1.25), 1.5 (< 1.5625), 1.9 (< 1.953125), 2.5 (none), and g/d direction 1/1.2
    gt = torch.ones(1, 1, 5, dtype=torch.float64)
    pred = torch.tensor([[[1.2, 1.5, 1.9, 2.5, 1 / 1.2]]], dtype=torch.float64)
    m = depth_metrics(pred, gt)
    assert m["delta1"] == pytest.approx(2 / 5)
    assert m["delta2"] == pytest.approx(3 / 5)
    assert m["delta3"] == pytest.approx(4 / 5)
    # AbsRel = mean(|d-1|) = (0.2 + 0.5 + 0.9 + 1.5 + 1/6) / 5
    assert m["abs_rel"] == pytest.approx((0.2 + 0.5 + 0.9 + 1.5 + 1 / 6) / 5)


def test_depth_metrics_masks_exclude_pixels():
    # only the first pixel is valid: gt 0, NaN, inf, out of range (5 > 4, 0.05 < 0.1), masked off
    gt = torch.tensor([[2.0, 0.0, float("nan"), float("inf"), 5.0, 0.05, 3.0]])
    pred = torch.tensor([[1.0, 9.0, 9.0, 9.0, 9.0, 9.0, 9.0]])
    extra = torch.tensor([[True, True, True, True, True, True, False]])
    m = depth_metrics(pred, gt, valid=extra, depth_range_m=(0.1, 4.0))
    assert m["n_valid"] == 1
    assert m["abs_rel"] == pytest.approx(0.5)  # |1-2|/2
    assert m["rmse"] == pytest.approx(1.0)
    # range bounds are inclusive
    m2 = depth_metrics(torch.tensor([[0.1, 4.0]]), torch.tensor([[0.1, 4.0]]), depth_range_m=(0.1, 4.0))
    assert m2["n_valid"] == 2


def test_depth_metrics_perfect_and_numpy():
    g = np.random.default_rng(0).uniform(0.5, 8.0, size=(1, 6, 7)).astype(np.float32)
    m = depth_metrics(g, g)
    for k in ("abs_rel", "sq_rel", "rmse", "rmse_log"):
        assert m[k] == pytest.approx(0.0, abs=1e-12)
    for k in ("delta1", "delta2", "delta3"):
        assert m[k] == 1.0


def test_depth_metrics_nonpositive_pred_is_clamped():
    m = depth_metrics(torch.tensor([0.0, -1.0, 1.0]).view(1, 3), torch.ones(1, 3))
    assert math.isfinite(m["rmse_log"])
    assert m["delta1"] == pytest.approx(1 / 3)  # negative predictions are never "accurate"


def test_depth_metrics_errors():
    with pytest.raises(DefocusError):
        depth_metrics(torch.ones(2, 2), torch.zeros(2, 2))  # no valid pixel
    with pytest.raises(DefocusError):
        depth_metrics(torch.ones(2, 3), torch.ones(3, 2))
    with pytest.raises(DefocusError):
        depth_metrics(torch.ones(2, 2, 2), torch.ones(2, 2, 2))
    with pytest.raises(DefocusError):
        depth_metrics(torch.full((2, 2), float("nan")), torch.ones(2, 2))
    with pytest.raises(DefocusError):
        depth_metrics(torch.ones(2, 2), torch.ones(2, 2), valid=torch.ones(3, 3, dtype=torch.bool))


def test_mean_metrics_per_image_average():
    a = depth_metrics(torch.tensor([[1.0, 2.0]]), torch.tensor([[2.0, 2.0]]))  # AbsRel 0.25, 2 px
    b = depth_metrics(torch.ones(4, 4), torch.ones(4, 4))  # AbsRel 0, 16 px
    m = mean_metrics([a, b])
    assert m["abs_rel"] == pytest.approx(0.125)  # per image, not per pixel (which would be 0.5/18)
    assert m["delta1"] == pytest.approx(0.75)
    assert m["n_valid"] == 18 and m["n_images"] == 2
    with pytest.raises(DefocusError):
        mean_metrics([])


def test_psnr_known_value():
    t = torch.full((3, 8, 8), 0.5)
    assert psnr(t + 0.1, t) == pytest.approx(20.0, abs=1e-4)  # MSE 0.01 -> 10 log10(1/0.01)
    assert psnr(t + 0.1, t, max_val=2.0) == pytest.approx(20.0 + 20 * math.log10(2.0), abs=1e-4)
    assert psnr(t, t) == math.inf


def test_ssim_identity_and_noise():
    g = torch.Generator().manual_seed(0)
    img = torch.rand(2, 3, 32, 32, generator=g)
    assert ssim(img, img) == pytest.approx(1.0, abs=1e-12)
    prev = 1.0
    for s in (0.02, 0.05, 0.1, 0.3):
        noisy = (img + s * torch.randn(img.shape, generator=g)).clamp(0, 1)
        v = ssim(noisy, img)
        assert v < prev
        prev = v
    assert ssim(img[0], img[0]) == pytest.approx(1.0)
    with pytest.raises(DefocusError):
        ssim(torch.rand(3, 8, 8), torch.rand(3, 8, 8))  # smaller than the 11x11 window


def test_ssim_map_shapes_and_constant_images():
    x = torch.rand(1, 3, 20, 24)
    assert ssim_map(x, x).shape == (1, 3, 10, 14)
    assert ssim_map(x, x, padding="reflect").shape == (1, 3, 20, 24)
    # constant images: SSIM = (2ab + C1) / (a² + b² + C1) exactly (zero variance)
    a, b = 0.3, 0.6
    m = ssim_map(torch.full((1, 1, 11, 11), a, dtype=torch.float64), torch.full((1, 1, 11, 11), b, dtype=torch.float64))
    c1 = 0.01**2
    assert m.item() == pytest.approx((2 * a * b + c1) / (a * a + b * b + c1), rel=1e-9)


@pytest.mark.parametrize("padding", ["valid", "reflect"])
def test_ssim_map_gradcheck(padding):
    g = torch.Generator().manual_seed(1)
    x = torch.rand(1, 2, 7, 8, generator=g, dtype=torch.float64, requires_grad=True)
    y = torch.rand(1, 2, 7, 8, generator=g, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda a, b: ssim_map(a, b, window_size=5, sigma=1.5, padding=padding), (x, y))


# ------------------------------------------------------------------------------------------ SSIM: checklist
from conftest import np_ssim_map as _np_ssim_map  # noqa: E402 - the shared independent reference


def _pair_images(seed=0, shape=(2, 3, 14, 15)):
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(shape, generator=g, dtype=torch.float64)
    y = (0.7 * x + 0.3 * torch.rand(shape, generator=g, dtype=torch.float64)).clamp(0, 1)
    return x, y


@pytest.mark.parametrize("padding", ["valid", "reflect"])
def test_ssim_map_matches_numpy_reference(padding):
    x, y = _pair_images(2)
    m = ssim_map(x, y, padding=padding)
    ref = np.stack([_np_ssim_map(a, b, pad=padding if padding == "reflect" else None)
                    for a, b in zip(x.numpy(), y.numpy())])
    assert m.shape == ref.shape
    np.testing.assert_allclose(m.numpy(), ref, rtol=1e-10, atol=1e-12)


def test_ssim_map_other_window_matches_numpy_reference():
    x, y = _pair_images(3, (1, 2, 9, 10))
    m = ssim_map(x, y, window_size=5, sigma=0.9)
    assert m.shape == (1, 2, 5, 6)
    np.testing.assert_allclose(m[0].numpy(), _np_ssim_map(x[0].numpy(), y[0].numpy(), ws=5, sigma=0.9), rtol=1e-10)


def test_ssim_value_matches_numpy_reference_and_is_symmetric():
    x, y = _pair_images(4)
    # per image: mean over channels and valid pixels; then over the batch
    ref = np.mean([_np_ssim_map(a, b).mean() for a, b in zip(x.numpy(), y.numpy())])
    assert ssim(x, y) == pytest.approx(float(ref), rel=1e-10)
    assert ssim(y, x) == pytest.approx(ssim(x, y), rel=1e-12)
    assert -1.0 <= ssim(x, y) < 1.0
    # float32 and numpy inputs give the float64 answer
    assert ssim(x.float(), y.float()) == pytest.approx(float(ref), rel=1e-6)
    assert ssim(x.numpy(), y.numpy()) == pytest.approx(float(ref), rel=1e-10)


def test_ssim_map_identical_images_give_one():
    x, _ = _pair_images(5)
    for padding in ("valid", "reflect"):
        torch.testing.assert_close(ssim_map(x, x, padding=padding), torch.ones_like(ssim_map(x, x, padding=padding)))


def test_ssim_map_dtype_and_module_equals_function():
    x, y = _pair_images(6, (1, 3, 12, 13))
    assert ssim_map(x.float(), y.float()).dtype == torch.float32
    assert ssim_map(x, y).dtype == torch.float64
    opts = {"window_size": 7, "sigma": 1.2, "padding": "reflect"}
    mod = SSIM(**opts)
    assert isinstance(mod, nn.Module) and list(mod.parameters()) == []
    assert "window_size=7" in repr(mod)
    assert torch.equal(mod(x, y), ssim_map(x, y, **opts))
    assert torch.equal(SSIM()(x, y), ssim_map(x, y))


@pytest.mark.parametrize(
    "x, y, kwargs",
    [
        (torch.rand(1, 3, 12, 12), torch.rand(1, 3, 12, 13), {}),  # shapes differ
        (torch.rand(3, 12, 12), torch.rand(3, 12, 12), {}),  # not (B, C, H, W)
        (np.zeros((1, 3, 12, 12)), np.zeros((1, 3, 12, 12)), {}),  # not tensors
        (torch.rand(1, 3, 12, 12), torch.rand(1, 3, 12, 12), {"window_size": 4}),  # even window
        (torch.rand(1, 3, 12, 12), torch.rand(1, 3, 12, 12), {"padding": "zeros"}),
        (torch.rand(1, 3, 10, 12), torch.rand(1, 3, 10, 12), {}),  # smaller than the window, valid padding
        (torch.rand(1, 3, 5, 12), torch.rand(1, 3, 5, 12), {"padding": "reflect"}),  # too small to reflect by 5
    ],
)
def test_ssim_map_errors(x, y, kwargs):
    with pytest.raises(DefocusError):
        ssim_map(x, y, **kwargs)


def test_ssim_errors():
    with pytest.raises(DefocusError):
        ssim(torch.rand(3, 12, 12), torch.rand(3, 12, 13))
    with pytest.raises(DefocusError):
        ssim(torch.rand(12, 12), torch.rand(12, 12))


def test_ssim_map_gradcheck_default_window():
    # the 11x11 window the loss uses, reflect-padded on a tiny 6x7 image (the smallest that can be reflected by 5)
    g = torch.Generator().manual_seed(7)
    x = torch.rand(1, 1, 6, 7, generator=g, dtype=torch.float64, requires_grad=True)
    y = torch.rand(1, 1, 6, 7, generator=g, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda a, b: ssim_map(a, b, padding="reflect"), (x, y))
