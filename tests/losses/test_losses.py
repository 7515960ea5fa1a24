"""Tests of the self-supervised loss (SPEC §4): every term, the coarse AIF, and that re-rendering is minimised at the
true depth under both synthesis protocols.

Checklist per term (kornia style): smoke (finite scalar), which inputs get gradient, numerical value against an
independent numpy reference, float64 ``gradcheck`` on tiny inputs, module form equals the function, error cases.
"""

from __future__ import annotations

import math
import time

import numpy as np
import pytest
import torch
from numpy.lib.stride_tricks import sliding_window_view
from torch import nn

from defocus.data.procedural import make_scene
from defocus.data.synthesis import synthesize_stack
from defocus.errors import DefocusError
from defocus.losses.selfsup import LossConfig, SelfSupervisedLoss
from defocus.losses.terms import (
    LOSS_TERMS,
    AifSharpness,
    AifVsCoarse,
    DepthSmoothness,
    PriorConsistency,
    Reconstruction,
    aif_sharpness,
    aif_vs_coarse,
    coarse_aif,
    depth_smoothness,
    photometric,
    prior_consistency,
    reconstruction,
)
from defocus.models.prediction import Prediction
from defocus.optics.camera import get_preset
from defocus.optics.forward import ForwardModel, ForwardSpec, Rerendering

NYU = get_preset("nyuv2")
FOCUS = torch.tensor([[1.0, 1.5, 2.5, 4.0, 6.0]])
FAMILIES = ("gaussian", "disk")


def _pred(b=1, h=24, w=24, seed=0, requires_grad=True, dtype=torch.float32):
    g = torch.Generator().manual_seed(seed)
    aif = (0.2 + 0.6 * torch.rand(b, 3, h, w, generator=g, dtype=dtype)).requires_grad_(requires_grad)
    inv = (0.2 + 0.8 * torch.rand(b, 1, h, w, generator=g, dtype=dtype)).requires_grad_(requires_grad)
    return aif, inv


def _prediction(aif, inv):
    """A Prediction whose inv_depth is ``inv`` itself (so gradients reach it directly)."""
    return Prediction(depth=1.0 / inv, aif=aif, confidence=torch.ones_like(inv), inv_depth=inv)


def _focus_k(b=1, focus=FOCUS):
    focus = focus.expand(b, -1).clone()
    return focus, NYU.camera.blur_per_dioptre(focus)


# ------------------------------------------------------------------------------------- independent references
from conftest import np_ssim_map as _np_ssim_map  # noqa: E402 - the shared independent reference


def _np_photometric(a: np.ndarray, b: np.ndarray, alpha: float = 0.85) -> float:
    """alpha·mean(1 − SSIM, reflect padded) + (1 − alpha)·mean|a − b| over images (..., C, H, W)."""
    a = a.reshape(-1, *a.shape[-3:])
    b = b.reshape(-1, *b.shape[-3:])
    s = np.stack([_np_ssim_map(ai, bi, pad="reflect") for ai, bi in zip(a, b)])
    return float(alpha * (1.0 - s).mean() + (1.0 - alpha) * np.abs(a - b).mean())


def _np(x: torch.Tensor) -> np.ndarray:
    return x.detach().double().numpy()


# ------------------------------------------------------------------------------------------------ each term
def _term_inputs(seed=0, family="gaussian", b=1, h=24, w=24):
    aif, inv = _pred(b=b, h=h, w=w, seed=seed)
    focus, k = _focus_k(b)
    physics = ForwardModel.from_family(family)
    rendered = physics.rerender(aif, inv, focus, k)
    g = torch.Generator().manual_seed(seed + 100)
    observed = torch.rand(rendered.stack.shape, generator=g)
    return observed, _prediction(aif, inv), physics, rendered, aif, inv


def _grad_norms(value, aif, inv):
    ga, gi = torch.autograd.grad(value, [aif, inv], allow_unused=True)
    na = 0.0 if ga is None else float(ga.abs().sum())
    ni = 0.0 if gi is None else float(gi.abs().sum())
    return na, ni


