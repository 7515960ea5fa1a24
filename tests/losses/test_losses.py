"""Tests of the self-supervised loss (SPEC §4): every term, the coarse AIF, and that re-rendering is minimised at the
true depth under both synthesis protocols."""

from __future__ import annotations

import math

import pytest
import torch

from defocus.data.procedural import make_scene
from defocus.data.synthesis import synthesize_stack
from defocus.errors import DefocusError
from defocus.losses.selfsup import LossConfig, SelfSupervisedLoss, rerender
from defocus.losses.terms import (
    LOSS_TERMS,
    aif_sharpness,
    aif_vs_coarse,
    coarse_aif,
    depth_smoothness,
    photometric,
    reconstruction,
)
from defocus.optics.camera import get_preset

NYU = get_preset("nyuv2")
FOCUS = torch.tensor([[1.0, 1.5, 2.5, 4.0, 6.0]])


def _pred(b=1, h=24, w=24, seed=0, requires_grad=True):
    g = torch.Generator().manual_seed(seed)
    aif = (0.2 + 0.6 * torch.rand(b, 3, h, w, generator=g)).requires_grad_(requires_grad)
    inv = (0.2 + 0.8 * torch.rand(b, 1, h, w, generator=g)).requires_grad_(requires_grad)
    return aif, inv


def _focus_k(b=1):
    focus = FOCUS.expand(b, -1).clone()
    return focus, NYU.camera.blur_per_dioptre_px(focus.double()).float()


# ------------------------------------------------------------------------------------------------ each term
def _term_inputs(seed=0):
    aif, inv = _pred(seed=seed)
    focus, k = _focus_k()
    rendered, blur = rerender(aif, inv, focus, k)
    g = torch.Generator().manual_seed(seed + 100)
    observed = torch.rand(rendered.shape, generator=g)
    return observed, rendered, {"aif": aif, "inv_depth": inv, "blur": blur}, aif, inv


def _grad_norms(value, aif, inv):
    ga, gi = torch.autograd.grad(value, [aif, inv], allow_unused=True)
    na = 0.0 if ga is None else float(ga.abs().sum())
    ni = 0.0 if gi is None else float(gi.abs().sum())
    return na, ni


def test_registry_holds_the_paper_terms():
    assert set(LOSS_TERMS) == {"reconstruction", "aif_vs_coarse", "aif_sharpness", "depth_smoothness"}
    assert LossConfig().weights == {
        "reconstruction": 1e3, "aif_vs_coarse": 1e2, "aif_sharpness": 10.0, "depth_smoothness": 10.0
    }


@pytest.mark.parametrize("name", sorted(LOSS_TERMS))
def test_every_term_is_a_finite_scalar(name):
    observed, rendered, pred, aif, inv = _term_inputs()
    value = LOSS_TERMS[name](observed, rendered, pred)
    assert value.dim() == 0
    assert torch.isfinite(value)


def test_aif_sharpness_gradient_to_aif_only():
    observed, rendered, pred, aif, inv = _term_inputs(1)
    na, ni = _grad_norms(aif_sharpness(observed, rendered, pred), aif, inv)
    assert na > 0 and ni == 0


def test_aif_sharpness_rewards_detail():
    observed, rendered, pred, aif, inv = _term_inputs(2)
    flat = {**pred, "aif": torch.full_like(pred["aif"], 0.5) + 0.01 * pred["aif"].detach()}
    assert aif_sharpness(observed, rendered, pred) < aif_sharpness(observed, rendered, flat)


def test_depth_smoothness_gradient_to_inv_depth_only():
    observed, rendered, pred, aif, inv = _term_inputs(3)
    value = depth_smoothness(observed, rendered, pred)
    na, ni = _grad_norms(value, aif, inv)
    assert ni > 0 and na == 0  # the edge weights use a detached AIF
    # A constant inverse depth is perfectly smooth, at any scale.
    const = {**pred, "inv_depth": torch.full_like(inv, 0.37)}
    assert float(depth_smoothness(observed, rendered, const)) == 0.0
    # Scale-free: the term does not change when the inverse depth is multiplied by a constant.
    scaled = {**pred, "inv_depth": 3.0 * inv.detach()}
    torch.testing.assert_close(
        depth_smoothness(observed, rendered, scaled), depth_smoothness(observed, rendered, {**pred, "inv_depth": inv.detach()})
    )


