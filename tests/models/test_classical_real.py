"""Sanity of the classical baseline on real data: a NYU Depth v2 frame rendered with `defocus render`.

The project specification measured about δ1 0.96 / AbsRel 0.11 for this baseline on real NYUv2 frames under the `paper` protocol.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from defocus.cli import main
from defocus.data.folders import read_stack
from defocus.models.classical import classical_depth_from_focus
from defocus.metrics import depth_metrics
from defocus.optics.camera import get_preset

FRAME = Path("rgbd") / "nyuv2_labeled_0045_hollyjackson"


def test_classical_baseline_on_rendered_nyu_frame(shared_data, tmp_path, capsys):
    """`paper` protocol; measured here: δ1 0.95, AbsRel 0.09, RMSE 0.34 m."""
    src = shared_data / FRAME
    if not src.is_dir():
        pytest.skip(f"{src} is absent")
    out = tmp_path / "nyu0045"
    rc = main([
        "render", "--rgb", str(src / "rgb_0045.png"), "--depth", str(src / "depth_0045_0.1mm.png"),
        "--depth-scale", "0.0001", "--preset", "nyuv2", "--protocol", "paper", "-o", str(out),
    ])
    err = capsys.readouterr().err
    assert rc == 0, err
    preset = get_preset("nyuv2")
    stack = read_stack(out)
    assert stack.image_size == preset.image_size
    assert stack.gt_depth is not None and stack.gt_aif is not None
    depth, aif, conf = classical_depth_from_focus(
        stack.images, stack.focus_distances_m, depth_range_m=preset.depth_range_m
    )
    m = depth_metrics(depth[0], stack.gt_depth, depth_range_m=preset.depth_range_m)
    assert m["n_valid"] > 0.9 * preset.image_size[0] * preset.image_size[1]
    assert m["delta1"] > 0.85, m
    assert m["abs_rel"] < 0.2, m
