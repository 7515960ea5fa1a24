"""Tests for defocus.data.synthesis: the `paper` and `realistic` synthesis protocols and the protocol registry."""

from __future__ import annotations

import pytest
import torch

from defocus.data.procedural import make_scene
from defocus.data.synthesis import (
    PROTOCOLS,
    REALISTIC_NOISE_STD,
    SYNTHESIS_LEVEL_RATIO,
    Protocol,
    get_protocol,
    protocol_names,
    register_protocol,
    stack_from_scene,
    synthesis_forward_model,
    synthesize_stack,
    unregister_protocol,
)
from defocus.errors import DefocusError, InputError
from defocus.optics.camera import PRESETS
from defocus.optics.forward import ForwardSpec
from defocus.optics.sensor import SensorModel
from defocus.optics.render import render_exact, render_occlusion

PRESET = PRESETS["nyuv2"]
CAM = PRESET.camera
FOCUS = torch.tensor(PRESET.focus_distances_m)


@pytest.fixture(scope="module")
def scene():
    rgb, depth = make_scene(3, 40, 56, (0.5, 8.0))
    return rgb, depth


def _is_8bit(x: torch.Tensor) -> bool:
    v = x * 255.0
    return bool(((v - v.round()).abs() < 1e-4).all()) and float(x.min()) >= 0.0 and float(x.max()) <= 1.0


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_shapes_and_8bit(scene, protocol):
    rgb, depth = scene
    out = synthesize_stack(rgb, depth, FOCUS, CAM, protocol)
    assert out.shape == (5, 3, 40, 56) and out.dtype == torch.float32
    assert _is_8bit(out)
    batched = synthesize_stack(rgb[None].expand(2, -1, -1, -1), depth[None].expand(2, -1, -1, -1), FOCUS, CAM, protocol)
    assert batched.shape == (2, 5, 3, 40, 56)
    torch.testing.assert_close(batched[0], out)
    if protocol == "paper":  # no noise: both batch entries alike
        torch.testing.assert_close(batched[1], out)


def test_paper_matches_exact_renderer(scene):
    rgb, depth = scene
    out = synthesize_stack(rgb, depth, FOCUS, CAM, "paper", quantize=False)
    assert not _is_8bit(out)
    exact = render_exact(rgb[None], depth[None], FOCUS[None], CAM, "gaussian")[0]
    diff = (out - exact).abs() * 255.0
    assert diff.mean().item() < 0.1  # a small fraction of an 8-bit level
    assert torch.quantile(diff.flatten(), 0.99).item() < 0.5
    # quantised = floor(x·255 + 0.5)/255 of the unquantised values (round half up)
    q = synthesize_stack(rgb, depth, FOCUS, CAM, "paper")
    torch.testing.assert_close(q, torch.floor(out.clamp(0, 1) * 255.0 + 0.5) / 255.0, atol=1e-7, rtol=0)


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_deterministic(scene, protocol):
    rgb, depth = scene
    a = synthesize_stack(rgb, depth, FOCUS, CAM, protocol, seed=4)
    b = synthesize_stack(rgb, depth, FOCUS, CAM, protocol, seed=4)
    assert torch.equal(a, b)


def test_paper_has_no_noise(scene):
    rgb, depth = scene
    a = synthesize_stack(rgb, depth, FOCUS, CAM, "paper", seed=1)
    b = synthesize_stack(rgb, depth, FOCUS, CAM, "paper", seed=2)
    assert torch.equal(a, b)


def test_realistic_noise_from_seed(scene):
    rgb, depth = scene
    a = synthesize_stack(rgb, depth, FOCUS, CAM, "realistic", seed=1, quantize=False)
    b = synthesize_stack(rgb, depth, FOCUS, CAM, "realistic", seed=2, quantize=False)
    assert not torch.equal(a, b)
    # the difference of two independent noise draws has std √2·σ (few pixels are clipped at 0 or 1)
    assert (a - b).std().item() == pytest.approx(REALISTIC_NOISE_STD * 2**0.5, rel=0.1)
    # the noise-free part is the occlusion renderer with the disk PSF in linear light
    clean = render_occlusion(rgb[None], depth[None], FOCUS[None], CAM, "disk", linear_light=True)[0]
    inside = (clean > 0.05) & (clean < 0.95)
    resid = (a - clean)[inside]
    assert resid.mean().abs().item() < 1e-3
    assert resid.std().item() == pytest.approx(REALISTIC_NOISE_STD, rel=0.1)
    assert REALISTIC_NOISE_STD == 0.005


def test_inputs_not_modified(scene):
    rgb, depth = scene
    rgb0, depth0 = rgb.clone(), depth.clone()
    for protocol in PROTOCOLS:
        synthesize_stack(rgb, depth, FOCUS, CAM, protocol)
    assert torch.equal(rgb, rgb0) and torch.equal(depth, depth0)


