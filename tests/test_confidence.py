"""Tests of defocus.confidence: the depth spread, the calibration table (fit, lookup, storage) and the
reliability curve."""

from __future__ import annotations

import pytest
import torch

from defocus.confidence import (SPREAD_EDGES, TEXTURE_EDGES, ConfidenceCalibration, depth_spread, fit_calibration,
                                reliability, texture_snr)
from defocus.errors import InputError, ShapeError


# --------------------------------------------------------------------------------------------- depth_spread
def test_depth_spread_shapes_and_values():
    flat = torch.full((2, 1, 9, 11), 0.5)
    s = depth_spread(flat)
    assert s.shape == flat.shape and float(s.abs().max()) < 1e-6
    # A depth that alternates by a factor e^0.2 between neighbours: std of ln depth 0.1 inside the image.
    checker = (torch.arange(9)[:, None] + torch.arange(11)[None, :]) % 2
    inv = torch.exp(0.2 * checker.float())[None, None]
    s = depth_spread(inv)
    assert abs(float(s[0, 0, 4, 5]) - 0.1) < 0.005
    # A smooth ramp has a small spread; speckle on it a large one, only near the speckle.
    ramp = torch.linspace(0.5, 0.52, 11).expand(9, 11)[None, None].clone()
    assert float(depth_spread(ramp).max()) < 0.01
    ramp[0, 0, 4, 5] = 2.0
    s = depth_spread(ramp)
    assert float(s[0, 0, 4, 5]) > 0.2 and float(s[0, 0, 0, 0]) < 0.01


def test_depth_spread_rejects_bad_shapes():
    with pytest.raises(ShapeError, match="inv_depth"):
        depth_spread(torch.ones(1, 2, 4, 4))


# --------------------------------------------------------------------------------------------- the table
def _rate(conf, tex):
    return conf * ((tex - 1.0) / 4.0).clamp(0.1, 1.0)


def _synthetic(seed: int = 0, n: int = 6, size: int = 32):
    """Predictions whose chance of being within 10 % is their raw confidence where the image is textured
    (τ ≥ 5), less where it is not (a tenth of it at τ ≤ 1.4); flat depth maps (spread 0)."""
    g = torch.Generator().manual_seed(seed)
    confs, invs, texs, gts = [], [], [], []
    for _ in range(n):
        conf = torch.rand(1, 1, size, size, generator=g)
        tex = torch.exp(torch.empty(1, 1, size, size).uniform_(-0.7, 3.4, generator=g))
        rate = _rate(conf, tex)
        right = torch.rand(1, 1, size, size, generator=g) < rate
        gt = torch.full((size, size), 2.0)
        depth = torch.where(right[0, 0], gt * 1.02, gt * 1.5)
        confs.append(conf)
        invs.append((1.0 / depth)[None, None])
        texs.append(tex)
        gts.append(gt)
    return confs, invs, texs, gts


def test_fit_recovers_the_rate_and_is_monotone():
    confs, invs, texs, gts = _synthetic(n=60)
    cal = fit_calibration(confs, invs, texs, gts, confidence_bins=6, source="synthetic")
    table = torch.tensor(cal.table)
    assert table.shape == (len(cal.confidence_edges) - 1, len(SPREAD_EDGES) - 1, len(TEXTURE_EDGES) - 1)
    assert bool((table[1:] >= table[:-1] - 1e-9).all()), "more raw confidence must not lower it"
    assert bool((table[:, :, 1:] >= table[:, :, :-1] - 1e-9).all()), "more texture must not lower it"
    # On fresh data of the same kind the calibration is reliable: in every well-filled bin of the calibrated value,
    # the fraction of pixels within 10 % is about that value.
    c, inv, tex, gts = _synthetic(seed=1, n=20)
    p = torch.cat([cal(ci, vi, ti) for ci, vi, ti in zip(c, inv, tex)])
    right = torch.cat([((1.0 / vi[0, 0] - g).abs() <= 0.1 * g)[None, None] for vi, g in zip(inv, gts)])
    assert p.shape == right.shape and float(p.min()) >= 0.0 and float(p.max()) <= 1.0
    rows = [r for r in reliability(p, right) if r["pixels"] > 500]
    assert len(rows) >= 4 and all(abs(r["predicted"] - r["observed"]) < 0.06 for r in rows), rows
    # Texture matters: textured pixels are trusted more than noise-only ones of the same raw confidence.
    textured, plain = p[torch.cat(tex) > 5], p[torch.cat(tex) < 1.4]
    assert float(textured.mean()) > 2.0 * float(plain.mean())


