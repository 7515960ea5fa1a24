"""Tests of the procedural RGB-D scene generator (defocus.data.procedural)."""

from __future__ import annotations

import math
import time

import numpy as np
import pytest
import torch

from defocus.data.procedural import make_scene, make_scenes
from defocus.errors import DefocusError

NEAR, FAR = 0.5, 6.0
SPAN = 1.0 / NEAR - 1.0 / FAR  # inverse-depth range, 1/m


@pytest.fixture(scope="module")
def batch() -> tuple[np.ndarray, np.ndarray]:
    """8 scenes at 96x96: rgb (8, 3, H, W) and inverse depth (8, H, W) in 1/m."""
    rgb, depth = make_scenes(range(8), 96, 96, (NEAR, FAR))
    return rgb.numpy(), 1.0 / depth.numpy()[:, 0].astype(np.float64)


def test_deterministic_per_seed() -> None:
    a_rgb, a_d = make_scene(5, 48, 64)
    b_rgb, b_d = make_scene(5, 48, 64)
    assert torch.equal(a_rgb, b_rgb) and torch.equal(a_d, b_d)
    c_rgb, c_d = make_scene(6, 48, 64)
    assert not torch.equal(a_rgb, c_rgb)
    assert not torch.equal(a_d, c_d)
    # numpy integer seeds behave like Python ints
    n_rgb, _ = make_scene(np.int64(5), 48, 64)
    assert torch.equal(a_rgb, n_rgb)


def test_make_scenes_stacks_make_scene() -> None:
    rgb, depth = make_scenes([3, 11], 20, 30, (0.2, 4.0))
    assert rgb.shape == (2, 3, 20, 30) and depth.shape == (2, 1, 20, 30)
    for i, s in enumerate([3, 11]):
        r, d = make_scene(s, 20, 30, (0.2, 4.0))
        assert torch.equal(rgb[i], r) and torch.equal(depth[i], d)
    empty_rgb, empty_d = make_scenes([], 8, 9)
    assert empty_rgb.shape == (0, 3, 8, 9) and empty_d.shape == (0, 1, 8, 9)


@pytest.mark.parametrize("hw", [(1, 1), (7, 5), (5, 7), (1, 9), (33, 17), (64, 48)])
def test_shapes_dtypes_ranges(hw: tuple[int, int]) -> None:
    h, w = hw
    for seed in (0, 1):
        rgb, depth = make_scene(seed, h, w)
        assert rgb.shape == (3, h, w) and depth.shape == (1, h, w)
        assert rgb.dtype == torch.float32 and depth.dtype == torch.float32
        assert torch.isfinite(rgb).all() and torch.isfinite(depth).all()
        assert rgb.min() >= 0.0 and rgb.max() <= 1.0
        assert depth.min() >= NEAR and depth.max() <= FAR


@pytest.mark.parametrize("rng_m", [(0.1, 10.0), (0.3, 0.31), (2.0, 3.0), (0.05, 1.0)])
def test_depth_inside_custom_ranges(rng_m: tuple[float, float]) -> None:
    _, depth = make_scenes(range(3), 40, 50, rng_m)
    assert depth.min() >= rng_m[0] and depth.max() <= rng_m[1]


def test_depth_spans_the_range(batch) -> None:
    _, inv = batch
    lo, hi = np.percentile(inv, [5, 95])
    assert (hi - lo) >= 0.5 * SPAN
    # and each scene has real depth variation, not one plane
    for s in inv:
        assert np.ptp(s) > 0.2 * SPAN


def test_occlusion_edges(batch) -> None:
    _, inv = batch
    for s in inv:
        jumps = np.concatenate([np.abs(np.diff(s, axis=0)).ravel(), np.abs(np.diff(s, axis=1)).ravel()])
        frac = (jumps > 0.05 * SPAN).mean()
        assert 0.002 < frac < 0.25  # sharp depth discontinuities exist, but depth is piecewise smooth