def test_registry_holds_the_paper_terms():
    assert set(LOSS_TERMS) == {"reconstruction", "aif_vs_coarse", "aif_sharpness", "depth_smoothness",
                               "prior_consistency"}
    assert LossConfig().weights == {  # the paper's four; prior_consistency is the release config's addition
        "reconstruction": 1e3, "aif_vs_coarse": 1e2, "aif_sharpness": 10.0, "depth_smoothness": 10.0
    }


def test_rerender_shapes_and_blur_from_k():
    observed, pred, physics, rendered, aif, inv = _term_inputs(b=2, h=12, w=10)
    assert isinstance(rendered, Rerendering)
    assert rendered.stack.shape == (2, 5, 3, 12, 10)
    assert rendered.blur.shape == (2, 5, 1, 12, 10)
    focus, k = _focus_k(2)
    # Gaussian σ = K·|1/d − 1/fd| / 4, by hand.
    expected = k[:, :, None, None, None] * (inv.detach()[:, None] - 1.0 / focus[:, :, None, None, None]).abs() / 4
    torch.testing.assert_close(rendered.blur.detach(), expected)


@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize("name", sorted(LOSS_TERMS))
def test_every_term_is_a_finite_scalar(name, family):
    observed, pred, physics, rendered, aif, inv = _term_inputs(family=family, b=2)
    value = LOSS_TERMS[name](observed, pred, physics, rendered)
    assert value.dim() == 0
    assert torch.isfinite(value)
    assert value.dtype == torch.float32


@pytest.mark.parametrize(
    "module, function",
    [(Reconstruction, reconstruction), (AifVsCoarse, aif_vs_coarse), (AifSharpness, aif_sharpness),
     (DepthSmoothness, depth_smoothness), (PriorConsistency, prior_consistency)],
)
def test_module_equals_function(module, function):
    observed, pred, physics, rendered, aif, inv = _term_inputs(seed=11)
    m = module()
    assert isinstance(m, nn.Module)
    assert list(m.parameters()) == []
    assert LOSS_TERMS[function.__name__] is function
    assert torch.equal(m(observed, pred, physics, rendered), function(observed, pred, physics, rendered))


def test_aif_sharpness_gradient_to_aif_only():
    observed, pred, physics, rendered, aif, inv = _term_inputs(1)
    na, ni = _grad_norms(aif_sharpness(observed, pred, physics, rendered), aif, inv)
    assert na > 0 and ni == 0


def test_aif_sharpness_rewards_detail():
    observed, pred, physics, rendered, aif, inv = _term_inputs(2)
    flat = _prediction(torch.full_like(aif, 0.5) + 0.01 * aif.detach(), inv)
    assert aif_sharpness(observed, pred, physics, rendered) < aif_sharpness(observed, flat, physics, rendered)


def test_aif_sharpness_ignores_brightness_offset():
    # The LoG kernel has zero mean and the padding reflects, so adding a grey level changes nothing.
    observed, pred, physics, rendered, aif, inv = _term_inputs(12)
    brighter = _prediction(aif.detach() + 0.1, inv)
    torch.testing.assert_close(
        aif_sharpness(observed, brighter, physics, rendered), aif_sharpness(observed, pred, physics, rendered)
    )


def test_aif_sharpness_matches_numpy_reference():
    observed, pred, physics, rendered, aif, inv = _term_inputs(13, h=10, w=9)
    # 5x5 Laplacian of Gaussian, σ 0.8, made zero-mean; Rec. 601 grey; reflect padding.
    t = np.arange(5) - 2.0
    rr = (t[None, :] ** 2 + t[:, None] ** 2) / (2 * 0.8**2)
    kern = (rr - 1.0) * np.exp(-rr)
    kern -= kern.mean()
    a = _np(aif)[0]
    grey = 0.299 * a[0] + 0.587 * a[1] + 0.114 * a[2]
    resp = np.einsum("hwij,ij->hw", sliding_window_view(np.pad(grey, 2, mode="reflect"), (5, 5)), kern)
    expected = -math.log((resp**2).mean() + 1e-8)
    assert float(aif_sharpness(observed, pred, physics, rendered).detach()) == pytest.approx(expected, rel=1e-5)


