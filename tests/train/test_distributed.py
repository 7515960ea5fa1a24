"""Distributed training: torchrun with gloo on this machine, data shards, failure of one rank."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from defocus.data.sweeps import DataConfig, DataShards, FocalSweepSampler, build_training_groups
from defocus.errors import DefocusError
from defocus.train.config import load_config
from defocus.train.distributed import DistContext, init_distributed
from defocus.train.trainer import data_shards, train

pytestmark = pytest.mark.skipif(not torch.distributed.is_available(), reason="torch built without distributed")

RUN = ["--config", "tiny", "optim.batch_size=4", "data.scenes_per_group=6", "num_threads=1", "--quiet"]


def _torchrun(tmp_path: Path, name: str, *extra: str, nproc: int = 2, fault: str | None = None):
    env = dict(os.environ, OMP_NUM_THREADS="1")
    env.pop("DEFOCUS_FAULT", None)
    if fault:
        env["DEFOCUS_FAULT"] = fault
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}",
           "-m", "defocus", "train", *RUN, f"out_dir={tmp_path}", f"name={name}", *extra]
    return subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)


def _ours(stderr: str) -> str:
    """The ranks' own lines, without the launcher's traceback (for assertion messages)."""
    return "\n".join(line for line in stderr.splitlines()
                     if not line.startswith((" ", "Traceback", "torch.distributed", "=", "-")))[-3000:]


def _max_diff(a: Path, b: Path) -> float:
    wa, wb = load_file(str(a)), load_file(str(b))
    assert wa.keys() == wb.keys()
    return max(float((wa[k] - wb[k]).abs().max()) for k in wa)


def test_two_gloo_processes_give_the_weights_of_one_process_with_the_same_global_batch(tmp_path):
    two = _torchrun(tmp_path, "two")
    assert two.returncode == 0, _ours(two.stderr)
    assert "run written to" in two.stdout and two.stdout.count("run written to") == 1  # rank 0 alone reports
    # One process drawing both data shards (the streams the two ranks drew), same global batch of 4.
    one = train(load_config("tiny", [f"out_dir={tmp_path}", "name=one", "data.shards=2", *RUN[2:-1]]),
                progress=False)
    # Tolerance: the same samples and the same arithmetic. Each rank backpropagates its shard's mean loss and DDP
    # averages (g0 + g1) / 2; one process accumulates g0 / 2 + g1 / 2: halving is exact in floating point and a sum
    # of two terms does not depend on their order, so the weights agree to the last bit (measured: 0.0). The bound
    # allows for an all-reduce that sums in another order on other builds; one Adam step moves weights by ~lr = 5e-4.
    assert _max_diff(tmp_path / "two" / "last.safetensors", one / "last.safetensors") <= 1e-6
    # The check can fail: one process with one shard (other samples, same global batch) ends elsewhere.
    other = train(load_config("tiny", [f"out_dir={tmp_path}", "name=other", *RUN[2:-1]]), progress=False)
    assert _max_diff(tmp_path / "two" / "last.safetensors", other / "last.safetensors") > 1e-4
    rows = (tmp_path / "two" / "metrics.csv").read_text().splitlines()
    assert len(rows) == 3 and rows[1].split(",")[2] == (one / "metrics.csv").read_text().splitlines()[1].split(",")[2]


@pytest.mark.parametrize("fault", ["kill@step=2,rank=1", "raise@step=2,rank=1"])
def test_a_failing_rank_ends_every_rank_with_a_clear_error(tmp_path, fault):
    done = _torchrun(tmp_path, "crash", fault=fault)  # timeout=300 s: a hang fails the test
    assert done.returncode != 0
    ours = [line for line in done.stderr.splitlines() if line.startswith("defocus train: error: rank")]
    assert ours, done.stderr[-3000:]
    if fault.startswith("raise"):
        assert any("rank 1 of 2: injected fault" in line for line in ours)
    assert not (tmp_path / "crash" / "last.safetensors").exists()


def test_a_resume_on_another_number_of_processes_continues_the_same_run(tmp_path):
    # Killed after step 4 of 6 (the epoch-1 checkpoint is at step 3), resumed on one process: same data shards.
    killed = _torchrun(tmp_path, "run", "data.shards=2", fault="kill@step=4,rank=0")
    assert killed.returncode != 0
    one = train(load_config("tiny", [f"out_dir={tmp_path}", "name=run", "data.shards=2", *RUN[2:-1]]),
                resume=True, progress=False)
    whole = train(load_config("tiny", [f"out_dir={tmp_path}", "name=whole", "data.shards=2", *RUN[2:-1]]),
                  progress=False)
    assert _max_diff(one / "last.safetensors", whole / "last.safetensors") == 0.0


# ---------------------------------------------------------------------------------------- shards (in process)
def _groups(shards: DataShards | None):
    cfg = DataConfig(presets=["nyuv2"], protocols=["paper"], scenes_per_group=5, size=[16, 16], sweep=4)
    return build_training_groups(cfg, progress=False, shards=shards)


def test_data_shards_are_disjoint_and_together_are_the_whole_data():
    whole = _groups(None)[0]
    parts = [_groups(DataShards(2, (r,)))[0] for r in (0, 1)]
    ids = [p.ids().tolist() for p in parts]
    assert ids == [[0, 2, 4], [1, 3]]
    for p in parts:  # each scene rendered by its owner is the very scene of the single-process data
        assert torch.equal(p.stacks, whole.stacks[p.ids()])


def test_streams_do_not_depend_on_which_process_draws_them():
    cfg = DataConfig(presets=["nyuv2"], protocols=["paper"], scenes_per_group=5, size=[16, 16], sweep=4)
    both = FocalSweepSampler(_groups(DataShards(2, (0, 1))), cfg, seed=3, shards=DataShards(2, (0, 1)))
    rank1 = FocalSweepSampler(_groups(DataShards(2, (1,))), cfg, seed=3, shards=DataShards(2, (1,)))
    for _ in range(3):
        a = both.sample_streams(2)[1]
        b = rank1.sample_streams(2)[0]
        assert torch.equal(a["stack"], b["stack"]) and torch.equal(a["focus"], b["focus"])


def test_shard_and_batch_errors():
    cfg = load_config("tiny", ["optim.batch_size=3", "data.shards=2"])
    with pytest.raises(DefocusError, match="not a multiple of the 2 data shards"):
        data_shards(cfg, DistContext())
    cfg = load_config("tiny", ["data.shards=3"])
    with pytest.raises(DefocusError, match="not a multiple of the 2 processes"):
        data_shards(cfg, DistContext(rank=0, world_size=2, backend="gloo"))
    assert data_shards(load_config("tiny", ["optim.batch_size=4"]), DistContext(1, 2, backend="gloo")) == \
        DataShards(2, (1,))
    with pytest.raises(DefocusError, match="holds no training scene"):
        groups = _groups(DataShards(8, (7,)))
        FocalSweepSampler(groups, DataConfig(size=[16, 16]), shards=DataShards(8, (7,)))


def test_init_errors(monkeypatch):
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("RANK", "1")
    monkeypatch.delenv("MASTER_ADDR", raising=False)
    with pytest.raises(DefocusError, match="MASTER_ADDR is not set"):
        init_distributed("cpu")
    with pytest.raises(DefocusError, match="unknown distributed backend"):
        init_distributed("cpu", backend="mpi2")
    monkeypatch.setenv("WORLD_SIZE", "1")
    assert init_distributed("cpu") == DistContext()
    if not torch.cuda.is_available():
        with pytest.raises(DefocusError, match="CUDA is not available"):
            init_distributed("cuda")
