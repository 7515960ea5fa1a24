"""Tests for `defocus render`: procedural and RGB-D sources, bad input, and the "done when" check of issue 2.

Most calls run ``defocus.cli.main([...])`` in-process; two go through ``python -m defocus.cli`` in a subprocess to
check the real entry point's exit status and stderr.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import tifffile
from PIL import Image

from defocus.cli import main

H, W = 24, 32
CAMERA_FLAGS = ["--focal-length-mm", "50", "--f-number", "8", "--pixel-size-um", "12"]


def _render(args: list[str], capsys) -> tuple[int, str, str]:
    rc = main(["render", *[str(a) for a in args]])
    cap = capsys.readouterr()
    return rc, cap.out, cap.err


def _snapshot(folder: Path) -> dict[str, bytes]:
    """Every file under ``folder`` (relative path → bytes)."""
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.fixture
def inputs(tmp_path: Path) -> dict[str, Path]:
    """A small RGB-D pair in several formats, plus bad files."""
    rng = np.random.default_rng(0)
    rgb = rng.integers(0, 256, (H, W, 3), dtype=np.uint8)
    depth_mm = rng.integers(700, 4000, (H, W)).astype(np.uint16)
    depth_mm[3, 4] = 0  # a hole
    files = {
        "rgb": tmp_path / "rgb.png",
        "depth_tiff": tmp_path / "depth.tiff",
        "depth_png": tmp_path / "depth_mm.png",
        "depth_small": tmp_path / "depth_small.tiff",
        "corrupt": tmp_path / "corrupt.png",
    }
    Image.fromarray(rgb).save(files["rgb"])
    tifffile.imwrite(files["depth_tiff"], (depth_mm.astype(np.float64) / 1000.0).astype(np.float32))
    Image.fromarray(depth_mm).save(files["depth_png"])
    tifffile.imwrite(files["depth_small"], np.ones((H - 2, W), np.float32))
    files["corrupt"].write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(rng.integers(0, 256, 300, dtype=np.uint8)))
    return files


def _read_out(folder: Path) -> tuple[dict, np.ndarray, np.ndarray, np.ndarray]:
    meta = json.loads((folder / "stack.json").read_text())
    imgs = np.stack([np.asarray(Image.open(folder / nm)) for nm in meta["images"]])
    gt_depth = tifffile.imread(folder / "gt_depth.tiff")
    gt_aif = np.asarray(Image.open(folder / "gt_aif.png"))
    return meta, imgs, gt_depth, gt_aif


# ------------------------------------------------------------------------------------------------- success
def test_procedural_with_preset(tmp_path, capsys):
    out = tmp_path / "stack"
    rc, stdout, err = _render(["--procedural", "3", "--preset", "nyuv2", "-o", out], capsys)
    assert rc == 0, err
    assert err == ""
    assert "wrote" in stdout
    assert sorted(p.name for p in out.iterdir()) == sorted(
        [f"focus_{i}.png" for i in range(5)] + ["stack.json", "gt_depth.tiff", "gt_aif.png"]
    )
    meta, imgs, gt_depth, gt_aif = _read_out(out)
    assert meta["images"] == [f"focus_{i}.png" for i in range(5)]
    assert meta["focus_distances_m"] == [1.0, 1.5, 2.5, 4.0, 6.0]
    assert meta["camera"] == {"focal_length_mm": 50.0, "f_number": 8.0, "pixel_size_um": 12.0}
    assert imgs.shape == (5, 240, 320, 3) and imgs.dtype == np.uint8  # the preset's size
    assert gt_aif.shape == (240, 320, 3)
    assert gt_depth.shape == (240, 320) and gt_depth.dtype == np.float32
    assert gt_depth.min() > 0 and gt_depth.max() <= 10.0
    # the stack is blurred differently at each focus distance, and differs from the sharp image
    assert all(np.abs(imgs[i].astype(int) - gt_aif).mean() > 0.5 for i in range(5))
    # deterministic per seed
    out2 = tmp_path / "again"
    assert _render(["--procedural", "3", "--preset", "nyuv2", "-o", out2], capsys)[0] == 0
    assert _snapshot(out) == _snapshot(out2)


def test_procedural_defocusnet_size_and_focus_override(tmp_path, capsys):
    out = tmp_path / "dfn"
    rc, _, err = _render(["--procedural", "0", "--preset", "defocusnet", "--focus", "0.4,0.9", "-o", out], capsys)
    assert rc == 0, err
    meta, imgs, gt_depth, _ = _read_out(out)
    assert imgs.shape == (2, 256, 256, 3)
    assert meta["focus_distances_m"] == [0.4, 0.9]
    assert meta["camera"] == {"focal_length_mm": 7.2, "f_number": 1.2, "pixel_size_um": 5.6}


def test_rgbd_float_tiff_and_uint16_png(tmp_path, inputs, capsys):
    before = _snapshot(tmp_path)
    a, b = tmp_path / "from_tiff", tmp_path / "from_png"
    common = ["--rgb", inputs["rgb"], "--focus", "0.8,1.5,3", *CAMERA_FLAGS]
    rc, _, err = _render([*common, "--depth", inputs["depth_tiff"], "-o", a], capsys)
    assert rc == 0, err
    rc, _, err = _render([*common, "--depth", inputs["depth_png"], "--depth-scale", "0.001", "-o", b], capsys)
    assert rc == 0, err
    meta, imgs, gt_depth, gt_aif = _read_out(a)
    assert imgs.shape == (3, H, W, 3)  # no preset: the input's size
    assert meta["focus_distances_m"] == [0.8, 1.5, 3.0]
    assert meta["camera"] == {"focal_length_mm": 50.0, "f_number": 8.0, "pixel_size_um": 12.0}
    depth_m = np.asarray(Image.open(inputs["depth_png"])).astype(np.float64) / 1000.0
    np.testing.assert_allclose(gt_depth, depth_m.astype(np.float32), rtol=1e-6)
    assert gt_depth[3, 4] == 0.0  # the hole is marked unknown in the ground truth
    np.testing.assert_array_equal(gt_aif, np.asarray(Image.open(inputs["rgb"])))
    # the same depth as float metres or as integer millimetres gives the same stack
    _, imgs_b, gt_depth_b, _ = _read_out(b)
    np.testing.assert_allclose(gt_depth_b, gt_depth, rtol=1e-6)
    assert np.abs(imgs.astype(int) - imgs_b.astype(int)).max() <= 1
    # inputs untouched
    after = {k: v for k, v in _snapshot(tmp_path).items() if k in before}
    assert after == before


def test_rgbd_with_preset_resizes_and_realistic(tmp_path, inputs, capsys):
    out = tmp_path / "preset"
    rc, _, err = _render(
        ["--rgb", inputs["rgb"], "--depth", inputs["depth_tiff"], "--preset", "nyuv2", "--protocol", "realistic",
         "--seed", "5", "-o", out],
        capsys,
    )
    assert rc == 0, err
    meta, imgs, gt_depth, gt_aif = _read_out(out)
    assert imgs.shape == (5, 240, 320, 3) and gt_aif.shape == (240, 320, 3) and gt_depth.shape == (240, 320)
    assert meta["focus_distances_m"] == [1.0, 1.5, 2.5, 4.0, 6.0]


def test_replaces_previous_stack_folder(tmp_path, capsys):
    out = tmp_path / "stack"
    small = ["--size", "16", "20", *CAMERA_FLAGS]
    assert _render(["--procedural", "1", *small, "--focus", "1,2", "-o", out], capsys)[0] == 0
    assert _render(["--procedural", "2", *small, "--focus", "1", "-o", out], capsys)[0] == 0
    assert sorted(p.name for p in out.iterdir()) == ["focus_0.png", "gt_aif.png", "gt_depth.tiff", "stack.json"]


# ---------------------------------------------------------------------------------------------------- errors
def _error_cases(f: dict[str, Path]) -> dict[str, tuple[list, str]]:
    rgbd = ["--rgb", f["rgb"], "--depth", f["depth_tiff"]]
    return {
        "missing rgb": (["--rgb", f["rgb"].with_name("nope.png"), "--depth", f["depth_tiff"], "--preset", "nyuv2"],
                        "cannot read image"),
        "missing depth": (["--rgb", f["rgb"], "--depth", f["rgb"].with_name("nope.tiff"), "--preset", "nyuv2"],
                          "cannot read depth"),
        "corrupt rgb": (["--rgb", f["corrupt"], "--depth", f["depth_tiff"], "--preset", "nyuv2"], "cannot read image"),
        "depth size mismatch": (["--rgb", f["rgb"], "--depth", f["depth_small"], "--preset", "nyuv2"], "--depth"),
        "integer depth without scale": (["--rgb", f["rgb"], "--depth", f["depth_png"], "--preset", "nyuv2"],
                                        "--depth-scale"),
        "bad depth scale": (["--rgb", f["rgb"], "--depth", f["depth_png"], "--depth-scale", "-1", "--preset", "nyuv2"],
                            "--depth-scale"),
        "nan focus": ([*rgbd, "--preset", "nyuv2", "--focus", "1,nan"], "finite"),
        "inf focus": ([*rgbd, "--preset", "nyuv2", "--focus", "inf"], "finite"),
        "negative focus": ([*rgbd, "--preset", "nyuv2", "--focus=-1,2"], "focus"),
        "zero focus": ([*rgbd, *CAMERA_FLAGS, "--focus", "0"], "focus"),
        "focus inside focal length": ([*rgbd, "--preset", "nyuv2", "--focus", "0.01"], "focal length"),
        "incomplete camera": ([*rgbd, "--focus", "1", "--focal-length-mm", "50", "--f-number", "8"],
                              "--pixel-size-um"),
        "impossible camera": ([*rgbd, "--focus", "1", "--focal-length-mm", "50", "--f-number", "0",
                               "--pixel-size-um", "12"], "f-number"),
        "pixel size in wrong units": ([*rgbd, "--focus", "1", "--focal-length-mm", "50", "--f-number", "8",
                                       "--pixel-size-um", "12000"], "pixel size"),
        "unknown preset": ([*rgbd, "--preset", "iphone"], "unknown preset"),
        "no camera": ([*rgbd, "--focus", "1"], "--preset"),
        "no focus": ([*rgbd, *CAMERA_FLAGS], "--focus"),
        "no source": (["--preset", "nyuv2"], "--rgb"),
        "two sources": (["--procedural", "1", *rgbd, "--preset", "nyuv2"], "either"),
    }


ERROR_NAMES = list(_error_cases({k: Path(k) for k in ("rgb", "depth_tiff", "depth_png", "depth_small", "corrupt")}))


@pytest.mark.parametrize("case", ERROR_NAMES)
def test_errors_one_line_exit_2_no_output(case, tmp_path, inputs, capsys):
    args, fragment = _error_cases(inputs)[case]
    before = _snapshot(tmp_path)
    out = tmp_path / "out"
    rc, stdout, err = _render([*args, "-o", out], capsys)
    assert rc == 2
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("defocus render: error: ")
    assert fragment in lines[0]
    assert "Traceback" not in err
    assert stdout == ""
    assert not out.exists()
    assert _snapshot(tmp_path) == before  # inputs unchanged, no temporary leftovers
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(p.name for p in inputs.values())


def test_existing_unrelated_output_folder_is_kept(tmp_path, capsys):
    out = tmp_path / "precious"
    out.mkdir()
    (out / "notes.txt").write_text("keep me")
    rc, _, err = _render(["--procedural", "1", "--size", "8", "8", *CAMERA_FLAGS, "--focus", "1", "-o", out], capsys)
    assert rc == 2 and len(err.strip().splitlines()) == 1
    assert [p.name for p in out.iterdir()] == ["notes.txt"]
    assert (out / "notes.txt").read_text() == "keep me"


# ------------------------------------------------------------------------------------------------ subprocess
def _run_module(args: list, cwd: Path) -> subprocess.CompletedProcess:
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONWARNINGS="default")
    return subprocess.run(
        [sys.executable, "-m", "defocus.cli", "render", *[str(a) for a in args]],
        cwd=cwd, env=env, capture_output=True, text=True, timeout=300,
    )


def test_subprocess_entry_point(tmp_path, inputs):
    bad = _run_module(["--rgb", inputs["corrupt"], "--depth", inputs["depth_tiff"], "--preset", "nyuv2",
                       "-o", tmp_path / "bad"], tmp_path)
    assert bad.returncode == 2
    assert "Traceback" not in bad.stderr
    assert len(bad.stderr.strip().splitlines()) == 1, bad.stderr
    assert bad.stderr.startswith("defocus render: error: cannot read image")
    assert not (tmp_path / "bad").exists()
    good = _run_module(["--rgb", inputs["rgb"], "--depth", inputs["depth_png"], "--depth-scale", "0.001",
                        *CAMERA_FLAGS, "--focus", "1,2", "-o", tmp_path / "good"], tmp_path)
    assert good.returncode == 0, good.stderr
    assert "Traceback" not in good.stderr and good.stderr.strip() == ""
    assert (tmp_path / "good" / "stack.json").is_file()


# ------------------------------------------------------------------------------------- done when (issue 2)
def _reference_paper_stack(rgb: np.ndarray, depth: np.ndarray, focus: list[float], f: float, n_f: float,
                           p: float) -> np.ndarray:
    """The `paper` protocol written independently of defocus.optics, in numpy.

    rgb (H, W, 3) in [0, 1], depth (H, W) metres, thin lens f (m), f-number n_f, pixel pitch p (m).
    Per pixel σ = c/(4p) with c = A·s·|1/fd − 1/d|; each source pixel spreads a sampled Gaussian
    exp(−x²/2σ²)·exp(−y²/2σ²) cut at ⌈3σ⌉ and normalised within that window (σ < 0.5 px: a delta); each
    output pixel is divided by the weight it received (only pixels inside the image contribute); 8-bit, round
    half up.
    Loops over offsets, vectorised over pixels. Returns (N, H, W, 3) uint8.
    """
    h, w, _ = rgb.shape
    img = rgb.transpose(2, 0, 1).astype(np.float64)
    outs = []
    for fd in focus:
        aperture = f / n_f
        s = fd * f / (fd - f)
        sigma = aperture * s * np.abs(1.0 / fd - 1.0 / depth) / (4.0 * p)
        delta = sigma < 0.5
        rad = np.where(delta, 0, np.ceil(3.0 * sigma)).astype(np.int64)
        rmax = int(rad.max())
        safe = np.where(delta, 1.0, sigma)
        offs = np.arange(-rmax, rmax + 1)
        e = np.exp(-(offs[:, None, None] ** 2) / (2.0 * safe[None] ** 2))  # (2R+1, H, W) 1-D weights per pixel
        e = np.where(np.abs(offs)[:, None, None] <= rad[None], e, 0.0)
        e[rmax][delta] = 1.0
        e /= e.sum(axis=0)[None]  # so that the 2-D kernel e[dy]·e[dx] sums to 1 over its window
        num = np.zeros((3, h, w))
        den = np.zeros((h, w))
        for dy in range(-rmax, rmax + 1):
            sy, ty = slice(max(0, -dy), min(h, h - dy)), slice(max(0, dy), min(h, h + dy))
            ey = e[dy + rmax][sy]
            for dx in range(-rmax, rmax + 1):
                sx, tx = slice(max(0, -dx), min(w, w - dx)), slice(max(0, dx), min(w, w + dx))
                wgt = ey[:, sx] * e[dx + rmax][sy, sx]
                num[:, ty, tx] += wgt * img[:, sy, sx]
                den[ty, tx] += wgt
        out = num / den
        outs.append(np.floor(np.clip(out, 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8).transpose(1, 2, 0))
    return np.stack(outs)


def test_done_when_nyu_paper_matches_independent_reference(shared_data, tmp_path, capsys):
    folder = shared_data / "rgbd" / "nyuv2_labeled_0045_hollyjackson"
    rgb_path, depth_path = folder / "rgb_0045.png", folder / "depth_0045_0.1mm.png"
    before = {rgb_path: rgb_path.read_bytes(), depth_path: depth_path.read_bytes()}
    out = tmp_path / "nyu_0045"
    rc, _, err = _render(["--rgb", rgb_path, "--depth", depth_path, "--depth-scale", "1e-4", "--preset", "nyuv2",
                          "--protocol", "paper", "-o", out], capsys)
    assert rc == 0, err
    assert all(p.read_bytes() == b for p, b in before.items())
    meta, imgs, gt_depth, gt_aif = _read_out(out)
    assert imgs.shape == (5, 240, 320, 3)

    # independent preprocessing: 640x480 → 320x240, rgb by 2x2 mean (area), depth by nearest (every other pixel
    # starting at 0: F.interpolate's nearest picks source index floor(i·2)); uint16 in 0.1 mm → metres
    rgb8 = np.asarray(Image.open(rgb_path).convert("RGB"))
    assert rgb8.shape == (480, 640, 3)
    rgb = (rgb8.astype(np.float32) / np.float32(255.0)).astype(np.float64)
    rgb = rgb.reshape(240, 2, 320, 2, 3).mean(axis=(1, 3))
    depth = (np.asarray(Image.open(depth_path)).astype(np.float64) * 1e-4).astype(np.float32)[::2, ::2]
    assert depth.min() > 0  # this frame has no holes
    np.testing.assert_array_equal(gt_depth, depth)
    assert np.abs(gt_aif.astype(int) - np.floor(rgb * 255 + 0.5).astype(int)).max() <= 1

    ref = _reference_paper_stack(rgb, depth.astype(np.float64), meta["focus_distances_m"], 50e-3, 8.0, 12e-6)
    for i in range(5):
        mad = np.abs(imgs[i].astype(np.float64) - ref[i].astype(np.float64)).mean()
        assert mad <= 1.0, f"focus_{i}: mean |difference| {mad:.3f} 8-bit levels"
        # and the stack really is blurred (the check is not trivially met by the sharp image)
        assert np.abs(ref[i].astype(np.float64) - np.floor(rgb * 255 + 0.5)).mean() > 1.0