def test_nearer_surfaces_occlude_farther_ones() -> None:
    """The painter uses a per-pixel depth test: a farther shape painted later never covers a nearer one."""
    from defocus.data.procedural import _paint_shape

    inv_far, inv_near = 1.0 / FAR, 1.0 / NEAR  # 0.167 .. 2 1/m; a slant changes a shape by at most 0.3*SPAN = 0.55
    for seed in range(6):
        rng = np.random.default_rng(seed)
        inv = np.full((32, 32), inv_far)
        rgb = np.zeros((3, 32, 32))
        _paint_shape(rng, inv, rgb, 500.0, 1.5, inv_far, inv_near)  # huge: covers the whole image
        assert np.all(inv >= 1.5 - 0.56)
        inv_before, rgb_before = inv.copy(), rgb.copy()
        _paint_shape(rng, inv, rgb, 500.0, 0.3, inv_far, inv_near)  # farther everywhere: hidden entirely
        assert np.array_equal(inv, inv_before) and np.array_equal(rgb, rgb_before)
        _paint_shape(rng, inv, rgb, 500.0, 1.99, inv_far, inv_near)  # nearer (at least in part): covers
        changed = inv != inv_before
        assert changed.any() and np.all(inv[changed] > inv_before[changed])


def test_textureless_regions_exist_but_most_is_textured(batch) -> None:
    rgb, _ = batch
    grey = rgb.mean(axis=1)  # (8, 96, 96)
    patch_std = grey.reshape(8, 16, 6, 16, 6).std(axis=(2, 4))  # 6x6 patches
    flat = (patch_std < 0.004).mean()
    textured = (patch_std > 0.01).mean()
    assert flat > 0.01
    assert textured > 0.5


def test_gradient_statistics_are_natural(batch) -> None:
    rgb, _ = batch
    grey = rgb.mean(axis=1)
    for g in grey:
        gx = np.diff(g, axis=1)[:-1]
        gy = np.diff(g, axis=0)[:, :-1]
        strong = (np.hypot(gx, gy) > 0.05).mean()
        assert 0.02 < strong < 0.8
        # natural images have heavy-tailed derivative histograms (kurtosis well above a Gaussian's 3)
        kurt = ((gx - gx.mean()) ** 4).mean() / gx.var() ** 2
        assert kurt > 5.0
    # realistic contrast: not saturated everywhere
    sat = ((rgb <= 1 / 255) | (rgb >= 254 / 255)).mean()
    assert sat < 0.1
    assert 0.15 < rgb.mean() < 0.8


def test_speed_128() -> None:
    make_scene(0, 128, 128)  # warm-up
    t0 = time.perf_counter()
    for s in range(5):
        make_scene(s, 128, 128)
    per_scene = (time.perf_counter() - t0) / 5
    assert per_scene < 0.2  # ~10-20 ms on one core; generous bound for loaded CI machines


@pytest.mark.parametrize(
    "kwargs",
    [
        dict(seed=0, height=0, width=8),
        dict(seed=0, height=8, width=-1),
        dict(seed=0, height=2.5, width=8),
        dict(seed=0, height=True, width=8),
        dict(seed=-1, height=8, width=8),
        dict(seed=1.5, height=8, width=8),
        dict(seed=0, height=8, width=8, depth_range_m=(0.0, 1.0)),
        dict(seed=0, height=8, width=8, depth_range_m=(-1.0, 2.0)),
        dict(seed=0, height=8, width=8, depth_range_m=(2.0, 1.0)),
        dict(seed=0, height=8, width=8, depth_range_m=(1.0, 1.0)),
        dict(seed=0, height=8, width=8, depth_range_m=(1.0, math.inf)),
        dict(seed=0, height=8, width=8, depth_range_m=(math.nan, 1.0)),
        dict(seed=0, height=8, width=8, depth_range_m=(1.0,)),
        dict(seed=0, height=8, width=8, depth_range_m=("a", 1.0)),
        dict(seed=0, height=8, width=8, depth_range_m=None),
    ],
)
def test_invalid_arguments_raise(kwargs) -> None:
    with pytest.raises(DefocusError):
        make_scene(**kwargs)


def test_make_scenes_invalid_arguments_raise() -> None:
    with pytest.raises(DefocusError):
        make_scenes([0, -3], 8, 8)
    with pytest.raises(DefocusError):
        make_scenes([0], 0, 8)
    with pytest.raises(DefocusError):
        make_scenes([0], 8, 8, (3.0, 1.0))
