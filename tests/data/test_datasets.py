"""Public dataset adapters (defocus.data.datasets) on tiny fixture files written here in each dataset's own format.

* NYU Depth v2 labeled: a MATLAB v7.3 file is HDF5 with a 512-byte user block; MATLAB's column-major arrays appear
  to h5py with reversed axes: ``images`` uint8 (N, 3, W, H), ``depths`` float32 (N, W, H) metres.
* DDFF-12: HDF5 ``stack_<split>`` (N, 10, H, W, 3) 0–255 and ``disp_<split>`` (N, H, W) disparity in pixels.
* FoD500: ``NNNNNN..All.tif`` x 5 per sample + ``NNNNNNDpt.exr`` (half-float R channel, metres); the EXR files are
  written by an encoder in this file (NONE and ZIP compression), independent of the package's reader.
* Mobile Depth: scene folders of ``a*.jpg`` frames and ``focus_dpth.txt`` (inches).
"""

from __future__ import annotations

import struct
import sys
import zlib
from pathlib import Path

import numpy as np
import pytest
import tifffile
import torch
from PIL import Image

from defocus.cli import main
from defocus.data.datasets import DATASETS, open_dataset, parse_spec
from defocus.data.datasets.exr import read_exr
from defocus.data.folders import read_stack
from defocus.errors import DefocusError

H, W = 16, 24
RNG = np.random.default_rng(1234)
DDFF_BF = 1982.0250823695178 / 7317.020641763665 * 1e-3 * 521.4052  # baseline (m) x sub-aperture focal (px)


# ------------------------------------------------------------------------------------------------ fixture writers
def _rgb(n: int) -> np.ndarray:
    """(n, H, W, 3) uint8 with a different value in every pixel and channel (orientation and channel order show)."""
    base = np.arange(H * W * 3, dtype=np.int64).reshape(H, W, 3)
    return np.stack([((base * (k + 3) + 17 * k) % 251).astype(np.uint8) for k in range(n)])


def write_nyu_mat(path: Path, rgb: np.ndarray, depth: np.ndarray) -> None:
    """rgb (N, H, W, 3) uint8, depth (N, H, W) metres → a v7.3-style .mat as MATLAB lays it out."""
    h5py = pytest.importorskip("h5py")
    with h5py.File(path, "w", userblock_size=512) as f:
        f.create_dataset("images", data=rgb.transpose(0, 3, 2, 1))  # (N, 3, W, H)
        f.create_dataset("depths", data=depth.transpose(0, 2, 1).astype(np.float32))  # (N, W, H)
        f.create_dataset("labels", data=np.zeros((len(rgb), W, H), np.uint16))
    with open(path, "r+b") as fh:
        fh.write(b"MATLAB 7.3 MAT-file, Platform: GLNXA64, Created on: Mon Jan 1 00:00:00 2024 HDF5 schema 1.00 .")


def write_ddff_h5(path: Path, stacks: dict[str, np.ndarray], disps: dict[str, np.ndarray],
                  aifs: dict[str, np.ndarray] | None = None) -> None:
    h5py = pytest.importorskip("h5py")
    with h5py.File(path, "w") as f:
        for split, arr in stacks.items():
            f.create_dataset(f"stack_{split}", data=arr)
        for split, arr in disps.items():
            f.create_dataset(f"disp_{split}", data=arr.astype(np.float32))
        for split, arr in (aifs or {}).items():
            f.create_dataset(f"AiF_{split}", data=arr)


def _exr_attr(name: str, typ: str, value: bytes) -> bytes:
    return name.encode() + b"\0" + typ.encode() + b"\0" + struct.pack("<i", len(value)) + value


