"""`defocus finetune`: the user's stacks read as predict reads them, checked before any work, a held-out part with
its re-rendering error per epoch, weights that predict takes (issue 18)."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest
import torch

from defocus.cli import main
from defocus.data.folders import write_stack
from defocus.data.procedural import make_scene
from defocus.data.stack import FocalStack
from defocus.data.synthesis import synthesize_stack
from defocus.finetune import MIN_IMPROVEMENT, PreparedStack, rerendering_error, split_holdout
from defocus.models.checkpoint import read_metadata, save_checkpoint
from defocus.models.factory import create_model
from defocus.models.prediction import Prediction
from defocus.optics.camera import ThinLensCamera

CAMERA = ThinLensCamera.from_mm_um(16.0, 2.0, 20.0)
FOCUS = [0.5, 0.8, 1.4, 3.0]
FAST = ["--epochs", "2", "--steps-per-epoch", "2", "--set", "data.size=[32,32]", "--set", "optim.batch_size=2",
        "--set", "optim.warmup_steps=1", "--forward", "disk", "--quiet", "--resynthesis-steps", "0"]


def _write(folder: Path, seed: int, size: int = 64, json_file: bool = True) -> Path:
    rgb, depth = make_scene(seed, size, size, (0.4, 4.0))
    images = synthesize_stack(rgb, depth, torch.tensor(FOCUS), CAMERA, "paper", seed=seed)
    write_stack(FocalStack(images=images, focus_distances_m=torch.tensor(FOCUS), camera=CAMERA, name=folder.name),
                folder)
    if not json_file:
        (folder / "stack.json").unlink()
    return folder


@pytest.fixture
def tiny_weights(tmp_path: Path) -> Path:
    torch.manual_seed(0)
    path = tmp_path / "start.safetensors"
    save_checkpoint(path, create_model("daifnet_tiny"), "daifnet_tiny", {})
    return path


def test_finetune_end_to_end_and_predict_takes_the_weights(tmp_path: Path, tiny_weights: Path, capsys):
    stacks = [_write(tmp_path / "stacks" / f"s{i}", 10 + i) for i in range(3)]
    out = tmp_path / "tuned.safetensors"
    rc = main(["finetune", *map(str, stacks), "-o", str(out), "--checkpoint", str(tiny_weights),
               "--run-dir", str(tmp_path / "runs"), *FAST])
    assert rc == 0, capsys.readouterr().err
    printed = capsys.readouterr().out
    assert "held-out re-rendering error: start" in printed and "trained on 2 stack(s), held out 1" in printed
    meta = read_metadata(out)
    record = meta["extra"]["finetune"]
    assert sorted(record["stacks"] + record["held_out"]) == ["s0", "s1", "s2"] and len(record["held_out"]) == 1
    assert len(record["epoch_rerender"]) == 2 and all(v > 0 for v in record["epoch_rerender"])
    assert record["forward_models"]["s0"]["psf"] == "disk"
    with open(tmp_path / "runs" / "finetune-tuned" / "metrics.csv") as f:
        rows = list(csv.DictReader(f))
    assert [float(r["val_rerender"]) for r in rows] == pytest.approx(record["epoch_rerender"])
    summary = json.loads((tmp_path / "runs" / "finetune-tuned" / "finetune.json").read_text())
    assert summary["weights"] == str(out)
    # The weights are the trained ones where the held-out error fell clearly, else the starting ones; predict runs.
    tuned, start = create_model(checkpoint=out), create_model(checkpoint=tiny_weights)
    changed = any(not torch.equal(a, b) for a, b in zip(tuned.state_dict().values(), start.state_dict().values()))
    gained = min(record["epoch_rerender"]) < (1 - MIN_IMPROVEMENT) * record["start_rerender"]
    assert record["kept_start"] == (not gained) and changed == gained
    if gained:  # the blur the weights were adapted to (the stacks' working K)
        assert 0 < record["trained_blur_per_dioptre"] < 1e3
    else:
        assert record["trained_blur_per_dioptre"] is None
    assert main(["predict", str(stacks[0]), "-o", str(tmp_path / "pred"), "--checkpoint", str(out)]) == 0
    assert (tmp_path / "pred" / "s0" / "depth.tiff").is_file()


def test_shipped_start_carries_the_confidence_calibration(tmp_path: Path, capsys):
    """From the shipped weights (the default), the exported checkpoint keeps their calibrated confidence."""
    stacks = [_write(tmp_path / f"s{i}", 20 + i) for i in range(2)]
    out = tmp_path / "w.safetensors"
    rc = main(["finetune", *map(str, stacks), "-o", str(out), "--run-dir", str(tmp_path / "runs"),
               "--epochs", "1", "--steps-per-epoch", "1", "--set", "data.size=[32,32]", "--set",
               "optim.batch_size=1", "--set", "optim.warmup_steps=0", "--forward", "gaussian", "--quiet",
               "--resynthesis-steps", "0"])
    assert rc == 0, capsys.readouterr().err
    model = create_model(checkpoint=out)
    shipped = create_model(pretrained=True)
    assert model.confidence_calibration is not None
    assert model.confidence_calibration.to_dict() == shipped.confidence_calibration.to_dict()
    assert model.checkpoint_metadata["model_name"] == shipped.checkpoint_metadata["model_name"]


def test_focus_and_camera_flags_as_predict_reads_them(tmp_path: Path, tiny_weights: Path, capsys):
    """Folders of bare images take --focus and the camera flags, exactly like predict."""
    stacks = [_write(tmp_path / f"s{i}", 30 + i, json_file=False) for i in range(2)]
    args = ["finetune", *map(str, stacks), "-o", str(tmp_path / "w.safetensors"), "--checkpoint", str(tiny_weights),
            "--run-dir", str(tmp_path / "runs"), *FAST]
    assert main(args) == 2  # no focus, no camera: refused
    err = capsys.readouterr().err
    assert err.count("cannot use") == 2 and "nothing was trained or written" in err
    assert not (tmp_path / "runs").exists() and not (tmp_path / "w.safetensors").exists()
    flags = ["--focus", ",".join(map(str, FOCUS)), "--focal-length-mm", "16", "--f-number", "2",
             "--pixel-size-um", "20"]
    assert main([*args, *flags]) == 0, capsys.readouterr().err
    assert (tmp_path / "w.safetensors").is_file()


def test_unusable_stacks_are_named_and_nothing_is_written(tmp_path: Path, tiny_weights: Path, capsys):
    good = _write(tmp_path / "good", 40)
    rgb, _ = make_scene(42, 64, 64, (0.4, 4.0))
    single = tmp_path / "single"
    write_stack(FocalStack(images=rgb[None], focus_distances_m=torch.tensor([1.0]), camera=CAMERA, name="single"),
                single)
    small = _write(tmp_path / "small", 41, size=24)
    before = {p: p.stat().st_mtime_ns for p in tmp_path.rglob("*")}
    rc = main(["finetune", str(good), str(single), str(small), "-o", str(tmp_path / "w.safetensors"),
               "--checkpoint", str(tiny_weights), "--run-dir", str(tmp_path / "runs"), *FAST])
    assert rc == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 3 and "Traceback" not in "".join(err)
    assert "single" in err[0] and "single image" in err[0]
    assert "small" in err[1] and "smaller than the training crop" in err[1]
    assert "2 of 3 stack(s) cannot be used" in err[2]
    assert {p: p.stat().st_mtime_ns for p in tmp_path.rglob("*")} == before  # nothing written, nothing changed


@pytest.mark.parametrize("args, message", [
    (["-o", "w.pt"], ".safetensors"),
    (["-o", "no_such_folder/w.safetensors"], "does not exist"),
    (["-o", "w.safetensors", "--forward", "no_such_psf"], "no_such_psf"),
    (["-o", "w.safetensors", "--holdout", "1.5"], "--holdout"),
    (["-o", "w.safetensors", "--set", "optim.epochs=0"], "optim.epochs"),
])
def test_bad_flags_one_line_before_any_work(tmp_path: Path, tiny_weights: Path, capsys, monkeypatch, args, message):
    monkeypatch.chdir(tmp_path)
    stack = _write(tmp_path / "s", 50)
    rc = main(["finetune", str(stack), "--checkpoint", str(tiny_weights), *args])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(err) == 1 and message in err[0]
    assert not (tmp_path / "runs").exists()


@pytest.mark.parametrize("left_behind", ["metrics.csv", "resynthesis.csv"])
def test_an_existing_run_is_refused(tmp_path: Path, tiny_weights: Path, capsys, left_behind):
    stack = _write(tmp_path / "s", 51)
    (tmp_path / "runs" / "finetune-w").mkdir(parents=True)
    (tmp_path / "runs" / "finetune-w" / left_behind).write_text("epoch\n")
    rc = main(["finetune", str(stack), "-o", str(tmp_path / "w.safetensors"), "--checkpoint", str(tiny_weights),
               "--run-dir", str(tmp_path / "runs"), *FAST])
    assert rc == 2 and "already has a run" in capsys.readouterr().err


def _prepared(name: str, width: int = 64) -> PreparedStack:
    return PreparedStack(name=name, frames=torch.zeros(3, 3, 40, width, dtype=torch.uint8),
                         focus_m=torch.tensor([0.5, 1.0, 2.0]), blur_per_dioptre=torch.full((3,), 10.0),
                         depth_range=(0.3, 5.0))


def test_split_holdout():
    one_train, one_held = split_holdout([_prepared("a", 100)], 0.2)
    assert one_train[0].frames.shape[-1] == 68 and one_held[0].frames.shape[-1] == 32  # at least 32 px held out
    assert "right 32 px" in one_held[0].name
    stacks = [_prepared(c) for c in "edcba"]
    train, held = split_holdout(stacks, 0.2)
    assert len(held) == 1 and len(train) == 4 and {s.name for s in train} | {held[0].name} == set("abcde")
    assert [s.name for s in split_holdout(list(reversed(stacks)), 0.2)[1]] == [held[0].name]  # by name, not order
    train, held = split_holdout(stacks[:2], 0.9)
    assert len(train) == 1 and len(held) == 1  # at least one left for training
    with pytest.raises(Exception, match="held-out fraction"):
        split_holdout(stacks, 0.0)


class _Fixed(torch.nn.Module):
    """A 'network' that returns a fixed AIF and inverse depth (for the re-rendering error)."""

    def __init__(self, aif: torch.Tensor, inv: torch.Tensor) -> None:
        super().__init__()
        self.aif, self.inv = aif, inv

    def forward(self, stack, focus, k, dr):
        h, w = stack.shape[-2:]
        aif, inv = self.aif[..., :h, :w], self.inv[..., :h, :w]
        return Prediction(depth=1.0 / inv, aif=aif, confidence=torch.ones_like(inv), inv_depth=inv)


def test_rerendering_error_prefers_the_true_scene():
    """The held-out check can tell a right answer from a wrong one: the true AIF and depth re-render the stack
    better than the same AIF at a constant depth."""
    from defocus.optics.forward import ForwardModel

    rgb, depth = make_scene(7, 48, 48, (0.4, 4.0))
    fd = torch.tensor(FOCUS)
    k = CAMERA.blur_per_dioptre(fd)
    physics = ForwardModel.from_family("disk")
    rendered = physics.rerender(rgb[None], 1.0 / depth[None], fd[None], k[None]).stack[0]
    st = PreparedStack(name="x", frames=(rendered.clamp(0, 1) * 255).round().to(torch.uint8), focus_m=fd,
                       blur_per_dioptre=k, depth_range=(0.3, 5.0), physics=physics.spec)
    right = rerendering_error(_Fixed(rgb[None], 1.0 / depth[None]), [st])
    wrong = rerendering_error(_Fixed(rgb[None], torch.full_like(depth[None], 1.0)), [st])
    assert right < 0.5 * wrong


def test_auto_calibration_is_pooled_over_a_few_stacks(monkeypatch):
    """One forward model for all the run's stacks: the (PSF, light) pair most stacks chose, the median of its
    effective apertures; only max_stacks stacks are calibrated."""
    import defocus.calibrate as calibrate
    from defocus.calibrate import Calibration
    from defocus.finetune import calibrate_stacks
    from defocus.optics.forward import ForwardModel

    answers = iter([("ring", "linear", 1.2, 0.10), ("disk", "linear", 1.0, 0.05), ("ring", "linear", 0.8, 0.12)])
    calls = []

    def fake(stack, focus, k, depth_range, init, **kwargs):
        psf, light, bs, score = next(answers)
        calls.append(stack.shape)
        return Calibration(physics=ForwardModel(psf=psf, light=light, blur_scale=bs),
                           scores=[{"psf": psf, "light": light, "blur_scale": bs, "reconstruction": score}])

    monkeypatch.setattr(calibrate, "calibrate_forward_model", fake)
    stacks = [_prepared(c) for c in "abcde"]
    torch.manual_seed(0)
    calibrate_stacks(create_model("daifnet_tiny"), stacks, "auto", progress=False, max_stacks=3)
    assert len(calls) == 3
    specs = {s.physics for s in stacks}
    assert len(specs) == 1
    (spec,) = specs
    assert (spec.psf, spec.light) == ("ring", "linear") and spec.blur_scale == pytest.approx(1.2)


def test_no_clear_gain_keeps_the_starting_weights(tmp_path: Path, tiny_weights: Path, capsys, monkeypatch):
    import defocus.finetune as ft

    monkeypatch.setattr(ft, "MIN_IMPROVEMENT", 0.99)  # no run can lower the error that much
    stacks = [_write(tmp_path / f"s{i}", 60 + i) for i in range(2)]
    out = tmp_path / "w.safetensors"
    rc = main(["finetune", *map(str, stacks), "-o", str(out), "--checkpoint", str(tiny_weights),
               "--run-dir", str(tmp_path / "runs"), *FAST])
    assert rc == 0 and "the starting weights were written" in capsys.readouterr().out
    assert read_metadata(out)["extra"]["finetune"]["kept_start"] is True
    assert read_metadata(out)["extra"]["finetune"]["trained_blur_per_dioptre"] is None
    tuned, start = create_model(checkpoint=out), create_model(checkpoint=tiny_weights)
    assert all(torch.equal(a, b) for a, b in zip(tuned.state_dict().values(), start.state_dict().values()))



# ------------------------------------------------------------------------------------------------ re-synthesis
def test_resynthesis_end_to_end_writes_weights_predict_takes(tmp_path: Path, capsys):
    """--resynthesis-steps: pseudo-scenes from the default path, depth supervision, the held-out pseudo-depth check;
    a run folder with the resolved config and one loss row per step; weights predict takes."""
    stacks = [_write(tmp_path / "stacks" / f"s{i}", 70 + i, size=96) for i in range(3)]
    out = tmp_path / "tuned.safetensors"
    rc = main(["finetune", *map(str, stacks), "-o", str(out), "--run-dir", str(tmp_path / "runs"),
               "--forward", "disk", "--resynthesis-steps", "3", "--quiet"])
    assert rc == 0, capsys.readouterr().err
    printed = capsys.readouterr().out
    assert "held-out pseudo-depth error (re-synthesised stacks): start" in printed
    record = read_metadata(out)["extra"]["finetune"]
    res = record["resynthesis"]
    assert res["steps"] == 3 and res["start_pseudo_error"] > 0 and res["pseudo_error"] > 0
    gained = (res["pseudo_error"] < (1 - MIN_IMPROVEMENT) * res["start_pseudo_error"]
              and record["epoch_rerender"][-1] <= record["start_rerender"])
    assert record["kept_start"] == (not gained)
    run = tmp_path / "runs" / "finetune-tuned"
    assert (run / "config.yaml").is_file() and "resynthesis" in (run / "config.yaml").read_text()
    assert len((run / "resynthesis.csv").read_text().strip().splitlines()) == 1 + 3
    assert create_model(checkpoint=out).confidence_calibration is not None  # the shipped calibration travels
    assert main(["predict", str(stacks[0]), "-o", str(tmp_path / "pred"), "--checkpoint", str(out)]) == 0


def test_resynthesis_supervision_moves_the_network_towards_the_pseudo_scene():
    """A few steps on re-synthesised crops lower the error against the pseudo-scene's depth (the supervision is
    wired to the right target), and pseudo_depth_error tells the target from a wrong one."""
    from defocus.finetune import pseudo_depth_error, resynthesise, train_on_resynthesis

    rgb, depth = make_scene(8, 48, 48, (0.4, 4.0))
    fd = torch.tensor(FOCUS)
    k = CAMERA.blur_per_dioptre(fd)
    st = PreparedStack(name="x", frames=torch.zeros(4, 3, 48, 48, dtype=torch.uint8), focus_m=fd,
                       blur_per_dioptre=k, depth_range=(0.3, 5.0))
    st.physics = None
    items = resynthesise(st, (rgb[None], 1.0 / depth[None]), copies=2, seed=1)
    assert len(items) == 2 and items[0]["x"].shape == (4, 3, 48, 48) and not torch.equal(items[0]["x"], items[1]["x"])
    assert pseudo_depth_error(_Fixed(rgb[None], 1.0 / depth[None]), items) < 1e-6
    assert pseudo_depth_error(_Fixed(rgb[None], torch.full_like(depth[None], 1.0)), items) > 0.1
    torch.manual_seed(0)
    model = create_model("daifnet_tiny")
    before = pseudo_depth_error(model, items)
    losses = train_on_resynthesis(model, items, 25, seed=0, progress=False)
    assert len(losses) == 25 and all(v == v for v in losses)
    assert pseudo_depth_error(model, items) < before


def test_epoch_flags_without_the_rerendering_loss_are_refused(tmp_path: Path, tiny_weights: Path, capsys):
    stack = _write(tmp_path / "s", 53)
    rc = main(["finetune", str(stack), "-o", str(tmp_path / "w.safetensors"), "--checkpoint", str(tiny_weights),
               "--run-dir", str(tmp_path / "runs"), "--epochs", "3"])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(err) == 1 and "--epochs" in err[0] and "--resynthesis-steps 0" in err[0]
    assert not (tmp_path / "runs").exists()


def test_negative_resynthesis_steps_are_refused_before_any_work(tmp_path: Path, tiny_weights: Path, capsys):
    stack = _write(tmp_path / "s", 52)
    rc = main(["finetune", str(stack), "-o", str(tmp_path / "w.safetensors"), "--checkpoint", str(tiny_weights),
               "--run-dir", str(tmp_path / "runs"), "--resynthesis-steps", "-1"])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(err) == 1 and "--resynthesis-steps" in err[0]
    assert not (tmp_path / "runs").exists()


def test_resynthesis_is_the_default_and_a_rising_rerendering_error_keeps_the_start(tmp_path: Path, capsys,
                                                                                    monkeypatch):
    """Without the flag, finetune trains by re-synthesis; where the held-out real stacks re-render worse after it,
    the starting weights are written (even with the pseudo-depth error down)."""
    import defocus.finetune as ft

    monkeypatch.setattr(ft, "RESYNTHESIS_STEPS", 2)
    real = ft.rerendering_error
    calls = []

    def worse_after_training(model, stacks):  # the first call is the starting weights'
        calls.append(1)
        return real(model, stacks) * (1.0 if len(calls) == 1 else 2.0)

    monkeypatch.setattr(ft, "rerendering_error", worse_after_training)
    monkeypatch.setattr(ft, "pseudo_depth_error", lambda model, items, _n=iter([1.0, 0.5]): next(_n))
    stacks = [_write(tmp_path / f"s{i}", 80 + i, size=96) for i in range(2)]
    out = tmp_path / "w.safetensors"
    rc = main(["finetune", *map(str, stacks), "-o", str(out), "--run-dir", str(tmp_path / "runs"),
               "--forward", "disk", "--quiet"])
    assert rc == 0, capsys.readouterr().err
    assert "the starting weights were written" in capsys.readouterr().out
    record = read_metadata(out)["extra"]["finetune"]
    assert record["resynthesis"]["steps"] == 2 and record["kept_start"] is True
    tuned, start = create_model(checkpoint=out), create_model(pretrained=True)
    assert all(torch.equal(a, b) for a, b in zip(tuned.state_dict().values(), start.state_dict().values()))
