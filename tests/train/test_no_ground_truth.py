"""Proof that the training path never reads ground truth.

* A user stack folder holds ``gt_depth.tiff`` and ``gt_aif.png`` replaced by garbage, so any read of them would fail;
  training on it succeeds, and an audit hook on file opens records that neither file is ever opened, while the same
  hook does see them when evaluation code reads the folder (so the check is not vacuous).
* ``read_depth`` and ground-truth image loads are patched to raise while training groups are built and batches drawn.
* Procedural sweep groups and batches carry only images, focus and camera numbers: no depth, no AIF.
* Public dataset adapters (``data.datasets``): DDFF-12's disparity and AiF HDF5 datasets are never indexed and FoD500's
  ``*Dpt.exr`` (garbage here) never opened while training groups are built and batches drawn, while the evaluation
  path does read both; NYU v2 pairs are rendered into sweeps whose groups hold no depth.
"""

from __future__ import annotations

import dataclasses
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

import defocus.data.folders as folders
import defocus.data.sweeps as sweeps
from defocus.data.procedural import make_scene
from defocus.data.folders import read_stack, write_stack
from defocus.data.stack import FocalStack
from defocus.data.synthesis import synthesize_stack
from defocus.data.sweeps import (
    DataConfig,
    FocalSweepSampler,
    SweepGroup,
    build_training_groups,
    render_sweep_group,
)
from defocus.errors import DefocusError
from defocus.optics.camera import get_preset
from defocus.train.config import load_config
from defocus.train.trainer import train

BATCH_KEYS = {"stack", "focus", "blur_per_dioptre", "depth_range", "protocol", "physics"}
GT_NAMES = ("gt_depth.tiff", "gt_aif.png")

# ---- audit hook: records every file opened while _WATCH is a list (hooks cannot be removed, so it stays cheap)
_WATCH: list[str] | None = None


def _audit(event: str, args: tuple) -> None:
    if _WATCH is not None and event == "open" and args and isinstance(args[0], (str, bytes, Path)):
        _WATCH.append(str(args[0]))


sys.addaudithook(_audit)


class _Watch:
    def __enter__(self) -> list[str]:
        global _WATCH
        _WATCH = []
        return _WATCH

    def __exit__(self, *exc) -> None:
        global _WATCH
        _WATCH = None


def _opened_gt(opened: list[str]) -> list[str]:
    return [p for p in opened if Path(p).name in GT_NAMES]


@pytest.fixture
def poisoned_stack(tmp_path: Path) -> Path:
    """A real-looking stack folder whose ground-truth files are garbage."""
    preset = get_preset("nyuv2")
    aif, depth = make_scene(4242, 40, 44, (0.7, 8.0))
    fd = torch.tensor(preset.focus_distances_m, dtype=torch.float32)
    images = synthesize_stack(aif, depth, fd, preset.camera, "realistic", seed=1)
    folder = tmp_path / "user_stack"
    write_stack(FocalStack(images, fd, preset.camera, gt_depth=depth[0].numpy(), gt_aif=aif), folder)
    for name in GT_NAMES:
        assert (folder / name).is_file()
        (folder / name).write_bytes(b"\x00garbage, not an image\xff" * 7)
    with pytest.raises(DefocusError):
        read_stack(folder)  # reading the ground truth really would fail
    return folder


def test_training_on_a_user_stack_never_opens_ground_truth(poisoned_stack, tmp_path, monkeypatch):
    def no_depth(*args, **kwargs):
        raise AssertionError("training read a depth map")

    real_load_image = folders.load_image

    def load_image_no_gt(path, *args, **kwargs):
        if Path(path).name.startswith("gt_"):
            raise AssertionError(f"training loaded ground-truth image {path}")
        return real_load_image(path, *args, **kwargs)

    for module in (folders, sweeps):
        monkeypatch.setattr(module, "read_depth", no_depth)
        monkeypatch.setattr(module, "load_image", load_image_no_gt)
    before = {p.name: p.read_bytes() for p in poisoned_stack.iterdir()}
    cfg = load_config(
        None,
        [
            f"out_dir={tmp_path / 'runs'}", "name=user",
            "model.name=daifnet_tiny",
            "data.scenes_per_group=0",
            f"data.stack_dirs=[{poisoned_stack}]",
            "data.size=[24, 24]",
            "optim.epochs=1", "optim.steps_per_epoch=2", "optim.batch_size=2", "optim.warmup_steps=1",
            "val_scenes=0",
        ],
    )
    with _Watch() as opened:
        run = train(cfg, progress=False)
    assert (run / "last.safetensors").is_file()
    assert any(Path(p).name == "focus_0.png" for p in opened)  # the hook does see the stack being read
    assert _opened_gt(opened) == []
    # The input folder is untouched.
    assert {p.name: p.read_bytes() for p in poisoned_stack.iterdir()} == before


