"""Tests of defocus.eval.visualize: colour maps, depth/error previews, contact sheets, PIL line plots."""

import numpy as np
import pytest
import torch
from PIL import Image

from defocus.errors import DefocusError
from defocus import visualize as viz


def _ramp(h=8, w=64):
    return np.tile(np.linspace(0.0, 1.0, w), (h, 1))


def test_colorize_shape_dtype_and_clipping():
    v = _ramp() * 3.0 - 1.0  # spans [-1, 2]
    out = viz.colorize(v, 0.0, 1.0)
    assert out.shape == (8, 64, 3) and out.dtype == np.uint8
    lut = viz.colormap_lut("turbo")
    np.testing.assert_array_equal(out[0, 0], lut[0])  # below vmin → low end
    np.testing.assert_array_equal(out[0, -1], lut[255])  # above vmax → high end


def test_turbo_low_end_blue_high_end_red():
    lut = viz.colormap_lut("turbo").astype(int)
    lo, hi = lut[20], lut[235]
    assert lo[2] > lo[0] and lo[2] > lo[1]  # bluish
    assert hi[0] > hi[1] and hi[0] > hi[2]  # reddish
    assert not np.array_equal(lut[0], lut[255])


def test_inferno_dark_to_light_monotone():
    lut = viz.colormap_lut("inferno").astype(float)
    luma = lut @ np.array([0.299, 0.587, 0.114])
    assert np.all(np.diff(luma) >= -1.0)  # non-decreasing up to rounding
    assert luma[0] < 10 and luma[-1] > 220


def test_colorize_invalid_and_nan_black():
    v = _ramp(4, 4)
    v[0, 0] = np.nan
    inv = np.zeros((4, 4), bool)
    inv[1, 1] = True
    out = viz.colorize(v, 0.0, 1.0, "inferno", invalid=inv)
    assert out[0, 0].tolist() == [0, 0, 0] and out[1, 1].tolist() == [0, 0, 0]
    assert out[3, 3].sum() > 300


def test_colorize_bad_inputs():
    with pytest.raises(DefocusError):
        viz.colorize(np.zeros(5), 0, 1)
    with pytest.raises(DefocusError):
        viz.colorize(np.zeros((2, 3, 4)), 0, 1)
    with pytest.raises(DefocusError):
        viz.colorize(np.zeros((3, 3)), 1, 1)
    with pytest.raises(DefocusError):
        viz.colorize(np.zeros((3, 3)), 0, 1, cmap="jet")
    with pytest.raises(DefocusError):
        viz.colorize(np.zeros((3, 3)), 0, 1, invalid=np.zeros((2, 2), bool))


