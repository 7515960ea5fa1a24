"""The pipeline's global solve (defocus.predict.solve_inverse_depth): log depth, resolution-scaled smoothness."""

from __future__ import annotations

import pytest
import torch

from defocus.errors import InputError
from defocus.predict import SOLVE_REFERENCE_SIZE, SOLVE_SPACE, solve_inverse_depth


def _speckled_wall(n: int = 64, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """A texture-less wall at 1 D whose estimate has 15 % speckle at half and 15 % at twice its depth, all equally
    confident: (inverse depth, confidence), each (1, 1, n, n)."""
    g = torch.Generator().manual_seed(seed)
    u = torch.rand(1, 1, n, n, generator=g)
    inv = torch.where(u < 0.15, torch.full_like(u, 2.0), torch.where(u > 0.85, torch.full_like(u, 0.5),
                                                                      torch.ones_like(u)))
    return inv, torch.full_like(u, 0.8)


def test_the_default_space_is_log_depth_and_near_speckle_does_not_pull_the_wall_forward():
    assert SOLVE_SPACE == "log"
    inv, conf = _speckled_wall()
    guide = torch.zeros_like(inv)
    lam = 30.0 * (SOLVE_REFERENCE_SIZE / inv.shape[-1]) ** 2  # λ = 30 at the 64-px map itself
    # Least squares (the robust term, on by default, would drop the speckle in either space).
    kw = dict(second=None, guide=guide, smoothness=lam, inv_range=(0.1, 10.0), min_confidence=0.0, robust_scale=None)
    in_log = solve_inverse_depth(inv, conf, space="log", **kw)
    in_inverse = solve_inverse_depth(inv, conf, space="inverse", **kw)
    # The wall's median depth: symmetric speckle in log depth averages out; in inverse depth the near speckle
    # (2 D, +1 from the wall) outweighs the far (0.5 D, −0.5) and the wall comes out about 10 % nearer.
    assert abs(float(in_log.median()) - 1.0) < 0.03
    assert float(in_inverse.median()) > 1.07
    assert float(in_log.std()) < 0.1  # and it is smooth: the speckle is gone


def test_the_solve_is_clamped_to_the_depth_range_and_checks_its_space():
    inv, conf = _speckled_wall(32)
    out = solve_inverse_depth(inv * 10, conf, None, torch.zeros_like(inv), 3.0, (0.2, 5.0))
    assert float(out.min()) >= 0.2 and float(out.max()) <= 5.0 and out.shape == inv.shape
    with pytest.raises(InputError, match="space"):
        solve_inverse_depth(inv, conf, None, torch.zeros_like(inv), 3.0, (0.2, 5.0), space="depth")


def test_a_weight_factor_removes_evidence_as_zero_confidence_does_and_checks_its_shape():
    from defocus.errors import ShapeError

    n = 48
    inv = torch.ones(1, 1, n, n)
    inv[..., :, n // 2:] = 2.0  # left half at 1 D, right half at 2 D, no image edge between them
    conf = torch.full_like(inv, 0.9)
    guide = torch.zeros_like(inv)
    mask = torch.ones_like(inv)
    mask[..., :, n // 2 - 8:n // 2 + 8] = 0.0  # no evidence in a band across the step
    kw = dict(second=None, guide=guide, smoothness=3.0, inv_range=(0.1, 10.0), min_confidence=0.0)
    factored = solve_inverse_depth(inv, conf, weight_factor=mask, **kw)
    zeroed = solve_inverse_depth(inv, conf * mask, **kw)
    plain = solve_inverse_depth(inv, conf, **kw)
    assert torch.allclose(factored, zeroed, atol=1e-6)
    # Inside the band the depth is spanned from both sides (a ramp), not the step the evidence had there.
    band = factored[0, 0, n // 2, n // 2 - 6:n // 2 + 6]
    assert float((band[1:] - band[:-1]).min()) > 0 and float(band[0]) > 1.05 and float(band[-1]) < 1.95
    assert float((plain - factored).abs().max()) > 0.1
    with pytest.raises(ShapeError, match="weight_factor"):
        solve_inverse_depth(inv, conf, weight_factor=mask[..., 1:], **kw)


def test_the_smoothness_is_scaled_to_the_working_size():
    """The speckled wall at the reference size and at twice it: with λ scaled by the size squared both come out
    as smooth (the spread of the result is set by the scene, not by the working size)."""
    small_inv, small_conf = _speckled_wall(SOLVE_REFERENCE_SIZE // 8, seed=1)
    big_inv, big_conf = _speckled_wall(SOLVE_REFERENCE_SIZE // 4, seed=1)
    kw = dict(second=None, smoothness=10.0, inv_range=(0.1, 10.0), min_confidence=0.0)
    small = solve_inverse_depth(small_inv, small_conf, guide=torch.zeros_like(small_inv), **kw)
    big = solve_inverse_depth(big_inv, big_conf, guide=torch.zeros_like(big_inv), **kw)
    # 4× the pixels average 2× less noise in the same area; without the scaling the larger image would be 4× less
    # smoothed, and its spread about the smaller one's.
    assert float(big.std()) < 0.75 * float(small.std())


def test_the_network_term_is_weighted_down_below_the_blur_it_was_trained_at():
    """Network says 2 D, classical says 1 D, equally confident: at K ≥ SOLVE_NETWORK_FULL_K the result sits between
    them by the weight α; at a quarter of it the network's weight is 1/16 of that and the result near the
    classical 1 D; without a K (or without the gate) nothing changes."""
    from defocus.predict import SOLVE_NETWORK_FULL_K, SOLVE_NETWORK_WEIGHT

    assert SOLVE_NETWORK_FULL_K > 0
    net = torch.full((1, 1, 16, 16), 2.0)
    second = (torch.ones_like(net), torch.full_like(net, 0.9))
    conf = torch.full_like(net, 0.9)
    kw = dict(guide=torch.zeros_like(net), smoothness=1.0, inv_range=(0.1, 10.0))

    def log_mix(alpha: float) -> float:  # the weighted mean in log depth of 2 D (weight α) and 1 D (weight 1)
        return float(torch.exp(torch.tensor(alpha * 0.6931471805599453 / (alpha + 1.0))))

    full = solve_inverse_depth(net, conf, second, blur_per_dioptre=SOLVE_NETWORK_FULL_K * 2, **kw)
    low = solve_inverse_depth(net, conf, second, blur_per_dioptre=SOLVE_NETWORK_FULL_K / 4, **kw)
    unknown = solve_inverse_depth(net, conf, second, **kw)
    off = solve_inverse_depth(net, conf, second, blur_per_dioptre=SOLVE_NETWORK_FULL_K / 4, network_full_k=0.0, **kw)
    assert float(full.mean()) == pytest.approx(log_mix(SOLVE_NETWORK_WEIGHT), rel=1e-3)
    assert float(low.mean()) == pytest.approx(log_mix(SOLVE_NETWORK_WEIGHT / 16), rel=1e-3)
    assert torch.allclose(unknown, full) and torch.allclose(off, full)


def test_the_relative_index_map_is_spanned_across_cueless_regions():
    """A relative stack's focus-index map (a ramp over 0 … 4 across the image) whose middle third has no focus cue
    and junk indices there: the solve spans the middle from both sides (close to the ramp), keeps the cued thirds,
    and stays inside [0, n − 1]."""
    from defocus.predict import _solve_relative

    n, h, w = 5, 24, 96
    ramp = torch.linspace(0.0, n - 1.0, w).expand(1, 1, h, w).clone()
    middle = slice(w // 3, 2 * w // 3)
    index = ramp.clone()
    index[..., middle] = torch.rand(1, 1, h, w // 3, generator=torch.Generator().manual_seed(3)) * 8 - 2
    raw_conf = torch.full_like(ramp, 0.6)  # the classical (fmax − mean)/fmax; normalised cue 0.75
    raw_conf[..., middle] = 0.02
    out = _solve_relative(index, raw_conf, torch.zeros_like(ramp), n, smoothness=30.0)
    assert float(out.min()) >= 0.0 and float(out.max()) <= n - 1.0
    assert float((out[..., middle] - ramp[..., middle]).abs().max()) < 0.3
    assert float((out - ramp)[..., : w // 3].abs().mean()) < 0.05


# ------------------------------------------------------------------------------------- the solve's support
def test_the_support_is_one_where_all_pixels_are_confident_and_in_unit_range():
    from defocus.predict import solve_support

    weight = torch.full((2, 1, 20, 24), 1.3)  # two terms' weights may sum above 1: clamped
    out = solve_support(weight, torch.zeros_like(weight), smoothness=30.0)
    assert out.shape == weight.shape
    assert torch.allclose(out, torch.ones_like(out), atol=1e-3)
    out = solve_support(torch.zeros_like(weight), torch.zeros_like(weight), smoothness=30.0)
    assert float(out.abs().max()) < 1e-6


def test_the_support_decays_away_from_the_evidence_and_stops_at_an_image_edge():
    """Evidence only in the left eighth of a 96-px strip: the support falls with the distance from it on a flat
    guide, and beyond a strong guide edge right next to the evidence it stays near zero."""
    from defocus.predict import solve_support

    h, w = 16, 96
    weight = torch.zeros(1, 1, h, w)
    weight[..., : w // 8] = 1.0
    flat = solve_support(weight, torch.zeros_like(weight), smoothness=30.0)
    profile = flat[0, 0].mean(0)
    assert float(profile[w // 8 + 2]) > float(profile[w // 8 + 10]) > float(profile[-1]) >= 0.0
    assert float(profile[:4].min()) > 0.8  # deep inside the evidence it stays high
    guide = torch.zeros(1, 1, h, w)
    guide[..., w // 8 :] = 1.0  # an image edge where the evidence ends
    edged = solve_support(weight, guide, smoothness=30.0)
    assert float(edged[0, 0, :, w // 8 + 2].mean()) < 0.1 * float(profile[w // 8 + 2])


def test_predict_writes_the_solved_depths_confidence_and_its_support():
    """With the packaged "solve" calibration the written confidence is the solved depth's (a function of the
    support, not the per-pixel estimate's confidence); --no-solve keeps the per-pixel one and has no support."""
    from defocus.data.procedural import SCENE_DEPTH_RANGE_M, make_scene
    from defocus.data.stack import FocalStack
    from defocus.data.synthesis import synthesize_stack
    from defocus.models.checkpoint import packaged_calibration
    from defocus.optics.camera import get_preset
    from defocus.predict import SOLVED_CALIBRATION, aif_texture, predict_stack

    cal = packaged_calibration(SOLVED_CALIBRATION)
    assert cal is not None, "the solved depth's calibration is packaged (benchmarks/fit_confidence.py --solved)"
    nyu = get_preset("nyuv2")
    aif, depth = make_scene(5, 64, 64, SCENE_DEPTH_RANGE_M["nyuv2"])
    fd = torch.tensor(nyu.focus_distances_m)
    images = synthesize_stack(aif[None], depth[None], fd, nyu.camera, "paper")[0]
    stack = FocalStack(images=images, focus_distances_m=fd, camera=nyu.camera, name="p")
    pred = predict_stack(None, stack)
    assert pred.solve_support is not None and pred.solve_support.shape == pred.working.confidence.shape
    expected = cal(pred.solve_support, pred.working.inv_depth, aif_texture(pred.working.aif))
    assert torch.allclose(pred.working.confidence, expected)
    assert pred.confidence_of == "solved depth"
    plain = predict_stack(None, stack, solve=False)
    assert plain.solve_support is None and plain.confidence_of == "estimate"
    assert not torch.allclose(plain.working.confidence, pred.working.confidence)
