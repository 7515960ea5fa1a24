"""Tests of where camera values and focus distances come from: defocus.data.sensors, defocus.data.sources, the
provenance that read_stack records, and defocus.inspect."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from defocus.data.exif import read_exif_metadata
from defocus.data.folders import read_stack, write_stack
from defocus.data.sensors import SENSORS, lookup_sensor, pixel_pitch_um
from defocus.data.sources import CAMERA_FIELDS, missing_camera_message, resolve_camera, resolve_focus
from defocus.errors import DefocusError
from defocus.inspect import format_inspection, inspect_stack
from defocus.optics.camera import ThinLensCamera, default_depth_range

PIXEL6 = "google-pixel-6-main"
# EXIF tags
MAKE, MODEL = 0x010F, 0x0110
FOCAL, FNUM, XRES, XRES_UNIT, F35, SUBJ = 0x920A, 0x829D, 0xA20E, 0xA210, 0xA405, 0x9206
PIXEL_SAMPLES = Path(__file__).resolve().parents[3] / "shared/data/focal_stacks/hybriddepth_pixel6pro/images"


def _jpeg(path: Path, w: int = 32, h: int = 24, ifd0: dict | None = None, sub: dict | None = None, seed: int = 0):
    """A small JPEG with IFD0 tags (Make, Model) and Exif sub-IFD tags."""
    exif = Image.Exif()
    for k, v in (ifd0 or {}).items():
        exif[k] = v
    sub_ifd = exif.get_ifd(0x8769)
    for k, v in (sub or {}).items():
        sub_ifd[k] = v
    arr = np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(arr).save(path, exif=exif, quality=90)
    return path


def _pixel_folder(folder: Path, focus=(0.35, 0.9, 2.21), w: int = 1020, h: int = 765, extra: dict | None = None):
    """A Pixel-6-Pro-like folder: Make/Model, FocalLength 6.81, FNumber 1.85, no pitch tags; SubjectDistance when
    ``focus`` gives it."""
    for i, fd in enumerate(focus):
        sub = {FOCAL: 6.81, FNUM: 1.85, **(extra or {})}
        if fd is not None:
            sub[SUBJ] = fd
        _jpeg(folder / f"img_{i + 1}.jpg", w, h, {MAKE: "Google", MODEL: "Pixel 6 Pro"}, sub, seed=i)
    return folder


def _flags_named(message: str) -> set[str]:
    """The flags a missing-camera message tells the user to pass (the part before the parenthesis)."""
    return set(re.findall(r"--[a-z0-9-]+", message.split(" (", 1)[0]))


# ============================================================================================= EXIF and sensors
def test_exif_gives_make_model_and_the_pitch_tag(tmp_path):
    p = _jpeg(tmp_path / "a.jpg", ifd0={MAKE: "  Google\x00", MODEL: "Pixel  6 Pro "},
              sub={FOCAL: 6.81, FNUM: 1.85, XRES: 200.0, XRES_UNIT: 4})
    meta = read_exif_metadata(p)
    assert meta["make"] == "Google" and meta["model"] == "Pixel 6 Pro"
    assert meta["focal_length_mm"] == pytest.approx(6.81) and meta["f_number"] == pytest.approx(1.85)
    assert meta["pixel_size_um"] == pytest.approx(5.0) and meta["pixel_size_from"] == "FocalPlaneXResolution"
    p35 = _jpeg(tmp_path / "b.jpg", 36, 24, sub={FOCAL: 6.0, F35: 30})
    meta35 = read_exif_metadata(p35)
    assert meta35["pixel_size_from"] == "FocalLengthIn35mmFilm" and "make" not in meta35
    assert meta35["pixel_size_um"] == pytest.approx(36e3 * 6 / 30 / 36)


def test_pixel_6_pro_lookup_and_pitch_scales_with_width():
    entry = lookup_sensor("Google", "Pixel 6 Pro", 6.81)
    assert entry is not None and entry.name == PIXEL6 and "GN1" in entry.source
    assert pixel_pitch_um(entry, 4080) == pytest.approx(2.4)
    assert pixel_pitch_um(entry, 1020) == pytest.approx(9.6)
    assert pixel_pitch_um(entry, 3072, 4080) == pytest.approx(2.4)  # portrait: the long side counts
    assert lookup_sensor("  GOOGLE ", "pixel  6   pro") is entry  # case and whitespace, no focal length: main camera
    assert lookup_sensor("Google", "Pixel 6 Pro", 2.0) is None  # ultra-wide module
    assert lookup_sensor("Google", "Pixel 6 Pro", 19.0) is None  # telephoto module
    assert lookup_sensor("Google", "Pixel 9", 6.81) is None
    assert lookup_sensor("Apple", "Pixel 6 Pro", 6.81) is None
    assert lookup_sensor(None, "Pixel 6 Pro") is None and lookup_sensor("Google", "") is None


def test_sensor_table_entries_are_consistent():
    names = [e.name for e in SENSORS]
    assert len(set(names)) == len(names)
    for e in SENSORS:
        assert e.source and e.native_width_px > 0, e.name
        assert 0.5 < e.pitch_at_native_um < 10.0, e.name
        if e.pixel_pitch_um is not None and e.sensor_width_mm is not None:
            assert e.pixel_pitch_um * e.native_width_px / 1e3 == pytest.approx(e.sensor_width_mm, rel=0.01), e.name
        for model in e.models:  # every model finds its own entry (with its own focal length)
            assert lookup_sensor(e.make, model, e.focal_length_mm) is e, (e.name, model)
    canon = lookup_sensor("Canon", "Canon EOS 5D Mark IV", 85.0)  # any lens on an interchangeable-lens body
    assert canon is not None and pixel_pitch_um(canon, 6720) == pytest.approx(36.0 / 6720 * 1e3)


# ============================================================================================= camera sources
EXIF_FULL = {"focal_length_mm": 6.81, "f_number": 1.85, "pixel_size_um": 3.0,
             "pixel_size_from": "FocalPlaneXResolution",
             "make": "Google", "model": "Pixel 6 Pro"}
JSON_CAM = {"focal_length_mm": 50.0, "f_number": 8.0, "pixel_size_um": 12.0}
FLAGS = {"focal_length_mm": 35.0, "f_number": 2.0, "pixel_size_um": 4.0}


def _src(sources, key):
    return sources[key]["source"], sources[key]["value"]


def test_each_camera_source_alone(tmp_path):
    cam, s = resolve_camera(FLAGS, None, {}, 100)
    assert cam == ThinLensCamera.from_mm_um(35.0, 2.0, 4.0) and {s[k]["source"] for k in CAMERA_FIELDS} == {"flag"}
    cam, s = resolve_camera({}, JSON_CAM, {}, 100)
    assert cam == ThinLensCamera.from_mm_um(50.0, 8.0, 12.0)
    assert {s[k]["source"] for k in CAMERA_FIELDS} == {"stack.json"}

    meta = read_exif_metadata(_jpeg(tmp_path / "a.jpg", sub={FOCAL: 50.0, FNUM: 2.8, XRES: 200.0, XRES_UNIT: 4}))
    cam, s = resolve_camera({}, None, meta, 32)
    assert _src(s, "focal_length_mm") == ("exif:FocalLength", pytest.approx(50.0))
    assert _src(s, "f_number") == ("exif:FNumber", pytest.approx(2.8))
    assert _src(s, "pixel_size_um") == ("exif:FocalPlaneXResolution", pytest.approx(5.0))
    assert cam.pixel_size_m == pytest.approx(5e-6)

    meta = read_exif_metadata(_jpeg(tmp_path / "b.jpg", 36, 24, sub={FOCAL: 6.0, FNUM: 1.8, F35: 30}))
    cam, s = resolve_camera({}, None, meta, 36)
    assert _src(s, "pixel_size_um") == ("exif:FocalLengthIn35mmFilm", pytest.approx(200.0))

    meta = read_exif_metadata(_jpeg(tmp_path / "c.jpg", 40, 30, {MAKE: "Google", MODEL: "Pixel 6 Pro"},
                                    {FOCAL: 6.81, FNUM: 1.85}))
    cam, s = resolve_camera({}, None, meta, 1020)
    assert _src(s, "pixel_size_um") == (f"sensor-table:{PIXEL6}", pytest.approx(9.6))
    assert s["device"] == {"make": "Google", "model": "Pixel 6 Pro", "sensor_table": PIXEL6}

    cam, s = resolve_camera({"focal_length_mm": 6.0, "f_number": 2.0}, None, {}, 1000, sensor_width_mm=6.4)
    assert _src(s, "pixel_size_um") == ("sensor-width-mm", pytest.approx(6.4))
    cam, s = resolve_camera({"focal_length_mm": 6.0, "f_number": 2.0}, None, {}, 750, 6.4, image_height_px=1000)
    assert _src(s, "pixel_size_um") == ("sensor-width-mm", pytest.approx(6.4))  # long side


def test_camera_precedence_flag_json_exif_table_sensor_width():
    args = dict(exif=dict(EXIF_FULL), image_width_px=4080, sensor_width_mm=4.08)
    chain = [("flag", 4.0), ("stack.json", 12.0), ("exif:FocalPlaneXResolution", 3.0),
             (f"sensor-table:{PIXEL6}", 2.4), ("sensor-width-mm", 1.0)]
    # focal length from EXIF (6.81 mm: the Pixel's main camera, so the sensor table applies)
    flags, js = {"pixel_size_um": 4.0}, {"pixel_size_um": 12.0}
    for want_source, want_value in chain:
        cam, s = resolve_camera(flags, js, args["exif"], 4080, args["sensor_width_mm"])
        assert _src(s, "pixel_size_um") == (want_source, pytest.approx(want_value))
        assert cam.pixel_size_m == pytest.approx(want_value * 1e-6)
        # strip the winning source for the next round
        if want_source == "flag":
            flags.pop("pixel_size_um")
        elif want_source == "stack.json":
            js.pop("pixel_size_um")
        elif want_source.startswith("exif"):
            args["exif"].pop("pixel_size_um")
        elif want_source.startswith("sensor-table"):
            args["exif"]["model"] = "Pixel 9"
    for key, chain2 in (("focal_length_mm", [35.0, 50.0, 6.81]), ("f_number", [2.0, 8.0, 1.85])):
        exif = dict(EXIF_FULL)
        _, s = resolve_camera(FLAGS, JSON_CAM, exif, 4080)
        assert _src(s, key) == ("flag", chain2[0])
        _, s = resolve_camera({k: v for k, v in FLAGS.items() if k != key}, JSON_CAM, exif, 4080)
        assert _src(s, key) == ("stack.json", chain2[1])
        _, s = resolve_camera({}, {k: v for k, v in JSON_CAM.items() if k != key}, exif, 4080)
        assert _src(s, key)[0].startswith("exif:") and s[key]["value"] == pytest.approx(chain2[2])


def test_each_flag_overrides_only_what_it_names():
    cam, s = resolve_camera({"f_number": 4.0, "focal_length_mm": None}, JSON_CAM, EXIF_FULL, 4080)
    assert cam == ThinLensCamera.from_mm_um(50.0, 4.0, 12.0)
    assert [s[k]["source"] for k in CAMERA_FIELDS] == ["stack.json", "flag", "stack.json"]
    cam, s = resolve_camera({"pixel_size_um": 1.5}, None, EXIF_FULL, 4080)
    assert [s[k]["source"] for k in CAMERA_FIELDS] == ["exif:FocalLength", "exif:FNumber", "flag"]


def test_bad_camera_values_are_errors_or_missing():
    with pytest.raises(DefocusError, match="f-number must be a finite positive") as info:
        resolve_camera({"f_number": 0.0}, None, EXIF_FULL, 4080)
    assert info.value.field == "camera.f_number"
    with pytest.raises(DefocusError, match="sensor width must be a finite positive") as info:
        resolve_camera({}, None, {}, 100, sensor_width_mm=-1.0)
    assert info.value.field == "sensor_width_mm" and "--" not in str(info.value)  # the CLI names the flag
    with pytest.raises(DefocusError, match="unknown camera values"):
        resolve_camera({"focal_mm": 5.0}, None, {}, 100)
    # implausible EXIF counts as missing (a 20 m focal length, a 2 mm pixel)
    cam, s = resolve_camera({}, None, {"focal_length_mm": 20000.0, "f_number": 2.0, "pixel_size_um": 2000.0}, 100)
    assert cam is None and s["focal_length_mm"]["source"] is None and s["pixel_size_um"]["source"] is None


def test_missing_camera_message_names_the_flags_still_to_pass():
    exif = {"focal_length_mm": 6.81, "f_number": 1.85, "make": "Google", "model": "Pixel 9"}
    cam, s = resolve_camera({}, None, exif, 4080)
    msg = missing_camera_message(s, "STACK", flags=True)
    assert cam is None and _flags_named(msg) == {"--pixel-size-um", "--sensor-width-mm"}
    assert msg.startswith("no pixel pitch for STACK: pass --pixel-size-um or --sensor-width-mm")
    assert "FocalLength 6.81 mm and FNumber 1.85" in msg and "Google Pixel 9 is not in the sensor table" in msg

    _, s = resolve_camera({}, None, {**exif, "model": "Pixel 6 Pro", "focal_length_mm": 2.0}, 4080)
    assert "only for its main camera (FocalLength 6.81 mm)" in missing_camera_message(s, "S", flags=True)
    _, s = resolve_camera({}, None, {"focal_length_mm": 6.81, "f_number": 1.85}, 4080)
    assert "no EXIF Make/Model" in missing_camera_message(s, "S", flags=True)

    _, s = resolve_camera({}, None, {}, 4080)
    assert _flags_named(missing_camera_message(s, "S", flags=True)) == {
        "--focal-length-mm", "--f-number", "--pixel-size-um", "--sensor-width-mm"}
    _, s = resolve_camera({"pixel_size_um": 2.0}, None, {"focal_length_mm": 6.81}, 4080)
    msg = missing_camera_message(s, "S", flags=True)
    assert _flags_named(msg) == {"--f-number"} and msg.startswith("no f-number for S")
    assert "--pixel-size-um 2 given" in msg
    # For API users (the default): the values by name, no command-line flag.
    msg = missing_camera_message(s, "S")
    assert "--" not in msg and msg.startswith("no f-number for S: give the f-number (f_number)")
    assert "pixel pitch 2 µm given" in msg
    _, s = resolve_camera({}, None, exif, 4080)
    msg = missing_camera_message(s, "STACK")
    assert msg.startswith("no pixel pitch for STACK: give the pixel pitch (pixel_size_um) or the sensor width") and "--" not in msg


# ============================================================================================= focus sources
def test_focus_from_diopters_and_its_errors():
    fd, src = resolve_focus(3, focus_diopters=[4.0, 2.0, 0.5])
    assert fd == pytest.approx([0.25, 0.5, 2.0]) and src == "flag-diopters"
    with pytest.raises(DefocusError, match="0 dioptres is infinity"):
        resolve_focus(2, focus_diopters=[1.0, 0.0])
    with pytest.raises(DefocusError, match="dioptres must be finite positive"):
        resolve_focus(2, focus_diopters=[1.0, -2.0])
    with pytest.raises(DefocusError, match="1 focus dioptres given but stack s has 2 images"):
        resolve_focus(2, focus_diopters=[1.0], name="s")


def test_focus_precedence():
    exif = [{"focus_distance_m": 3.0}, {"focus_distance_m": 4.0}]
    js = {"focus_distances_m": [5.0, 6.0]}
    full = dict(focus_m=[1.0, 2.0], focus_diopters=[1.0, 0.5], stack_json=js, exif_list=exif)
    assert resolve_focus(2, **full) == ([1.0, 2.0], "flag")
    assert resolve_focus(2, **{**full, "focus_m": None}) == ([1.0, 2.0], "flag-diopters")
    assert resolve_focus(2, stack_json=js, exif_list=exif) == ([5.0, 6.0], "stack.json")
    assert resolve_focus(2, stack_json={"images": ["a", "b"]}, exif_list=exif) == ([3.0, 4.0], "exif:SubjectDistance")
    assert resolve_focus(2, exif_list=[exif[0], {}], file_names=["a_1.0m.jpg", "b_2.0m.jpg"]) == (None, None)
    assert resolve_focus(2) == (None, None)
    with pytest.raises(DefocusError, match="3 focus distances given but stack s has 2 images"):
        resolve_focus(2, focus_m=[1.0, 2.0, 3.0], name="s")


def test_read_stack_records_focus_sources(tmp_path):
    folder = _pixel_folder(tmp_path / "p", focus=(0.35, 0.9, 2.21))
    st = read_stack(folder)
    assert st.provenance["focus"]["source"] == "exif:SubjectDistance" and st.provenance["relative"] is False
    assert st.provenance["focus"]["values_m"] == pytest.approx([0.35, 0.9, 2.21])
    assert st.provenance["images"] == ["img_1.jpg", "img_2.jpg", "img_3.jpg"] == st.image_names
    st = read_stack(folder, focus_diopters=[2.0, 1.0, 0.5])
    assert st.focus_distances_m.tolist() == [0.5, 1.0, 2.0] and st.provenance["focus"]["source"] == "flag-diopters"
    st = read_stack(folder, focus=[1.0, 2.0, 3.0], focus_diopters=[2.0, 1.0, 0.5])
    assert st.provenance["focus"] == {"values_m": [1.0, 2.0, 3.0], "source": "flag"}
    (folder / "stack.json").write_text(json.dumps({"images": ["img_3.jpg", "img_1.jpg"],
                                                   "focus_distances_m": [2.5, 0.4]}))
    st = read_stack(folder)
    assert st.image_names == ["img_3.jpg", "img_1.jpg"] and st.provenance["focus"]["source"] == "stack.json"
    assert st.focus_distances_m.tolist() == pytest.approx([2.5, 0.4])
    assert st.provenance["camera"]["pixel_size_um"]["source"] == f"sensor-table:{PIXEL6}"  # json has no camera


def test_relative_stack_without_focus(tmp_path):
    folder = _pixel_folder(tmp_path / "rel", focus=(None, None, 1.0))
    with pytest.raises(DefocusError, match=r"give them \(metres or dioptres\) or add stack\.json \(img_1\.jpg has no EXIF"):
        read_stack(folder)
    st = read_stack(folder, require_focus=False)
    assert st.provenance["relative"] is True
    assert st.provenance["focus"] == {"values_m": None, "source": None}
    assert st.focus_distances_m.tolist() == [1.0, 2.0, 3.0]  # placeholders in file order
    assert st.camera is not None  # the camera still resolves
    with pytest.raises(DefocusError, match="relative stack"):
        write_stack(st, tmp_path / "out")
    assert not (tmp_path / "out").exists()


# ============================================================================================= read_stack camera
def test_read_stack_camera_from_sensor_table_flags_and_sensor_width(tmp_path):
    folder = _pixel_folder(tmp_path / "p")  # 1020 px wide: a quarter of 4080
    st = read_stack(folder)
    cam_prov = st.provenance["camera"]
    assert [cam_prov[k]["source"] for k in CAMERA_FIELDS] == [
        "exif:FocalLength", "exif:FNumber", f"sensor-table:{PIXEL6}"]
    assert cam_prov["pixel_size_um"]["value"] == pytest.approx(9.6)
    assert st.camera == ThinLensCamera.from_mm_um(6.81, 1.85, 9.6)
    st = read_stack(folder, camera_flags={"pixel_size_um": 3.0, "f_number": None})
    assert st.camera == ThinLensCamera.from_mm_um(6.81, 1.85, 3.0)
    assert st.provenance["camera"]["pixel_size_um"]["source"] == "flag"
    full = ThinLensCamera.from_mm_um(50.0, 8.0, 12.0)
    st = read_stack(folder, camera=full, camera_flags={"pixel_size_um": 3.0})
    assert st.camera == full and st.provenance["camera"]["f_number"] == {"value": 8.0, "source": "argument"}

    plain = tmp_path / "plain"  # no EXIF at all
    plain.mkdir()
    for i in range(2):
        Image.fromarray(np.full((30, 40, 3), 60 * i, np.uint8)).save(plain / f"f{i}.png")
    st = read_stack(plain, focus=[1.0, 2.0])
    assert st.camera is None
    assert _flags_named(missing_camera_message(st.provenance["camera"], st.name, flags=True)) == {
        "--focal-length-mm", "--f-number", "--pixel-size-um", "--sensor-width-mm"}
    st = read_stack(plain, focus=[1.0, 2.0], camera_flags={"focal_length_mm": 6.0, "f_number": 2.0},
                    sensor_width_mm=8.0)
    assert st.camera.pixel_size_m == pytest.approx(8.0e-3 / 40)
    assert st.provenance["camera"]["pixel_size_um"]["source"] == "sensor-width-mm"
    with pytest.raises(DefocusError, match="beyond the focal length"):
        read_stack(plain, focus=[1.0, 0.004], camera_flags={"focal_length_mm": 6.0, "f_number": 2.0},
                   sensor_width_mm=8.0)


# ============================================================================================= inspect
def test_inspect_stack_reports_focus_camera_and_blur(tmp_path):
    folder = tmp_path / "scene"
    folder.mkdir()
    names = ["a.png", "b.png", "c.png"]
    for i, nm in enumerate(names):
        Image.fromarray(np.full((12, 16, 3), 40 * i, np.uint8)).save(folder / nm)
    cam = {"focal_length_mm": 50.0, "f_number": 8.0, "pixel_size_um": 12.0}
    (folder / "stack.json").write_text(json.dumps({"images": names, "focus_distances_m": [1.0, 4.0, 2.5],
                                                   "camera": cam}))
    info = inspect_stack(folder)
    assert info["num_images"] == 3 and (info["width"], info["height"]) == (16, 12)
    assert [im["file"] for im in info["images"]] == names
    assert [im["focus_m"] for im in info["images"]] == [1.0, 4.0, 2.5]
    assert info["focus_source"] == "stack.json" and info["relative"] is False
    assert {k: v["source"] for k, v in info["camera"].items()} == dict.fromkeys(CAMERA_FIELDS, "stack.json")
    camera = ThinLensCamera.from_mm_um(50.0, 8.0, 12.0)
    k = camera.blur_per_dioptre(torch.tensor([1.0, 4.0, 2.5])).tolist()
    assert [im["blur_per_dioptre_px"] for im in info["images"]] == pytest.approx(k)
    near, far = default_depth_range(camera, [1.0, 4.0, 2.5])
    assert info["depth_range_m"] == [near, far] == [0.1, 10.0]  # the nyuv2 preset's camera
    want = max(kk * abs(1 / fd - 1 / d) for kk, fd in zip(k, [1.0, 4.0, 2.5]) for d in (near, far))
    assert info["max_blur_px"] == pytest.approx(want)
    assert any("not sorted" in w for w in info["warnings"])
    json.dumps(info)  # serialisable
    text = format_inspection(info)
    assert "3 images, 16x12 px" in text and "b.png: focus 4 m, K" in text
    assert "focal length: 50 mm (from stack.json)" in text and "not sorted" in text

    rel = _pixel_folder(tmp_path / "rel", focus=(None, None), w=40, h=30)
    info = inspect_stack(rel, require_focus=False, camera_flags={"f_number": 2.0})
    assert info["relative"] and info["focus_source"] is None and info["max_blur_px"] is None
    assert info["camera"]["f_number"] == {"value": 2.0, "source": "flag"}
    assert all(im["focus_m"] is None and im["blur_per_dioptre_px"] is None for im in info["images"])
    assert any("relative" in w for w in info["warnings"])
    assert "relative (no focus distances)" in format_inspection(info)


# ============================================================================================= the real Pixel stack
def test_real_pixel_6_pro_exif_resolves_through_the_sensor_table():
    if not PIXEL_SAMPLES.is_dir():
        pytest.skip(f"no sample stack at {PIXEL_SAMPLES}")
    first = sorted(PIXEL_SAMPLES.glob("*.jpg"))[0]
    meta = read_exif_metadata(first)
    assert meta["focal_length_mm"] == pytest.approx(6.81) and meta["f_number"] == pytest.approx(1.85)
    # the files name their camera (Make "Google", Model "Pixel 6 Pro"), have no pitch tags and no SubjectDistance
    assert (meta.get("make"), meta.get("model")) == ("Google", "Pixel 6 Pro")
    assert "pixel_size_um" not in meta and "focus_distance_m" not in meta
    with Image.open(first) as im:
        w, h = im.size
    assert (w, h) == (4080, 3072)
    cam, s = resolve_camera({}, None, meta, w, image_height_px=h)
    assert s["pixel_size_um"] == {"value": pytest.approx(2.4), "source": f"sensor-table:{PIXEL6}"}
    assert cam == ThinLensCamera.from_mm_um(6.81, 1.85, 2.4)


def test_near_far_file_names_against_the_focus_order():
    from defocus.data.sources import check_focus_names

    names = ["breakfast_far.png", "breakfast_near.png"]  # name order: far first
    warning = check_focus_names(names, [0.529, 0.869])  # the user gave NEAR,FAR: swapped onto the files
    assert warning is not None and "breakfast_far.png -> 0.529 m" in warning and "\n" not in warning
    assert check_focus_names(names, [0.869, 0.529]) is None
    assert check_focus_names(["a.png", "b.png"], [0.5, 0.9]) is None  # no near/far words: nothing to judge
