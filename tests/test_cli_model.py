"""End-to-end tests of `defocus train / evaluate / predict / demo` on tiny configs.

The training run goes once through ``python -m defocus.cli`` in a subprocess (the real entry point); everything else
runs ``defocus.cli.main([...])`` in-process with the weights it exported.
"""

from __future__ import annotations

import csv
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
from defocus.models.checkpoint import read_metadata

REPO = Path(__file__).resolve().parents[1]
CAMERA_FLAGS = ["--focal-length-mm", "50", "--f-number", "8", "--pixel-size-um", "12"]
H, W = 36, 44


def _cli(args: list, capsys) -> tuple[int, str, str]:
    rc = main([str(a) for a in args])
    cap = capsys.readouterr()
    return rc, cap.out, cap.err


def _one_error_line(rc: int, err: str, *needles: str) -> None:
    assert rc == 2
    assert "Traceback" not in err
    lines = [ln for ln in err.strip().splitlines() if ln.strip()]
    assert len(lines) == 1, err
    for n in needles:
        assert n in lines[0], lines[0]


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> dict[str, Path]:
    """`defocus train --config tiny ... --export` (the packaged config, by name) in a subprocess; a rendered stack
    beside it."""
    root = tmp_path_factory.mktemp("cli_model")
    weights = root / "w.safetensors"
    env = dict(os.environ, OMP_NUM_THREADS="1")
    proc = subprocess.run(
        [sys.executable, "-m", "defocus.cli", "train", "--config", "tiny",
         f"out_dir={root / 'runs'}", "name=x", "--quiet", "--export", str(weights)],
        cwd=root, env=env, capture_output=True, text=True, timeout=300,
    )
    assert proc.returncode == 0, proc.stderr
    assert "Traceback" not in proc.stderr
    return {"root": root, "run": root / "runs" / "x", "weights": weights}


@pytest.fixture(scope="module")
def stack(trained) -> Path:
    out = trained["root"] / "stacks" / "proc7"
    rc = main(["render", "--procedural", "7", "--preset", "nyuv2", "--size", str(H), str(W), "-o", str(out)])
    assert rc == 0
    return out


# ------------------------------------------------------------------------------------------------------ train
def test_train_writes_run_files_and_exports(trained):
    run = trained["run"]
    assert (run / "config.yaml").is_file()
    assert "daifnet_tiny" in (run / "config.yaml").read_text()
    assert (run / "last.safetensors").is_file()
    assert trained["weights"].is_file() and trained["weights"].stat().st_size > 0
    with (run / "metrics.csv").open() as f:
        rows = list(csv.reader(f))
    header, body = rows[0], rows[1:]
    assert header[:3] == ["epoch", "step", "loss"]
    assert "val_abs_rel" in header
    assert [r[0] for r in body] == ["1", "2"]  # tiny.yaml: 2 epochs
    for r in body:
        assert np.isfinite(float(r[header.index("loss")]))
        assert np.isfinite(float(r[header.index("val_abs_rel")]))


def test_export_copies_best_by_default_and_last_when_asked(trained, tmp_path, capsys):
    run = trained["run"]
    assert trained["weights"].read_bytes() == (run / "best.safetensors").read_bytes()
    weights = tmp_path / "last.safetensors"
    rc, _, err = _cli(["train", "--config", "tiny", f"out_dir={tmp_path}", "name=z", "export_weights=last",
                       "--quiet", "--export", str(weights)], capsys)
    assert rc == 0, err
    assert weights.read_bytes() == (tmp_path / "z" / "last.safetensors").read_bytes()
    assert read_metadata(weights)["extra"]["epoch"] == 2  # tiny.yaml: 2 epochs
    rc, _, err = _cli(["train", "--config", "tiny", f"out_dir={tmp_path}", "name=w", "export_weights=worst",
                       "--quiet"], capsys)
    _one_error_line(rc, err, "export_weights")


