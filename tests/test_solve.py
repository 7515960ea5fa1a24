"""The edge-aware global solve (defocus.solve): kornia's checklist — smoke, shapes, errors, values against a dense
reference solve — plus what it is for: planes interpolated from their borders, steps kept at guide edges."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from defocus.errors import InputError, ShapeError
from defocus.solve import EdgeAwareSolve, edge_aware_solve, edge_weights, resolution_smoothness


def _dense_reference(t, c, g, lam, sigma):
    """argmin Σ c (x − t)² + λ Σ w (x_p − x_q)² by a dense numpy solve of the normal equations."""
    h, w = t.shape
    n = h * w
    a = np.diag(c.ravel().astype(np.float64) + 1e-6)
    idx = np.arange(n).reshape(h, w)
    for (p, q) in list(zip(idx[:, :-1].ravel(), idx[:, 1:].ravel())) + list(zip(idx[:-1, :].ravel(), idx[1:, :].ravel())):
        wpq = np.exp(-((g.ravel()[p] - g.ravel()[q]) ** 2) / (2 * sigma * sigma))
        a[p, p] += lam * wpq
        a[q, q] += lam * wpq
        a[p, q] -= lam * wpq
        a[q, p] -= lam * wpq
    b = (c.ravel() + 1e-6) * t.ravel()
    return np.linalg.solve(a, b).reshape(h, w)


def test_smoke_and_shapes():
    t = torch.rand(2, 1, 20, 27)
    out = edge_aware_solve(t, torch.rand(2, 1, 20, 27), torch.rand(2, 3, 20, 27))
    assert out.shape == t.shape and out.dtype == t.dtype and torch.isfinite(out).all()
    module = EdgeAwareSolve(smoothness=0.5)
    assert module(t, torch.ones_like(t), t).shape == t.shape and "smoothness=0.5" in repr(module)


def test_errors():
    t = torch.rand(1, 1, 8, 8)
    with pytest.raises(ShapeError):
        edge_aware_solve(t, torch.rand(1, 1, 8, 9), t)
    with pytest.raises(ShapeError):
        edge_aware_solve(t[0], t[0], t[0])
    with pytest.raises(InputError, match="smoothness"):
        edge_aware_solve(t, t, t, smoothness=-1.0)
    with pytest.raises(InputError, match="edge_sigma"):
        edge_aware_solve(t, t, t, edge_sigma=0.0)
    with pytest.raises(InputError, match="max_size"):
        edge_aware_solve(t, t, t, max_size=4)


def test_matches_a_dense_solve_of_the_normal_equations():
    g = torch.Generator().manual_seed(0)
    t, c, guide = (torch.rand(1, 1, 6, 7, generator=g, dtype=torch.float64) for _ in range(3))
    got = edge_aware_solve(t, c, guide, smoothness=0.7, edge_sigma=0.3, iterations=500, tolerance=1e-12, levels=0)
    ref = _dense_reference(t[0, 0].numpy(), c[0, 0].numpy(), guide[0, 0].numpy(), 0.7, 0.3)
    np.testing.assert_allclose(got[0, 0].numpy(), ref, rtol=0, atol=1e-8)
    # With the pyramid the fixed point is the same.
    got_pyr = edge_aware_solve(t, c, guide, smoothness=0.7, edge_sigma=0.3, iterations=500, tolerance=1e-12,
                               fine_iterations=500)
    np.testing.assert_allclose(got_pyr[0, 0].numpy(), ref, rtol=0, atol=1e-8)


def test_zero_smoothness_returns_the_target_and_full_confidence_keeps_it_close():
    t = torch.rand(1, 1, 16, 16)
    assert torch.equal(edge_aware_solve(t, torch.ones_like(t), t, smoothness=0.0), t)
    flat = torch.full((1, 1, 16, 16), 0.4)
    torch.testing.assert_close(edge_aware_solve(flat, torch.ones_like(flat), torch.rand(1, 1, 16, 16)), flat,
                               atol=1e-5, rtol=0)


def test_a_textureless_plane_is_spanned_between_its_borders():
    """Inverse depth of a slanted plane known only on the image border (no cue inside, flat guide): the inside is
    the plane, not a nearest-neighbour fill and not a constant."""
    h, w = 64, 80
    yy, xx = torch.meshgrid(torch.arange(h, dtype=torch.float64), torch.arange(w, dtype=torch.float64), indexing="ij")
    plane = (0.2 + 0.01 * xx + 0.004 * yy)[None, None]
    conf = torch.zeros_like(plane)
    conf[..., 0, :] = conf[..., -1, :] = conf[..., :, 0] = conf[..., :, -1] = 1e3  # the border is known
    out = edge_aware_solve(plane, conf, torch.zeros_like(plane), smoothness=1.0, iterations=400, tolerance=1e-12,
                           fine_iterations=400)
    assert float((out - plane).abs().max()) < 1e-3 * float(plane.mean())
    # A nearest-neighbour or constant fill would be far off in the middle.
    assert float((plane - plane.mean()).abs().max()) > 0.3


def test_a_depth_step_stays_at_the_guide_edge():
    """Two surfaces with noisy targets, an image edge between them: the step survives the smoothing where the guide
    has the edge, and is smeared without it."""
    g = torch.Generator().manual_seed(1)
    h, w = 40, 40
    truth = torch.full((1, 1, h, w), 0.5)
    truth[..., w // 2 :] = 1.0
    noisy = truth + 0.05 * torch.randn(1, 1, h, w, generator=g)
    conf = torch.full_like(truth, 0.2)
    with_edge = edge_aware_solve(noisy, conf, truth.clone(), smoothness=5.0, edge_sigma=0.05)
    without = edge_aware_solve(noisy, conf, torch.zeros_like(truth), smoothness=5.0, edge_sigma=0.05)
    cols = slice(w // 2 - 2, w // 2 + 2)
    assert float((with_edge - truth)[..., cols].abs().mean()) < 0.03
    assert float((without - truth)[..., cols].abs().mean()) > 0.08
    assert float((with_edge - truth).std()) < 0.5 * float((noisy - truth).std())  # and the noise is smoothed


def test_edge_weights_fall_at_edges():
    guide = torch.zeros(1, 1, 3, 4)
    guide[..., 2:] = 1.0
    wx, wy = edge_weights(guide, 0.1)
    assert wx.shape == (1, 1, 3, 3) and wy.shape == (1, 1, 2, 4)
    assert float(wx[..., 1].max()) < 1e-10 and torch.allclose(wx[..., 0], torch.ones(1, 1, 3)) and bool((wy == 1).all())


def test_the_robust_data_term_ignores_confident_speckle():
    """A smooth surface with 10 % of its pixels confidently wrong (speckle twice as near): least squares dents the
    surface under them, the robust data term leaves it where the other pixels put it."""
    g = torch.Generator().manual_seed(2)
    h, w = 48, 48
    truth = torch.linspace(0.5, 0.8, w).expand(1, 1, h, w).clone()
    speckle = torch.rand(1, 1, h, w, generator=g) < 0.1
    target = torch.where(speckle, truth * 2.0, truth)
    conf = torch.ones_like(truth)
    guide = torch.zeros_like(truth)
    plain = edge_aware_solve(target, conf, guide, smoothness=3.0)
    robust = edge_aware_solve(target, conf, guide, smoothness=3.0, robust_scale=0.05 * target)
    err_plain = float(((plain - truth) / truth).abs().mean())
    err_robust = float(((robust - truth) / truth).abs().mean())
    assert err_robust < 0.3 * err_plain and err_robust < 0.03
    # Without speckle the robust term changes almost nothing (the ramp bends a little only at the image border,
    # where the one-sided smoothness pulls it flat, as in least squares).
    clean = edge_aware_solve(truth, conf, guide, smoothness=3.0, robust_scale=0.05 * truth)
    clean_ls = edge_aware_solve(truth, conf, guide, smoothness=3.0)
    assert float(((clean - truth) / truth).abs().mean()) < 0.003
    assert float(((clean - truth) / truth).abs().mean()) < 1.5 * float(((clean_ls - truth) / truth).abs().mean())
    with pytest.raises(InputError, match="robust_scale"):
        edge_aware_solve(target, conf, guide, robust_scale=0.0)
    with pytest.raises(InputError, match="robust_scale"):
        edge_aware_solve(target, conf, guide, robust_scale=torch.zeros_like(target))
    # A number is a scale in the target's units: the speckle (residual ≈ 0.5–0.8) is an outlier at 0.03 as well.
    absolute = edge_aware_solve(target, conf, guide, smoothness=3.0, robust_scale=0.03)
    assert float(((absolute - truth) / truth).abs().mean()) < 0.3 * err_plain


def test_resolution_smoothness_scales_with_the_square_of_the_size():
    assert resolution_smoothness(3.0, (480, 640), 640) == pytest.approx(3.0)
    assert resolution_smoothness(3.0, (1701, 2261), 640) == pytest.approx(3.0 * (2261 / 640) ** 2)
    assert resolution_smoothness(2.0, (320, 160), 640) == pytest.approx(0.5)
    with pytest.raises(InputError, match="reference_size"):
        resolution_smoothness(1.0, (8, 8), 0)


def test_the_scaled_smoothness_gives_the_same_surface_at_every_resolution():
    """One scene (a bump a fifth of the image wide, a half-confident data term) solved at 32 and 128 px: with λ
    scaled by the size squared the two results agree once brought to one size; with one λ for both they do not
    (the finer grid is smoothed 16 times less, relative to its extent)."""

    def solve_at(n: int, lam: float) -> torch.Tensor:
        u = (torch.arange(n, dtype=torch.float64) + 0.5) / n
        bump = torch.exp(-((u[:, None] - 0.5) ** 2 + (u[None, :] - 0.5) ** 2) / (2 * 0.1**2))[None, None]
        out = edge_aware_solve(bump, torch.full_like(bump, 0.5), torch.zeros_like(bump), smoothness=lam,
                               iterations=800, tolerance=1e-12, fine_iterations=400)
        return torch.nn.functional.avg_pool2d(out, n // 32) if n > 32 else out

    coarse = solve_at(32, resolution_smoothness(2.0, (32, 32), 32))
    fine = solve_at(128, resolution_smoothness(2.0, (128, 128), 32))
    fine_unscaled = solve_at(128, 2.0)
    assert float((coarse - fine).abs().max()) < 0.05 * float(coarse.max())
    assert float((coarse - fine_unscaled).abs().max()) > 0.2 * float(coarse.max())


def _step_scene(h: int, w: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """A noisy near half (left) and a far half whose right part has no cue, the guide's edge at the step."""
    gen = torch.Generator().manual_seed(3)
    u = (torch.arange(w, dtype=torch.float64) + 0.5) / w
    truth = torch.where(u < 0.4, 2.0, 0.5).expand(h, w)[None, None].clone()
    target = truth + 0.2 * torch.randn(truth.shape, generator=gen, dtype=torch.float64)
    conf = torch.where(u < 0.7, 1.0, 0.0).expand(h, w)[None, None].clone()
    guide = torch.where(u < 0.4, 0.2, 0.8).expand(h, w)[None, None].clone()
    return target, conf, guide


