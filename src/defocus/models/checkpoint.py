"""Checkpoint files: model weights in safetensors with the resolved training config in the metadata (pure I/O).

``<name>.safetensors`` holds the weights (small, safe to load, what ships with the package) and, as string metadata,
the model's registered name, its config, the resolved training config and a few numbers. Building a model from a
file is the factory's job (:func:`defocus.models.factory.create_model` with ``checkpoint=PATH``); this module only
reads and writes.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch import nn

from defocus.errors import InputError
from defocus.files import atomic_write


def save_checkpoint(path: str | Path, model: nn.Module, model_name: str, config: dict, extra: dict | None = None) -> None:
    """Writes ``model``'s weights + metadata (model name, ``model.config``, training config, extra numbers)
    atomically."""
    path = Path(path)
    meta = {
        "model_name": model_name,
        "model_config": json.dumps(model.config.to_dict()),
        "train_config": json.dumps(config),
        "extra": json.dumps(extra or {}),
    }
    tensors = {k: v.detach().contiguous().cpu() for k, v in model.state_dict().items()}
    atomic_write(path, lambda tmp: save_file(tensors, str(tmp), metadata=meta), "checkpoint")


def read_metadata(path: str | Path) -> dict:
    """The metadata of a checkpoint: ``model_name`` and the decoded ``model_config``, ``train_config``, ``extra``."""
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as f:
        meta = f.metadata() or {}
    out = {"model_name": meta.get("model_name", "daifnet")}
    for key in ("model_config", "train_config", "extra"):
        out[key] = json.loads(meta[key]) if key in meta else {}
    return out


def read_checkpoint(path: str | Path) -> tuple[dict[str, torch.Tensor], dict]:
    """(state dict, metadata) of a checkpoint file; a missing, truncated or foreign file is an InputError."""
    p = Path(path)
    if not p.is_file():
        raise InputError(f"checkpoint {p} does not exist", field="checkpoint")
    try:
        meta = read_metadata(p)
        state = load_file(str(p))
    except (SafetensorError, OSError, ValueError, json.JSONDecodeError) as exc:
        raise InputError(f"cannot read checkpoint {p}: {str(exc).splitlines()[0]}", field="checkpoint") from None
    return state, meta


#: The packaged confidence calibrations (:mod:`defocus.confidence`), by model: ``classical`` and the names of the
#: models with shipped weights (fitted for those weights by ``benchmarks/fit_confidence.py``).
CALIBRATION_FILE = Path(__file__).resolve().parent / "weights" / "confidence.json"


def packaged_calibration(key: str):
    """The packaged :class:`~defocus.confidence.ConfidenceCalibration` of ``key`` (a model name), or None."""
    from defocus.confidence import ConfidenceCalibration

    if not CALIBRATION_FILE.is_file():
        return None
    entry = json.loads(CALIBRATION_FILE.read_text(encoding="utf-8")).get(key)
    return None if entry is None else ConfidenceCalibration.from_dict(entry)
