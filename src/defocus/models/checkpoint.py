"""Checkpoints: model weights in safetensors with the resolved training config in the metadata.

``<name>.safetensors`` holds the weights (small, safe to load, what ships with the package); the optimiser,
scheduler and random-generator states needed for an exact ``--resume`` go beside it in ``<name>.state.pt``.
"""

from __future__ import annotations

import json
from pathlib import Path

from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from defocus.errors import DefocusError
from defocus.files import atomic_write
from defocus.models.daifnet import DAIFNet
from defocus.models.factory import DEFAULT_MODEL, create_model, shipped_weights_path


def save_checkpoint(path: str | Path, model: DAIFNet, model_name: str, config: dict, extra: dict | None = None) -> None:
    """Writes weights + metadata (model name, model config, training config, extra numbers) atomically."""
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
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as f:
        meta = f.metadata() or {}
    out = {"model_name": meta.get("model_name", "daifnet")}
    for key in ("model_config", "train_config", "extra"):
        out[key] = json.loads(meta[key]) if key in meta else {}
    return out


def load_checkpoint(path: str | Path) -> tuple[DAIFNet, dict]:
    """(model in eval mode, metadata). Bad or missing files are a DefocusError."""
    p = Path(path)
    if not p.is_file():
        raise DefocusError(f"checkpoint {p} does not exist")
    try:
        meta = read_metadata(p)
        state = load_file(str(p))
    except (SafetensorError, OSError, ValueError, json.JSONDecodeError) as exc:
        raise DefocusError(f"cannot read checkpoint {p}: {str(exc).splitlines()[0]}") from None
    mc = dict(meta["model_config"])
    model = create_model(meta["model_name"], **mc)
    try:
        model.load_state_dict(state)
    except RuntimeError as exc:
        raise DefocusError(f"checkpoint {p} does not match model {meta['model_name']}: {str(exc).splitlines()[0]}")
    model.eval()
    return model, meta


def load_default_model() -> tuple[DAIFNet, dict]:
    """The shipped model and its metadata (a DefocusError naming what to do when the weights are absent)."""
    p = shipped_weights_path(DEFAULT_MODEL)
    if not p.is_file():
        raise DefocusError(
            "no shipped weights found in the package; pass --checkpoint or train them with "
            "'defocus train --config release'"
        )
    return load_checkpoint(p)
