"""One factory for every estimator: ``create_model(name, pretrained=...)``.

Registered names:

* ``daifnet`` — DAIF-Net with the paper's widths (about 2 M parameters);
* ``daifnet_small`` — the CPU-friendly variant whose weights ship with the package (``pretrained=True``);
* ``daifnet_tiny`` — a few thousand parameters, for tests;
* ``classical`` — the classical depth-from-focus baseline (no weights), with the same call and result type.

A new network goes here: add its builder to :data:`MODEL_REGISTRY` (and its weights file to
:data:`PRETRAINED_WEIGHTS` if it ships any, in ``models/weights/``).
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path
from typing import Any, Callable

from torch import nn

from defocus.errors import DefocusError
from defocus.models.classical import ClassicalEstimator
from defocus.models.daifnet import DAIFNet, DAIFNetConfig

#: The model the commands use when no checkpoint is given.
DEFAULT_MODEL = "daifnet_small"

#: DAIF-Net variants: name -> config.
DAIFNET_VARIANTS: dict[str, DAIFNetConfig] = {
    # The paper's widths (about 2 M parameters).
    "daifnet": DAIFNetConfig(widths=(16, 32, 64, 128), bottleneck=256, head_width=16),
    # CPU-friendly default for training on two cores.
    "daifnet_small": DAIFNetConfig(widths=(16, 24, 32, 64), bottleneck=96, head_width=16),
    # For tests: a few thousand parameters.
    "daifnet_tiny": DAIFNetConfig(widths=(4, 8), bottleneck=8, head_width=4),
}


#: Largest channel width a DAIF-Net config may ask for (the paper's largest is 256).
MAX_WIDTH = 4096


def check_daifnet_overrides(overrides: dict[str, Any]) -> None:
    """DefocusError (one line, naming the field) for a value of the wrong type or range (an unknown field is left
    to DAIFNetConfig's TypeError; the training config names it, see TrainConfig.validate)."""
    import math

    for key, value in overrides.items():

        def bad(expected: str) -> DefocusError:
            return DefocusError(f"DAIF-Net config field {key} must be {expected}, got {value!r}")

        is_int = lambda v: isinstance(v, int) and not isinstance(v, bool)  # noqa: E731
        is_num = lambda v: isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)  # noqa: E731
        if key == "widths":
            if not isinstance(value, (list, tuple)) or not value or not all(is_int(v) and 1 <= v <= MAX_WIDTH
                                                                             for v in value):
                raise bad(f"a non-empty list of whole numbers 1-{MAX_WIDTH}")
        elif key in ("bottleneck", "head_width"):
            if not (is_int(value) and 1 <= value <= MAX_WIDTH):
                raise bad(f"a whole number 1-{MAX_WIDTH}")
        elif key == "classical_prior":
            if not isinstance(value, bool):
                raise bad("true or false")
        elif key == "prior_presmooth":
            if value != "auto" and not (is_num(value) and 0 <= value <= 100):
                raise bad("auto or a number of pixels 0-100")
        elif key == "cue_fill_threshold":
            if not (is_num(value) and 0 <= value <= 1):
                raise bad("a number in [0, 1]")
        elif not (is_num(value) and value >= 0):
            raise bad("a finite number >= 0")


def _daifnet_builder(name: str) -> Callable[..., nn.Module]:
    def build(**overrides: Any) -> DAIFNet:
        check_daifnet_overrides(overrides)
        base = DAIFNET_VARIANTS[name].to_dict()
        base.update(overrides)
        base["widths"] = tuple(base["widths"])
        return DAIFNet(DAIFNetConfig(**base))

    return build


#: name -> builder taking keyword overrides of the model's config.
MODEL_REGISTRY: dict[str, Callable[..., nn.Module]] = {
    **{name: _daifnet_builder(name) for name in DAIFNET_VARIANTS},
    "classical": lambda **kw: ClassicalEstimator(**kw),
}

#: name -> weights file shipped in ``defocus/models/weights/``.
PRETRAINED_WEIGHTS: dict[str, str] = {"daifnet_small": "daifnet_release.safetensors"}


def list_models() -> list[str]:
    """Registered model names."""
    return sorted(MODEL_REGISTRY)


def shipped_weights_path(name: str = DEFAULT_MODEL) -> Path:
    """Path of the weights shipped for model ``name`` (it may be absent in a development tree without them)."""
    if name not in PRETRAINED_WEIGHTS:
        have = ", ".join(sorted(PRETRAINED_WEIGHTS))
        raise DefocusError(f"model {name!r} has no shipped weights; models with weights: {have}")
    return Path(str(resources.files("defocus.models") / "weights" / PRETRAINED_WEIGHTS[name]))


def create_model(name: str = "daifnet", pretrained: bool = False, **overrides: Any) -> nn.Module:
    """Builds a registered model; keyword overrides replace fields of its config.

    With ``pretrained=True`` the shipped weights are loaded (in eval mode); their own config is used, so overrides
    are not allowed then.
    """
    if name not in MODEL_REGISTRY:
        raise DefocusError(f"unknown model {name!r}; registered: {', '.join(list_models())}")
    if pretrained:
        if overrides:
            raise DefocusError("pretrained weights fix the model's config: pass no overrides with pretrained=True")
        from defocus.models.checkpoint import load_checkpoint

        path = shipped_weights_path(name)
        if not path.is_file():
            raise DefocusError(
                f"no shipped weights found for {name} at {path}; pass --checkpoint or train them with "
                "'defocus train --config release'"
            )
        model, _ = load_checkpoint(path)
        return model
    return MODEL_REGISTRY[name](**overrides)


def count_parameters(model: nn.Module) -> int:
    """Number of parameters of a model."""
    return sum(p.numel() for p in model.parameters())