def test_train_overrides_and_errors(tmp_path, capsys):
    rc, out, err = _cli(["train", "--config", "tiny", f"out_dir={tmp_path}", "name=y",
                         "optim.nope=1", "--quiet"], capsys)
    _one_error_line(rc, err, "optim.nope")
    assert not (tmp_path / "y").exists()
    rc, out, err = _cli(["train", "--config", tmp_path / "missing.yaml", "--quiet"], capsys)
    _one_error_line(rc, err, "missing.yaml")
    rc, out, err = _cli(["train", "--config", "tiny", f"out_dir={tmp_path}", "name=z",
                         "--resume", "--quiet"], capsys)
    _one_error_line(rc, err, "resume")


# --------------------------------------------------------------------------------------------------- evaluate
def test_evaluate_prints_both_methods_and_writes_json(trained, stack, tmp_path, capsys):
    js = tmp_path / "res" / "r.json"
    rc, out, err = _cli(["evaluate", stack, "--checkpoint", trained["weights"], "--json", js], capsys)
    assert rc == 0, err
    assert "Traceback" not in err
    table = [ln for ln in out.splitlines() if ln.strip()]
    assert "AbsRel" in table[0] and "δ1" in table[0]
    assert any(ln.startswith("proc7") and "network" in ln for ln in table)
    assert any(ln.startswith("proc7") and "classical" in ln for ln in table)
    assert any(ln.startswith("mean") and "classical" in ln for ln in table)
    data = json.loads(js.read_text())
    for method in ("network", "classical"):
        mean = data["mean"][method]
        for key in ("abs_rel", "rmse", "delta1", "aif_psnr", "aif_ssim"):
            assert np.isfinite(mean[key]), (method, key)
        assert 0.0 <= mean["delta1"] <= 1.0
    assert data["stacks"][0]["name"] == "proc7"
    assert data["checkpoint"] == str(trained["weights"])


def test_evaluate_reports_fixed_baselines_on_request(trained, stack, tmp_path, capsys):
    js = tmp_path / "fixed.json"
    rc, out, err = _cli(["evaluate", stack, "--checkpoint", trained["weights"], "--json", js, "--fixed-baselines"],
                        capsys)
    assert rc == 0, err
    data = json.loads(js.read_text())
    assert list(data["mean"]) == ["network", "classical", "classical_sigma0", "classical_sigma1", "classical_fill"]
    # The stack is clean (paper protocol): the adaptive baseline chose no pre-filter, so it equals σ = 0.
    assert data["mean"]["classical"] == data["mean"]["classical_sigma0"]
    assert data["mean"]["classical"] != data["mean"]["classical_sigma1"]
    assert data["mean"]["classical"] != data["mean"]["classical_fill"]
    assert any(ln.startswith("mean") and "classical_sigma1" in ln for ln in out.splitlines())


def test_evaluate_needs_ground_truth(trained, stack, tmp_path, capsys):
    plain = tmp_path / "nogt"
    plain.mkdir()
    for p in stack.iterdir():
        if not p.name.startswith("gt_"):
            (plain / p.name).write_bytes(p.read_bytes())
    rc, out, err = _cli(["evaluate", plain, "--checkpoint", trained["weights"]], capsys)
    _one_error_line(rc, err, "gt_depth")


# ---------------------------------------------------------------------------------------------------- predict
def _check_prediction(folder: Path, h: int, w: int) -> np.ndarray:
    assert sorted(p.name for p in folder.iterdir()) == sorted(
        ["depth.tiff", "depth.png", "depth_preview.png", "aif.png", "confidence.tiff", "confidence.png", "points.ply",
         "report.png", "prediction.json"]
    )
    depth = tifffile.imread(folder / "depth.tiff")
    assert depth.dtype == np.float32 and depth.shape == (h, w)
    assert np.isfinite(depth).all() and depth.min() > 0
    with Image.open(folder / "depth.png") as im:
        mm = np.array(im)
    assert mm.shape == (h, w)
    assert mm.dtype in (np.uint16, np.int32)  # Pillow may widen 16-bit greyscale on read
    assert int(mm.max()) <= 65535
    assert np.abs(mm.astype(np.float64) - depth.astype(np.float64) * 1000.0).max() <= 1.0
    with Image.open(folder / "aif.png") as im:
        assert im.size == (w, h) and im.mode == "RGB"
    with Image.open(folder / "depth_preview.png") as im:
        assert im.size[0] >= w and im.size[1] >= h  # the image plus a colour scale
    conf = tifffile.imread(folder / "confidence.tiff")
    assert conf.shape == (h, w) and conf.min() >= 0 and conf.max() <= 1
    return depth