def test_depth_preview_size_bar_and_near_is_warm():
    h, w = 96, 128
    depth = np.linspace(0.5, 5.0, h)[:, None].repeat(w, axis=1)  # near at the top
    depth[-5:, :5] = np.nan
    im = viz.depth_preview(depth)
    assert isinstance(im, Image.Image) and im.mode == "RGB"
    assert h + 10 < im.height < h + 120 and im.width > w + 30  # the caption band below
    a = np.asarray(im).astype(int)
    assert a[2, w // 2, 0] > a[2, w // 2, 2]  # near: red dominates
    far = int(np.argmin(np.abs(depth[:, w // 2] - 2.5)))  # inverse depth near the low end, above turbo's dark tail
    assert a[far, w // 2, 2] > a[far, w // 2, 0] + 50  # far: blue dominates
    assert a[h - 2, 1].tolist() == [0, 0, 0]  # invalid
    # A colour bar: a column right of the image with many distinct saturated colours.
    bar = a[:, w:, :]
    spread = bar.max(axis=2) - bar.min(axis=2)
    col = int(np.argmax((spread > 80).sum(axis=0)))
    assert (spread[:, col] > 80).sum() > h // 2
    assert len({tuple(p) for p in a[:, w + col]}) > 20


def test_depth_preview_title_and_explicit_range():
    depth = np.full((50, 60), 2.0)
    im = viz.depth_preview(depth, vmin=1.0, vmax=4.0, title="scene")
    assert im.height > 50 and im.width > 60
    im2 = viz.depth_preview(np.full((50, 60), 2.0))  # constant depth: widened range, no error
    assert 50 < im2.height < 150
    with pytest.raises(DefocusError):
        viz.depth_preview(np.ones((2, 3, 4)))
    with pytest.raises(DefocusError):
        viz.depth_preview(depth, vmin=3.0, vmax=2.0)


def test_depth_preview_text_scales_with_the_image_and_the_clip_is_said():
    small = viz.depth_preview(np.linspace(0.5, 5.0, 120)[:, None].repeat(160, axis=1))
    big = viz.depth_preview(np.linspace(0.5, 5.0, 2400)[:, None].repeat(3200, axis=1))
    # Labels 1/40 of the height: the bar area and caption band grow with the image (12 px labels on 4000 px did not).
    assert (big.width - 3200) > 4 * (small.width - 160) and (big.height - 2400) > 2 * (small.height - 120)
    depth = np.concatenate([np.full(90, 0.31), np.linspace(0.4, 1.98, 900), np.full(10, 8.84)])[:, None]
    caption, below, above = viz.depth_colour_caption(depth, 0.40, 1.98)
    assert below == pytest.approx(0.09) and above == pytest.approx(0.01)
    assert "0.4 m (red) to 1.98 m (blue)" in caption and "0.31 m to 8.84 m" in caption and "10 % of it clipped" in caption
    caption, below, above = viz.depth_colour_caption(depth, 0.3, 9.0)
    assert below == above == 0 and "clipped" not in caption


def test_error_map():
    gt = np.full((10, 12), 2.0)
    pred = gt.copy()
    pred[:, 6:] = 3.0  # rel error 0.5 = max_rel
    gt[0, 0] = 0.0
    valid = np.ones_like(gt, bool)
    valid[1, 1] = False
    out = viz.error_map(pred, gt, valid=valid)
    assert out.shape == (10, 12, 3) and out.dtype == np.uint8
    assert out[0, 0].tolist() == list(viz.ERROR_INVALID_RGB) == out[1, 1].tolist()
    lut = viz.colormap_lut("inferno")
    assert out[5, 2].tolist() == lut[0].tolist()
    assert out[5, 10].tolist() == lut[255].tolist()
    with pytest.raises(DefocusError):
        viz.error_map(pred, gt[:, :5])


def test_contact_sheet_2x3_dimensions_and_inputs():
    ch = 40
    u8 = np.zeros((20, 40, 3), np.uint8)  # → 80 px wide
    f01 = np.ones((40, 40, 3), np.float32) * 0.5  # → 40
    tens = torch.rand(3, 10, 30)  # → 120
    pil = Image.new("RGB", (20, 40), (255, 0, 0))  # → 20
    rows = [[("a", u8), ("b", f01), ("c", tens)], [("d", pil), ("e", u8), ("f", f01)]]
    sheet = viz.contact_sheet(rows, cell_height=ch)
    p = viz.SHEET_PAD
    assert sheet.mode == "RGB"
    assert sheet.width == p + (80 + p) + (40 + p) + (120 + p)
    label_h = (sheet.height - p) // 2 - ch - p
    assert sheet.height == p + 2 * (label_h + ch + p) and 5 < label_h < 40
    a = np.asarray(sheet)
    assert a[0, 0].tolist() == [255, 255, 255]  # white background
    # row 2, first cell (red image) sits at the left pad under its label
    y = p + (label_h + ch + p) + label_h + ch // 2
    assert a[y, p + 5].tolist() == [255, 0, 0]
    titled = viz.contact_sheet([[("x", u8)]], cell_height=ch, title="Title")
    assert titled.height > viz.contact_sheet([[("x", u8)]], cell_height=ch).height


def test_contact_sheet_bad_inputs():
    with pytest.raises(DefocusError):
        viz.contact_sheet([])
    with pytest.raises(DefocusError):
        viz.contact_sheet([[("a", np.zeros((4, 4, 4), np.uint8))]])
    with pytest.raises(DefocusError):
        viz.contact_sheet([[("a", torch.zeros(2, 3, 4, 5))]])
    with pytest.raises(DefocusError):
        viz.contact_sheet([[np.zeros((4, 4, 3))]])


def test_save_png_atomic(tmp_path):
    path = tmp_path / "sub" / "x.png"
    viz.save_png(path, np.zeros((5, 6, 3), np.uint8))
    with Image.open(path) as im:
        assert im.size == (6, 5)
    assert [p.name for p in path.parent.iterdir()] == ["x.png"]  # no temporary left behind


def test_contact_sheet_large_tensor_cell_matches_a_full_size_conversion():
    """A large float tensor is area-reduced before it is converted to 8 bits (speed); the cell looks the same as
    converting the full-size image and resizing it."""
    g = torch.Generator().manual_seed(3)
    big = torch.nn.functional.interpolate(torch.rand(1, 3, 30, 40, generator=g), size=(600, 800), mode="bilinear")[0]
    sheet = np.asarray(viz.contact_sheet([[("x", big)]], cell_height=60)).astype(float)
    ref = np.asarray(viz.contact_sheet([[("x", viz.to_pil(big))]], cell_height=60)).astype(float)
    assert sheet.shape == ref.shape
    assert np.abs(sheet - ref).mean() < 2.0  # 8-bit levels
    small = torch.rand(3, 50, 40, generator=g)  # not taller than twice the cell: converted as given
    assert viz._shrink_tensor(small, 100) is small
    assert viz._shrink_tensor(big, 100).shape == (3, 100, 133)