def write_exr(path: Path, channels: dict[str, np.ndarray], compression: int = 3) -> None:
    """Scan-line EXR with HALF channels; compression 0 (NONE) or 3 (ZIP, 16 lines per chunk)."""
    names = sorted(channels)
    h, w = channels[names[0]].shape
    chlist = b"".join(n.encode() + b"\0" + struct.pack("<iB3xii", 1, 0, 1, 1) for n in names) + b"\0"
    header = b"\x76\x2f\x31\x01" + struct.pack("<I", 2)
    header += _exr_attr("channels", "chlist", chlist)
    header += _exr_attr("compression", "compression", bytes([compression]))
    header += _exr_attr("dataWindow", "box2i", struct.pack("<iiii", 0, 0, w - 1, h - 1))
    header += _exr_attr("displayWindow", "box2i", struct.pack("<iiii", 0, 0, w - 1, h - 1))
    header += _exr_attr("lineOrder", "lineOrder", b"\0")
    header += _exr_attr("pixelAspectRatio", "float", struct.pack("<f", 1.0))
    header += _exr_attr("screenWindowCenter", "v2f", struct.pack("<ff", 0, 0))
    header += _exr_attr("screenWindowWidth", "float", struct.pack("<f", 1.0)) + b"\0"
    lines = 16 if compression == 3 else 1
    chunks = []
    for y0 in range(0, h, lines):
        raw = b"".join(channels[n][y].astype("<f2").tobytes() for y in range(y0, min(h, y0 + lines)) for n in names)
        if compression == 3:
            b = np.frombuffer(raw, np.uint8)
            t = np.concatenate([b[0::2], b[1::2]]).astype(np.int64)
            p = t.copy()
            p[1:] = (t[1:] - t[:-1] + 128 + 256) & 0xFF
            data = zlib.compress(p.astype(np.uint8).tobytes())
        else:
            data = raw
        chunks.append(struct.pack("<ii", y0, len(data)) + data)
    pos = len(header) + 8 * len(chunks)
    table = b""
    for c in chunks:
        table += struct.pack("<Q", pos)
        pos += len(c)
    path.write_bytes(header + table + b"".join(chunks))


def write_fod500(folder: Path, ids=(0, 400), alpha_for=400) -> dict:
    folder.mkdir(parents=True, exist_ok=True)
    truth = {}
    for k, sid in enumerate(ids):
        imgs = _rgb(5)[:, :, :, :] if k == 0 else _rgb(5)[::-1].copy()
        for j in range(5):
            data = imgs[j]
            if sid == alpha_for:  # Blender may write RGBA
                data = np.concatenate([data, np.full((H, W, 1), 255, np.uint8)], axis=-1)
            tifffile.imwrite(folder / f"{sid:06d}_{j:02d}All.tif", data, photometric="rgb")
        depth = np.linspace(0.1, 2.9, H * W).reshape(H, W).astype(np.float16).astype(np.float32)
        depth[0, 0] = 0.0
        depth[1, 1] = 60000.0  # far background
        chans = {"R": depth, "G": np.full((H, W), 7.0, np.float32), "B": np.full((H, W), 9.0, np.float32)}
        write_exr(folder / f"{sid:06d}Dpt.exr", chans, compression=3 if k == 0 else 0)
        truth[sid] = (imgs, depth)
    return truth


def write_mobile(root: Path) -> dict:
    scenes = {"keyboard": [20.0, 10.0, 5.0], "bottles": None}
    for name, inches in scenes.items():
        d = root / name
        d.mkdir(parents=True)
        n = 3 if inches else 2
        for j, img in enumerate(_rgb(n)):
            Image.fromarray(img).save(d / f"a{j:02d}.jpg", quality=95)
        Image.fromarray(_rgb(1)[0]).save(d / "thumbnail.jpg")  # not a frame: names not starting with 'a'
        if inches:
            (d / "focus_dpth.txt").write_text("\n".join(str(v) for v in inches) + "\n")
    return scenes


@pytest.fixture
def nyu_file(tmp_path) -> tuple[Path, np.ndarray, np.ndarray]:
    rgb = _rgb(2)
    yy, xx = np.mgrid[0:H, 0:W]
    depth = np.stack([1.0 + 0.1 * xx + 0.01 * yy, 3.0 + 0.05 * yy]).astype(np.float32)
    path = tmp_path / "nyu_depth_v2_labeled.mat"
    write_nyu_mat(path, rgb, depth)
    return path, rgb, depth


