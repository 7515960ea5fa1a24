"""Tests of the edge-aware filters (kornia checklist: smoke, shapes, errors, values against a reference, float64
gradcheck) and of the point-cloud writer."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from defocus.data.codecs import read_ply_points, write_ply_points
from defocus.errors import DefocusError
from defocus.filters import box_filter, confidence_fill, guided_filter, guided_upsample


def _reference_box(x: torch.Tensor, r: int) -> torch.Tensor:
    out = torch.zeros_like(x)
    h, w = x.shape[-2:]
    for i in range(h):
        for j in range(w):
            out[..., i, j] = x[..., max(0, i - r) : i + r + 1, max(0, j - r) : j + r + 1].mean(dim=(-1, -2))
    return out


@pytest.mark.parametrize("r", [0, 1, 3, 20])
def test_box_filter_matches_explicit_window_means(r):
    x = torch.rand(2, 3, 9, 11, dtype=torch.float64)
    torch.testing.assert_close(box_filter(x, r), _reference_box(x, r))


def test_box_filter_errors_and_gradcheck():
    with pytest.raises(DefocusError):
        box_filter(torch.rand(3, 4, 4), 1)
    with pytest.raises(DefocusError, match=">= 0"):
        box_filter(torch.rand(1, 1, 4, 4), -1)
    x = torch.rand(1, 1, 5, 6, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda t: box_filter(t, 2), (x,))


def test_guided_filter_keeps_edges_that_the_guide_has():
    # A step in the guide and in the source: the guided filter keeps the step, a box filter smears it.
    guide = torch.zeros(1, 1, 20, 20)
    guide[..., 10:] = 1.0
    src = guide * 2.0 + 0.5 + 0.01 * torch.randn(1, 1, 20, 20, generator=torch.Generator().manual_seed(0))
    out = guided_filter(guide, src, radius=4, eps=1e-4)
    assert out.shape == src.shape
    assert float((out[..., 9] - 0.5).abs().max()) < 0.05 and float((out[..., 10] - 2.5).abs().max()) < 0.05
    assert float((box_filter(src, 4)[..., 9] - 0.5).abs().max()) > 0.5
    # eps large: plain smoothing (a -> 0, output -> local mean).
    torch.testing.assert_close(guided_filter(guide, src, 4, 1e6), box_filter(box_filter(src, 4), 4), atol=1e-4,
                               rtol=0)
    g64 = torch.rand(1, 1, 6, 6, dtype=torch.float64)
    s64 = torch.rand(1, 1, 6, 6, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda s: guided_filter(g64, s, 1, 1e-2), (s64,))


def test_guided_upsample_puts_depth_edges_on_image_edges():
    # Full-resolution guide with a vertical edge at column 37 (not on the low-resolution grid); the low-resolution
    # depth has the same edge, blurred by downsampling. Guided upsampling puts it back on column 37.
    H, W = 48, 64
    guide_hi = torch.zeros(1, 1, H, W)
    guide_hi[..., 37:] = 1.0
    depth_hi = torch.where(guide_hi > 0.5, 3.0, 1.0)
    lo = torch.nn.functional.interpolate
    guide_lo = lo(guide_hi, size=(12, 16), mode="area")
    depth_lo = lo(depth_hi, size=(12, 16), mode="area")
    up = guided_upsample(depth_lo, guide_lo, guide_hi, radius=2, eps=1e-4)
    plain = lo(depth_lo, size=(H, W), mode="bilinear", align_corners=False)
    err_guided = float((up - depth_hi).abs().mean())
    err_plain = float((plain - depth_hi).abs().mean())
    assert up.shape == (1, 1, H, W)
    assert err_guided < 0.5 * err_plain
    with pytest.raises(DefocusError, match="full-resolution guide"):
        guided_upsample(depth_lo, guide_lo, guide_hi[0])


def test_confidence_fill_fills_only_where_unsure():
    g = torch.Generator().manual_seed(1)
    guide = torch.zeros(1, 1, 32, 32)
    guide[..., 16:] = 1.0
    truth = torch.where(guide > 0.5, 0.25, 1.0)  # two flat regions
    values = truth + 0.5 * torch.randn(1, 1, 32, 32, generator=g)  # noise where the cue is missing
    conf = torch.zeros(1, 1, 32, 32)
    conf[..., ::4, ::4] = 1.0  # a sparse set of confident pixels
    values = torch.where(conf > 0, truth, values)
    out = confidence_fill(values, conf, guide, threshold=0.5, radii=(3, 8))
    torch.testing.assert_close(out[conf > 0], truth[conf > 0])  # confident pixels keep their value
    assert float((out - truth).abs().mean()) < 0.2 * float((values - truth).abs().mean())
    # Nothing confident: the input comes back unchanged.
    assert torch.equal(confidence_fill(values, torch.zeros_like(conf), guide), values)


def test_ply_roundtrip(tmp_path):
    rng = np.random.default_rng(0)
    xyz = rng.normal(size=(50, 3)).astype(np.float32)
    rgb = rng.integers(0, 256, (50, 3), dtype=np.uint8)
    write_ply_points(tmp_path / "p.ply", xyz, rgb)
    head = (tmp_path / "p.ply").read_bytes()[:200]
    assert head.startswith(b"ply\nformat binary_little_endian 1.0\n") and b"element vertex 50\n" in head
    xyz2, rgb2 = read_ply_points(tmp_path / "p.ply")
    np.testing.assert_array_equal(xyz2, xyz)
    np.testing.assert_array_equal(rgb2, rgb)
    with pytest.raises(DefocusError, match="points"):
        write_ply_points(tmp_path / "q.ply", xyz, rgb[:10])