def test_errors(scene):
    rgb, depth = scene
    with pytest.raises(DefocusError, match="unknown protocol 'nice'") as exc:
        synthesize_stack(rgb, depth, FOCUS, CAM, "nice")
    assert "paper" in str(exc.value) and "realistic" in str(exc.value)
    with pytest.raises(DefocusError, match="focal length"):
        synthesize_stack(rgb, depth, torch.tensor([0.01, 1.0]), CAM, "paper")
    with pytest.raises(DefocusError, match="finite"):
        synthesize_stack(rgb, depth, torch.tensor([float("nan")]), CAM, "paper")
    with pytest.raises(DefocusError, match="depth"):
        synthesize_stack(rgb, depth[:, :-1], FOCUS, CAM, "paper")


# ------------------------------------------------------------------------------------------------- registry
def test_registry_lists_paper_and_realistic():
    assert protocol_names()[:2] == ("paper", "realistic") and list(PROTOCOLS) == list(protocol_names())
    paper, realistic = get_protocol("paper"), get_protocol("realistic")
    assert paper.synthesis == ForwardSpec("gaussian", "srgb", "layered", level_ratio=SYNTHESIS_LEVEL_RATIO)
    assert paper.sensor == SensorModel() and paper.loss == ForwardSpec("gaussian", "srgb")
    assert realistic.synthesis == ForwardSpec("disk", "linear", "occlusion")
    assert realistic.sensor == SensorModel(noise_std=REALISTIC_NOISE_STD) and realistic.loss == ForwardSpec("disk",
                                                                                                             "linear")
    assert synthesis_forward_model("realistic", CAM).spec == realistic.synthesis
    assert get_protocol(paper) is paper
    with pytest.raises(InputError, match="unknown protocol 'studio'; choose one of paper, realistic") as exc:
        get_protocol("studio")
    assert exc.value.field == "protocol"
    with pytest.raises(InputError, match="already registered"):
        register_protocol(Protocol("paper", ForwardSpec()))
    for bad in ("", " x", "variant"):
        with pytest.raises(InputError):
            Protocol(bad, ForwardSpec())
    with pytest.raises(InputError, match="layered"):
        Protocol("toy", ForwardSpec(), loss=ForwardSpec(method="occlusion"))


def test_a_registered_toy_protocol_renders_through_stack_from_scene(scene):
    """A protocol added to the registry is known to synthesis (and everything reading the registry), with its own
    forward model and sensor; removing it forgets it."""
    rgb, depth = scene
    toy = Protocol("toy", ForwardSpec("gennorm", "linear", "layered", blur_scale=1.2),
                   SensorModel(noise_std=0.02, bits=4), description="a test protocol")
    register_protocol(toy)
    try:
        assert "toy" in protocol_names() and get_protocol("toy") is toy
        assert toy.loss == ForwardSpec("gennorm", "linear", blur_scale=1.2)  # its lens on the loss's renderer
        st = stack_from_scene(rgb, depth, FOCUS.tolist(), CAM, "toy", seed=5)
        assert st.images.shape == (5, 3, 40, 56)
        levels = st.images * 15
        assert torch.equal(levels, levels.round())  # 4-bit
        clean = toy.forward_model(CAM)(rgb[None], depth[None], FOCUS[None])[0]
        assert float((st.images - clean).std()) == pytest.approx((0.02**2 + (1 / 15) ** 2 / 12) ** 0.5, rel=0.15)
        again = stack_from_scene(rgb, depth, FOCUS.tolist(), CAM, "toy", seed=5)
        assert torch.equal(st.images, again.images)
        # its noise-free rendering is the toy forward model, not paper's
        assert not torch.equal(synthesize_stack(rgb, depth, FOCUS, CAM, "toy", quantize=False),
                               synthesize_stack(rgb, depth, FOCUS, CAM, "paper", quantize=False))
        from defocus.data.datasets.nyuv2 import PROTOCOLS as NYU_PROTOCOLS
        from defocus.train.config import TrainConfig, loss_spec_for

        assert "toy" in NYU_PROTOCOLS
        assert TrainConfig().protocol_loss["toy"] == {"psf": "gennorm", "light": "linear", "blur_scale": 1.2}
        assert loss_spec_for(TrainConfig(), "toy") == toy.loss
    finally:
        assert unregister_protocol("toy") is toy
    assert "toy" not in PROTOCOLS and "toy" not in protocol_names()
    with pytest.raises(InputError, match="unknown protocol 'toy'"):
        stack_from_scene(rgb, depth, FOCUS.tolist(), CAM, "toy")


def test_a_protocol_object_renders_without_registering(scene):
    rgb, depth = scene
    p = Protocol("adhoc", ForwardSpec("disk", "srgb", "layered", level_ratio=SYNTHESIS_LEVEL_RATIO))
    out = synthesize_stack(rgb, depth, FOCUS, CAM, p)
    assert out.shape == (5, 3, 40, 56) and _is_8bit(out) and "adhoc" not in PROTOCOLS
