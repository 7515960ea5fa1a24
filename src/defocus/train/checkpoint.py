"""Checkpoints: model weights in safetensors with the resolved training config in the metadata.

``<name>.safetensors`` holds the weights (small, safe to load, what ships with the package); the optimiser,
scheduler and random-generator states needed for an exact ``--resume`` go beside it in ``<name>.state.pt``.
"""

from __future__ import annotations

import json
from importlib import resources
from pathlib import Path

from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from defocus.errors import DefocusError
from defocus.models.daifnet import DAIFNet, create_model

SHIPPED_WEIGHTS = "daifnet_release.safetensors"


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
    tmp = path.with_name(path.name + ".tmp")
    save_file(tensors, str(tmp), metadata=meta)
    tmp.replace(path)


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


def shipped_weights_path() -> Path:
    """Path of the weights shipped inside the package (may not exist in a development tree without them)."""
    return Path(str(resources.files("defocus") / "weights" / SHIPPED_WEIGHTS))


def load_default_model() -> tuple[DAIFNet, dict]:
    p = shipped_weights_path()
    if not p.is_file():
        raise DefocusError(
            "no shipped weights found in the package; pass --checkpoint or train them with "
            "'defocus train --config configs/release.yaml'"
        )
    return load_checkpoint(p)