def test_predict_writes_all_outputs(trained, stack, tmp_path, capsys):
    out = tmp_path / "pred"
    before = {p.name: p.read_bytes() for p in stack.iterdir()}
    rc, stdout, err = _cli(["predict", stack, "-o", out, "--checkpoint", trained["weights"]], capsys)
    assert rc == 0, err
    depth = _check_prediction(out / "proc7", H, W)
    assert depth.min() >= 0.1 - 1e-6 and depth.max() <= 10.0 + 1e-4  # nyuv2 preset range
    assert {p.name: p.read_bytes() for p in stack.iterdir()} == before  # input untouched
    assert not [p for p in out.iterdir() if p.name.startswith(".")]  # no temporary folders left


def test_predict_with_refinement(trained, stack, tmp_path, capsys):
    out = tmp_path / "pred_refined"
    rc, _, err = _cli(["predict", stack, "-o", out, "--checkpoint", trained["weights"], "--refine-steps", "2"],
                      capsys)
    assert rc == 0, err
    refined = _check_prediction(out / "proc7", H, W)
    rc, _, err = _cli(["predict", stack, "-o", tmp_path / "plain", "--checkpoint", trained["weights"]], capsys)
    assert rc == 0, err
    plain = tifffile.imread(tmp_path / "plain" / "proc7" / "depth.tiff")
    assert not np.array_equal(refined, plain)  # the refinement steps did something
    rc, _, err = _cli(["predict", stack, "-o", out, "--checkpoint", trained["weights"], "--refine-steps", "-1"],
                      capsys)
    _one_error_line(rc, err, "--refine-steps")


@pytest.fixture
def plain_pngs(stack, tmp_path) -> Path:
    """The stack's images as plain PNGs (no stack.json, no EXIF)."""
    folder = tmp_path / "plain_pngs"
    folder.mkdir()
    meta = json.loads((stack / "stack.json").read_text())
    for i, name in enumerate(meta["images"]):
        with Image.open(stack / name) as im:
            im.save(folder / f"img_{i}.png")
    return folder


def test_predict_plain_pngs_without_focus_give_a_relative_result(trained, plain_pngs, tmp_path, capsys):
    out = tmp_path / "rel"
    rc, stdout, err = _cli(["predict", plain_pngs, "-o", out, "--checkpoint", trained["weights"], "--no-align"],
                           capsys)
    assert rc == 0, err
    assert "relative" in err and "not metric" in err  # one clear warning
    folder = out / "plain_pngs"
    names = {p.name for p in folder.iterdir()}
    assert {"focus_index.tiff", "focus_index_preview.png", "aif.png", "confidence.tiff", "report.png",
            "prediction.json"} <= names
    assert "depth.tiff" not in names and "points.ply" not in names  # nothing that looks metric
    index = tifffile.imread(folder / "focus_index.tiff")
    assert index.shape == (H, W) and index.min() >= 0 and index.max() <= 4
    info = json.loads((folder / "prediction.json").read_text())
    assert info["relative"] is True and info["provenance"]["focus"]["source"] is None