def test_depth_smoothness_gradient_to_inv_depth_only():
    observed, pred, physics, rendered, aif, inv = _term_inputs(3)
    value = depth_smoothness(observed, pred, physics, rendered)
    na, ni = _grad_norms(value, aif, inv)
    assert ni > 0 and na == 0  # the edge weights use a detached AIF
    # A constant inverse depth is perfectly smooth, at any scale.
    const = _prediction(aif, torch.full_like(inv, 0.37))
    assert float(depth_smoothness(observed, const, physics, rendered)) == 0.0
    # Scale-free: the term does not change when the inverse depth is multiplied by a constant.
    scaled = _prediction(aif, 3.0 * inv.detach())
    torch.testing.assert_close(
        depth_smoothness(observed, scaled, physics, rendered),
        depth_smoothness(observed, _prediction(aif, inv.detach()), physics, rendered),
    )


def test_depth_smoothness_by_hand():
    # Inverse depth 1 on the left half, 3 on the right of a 4x4 image: mean 2, normalised 0.5 | 1.5, so one jump of
    # 1 in each of the 4 rows among 4x3 horizontal differences, none vertically: 2.5 · (4/12 + 0) = 2.5/3.
    inv = torch.ones(1, 1, 4, 4)
    inv[..., 2:] = 3.0
    observed, _, physics, rendered, *_ = _term_inputs(14, h=4, w=4)
    flat_aif = torch.full((1, 3, 4, 4), 0.5)
    value = depth_smoothness(observed, _prediction(flat_aif, inv), physics, rendered)
    assert float(value) == pytest.approx(2.5 / 3, rel=1e-6)
    # An image edge at the same place weighs the jump by exp(−mean |ΔAIF|) = exp(−1) (edge-aware).
    edge_aif = flat_aif.clone()
    edge_aif[..., :2] = 0.0
    edge_aif[..., 2:] = 1.0
    value = depth_smoothness(observed, _prediction(edge_aif, inv), physics, rendered)
    assert float(value) == pytest.approx(2.5 / 3 * math.exp(-1.0), rel=1e-6)


def test_depth_smoothness_matches_numpy_reference():
    observed, pred, physics, rendered, aif, inv = _term_inputs(15, b=2, h=7, w=9)
    a, d = _np(aif), _np(inv)
    d = d / d.mean(axis=(2, 3), keepdims=True)
    dx = np.abs(np.diff(d, axis=3))
    dy = np.abs(np.diff(d, axis=2))
    wx = np.exp(-np.abs(np.diff(a, axis=3)).mean(axis=1, keepdims=True))
    wy = np.exp(-np.abs(np.diff(a, axis=2)).mean(axis=1, keepdims=True))
    expected = 2.5 * ((dx * wx).mean() + (dy * wy).mean())
    assert float(depth_smoothness(observed, pred, physics, rendered).detach()) == pytest.approx(expected, rel=1e-5)


def test_aif_vs_coarse_gradient_to_aif_only():
    observed, pred, physics, rendered, aif, inv = _term_inputs(4)
    na, ni = _grad_norms(aif_vs_coarse(observed, pred, physics, rendered), aif, inv)
    assert na > 0 and ni == 0  # the coarse AIF is a stop-gradient target


def test_aif_vs_coarse_matches_numpy_reference():
    observed, pred, physics, rendered, aif, inv = _term_inputs(16, b=2, h=12, w=13)
    obs, blur = _np(observed), _np(rendered.blur)
    idx = blur.argmin(axis=1)[:, 0]  # (B, H, W)
    coarse = np.take_along_axis(obs, idx[:, None, None], axis=1)[:, 0]  # (B, 3, H, W)
    expected = _np_photometric(_np(aif), coarse)
    assert float(aif_vs_coarse(observed, pred, physics, rendered).detach()) == pytest.approx(expected, rel=1e-5)