def test_fit_ignores_unknown_truth_and_needs_some():
    confs, invs, texs, gts = _synthetic(n=2)
    with pytest.raises(InputError, match="ground truth"):
        fit_calibration(confs, invs, texs, [torch.zeros_like(g) for g in gts])
    with pytest.raises(InputError):
        fit_calibration([], [], [], [])


def test_calibration_round_trips_and_validates():
    confs, invs, texs, gts = _synthetic(n=2)
    cal = fit_calibration(confs, invs, texs, gts, confidence_bins=4)
    again = ConfidenceCalibration.from_dict(cal.to_dict())
    assert again == cal
    one = (0.0, 1.0)
    with pytest.raises(InputError, match="table"):
        ConfidenceCalibration(one, one, one, (((0.5,), (0.5,)),))
    with pytest.raises(InputError, match="increase"):
        ConfidenceCalibration((0.0, 0.0), one, one, (((0.5,),),))
    with pytest.raises(InputError, match="probabilities"):
        ConfidenceCalibration(one, one, one, (((1.5,),),))
    with pytest.raises(InputError, match="not a confidence calibration"):
        ConfidenceCalibration.from_dict({"table": []})
    with pytest.raises(ShapeError, match="inv_depth"):
        cal(torch.ones(1, 1, 4, 4), torch.ones(1, 1, 5, 4), torch.ones(1, 1, 4, 4))
    with pytest.raises(ShapeError, match="texture"):
        cal(torch.ones(1, 1, 4, 4), torch.ones(1, 1, 4, 4), torch.ones(1, 1, 4, 5))


def test_lookup_interpolates_between_bin_centres():
    one = (0.0, 10.0)
    cal = ConfidenceCalibration((0.0, 0.5, 1.0), one, (0.0, 2.0, 4.0), (((0.2, 0.4),), ((0.8, 1.0),)))
    inv = torch.ones(1, 1, 1, 3)
    conf = torch.tensor([0.25, 0.5, 0.75]).reshape(1, 1, 1, 3)  # the two centres and half-way
    p = cal(conf, inv, torch.ones_like(inv))  # linear along the raw confidence, in the first texture bin
    assert torch.allclose(p.reshape(-1), torch.tensor([0.2, 0.5, 0.8]), atol=1e-6)
    p = cal(conf, inv, torch.full_like(inv, 2.0))  # the second texture bin (no blend across texture bins)
    assert torch.allclose(p.reshape(-1), torch.tensor([0.4, 0.7, 1.0]), atol=1e-6)


def test_texture_snr_is_about_one_on_noise_and_large_on_texture():
    g = torch.Generator().manual_seed(3)
    sigma = 0.02
    noise = 0.5 + sigma * torch.randn(1, 1, 64, 64, generator=g, dtype=torch.float64)
    tau = texture_snr(noise, sigma)
    assert tau.shape == noise.shape and abs(float(tau.mean()) - 1.0) < 0.1
    dots = noise + 0.2 * ((torch.arange(64)[:, None] + torch.arange(64)) % 2).double()  # fine texture
    assert float(texture_snr(dots, sigma).mean()) > 8.0
    # A smooth ramp (no texture) reads as noise-free at any noise level: the mask cancels planes.
    ramp = torch.linspace(0, 1, 64).expand(1, 1, 64, 64).double()
    assert float(texture_snr(ramp, sigma)[..., 2:-2, 2:-2].max()) < 1e-6
    with pytest.raises(ShapeError, match="grey"):
        texture_snr(torch.ones(1, 3, 8, 8), sigma)


