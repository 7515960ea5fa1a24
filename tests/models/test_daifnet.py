"""Tests of DAIF-Net: factory, output contract, order invariance, any N, any size, gradients."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from defocus.errors import DefocusError
from defocus.models.daifnet import DAIFNet, focus_measure_features
from defocus.models.prediction import Prediction
from defocus.models.factory import DAIFNET_VARIANTS, count_parameters, create_model, list_models
from defocus.optics.camera import get_preset

NYU = get_preset("nyuv2")


def _inputs(b: int = 2, n: int = 5, h: int = 24, w: int = 20, seed: int = 0, dtype=torch.float32):
    g = torch.Generator().manual_seed(seed)
    stack = torch.rand(b, n, 3, h, w, generator=g, dtype=torch.float64).to(dtype)
    focus = (0.8 + 5.0 * torch.rand(b, n, generator=g, dtype=torch.float64)).to(dtype)
    k = NYU.camera.blur_per_dioptre(focus).to(dtype)
    dr = torch.tensor([[0.1, 10.0], [0.5, 4.0]], dtype=dtype)[:b] if b <= 2 else torch.tensor([[0.1, 10.0]]).expand(b, 2)
    return stack, focus, k, dr


@pytest.fixture(scope="module")
def tiny() -> DAIFNet:
    torch.manual_seed(0)
    return create_model("daifnet_tiny").eval()


# ------------------------------------------------------------------------------------------------- factory
def test_every_registered_name_builds():
    assert set(list_models()) == set(DAIFNET_VARIANTS) | {"classical"}
    assert {"daifnet", "daifnet_small", "daifnet_tiny"} <= set(list_models())
    for name in DAIFNET_VARIANTS:
        model = create_model(name)
        assert isinstance(model, DAIFNet)
        assert tuple(model.config.widths) == tuple(DAIFNET_VARIANTS[name].widths)
        assert model.config.bottleneck == DAIFNET_VARIANTS[name].bottleneck


def test_unknown_model_name_is_defocus_error():
    with pytest.raises(DefocusError, match="daifnet_huge"):
        create_model("daifnet_huge")


def test_overrides_replace_config_fields():
    model = create_model("daifnet_tiny", widths=[6, 10, 12], bottleneck=14, head_width=3)
    assert model.config.widths == (6, 10, 12)
    assert model.config.bottleneck == 14 and model.config.head_width == 3
    assert model.levels == 3
    assert model.encoder[0][0].out_channels == 6
    assert model.bottleneck[0].out_channels == 14
    # The registry entry itself is untouched by the override.
    assert create_model("daifnet_tiny").config.widths == tuple(DAIFNET_VARIANTS["daifnet_tiny"].widths)
    with pytest.raises(TypeError):
        create_model("daifnet_tiny", no_such_field=3)


def test_parameter_counts():
    tiny = count_parameters(create_model("daifnet_tiny"))
    small = count_parameters(create_model("daifnet_small"))
    paper = count_parameters(create_model("daifnet"))
    assert tiny < 20_000
    assert tiny < small < paper
    # The paper's widths give about 2 M parameters (the paper reports about 1.96 M).
    assert 1.5e6 < paper < 3.0e6


# ------------------------------------------------------------------------------------------------- outputs
def test_output_keys_shapes_and_ranges(tiny):
    b, n, h, w = 2, 5, 24, 20
    stack, focus, k, dr = _inputs(b, n, h, w)
    with torch.no_grad():
        out = tiny(stack, focus, k, dr)
    assert isinstance(out, Prediction)
    assert out.depth.shape == (b, 1, h, w)
    assert out.inv_depth.shape == (b, 1, h, w)
    assert out.aif.shape == (b, 3, h, w)
    assert out.attention.shape == (b, n, 1, h, w)
    assert out.confidence.shape == (b, 1, h, w)
    for v in (out.depth, out.inv_depth, out.aif, out.attention, out.confidence):
        assert v.dtype == torch.float32 and torch.isfinite(v).all()
    for i in range(b):
        near, far = float(dr[i, 0]), float(dr[i, 1])
        d = out.depth[i]
        assert float(d.min()) >= near * (1 - 1e-5) and float(d.max()) <= far * (1 + 1e-5)
    torch.testing.assert_close(out.inv_depth * out.depth, torch.ones_like(out.depth), rtol=1e-5, atol=1e-5)
    assert float(out.aif.min()) >= 0.0 and float(out.aif.max()) <= 1.0
    assert float(out.confidence.min()) >= 0.0 and float(out.confidence.max()) <= 1.0
    assert float(out.attention.min()) >= 0.0
    torch.testing.assert_close(out.attention.sum(dim=1), torch.ones(b, 1, h, w), rtol=0, atol=1e-5)


def test_depth_stays_in_range_with_extreme_weights():
    """The bounded parameterisation holds whatever the weights: blow them up and check the range."""
    torch.manual_seed(1)
    model = create_model("daifnet_tiny").eval()
    with torch.no_grad():
        for p in model.parameters():
            p.mul_(30.0)
    stack, focus, k, dr = _inputs(2, 4, 16, 16, seed=3)
    with torch.no_grad():
        out = model(stack, focus, k, dr)
    assert torch.isfinite(out.depth).all()
    for i in range(2):
        assert float(out.depth[i].min()) >= float(dr[i, 0]) * (1 - 1e-5)
        assert float(out.depth[i].max()) <= float(dr[i, 1]) * (1 + 1e-5)
    assert float(out.aif.min()) >= 0 and float(out.aif.max()) <= 1


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_order_invariance(dtype):
    torch.manual_seed(2)
    model = create_model("daifnet_tiny").to(dtype).eval()
    stack, focus, k, dr = _inputs(2, 5, 20, 24, seed=4, dtype=dtype)
    perm = torch.tensor([3, 0, 4, 1, 2])
    with torch.no_grad():
        a = model(stack, focus, k, dr)
        b = model(stack[:, perm], focus[:, perm], k[:, perm], dr)
    tol = 1e-10 if dtype == torch.float64 else 1e-5
    torch.testing.assert_close(a.depth, b.depth, rtol=tol, atol=tol)
    torch.testing.assert_close(a.aif, b.aif, rtol=tol, atol=tol)
    torch.testing.assert_close(a.confidence, b.confidence, rtol=tol, atol=tol)
    # Attention follows the images it belongs to.
    torch.testing.assert_close(a.attention[:, perm], b.attention, rtol=tol, atol=tol)


def test_order_matters_only_through_focus():
    """Sanity check that the invariance test is not vacuous: shuffling images but not focus changes the output."""
    torch.manual_seed(2)
    model = create_model("daifnet_tiny").double().eval()
    stack, focus, k, dr = _inputs(1, 4, 16, 16, seed=5, dtype=torch.float64)
    perm = torch.tensor([1, 0, 3, 2])
    with torch.no_grad():
        a = model(stack, focus, k, dr).depth
        b = model(stack[:, perm], focus, k, dr).depth
    assert (a - b).abs().max() > 1e-6


@pytest.mark.parametrize("n", list(range(1, 11)))
def test_any_stack_length(tiny, n):
    stack, focus, k, dr = _inputs(1, n, 12, 16, seed=n)
    with torch.no_grad():
        out = tiny(stack, focus, k, dr)
    assert out.depth.shape == (1, 1, 12, 16)
    assert out.attention.shape == (1, n, 1, 12, 16)
    assert torch.isfinite(out.depth).all() and torch.isfinite(out.aif).all()
    torch.testing.assert_close(out.attention.sum(1), torch.ones(1, 1, 12, 16), rtol=0, atol=1e-5)
    if n == 1:
        assert float(out.confidence.abs().max()) == 0.0  # one image says nothing about focus
    assert float(out.confidence.min()) >= 0 and float(out.confidence.max()) <= 1


@pytest.mark.parametrize("size", [(17, 23), (5, 7), (1, 1), (3, 40), (33, 16)])
def test_odd_sizes_give_outputs_of_input_size(tiny, size):
    h, w = size
    stack, focus, k, dr = _inputs(2, 3, h, w, seed=h * w)
    with torch.no_grad():
        out = tiny(stack, focus, k, dr)
    assert out.depth.shape == (2, 1, h, w)
    assert out.aif.shape == (2, 3, h, w)
    assert out.confidence.shape == (2, 1, h, w)
    assert out.attention.shape == (2, 3, 1, h, w)
    assert torch.isfinite(out.depth).all()


def test_paper_width_model_on_odd_size():
    torch.manual_seed(0)
    model = create_model("daifnet").eval()  # 4 levels: pads to a multiple of 16
    stack, focus, k, dr = _inputs(1, 3, 17, 23)
    with torch.no_grad():
        out = model(stack, focus, k, dr)
    assert out.depth.shape == (1, 1, 17, 23)
    assert out.aif.shape == (1, 3, 17, 23)


def test_bad_shapes_raise_defocus_error(tiny):
    stack, focus, k, dr = _inputs(2, 4, 16, 16)
    bad_calls = {
        "4-d stack": (stack[0], focus, k, dr),
        "1 channel": (stack[:, :, :1], focus, k, dr),
        "4 channels": (torch.cat([stack, stack[:, :, :1]], 2), focus, k, dr),
        "focus count": (stack, focus[:, :3], k, dr),
        "focus batch": (stack, focus[:1], k, dr),
        "K count": (stack, focus, k[:, :3], dr),
        "range shape": (stack, focus, k, dr[:, :1]),
        "range batch": (stack, focus, k, dr[:1]),
        "range order": (stack, focus, k, dr.flip(1)),
        "range sign": (stack, focus, k, torch.tensor([[-1.0, 2.0], [0.5, 4.0]])),
    }
    for what, args in bad_calls.items():
        with pytest.raises(DefocusError):
            tiny(*args)
        # and the static checker agrees
        with pytest.raises(DefocusError):
            DAIFNet.check_inputs(*args)


def test_camera_gain_as_the_model_takes_it():
    focus = torch.tensor([[1.0, 1.5, 2.5, 4.0, 6.0]])
    k = NYU.camera.blur_per_dioptre(focus)
    assert k.shape == (1, 5) and k.dtype == torch.float32
    # K = A·s/p with s = f·fd/(fd − f)
    f, n, p = 0.05, 8.0, 12e-6
    expected = torch.tensor([(f / n) * (f * fd / (fd - f)) / p for fd in [1.0, 1.5, 2.5, 4.0, 6.0]])
    torch.testing.assert_close(k[0], expected.float(), rtol=1e-5, atol=1e-4)


# ---------------------------------------------------------------------------------------- focus measure
def _blur(img: torch.Tensor, sigma: float) -> torch.Tensor:
    if sigma <= 0:
        return img.clone()
    r = max(1, math.ceil(3 * sigma))
    x = torch.arange(-r, r + 1, dtype=img.dtype)
    kern = torch.exp(-(x**2) / (2 * sigma**2))
    kern = kern / kern.sum()
    c = img.shape[0]
    out = F.pad(img[None], (r, r, r, r), mode="replicate")
    out = F.conv2d(out, kern.view(1, 1, 1, -1).expand(c, 1, 1, -1), groups=c)
    out = F.conv2d(out, kern.view(1, 1, -1, 1).expand(c, 1, -1, 1), groups=c)
    return out[0]


def test_focus_measure_features_shape_and_zero_mean():
    stack, *_ = _inputs(2, 4, 15, 19)
    feats = focus_measure_features(stack)
    assert feats.shape == (2, 4, 2, 15, 19)
    feats3 = focus_measure_features(stack, windows=(3, 5, 9))
    assert feats3.shape == (2, 4, 3, 15, 19)
    torch.testing.assert_close(feats.mean(dim=1), torch.zeros(2, 2, 15, 19), rtol=0, atol=1e-4)


def test_focus_measure_highest_for_sharpest_image():
    g = torch.Generator().manual_seed(7)
    sharp = torch.rand(3, 32, 32, generator=g)
    sigmas = [2.0, 0.0, 1.0, 3.0, 0.6]  # the sharp image sits at index 1, the next sharpest at 4
    stack = torch.stack([_blur(sharp, s) for s in sigmas])[None]
    feats = focus_measure_features(stack)
    inner = feats[0, :, :, 8:-8, 8:-8]  # away from the borders
    for win in range(feats.shape[2]):
        best = inner[:, win].argmax(dim=0)
        assert (best == 1).float().mean() > 0.99
        # and the mean sharpness ranks the images by blur
        order = inner[:, win].mean(dim=(1, 2)).argsort(descending=True).tolist()
        assert order == [1, 4, 2, 0, 3]


# -------------------------------------------------------------------------------------------- gradients
def test_gradient_reaches_every_parameter():
    torch.manual_seed(0)
    model = create_model("daifnet_tiny").train()
    stack, focus, k, dr = _inputs(2, 4, 16, 16, seed=9)
    out = model(stack, focus, k, dr)
    target_depth = torch.full_like(out.depth, 2.0)
    loss = (out.depth - target_depth).abs().mean() + (out.aif - stack[:, 0]).abs().mean()
    loss.backward()
    missing = [name for name, p in model.named_parameters() if p.grad is None]
    assert missing == []
    dead = [name for name, p in model.named_parameters() if not torch.isfinite(p.grad).all() or p.grad.abs().sum() == 0]
    assert dead == []


# ------------------------------------------------------------------------------------------- classical prior
def _scene_stack(noise: float = 0.0):
    from defocus.data.procedural import SCENE_DEPTH_RANGE_M, make_scene
    from defocus.data.synthesis import SynthesisVariant, synthesize_variant

    rgb, depth = make_scene(11, 40, 40, SCENE_DEPTH_RANGE_M["nyuv2"])
    fd = torch.tensor([NYU.focus_distances_m])
    stack = synthesize_variant(rgb[None], depth[None], fd, NYU.camera, SynthesisVariant.of(noise_std=noise), seed=2)
    return stack, fd, NYU.camera.blur_per_dioptre(fd), torch.tensor([NYU.depth_range_m])


def test_auto_prior_prefilter_follows_the_stack_noise():
    torch.manual_seed(0)
    auto = create_model("daifnet_tiny", prior_presmooth="auto").eval()
    fixed = {s: create_model("daifnet_tiny", prior_presmooth=s).eval() for s in (0.0, 1.0)}
    for m in fixed.values():
        m.load_state_dict(auto.state_dict())
    clean, noisy = _scene_stack(0.0), _scene_stack(0.01)
    with torch.no_grad():
        torch.testing.assert_close(auto(*clean).depth, fixed[0.0](*clean).depth)
        torch.testing.assert_close(auto(*noisy).depth, fixed[1.0](*noisy).depth)
        assert not torch.equal(fixed[0.0](*noisy).depth, fixed[1.0](*noisy).depth)
        # a batch mixing both gets each its own pre-filter
        both = [torch.cat([a, b]) for a, b in zip(clean, noisy)]
        out = auto(*both).depth
    torch.testing.assert_close(out[1:], fixed[1.0](*noisy).depth)
    torch.testing.assert_close(out[:1], fixed[0.0](*clean).depth)


def test_ablation_without_classical_prior(monkeypatch):
    import defocus.models.daifnet as daifnet

    torch.manual_seed(0)
    model = create_model("daifnet_tiny", classical_prior=False).eval()
    with_prior = create_model("daifnet_tiny").eval()
    with_prior.load_state_dict(model.state_dict())
    inputs = _scene_stack()
    with torch.no_grad():
        ref = with_prior(*inputs)

    def boom(*a, **k):
        raise AssertionError("the ablation must not compute the classical estimate")

    monkeypatch.setattr(daifnet, "dff_core", boom)  # the prior's tensor path (classical.dff_core)
    with torch.no_grad():
        out = model(*inputs)
    assert out.depth.shape == ref.depth.shape and torch.isfinite(out.depth).all()
    assert not torch.allclose(out.depth, ref.depth)
    # without the prior the depth is the soft arg-max plus the correction: changing the bias of the gate changes
    # nothing (the gate is off)
    with torch.no_grad():
        model.stack_head.bias[4] = -5.0
        torch.testing.assert_close(model(*inputs).depth, out.depth)


def test_cue_fill_replaces_only_cueless_pixels_in_eval_mode(monkeypatch):
    torch.manual_seed(0)
    plain = create_model("daifnet_tiny").eval()
    filled = create_model("daifnet_tiny", cue_fill_threshold=0.5).eval()
    filled.load_state_dict(plain.state_dict())
    stack, fd, k, dr = _scene_stack()
    conf = torch.ones(1, 1, 40, 40)
    conf[..., 10:30, 12:28] = 0.0  # a region without any focus cue
    for m in (plain, filled):
        original = m._classical_prior

        def fake(*a, original=original):
            inv, _ = original(*a)
            return inv, conf

        monkeypatch.setattr(m, "_classical_prior", fake)
    with torch.no_grad():
        a, b = plain(stack, fd, k, dr), filled(stack, fd, k, dr)
    cue = conf[0, 0] > 0
    torch.testing.assert_close(b.inv_depth[0, 0][cue], a.inv_depth[0, 0][cue])
    assert not torch.allclose(b.inv_depth[0, 0][~cue], a.inv_depth[0, 0][~cue])
    # filled from the neighbours: within their range, and smoother than the network's guess
    inner = b.inv_depth[0, 0, 14:26, 16:24]
    ring = a.inv_depth[0, 0][cue]
    assert float(inner.min()) >= float(ring.min()) - 1e-5 and float(inner.max()) <= float(ring.max()) + 1e-5
    torch.testing.assert_close(b.depth, 1.0 / b.inv_depth)
    filled.train()
    with torch.no_grad():
        torch.testing.assert_close(filled(stack, fd, k, dr).inv_depth, plain.train()(stack, fd, k, dr).inv_depth)


def test_the_prior_reaches_the_loss_in_training_mode_only():
    torch.manual_seed(0)
    model = create_model("daifnet_tiny")
    stack, fd, k, dr = _scene_stack()
    with torch.no_grad():
        out = model.train()(stack, fd, k, dr)
        inv_near, inv_far = (1.0 / dr[:, 0]).view(-1, 1, 1, 1), (1.0 / dr[:, 1]).view(-1, 1, 1, 1)
        prior, conf = model._classical_prior(stack, fd, inv_near, inv_far)
    torch.testing.assert_close(out.prior_inv_depth, prior)
    torch.testing.assert_close(out.prior_cue, (conf / (1 - 1 / 5)).clamp(0, 1))
    evaluated = model.eval()(stack, fd, k, dr)
    assert evaluated.prior_inv_depth is None and evaluated.prior_cue is None
    ablation = create_model("daifnet_tiny", classical_prior=False).train()
    assert ablation(stack, fd, k, dr).prior_inv_depth is None