@pytest.mark.parametrize("family", FAMILIES)
def test_reconstruction_gradient_to_both_through_the_loss(family):
    aif, inv = _pred(seed=5)
    focus, k = _focus_k()
    g = torch.Generator().manual_seed(55)
    observed = torch.rand(1, 5, 3, 24, 24, generator=g)
    cfg = LossConfig(weights={"reconstruction": 1.0})
    physics = ForwardModel.from_family(family)
    total, parts = SelfSupervisedLoss(cfg)(observed, _prediction(aif, inv), physics, focus, k)
    assert set(parts) == {"reconstruction"}
    assert math.isclose(float(total.detach()), parts["reconstruction"], rel_tol=1e-6)
    na, ni = _grad_norms(total, aif, inv)
    assert na > 0 and ni > 0, (family, na, ni)


def test_reconstruction_matches_numpy_reference():
    observed, pred, physics, rendered, aif, inv = _term_inputs(17, h=12, w=12)
    expected = _np_photometric(_np(rendered.stack), _np(observed))
    assert float(reconstruction(observed, pred, physics, rendered).detach()) == pytest.approx(expected, rel=1e-5)


def test_reconstruction_is_zero_for_identical_stacks():
    _, pred, physics, rendered, *_ = _term_inputs(6)
    same = Rerendering(rendered.stack.detach(), rendered.blur.detach())
    assert float(reconstruction(same.stack, pred, physics, same)) == pytest.approx(0.0, abs=1e-6)
    assert float(photometric(same.stack, same.stack)) == pytest.approx(0.0, abs=1e-6)


def test_photometric_mix_ends_and_numpy_reference():
    g = torch.Generator().manual_seed(18)
    a = torch.rand(2, 2, 3, 9, 10, generator=g, dtype=torch.float64)
    b = torch.rand(2, 2, 3, 9, 10, generator=g, dtype=torch.float64)
    # alpha = 0 is the plain mean absolute difference
    assert float(photometric(a, b, alpha=0.0)) == pytest.approx(float((a - b).abs().mean()), rel=1e-12)
    for alpha in (0.85, 1.0):
        assert float(photometric(a, b, alpha=alpha)) == pytest.approx(_np_photometric(_np(a), _np(b), alpha),
                                                                        rel=1e-10)


def test_photometric_and_terms_reject_bad_shapes():
    with pytest.raises(DefocusError):
        photometric(torch.rand(1, 3, 8, 8), torch.rand(1, 3, 8, 9))
    with pytest.raises(DefocusError):  # too small to reflect-pad the 11x11 SSIM window
        photometric(torch.rand(1, 3, 4, 4), torch.rand(1, 3, 4, 4))
    observed, pred, physics, rendered, aif, inv = _term_inputs(19)
    with pytest.raises(DefocusError):  # observed stack of another size than the re-rendered one
        reconstruction(observed[..., :20], pred, physics, rendered)
    with pytest.raises(DefocusError):
        aif_vs_coarse(observed, _prediction(aif[..., :20], inv[..., :20]), physics, rendered)


def test_rerender_and_prediction_errors():
    aif, inv = _pred(h=8, w=8, requires_grad=False)
    focus, k = _focus_k()
    physics = ForwardModel.from_family("gaussian")
    with pytest.raises(DefocusError):  # inverse depth without its channel dimension
        physics.rerender(aif, inv[:, 0], focus, k)
    with pytest.raises(DefocusError):  # K for another number of images
        physics.rerender(aif, inv, focus, k[:, :3])
    with pytest.raises(DefocusError):  # the loss re-renders with the layered method only
        physics.replace(method="exact").rerender(aif, inv, focus, k)
    with pytest.raises(DefocusError):
        ForwardModel.from_family("box")
    with pytest.raises(DefocusError):  # a prediction of mismatched sizes
        Prediction(depth=1.0 / inv, aif=aif[..., :7], confidence=torch.ones_like(inv))