@pytest.fixture
def ddff_file(tmp_path) -> tuple[Path, np.ndarray, np.ndarray]:
    stacks = np.stack([_rgb(10), _rgb(10)[::-1]])  # (2, 10, H, W, 3) uint8
    disp = RNG.uniform(0.03, 0.27, size=(2, H, W)).astype(np.float32)
    disp[0, :2, :3] = 0.0  # no depth there
    path = tmp_path / "ddff-dataset-trainval.h5"
    write_ddff_h5(path, {"train": stacks[:1], "val": stacks}, {"train": disp[:1], "val": disp})
    return path, stacks, disp


# ------------------------------------------------------------------------------------------------------- specs
def test_spec_parsing():
    assert parse_spec("ddff12:/data/x.h5#train") == ("ddff12", Path("/data/x.h5"), "train")
    assert parse_spec("nyuv2:rel/nyu.mat") == ("nyuv2", Path("rel/nyu.mat"), None)
    assert parse_spec("FoD500:/a#b/c")[1:] == (Path("/a#b/c"), None)  # a '#' inside the path is kept
    assert set(DATASETS) == {"nyuv2", "ddff12", "fod500", "mobile-depth"}


@pytest.mark.parametrize("spec, match", [
    ("nyuv2", "NAME:PATH"), ("imagenet:/x", "unknown dataset"), ("ddff12:", "no path"), ("ddff12:#val", "no path"),
])
def test_bad_specs(spec, match):
    with pytest.raises(DefocusError, match=match):
        open_dataset(spec)


# ---------------------------------------------------------------------------------------------------- NYU v2
def test_nyu_reads_transposed_mat(nyu_file):
    path, rgb, depth = nyu_file
    ds = open_dataset(f"nyuv2:{path}")
    assert len(ds) == 2 and ds.kind == "rgbd" and ds.item_name(1) == "nyuv2_0002"
    for i in range(2):
        img, d = ds.rgbd(i)
        assert img.shape == (3, H, W) and d.shape == (H, W)
        np.testing.assert_array_equal((img.numpy() * 255).round().astype(np.uint8), rgb[i].transpose(2, 0, 1))
        np.testing.assert_allclose(d, depth[i], rtol=1e-6)


def test_nyu_stack_is_rendered_with_the_preset(nyu_file):
    path, rgb, depth = nyu_file
    st = open_dataset(f"nyuv2:{path}").stack(1)
    assert st.image_size == (240, 320) and st.num_images == 5
    assert st.focus_distances_m.tolist() == [1.0, 1.5, 2.5, 4.0, 6.0]
    assert st.camera.focal_length_m == pytest.approx(0.05) and st.camera.f_number == 8.0
    # The ground truth is the (nearest-resized) depth of item 2: its values come from that map, left to right rising.
    assert set(np.unique(st.gt_depth)) <= set(np.unique(depth[1]))
    assert st.gt_depth[0, 0] < st.gt_depth[-1, 0]  # item 2's depth grows downwards (y), not along x
    assert st.gt_depth[0, 0] == pytest.approx(st.gt_depth[0, -1])
    assert open_dataset(f"nyuv2:{path}").stack(1, load_ground_truth=False).gt_depth is None


def test_nyu_errors(tmp_path, nyu_file, monkeypatch):
    with pytest.raises(DefocusError, match="does not exist"):
        open_dataset(f"nyuv2:{tmp_path / 'missing.mat'}")
    bad = tmp_path / "v5.mat"
    bad.write_bytes(b"MATLAB 5.0 MAT-file" + bytes(200))  # a pre-v7.3 .mat is not HDF5
    with pytest.raises(DefocusError, match="HDF5"):
        open_dataset(f"nyuv2:{bad}")
    path, _, _ = nyu_file
    h5py = pytest.importorskip("h5py")
    other = tmp_path / "other.h5"
    with h5py.File(other, "w") as f:
        f.create_dataset("images", data=np.zeros((1, 3, 4, 4), np.uint8))
    with pytest.raises(DefocusError, match="no depths"):
        open_dataset(f"nyuv2:{other}")
    with pytest.raises(DefocusError, match="protocol"):
        open_dataset(f"nyuv2:{path}#blurry")
    monkeypatch.setitem(sys.modules, "h5py", None)  # h5py not installed
    with pytest.raises(DefocusError, match="pip install"):
        open_dataset(f"nyuv2:{path}")


