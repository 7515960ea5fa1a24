"""The GPU path (skipped without CUDA; run on a GPU machine with `pytest tests/train/test_cuda.py`)."""

from __future__ import annotations

import csv

import pytest
import torch

from defocus.data.procedural import make_scene
from defocus.data.synthesis import synthesize_stack
from defocus.models.factory import create_model
from defocus.optics.camera import get_preset
from defocus.train.config import load_config
from defocus.train.trainer import train

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")


def _losses(run) -> list[float]:
    with (run / "metrics.csv").open() as f:
        return [float(r["loss"]) for r in csv.DictReader(f)]


def test_training_on_cuda_follows_the_cpu_run(tmp_path):
    common = [f"out_dir={tmp_path}", "val_scenes=1"]
    cpu = train(load_config("tiny", [*common, "name=cpu", "device=cpu"]), progress=False)
    gpu = train(load_config("tiny", [*common, "name=gpu", "device=cuda"]), progress=False)
    # Same samples and model; GPU convolutions round differently (TF32 in cuDNN), so the losses agree closely, not
    # bit for bit.
    assert _losses(gpu) == pytest.approx(_losses(cpu), rel=2e-2)


def test_prediction_on_cuda_matches_the_cpu():
    model = create_model(pretrained=True)
    preset = get_preset("nyuv2")
    aif, depth = make_scene(1_234_567, 96, 128, (0.5, 8.0))
    fd = torch.tensor(preset.focus_distances_m, dtype=torch.float32)
    stack = synthesize_stack(aif, depth, fd, preset.camera, "paper", seed=0)
    k = preset.camera.blur_per_dioptre(fd)[None]
    dr = torch.tensor(preset.depth_range_m, dtype=torch.float32)[None]
    with torch.inference_mode():
        a = model(stack[None], fd[None], k, dr).depth_map
        model.cuda()
        b = model(stack[None].cuda(), fd[None].cuda(), k.cuda(), dr.cuda()).depth_map.cpu()
    rel = ((a - b).abs() / a).flatten()
    assert float(rel.median()) < 1e-3 and float(rel.quantile(0.99)) < 2e-2