# ------------------------------------------------------------------------------------------------ gradcheck
def _tiny(seed=20, family="gaussian"):
    """B=1, N=2, 8x8 float64 inputs; inverse depths stay clear of both focus planes (|·| kinks of the blur)."""
    g = torch.Generator().manual_seed(seed)
    aif = (0.2 + 0.6 * torch.rand(1, 3, 8, 8, generator=g, dtype=torch.float64)).requires_grad_()
    inv = (0.8 + 0.2 * torch.rand(1, 1, 8, 8, generator=g, dtype=torch.float64)).requires_grad_()
    focus = torch.tensor([[1.5, 4.0]], dtype=torch.float64)  # 0.67 and 0.25 dioptres
    k = NYU.camera.blur_per_dioptre(focus).double()
    observed = torch.rand(1, 2, 3, 8, 8, generator=g, dtype=torch.float64)
    physics = ForwardModel.from_family(family)
    return aif, inv, focus, k, observed, physics


@pytest.mark.parametrize("family", FAMILIES)
def test_reconstruction_gradcheck(family):
    aif, inv, focus, k, observed, physics = _tiny(family=family)
    assert bool(((inv - 1 / focus[0, :, None, None, None]).abs() > 0.1).all())

    def f(a, d):
        pred = _prediction(a, d)
        return reconstruction(observed, pred, physics, physics.rerender(a, d, focus, k))

    assert f(aif, inv).dtype == torch.float64
    t0 = time.perf_counter()
    assert torch.autograd.gradcheck(f, (aif, inv))
    assert time.perf_counter() - t0 < 10.0


def test_depth_smoothness_gradcheck():
    # Only w.r.t. inverse depth: the edge weights use a *detached* AIF by design, so the analytic gradient w.r.t.
    # the AIF is zero while the numerical one is not (checked in test_depth_smoothness_gradient_to_inv_depth_only).
    aif, inv, focus, k, observed, physics = _tiny(21)
    rendered = physics.rerender(aif.detach(), inv.detach(), focus, k)
    assert torch.autograd.gradcheck(lambda d: depth_smoothness(observed, _prediction(aif, d), physics, rendered),
                                    (inv,))


def test_aif_sharpness_gradcheck():
    aif, inv, focus, k, observed, physics = _tiny(22)
    rendered = physics.rerender(aif.detach(), inv.detach(), focus, k)
    assert torch.autograd.gradcheck(lambda a: aif_sharpness(observed, _prediction(a, inv), physics, rendered),
                                    (aif,))


def test_aif_vs_coarse_gradcheck():
    # Only w.r.t. the AIF: the coarse target is chosen by an argmin over the predicted blur (piecewise constant in
    # inverse depth, not differentiable) and is a stop-gradient target.
    aif, inv, focus, k, observed, physics = _tiny(23)
    rendered = physics.rerender(aif.detach(), inv.detach(), focus, k)
    assert torch.autograd.gradcheck(lambda a: aif_vs_coarse(observed, _prediction(a, inv), physics, rendered),
                                    (aif,))


