"""Tests of the one result type and of the factory that puts every estimator behind one name."""

from __future__ import annotations

import pytest
import torch

from defocus.errors import DefocusError
from defocus.models import ClassicalEstimator, Prediction, create_model, list_models
from defocus.models.daifnet import DAIFNet
from defocus.models.factory import DEFAULT_MODEL, PRETRAINED_WEIGHTS, shipped_weights_path
from defocus.optics.camera import get_preset

NYU = get_preset("nyuv2")


def _pred(b=2, h=4, w=5):
    depth = 1.0 + torch.rand(b, 1, h, w)
    return Prediction(depth=depth, aif=torch.rand(b, 3, h, w), confidence=torch.rand(b, 1, h, w))


def test_prediction_fills_inverse_depth_and_indexes():
    p = _pred()
    torch.testing.assert_close(p.inv_depth, 1.0 / p.depth)
    one = p[1]
    assert one.batch_size == 1 and torch.equal(one.depth, p.depth[1:2])
    assert one.depth_map.shape == (4, 5) and one.aif_image.shape == (3, 4, 5) and one.confidence_map.shape == (4, 5)
    with pytest.raises(ValueError, match="index one first"):
        p.depth_map
    d = Prediction(depth=p.depth.requires_grad_(), aif=p.aif, confidence=p.confidence).detach()
    assert not d.depth.requires_grad


def test_prediction_shape_errors():
    with pytest.raises(DefocusError, match="aif must have shape"):
        Prediction(depth=torch.ones(1, 1, 4, 4), aif=torch.ones(1, 3, 4, 5), confidence=torch.ones(1, 1, 4, 4))
    with pytest.raises(DefocusError, match="depth must have shape"):
        Prediction(depth=torch.ones(1, 4, 4), aif=torch.ones(1, 3, 4, 4), confidence=torch.ones(1, 1, 4, 4))
    with pytest.raises(DefocusError, match="attention"):
        Prediction(depth=torch.ones(1, 1, 4, 4), aif=torch.ones(1, 3, 4, 4), confidence=torch.ones(1, 1, 4, 4),
                   attention=torch.ones(1, 5, 1, 4, 3))


def test_factory_builds_network_and_classical_with_one_call_and_result_type():
    assert "classical" in list_models() and DEFAULT_MODEL in PRETRAINED_WEIGHTS
    g = torch.Generator().manual_seed(0)
    stack = torch.rand(1, 3, 3, 20, 24, generator=g)
    focus = torch.tensor([[1.0, 2.0, 4.0]])
    k = NYU.camera.blur_per_dioptre(focus)
    dr = torch.tensor([[0.1, 10.0]])
    for name, kind in (("daifnet_tiny", DAIFNet), ("classical", ClassicalEstimator)):
        model = create_model(name).eval()
        assert isinstance(model, kind)
        with torch.no_grad():
            out = model(stack, focus, k, dr)
        assert isinstance(out, Prediction) and out.depth.shape == (1, 1, 20, 24)
    assert create_model("classical", window=5).window == 5


def test_factory_pretrained_errors():
    with pytest.raises(DefocusError, match="no shipped weights"):
        create_model("daifnet_tiny", pretrained=True)
    with pytest.raises(DefocusError, match="no config overrides"):
        create_model("daifnet_small", pretrained=True, widths=(4, 8))
    with pytest.raises(DefocusError, match="has no shipped weights"):
        shipped_weights_path("classical")
