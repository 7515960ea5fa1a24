"""Tests of the in-memory and RGB-D sources of a FocalStack: from_arrays, stack_from_rgbd, stack_from_scene."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from defocus.data.procedural import SCENE_DEPTH_RANGE_M, make_scene, scene_depth_range
from defocus.data.stack import FocalStack
from defocus.data.synthesis import stack_from_rgbd, stack_from_scene, synthesize_stack
from defocus.errors import DefocusError
from defocus.optics.camera import get_preset

NYU = get_preset("nyuv2")


def test_from_arrays_accepts_what_image_libraries_give():
    rng = np.random.default_rng(0)
    hwc = [rng.integers(0, 256, (6, 7, 3), dtype=np.uint8) for _ in range(3)]
    st = FocalStack.from_arrays(hwc, [1.0, 2.0, 3.0], NYU.camera)
    assert st.images.shape == (3, 3, 6, 7)
    torch.testing.assert_close(st.images[1, :, 2, 3], torch.tensor(hwc[1][2, 3] / 255.0, dtype=torch.float32))
    nchw = st.images.clone()
    assert torch.equal(FocalStack.from_arrays(nchw, [1.0, 2.0, 3.0]).images, nchw)
    assert torch.equal(FocalStack.from_arrays(np.stack(hwc), [1.0, 2.0, 3.0]).images, st.images)
    with pytest.raises(DefocusError, match="differ in size"):
        FocalStack.from_arrays([hwc[0], hwc[1][:5]], [1.0, 2.0])
    with pytest.raises(DefocusError, match="3 images but 2 focus"):
        FocalStack.from_arrays(hwc, [1.0, 2.0])


def test_stack_from_rgbd_keeps_holes_unknown_and_resizes():
    rgb, depth = make_scene(3, 48, 64, SCENE_DEPTH_RANGE_M["nyuv2"])
    d = depth[0].numpy().copy()
    d[:8, :8] = 0.0  # a hole
    st = stack_from_rgbd(rgb, d, NYU.focus_distances_m, NYU.camera, "paper", size=(24, 32), name="x")
    assert st.images.shape == (5, 3, 24, 32) and st.gt_depth.shape == (24, 32) and st.name == "x"
    assert (st.gt_depth[:4, :4] == 0).all() and (st.gt_depth[8:, 8:] > 0).all()
    with pytest.raises(DefocusError, match="64x48 but the depth is 32x48"):
        stack_from_rgbd(rgb, d[:, :32], NYU.focus_distances_m, NYU.camera)


def test_stack_from_scene_is_the_synthesised_stack_with_ground_truth():
    rgb, depth = make_scene(5, 24, 24, SCENE_DEPTH_RANGE_M["defocusnet"])
    cam = get_preset("defocusnet").camera
    st = stack_from_scene(rgb, depth, [0.3, 0.75, 1.8], cam, "realistic", seed=2)
    want = synthesize_stack(rgb, depth, torch.tensor([0.3, 0.75, 1.8]), cam, "realistic", seed=2)
    assert torch.equal(st.images, want)
    np.testing.assert_array_equal(st.gt_depth, depth[0].numpy())


def test_scene_depth_range():
    assert scene_depth_range("nyuv2", [1, 2], 0.05) == SCENE_DEPTH_RANGE_M["nyuv2"]
    assert scene_depth_range(None, [1.0, 3.0], 0.05) == (0.5, 6.0)
    assert scene_depth_range(None, [0.05, 3.0], 0.05) == (0.1, 6.0)  # never nearer than 2 f
