"""One factory for every estimator: ``create_model(name, pretrained=...)``.

Registered names:

* ``daifnet`` — DAIF-Net with the paper's widths (about 2 M parameters);
* ``daifnet_small`` — the CPU-friendly variant whose weights ship with the package (``pretrained=True``);
* ``daifnet_tiny`` — a few thousand parameters, for tests;
* ``classical`` — the classical depth-from-focus baseline (no weights), with the same call and result type.

The factory also owns loading: ``create_model(pretrained=True)`` gives the shipped weights,
``create_model(checkpoint=PATH)`` the model of a checkpoint file of ``defocus train`` (``.safetensors``) or of an
ONNX file of ``defocus export`` (``.onnx``, run by ONNX Runtime). A loaded model carries its file's metadata as
``model.checkpoint_metadata``.

A new network goes here: add its builder to :data:`MODEL_REGISTRY` (and its weights file to
:data:`PRETRAINED_WEIGHTS` if it ships any, in ``models/weights/``).
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path
from typing import Any, Callable

from torch import nn

from defocus.errors import InputError
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
    """InputError (one line, naming the field) for a value of the wrong type or range (an unknown field is left
    to DAIFNetConfig's TypeError; the training config names it, see TrainConfig.validate)."""
    import math

    for key, value in overrides.items():

        def bad(expected: str) -> InputError:
            return InputError(f"DAIF-Net config field {key} must be {expected}, got {value!r}")

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
        raise InputError(f"model {name!r} has no shipped weights; models with weights: {have}")
    return Path(str(resources.files("defocus.models") / "weights" / PRETRAINED_WEIGHTS[name]))


def create_model(
    name: str | None = None,
    pretrained: bool = False,
    checkpoint: str | Path | None = None,
    threads: int = 0,
    **overrides: Any,
) -> nn.Module:
    """Builds a registered model, or loads one.

    Args:
        name: a registered name (:func:`list_models`); default ``daifnet``, or :data:`DEFAULT_MODEL` with
            ``pretrained``; with ``checkpoint`` the file's own model (a different ``name`` is an error).
        pretrained: load the weights shipped with the package (eval mode); their config is fixed, so no overrides.
        checkpoint: a ``.safetensors`` file of ``defocus train`` or an ``.onnx`` file of ``defocus export``.
        threads: intra-op threads of ONNX Runtime for an ``.onnx`` checkpoint (0: its default).
        overrides: fields of the model's config (new models only).
    Returns:
        The model; loaded ones are in eval mode and carry ``checkpoint_metadata`` (model name, model config,
        training config, extra numbers).
    """
    if checkpoint is not None or pretrained:
        if overrides:
            raise InputError("loaded weights fix the model's config: pass no config overrides with them")
        if checkpoint is not None and pretrained:
            raise InputError("pass either pretrained=True (the shipped weights) or a checkpoint, not both")
    if checkpoint is not None:
        model = _load_file(Path(checkpoint), threads)
        loaded = model.checkpoint_metadata.get("model_name")
        if name is not None and name != loaded:
            raise InputError(f"checkpoint {checkpoint} holds model {loaded}, not {name}", field="checkpoint")
        return model
    name = name or (DEFAULT_MODEL if pretrained else "daifnet")
    if name not in MODEL_REGISTRY:
        raise InputError(f"unknown model {name!r}; registered: {', '.join(list_models())}")
    if pretrained:
        path = shipped_weights_path(name)
        if not path.is_file():
            raise InputError(f"no shipped weights found for {name} at {path}: give a checkpoint, or train them with "
                             "'defocus train --config release'")
        model = _load_file(path, threads)
        # The confidence calibration fitted for these weights (defocus.confidence); a checkpoint carries its own.
        from defocus.models.checkpoint import packaged_calibration

        model.confidence_calibration = packaged_calibration(name)
        return model
    return MODEL_REGISTRY[name](**overrides)


def _load_file(path: Path, threads: int) -> nn.Module:
    """The model of a ``.safetensors`` checkpoint (PyTorch, eval mode) or an ``.onnx`` export (ONNX Runtime)."""
    if path.suffix.lower() == ".onnx":
        from defocus.models.onnx import OnnxModel

        return OnnxModel(path, threads)
    from defocus.models.checkpoint import read_checkpoint

    state, meta = read_checkpoint(path)
    name = meta["model_name"]
    if name not in MODEL_REGISTRY:
        raise InputError(f"checkpoint {path} holds an unknown model {name!r}", field="checkpoint")
    model = MODEL_REGISTRY[name](**dict(meta["model_config"]))
    try:
        model.load_state_dict(state)
    except RuntimeError as exc:
        raise InputError(f"checkpoint {path} does not match model {name}: {str(exc).splitlines()[0]}",
                         field="checkpoint") from None
    model.eval()
    model.checkpoint_metadata = meta
    calibration = meta.get("extra", {}).get("confidence_calibration")
    if calibration is not None:
        from defocus.confidence import ConfidenceCalibration

        model.confidence_calibration = ConfidenceCalibration.from_dict(calibration)
    return model


def count_parameters(model: nn.Module) -> int:
    """Number of parameters of a model."""
    return sum(p.numel() for p in model.parameters())