def test_audit_hook_sees_ground_truth_reads(tmp_path):
    """Non-vacuity: reading a folder for evaluation does open the ground-truth files, and the hook records it."""
    preset = get_preset("nyuv2")
    aif, depth = make_scene(7, 16, 16, (0.7, 8.0))
    fd = torch.tensor(preset.focus_distances_m, dtype=torch.float32)
    folder = tmp_path / "s"
    write_stack(FocalStack(synthesize_stack(aif, depth, fd, preset.camera), fd, preset.camera,
                           gt_depth=depth[0].numpy(), gt_aif=aif), folder)
    with _Watch() as opened:
        read_stack(folder)
    assert sorted(Path(p).name for p in _opened_gt(opened)) == sorted(GT_NAMES)
    with _Watch() as opened:
        read_stack(folder, load_ground_truth=False)
    assert _opened_gt(opened) == []


def test_building_groups_and_sampling_never_call_read_depth(poisoned_stack, monkeypatch):
    calls = []

    def spy(*args, **kwargs):
        calls.append(args)
        raise AssertionError("read_depth called on the training path")

    for module in (folders, sweeps):
        monkeypatch.setattr(module, "read_depth", spy)
    cfg = DataConfig(presets=["nyuv2"], protocols=["paper"], scenes_per_group=1, size=[24, 24], sweep=5,
                     stack_dirs=[str(poisoned_stack)])
    with _Watch() as opened:
        groups = build_training_groups(cfg, progress=False)
        sampler = FocalSweepSampler(groups, cfg, seed=0)
        batches = [sampler.sample(2) for _ in range(8)]
    assert calls == []
    assert _opened_gt(opened) == []
    assert len(groups) == 2
    for b in batches:
        assert set(b) == BATCH_KEYS


def test_sweep_groups_and_batches_hold_no_ground_truth():
    fields = {f.name for f in dataclasses.fields(SweepGroup)}
    assert fields == {"stacks", "focus", "blur_per_dioptre", "depth_range", "protocol", "physics", "scene_ids"}
    group = render_sweep_group("nyuv2", "paper", [3, 4], (20, 24), 6, (1.0, 1.0), progress=False)
    assert group.stacks.dtype == torch.uint8  # observed 8-bit images only
    assert group.stacks.shape == (2, 6, 3, 36, 40)  # rendered a little larger than the crops
    assert group.focus.shape == (2, 6) and group.blur_per_dioptre.shape == (2, 6)
    assert not any(isinstance(v, torch.Tensor) and v.dim() >= 3 and v.shape[-3] == 1
                   for v in vars(group).values())  # nothing depth-shaped
    assert set(vars(group)) == fields
    sampler = FocalSweepSampler([group], DataConfig(size=[20, 24]), seed=0)
    for _ in range(5):
        batch = sampler.sample(2)
        assert set(batch) == BATCH_KEYS
        assert batch["stack"].dim() == 5 and batch["stack"].shape[2] == 3


def test_test_seeds_are_never_rendered_for_training():
    with pytest.raises(DefocusError, match="reserved"):
        render_sweep_group("nyuv2", "paper", [1_000_000], (8, 8), 3, (1.0, 1.0), progress=False)


