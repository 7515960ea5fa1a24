"""Tests of the real-photo path: working size and full-resolution outputs, AIF composition, point cloud, files."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
import tifffile
from PIL import Image

import defocus.visualize as viz
from defocus.data.codecs import read_depth, read_ply_points
from defocus.data.procedural import SCENE_DEPTH_RANGE_M, make_scene
from defocus.data.synthesis import stack_from_scene, synthesize_stack
from defocus.errors import DefocusError
from defocus.metrics import depth_metrics
from defocus.models.factory import create_model
from defocus.optics.camera import get_preset
from defocus.outputs import point_cloud, write_prediction
from defocus.predict import PredictOptions, compose_aif, predict_stack, working_size

NYU = get_preset("nyuv2")


@pytest.fixture(scope="module")
def big_stack():
    """A 480 x 640 procedural stack (the nyuv2 camera at twice the preset's resolution: half the pitch)."""
    rgb, depth = make_scene(1_000_500, 480, 640, SCENE_DEPTH_RANGE_M["nyuv2"])
    return stack_from_scene(rgb, depth, NYU.focus_distances_m, NYU.camera.resized(2.0), "paper", name="big")


def test_working_size_never_upscales():
    assert working_size(480, 640, 320) == ((240, 320), 0.5)
    assert working_size(100, 80, 640) == ((100, 80), 1.0)
    with pytest.raises(DefocusError, match="at least 16 pixels") as info:
        PredictOptions(max_size=8)
    assert info.value.field == "max_size"


def test_outputs_come_back_at_full_resolution_and_close_to_full_estimation(big_stack):
    model = create_model("classical")
    full_res = predict_stack(model, big_stack, max_size=640, align=False)
    small = predict_stack(model, big_stack, max_size=320, align=False)
    assert small.working_size == (240, 320) and small.scale == 0.5
    assert small.full.depth.shape == (1, 1, 480, 640) and small.full.aif.shape == (1, 3, 480, 640)
    assert small.full.confidence.shape == (1, 1, 480, 640)
    gt = torch.from_numpy(big_stack.gt_depth)
    m_full = depth_metrics(full_res.full.depth_map, gt)
    m_small = depth_metrics(small.full.depth_map, gt)
    assert m_small["abs_rel"] < 1.5 * m_full["abs_rel"] + 0.02  # the cost of the speed stays small
    assert set(small.timings) == {"align", "estimate", "solve", "upsample"}


def test_full_resolution_aif_is_composed_from_the_frames():
    # Two frames: frame 0 sharp where the depth equals its focus, frame 1 elsewhere: the AIF picks accordingly.
    frames = torch.zeros(2, 3, 4, 6)
    frames[0] = 0.2
    frames[1] = 0.8
    inv = torch.full((1, 1, 4, 6), 1.0)  # depth 1 m: frame 0 (focus 1 m) is in focus
    inv[..., 3:] = 0.25  # depth 4 m: frame 1 (focus 4 m) is in focus
    aif = compose_aif(frames, inv, torch.tensor([1.0, 4.0]), torch.tensor([10.0, 10.0]))
    torch.testing.assert_close(aif[..., :3], torch.full((1, 3, 4, 3), 0.2), atol=1e-4, rtol=0)
    torch.testing.assert_close(aif[..., 3:], torch.full((1, 3, 4, 3), 0.8), atol=1e-4, rtol=0)


def test_point_cloud_follows_the_pinhole_model():
    depth = torch.full((4, 6), 2.0)
    aif = torch.rand(3, 4, 6)
    xyz, rgb = point_cloud(depth, aif, focal_length_px=100.0, principal_point=(3.0, 2.0))
    assert xyz.shape == (24, 3) and rgb.shape == (24, 3) and rgb.dtype == np.uint8
    np.testing.assert_allclose(xyz[:, 2], 2.0)
    # Pixel (row 0, column 0) has its centre at (0.5, 0.5): x = (0.5 − 3) / 100 · 2, y = (0.5 − 2) / 100 · 2.
    np.testing.assert_allclose(xyz[0], [-0.05, -0.03, 2.0], rtol=1e-6)
    mask = torch.zeros(4, 6, dtype=torch.bool)
    mask[1, 2] = True
    xyz1, _ = point_cloud(depth, aif, 100.0, (3.0, 2.0), mask=mask)
    assert xyz1.shape == (1, 3)
    xyz2, _ = point_cloud(torch.full((100, 100), 1.0), torch.rand(3, 100, 100), 50.0, (50, 50), max_points=100)
    assert len(xyz2) <= 100


def test_write_prediction(big_stack, tmp_path):
    result = predict_stack(create_model("classical"), big_stack, max_size=320, align=False)
    out = write_prediction(tmp_path / "big", result, {"defocus_version": "test"}, min_confidence=0.3)
    names = {p.name for p in out.iterdir()}
    assert names == {"depth.tiff", "depth.png", "depth_preview.png", "aif.png", "confidence.tiff", "confidence.png",
                     "points.ply", "report.png", "prediction.json"}
    depth = read_depth(out / "depth.tiff")
    assert depth.shape == (480, 640)
    conf = result.full.confidence[0, 0].numpy()
    assert (depth[conf < 0.3] == 0).all() and (depth[conf >= 0.3] > 0).all()
    info = json.loads((out / "prediction.json").read_text())
    assert info["defocus_version"] == "test" and info["working_size"] == [320, 240] and info["output_size"] == [640, 480]
    assert info["min_confidence"] == 0.3 and 0 < info["masked_fraction"] < 1
    xyz, _ = read_ply_points(out / "points.ply")
    assert len(xyz) == info["points"] > 0
    with Image.open(out / "report.png") as im:
        assert im.width > 640
    # Intrinsics of the output pixels, in the OpenCV / Open3D convention: projecting the point cloud with them
    # lands every point on the integer pixel whose depth it came from.
    k = info["intrinsics"]
    cam = big_stack.camera
    assert (k["width"], k["height"]) == (640, 480)
    assert k["fx"] == k["fy"] == pytest.approx(cam.focal_length_m / cam.pixel_size_m)
    assert (k["cx"], k["cy"]) == (319.5, 239.5)
    u = k["fx"] * xyz[:, 0] / xyz[:, 2] + k["cx"]
    v = k["fy"] * xyz[:, 1] / xyz[:, 2] + k["cy"]
    assert np.abs(u - np.round(u)).max() < 1e-3 and np.abs(v - np.round(v)).max() < 1e-3
    ui, vi = np.round(u).astype(int), np.round(v).astype(int)
    np.testing.assert_allclose(depth[vi, ui], xyz[:, 2], rtol=1e-5)


def test_automatic_working_size_matches_the_blur_the_network_knows():
    from defocus.predict import MIN_BLUR_PER_DIOPTRE, TARGET_BLUR_PER_DIOPTRE, WORKING_PIXEL_BUDGET

    # A large blur per dioptre: shrink until K reaches the target ...
    (h, w), s = working_size(1536, 2048, None, blur_per_dioptre_max=2 * TARGET_BLUR_PER_DIOPTRE)
    assert s == pytest.approx(0.5) and (h, w) == (768, 1024)
    # ... but not below MIN_AUTO_LONG_SIDE on the longest side, nor shrink a small image at all.
    (h, w), s = working_size(480, 640, None, blur_per_dioptre_max=4 * TARGET_BLUR_PER_DIOPTRE)
    assert (h, w) == (384, 512) and s == pytest.approx(512 / 640)
    assert working_size(240, 320, None, blur_per_dioptre_max=54.0) == ((240, 320), 1.0)
    # A small one (a phone at full size): no upscaling.
    assert working_size(480, 640, None, blur_per_dioptre_max=5.0)[1] == 1.0
    # Too many pixels: towards the budget, but never below the smallest useful K.
    (h, w), s = working_size(3072, 4080, None, blur_per_dioptre_max=10.4)
    assert s == pytest.approx(MIN_BLUR_PER_DIOPTRE / 10.4)
    (h, w), s = working_size(3072, 4080, None, blur_per_dioptre_max=40.0)  # the target would need 5 MP
    assert s == pytest.approx((WORKING_PIXEL_BUDGET / (3072 * 4080)) ** 0.5) and h * w <= 1.001 * WORKING_PIXEL_BUDGET
    assert s * 40.0 > MIN_BLUR_PER_DIOPTRE
    # An explicit --max-size wins.
    assert working_size(3072, 4080, 1020, blur_per_dioptre_max=10.4)[0] == (768, 1020)


@pytest.mark.parametrize("n", [1, 100, 512, 513, 1000, 1701, 2261, 4080])
def test_tile_layout_covers_with_overlap_and_fewest_tiles(n):
    from defocus.predict import _tile_layout

    starts, size = _tile_layout(n, 512, 64)
    assert starts[0] == 0 and starts[-1] + size == n  # covers both ends
    assert size <= 512 and (size == n or size % 16 == 0)
    assert all(a + size - b >= 63 for a, b in zip(starts, starts[1:]))  # neighbours share the overlap (±1 rounding)
    fewest = 1 if n <= 512 else -(-(n - 64) // (512 - 64))
    assert len(starts) == fewest
    if len(starts) > 1:  # the smallest multiple of 16 that does it: 16 px less could not cover n
        assert len(starts) * (size - 16) - (len(starts) - 1) * 64 < n


def test_tiles_agree_with_one_pass():
    from defocus.predict import run_tiled

    torch.manual_seed(0)
    model = create_model("daifnet_tiny").eval()
    g = torch.Generator().manual_seed(0)
    stack = torch.rand(1, 3, 3, 40, 56, generator=g)
    fd = torch.tensor([[1.0, 2.0, 4.0]])
    k = NYU.camera.blur_per_dioptre(fd)
    dr = torch.tensor([[0.5, 8.0]], dtype=torch.float64)
    with torch.no_grad():
        whole = model(stack, fd, k, dr)
        tiled = run_tiled(model, stack, fd, k, dr, tile=32, overlap=12)
    assert tiled.depth.shape == whole.depth.shape and tiled.aif.shape == whole.aif.shape
    # Tiles see less context than the whole image (the stack-wide pooling is per tile), so they differ somewhat;
    # but the blend has no seams: the tiled result is as smooth across tile borders as inside tiles.
    rel = ((tiled.depth - whole.depth).abs() / whole.depth).mean()
    assert float(rel) < 0.25
    with torch.no_grad():
        same = run_tiled(model, stack, fd, k, dr, tile=64, overlap=12)  # one tile covers it: identical
    torch.testing.assert_close(same.depth, whole.depth)


def test_a_registered_stack_keeps_its_frames_and_full_size():
    """Alignment on by default: a registered (synthetic) stack is not resampled, not cropped and not warned about,
    even with the alignment allowed to overwrite the frames in place."""
    rgb, depth = make_scene(1_000_321, 240, 320, SCENE_DEPTH_RANGE_M["nyuv2"])
    for protocol in ("paper", "realistic"):
        stack = stack_from_scene(rgb, depth, NYU.focus_distances_m, NYU.camera, protocol, name=protocol)
        before = stack.images.clone()
        result = predict_stack(create_model("classical"), stack, in_place=True)
        assert result.alignment is not None and not result.alignment.applied, result.alignment.reason
        assert result.crop_box == (0, 0, 320, 240) and result.depth_map.shape == (240, 320)
        assert torch.equal(stack.images, before)
        assert not any("focus order" in w for w in result.warnings)


def test_the_solve_is_on_by_default_and_can_be_turned_off(big_stack):
    on = predict_stack(create_model("classical"), big_stack, max_size=160)
    off = predict_stack(create_model("classical"), big_stack, max_size=160, solve=False)
    assert "solve" in on.timings and "solve" not in off.timings
    assert on.depth_map.shape == off.depth_map.shape and torch.isfinite(on.depth_map).all()
    assert not torch.equal(on.working.inv_depth, off.working.inv_depth)
    near, far = on.depth_range
    assert float(on.depth_map.min()) >= near - 1e-6 and float(on.depth_map.max()) <= far + 1e-6
    with pytest.raises(DefocusError, match="smoothness") as info:
        PredictOptions(solve=True, solve_smoothness=-1.0)
    assert info.value.field == "solve_smoothness"
    # The network's solve takes the classical estimate as a second data term unless told not to.
    net = create_model(pretrained=True)
    both = predict_stack(net, big_stack, max_size=160)
    alone = predict_stack(net, big_stack, max_size=160, solve_classical=False)
    assert not torch.equal(both.working.inv_depth, alone.working.inv_depth)
    assert both.options.describe()["solve_classical"] is True


def test_relative_preview_paints_frame_0_red_like_near_and_keeps_its_title(tmp_path):
    """The relative focus-index preview follows the metric convention (frame 0, usually the nearest focus, red) and
    its label is the sheet's title, whole."""
    from defocus.data.folders import read_stack

    rgb, depth = make_scene(5, 96, 128, SCENE_DEPTH_RANGE_M["nyuv2"])
    fd = torch.tensor(NYU.focus_distances_m)
    folder = tmp_path / "plain"
    folder.mkdir()
    for i, img in enumerate(synthesize_stack(rgb, depth, fd, NYU.camera, "paper")):
        Image.fromarray((img.permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)).save(folder / f"f{i}.png")
    stack = read_stack(folder, require_focus=False)
    result = predict_stack(None, stack, align=False)
    out = write_prediction(tmp_path / "out", result)
    index = tifffile.imread(out / "focus_index.tiff")
    with Image.open(out / "focus_index_preview.png") as im:
        sheet = np.asarray(im.convert("RGB")).astype(int)
    # Locate the picture: the sheet's rows that are not white background, from the bottom.
    h, w = index.shape
    top = sheet.shape[0] - viz.SHEET_PAD - h
    pic = sheet[top : top + h, viz.SHEET_PAD : viz.SHEET_PAD + w]
    near = index < 0.5
    far = index > len(fd) - 1.5
    assert near.any() and far.any()
    assert pic[near][:, 0].mean() > pic[near][:, 2].mean() + 40  # frame 0: red
    assert pic[far][:, 0].mean() < pic[near][:, 0].mean() - 80  # last frame: turbo's cold (dark blue) end
    assert sheet.shape[1] > w  # widened for its title if needed, never cut
