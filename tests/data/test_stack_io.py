"""Tests of defocus.data's codecs, holes, exif, stack and folders modules: images, depth files, hole filling, stack
folders, EXIF, errors."""

from __future__ import annotations

import json
import math
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
import tifffile
import torch
from PIL import Image, ImageOps

from defocus.color import quantize_8bit
from defocus.data import folders
from defocus.data.codecs import load_image, read_depth, save_image, write_depth_png_mm, write_depth_tiff
from defocus.data.exif import read_exif_metadata
from defocus.data.folders import read_stack, write_stack
from defocus.data.holes import fill_depth_holes
from defocus.data.stack import FocalStack, require_camera
from defocus.errors import DefocusError
from defocus.optics.camera import ThinLensCamera

CAM = ThinLensCamera.from_mm_um(50.0, 8.0, 12.0)
FOCUS = [1.0, 1.5, 2.5]


def _rgb(h: int = 12, w: int = 16, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)


def _stack(n: int = 3, h: int = 12, w: int = 16, camera=CAM, gt: bool = True) -> FocalStack:
    g = torch.Generator().manual_seed(1)
    depth = np.random.default_rng(2).uniform(0.5, 8.0, (h, w)).astype(np.float32)
    depth[0, 0] = 0.0
    return FocalStack(
        images=torch.rand(n, 3, h, w, generator=g),
        focus_distances_m=torch.tensor(FOCUS[:n] if n <= 3 else [1.0 + i for i in range(n)]),
        camera=camera,
        gt_depth=depth if gt else None,
        gt_aif=torch.rand(3, h, w, generator=g) if gt else None,
        name="scene",
    )


def _write_folder(folder: Path, arrays: list[np.ndarray], meta: dict | None, ext: str = "png") -> list[str]:
    folder.mkdir(parents=True, exist_ok=True)
    names = [f"focus_{i}.{ext}" for i in range(len(arrays))]
    for nm, a in zip(names, arrays):
        Image.fromarray(a).save(folder / nm)
    if meta is not None:
        meta = {"images": names, **meta}
        (folder / "stack.json").write_text(json.dumps(meta))
    return names


def _pixels(path: Path) -> np.ndarray:
    with Image.open(path) as im:
        return np.array(im)


