"""Tests of the RGB-D index reader: every depth format, from fixture files written here in that format; the split
never puts one scene group in two parts."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from defocus.data.rgbd_index import FOCUS_BY_KIND, SPLIT, load_rgbd, read_index, split_of
from defocus.errors import DefocusError

H, W = 6, 8


def _write_index(folder, rows):
    lines = ["id,rgb,depth,depth_format,metres_per_unit,scene_group,kind,notes"]
    lines += [",".join(r) + ",note" for r in rows]
    (folder / "INDEX.csv").write_text("\n".join(lines) + "\n")
    return read_index(folder / "INDEX.csv")


@pytest.fixture
def fixtures(tmp_path):
    rng = np.random.default_rng(0)
    rgb = rng.integers(0, 256, (H, W, 3), dtype=np.uint8)
    Image.fromarray(rgb).save(tmp_path / "rgb.png")
    metres = rng.uniform(0.5, 4.0, (H, W)).astype(np.float32)
    metres[0, 0] = 0.0  # a hole
    mm = np.round(metres * 1000).astype(np.uint16)
    Image.fromarray(mm).save(tmp_path / "d_mm.png")
    rotated = ((mm.astype(np.uint32) << 3) | (mm.astype(np.uint32) >> 13)) & 0xFFFF  # SUN RGB-D storage
    Image.fromarray(rotated.astype(np.uint16)).save(tmp_path / "d_sun.png")
    np.save(tmp_path / "d.npy", metres)
    np.save(tmp_path / "d_dict.npy", np.array({"image": rgb, "depth": np.where(metres > 0, metres, np.nan)},
                                              dtype=object), allow_pickle=True)
    # PFM disparity (little-endian, rows bottom-up) with a calib.txt: Z = f·B / (d + doffs) / 1000.
    f_px, baseline, doffs = 700.0, 60.0, 2.0
    safe = np.where(metres > 0, metres, 1.0)
    disp = np.where(metres > 0, f_px * baseline / (safe * 1000.0) - doffs, np.inf).astype("<f4")
    (tmp_path / "pfm").mkdir()
    with open(tmp_path / "pfm" / "disp0.pfm", "wb") as f:
        f.write(b"Pf\n" + f"{W} {H}\n-1.0\n".encode() + np.flipud(disp).tobytes())
    (tmp_path / "pfm" / "calib.txt").write_text(
        f"cam0=[{f_px} 0 4; 0 {f_px} 3; 0 0 1]\ndoffs={doffs}\nbaseline={baseline}\nwidth={W}\nheight={H}\n")
    entries = _write_index(tmp_path, [
        ["a", "rgb.png", "d_mm.png", "png_uint16", "0.001", "g1", "indoor"],
        ["b", "rgb.png", "d_sun.png", "png_uint16_sun_bitrotated", "0.001", "g1", "indoor"],
        ["c", "rgb.png", "d.npy", "npy_float32", "1.0", "g2", "tabletop"],
        ["d", "d_dict.npy", "d_dict.npy", "npy_pickle_dict", "1.0", "g2", "tabletop"],
        ["e", "rgb.png", "pfm/disp0.pfm", "pfm_disparity", "", "g3", "outdoor"],
    ])
    return entries, rgb, metres


def test_every_depth_format_reads_to_metres(fixtures):
    entries, rgb, metres = fixtures
    assert [e.id for e in entries] == ["a", "b", "c", "d", "e"] and entries[4].metres_per_unit is None
    for e in entries:
        img, depth = load_rgbd(e)
        assert img.shape == (3, H, W) and depth.shape == (H, W) and depth.dtype == np.float32, e.id
        np.testing.assert_array_equal(np.round(img.numpy().transpose(1, 2, 0) * 255), rgb)
        assert depth[0, 0] == 0.0, e.id  # the hole stays unknown
        tol = 6e-4 if e.depth_format.startswith("png") else 1e-5  # mm quantisation
        np.testing.assert_allclose(depth[1:, 1:], metres[1:, 1:], atol=tol, rtol=1e-5, err_msg=e.id)


def test_errors(tmp_path, fixtures):
    entries, _, _ = fixtures
    with pytest.raises(DefocusError, match="does not exist"):
        read_index(tmp_path / "nope.csv")
    bad = _write_index(tmp_path, [["x", "rgb.png", "d_mm.png", "jpeg_depth", "1", "g", "indoor"]])
    with pytest.raises(DefocusError, match="unknown depth format"):
        load_rgbd(bad[0])


def test_split_is_by_whole_scene_groups():
    groups = [g for part in SPLIT.values() for g in part]
    assert len(groups) == len(set(groups))  # no group in two parts
    assert set(SPLIT) == {"train", "validation", "test"}
    assert {"indoor", "tabletop", "outdoor"} == set(FOCUS_BY_KIND)
    for fd in FOCUS_BY_KIND.values():
        assert list(fd) == sorted(fd) and len(fd) == 5


def test_shared_index_reads_and_splits(shared_data):
    entries = read_index(shared_data / "rgbd" / "INDEX.csv")
    parts = {split_of(e) for e in entries}
    assert {"train", "validation", "test"} <= parts
    test_kinds = {e.kind for e in entries if split_of(e) == "test"}
    assert test_kinds == {"indoor", "tabletop", "outdoor"}
    # Frames of one scene group never land in two parts.
    by_group: dict[str, set] = {}
    for e in entries:
        by_group.setdefault(e.scene_group, set()).add(split_of(e))
    assert all(len(v) == 1 for v in by_group.values())
