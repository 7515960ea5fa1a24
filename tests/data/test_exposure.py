"""Exposure normalisation across frames (defocus.data.exposure): it recovers known gains, leaves equal exposures
untouched, ignores clipped pixels, and the pipeline applies it and says so."""

from __future__ import annotations

import pytest
import torch

from defocus.color import linear_to_srgb, srgb_to_linear
from defocus.data.exposure import MIN_GAIN_CHANGE, exposure_gains, normalise_exposure
from defocus.data.procedural import SCENE_DEPTH_RANGE_M, make_scene
from defocus.data.stack import FocalStack
from defocus.data.synthesis import synthesize_stack
from defocus.errors import ShapeError
from defocus.models.classical import ClassicalEstimator
from defocus.optics.camera import get_preset
from defocus.predict import PredictOptions, predict_stack

NYU = get_preset("nyuv2")


def _stack(size=96):
    aif, depth = make_scene(1_000_901, size, size, SCENE_DEPTH_RANGE_M["nyuv2"])
    fd = torch.tensor(NYU.focus_distances_m)
    return synthesize_stack(aif, depth, fd, NYU.camera, "paper", quantize=False), fd


def _expose(frames, gains):
    return linear_to_srgb((srgb_to_linear(frames) * torch.tensor(gains)[:, None, None, None]).clamp(0, 1))


def test_recovers_known_gains_up_to_the_common_scale():
    frames, _ = _stack()
    gains = [1.0, 0.8, 1.15, 0.9, 1.05]
    exposed = _expose(frames, gains)
    measured = exposure_gains(exposed)
    product = measured * torch.tensor(gains)  # the correction undoes the gain, up to one factor for all frames
    assert float(product.max() / product.min()) < 1.02
    assert float(torch.exp(torch.log(measured).mean())) == pytest.approx(1.0, abs=1e-5)  # geometric mean kept
    out, _ = normalise_exposure(exposed)
    err_before = float((srgb_to_linear(exposed) - srgb_to_linear(frames)).abs().mean())
    err_after = float((srgb_to_linear(out) / float(product.mean()) - srgb_to_linear(frames)).abs().mean())
    assert err_after < 0.25 * err_before


def test_equal_exposures_are_returned_untouched():
    frames, _ = _stack()
    out, gains = normalise_exposure(frames)
    assert out is frames
    assert float((gains - 1).abs().max()) <= MIN_GAIN_CHANGE
    single, g1 = normalise_exposure(frames[:1])
    assert single is frames[:1] or torch.equal(single, frames[:1])
    assert g1.tolist() == [1.0]


def test_in_place_overwrites_and_copy_does_not():
    frames, _ = _stack()
    exposed = _expose(frames, [1.0, 0.7, 1.0, 1.0, 1.0])
    keep = exposed.clone()
    out, _ = normalise_exposure(exposed)
    assert out is not exposed and torch.equal(exposed, keep)
    out2, _ = normalise_exposure(exposed, in_place=True)
    assert out2 is exposed and not torch.equal(exposed, keep)


def test_clipped_pixels_do_not_count():
    frames, _ = _stack()
    exposed = _expose(frames, [1.0, 1.0, 1.0, 1.0, 1.0]).clone()
    exposed[1, :, :40] = 1.0  # a blown-out band in one frame only
    assert float((exposure_gains(exposed) - 1).abs().max()) < MIN_GAIN_CHANGE


def test_shape_errors():
    with pytest.raises(ShapeError):
        exposure_gains(torch.rand(3, 2, 8, 8))


def test_the_pipeline_normalises_and_says_so():
    frames, fd = _stack()
    exposed = _expose(frames, [1.0, 0.75, 1.0, 1.2, 1.0])
    st = FocalStack(images=exposed, focus_distances_m=fd, camera=NYU.camera, name="exposed")
    est = ClassicalEstimator()
    on = predict_stack(est, st, PredictOptions(max_size=96))
    off = predict_stack(est, st, PredictOptions(max_size=96, exposure=False))
    assert any("exposures differ" in w for w in on.warnings)
    assert not any("exposures differ" in w for w in off.warnings) and off.exposure_gains is None
    assert on.exposure_gains.shape == (5,)
    assert torch.equal(st.images, exposed)  # the caller's stack is not changed
    clean = predict_stack(est, FocalStack(images=frames, focus_distances_m=fd, camera=NYU.camera, name="c"),
                          PredictOptions(max_size=96))
    err_on = float((on.inv_depth - clean.inv_depth).abs().mean())
    err_off = float((off.inv_depth - clean.inv_depth).abs().mean())
    assert err_on < err_off
