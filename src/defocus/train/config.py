"""Typed training configuration: dataclass defaults, overlaid by a YAML file, overlaid by ``key=value`` overrides.

The resolved configuration is saved as ``config.yaml`` next to every run and inside every checkpoint. The configs
shipped with the package (``defocus/configs/*.yaml``: ``release``, the shipped weights; ``tiny``, a seconds-long
smoke run) are found by name, so ``defocus train --config release`` works from an installed wheel.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Sequence

import yaml

from defocus.data.sweeps import DataConfig
from defocus.errors import DefocusError
from defocus.losses.selfsup import LossConfig


@dataclass
class ModelSection:
    name: str = "daifnet_small"
    config: dict = field(default_factory=dict)  # overrides of the variant's config (e.g. prior_presmooth)


@dataclass
class OptimConfig:
    lr: float = 5e-4  # for the global batch (all ranks together)
    weight_decay: float = 5e-4
    epochs: int = 10
    steps_per_epoch: int = 100
    batch_size: int = 8  # global: summed over data shards and ranks (each of S shards draws batch_size / S)
    grad_clip: float = 1.0
    warmup_steps: int = 50


@dataclass
class ProtocolLoss:
    """Forward model of the loss for data of each synthesis protocol (real stacks use data.stack_protocol)."""

    paper: dict = field(default_factory=lambda: {"psf": "gaussian", "linear_light": False})
    realistic: dict = field(default_factory=lambda: {"psf": "disk", "linear_light": True})


@dataclass
class TrainConfig:
    name: str = "run"
    seed: int = 0
    out_dir: str = "runs"
    num_threads: int = 0  # 0 = torch default
    model: ModelSection = field(default_factory=ModelSection)
    data: DataConfig = field(default_factory=DataConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    protocol_loss: ProtocolLoss = field(default_factory=ProtocolLoss)
    optim: OptimConfig = field(default_factory=OptimConfig)
    val_scenes: int = 4  # procedural validation seeds (with ground truth: evaluation only, never training)
    save_every_epochs: int = 1
    save_every_steps: int = 0  # also write a resume checkpoint every this many steps (0: at epoch ends only)
    keep_checkpoints: int = 2  # resume checkpoints kept (older ones are the fall-back for a corrupt newest one)
    save_epoch_weights: bool = False  # also keep every epoch's weights as epochs/epoch-NNN.safetensors (for curves)
    export_weights: str = "best"  # what `train --export` copies: best (lowest validation AbsRel) or last (last epoch)
    device: str = "auto"  # auto (each rank's GPU where CUDA is available, else CPU), cpu, cuda, cuda:K
    dist_backend: str = "auto"  # under torchrun: auto (nccl on GPUs, gloo on CPUs), gloo or nccl
    dist_timeout_s: float = 1800.0  # a collective waiting longer for the other ranks fails
    deterministic: bool = False  # deterministic GPU kernels (bit-exact resume on CUDA; slower); CPUs always are

    def to_dict(self) -> dict:
        return asdict(self)

    def validate(self) -> "TrainConfig":
        """Checks the types and ranges of every value before anything is trained or written: a DefocusError naming
        the key (one line) for nonsense such as ``optim.epochs=-1``, ``data.size=[0, 0]`` or ``name=null``, that
        would otherwise fail deep inside training or train nothing. Returns the config."""
        _check_types(self, TrainConfig(), "")
        d, o, loss = self.data, self.optim, self.loss
        _at_least(self, "", {"seed": 0, "num_threads": 0, "val_scenes": 0, "save_every_epochs": 1,
                             "save_every_steps": 0, "keep_checkpoints": 1})
        if self.seed >= 2**63:
            raise DefocusError(f"config key seed must be below 2**63, got {self.seed}")
        for key in ("name", "out_dir"):
            if not getattr(self, key).strip():
                raise DefocusError(f"config key {key} must not be empty")
        _positive_finite("dist_timeout_s", self.dist_timeout_s)
        if self.export_weights not in ("best", "last"):
            raise DefocusError(f"config key export_weights must be best or last, got {self.export_weights!r}")
        _at_least(o, "optim.", {"epochs": 1, "steps_per_epoch": 1, "batch_size": 1, "warmup_steps": 0})
        _positive_finite("optim.lr", o.lr)
        for key in ("weight_decay", "grad_clip"):
            _positive_finite(f"optim.{key}", getattr(o, key), zero_ok=True)
        _at_least(d, "data.", {"scenes_per_group": 0, "sweep": 1, "n_min": 1, "n_typical": 1, "seed_offset": 0,
                               "forward_variants": 0, "variant_scenes": 0, "rgbd_variants": 0, "shards": 0,
                               "dataset_limit": 0})
        if d.n_max < d.n_min:
            raise DefocusError(f"config key data.n_max must be >= data.n_min ({d.n_min}), got {d.n_max}")
        if not 0.0 <= d.p_typical <= 1.0:
            raise DefocusError(f"config key data.p_typical must lie in [0, 1], got {d.p_typical}")
        from defocus.data.codecs import MAX_IMAGE_PIXELS

        if (len(d.size) != 2 or not all(_is_int(v) and MIN_TRAIN_SIDE <= v <= MAX_TRAIN_SIDE for v in d.size)
                or d.size[0] * d.size[1] > MAX_IMAGE_PIXELS):
            raise DefocusError(f"config key data.size must be [H, W], whole numbers {MIN_TRAIN_SIDE}-{MAX_TRAIN_SIDE} "
                               f"and at most {MAX_IMAGE_PIXELS} pixels in all, got {d.size}")
        _number_pair("data.pitch_scale", d.pitch_scale, strict=False)
        _number_pair("data.rgbd_depth_range", d.rgbd_depth_range, strict=True)
        _positive_finite("data.rgbd_depth_scale", d.rgbd_depth_scale, zero_ok=True)
        for key in ("presets", "protocols", "stack_dirs", "rgbd_dirs", "datasets"):
            if not all(isinstance(v, str) for v in getattr(d, key)):
                raise DefocusError(f"config key data.{key} must be a list of strings, got {getattr(d, key)}")
        for term, weight in loss.weights.items():
            if not _is_number(weight) or not math.isfinite(weight) or weight < 0:
                raise DefocusError(f"config key loss.weights.{term} must be a finite number >= 0, got {weight!r}")
        if not any(w > 0 for w in loss.weights.values()):
            raise DefocusError("config key loss.weights: at least one loss term needs a weight > 0")
        _positive_finite("loss.level_ratio", loss.level_ratio)
        from defocus.models.factory import MODEL_REGISTRY

        trainable = sorted(n for n in MODEL_REGISTRY if n != "classical")
        if self.model.name not in trainable:
            raise DefocusError(f"config key model.name: {self.model.name!r} is not a model with weights to train; "
                               f"choose one of {', '.join(trainable)}")
        from defocus.models.daifnet import DAIFNetConfig
        from defocus.models.factory import DAIFNET_VARIANTS, check_daifnet_overrides

        if self.model.name in DAIFNET_VARIANTS:
            known = DAIFNetConfig().to_dict()
            unknown = [k for k in self.model.config if k not in known]
            if unknown:
                raise DefocusError(f"unknown config key model.config.{unknown[0]}; known: {', '.join(known)}")
            check_daifnet_overrides(self.model.config)
        for protocol in ("paper", "realistic"):
            pl = getattr(self.protocol_loss, protocol)
            if not isinstance(pl.get("psf", ""), (str, type(None))) or not isinstance(pl.get("linear_light", False),
                                                                                       (bool, type(None))):
                raise DefocusError(f"config key protocol_loss.{protocol} must hold psf (a name) and linear_light "
                                   f"(true or false), got {pl}")
        return self


#: Smallest and largest training crop side (the SSIM term reflect-pads by 5 pixels).
MIN_TRAIN_SIDE, MAX_TRAIN_SIDE = 6, 16384


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _is_number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def _check_types(obj: Any, default: Any, where: str) -> None:
    """Every value has the type of its default (a string stays a string, a list a list; never null)."""
    for f in dataclasses.fields(obj):
        value, ref, key = getattr(obj, f.name), getattr(default, f.name), f"{where}{f.name}"
        if dataclasses.is_dataclass(ref):
            _check_types(value, ref, f"{key}.")
            continue
        kind = {bool: "true or false", int: "a whole number", float: "a number", str: "a string", list: "a list",
                dict: "a mapping"}[type(ref)]
        ok = (isinstance(value, bool) if isinstance(ref, bool) else _is_int(value) if isinstance(ref, int)
              else _is_number(value) if isinstance(ref, float) else isinstance(value, type(ref)))
        if not ok:
            raise DefocusError(f"config key {key} must be {kind}, got {value!r}")


def _at_least(obj: Any, where: str, minimum: dict[str, int]) -> None:
    for key, low in minimum.items():
        if getattr(obj, key) < low:
            raise DefocusError(f"config key {where}{key} must be >= {low}, got {getattr(obj, key)}")


def _positive_finite(key: str, value: float, zero_ok: bool = False) -> None:
    if not math.isfinite(value) or value < 0 or (value == 0 and not zero_ok):
        raise DefocusError(f"config key {key} must be a finite number {'>= 0' if zero_ok else '> 0'}, got {value}")


def _number_pair(key: str, value: list, strict: bool) -> None:
    """[low, high]: two finite positive numbers, low < high (``strict``) or low <= high."""
    ok = len(value) == 2 and all(_is_number(v) and math.isfinite(v) and v > 0 for v in value)
    if not ok or value[0] > value[1] or (strict and value[0] == value[1]):
        raise DefocusError(f"config key {key} must be two finite numbers 0 < low {'<' if strict else '<='} high, "
                           f"got {value}")


def _merge(obj: Any, values: dict, where: str) -> Any:
    if not dataclasses.is_dataclass(obj):
        return values
    names = {f.name: f for f in dataclasses.fields(obj)}
    for key, value in values.items():
        if key not in names:
            raise DefocusError(f"unknown config key {where}{key}; known: {', '.join(names)}")
        current = getattr(obj, key)
        if dataclasses.is_dataclass(current):
            if not isinstance(value, dict):
                raise DefocusError(f"config key {where}{key} must be a mapping")
            _merge(current, value, f"{where}{key}.")
        elif isinstance(current, dict) and isinstance(value, dict):
            current.update(value)
        else:
            setattr(obj, key, _coerce(value, current, f"{where}{key}"))
    return obj


def _coerce(value: Any, current: Any, key: str) -> Any:
    if current is None or value is None:
        return value
    if isinstance(current, bool):
        if isinstance(value, bool):
            return value
        raise DefocusError(f"config key {key} must be true or false, got {value!r}")
    if isinstance(current, (int, float)) and isinstance(value, bool):
        raise DefocusError(f"config key {key} must be a number, got {value!r}")
    if isinstance(current, (int, float)) and isinstance(value, str):
        # YAML 1.1 (PyYAML) reads exponents without a dot, e.g. 1e-3, as strings.
        try:
            as_float = float(value)
        except ValueError:
            as_float = None
        if as_float is not None and math.isfinite(as_float):
            value = as_float
    if isinstance(current, (int, float)) and not isinstance(value, (int, float)):
        raise DefocusError(f"config key {key} must be a number, got {value!r}")
    if isinstance(current, int) and isinstance(value, float) and not value.is_integer():
        raise DefocusError(f"config key {key} must be an integer, got {value!r}")
    if isinstance(current, int) and not isinstance(current, bool):
        return int(value)
    if isinstance(current, float):
        return float(value)
    if isinstance(current, list) and not isinstance(value, list):
        raise DefocusError(f"config key {key} must be a list, got {value!r}")
    return value


def parse_override(text: str) -> dict:
    """``a.b.c=value`` → {"a": {"b": {"c": value}}}, with the value parsed as YAML."""
    if "=" not in text:
        raise DefocusError(f"override {text!r} must look like key.sub=value")
    key, raw = text.split("=", 1)
    try:
        value = yaml.safe_load(raw)
    except yaml.YAMLError:
        value = raw
    out: dict = {}
    node = out
    parts = key.strip().split(".")
    for p in parts[:-1]:
        node = node.setdefault(p, {})
    node[parts[-1]] = value
    return out


def packaged_configs() -> dict[str, Path]:
    """The configs shipped inside the package, by name (file stem)."""
    from importlib import resources

    folder = Path(str(resources.files("defocus") / "configs"))
    return {p.stem: p for p in sorted(folder.glob("*.yaml"))}


def resolve_config_path(path: str | Path) -> Path:
    """A config file path, or the name of a packaged config (``release``, ``tiny``, with or without .yaml)."""
    p = Path(path)
    if p.is_file():
        return p
    shipped = packaged_configs()
    name = p.name[:-5] if p.name.endswith(".yaml") else p.name
    if name in shipped and (str(p) == p.name or not p.exists()):
        return shipped[name]
    raise DefocusError(f"config file {p} does not exist (packaged configs: {', '.join(shipped)})")


def load_config(path: str | Path | None = None, overrides: Sequence[str] = ()) -> TrainConfig:
    """Defaults ← YAML file (a path or a packaged config's name) ← overrides."""
    cfg = TrainConfig()
    if path is not None:
        p = resolve_config_path(path)
        try:
            values = yaml.safe_load(p.read_text()) or {}
        except yaml.YAMLError as exc:
            raise DefocusError(f"bad YAML in {p}: {str(exc).splitlines()[0]}") from None
        if not isinstance(values, dict):
            raise DefocusError(f"config file {p} must hold a mapping")
        _merge(cfg, values, "")
    for text in overrides:
        _merge(cfg, parse_override(text), "")
    return cfg.validate()


def config_from_dict(values: dict) -> TrainConfig:
    return _merge(TrainConfig(), values, "")


def dump_config(cfg: TrainConfig) -> str:
    return yaml.safe_dump(cfg.to_dict(), sort_keys=False)