def test_predict_plain_pngs_need_a_camera_once_focus_is_given(trained, plain_pngs, tmp_path, capsys):
    out = tmp_path / "p_out"

    rc, _, err = _cli(["predict", plain_pngs, "-o", out, "--checkpoint", trained["weights"],
                       "--focus", "1,1.5,2.5", *CAMERA_FLAGS], capsys)
    _one_error_line(rc, err, "--focus", "3")
    assert not out.exists()

    rc, _, err = _cli(["predict", plain_pngs, "-o", out, "--checkpoint", trained["weights"],
                       "--focus", "1,1.5,2.5,4,6"], capsys)
    _one_error_line(rc, err, "--focal-length-mm")  # the camera is still missing: name the flags
    assert not out.exists()

    rc, _, err = _cli(["predict", plain_pngs, "-o", out, "--checkpoint", trained["weights"],
                       "--focus", "1,1.5,2.5,4,6", "--focal-length-mm", "50", "--f-number", "8"], capsys)
    _one_error_line(rc, err, "--pixel-size-um")  # each camera flag on its own: only the pitch is missing
    assert not out.exists()

    rc, _, err = _cli(["predict", plain_pngs, "-o", out, "--checkpoint", trained["weights"],
                       "--focus", "1,1.5,2.5,4,6", *CAMERA_FLAGS, "--no-align"], capsys)
    assert rc == 0, err
    _check_prediction(out / "plain_pngs", H, W)
    info = json.loads((out / "plain_pngs" / "prediction.json").read_text())
    assert [im["focus_m"] for im in info["images"]] == [1.0, 1.5, 2.5, 4.0, 6.0]
    assert info["provenance"]["focus"]["source"] == "flag"
    assert info["provenance"]["camera"]["pixel_size_um"]["source"] == "flag"

    # Dioptres, as phones report them, give the same mapping.
    rc, stdout, err = _cli(["predict", plain_pngs, "-o", tmp_path / "d_out", "--checkpoint", trained["weights"],
                            "--focus-diopters", "1,0.666666667,0.4,0.25,0.166666667", *CAMERA_FLAGS, "--no-align"],
                           capsys)
    assert rc == 0, err
    assert "img_4.png: focus 6 m" in stdout


def test_predict_batch_options(trained, stack, tmp_path, capsys):
    # A parent folder of stack folders; two stacks with the same folder name do not collide.
    parent = tmp_path / "batch"
    for sub in ("a", "b"):
        (parent / sub).mkdir(parents=True)
        import shutil

        shutil.copytree(stack, parent / sub / "proc7")
    out = tmp_path / "batch_out"
    rc, stdout, err = _cli(["predict", parent / "a", parent / "b" / "proc7", "-o", out, "--checkpoint",
                            trained["weights"], "--no-align", "--min-confidence", "0.5"], capsys)
    assert rc == 0, err
    assert sorted(p.name for p in out.iterdir()) == ["a_proc7", "b_proc7"]
    depth = tifffile.imread(out / "a_proc7" / "depth.tiff")
    conf = tifffile.imread(out / "a_proc7" / "confidence.tiff")
    assert (depth[conf < 0.5] == 0).all() and (depth[conf >= 0.5] > 0).all()
    stamp = (out / "a_proc7" / "prediction.json").stat().st_mtime_ns
    rc, stdout, err = _cli(["predict", parent / "a", parent / "b" / "proc7", "-o", out, "--checkpoint",
                            trained["weights"], "--no-align", "--skip-existing"], capsys)
    assert rc == 0 and stdout.count("skipped") == 2
    assert (out / "a_proc7" / "prediction.json").stat().st_mtime_ns == stamp
    rc, _, err = _cli(["predict", stack, "-o", out, "--checkpoint", trained["weights"], "--min-confidence", "2"],
                      capsys)
    _one_error_line(rc, err, "--min-confidence")


def test_inspect_prints_what_predict_would_read(stack, tmp_path, capsys):
    rc, stdout, err = _cli(["inspect", stack, "--json", tmp_path / "i.json"], capsys)
    assert rc == 0, err
    assert "focus_0.png: focus 1 m" in stdout and "stack.json" in stdout
    info = json.loads((tmp_path / "i.json").read_text())
    assert info["num_images"] == 5 and info["max_blur_px"] > 1


def test_predict_missing_checkpoint(stack, tmp_path, capsys):
    out = tmp_path / "never"
    rc, _, err = _cli(["predict", stack, "-o", out, "--checkpoint", tmp_path / "nope.safetensors"], capsys)
    _one_error_line(rc, err, "nope.safetensors")
    assert not out.exists()


def test_predict_corrupt_checkpoint(stack, tmp_path, capsys):
    bad = tmp_path / "bad.safetensors"
    bad.write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{garbage}")
    rc, _, err = _cli(["predict", stack, "-o", tmp_path / "o", "--checkpoint", bad], capsys)
    _one_error_line(rc, err, "bad.safetensors")