def test_truncated_hdf5_is_one_error(tmp_path, ddff_file):
    path, _, _ = ddff_file
    data = path.read_bytes()
    cut = tmp_path / "cut.h5"
    cut.write_bytes(data[: len(data) // 2])
    with pytest.raises(DefocusError):
        ds = open_dataset(f"ddff12:{cut}")
        for i in range(len(ds)):
            ds.stack(i)


# ----------------------------------------------------------------------------------------------------- DDFF-12
def test_ddff_reads_stacks_and_converts_disparity(ddff_file):
    path, stacks, disp = ddff_file
    ds = open_dataset(f"ddff12:{path}")  # default split: val
    assert len(ds) == 2 and ds.item_name(1) == "ddff12_val_0001"
    st = ds.stack(1)
    assert st.num_images == 10 and st.image_size == (H, W)
    np.testing.assert_array_equal((st.images.numpy() * 255).round().astype(np.uint8), stacks[1].transpose(0, 3, 1, 2))
    fd = st.focus_distances_m.numpy()
    assert fd[0] == pytest.approx(0.5, rel=1e-5) and fd[-1] == pytest.approx(7.0, rel=1e-5)
    np.testing.assert_allclose(np.diff(1 / fd), np.diff(1 / fd)[0], rtol=1e-4)  # even in dioptres
    np.testing.assert_allclose(st.gt_depth, DDFF_BF / disp[1], rtol=1e-5)
    gt0 = ds.stack(0).gt_depth
    assert (gt0[:2, :3] == 0).all() and (gt0[2:] > 0).all()
    assert ds.stack(0, load_ground_truth=False).gt_depth is None
    # The equivalent lens blurs about n_views x baseline x f_sub px per dioptre (9 x 0.141 / 1.0 ≈ 1.27).
    assert float(st.camera.blur_per_dioptre(torch.tensor([7.0]))) == pytest.approx(9 * DDFF_BF, rel=0.02)
    assert len(open_dataset(f"ddff12:{path}#train")) == 1


def test_ddff_float_stacks_and_test_split(tmp_path):
    stacks = _rgb(10)[None].astype(np.float32)  # DFV's pack_to_h5 writes float32 holding 0-255
    path = tmp_path / "test.h5"
    aif = _rgb(3)[2:].astype(np.float32)
    write_ddff_h5(path, {"test": stacks}, {}, {"test": aif})
    ds = open_dataset(f"ddff12:{path}#test")
    st = ds.stack(0)
    assert st.gt_depth is None
    np.testing.assert_allclose(st.gt_aif.numpy() * 255, aif[0].transpose(2, 0, 1), atol=1e-3)
    assert ds.stack(0, load_ground_truth=False).gt_aif is None
    np.testing.assert_allclose(st.images.numpy() * 255, stacks[0].transpose(0, 3, 1, 2), atol=1e-3)
    with pytest.raises(DefocusError, match="no dataset 'stack_val'"):
        open_dataset(f"ddff12:{path}")
    with pytest.raises(DefocusError, match="unknown split"):
        open_dataset(f"ddff12:{path}#validation")
    bad = tmp_path / "bad.h5"
    write_ddff_h5(bad, {"val": _rgb(5)[None]}, {})
    with pytest.raises(DefocusError, match=r"\(N, 10, H, W, 3\)"):
        open_dataset(f"ddff12:{bad}")
    junk = tmp_path / "junk.h5"
    junk.write_bytes(b"not hdf5 at all" * 10)
    with pytest.raises(DefocusError, match="cannot open"):
        open_dataset(f"ddff12:{junk}")


# ------------------------------------------------------------------------------------------------------ FoD500
def test_exr_reader_zip_and_none(tmp_path):
    a = RNG.uniform(0, 5, size=(37, 21)).astype(np.float16).astype(np.float32)  # 37 rows: 3 ZIP chunks, last short
    for comp in (0, 3):
        p = tmp_path / f"x{comp}.exr"
        write_exr(p, {"R": a, "G": a * 2, "B": a * 3}, compression=comp)
        np.testing.assert_array_equal(read_exr(p, "R"), a)
        np.testing.assert_array_equal(read_exr(p, "B"), (a * 3).astype(np.float16).astype(np.float32))
    with pytest.raises(DefocusError, match="no channel 'Z'"):
        read_exr(tmp_path / "x3.exr", "Z")
    data = (tmp_path / "x3.exr").read_bytes()
    (tmp_path / "cut.exr").write_bytes(data[: len(data) - 40])
    with pytest.raises(DefocusError, match="truncated|corrupt"):
        read_exr(tmp_path / "cut.exr")
    (tmp_path / "png.exr").write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(40))
    with pytest.raises(DefocusError, match="not an OpenEXR"):
        read_exr(tmp_path / "png.exr")


def test_exr_reader_on_a_real_encoder_file():
    """CPython's test data holds python.exr (RLE-compressed HALF RGBA, written by a real OpenEXR encoder) beside
    python.png, the same 16x16 picture: the decoded channels match the PNG within half-float precision."""
    import sysconfig

    stdlib = Path(sysconfig.get_paths()["stdlib"])
    found = [p for p in (stdlib / "test" / "imghdrdata" / "python.exr", stdlib / "test" / "test_email" / "data"
                         / "python.exr") if p.is_file() and (p.parent / "python.png").is_file()]
    if not found:
        pytest.skip("CPython's test data (python.exr) is not installed here")
    exr = found[0]
    png = np.asarray(Image.open(exr.parent / "python.png").convert("RGBA"), dtype=np.float64) / 255
    got = np.stack([read_exr(exr, c) for c in "RGBA"], axis=-1)
    assert got.shape == png.shape
    np.testing.assert_allclose(got, png, atol=1e-3)


def test_fod500_reads_samples(tmp_path):
    folder = tmp_path / "fs_6"
    truth = write_fod500(folder)
    ds = open_dataset(f"fod500:{folder}")
    assert len(ds) == 2 and [ds.item_name(i) for i in range(2)] == ["fod500_000000", "fod500_000400"]
    for i, sid in enumerate((0, 400)):
        imgs, depth = truth[sid]
        st = ds.stack(i)
        np.testing.assert_array_equal((st.images.numpy() * 255).round().astype(np.uint8), imgs.transpose(0, 3, 1, 2))
        assert st.focus_distances_m.tolist() == pytest.approx([0.1, 0.15, 0.3, 0.7, 1.5])
        assert st.camera.focal_length_m == pytest.approx(2.9e-3) and st.camera.f_number == 1.0
        expect = depth.copy()
        expect[1, 1] = 0.0  # the background beyond 100 m is unknown
        np.testing.assert_allclose(st.gt_depth, expect, rtol=1e-3)
    assert [open_dataset(f"fod500:{folder}#{s}").item_name(0) for s in ("train", "test")] == \
        ["fod500_000000", "fod500_000400"]


def test_fod500_train_test_subfolders(tmp_path):
    truth = write_fod500(tmp_path / "fs_6" / "test", ids=(0,))
    write_fod500(tmp_path / "fs_6" / "train", ids=(0, 1))
    ds = open_dataset(f"fod500:{tmp_path / 'fs_6'}")
    assert [ds.item_name(i) for i in range(len(ds))] == ["fod500_test_000000", "fod500_train_000000",
                                                         "fod500_train_000001"]
    test = open_dataset(f"fod500:{tmp_path / 'fs_6'}#test")
    assert len(test) == 1
    np.testing.assert_allclose(test.stack(0).gt_depth[2:, 2:], truth[0][1][2:, 2:], rtol=1e-3)
    assert len(open_dataset(f"fod500:{tmp_path / 'fs_6'}#train")) == 2


def test_fod500_errors(tmp_path):
    with pytest.raises(DefocusError, match="does not exist"):
        open_dataset(f"fod500:{tmp_path / 'nope'}")
    (tmp_path / "empty").mkdir()
    with pytest.raises(DefocusError, match="no FoD500 images"):
        open_dataset(f"fod500:{tmp_path / 'empty'}")
    folder = tmp_path / "f"
    write_fod500(folder, ids=(3,))
    (folder / "000003_04All.tif").unlink()
    with pytest.raises(DefocusError, match="4 All.tif images, expected 5"):
        open_dataset(f"fod500:{folder}")
    folder2 = tmp_path / "g"
    write_fod500(folder2, ids=(5,))
    (folder2 / "000005Dpt.exr").write_bytes(b"garbage")
    ds = open_dataset(f"fod500:{folder2}")
    assert ds.stack(0, load_ground_truth=False).gt_depth is None  # ground truth not read: no error
    with pytest.raises(DefocusError, match="not an OpenEXR"):
        ds.stack(0)
    with pytest.raises(DefocusError, match="no samples of split 'test'"):
        open_dataset(f"fod500:{folder2}#test")


# ------------------------------------------------------------------------------------------------ Mobile Depth
def test_mobile_depth_scenes(tmp_path):
    root = tmp_path / "mobile"
    scenes = write_mobile(root)
    ds = open_dataset(f"mobile-depth:{root}")
    assert [ds.item_name(i) for i in range(len(ds))] == ["mobile_bottles", "mobile_keyboard"]
    bottles, keyboard = ds.stack(0), ds.stack(1)
    assert bottles.provenance["relative"] and bottles.num_images == 2 and bottles.camera is None
    assert not keyboard.provenance["relative"] and keyboard.num_images == 3
    assert keyboard.image_names == ["a00.jpg", "a01.jpg", "a02.jpg"]
    assert keyboard.focus_distances_m.tolist() == pytest.approx([v / 39.37 for v in scenes["keyboard"]])
    one = open_dataset(f"mobile-depth:{root}#keyboard")
    assert len(one) == 1 and open_dataset(f"mobile-depth:{root / 'keyboard'}").item_name(0) == "mobile_keyboard"
    with pytest.raises(DefocusError, match="no scene 'sofa'"):
        open_dataset(f"mobile-depth:{root}#sofa")
    (root / "keyboard" / "focus_dpth.txt").write_text("20\n10\n")
    with pytest.raises(DefocusError, match="2 focus distances for 3 frames"):
        one.stack(0)


def test_mobile_depth_original_download_layout(tmp_path):
    """Aligned/<scene>/a*.jpg + depth_from_focus_data2/calibration/<name>/calibrated.txt (first column, last row
    dropped; 'metals' is called 'metal' there)."""
    root = tmp_path / "download"
    for scene, calib_name, n in (("metals", "metal", 3), ("plants", "plants", 2)):
        d = root / "Aligned" / scene
        d.mkdir(parents=True)
        for j, img in enumerate(_rgb(n)):
            Image.fromarray(img).save(d / f"a{j:02d}.jpg")
        c = root / "depth_from_focus_data2" / "calibration" / calib_name
        c.mkdir(parents=True)
        rows = [f"{10.0 * (j + 1)} {j} 0.5" for j in range(n)] + ["99.0 1 1"]  # last row: not a frame
        (c / "calibrated.txt").write_text("\n".join(rows) + "\n")
    ds = open_dataset(f"mobile-depth:{root}")
    assert [ds.item_name(i) for i in range(len(ds))] == ["mobile_metals", "mobile_plants"]
    metals = ds.stack(0)
    assert not metals.provenance["relative"]
    assert metals.focus_distances_m.tolist() == pytest.approx([10 / 39.37, 20 / 39.37, 30 / 39.37])
    assert open_dataset(f"mobile-depth:{root}#plants").stack(0).num_images == 2


def test_mobile_depth_real_scene_dffinthewild_layout(shared_data):
    """The real 'balls' scene as DfFintheWild ships it: 00.jpg ... 09.jpg + focus_distance.txt (+ focal_length.txt)."""
    scene = shared_data / "focal_stacks" / "mobiledepth_balls_dffinthewild"
    if not scene.is_dir():
        pytest.skip(f"{scene} is absent")
    inches = np.loadtxt(scene / "focus_distance.txt")
    st = open_dataset(f"mobile-depth:{scene}").stack(0)
    assert st.num_images == len(inches) == 10 and st.image_size == (720, 1280)
    assert st.image_names == [f"{i:02d}.jpg" for i in range(10)]
    np.testing.assert_allclose(st.focus_distances_m.numpy(), inches / 39.37, rtol=1e-6)
    assert st.focus_distances_m[-1].item() == pytest.approx(0.254, rel=1e-3)  # 10 inches, the nearest frame


# ---------------------------------------------------------------------------------------------------------- CLI
def _run(capsys, *args) -> tuple[int, str, str]:
    rc = main([str(a) for a in args])
    out, err = capsys.readouterr()
    return rc, out, err


def test_cli_evaluate_dataset(capsys, tmp_path, ddff_file):
    path, _, _ = ddff_file
    folder = tmp_path / "fod"
    write_fod500(folder, ids=(400,))
    rc, out, err = _run(capsys, "evaluate", "--dataset", f"ddff12:{path}", "--dataset", f"fod500:{folder}#test",
                        "--limit", "1", "--json", tmp_path / "r.json", "--threads", "1")
    assert rc == 0, err
    assert "ddff12_val_0000" in out and "fod500_000400" in out and "ddff12_val_0001" not in out
    import json

    data = json.loads((tmp_path / "r.json").read_text())
    assert [s["name"] for s in data["stacks"]] == ["ddff12_val_0000", "fod500_000400"]
    assert 0 <= data["stacks"][0]["network"]["delta3"] <= 1


@pytest.mark.parametrize("args, match", [
    (["evaluate"], "nothing to evaluate"),
    (["evaluate", "--dataset", "ddff12"], "NAME:PATH"),
    (["evaluate", "--dataset", "ddff12:/no/such/file.h5"], "does not exist"),
    (["render", "--dataset", "fod500:/no/such/dir", "-o", "OUT"], "does not exist"),
    (["render", "--dataset", "fod500:/x", "--procedural", "3", "-o", "OUT"], "not several"),
])
def test_cli_errors_are_one_line(capsys, tmp_path, args, match):
    args = [a.replace("OUT", str(tmp_path / "out")) for a in args]
    rc, out, err = _run(capsys, *args)
    assert rc != 0
    assert len(err.strip().splitlines()) == 1 and match in err and "Traceback" not in err


def test_cli_evaluate_refuses_mobile_depth(capsys, tmp_path):
    write_mobile(tmp_path / "m")
    rc, _, err = _run(capsys, "evaluate", "--dataset", f"mobile-depth:{tmp_path / 'm'}")
    assert rc != 0 and "no ground-truth depth" in err


def test_cli_render_dataset_writes_stack_folders(capsys, tmp_path, ddff_file, nyu_file):
    path, stacks, disp = ddff_file
    out = tmp_path / "rendered"
    rc, _, err = _run(capsys, "render", "--dataset", f"ddff12:{path}#val", "-o", out)
    assert rc == 0, err
    assert sorted(p.name for p in out.iterdir()) == ["ddff12_val_0000", "ddff12_val_0001"]
    st = read_stack(out / "ddff12_val_0001")
    np.testing.assert_array_equal((st.images.numpy() * 255).round().astype(np.uint8), stacks[1].transpose(0, 3, 1, 2))
    np.testing.assert_allclose(st.gt_depth, DDFF_BF / disp[1], rtol=1e-5)
    assert st.focus_distances_m[0].item() == pytest.approx(0.5, rel=1e-5)
    nyu, _, depth = nyu_file
    rc, _, err = _run(capsys, "render", "--dataset", f"nyuv2:{nyu}", "--limit", "1", "-o", tmp_path / "nyu")
    assert rc == 0, err
    assert [p.name for p in (tmp_path / "nyu").iterdir()] == ["nyuv2_0001"]
    st = read_stack(tmp_path / "nyu" / "nyuv2_0001")
    assert st.image_size == (240, 320) and st.gt_aif is not None
    assert st.gt_depth.min() >= depth[0].min() - 1e-5 and st.gt_depth.max() <= depth[0].max() + 1e-5


def test_cli_render_protocol_comes_from_the_spec_unless_the_flag_is_given(capsys, tmp_path, nyu_file, monkeypatch):
    from defocus.data.datasets.nyuv2 import NYUv2Labeled

    path, _, _ = nyu_file
    used = []
    real = NYUv2Labeled.stack

    def spy(self, index, load_ground_truth=True, protocol=None, seed=None, **kw):
        st = real(self, index, load_ground_truth, protocol=protocol, seed=seed)
        used.append(st.provenance["protocol"])
        return st

    monkeypatch.setattr(NYUv2Labeled, "stack", spy)
    monkeypatch.setattr("defocus.data.folders.write_stack", lambda *a, **k: None)
    for extra, out in (([], "a"), (["--protocol", "paper"], "b")):
        rc, _, err = _run(capsys, "render", "--dataset", f"nyuv2:{path}#realistic", "--limit", "1", *extra,
                          "-o", tmp_path / out)
        assert rc == 0, err
    assert used == ["realistic", "paper"]


def test_cli_render_mobile_depth(capsys, tmp_path):
    root = tmp_path / "m"
    write_mobile(root)
    rc, _, err = _run(capsys, "render", "--dataset", f"mobile-depth:{root}#keyboard", "-o", tmp_path / "o")
    assert rc == 0, err
    st = read_stack(tmp_path / "o" / "mobile_keyboard")
    assert st.num_images == 3 and st.camera is None
    rc, _, err = _run(capsys, "render", "--dataset", f"mobile-depth:{root}", "-o", tmp_path / "o2")
    assert rc != 0 and "focus distances are unknown" in err and "bottles" in err and "keyboard" not in err
    assert not (tmp_path / "o2").exists()  # nothing written, not even the scene that has focus distances


def test_cli_train_on_datasets(capsys, tmp_path, ddff_file, nyu_file):
    path, _, _ = ddff_file
    nyu, _, _ = nyu_file
    folder = tmp_path / "fod"
    write_fod500(folder, ids=(1,))
    rc, out, err = _run(capsys, "train", "--config", "tiny", "--quiet", f"out_dir={tmp_path / 'runs'}", "name=ds",
                        "data.scenes_per_group=0", "data.size=[16, 16]", "val_scenes=0", "optim.epochs=1",
                        "optim.steps_per_epoch=2", "data.dataset_limit=1",
                        f"data.datasets=[ddff12:{path}#train, fod500:{folder}, nyuv2:{nyu}]")
    assert rc == 0, err
    assert (tmp_path / "runs" / "ds" / "last.safetensors").is_file()


def test_train_refuses_stacks_without_camera(capsys, tmp_path):
    root = tmp_path / "m"
    write_mobile(root)
    rc, _, err = _run(capsys, "train", "--config", "tiny", "--quiet", f"out_dir={tmp_path / 'runs'}",
                      "data.scenes_per_group=0", "data.size=[16, 16]", "val_scenes=0",
                      f"data.datasets=[mobile-depth:{root}#keyboard]")
    assert rc != 0 and "no camera or no focus distances" in err


def test_dataset_items_follow_the_data_shards(tmp_path):
    from defocus.data.sweeps import DataConfig, DataShards, dataset_groups

    folder = tmp_path / "fod"
    write_fod500(folder, ids=(0, 1, 2, 400, 401))
    cfg = DataConfig(presets=[], scenes_per_group=0, size=[16, 16], datasets=[f"fod500:{folder}"])
    whole = dataset_groups(cfg, progress=False)
    parts = [dataset_groups(cfg, progress=False, shards=DataShards(2, (r,))) for r in (0, 1)]
    assert len(whole) == 1 and all(len(p) == 1 for p in parts)
    assert parts[0][0].ids().tolist() == [0, 2, 4] and parts[1][0].ids().tolist() == [1, 3]
    for p in parts:  # each item is read by its owner only, and is the very item of the whole dataset
        assert torch.equal(p[0].stacks, whole[0].stacks[p[0].ids()])


def test_cli_evaluate_dataset_shards_cover_every_item_once(capsys, tmp_path, ddff_file):
    import json

    path, _, _ = ddff_file
    folder = tmp_path / "fod"
    write_fod500(folder, ids=(400, 401))
    names = []
    for shard in ("1/2", "2/2"):
        rc, out, err = _run(capsys, "evaluate", "--dataset", f"ddff12:{path}", "--dataset", f"fod500:{folder}#test",
                            "--shard", shard, "--json", tmp_path / "r.json", "--threads", "1")
        assert rc == 0, err
        assert f"shard {shard}: 2 of 4 stacks" in out
        names += [s["name"] for s in json.loads((tmp_path / "r.json").read_text())["stacks"]]
    assert sorted(names) == ["ddff12_val_0000", "ddff12_val_0001", "fod500_000400", "fod500_000401"]