def test_photometric_gradcheck():
    g = torch.Generator().manual_seed(24)
    a = torch.rand(1, 2, 3, 7, 8, generator=g, dtype=torch.float64, requires_grad=True)
    b = torch.rand(1, 2, 3, 7, 8, generator=g, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(photometric, (a, b))


# ---------------------------------------------------------------------------------------------- full loss
def test_full_loss_total_is_weighted_sum():
    aif, inv = _pred(seed=7)
    focus, k = _focus_k()
    observed = torch.rand(1, 5, 3, 24, 24, generator=torch.Generator().manual_seed(77))
    cfg = LossConfig()
    total, parts = SelfSupervisedLoss(cfg)(observed, _prediction(aif, inv), cfg.forward_model(), focus, k)
    assert set(parts) == set(cfg.weights)  # the terms with a weight (the default config: the paper's four)
    expected = sum(cfg.weights[n] * v for n, v in parts.items())
    assert float(total.detach()) == pytest.approx(expected, rel=1e-5)
    na, ni = _grad_norms(total, aif, inv)
    assert na > 0 and ni > 0
    # each part is the term evaluated on the shared re-rendering
    physics = cfg.forward_model()
    rendered = physics.rerender(aif, inv, focus, k)
    for name, value in parts.items():
        expected_part = float(LOSS_TERMS[name](observed, _prediction(aif, inv), physics, rendered).detach())
        assert value == pytest.approx(expected_part, rel=1e-6), name


def test_loss_config_builds_its_forward_model():
    fm = LossConfig().forward_model()
    assert (fm.psf, fm.light, fm.method) == ("gaussian", "srgb", "layered")
    assert LossConfig().forward == ForwardSpec()
    fm = LossConfig(forward=ForwardSpec("disk", "linear", level_ratio=1.2, blur_scale=0.9)).forward_model()
    assert (fm.psf, fm.light, fm.spec.level_ratio, fm.spec.blur_scale) == ("disk", "linear", 1.2, 0.9)
    fm = LossConfig().forward_model(psf="disk", light="linear")
    assert (fm.psf, fm.light) == ("disk", "linear")
    assert LossConfig().forward_model(psf="disk", linear_light=True).light == "linear"  # the old key still reads
    assert LossConfig().forward_model(psf=None).psf == "gaussian"  # None overrides nothing
    assert LossConfig().to_dict()["forward"] == ForwardSpec().to_dict()
    with pytest.raises(DefocusError):
        LossConfig().forward_model(psf="box")


# ---------------------------------------------------------------------------------------------- coarse AIF
def test_coarse_aif_picks_least_blurred_image_per_pixel():
    g = torch.Generator().manual_seed(8)
    b, n, h, w = 2, 4, 6, 7
    observed = torch.rand(b, n, 3, h, w, generator=g)
    blur = torch.rand(b, n, 1, h, w, generator=g, requires_grad=True)
    out = coarse_aif(observed, blur)
    assert out.shape == (b, 3, h, w)
    assert not out.requires_grad
    idx = blur.detach().argmin(dim=1)  # (B, 1, H, W)
    for bi in range(b):
        for y in range(h):
            for x in range(w):
                j = int(idx[bi, 0, y, x])
                assert torch.equal(out[bi, :, y, x], observed[bi, j, :, y, x])


# -------------------------------------------------------------------------------- minimum at the true depth
@pytest.fixture(scope="module")
def scene48():
    aif, depth = make_scene(12345, 48, 48, (0.7, 8.0))
    return aif, depth


def _recon_at(stack, aif, inv_depth, cfg):
    focus, k = _focus_k()
    loss_fn = SelfSupervisedLoss(cfg)
    with torch.no_grad():
        _, parts = loss_fn(stack[None], _prediction(aif[None], inv_depth[None]), cfg.forward_model(), focus, k)
    return parts["reconstruction"]


@pytest.mark.parametrize(
    "protocol,psf,linear",
    [("paper", "gaussian", False), ("realistic", "disk", True)],
)
def test_reconstruction_is_minimised_near_true_depth(scene48, protocol, psf, linear):
    aif, depth = scene48
    stack = synthesize_stack(aif, depth, FOCUS[0], NYU.camera, protocol, seed=3)
    cfg = LossConfig(weights={"reconstruction": 1.0}, forward=ForwardSpec(psf, "linear" if linear else "srgb"))
    inv_true = 1.0 / depth
    at_true = _recon_at(stack, aif, inv_true, cfg)
    others = {
        "0.7x": _recon_at(stack, aif, 0.7 * inv_true, cfg),
        "1.3x": _recon_at(stack, aif, 1.3 * inv_true, cfg),
        "constant mean": _recon_at(stack, aif, torch.full_like(inv_true, float(inv_true.mean())), cfg),
        "constant near": _recon_at(stack, aif, torch.full_like(inv_true, 1.0 / 0.7), cfg),
    }
    for what, value in others.items():
        assert at_true < value, (protocol, what, at_true, value)
    # and the margin is not a rounding accident
    assert at_true < 0.5 * min(others.values())


# -------------------------------------------------------------------------------------------------- config
def test_unknown_term_names_are_an_error():
    with pytest.raises(DefocusError, match="reconstuction"):
        SelfSupervisedLoss(LossConfig(weights={"reconstuction": 1.0}))


def test_zero_weight_skips_a_term(monkeypatch):
    calls = []
    original = LOSS_TERMS["aif_sharpness"]

    def spy(*args):
        calls.append(1)
        return original(*args)

    monkeypatch.setitem(LOSS_TERMS, "aif_sharpness", spy)
    aif, inv = _pred(seed=9)
    focus, k = _focus_k()
    observed = torch.rand(1, 5, 3, 24, 24, generator=torch.Generator().manual_seed(99))
    physics = ForwardModel.from_family("gaussian")
    weights = {"reconstruction": 1.0, "aif_sharpness": 0.0, "depth_smoothness": 2.0}
    total, parts = SelfSupervisedLoss(LossConfig(weights=weights))(observed, _prediction(aif, inv), physics, focus, k)
    assert calls == []
    assert set(parts) == {"reconstruction", "depth_smoothness"}
    assert float(total.detach()) == pytest.approx(parts["reconstruction"] + 2.0 * parts["depth_smoothness"], rel=1e-5)
    weights["aif_sharpness"] = 1.0
    SelfSupervisedLoss(LossConfig(weights=weights))(observed, _prediction(aif, inv), physics, focus, k)
    assert calls == [1]


# ------------------------------------------------------------------------------------------ prior consistency
def _with_prior(aif, inv, prior, cue):
    return Prediction(depth=1.0 / inv, aif=aif, confidence=torch.ones_like(inv), inv_depth=inv,
                      prior_inv_depth=prior, prior_cue=cue)


def test_prior_consistency_by_hand():
    # 2x2: cue 0.4 (below the 0.5 threshold: ignored), 0.6, 1.0, 0.5 → weights 0, 0.6, 1.0, 0.5.
    inv = torch.tensor([[[[1.0, 2.0], [0.5, 1.0]]]])
    prior = torch.tensor([[[[2.0, 1.0], [0.5, 4.0]]]])
    cue = torch.tensor([[[[0.4, 0.6], [1.0, 0.5]]]])
    observed, _, physics, rendered, *_ = _term_inputs(15, h=2, w=2)
    value = prior_consistency(observed, _with_prior(torch.full((1, 3, 2, 2), 0.5), inv, prior, cue), physics,
                              rendered)
    expected = (0.6 * math.log(2.0) + 1.0 * 0.0 + 0.5 * math.log(4.0)) / (0.6 + 1.0 + 0.5)
    assert float(value) == pytest.approx(expected, rel=1e-6)


def test_prior_consistency_is_zero_without_a_prior_and_pulls_inv_depth_only():
    observed, pred, physics, rendered, aif, inv = _term_inputs(16)
    assert float(prior_consistency(observed, pred, physics, rendered).detach()) == 0.0  # no prior (eval mode, classical)
    prior = torch.full_like(inv, 0.5)
    cue = torch.linspace(0, 1, inv.numel()).view_as(inv)
    value = prior_consistency(observed, _with_prior(aif, inv, prior, cue), physics, rendered)
    na, ni = _grad_norms(value, aif, inv)
    assert value > 0 and ni > 0 and na == 0
    at_prior = _with_prior(aif, prior.clone(), prior, cue)
    assert float(prior_consistency(observed, at_prior, physics, rendered)) == 0.0


def test_prior_consistency_gradcheck():
    g = torch.Generator().manual_seed(3)
    inv = (0.3 + torch.rand(1, 1, 3, 3, generator=g, dtype=torch.float64)).requires_grad_(True)
    prior = 0.3 + torch.rand(1, 1, 3, 3, generator=g, dtype=torch.float64)
    cue = torch.rand(1, 1, 3, 3, generator=g, dtype=torch.float64)
    aif = torch.full((1, 3, 3, 3), 0.5, dtype=torch.float64)
    observed, _, physics, rendered, *_ = _term_inputs(17, h=3, w=3)
    assert torch.autograd.gradcheck(
        lambda v: prior_consistency(observed, _with_prior(aif, v, prior, cue), physics, rendered), (inv,))
