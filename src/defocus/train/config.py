"""Typed training configuration: dataclass defaults, overlaid by a YAML file, overlaid by ``key=value`` overrides.

The resolved configuration is saved as ``config.yaml`` next to every run and inside every checkpoint. The configs
shipped with the package (``defocus/configs/*.yaml``: ``release`` and ``release_robust``, the two stages of the
shipped weights; ``tiny``, a seconds-long smoke run) are found by name, so ``defocus train --config release`` works from an installed wheel.

The loss's forward models are :class:`~defocus.optics.forward.ForwardSpec`-shaped: ``loss.forward`` (``{psf,
light, method, level_ratio, multires, blur_scale}``) is the loss's own, and ``protocol_loss.<name>`` (one entry per
protocol of :data:`defocus.data.synthesis.PROTOCOLS`, by default the lens of the protocol's loss spec) changes some
of its fields for data of that protocol; see :func:`loss_spec_for`. Configs written before ``loss.forward`` (loose
``loss.psf``, ``loss.linear_light``, ... and ``protocol_loss.<name>.linear_light``) are still read.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Sequence

import yaml

from defocus.data.sweeps import DataConfig
from defocus.data.synthesis import PROTOCOLS, get_protocol
from defocus.errors import InputError
from defocus.losses.selfsup import LossConfig
from defocus.optics.forward import ForwardSpec


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


def default_protocol_loss() -> dict[str, dict[str, Any]]:
    """``protocol_loss``'s default: for every registered protocol, the lens (PSF, light, blur scale) of the forward
    model its loss re-renders with (:attr:`defocus.data.synthesis.Protocol.loss`)."""
    return {name: p.loss.lens() for name, p in PROTOCOLS.items()}


@dataclass
class TrainConfig:
    name: str = "run"
    seed: int = 0
    out_dir: str = "runs"
    num_threads: int = 0  # 0 = torch default
    # Starting weights: "" random (from scratch), "shipped" the package's weights, or a .safetensors checkpoint of
    # `defocus train` (its model and model config must be this config's model).
    init: str = ""
    model: ModelSection = field(default_factory=ModelSection)
    data: DataConfig = field(default_factory=DataConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    # Forward model of the loss for data of each synthesis protocol: fields of loss.forward changed for that
    # protocol's groups (real stacks use data.stack_protocol's entry; random-variant groups carry their own lens).
    protocol_loss: dict = field(default_factory=default_protocol_loss)
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
        """Checks the types and ranges of every value before anything is trained or written: an InputError naming
        the key (one line) for nonsense such as ``optim.epochs=-1``, ``data.size=[0, 0]`` or ``name=null``, that
        would otherwise fail deep inside training or train nothing. Returns the config."""
        _check_types(self, TrainConfig(), "")
        d, o, loss = self.data, self.optim, self.loss
        _at_least(self, "", {"seed": 0, "num_threads": 0, "val_scenes": 0, "save_every_epochs": 1,
                             "save_every_steps": 0, "keep_checkpoints": 1})
        if self.seed >= 2**63:
            raise InputError(f"config key seed must be below 2**63, got {self.seed}")
        for key in ("name", "out_dir"):
            if not getattr(self, key).strip():
                raise InputError(f"config key {key} must not be empty")
        _positive_finite("dist_timeout_s", self.dist_timeout_s)
        if self.init not in ("", "shipped"):
            from pathlib import Path

            if not Path(self.init).is_file() or not self.init.endswith(".safetensors"):
                raise InputError(f"config key init must be empty, 'shipped' or a .safetensors checkpoint; "
                                 f"{self.init!r} is not a file of that kind", field="init")
        if self.export_weights not in ("best", "last"):
            raise InputError(f"config key export_weights must be best or last, got {self.export_weights!r}")
        _at_least(o, "optim.", {"epochs": 1, "steps_per_epoch": 1, "batch_size": 1, "warmup_steps": 0})
        _positive_finite("optim.lr", o.lr)
        for key in ("weight_decay", "grad_clip"):
            _positive_finite(f"optim.{key}", getattr(o, key), zero_ok=True)
        _at_least(d, "data.", {"scenes_per_group": 0, "sweep": 1, "n_min": 1, "n_typical": 1, "seed_offset": 0,
                               "forward_variants": 0, "variant_scenes": 0, "rgbd_variants": 0, "shards": 0,
                               "dataset_limit": 0})
        if d.n_max < d.n_min:
            raise InputError(f"config key data.n_max must be >= data.n_min ({d.n_min}), got {d.n_max}")
        if not 0.0 <= d.p_typical <= 1.0:
            raise InputError(f"config key data.p_typical must lie in [0, 1], got {d.p_typical}")
        from defocus.data.codecs import MAX_IMAGE_PIXELS

        if (len(d.size) != 2 or not all(_is_int(v) and MIN_TRAIN_SIDE <= v <= MAX_TRAIN_SIDE for v in d.size)
                or d.size[0] * d.size[1] > MAX_IMAGE_PIXELS):
            raise InputError(f"config key data.size must be [H, W], whole numbers {MIN_TRAIN_SIDE}-{MAX_TRAIN_SIDE} "
                             f"and at most {MAX_IMAGE_PIXELS} pixels in all, got {d.size}")
        _number_pair("data.pitch_scale", d.pitch_scale, strict=False)
        _number_pair("data.rgbd_depth_range", d.rgbd_depth_range, strict=True)
        _positive_finite("data.rgbd_depth_scale", d.rgbd_depth_scale, zero_ok=True)
        for key in ("presets", "protocols", "stack_dirs", "rgbd_dirs", "datasets"):
            if not all(isinstance(v, str) for v in getattr(d, key)):
                raise InputError(f"config key data.{key} must be a list of strings, got {getattr(d, key)}")
        for term, weight in loss.weights.items():
            if not _is_number(weight) or not math.isfinite(weight) or weight < 0:
                raise InputError(f"config key loss.weights.{term} must be a finite number >= 0, got {weight!r}")
        if not any(w > 0 for w in loss.weights.values()):
            raise InputError("config key loss.weights: at least one loss term needs a weight > 0")
        from defocus.models.factory import MODEL_REGISTRY

        trainable = sorted(n for n in MODEL_REGISTRY if n != "classical")
        if self.model.name not in trainable:
            raise InputError(f"config key model.name: {self.model.name!r} is not a model with weights to train; "
                             f"choose one of {', '.join(trainable)}")
        from defocus.models.daifnet import DAIFNetConfig
        from defocus.models.factory import DAIFNET_VARIANTS, check_daifnet_overrides

        if self.model.name in DAIFNET_VARIANTS:
            known = DAIFNetConfig().to_dict()
            unknown = [k for k in self.model.config if k not in known]
            if unknown:
                raise InputError(f"unknown config key model.config.{unknown[0]}; known: {', '.join(known)}")
            check_daifnet_overrides(self.model.config)
        for i, protocol in enumerate(d.protocols):
            _known_protocol(f"data.protocols[{i}]", protocol)
        _known_protocol("data.stack_protocol", d.stack_protocol)
        for protocol, entry in self.protocol_loss.items():
            _known_protocol(f"protocol_loss.{protocol}", protocol)
            if not isinstance(entry, dict):
                raise InputError(f"config key protocol_loss.{protocol} must be a mapping of forward-model settings "
                                 f"(psf, light, ...), got {entry!r}", field=f"protocol_loss.{protocol}")
            _forward_spec(lambda: loss.forward.replace(**entry), f"protocol_loss.{protocol}", entry)
        return self


def loss_spec_for(cfg: TrainConfig, source: str | ForwardSpec) -> ForwardSpec:
    """The forward model the loss re-renders a training group with: ``loss.forward``, with

    * for a random-variant group (``source`` = the group's :class:`~defocus.optics.forward.ForwardSpec`, a batch's
      ``physics``), that spec's lens (PSF, light, blur scale): the data's camera on the loss's renderer;
    * for a protocol's group (``source`` = its name, a batch's ``protocol``), the fields of
      ``protocol_loss.<name>`` (a protocol registered after the config was made: its loss spec's lens).
    """
    base = cfg.loss.forward
    if isinstance(source, ForwardSpec):
        return base.with_lens_of(source)
    entry = cfg.protocol_loss.get(source)
    if entry is None:
        entry = get_protocol(source).loss.lens()
    return base.replace(**entry)


def _known_protocol(key: str, name: Any) -> None:
    if not isinstance(name, str) or name not in PROTOCOLS:
        raise InputError(f"config key {key}: unknown protocol {name!r}; choose one of {', '.join(PROTOCOLS)}",
                         field=key)


def _forward_spec(make: Any, key: str, values: Any) -> ForwardSpec:
    """``make()`` (a ForwardSpec built from the mapping ``values`` of config key ``key``), its errors naming the key."""
    bad = [k for k in values if not isinstance(k, str)] if isinstance(values, dict) else []
    if bad:
        known = ", ".join(f.name for f in dataclasses.fields(ForwardSpec))
        raise InputError(f"unknown config key {key}.{bad[0]}; known: {known}", field=f"{key}.{bad[0]}")
    try:
        return make()
    except InputError as exc:
        name = f"{key}.{exc.field}" if exc.field else key
        text = str(exc)
        if text.startswith("unknown forward-model setting"):
            raise InputError(f"unknown config key {name}; known: {text.split('known: ', 1)[-1]}", field=name) from None
        raise InputError(f"config key {name}: {text}", field=name) from None


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
        if ref is None:  # an optional name (loss.forward.near_psf): null or a string; its value is checked where used
            if value is not None and not isinstance(value, str):
                raise InputError(f"config key {key} must be a string or null, got {value!r}")
            continue
        kind = {bool: "true or false", int: "a whole number", float: "a number", str: "a string", list: "a list",
                dict: "a mapping"}[type(ref)]
        ok = (isinstance(value, bool) if isinstance(ref, bool) else _is_int(value) if isinstance(ref, int)
              else _is_number(value) if isinstance(ref, float) else isinstance(value, type(ref)))
        if not ok:
            raise InputError(f"config key {key} must be {kind}, got {value!r}")


def _at_least(obj: Any, where: str, minimum: dict[str, int]) -> None:
    for key, low in minimum.items():
        if getattr(obj, key) < low:
            raise InputError(f"config key {where}{key} must be >= {low}, got {getattr(obj, key)}")


def _positive_finite(key: str, value: float, zero_ok: bool = False) -> None:
    if not math.isfinite(value) or value < 0 or (value == 0 and not zero_ok):
        raise InputError(f"config key {key} must be a finite number {'>= 0' if zero_ok else '> 0'}, got {value}")


def _number_pair(key: str, value: list, strict: bool) -> None:
    """[low, high]: two finite positive numbers, low < high (``strict``) or low <= high."""
    ok = len(value) == 2 and all(_is_number(v) and math.isfinite(v) and v > 0 for v in value)
    if not ok or value[0] > value[1] or (strict and value[0] == value[1]):
        raise InputError(f"config key {key} must be two finite numbers 0 < low {'<' if strict else '<='} high, "
                         f"got {value}")


#: Keys of ``loss`` in configs written before ``loss.forward``: the loss's forward model as loose keys.
_LEGACY_LOSS_KEYS = ("psf", "light", "linear_light", "method", "level_ratio", "multires", "blur_scale")


def _upgrade_loss(values: dict, where: str) -> dict:
    """An old ``loss`` section (``psf``, ``linear_light``, ``level_ratio``, ... beside ``weights``) in today's form
    (those keys under ``forward``, ``linear_light`` read as ``light``)."""
    legacy = {k: values[k] for k in _LEGACY_LOSS_KEYS if k in values}
    forward = values.get("forward", {})
    if not legacy or not isinstance(forward, dict):
        return values
    upgraded = _forward_spec(lambda: ForwardSpec.upgrade_dict(legacy), where.rstrip("."), legacy)
    out = {k: v for k, v in values.items() if k not in legacy}
    out["forward"] = {**upgraded, **forward}
    return out


def _merge_protocol_loss(current: dict, value: Any, key: str) -> None:
    """Entry by entry: ``protocol_loss.paper.psf=disk`` changes paper's psf and keeps its other fields."""
    if not isinstance(value, dict):
        raise InputError(f"config key {key} must be a mapping of protocol names to forward-model settings, got "
                         f"{value!r}", field=key)
    for name, entry in value.items():
        if isinstance(entry, dict) and isinstance(current.get(name), dict):
            entry = _forward_spec(lambda: ForwardSpec.upgrade_dict(entry), f"{key}.{name}", entry)
            current[name] = {**current[name], **entry}
        else:
            current[name] = entry


def _merge(obj: Any, values: dict, where: str) -> Any:
    if not dataclasses.is_dataclass(obj):
        return values
    if isinstance(obj, LossConfig):
        values = _upgrade_loss(values, where)
    names = {f.name: f for f in dataclasses.fields(obj)}
    for key, value in values.items():
        if key not in names:
            raise InputError(f"unknown config key {where}{key}; known: {', '.join(names)}", field=f"{where}{key}")
        current = getattr(obj, key)
        if isinstance(current, ForwardSpec):  # frozen: replaced by the merged spec, checked here
            if not isinstance(value, dict):
                raise InputError(f"config key {where}{key} must be a mapping", field=f"{where}{key}")
            setattr(obj, key, _forward_spec(lambda: current.replace(**value), f"{where}{key}", value))
        elif dataclasses.is_dataclass(current):
            if not isinstance(value, dict):
                raise InputError(f"config key {where}{key} must be a mapping", field=f"{where}{key}")
            _merge(current, value, f"{where}{key}.")
        elif f"{where}{key}" == "protocol_loss":
            _merge_protocol_loss(current, value, "protocol_loss")
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
        raise InputError(f"config key {key} must be true or false, got {value!r}")
    if isinstance(current, (int, float)) and isinstance(value, bool):
        raise InputError(f"config key {key} must be a number, got {value!r}")
    if isinstance(current, (int, float)) and isinstance(value, str):
        # YAML 1.1 (PyYAML) reads exponents without a dot, e.g. 1e-3, as strings.
        try:
            as_float = float(value)
        except ValueError:
            as_float = None
        if as_float is not None and math.isfinite(as_float):
            value = as_float
    if isinstance(current, (int, float)) and not isinstance(value, (int, float)):
        raise InputError(f"config key {key} must be a number, got {value!r}")
    if isinstance(current, int) and isinstance(value, float) and not value.is_integer():
        raise InputError(f"config key {key} must be an integer, got {value!r}")
    if isinstance(current, int) and not isinstance(current, bool):
        return int(value)
    if isinstance(current, float):
        return float(value)
    if isinstance(current, list) and not isinstance(value, list):
        raise InputError(f"config key {key} must be a list, got {value!r}")
    return value


def parse_override(text: str) -> dict:
    """``a.b.c=value`` → {"a": {"b": {"c": value}}}, with the value parsed as YAML."""
    if "=" not in text:
        raise InputError(f"override {text!r} must look like key.sub=value")
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
    raise InputError(f"config file {p} does not exist (packaged configs: {', '.join(shipped)})")


def load_config(path: str | Path | None = None, overrides: Sequence[str] = ()) -> TrainConfig:
    """Defaults ← YAML file (a path or a packaged config's name) ← overrides."""
    cfg = TrainConfig()
    if path is not None:
        p = resolve_config_path(path)
        try:
            values = yaml.safe_load(p.read_text()) or {}
        except yaml.YAMLError as exc:
            raise InputError(f"bad YAML in {p}: {str(exc).splitlines()[0]}") from None
        if not isinstance(values, dict):
            raise InputError(f"config file {p} must hold a mapping")
        _merge(cfg, values, "")
    for text in overrides:
        _merge(cfg, parse_override(text), "")
    return cfg.validate()


def config_from_dict(values: dict) -> TrainConfig:
    return _merge(TrainConfig(), values, "")


def dump_config(cfg: TrainConfig) -> str:
    return yaml.safe_dump(cfg.to_dict(), sort_keys=False)
