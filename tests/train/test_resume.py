"""Crash-exact resume: training killed with SIGKILL (mid-epoch, and half-way through writing a checkpoint) and
resumed ends with weights bit-identical to a run never interrupted; a corrupt newest checkpoint is reported in one
line and the previous good one is used."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from defocus.errors import DefocusError
from defocus.train.config import load_config
from defocus.train.resume import list_checkpoints, load_latest, read_resume_checkpoint, save_resume_checkpoint
from defocus.train.trainer import train

# 3 epochs of 4 steps; resume checkpoints every 2 steps (and at epoch ends), the newest 2 kept.
RUN = [
    "model.name=daifnet_tiny", "data.presets=[nyuv2]", "data.protocols=[paper]", "data.scenes_per_group=3",
    "data.size=[24, 24]", "data.sweep=5", "optim.epochs=3", "optim.steps_per_epoch=4", "optim.batch_size=2",
    "optim.warmup_steps=1", "val_scenes=0", "save_every_steps=2", "num_threads=1",
]


def _cli(tmp_path: Path, name: str, *extra: str, fault: str | None = None, resume: bool = False):
    env = dict(os.environ, OMP_NUM_THREADS="1")
    env.pop("DEFOCUS_FAULT", None)
    if fault:
        env["DEFOCUS_FAULT"] = fault
    cmd = [sys.executable, "-m", "defocus", "train", f"out_dir={tmp_path}", f"name={name}", *RUN, *extra, "--quiet"]
    if resume:
        cmd.append("--resume")
    return subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)


@pytest.fixture(scope="module")
def reference(tmp_path_factory) -> dict[str, torch.Tensor]:
    """The uninterrupted run (in this process, one thread like the subprocesses)."""
    out = tmp_path_factory.mktemp("reference")
    run = train(load_config(None, [f"out_dir={out}", "name=whole", *RUN]), progress=False)
    return {"weights": load_file(str(run / "last.safetensors")), "csv": (run / "metrics.csv").read_text()}


def _same(weights: dict, path: Path) -> None:
    got = load_file(str(path))
    assert got.keys() == weights.keys()
    for k in got:
        assert torch.equal(got[k], weights[k]), k


def _csv_without_seconds(text: str) -> list[list[str]]:
    rows = [line.split(",") for line in text.strip().splitlines()]
    col = rows[0].index("seconds")
    return [r[:col] + r[col + 1:] for r in rows]


def test_sigkill_mid_epoch_then_resume_is_bit_identical(tmp_path, reference):
    killed = _cli(tmp_path, "run", fault="kill@step=7")  # in epoch 2 of 3, after the step-6 checkpoint
    assert killed.returncode == -signal.SIGKILL, killed.stderr
    run = tmp_path / "run"
    assert [s for s, _ in list_checkpoints(run)] == [6, 4]
    done = _cli(tmp_path, "run", resume=True)
    assert done.returncode == 0, done.stderr
    _same(reference["weights"], run / "last.safetensors")
    # Same rows (epochs, steps, every loss term and learning rate) as the uninterrupted run: none lost or repeated.
    assert _csv_without_seconds((run / "metrics.csv").read_text()) == _csv_without_seconds(reference["csv"])


def test_sigkill_while_writing_a_checkpoint_falls_back_to_the_previous(tmp_path, reference):
    killed = _cli(tmp_path, "run", fault="kill@checkpoint=6")
    assert killed.returncode == -signal.SIGKILL, killed.stderr
    run = tmp_path / "run"
    leftovers = [p.name for p in (run / "resume").iterdir()]
    assert any(n.endswith(".tmp") for n in leftovers)  # the half-written file, never renamed into place
    assert [s for s, _ in list_checkpoints(run)] == [4, 2]
    done = _cli(tmp_path, "run", resume=True)
    assert done.returncode == 0, done.stderr
    _same(reference["weights"], run / "last.safetensors")
    assert not any(p.name.endswith(".tmp") for p in (run / "resume").iterdir())


@pytest.mark.parametrize("damage", ["truncate", "flip"])
def test_corrupt_newest_checkpoint_is_reported_and_skipped(tmp_path, reference, damage):
    killed = _cli(tmp_path, "run", fault="kill@step=7")
    assert killed.returncode == -signal.SIGKILL
    run = tmp_path / "run"
    newest = list_checkpoints(run)[0][1]
    data = bytearray(newest.read_bytes())
    if damage == "truncate":
        newest.write_bytes(bytes(data[: len(data) // 3]))
    else:
        data[len(data) // 2] ^= 0xFF
        newest.write_bytes(bytes(data))
    with pytest.raises(DefocusError, match="truncated or corrupt"):
        read_resume_checkpoint(newest)
    done = _cli(tmp_path, "run", resume=True)
    assert done.returncode == 0, done.stderr
    warnings = [line for line in (done.stdout + done.stderr).splitlines() if "trying the previous" in line]
    assert len(warnings) == 1 and newest.name in warnings[0]
    _same(reference["weights"], run / "last.safetensors")


def test_no_good_checkpoint_is_one_error_line(tmp_path):
    run = tmp_path / "run"
    (run / "resume").mkdir(parents=True)
    (run / "resume" / "step-00000002.ckpt").write_bytes(b"not a checkpoint")
    (run / "metrics.csv").write_text("epoch\n")
    done = _cli(tmp_path, "run", resume=True)
    assert done.returncode == 2
    lines = [line for line in done.stderr.splitlines() if line.startswith("defocus train: error")]
    assert len(lines) == 1 and "all 1 checkpoints are bad" in lines[0], done.stderr
    assert "Traceback" not in done.stderr


def test_checkpoint_round_trip_and_rotation(tmp_path):
    for step in (1, 2, 3):
        save_resume_checkpoint(tmp_path, step, {"step": step, "w": torch.arange(4.0) * step}, keep=2)
    assert [s for s, _ in list_checkpoints(tmp_path)] == [3, 2]
    payload, path = load_latest(tmp_path, warn=lambda m: None)
    assert payload["step"] == 3 and torch.equal(payload["w"], torch.arange(4.0) * 3)
    with pytest.raises(DefocusError, match="nothing to resume"):
        load_latest(tmp_path / "elsewhere")
    wrong = tmp_path / "resume" / "step-00000009.ckpt"
    shutil.copy(path, wrong)
    wrong.write_bytes(b"XX" + wrong.read_bytes()[2:])
    seen = []
    payload, _ = load_latest(tmp_path, warn=seen.append)
    assert payload["step"] == 3 and len(seen) == 1 and "not a defocus resume checkpoint" in seen[0]


def test_bad_fault_spec_is_an_error(monkeypatch):
    from defocus.train import faults

    monkeypatch.setenv("DEFOCUS_FAULT", "explode@now")
    with pytest.raises(DefocusError, match="DEFOCUS_FAULT"):
        faults.check("step", 1)
    monkeypatch.setenv("DEFOCUS_FAULT", "raise@step=3,rank=1")
    faults.check("step", 3, rank=0)  # another rank: nothing happens
    faults.check("step", 2, rank=1)
    with pytest.raises(DefocusError, match="injected"):
        faults.check("step", 3, rank=1)