def test_reliability_curve():
    p = torch.tensor([0.05, 0.05, 0.95, 0.95, 0.95, 0.95])
    right = torch.tensor([False, True, True, True, True, False])
    rows = reliability(p, right)
    assert [r["pixels"] for r in rows] == [2, 4]
    assert rows[0]["observed"] == pytest.approx(0.5) and rows[1]["observed"] == pytest.approx(0.75)
    assert rows[1]["predicted"] == pytest.approx(0.95)


# --------------------------------------------------------------------------------------------- in the pipeline
def _procedural_stack():
    from defocus.data.procedural import SCENE_DEPTH_RANGE_M, make_scene
    from defocus.data.stack import FocalStack
    from defocus.data.synthesis import synthesize_stack
    from defocus.optics.camera import get_preset

    nyu = get_preset("nyuv2")
    aif, depth = make_scene(5, 64, 64, SCENE_DEPTH_RANGE_M["nyuv2"])
    fd = torch.tensor(nyu.focus_distances_m)
    images = synthesize_stack(aif[None], depth[None], fd, nyu.camera, "paper")[0]
    return FocalStack(images=images, focus_distances_m=fd, camera=nyu.camera, name="p")


def test_shipped_models_carry_a_calibration_and_the_pipeline_applies_it():
    from defocus.models.classical import ClassicalEstimator
    from defocus.models.factory import create_model
    from defocus.predict import PredictOptions, aif_texture, predict_stack

    net = create_model(pretrained=True)
    assert isinstance(net.confidence_calibration, ConfidenceCalibration)
    assert isinstance(ClassicalEstimator().confidence_calibration, ConfidenceCalibration)
    stack = _procedural_stack()
    for model in (net, ClassicalEstimator()):
        opts = PredictOptions(solve=False, max_size=64)
        cal = predict_stack(model, stack, opts)
        raw = predict_stack(model, stack, PredictOptions(solve=False, max_size=64, confidence="raw"))
        assert cal.confidence_kind == "calibrated" and raw.confidence_kind == "raw"
        expected = model.confidence_calibration(raw.working.confidence, raw.working.inv_depth,
                                                aif_texture(raw.working.aif))
        torch.testing.assert_close(cal.working.confidence, expected)
        torch.testing.assert_close(cal.working.inv_depth, raw.working.inv_depth)
    # A model without a calibration (a fresh network) gives its raw confidence and says so.
    fresh = create_model("daifnet_tiny").eval()
    assert getattr(fresh, "confidence_calibration", None) is None
    assert predict_stack(fresh, stack, PredictOptions(solve=False, max_size=64)).confidence_kind == "raw"
    with pytest.raises(InputError, match="confidence"):
        PredictOptions(confidence="probability")


def test_prediction_json_says_which_confidence(tmp_path):
    import json

    from defocus.cli import main
    from defocus.data.folders import write_stack

    folder = tmp_path / "stack"
    write_stack(_procedural_stack(), folder)
    assert main(["predict", str(folder), "-o", str(tmp_path / "out"), "--no-solve"]) == 0
    info = json.loads((tmp_path / "out" / "stack" / "prediction.json").read_text())
    assert info["confidence"] == "calibrated" and info["options"]["solve"] is False
    assert info["confidence_of"] == "estimate"
    assert main(["predict", str(folder), "-o", str(tmp_path / "raw"),
                 "--confidence", "raw"]) == 0
    info = json.loads((tmp_path / "raw" / "stack" / "prediction.json").read_text())
    assert info["confidence"] == "raw" and info["options"]["solve"] is True
    assert info["confidence_of"] == "estimate"  # a raw confidence is the model's own score, before the solve
    assert main(["predict", str(folder), "-o", str(tmp_path / "default")]) == 0
    info = json.loads((tmp_path / "default" / "stack" / "prediction.json").read_text())
    assert info["confidence"] == "calibrated" and info["confidence_of"] == "solved depth"


def test_the_command_line_states_the_solve_default():
    import argparse

    from defocus.cli import build_parser
    from defocus.predict import PredictOptions

    parser = build_parser()
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction)).choices["predict"]
    text = sub.format_help()
    assert f"(default {PredictOptions().solve_smoothness:g}," in " ".join(text.split())