def test_evaluate_missing_checkpoint(stack, tmp_path, capsys):
    rc, _, err = _cli(["evaluate", stack, "--checkpoint", tmp_path / "nope.safetensors"], capsys)
    _one_error_line(rc, err, "nope.safetensors")


# ------------------------------------------------------------------------------------------------------- demo
def test_demo_writes_report(trained, tmp_path, capsys):
    out = tmp_path / "demo"
    rc, stdout, err = _cli(["demo", "-o", out, "--checkpoint", trained["weights"], "--stacks-per-group", "1"],
                           capsys)
    assert rc == 0, err
    assert "Traceback" not in err
    report = (out / "report.md").read_text()
    assert "classical" in report and "network" in report
    with Image.open(out / "contact_sheet.png") as im:
        assert im.size[0] > 100 and im.size[1] > 100
    data = json.loads((out / "metrics.json").read_text())
    assert len(data["stacks"]) == 4  # both presets x both protocols x 1
    for method in ("network", "classical"):
        assert np.isfinite(data["mean"][method]["abs_rel"])
    assert len([p for p in (out / "stacks").iterdir() if p.is_dir()]) == 4


def test_demo_missing_checkpoint(tmp_path, capsys):
    rc, _, err = _cli(["demo", "-o", tmp_path / "d", "--checkpoint", tmp_path / "nope.safetensors"], capsys)
    _one_error_line(rc, err, "nope.safetensors")
    assert not (tmp_path / "d" / "report.md").exists()


def test_refinement_forward_model_is_selectable(trained, stack, tmp_path, capsys):
    depths = {}
    for psf in ("disk", "gaussian"):
        out = tmp_path / f"pred_{psf}"
        rc, _, err = _cli(["predict", stack, "-o", out, "--checkpoint", trained["weights"], "--refine-steps", "3",
                           "--refine-psf", psf], capsys)
        assert rc == 0, err
        depths[psf] = _check_prediction(out / "proc7", H, W)
    assert not np.array_equal(depths["disk"], depths["gaussian"])


@pytest.mark.parametrize("psf", ["gaussian", "disk"])
def test_demo_refine_psf_reaches_the_refinement(trained, tmp_path, capsys, monkeypatch, psf):
    import defocus.predict as predict_module

    seen = []
    real_refine = predict_module.refine

    def spy(*args, **kwargs):
        seen.append(args[6])  # the forward model of the refinement
        return real_refine(*args, **kwargs)

    monkeypatch.setattr(predict_module, "refine", spy)
    out = tmp_path / f"demo_{psf}"
    rc, _, err = _cli(["demo", "-o", out, "--checkpoint", trained["weights"], "--stacks-per-group", "1",
                       "--refine-steps", "1", "--refine-psf", psf], capsys)
    assert rc == 0, err
    assert len(seen) == 4  # one refinement per demo stack (the classical baseline is not refined)
    want = {"gaussian": ("gaussian", "srgb"), "disk": ("disk", "linear")}[psf]
    assert all((fm.psf, fm.light) == want for fm in seen)
    assert json.loads((out / "metrics.json").read_text())["options"]["refine_model"] == psf


def test_refine_flag_runs_the_default_budget_self_calibrated(trained, stack, tmp_path, capsys, monkeypatch):
    import defocus.predict as predict_mod
    from defocus.cli import DEFAULT_REFINE_STEPS

    seen = {}
    original = predict_mod.refine

    def spy(images, fd, k, dr, init, steps, physics, **kw):
        seen["steps"] = steps
        return original(images, fd, k, dr, init, 1, physics, **kw)

    monkeypatch.setattr(predict_mod, "refine", spy)
    rc, _, err = _cli(["evaluate", stack, "--checkpoint", trained["weights"], "--refine"], capsys)
    assert rc == 0, err
    assert seen["steps"] == DEFAULT_REFINE_STEPS == 30
    seen.clear()
    rc, _, err = _cli(["evaluate", stack, "--checkpoint", trained["weights"], "--refine", "--refine-steps", "4"],
                      capsys)
    assert rc == 0 and seen["steps"] == 4  # an explicit budget wins