def test_aif_vs_coarse_gradient_to_aif_only():
    observed, rendered, pred, aif, inv = _term_inputs(4)
    na, ni = _grad_norms(aif_vs_coarse(observed, rendered, pred), aif, inv)
    assert na > 0 and ni == 0  # the coarse AIF is a stop-gradient target


def test_reconstruction_gradient_to_both_through_the_loss():
    aif, inv = _pred(seed=5)
    focus, k = _focus_k()
    g = torch.Generator().manual_seed(55)
    observed = torch.rand(1, 5, 3, 24, 24, generator=g)
    loss_fn = SelfSupervisedLoss(LossConfig(weights={"reconstruction": 1.0}))
    for psf, linear in (("gaussian", False), ("disk", True)):
        total, parts = loss_fn(observed, {"aif": aif, "inv_depth": inv}, focus, k, psf=psf, linear_light=linear)
        assert set(parts) == {"reconstruction"}
        assert math.isclose(float(total.detach()), parts["reconstruction"], rel_tol=1e-6)
        na, ni = _grad_norms(total, aif, inv)
        assert na > 0 and ni > 0, (psf, na, ni)


def test_reconstruction_is_zero_for_identical_stacks():
    _, rendered, pred, *_ = _term_inputs(6)
    assert float(reconstruction(rendered.detach(), rendered.detach(), pred)) == pytest.approx(0.0, abs=1e-6)
    assert float(photometric(rendered.detach(), rendered.detach())) == pytest.approx(0.0, abs=1e-6)


def test_full_loss_total_is_weighted_sum():
    aif, inv = _pred(seed=7)
    focus, k = _focus_k()
    observed = torch.rand(1, 5, 3, 24, 24, generator=torch.Generator().manual_seed(77))
    cfg = LossConfig()
    total, parts = SelfSupervisedLoss(cfg)(observed, {"aif": aif, "inv_depth": inv}, focus, k)
    assert set(parts) == set(LOSS_TERMS)
    expected = sum(cfg.weights[n] * v for n, v in parts.items())
    assert float(total.detach()) == pytest.approx(expected, rel=1e-5)
    na, ni = _grad_norms(total, aif, inv)
    assert na > 0 and ni > 0


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
        total, parts = loss_fn(stack[None], {"aif": aif[None], "inv_depth": inv_depth[None]}, focus, k)
    return parts["reconstruction"]


@pytest.mark.parametrize(
    "protocol,psf,linear",
    [("paper", "gaussian", False), ("realistic", "disk", True)],
)
def test_reconstruction_is_minimised_near_true_depth(scene48, protocol, psf, linear):
    aif, depth = scene48
    stack = synthesize_stack(aif, depth, FOCUS[0], NYU.camera, protocol, seed=3)
    cfg = LossConfig(weights={"reconstruction": 1.0}, psf=psf, linear_light=linear)
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
    weights = {"reconstruction": 1.0, "aif_sharpness": 0.0, "depth_smoothness": 2.0}
    total, parts = SelfSupervisedLoss(LossConfig(weights=weights))(observed, {"aif": aif, "inv_depth": inv}, focus, k)
    assert calls == []
    assert set(parts) == {"reconstruction", "depth_smoothness"}
    assert float(total.detach()) == pytest.approx(parts["reconstruction"] + 2.0 * parts["depth_smoothness"], rel=1e-5)
    weights["aif_sharpness"] = 1.0
    SelfSupervisedLoss(LossConfig(weights=weights))(observed, {"aif": aif, "inv_depth": inv}, focus, k)
    assert calls == [1]