# ---- public dataset adapters (defocus.data.datasets): the training path reads no ground truth from them either
def _dataset_fixtures(tmp_path: Path) -> dict:
    h5py = pytest.importorskip("h5py")
    import importlib.util

    # The fixture writers (each dataset's own file format) live with the adapter tests; load that file by path.
    spec = importlib.util.spec_from_file_location(
        "_dataset_fixture_writers", Path(__file__).resolve().parents[1] / "data" / "test_datasets.py")
    writers = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(writers)
    write_ddff_h5, write_fod500, write_nyu_mat = writers.write_ddff_h5, writers.write_fod500, writers.write_nyu_mat

    rng = np.random.default_rng(0)
    ddff = tmp_path / "ddff.h5"
    stacks = rng.integers(0, 256, size=(2, 10, 24, 28, 3), dtype=np.uint8)
    write_ddff_h5(ddff, {"train": stacks}, {"train": rng.uniform(0.03, 0.27, size=(2, 24, 28))},
                  {"train": stacks[:, 0]})
    fod = tmp_path / "fod"
    write_fod500(fod, ids=(2, 3))
    for p in fod.glob("*Dpt.exr"):
        p.write_bytes(b"\x00garbage, not an EXR\xff" * 5)  # any read of the depth would fail
    nyu = tmp_path / "nyu.mat"
    write_nyu_mat(nyu, rng.integers(0, 256, size=(1, 16, 24, 3), dtype=np.uint8),
                  rng.uniform(1.0, 5.0, size=(1, 16, 24)))
    return {"h5py": h5py, "ddff": ddff, "fod": fod, "nyu": nyu}


def test_dataset_adapters_never_read_ground_truth_for_training(tmp_path, monkeypatch):
    fx = _dataset_fixtures(tmp_path)
    h5py = fx["h5py"]
    read_keys: list[str] = []
    real_getitem = h5py.Dataset.__getitem__

    def spy(self, key):
        read_keys.append(self.name)
        return real_getitem(self, key)

    monkeypatch.setattr(h5py.Dataset, "__getitem__", spy)
    specs = [f"ddff12:{fx['ddff']}#train", f"fod500:{fx['fod']}"]
    cfg = DataConfig(presets=["nyuv2"], protocols=["paper"], scenes_per_group=0, size=[16, 16], sweep=5,
                     datasets=specs)
    with _Watch() as opened:
        groups = build_training_groups(cfg, progress=False)
        sampler = FocalSweepSampler(groups, cfg, seed=0)
        batches = [sampler.sample(2) for _ in range(6)]
    assert "/stack_train" in read_keys and not any("disp" in k or "AiF" in k for k in read_keys)
    assert not any(p.endswith("Dpt.exr") for p in opened)
    assert any(p.endswith("All.tif") for p in opened)  # the hook does see the stacks being read
    assert [tuple(g.stacks.shape[:2]) for g in groups] == [(2, 10), (2, 5)]  # one group per dataset
    for g in groups:
        assert set(vars(g)) == {f.name for f in dataclasses.fields(SweepGroup)} and g.stacks.dtype == torch.uint8
    for b in batches:
        assert set(b) == BATCH_KEYS
    # Non-vacuity: the evaluation path does read the disparity and the EXR (which fails on the garbage).
    from defocus.data.datasets import open_dataset

    read_keys.clear()
    open_dataset(specs[0]).stack(0)
    assert "/disp_train" in read_keys and "/AiF_train" in read_keys
    with _Watch() as opened, pytest.raises(DefocusError, match="not an OpenEXR"):
        open_dataset(specs[1]).stack(0)
    assert any(p.endswith("Dpt.exr") for p in opened)


def test_rgbd_dataset_is_rendered_and_its_depth_dropped(tmp_path):
    fx = _dataset_fixtures(tmp_path)
    cfg = DataConfig(presets=["nyuv2"], protocols=["paper", "realistic"], scenes_per_group=0, size=[16, 16], sweep=4,
                     datasets=[f"nyuv2:{fx['nyu']}"])
    groups = build_training_groups(cfg, progress=False)
    assert [g.protocol for g in groups] == ["paper", "realistic"]
    for g in groups:
        assert tuple(g.stacks.shape) == (1, 4, 3, 240, 320) and g.stacks.dtype == torch.uint8  # the preset's size
        assert set(vars(g)) == {f.name for f in dataclasses.fields(SweepGroup)}  # images, focus, camera numbers only
        assert g.depth_range == get_preset("nyuv2").depth_range_m
