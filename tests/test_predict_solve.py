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