def test_a_capped_solve_matches_the_full_size_minimiser():
    """max_size solves a 4x smaller system (λ scaled to it) and upsamples on the guide: the result is the full-size
    minimiser within a few per cent, keeps the step at the guide edge, and its shape and dtype are the input's."""
    target, conf, guide = _step_scene(96, 160)
    kwargs = dict(smoothness=40.0, edge_sigma=0.05, iterations=1500, fine_iterations=600, tolerance=1e-10)
    full = edge_aware_solve(target, conf, guide, **kwargs)
    capped = edge_aware_solve(target, conf, guide, max_size=40, **kwargs)
    assert capped.shape == target.shape and capped.dtype == target.dtype
    rel = (capped - full).abs() / full.abs()
    away_from_edge = torch.cat([rel[..., :60], rel[..., 68:]], dim=-1)  # the step is at column 64
    assert float(rel.median()) < 0.02 and float(away_from_edge.max()) < 0.05
    # the step stays at the edge: columns just left / right of u = 0.4 keep near and far
    assert float(capped[..., 60].mean()) > 1.8 and float(capped[..., 68].mean()) < 0.6
    # an input no larger than max_size is solved as it is
    assert torch.equal(edge_aware_solve(target, conf, guide, max_size=160, **kwargs), full)


def test_a_capped_solve_costs_the_same_at_every_input_size():
    """With a cap the same iteration counts converge at any input size: a 4x larger input solved at the cap agrees
    with a converged capped solve (the uncapped fixed count would leave it far from its minimiser)."""
    target, conf, guide = _step_scene(256, 512)
    few = dict(smoothness=40.0 * 16, edge_sigma=0.05, iterations=60, fine_iterations=15)
    many = dict(few, iterations=2000, fine_iterations=800, tolerance=1e-12)
    converged = edge_aware_solve(target, conf, guide, max_size=128, **many)
    capped = edge_aware_solve(target, conf, guide, max_size=128, **few)
    uncapped = edge_aware_solve(target, conf, guide, **few)
    assert float(((capped - converged).abs() / converged).median()) < 0.01
    assert float(((uncapped - converged).abs() / converged).max()) > 0.05
