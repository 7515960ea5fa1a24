"""Tests of the `init` config key: a run that starts from the shipped weights or a checkpoint (the second,
robust stage of the shipped weights starts from the first)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from defocus.errors import InputError
from defocus.models.checkpoint import save_checkpoint
from defocus.models.factory import create_model
from defocus.train.config import load_config
from defocus.train.trainer import initial_weights


def test_init_from_the_shipped_weights_loads_them():
    cfg = load_config("release", ["init=shipped"])
    model = create_model(cfg.model.name, **cfg.model.config)
    shipped = create_model(pretrained=True)
    initial_weights(cfg, model)
    for key, value in shipped.state_dict().items():
        assert torch.equal(model.state_dict()[key], value), key


def test_init_from_a_checkpoint_and_mismatches(tmp_path: Path):
    tiny = create_model("daifnet_tiny")
    torch.manual_seed(1)
    for p in tiny.parameters():
        p.data.normal_()
    path = tmp_path / "tiny.safetensors"
    save_checkpoint(path, tiny, "daifnet_tiny", {})
    cfg = load_config("tiny", [f"init={path}"])
    model = create_model(cfg.model.name, **cfg.model.config)
    initial_weights(cfg, model)
    assert all(torch.equal(model.state_dict()[k], v) for k, v in tiny.state_dict().items())
    # Another model than the run's: one clear error naming both.
    cfg = load_config("release", [f"init={path}"])
    with pytest.raises(InputError, match="daifnet_tiny.*daifnet_small"):
        initial_weights(cfg, create_model(cfg.model.name, **cfg.model.config))
    # The same model with another config than the checkpoint's.
    cfg = load_config("tiny", [f"init={path}", "model.config.cue_fill_threshold=0.9"])
    with pytest.raises(InputError, match="another model config.*cue_fill_threshold"):
        initial_weights(cfg, create_model(cfg.model.name, **cfg.model.config))


@pytest.mark.parametrize("value", ["no_such.safetensors", "README.md"])
def test_init_must_name_a_checkpoint(value):
    with pytest.raises(InputError, match="init"):
        load_config("tiny", [f"init={value}"])


def test_robust_stage_names_its_starting_point():
    """release_robust starts from stage 1's output; without it, loading says so instead of training from scratch."""
    if Path("runs/release/last.safetensors").is_file():
        pytest.skip("a stage-1 run is present in this working folder")
    with pytest.raises(InputError, match="init"):
        load_config("release_robust")
    cfg = load_config("release_robust", ["init=shipped"])
    assert cfg.init == "shipped" and cfg.model.name == "daifnet_small"
