"""One inference pipeline: the notebook API, ``defocus predict`` and ``defocus evaluate`` compute the same thing.

On a stack folder rendered from a real RGB-D frame of ../shared/data (with ground truth) and on a real hand-held
phone stack: ``defocus.estimate(folder)`` gives exactly the depth ``defocus predict`` writes, and ``defocus evaluate``
scores exactly that output. Skipped where the shared data is absent.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import tifffile
import torch

import defocus
from defocus.cli import main
from defocus.data.folders import read_stack
from defocus.metrics import depth_metrics

SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"
PHONE = "focal_stacks/hybriddepth_pixel6pro/imgs_old"
PHONE_FLAGS = ["--focus", "0.24,0.36,0.6,1.5,2.5", "--focal-length-mm", "6.81", "--f-number", "1.85",
               "--pixel-size-um", "7.65"]


@pytest.fixture(scope="module")
def rgbd_stack_folder(tmp_path_factory):
    rgbd = SHARED_DATA / "rgbd" / "nyuv2_labeled_0045_hollyjackson"
    if not rgbd.is_dir():
        pytest.skip(f"real data not available: {rgbd} is absent (it lives beside the repository)")
    folder = tmp_path_factory.mktemp("rgbd") / "nyu_0045_realistic"
    assert main(["render", "--rgb", str(rgbd / "rgb_0045.png"), "--depth", str(rgbd / "depth_0045_0.1mm.png"),
                 "--depth-scale", "0.0001", "--preset", "nyuv2", "--protocol", "realistic", "-o", str(folder)]) == 0
    return folder


def test_estimate_predict_and_evaluate_agree_on_a_stack_rendered_from_real_rgbd(rgbd_stack_folder, tmp_path):
    out = tmp_path / "out"
    assert main(["predict", str(rgbd_stack_folder), "-o", str(out)]) == 0
    written = tifffile.imread(out / rgbd_stack_folder.name / "depth.tiff")
    info = json.loads((out / rgbd_stack_folder.name / "prediction.json").read_text())
    # A registered (synthetic) stack keeps its frames and its full size.
    assert info["aligned"] is False and written.shape == (240, 320)

    api = defocus.estimate(rgbd_stack_folder)
    np.testing.assert_array_equal(api.depth_map.numpy().astype("float32"), written)

    assert main(["evaluate", str(rgbd_stack_folder), "--json", str(tmp_path / "r.json")]) == 0
    scored = json.loads((tmp_path / "r.json").read_text())["stacks"][0]["network"]
    gt = torch.from_numpy(read_stack(rgbd_stack_folder).gt_depth)
    ours = depth_metrics(torch.from_numpy(written), gt, depth_range_m=tuple(info["depth_range_m"]))
    for key in ("abs_rel", "rmse", "delta1"):
        assert scored[key] == pytest.approx(ours[key], rel=1e-9, abs=1e-12), key


def test_estimate_and_predict_agree_on_a_real_hand_held_stack(shared_data, tmp_path):
    folder = shared_data / PHONE
    out = tmp_path / "out"
    assert main(["predict", str(folder), "-o", str(out), "--max-size", "320", *PHONE_FLAGS]) == 0
    written = tifffile.imread(out / folder.name / "depth.tiff")
    info = json.loads((out / folder.name / "prediction.json").read_text())
    assert info["aligned"] is True  # hand-held: the frames are registered, the outputs cropped to their overlap

    stack = read_stack(folder, focus=[0.24, 0.36, 0.6, 1.5, 2.5],
                       camera_flags={"focal_length_mm": 6.81, "f_number": 1.85, "pixel_size_um": 7.65})
    api = defocus.estimate(stack, max_size=320)
    assert list(api.crop_box) == info["crop_box_xyxy"]
    np.testing.assert_array_equal(api.depth_map.numpy().astype("float32"), written)