def _snapshot(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def _png16(path: Path, arr: np.ndarray) -> None:
    """Hand-written 16-bit RGB PNG, cycling the five row filter types (checks the full unfiltering)."""
    h, w, c = arr.shape
    raw = arr.astype(">u2").reshape(h, w * c).view(np.uint8).reshape(h, w * c * 2).astype(np.int32)
    bpp = 2 * c
    rows = []
    prev = np.zeros(w * c * 2, np.int32)
    for y in range(h):
        cur = raw[y]
        left = np.concatenate([np.zeros(bpp, np.int32), cur[:-bpp]])
        upleft = np.concatenate([np.zeros(bpp, np.int32), prev[:-bpp]])
        ftype = y % 5
        if ftype == 0:
            f = cur
        elif ftype == 1:
            f = cur - left
        elif ftype == 2:
            f = cur - prev
        elif ftype == 3:
            f = cur - (left + prev) // 2
        else:
            p = left + prev - upleft
            pa, pb, pc = abs(p - left), abs(p - prev), abs(p - upleft)
            pred = np.where((pa <= pb) & (pa <= pc), left, np.where(pb <= pc, prev, upleft))
            f = cur - pred
        rows.append(bytes([ftype]) + (f % 256).astype(np.uint8).tobytes())
        prev = cur

    def chunk(t: bytes, d: bytes) -> bytes:
        return struct.pack(">I", len(d)) + t + d + struct.pack(">I", zlib.crc32(t + d) & 0xFFFFFFFF)

    ihdr = struct.pack(">IIBBBBB", w, h, 16, 2 if c == 3 else 6, 0, 0, 0)
    path.write_bytes(
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", ihdr)
        + chunk(b"IDAT", zlib.compress(b"".join(rows)))
        + chunk(b"IEND", b"")
    )


# ================================================================================================ images
def test_save_load_matches_quantize_and_rounds_half_up(tmp_path):
    img = torch.rand(3, 9, 11, generator=torch.Generator().manual_seed(0)) * 1.2 - 0.1
    img[0, 0, :4] = torch.tensor([(126 + 0.5) / 255, (2 + 0.5) / 255, 0.0, 1.0])
    save_image(tmp_path / "a.png", img)
    back = load_image(tmp_path / "a.png")
    assert back.dtype == torch.float32 and back.shape == (3, 9, 11)
    assert torch.equal(back, quantize_8bit(img))
    assert back[0, 0, 0].item() == pytest.approx(127 / 255) and back[0, 0, 1].item() == pytest.approx(3 / 255)
    assert (back - img.clamp(0, 1)).abs().max() <= 0.5 / 255 + 1e-6
    assert not list(tmp_path.glob(".*"))  # no temporary file left


def test_save_greyscale_and_load_replicates(tmp_path):
    save_image(tmp_path / "g.png", torch.linspace(0, 1, 20).reshape(4, 5))
    with Image.open(tmp_path / "g.png") as im:
        assert im.mode == "L"
    back = load_image(tmp_path / "g.png")
    assert back.shape == (3, 4, 5) and torch.equal(back[0], back[2])


def test_load_modes(tmp_path):
    a = _rgb()
    Image.fromarray(a[:, :, 0]).save(tmp_path / "l.png")
    Image.fromarray(np.dstack([a, np.full(a.shape[:2], 7, np.uint8)])).save(tmp_path / "rgba.png")
    g16 = np.random.default_rng(1).integers(0, 65536, a.shape[:2], dtype=np.uint16)
    Image.fromarray(g16).save(tmp_path / "g16.png")
    rgb16 = np.random.default_rng(2).integers(0, 65536, (7, 9, 3), dtype=np.uint16)
    _png16(tmp_path / "rgb16.png", rgb16)
    tifffile.imwrite(tmp_path / "rgb16.tiff", rgb16, photometric="rgb")
    tifffile.imwrite(tmp_path / "f.tif", rgb16.astype(np.float32) / 65535, photometric="rgb")

    grey = load_image(tmp_path / "l.png")
    assert torch.equal(grey, torch.from_numpy(a[:, :, 0] / np.float32(255)).expand(3, -1, -1))
    assert torch.equal(load_image(tmp_path / "rgba.png"), torch.from_numpy(a.transpose(2, 0, 1) / np.float32(255)))
    assert torch.allclose(load_image(tmp_path / "g16.png")[1], torch.from_numpy(g16 / np.float32(65535)))
    want16 = torch.from_numpy(rgb16.transpose(2, 0, 1) / np.float32(65535))
    for nm in ("rgb16.png", "rgb16.tiff", "f.tif"):
        assert torch.allclose(load_image(tmp_path / nm), want16, atol=1e-6), nm


@pytest.mark.parametrize("orientation", range(1, 9))
def test_exif_orientation_matches_pil(tmp_path, orientation):
    a = _rgb(5, 8)
    exif = Image.Exif()
    exif[0x0112] = orientation
    Image.fromarray(a).save(tmp_path / "o.png", exif=exif)
    tifffile.imwrite(tmp_path / "o.tiff", a, photometric="rgb", extratags=[(274, "H", 1, orientation, True)])
    with Image.open(tmp_path / "o.png") as im:
        want = np.array(ImageOps.exif_transpose(im))
    for nm in ("o.png", "o.tiff"):
        got = (load_image(tmp_path / nm) * 255).round().to(torch.uint8).permute(1, 2, 0).numpy()
        assert np.array_equal(got, want), nm


def test_bad_images_raise(tmp_path):
    (tmp_path / "junk.png").write_bytes(b"not an image at all")
    Image.fromarray(_rgb(64, 64)).save(tmp_path / "full.jpg")
    (tmp_path / "cut.jpg").write_bytes((tmp_path / "full.jpg").read_bytes()[:300])
    (tmp_path / "bad.tiff").write_bytes(b"II*\x00garbage")
    for nm in ("missing.png", "junk.png", "cut.jpg", "bad.tiff"):
        with pytest.raises(DefocusError, match=r"cannot read image .*" + nm.replace(".", r"\.")) as e:
            load_image(tmp_path / nm)
        assert "\n" not in str(e.value)
    with pytest.raises(DefocusError, match="no such file"):
        load_image(tmp_path / "missing.png")


# ================================================================================================ depth
def test_depth_round_trips(tmp_path):
    d = np.random.default_rng(0).uniform(0.1, 10, (6, 7)).astype(np.float32)
    d[1, 2] = 0.0
    write_depth_tiff(tmp_path / "d.tiff", d)
    np.save(tmp_path / "d.npy", d)
    for nm in ("d.tiff", "d.npy"):
        back = read_depth(tmp_path / nm)
        assert back.dtype == np.float32 and np.array_equal(back, d), nm
    write_depth_tiff(tmp_path / "t.tiff", torch.from_numpy(d)[None, None])  # (1, 1, H, W) tensors are accepted
    assert np.array_equal(read_depth(tmp_path / "t.tiff"), d)

    write_depth_png_mm(tmp_path / "d.png", d)
    raw = _pixels(tmp_path / "d.png")
    assert raw.dtype == np.uint16
    assert np.abs(read_depth(tmp_path / "d.png", depth_scale=0.001) - d).max() <= 0.0005 + 1e-6


def test_depth_png_rounding_and_clipping(tmp_path):
    d = np.array([[0.0625, 1.0, 70.0, -1.0, np.nan, np.inf]], np.float32)
    write_depth_png_mm(tmp_path / "d.png", d)
    assert _pixels(tmp_path / "d.png").tolist() == [[63, 1000, 65535, 0, 0, 0]]


def test_integer_depth_needs_scale(tmp_path):
    Image.fromarray(np.full((4, 5), 1500, np.uint16)).save(tmp_path / "d16.png")
    Image.fromarray(np.full((4, 5), 15, np.uint8)).save(tmp_path / "d8.png")
    np.save(tmp_path / "di.npy", np.full((4, 5), 3, np.int32))
    for nm in ("d16.png", "d8.png", "di.npy"):
        with pytest.raises(DefocusError, match="give its depth scale") as info:
            read_depth(tmp_path / nm)
        assert info.value.field == "depth_scale"
    assert np.allclose(read_depth(tmp_path / "d16.png", depth_scale=0.001), 1.5)
    assert np.allclose(read_depth(tmp_path / "d8.png", depth_scale=0.1), 1.5)
    with pytest.raises(DefocusError, match="depth scale must be a finite positive"):
        read_depth(tmp_path / "d16.png", depth_scale=-1)


def test_depth_invalid_values_become_unknown(tmp_path):
    d = np.array([[1.0, -2.0], [np.nan, np.inf]], np.float32)
    np.save(tmp_path / "d.npy", d)
    assert read_depth(tmp_path / "d.npy").tolist() == [[1.0, 0.0], [0.0, 0.0]]


def test_bad_depth_files(tmp_path):
    Image.fromarray(_rgb()).save(tmp_path / "rgb.png")
    (tmp_path / "junk.tiff").write_bytes(b"junk")
    np.save(tmp_path / "3d.npy", np.ones((2, 3, 4), np.float32))
    for nm, msg in [("rgb.png", "single-channel"), ("junk.tiff", "cannot read depth"), ("nope.npy", "no such file"),
                    ("3d.npy", "single-channel")]:
        with pytest.raises(DefocusError, match=msg):
            read_depth(tmp_path / nm, depth_scale=0.001)


# ================================================================================================ hole filling
def test_fill_depth_holes_nearest_valid():
    d = np.zeros((5, 8), np.float32)
    d[:, 0] = 1.0
    d[:, 7] = 4.0
    d[2, 3] = np.nan
    filled, valid = fill_depth_holes(d)
    assert valid.dtype == bool and np.array_equal(valid, d > 0)
    assert np.array_equal(filled[:, :4], np.ones((5, 4)))  # nearer to the left column
    assert np.array_equal(filled[:, 4:], np.full((5, 4), 4.0))  # nearer to the right one
    assert np.array_equal(filled[valid], d[valid])
    assert set(np.unique(filled)) <= {1.0, 4.0}  # every value comes from a valid pixel


def test_fill_depth_holes_tie_and_single_pixel():
    d = np.zeros((3, 3), np.float32)
    d[1, 0], d[1, 2] = 2.0, 5.0
    filled, _ = fill_depth_holes(d)
    assert filled[1, 1] == 5.0  # equidistant: the farther depth wins
    big = np.zeros((150, 200), np.float32)
    big[149, 199] = 3.0
    filled, valid = fill_depth_holes(big)
    assert valid.sum() == 1 and np.all(filled == 3.0)


def test_fill_depth_holes_all_invalid():
    with pytest.raises(DefocusError, match="no valid pixel"):
        fill_depth_holes(np.full((4, 4), -1.0, np.float32))


# ================================================================================================ stacks
def test_stack_round_trip(tmp_path):
    st = _stack()
    write_stack(st, tmp_path / "out" / "scene")
    folder = tmp_path / "out" / "scene"
    meta = json.loads((folder / "stack.json").read_text())
    assert meta["images"] == ["focus_0.png", "focus_1.png", "focus_2.png"]
    assert meta["focus_distances_m"] == FOCUS
    assert meta["camera"] == {"focal_length_mm": 50.0, "f_number": 8.0, "pixel_size_um": 12.0}
    back = read_stack(folder)
    assert back.name == "scene" and back.image_names == meta["images"]
    assert torch.equal(back.images, quantize_8bit(st.images))
    assert (back.images - st.images).abs().max() <= 0.5 / 255 + 1e-6
    assert torch.equal(back.focus_distances_m, st.focus_distances_m)
    assert back.camera == CAM
    assert np.array_equal(back.gt_depth, st.gt_depth)
    assert torch.equal(back.gt_aif, quantize_8bit(st.gt_aif))
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["scene"]  # no temporary folder left


def test_stack_round_trip_without_camera_or_gt(tmp_path):
    st = _stack(n=1, camera=None, gt=False)
    write_stack(st, tmp_path / "s")
    assert "camera" not in json.loads((tmp_path / "s" / "stack.json").read_text())
    back = read_stack(tmp_path / "s")
    assert back.camera is None and back.gt_depth is None and back.gt_aif is None and back.num_images == 1
    with pytest.raises(DefocusError, match="give its focal length, f-number and pixel pitch"):
        require_camera(back)
    assert require_camera(read_stack(tmp_path / "s", camera=CAM)) == CAM


def test_write_stack_replaces_previous_stack_but_refuses_other_folders(tmp_path):
    write_stack(_stack(n=3), tmp_path / "s")
    write_stack(_stack(n=2, gt=False), tmp_path / "s")
    assert sorted(p.name for p in (tmp_path / "s").iterdir()) == ["focus_0.png", "focus_1.png", "stack.json"]

    other = tmp_path / "photos"
    other.mkdir()
    (other / "keep.jpg").write_bytes(b"precious")
    with pytest.raises(DefocusError, match="not empty"):
        write_stack(_stack(), other)
    (other / "stack.json").write_text("{}")
    with pytest.raises(DefocusError, match="keep.jpg"):
        write_stack(_stack(), other)
    assert (other / "keep.jpg").read_bytes() == b"precious"
    (tmp_path / "file").write_text("x")
    with pytest.raises(DefocusError, match="not a folder"):
        write_stack(_stack(), tmp_path / "file")


def test_write_stack_failure_leaves_no_partial_output(tmp_path, monkeypatch):
    write_stack(_stack(n=2, gt=False), tmp_path / "s")
    before = _snapshot(tmp_path / "s")

    def boom(path, depth):
        raise DefocusError("disk full")

    monkeypatch.setattr(folders, "write_depth_tiff", boom)
    for dest in (tmp_path / "s", tmp_path / "new"):
        with pytest.raises(DefocusError, match="disk full"):
            write_stack(_stack(), dest)
    assert _snapshot(tmp_path / "s") == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["s"]


def test_read_stack_overrides(tmp_path):
    _write_folder(tmp_path / "s", [_rgb(), _rgb(seed=1)], {"focus_distances_m": [1.0, 2.0],
                                                           "camera": CAM.to_dict()})
    cam2 = ThinLensCamera.from_mm_um(7.2, 1.2, 5.6)
    st = read_stack(tmp_path / "s", focus=[0.5, 0.75], camera=cam2)
    assert st.focus_distances_m.tolist() == [0.5, 0.75] and st.camera == cam2
    with pytest.raises(DefocusError, match="3 focus distances given but stack s has 2 images"):
        read_stack(tmp_path / "s", focus=[1.0, 2.0, 3.0])


def _bad_cases(tmp_path: Path) -> list[tuple[Path, dict, str]]:
    """(folder, read_stack kwargs, expected message regex) for every kind of bad stack input."""
    cases = []

    def case(name, arrays, meta, kwargs, msg, ext="png"):
        folder = tmp_path / name
        _write_folder(folder, arrays, meta, ext)
        cases.append((folder, kwargs, msg))
        return folder

    good = {"focus_distances_m": [1.0, 2.0], "camera": CAM.to_dict()}
    two = [_rgb(), _rgb(seed=1)]
    f = case("missing_image", two, good, {}, r"cannot read image .*focus_1\.png: no such file")
    (f / "focus_1.png").unlink()
    f = case("corrupt_image", two, good, {}, r"cannot read image .*focus_1\.png")
    (f / "focus_1.png").write_bytes(b"\x89PNG\r\n\x1a\n garbage")
    case("size_mismatch", [_rgb(12, 16), _rgb(10, 16)], good, {},
         r"image sizes differ in size_mismatch: focus_0\.png is 16x12 but focus_1\.png is 16x10")
    case("count_mismatch", two, {"focus_distances_m": [1.0]}, {}, r"2 images but 1 focus distances")
    case("nan_focus", two, {"focus_distances_m": [1.0, float("nan")]}, {}, "finite positive")
    case("negative_focus", two, {"focus_distances_m": [1.0, -2.0]}, {}, "finite positive")
    case("inside_focal_length", two, {"focus_distances_m": [1.0, 0.04], "camera": CAM.to_dict()}, {},
         "beyond the focal length")
    case("arg_focus_inside_focal_length", two, {"camera": CAM.to_dict()}, {"focus": [1.0, 0.02]},
         "beyond the focal length")
    case("arg_focus_inf", two, None, {"focus": [1.0, math.inf]}, "finite positive")
    f = case("bad_json", two, good, {}, r"bad stack\.json in .*bad_json: Expecting")
    (f / "stack.json").write_text('{"images": ["focus_0.png"], ')
    f = case("json_not_object", two, good, {}, r"bad stack\.json .*expected an object")
    (f / "stack.json").write_text("[1, 2]")
    case("json_no_images", two, None, {}, r"bad stack\.json .*'images'")
    (tmp_path / "json_no_images" / "stack.json").write_text('{"focus_distances_m": [1, 2]}')
    case("json_bad_camera", two, {"focus_distances_m": [1.0, 2.0], "camera": {"f_number": 8}}, {},
         r"bad stack\.json .*camera is missing focal_length_mm")
    case("json_impossible_camera", two, {"focus_distances_m": [1.0, 2.0],
                                         "camera": {"focal_length_mm": 50, "f_number": 0, "pixel_size_um": 5}},
         {}, r"f-number must be a finite positive")
    case("no_focus", two, None, {}, r"no focus distances for no_focus: give them \(metres or dioptres\) or add stack\.json")
    case("no_focus_in_json", two, {"camera": CAM.to_dict()}, {}, r"no focus distances .* add focus_distances_m")
    (tmp_path / "empty").mkdir()
    cases.append((tmp_path / "empty", {}, r"no images in .*empty"))
    cases.append((tmp_path / "does_not_exist", {}, "does not exist"))
    f = case("gt_size", two, good, {}, r"gt_depth\.tiff in gt_size is 3x2 but the images are 16x12")
    write_depth_tiff(f / "gt_depth.tiff", np.ones((2, 3), np.float32))
    return cases


def test_bad_stacks_raise_clear_errors_and_change_nothing(tmp_path):
    cases = _bad_cases(tmp_path)
    before = _snapshot(tmp_path)
    for folder, kwargs, msg in cases:
        with pytest.raises(DefocusError, match=msg) as e:
            read_stack(folder, **kwargs)
        assert "\n" not in str(e.value), folder.name
    assert _snapshot(tmp_path) == before


def test_focal_stack_validation():
    imgs = torch.rand(2, 3, 4, 5)
    with pytest.raises(DefocusError, match="2 images but 3 focus distances"):
        FocalStack(imgs, torch.tensor([1.0, 2.0, 3.0]))
    with pytest.raises(DefocusError, match="ground-truth depth is 4x4"):
        FocalStack(imgs, [1.0, 2.0], gt_depth=np.ones((4, 4), np.float32))
    with pytest.raises(DefocusError, match="ground-truth AIF"):
        FocalStack(imgs, [1.0, 2.0], gt_aif=torch.rand(3, 4, 4))
    with pytest.raises(DefocusError, match=r"\(N, 3, H, W\)"):
        FocalStack(torch.rand(2, 1, 4, 5), [1.0, 2.0])
    with pytest.raises(DefocusError, match="beyond the focal length"):
        FocalStack(imgs, [1.0, 0.01], camera=CAM)
    with pytest.raises(DefocusError, match="2 images but 1 image names"):
        FocalStack(imgs, [1.0, 2.0], image_names=["a.png"])
    st = FocalStack(imgs, [1.0, 2.0])
    assert st.focus_distances_m.dtype == torch.float32 and st.image_size == (4, 5)
    assert st.image_names == ["focus_0.png", "focus_1.png"]


# ================================================================================================ EXIF
def _jpeg_with_exif(path: Path, arr: np.ndarray, tags: dict[int, float]) -> None:
    exif = Image.Exif()
    sub = exif.get_ifd(0x8769)
    for k, v in tags.items():
        sub[k] = v
    Image.fromarray(arr).save(path, exif=exif, quality=95)


def test_exif_focus_and_camera_from_focal_plane_resolution(tmp_path):
    folder = tmp_path / "phone"
    folder.mkdir()
    # 200 pixels per mm -> 5 µm pitch
    base = {0x920A: 50.0, 0x829D: 2.8, 0xA20E: 200.0, 0xA210: 4}
    names = ["img_2.jpg", "img_10.jpg", "img_1.jpg"]
    for nm, fd in zip(names, [1.5, 3.0, 0.8]):
        _jpeg_with_exif(folder / nm, _rgb(24, 36), {**base, 0x9206: fd})
    Image.fromarray(_rgb(24, 36)).save(folder / "gt_aif.png")  # excluded from the images
    before = _snapshot(folder)
    st = read_stack(folder)
    assert st.image_names == ["img_1.jpg", "img_2.jpg", "img_10.jpg"]
    assert st.focus_distances_m.tolist() == pytest.approx([0.8, 1.5, 3.0])
    assert st.camera.focal_length_m == pytest.approx(0.05) and st.camera.f_number == pytest.approx(2.8)
    assert st.camera.pixel_size_m == pytest.approx(5e-6)
    assert st.gt_aif is not None and st.images.shape == (3, 3, 24, 36)
    assert _snapshot(folder) == before


def test_exif_pixel_pitch_from_35mm_equivalent(tmp_path):
    _jpeg_with_exif(tmp_path / "a.jpg", _rgb(240, 360), {0x920A: 6.0, 0x829D: 1.8, 0xA405: 30, 0x9206: 1.0})
    meta = read_exif_metadata(tmp_path / "a.jpg")
    # 3:2 image: pitch = 36 mm · f / f35 / width = 36 · 6 / 30 / 360 mm = 20 µm
    assert meta["pixel_size_um"] == pytest.approx(20.0)
    assert meta["focus_distance_m"] == pytest.approx(1.0)
    st = read_stack(tmp_path)
    assert st.camera.pixel_size_m == pytest.approx(20e-6)


def test_exif_incomplete_camera_is_none_and_missing_focus_names_flag(tmp_path):
    _jpeg_with_exif(tmp_path / "a.jpg", _rgb(), {0x920A: 5.0, 0x9206: 1.0})  # no f-number, no pitch
    _jpeg_with_exif(tmp_path / "b.jpg", _rgb(), {0x920A: 5.0, 0x9206: 2.0})
    st = read_stack(tmp_path)
    assert st.camera is None
    with pytest.raises(DefocusError, match="give its focal length, f-number and pixel pitch") as info:
        require_camera(st)
    assert info.value.field == ("camera.focal_length_mm", "camera.f_number", "camera.pixel_size_um")
    _jpeg_with_exif(tmp_path / "c.jpg", _rgb(), {0x920A: 5.0})  # no SubjectDistance
    with pytest.raises(DefocusError, match=r"no focus distances .*c\.jpg has no EXIF SubjectDistance"):
        read_stack(tmp_path)
    assert read_stack(tmp_path, focus=[1.0, 2.0, 3.0]).num_images == 3
