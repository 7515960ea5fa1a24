"""Tests for defocus.data.synthesis: the `paper` and `realistic` synthesis protocols."""

from __future__ import annotations

import pytest
import torch

from defocus.data.procedural import make_scene
from defocus.data.synthesis import PROTOCOLS, REALISTIC_NOISE_STD, synthesize_stack
from defocus.errors import DefocusError
from defocus.optics.camera import PRESETS
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
