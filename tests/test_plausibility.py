"""Numbers that look wrong for the camera are said, not silently turned into depth (issue 18, defects 1 and 2)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from defocus.cli import main
from defocus.data.codecs import read_depth
from defocus.data.folders import write_stack
from defocus.data.procedural import make_scene
from defocus.data.stack import FocalStack
from defocus.data.synthesis import synthesize_stack
from defocus.optics.camera import ThinLensCamera
from defocus.predict import MAX_FOCUS_HYPERFOCAL, hyperfocal_distance_m, plausibility_warnings

CAMERA = ThinLensCamera.from_mm_um(6.81, 1.85, 2.4)  # a phone main camera: hyperfocal distance about 10 m
FOCUS = [0.35, 0.5, 0.9, 1.33, 2.21]


def _stack(tmp_path: Path, n: int = 5) -> Path:
    rgb, depth = make_scene(3, 96, 128, (0.3, 3.0))
    images = synthesize_stack(rgb, depth, torch.tensor(FOCUS), CAMERA, "paper", seed=1)[:n]
    folder = tmp_path / "stack"
    write_stack(FocalStack(images=images, focus_distances_m=torch.tensor(FOCUS[:n]), camera=CAMERA, name="stack"),
                folder)
    return folder


def test_hyperfocal_distance():
    assert hyperfocal_distance_m(CAMERA) == pytest.approx(0.00681**2 / (1.85 * 2.4e-6) + 0.00681)
    ok = FocalStack(images=torch.rand(2, 3, 8, 8), focus_distances_m=torch.tensor([0.5, 9.0]), camera=CAMERA)
    assert plausibility_warnings(ok) == []
    far = 1.01 * MAX_FOCUS_HYPERFOCAL * hyperfocal_distance_m(CAMERA)
    bad = FocalStack(images=torch.rand(2, 3, 8, 8), focus_distances_m=torch.tensor([0.5, far]), camera=CAMERA)
    (w,) = plausibility_warnings(bad)
    assert "hyperfocal" in w and "millimetres" in w


def test_focus_in_millimetres_is_said_and_the_uint16_clip_too(tmp_path: Path, capsys):
    folder = _stack(tmp_path)
    mm = ",".join(str(int(1000 * f)) for f in FOCUS)  # 350,500,900,1330,2210: millimetres read as metres
    rc = main(["predict", str(folder), "-o", str(tmp_path / "out"), "--focus", mm, "--no-align"])
    err = capsys.readouterr().err
    assert rc == 0
    assert "hyperfocal distance" in err and "were millimetres given?" in err
    assert "depth.png (uint16 millimetres) clips" in err
    info = json.loads((tmp_path / "out" / "stack" / "prediction.json").read_text())
    assert any("hyperfocal" in w for w in info["warnings"]) and any("clips" in w for w in info["warnings"])
    # The metres themselves: neither warning.
    rc = main(["predict", str(folder), "-o", str(tmp_path / "ok"), "--no-align"])
    err = capsys.readouterr().err
    assert rc == 0 and "hyperfocal" not in err and "clips" not in err


def test_a_single_image_says_what_it_cannot_give(tmp_path: Path, capsys):
    folder = _stack(tmp_path, n=1)
    rc = main(["predict", str(folder), "-o", str(tmp_path / "out"), "--no-align"])
    err = capsys.readouterr().err
    assert rc == 0 and "a single image has no focus cue" in err
    conf = read_depth(tmp_path / "out" / "stack" / "confidence.tiff")
    assert np.all(conf == 0)
