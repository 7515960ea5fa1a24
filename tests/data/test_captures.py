"""Tests of the randomised camera protocol (defocus.data.captures): deterministic per seed, inside its stated
ranges, and rendering an RGB-D pair into a stack in the capture's file order."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from defocus.data.captures import capture_stack, random_capture, scene_inverse_depth_range
from defocus.errors import InputError


def test_capture_is_deterministic_per_seed_and_varies_across_seeds():
    a, b = random_capture(3, (0.2, 1.0)), random_capture(3, (0.2, 1.0))
    assert a == b
    captures = [random_capture(s, (0.2, 1.0)) for s in range(60)]
    assert len({c.focus_m for c in captures}) == 60
    frames = [len(c.focus_m) for c in captures]
    assert min(frames) >= 2 and max(frames) <= 10 and len(set(frames)) >= 5
    # File order is shuffled: some captures are not in focus order.
    assert any(list(c.focus_m) not in (sorted(c.focus_m), sorted(c.focus_m, reverse=True)) for c in captures
               if len(c.focus_m) > 2)
    # Every PSF family and both light models are drawn; some captures carry aberrations or tone curves.
    psfs = {c.variant.forward.psf for c in captures}
    assert {"gaussian", "disk"} <= psfs and len(psfs) >= 4
    assert any(c.variant.near_psf for c in captures) and any(c.variant.chromatic_dioptres > 0 for c in captures)
    assert any(c.variant.sensor.tone_gamma for c in captures) and any(c.variant.sensor.jpeg_quality for c in captures)


def test_capture_ranges():
    for seed in range(40):
        c = random_capture(seed, (0.25, 2.0))
        k = c.blur_per_dioptre
        assert 2.0 < k < 120.0, k  # drawn 4-60 px/D (s about f), focus changes s a little
        d = 1.0 / np.asarray(c.focus_m)
        assert d.min() >= 0.02 - 1e-9 and d.max() <= 0.9 / c.camera.focal_length_m + 1e-6
        # The focus dioptres straddle the middle of the scene's range and are spread over it.
        mid, span = (0.25 + 2.0) / 2, 1.75
        assert d.min() < mid + 0.1 * span and d.max() > mid - 0.1 * span and d.max() - d.min() > 0.15 * span
        assert c.describe()["frames"] == len(c.focus_m)


def test_capture_rejects_bad_ranges():
    for bad in [(1.0, 0.5), (0.0, 1.0), (float("nan"), 1.0)]:
        with pytest.raises(InputError, match="inverse-depth range"):
            random_capture(0, bad)


def test_scene_inverse_depth_range():
    depth = np.linspace(1.0, 4.0, 100).reshape(10, 10).astype(np.float32)
    depth[0, :5] = 0.0  # unknown pixels are ignored
    lo, hi = scene_inverse_depth_range(depth)
    assert 1 / 4.0 <= lo < 0.27 and 0.75 < hi <= 1 / 1.0
    with pytest.raises(InputError, match="no valid pixel"):
        scene_inverse_depth_range(np.zeros((4, 4), np.float32))


def test_capture_stack_renders_in_file_order_with_truth():
    g = torch.Generator().manual_seed(0)
    rgb = torch.rand(3, 24, 32, generator=g)
    depth = np.tile(np.linspace(0.8, 3.0, 32, dtype=np.float32), (24, 1))
    depth[5:8, 5:8] = 0.0  # a sensor hole: filled for rendering, kept unknown in the truth
    capture = random_capture(7, scene_inverse_depth_range(depth))
    stack = capture_stack(rgb, depth, capture, seed=1)
    assert stack.images.shape == (len(capture.focus_m), 3, 24, 32)
    assert torch.allclose(stack.focus_distances_m, torch.tensor(capture.focus_m, dtype=torch.float32))
    assert float(stack.gt_depth[6, 6]) == 0.0 and float(stack.gt_depth[0, 0]) == pytest.approx(0.8)
    assert float(stack.images.min()) >= 0.0 and float(stack.images.max()) <= 1.0
    again = capture_stack(rgb, depth, capture, seed=1)
    assert torch.equal(stack.images, again.images)
    with pytest.raises(InputError, match="depth"):
        capture_stack(rgb, depth[:, :30], capture)


def test_capture_isp_is_drawn_from_its_own_stream():
    """Half the captures denoise (some sharpen too); the ISP draw changes nothing else of a seed's capture."""
    with_isp = [random_capture(s, (0.2, 1.0)) for s in range(60)]
    without = [random_capture(s, (0.2, 1.0), isp=False) for s in range(60)]
    denoised = [c for c in with_isp if c.variant.sensor.denoise > 0]
    assert 15 <= len(denoised) <= 45 and any(c.variant.sensor.sharpen > 0 for c in denoised)
    assert all(c.variant.sensor.denoise == 0 and c.variant.sensor.sharpen == 0 for c in without)
    for a, b in zip(with_isp, without):
        assert a.focus_m == b.focus_m and a.camera == b.camera and a.variant.forward == b.variant.forward
        assert a.variant.sensor.replace(denoise=0.0, sharpen=0.0) == b.variant.sensor
    for c in denoised:  # at least the capture's noise level, at least 0.004
        assert c.variant.sensor.denoise >= max(0.004, c.variant.sensor.noise_std) * 1.5 - 1e-4


def test_every_capture_is_a_camera_the_package_accepts():
    """A short lens stopped down at a large K once asked for a 0.06 um pitch, which ThinLensCamera refuses (the
    calibration fit crashed on it): such draws keep their K with the smallest pitch and a wider aperture."""
    from defocus.optics.camera import MIN_F_NUMBER, MIN_PIXEL_SIZE_M

    ks = []
    for seed in range(400):
        c = random_capture(seed, (0.1, 2.0), isp=False)
        assert c.camera.pixel_size_m >= MIN_PIXEL_SIZE_M and c.camera.f_number >= MIN_F_NUMBER
        ks.append(c.blur_per_dioptre)
    assert max(ks) > 40.0  # the large-K draws are still there
