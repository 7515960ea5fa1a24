"""Focal-stack synthesis: from an RGB-D pair (or a procedural scene) to the stack a camera would record.

A recorded stack is ``sensor(forward(aif, depth, focus))``: a :class:`~defocus.optics.forward.ForwardSpec` (the
optics) followed by a :class:`~defocus.optics.sensor.SensorModel` (noise, clamping, quantisation, JPEG).

**Protocols.** A synthesis protocol names such a pair, together with the forward model the self-supervised loss
re-renders data of that protocol with: :class:`Protocol`, kept in the one registry :data:`PROTOCOLS` (by name; list
them with :func:`protocol_names`, look one up with :func:`get_protocol`, add one with :func:`register_protocol`).
Everything that lists protocols (the training config, the dataset adapters, the command line) reads it. The two
built-in ones:

``paper``
    Gaussian PSF with the ``exact`` semantics (rendered by the ``layered`` renderer with fine levels,
    :data:`SYNTHESIS_LEVEL_RATIO`, which agrees with the ``exact`` oracle to a small fraction of an 8-bit level),
    8-bit output rounded half up, no noise. The loss: Gaussian PSF on sRGB values.
``realistic``
    ``occlusion`` renderer with the ``disk`` PSF in linear light, Gaussian noise σ = 0.005 (on the [0, 1] sRGB
    values, before quantisation), 8-bit output. The loss: disk PSF in linear light.

**Random variants** (:class:`SynthesisVariant`): a random forward model and sensor per training group (PSF shape,
signed spherical aberration, chromatic aberration, light model, occlusion, effective aperture, tone curve,
vignetting, per-frame exposure, noise, JPEG), rendered by the same :func:`synthesize`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F

from defocus.data.holes import fill_depth_holes
from defocus.data.stack import FocalStack
from defocus.errors import InputError
from defocus.optics import psf as _psf
from defocus.optics.camera import ThinLensCamera
from defocus.optics.forward import ForwardModel, ForwardSpec
from defocus.optics.sensor import SensorModel, jpeg_round_trip

__all__ = [
    "PROTOCOLS", "Protocol", "REALISTIC_NOISE_STD", "SYNTHESIS_LEVEL_RATIO", "SynthesisVariant", "get_protocol",
    "jpeg_round_trip", "protocol_names", "register_protocol", "stack_from_rgbd", "stack_from_scene", "synthesize",
    "synthesis_forward_model", "synthesize_stack", "synthesize_variant", "unregister_protocol",
]

#: Level spacing of the layered renderer for synthesis: finer than the training default, so that rendered test
#: stacks match the ``exact`` oracle to a small fraction of an 8-bit level.
SYNTHESIS_LEVEL_RATIO = 1.15
#: Sensor noise of the ``realistic`` protocol (σ on the [0, 1] values).
REALISTIC_NOISE_STD = 0.005


# ------------------------------------------------------------------------------------------------- protocols
@dataclass(frozen=True)
class Protocol:
    """A named way of synthesising stacks, and how the loss re-renders them.

    Args:
        name: the protocol's name (the registry key, a batch's ``protocol``, ``--protocol`` and ``#PROTOCOL``).
        synthesis: the forward model that renders the stacks.
        sensor: what the sensor and codec do after it.
        loss: the forward model the self-supervised loss re-renders data of this protocol with (its
            :meth:`~defocus.optics.forward.ForwardSpec.lens` is the training config's default
            ``protocol_loss.<name>``); by default the synthesis PSF and light model on the loss's default
            ``layered`` renderer.
        description: one line for listings.
    """

    name: str
    synthesis: ForwardSpec
    sensor: SensorModel = field(default_factory=SensorModel)
    loss: ForwardSpec | None = None
    description: str = field(default="", compare=False)

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not self.name.strip() or self.name != self.name.strip():
            raise InputError(f"a protocol's name must be a non-empty word, got {self.name!r}", field="protocol")
        if self.name == "variant":
            raise InputError("'variant' names the random forward-model groups; choose another protocol name",
                             field="protocol")
        if not isinstance(self.synthesis, ForwardSpec) or not isinstance(self.sensor, SensorModel):
            raise InputError(f"protocol {self.name!r} needs a ForwardSpec and a SensorModel", field="protocol")
        if self.loss is None:
            object.__setattr__(self, "loss", ForwardSpec().with_lens_of(self.synthesis))
        elif not isinstance(self.loss, ForwardSpec) or self.loss.method != "layered":
            raise InputError(f"protocol {self.name!r}: the loss re-renders with a layered ForwardSpec",
                             field="protocol")

    def forward_model(self, camera: ThinLensCamera | None = None) -> ForwardModel:
        """The forward model that renders this protocol's stacks (with ``camera``)."""
        return ForwardModel(camera, spec=self.synthesis)

    def loss_model(self, camera: ThinLensCamera | None = None) -> ForwardModel:
        """The forward model the loss re-renders this protocol's data with."""
        return ForwardModel(camera, spec=self.loss)


#: The one protocol registry, by name, in registration order.
PROTOCOLS: dict[str, Protocol] = {}


def register_protocol(protocol: Protocol, replace: bool = False) -> Protocol:
    """Adds ``protocol`` to :data:`PROTOCOLS` (an :class:`~defocus.errors.InputError` if the name is taken, unless
    ``replace``) and returns it; from then on synthesis, the dataset adapters and the training config know it."""
    if not isinstance(protocol, Protocol):
        raise InputError(f"register_protocol takes a Protocol, got {type(protocol).__name__}", field="protocol")
    if protocol.name in PROTOCOLS and not replace:
        raise InputError(f"a protocol named {protocol.name!r} is already registered (pass replace=True)",
                         field="protocol")
    PROTOCOLS[protocol.name] = protocol
    return protocol


def unregister_protocol(name: str) -> Protocol:
    """Removes a protocol from :data:`PROTOCOLS` and returns it (for tests and plug-ins that clean up)."""
    protocol = get_protocol(name)
    del PROTOCOLS[protocol.name]
    return protocol


def protocol_names() -> tuple[str, ...]:
    """The registered protocol names, in registration order (``paper``, ``realistic``, then any added)."""
    return tuple(PROTOCOLS)


def get_protocol(protocol: "str | Protocol") -> Protocol:
    """The registered protocol of that name (a :class:`Protocol` is returned as it is); an unknown name is an
    :class:`~defocus.errors.InputError` that lists the registered ones."""
    if isinstance(protocol, Protocol):
        return protocol
    try:
        return PROTOCOLS[protocol]
    except (KeyError, TypeError):
        raise InputError(f"unknown protocol {protocol!r}; choose one of {', '.join(PROTOCOLS)}",
                         field="protocol") from None


def synthesis_forward_model(protocol: "str | Protocol", camera: ThinLensCamera) -> ForwardModel:
    """How test stacks of ``protocol`` are rendered (the optics only; the sensor is ``get_protocol(p).sensor``)."""
    return get_protocol(protocol).forward_model(camera)


register_protocol(Protocol(
    "paper",
    ForwardSpec("gaussian", "srgb", "layered", level_ratio=SYNTHESIS_LEVEL_RATIO),
    SensorModel(),
    ForwardSpec("gaussian", "srgb"),
    description="Gaussian PSF on sRGB values, exact semantics, 8-bit, no noise (the paper's)",
))
register_protocol(Protocol(
    "realistic",
    ForwardSpec("disk", "linear", "occlusion"),
    SensorModel(noise_std=REALISTIC_NOISE_STD),
    ForwardSpec("disk", "linear"),
    description=f"disk PSF in linear light with occlusion, noise σ = {REALISTIC_NOISE_STD}, 8-bit",
))


# ------------------------------------------------------------------------------------------------- rendering
def synthesize(
    aif: torch.Tensor, depth: torch.Tensor, focus_m: torch.Tensor, camera: ThinLensCamera, forward: ForwardSpec,
    sensor: SensorModel, seed: int = 0, near_psf: str | None = None, chromatic_dioptres: float = 0.0,
) -> torch.Tensor:
    """The stack ``sensor`` records of ``aif`` at ``depth`` through ``forward`` with ``camera``.

    Two lens aberrations beyond one symmetric PSF:

    * ``near_psf`` (signed spherical aberration): points nearer than the focus distance are blurred with this PSF
      family, points beyond it with ``forward.psf`` (e.g. ``core`` in front of focus, ``ring`` behind). Both
      renderings are made and each pixel takes the one of its own side of focus (exact away from the focal plane,
      where the blur of the two sides meets at zero size).
    * ``chromatic_dioptres`` (longitudinal chromatic aberration): the red channel is focused this many dioptres
      nearer, the blue one as many farther (at most to 1 km), the green one as given.

    Args:
        aif: (B, 3, H, W) sRGB in [0, 1]; depth: (B, 1, H, W) metres (> 0 everywhere); focus_m: (B, N) or (N,)
        metres; seed: of the sensor noise.
    Returns:
        (B, N, 3, H, W).
    """
    focus = torch.as_tensor(focus_m, dtype=torch.float32)
    if focus.dim() == 1:
        focus = focus[None].expand(aif.shape[0], -1)
    camera.validate_focus(focus)
    aif, depth = aif.float(), depth.float()

    # The signed aberration is the forward model's own (ForwardSpec.near_psf: each side of focus by its PSF).
    lens = ForwardModel(camera, spec=forward if near_psf is None else forward.replace(near_psf=near_psf))

    def optics(fd: torch.Tensor) -> torch.Tensor:
        return lens(aif, depth, fd)

    with torch.no_grad():
        if chromatic_dioptres:
            channels = []
            for c, shift in enumerate((chromatic_dioptres, 0.0, -chromatic_dioptres)):
                # A blue channel focused "beyond infinity" (far focus, 1/fd < shift) is focused at 1 km instead.
                fd = 1.0 / (1.0 / focus + shift).clamp_min(1e-3) if shift else focus
                camera.validate_focus(fd)
                channels.append(optics(fd)[:, :, c : c + 1])
            stack = torch.cat(channels, dim=2)
        else:
            stack = optics(focus)
    return sensor.apply(stack, seed=int(seed))


def synthesize_stack(
    aif: torch.Tensor,
    depth: torch.Tensor,
    focus_m: torch.Tensor,
    camera: ThinLensCamera,
    protocol: "str | Protocol" = "paper",
    seed: int = 0,
    quantize: bool = True,
) -> torch.Tensor:
    """Renders a focal stack as a camera would record it under a synthesis protocol.

    Args:
        aif: (B, 3, H, W) or (3, H, W) sharp sRGB image in [0, 1].
        depth: (B, 1, H, W) or (1, H, W) depth in metres, holes already filled (> 0 everywhere).
        focus_m: (N,) or (B, N) focus distances in metres.
        protocol: a name of :data:`PROTOCOLS` (``"paper"``, ``"realistic"``, ...) or a :class:`Protocol`.
        seed: seed of the sensor noise (protocols with noise only).
        quantize: the protocol's quantisation (and codec); off, the noisy, clamped float values.
    Returns:
        (B, N, 3, H, W) or (N, 3, H, W) stack in [0, 1], matching the input's batching.
    """
    p = get_protocol(protocol)
    batched = aif.dim() == 4
    if not batched:
        aif, depth = aif[None], depth[None]
    sensor = p.sensor if quantize else p.sensor.replace(bits=None, jpeg_quality=None)
    stack = synthesize(aif, depth, focus_m, camera, p.synthesis, sensor, seed=seed)
    return stack if batched else stack[0]


@dataclass(frozen=True)
class SynthesisVariant:
    """One randomised camera for training data: a forward model (:class:`~defocus.optics.forward.ForwardSpec`)
    and a sensor (:class:`~defocus.optics.sensor.SensorModel`), what a lens, a sensor and a codec may do to a stack.

    The forward model's lens (PSF, light, blur scale) describes the camera, not the scene: the loss re-renders the
    group with it (:attr:`loss`), and it is what :mod:`defocus.calibrate` estimates at test time.

    ``SynthesisVariant(forward, sensor)``; :meth:`of` builds one from flat settings.
    """

    forward: ForwardSpec = field(default_factory=lambda: ForwardSpec(level_ratio=SYNTHESIS_LEVEL_RATIO))
    sensor: SensorModel = field(default_factory=SensorModel)
    #: PSF of the points nearer than focus (signed spherical aberration, see :func:`synthesize`); None: forward.psf.
    near_psf: str | None = None
    #: Longitudinal chromatic aberration in dioptres (red focused nearer, blue farther), see :func:`synthesize`.
    chromatic_dioptres: float = 0.0

    def __post_init__(self) -> None:
        if self.near_psf is not None:
            _psf.check_psf(self.near_psf)
        c = self.chromatic_dioptres
        if not isinstance(c, (int, float)) or isinstance(c, bool) or not 0.0 <= c <= 2.0:
            raise InputError(f"the chromatic aberration must be 0-2 dioptres, got {c!r}", field="chromatic_dioptres")

    @classmethod
    def of(cls, psf: str = "gaussian", light: str = "srgb", method: str = "layered", blur_scale: float = 1.0,
           noise_std: float = 0.0, jpeg_quality: int | None = None) -> "SynthesisVariant":
        """From flat settings: the forward model (layered ones with the fine synthesis levels) and an 8-bit sensor
        with ``noise_std`` and a JPEG round trip at ``jpeg_quality`` (``None`` or 0: none)."""
        level_ratio = 1.5 if method == "occlusion" else SYNTHESIS_LEVEL_RATIO
        forward = ForwardSpec(psf, light, method, level_ratio=level_ratio, multires=False, blur_scale=blur_scale)
        return cls(forward, SensorModel(noise_std=noise_std, jpeg_quality=jpeg_quality or None))

    @property
    def loss(self) -> ForwardSpec:
        """The forward model the loss re-renders this variant's data with: its lens on the default renderer, a
        signed spherical aberration included (``near_psf``); the loss knows no chromatic aberration."""
        return ForwardSpec().with_lens_of(self.forward).replace(near_psf=self.near_psf)

    def to_dict(self) -> dict:
        return {"forward": self.forward.to_dict(), "sensor": self.sensor.to_dict(), "near_psf": self.near_psf,
                "chromatic_dioptres": self.chromatic_dioptres}

    def forward_model(self, camera: ThinLensCamera | None = None) -> ForwardModel:
        return ForwardModel(camera, spec=self.forward)

    @classmethod
    def for_protocol(cls, protocol: "str | Protocol") -> "SynthesisVariant":
        """The fixed variant of a synthesis protocol (its forward model and sensor)."""
        p = get_protocol(protocol)
        return cls(p.synthesis, p.sensor)

    @classmethod
    def random(cls, rng: np.random.Generator) -> "SynthesisVariant":
        """A random camera (the training randomisation, issue 17):

        * lens: a PSF of the registry (:data:`~defocus.optics.psf.PSF_NAMES`, drawn in registry order), a quarter
          of the time signed spherical aberration instead (``ring`` behind focus and ``core`` in front, or the
          reverse); sRGB or linear light; occlusion or not; an effective aperture 0.8–1.25× the nominal one;
          longitudinal chromatic aberration of 0.02–0.2 dioptres 30 % of the time;
        * sensor: additive noise σ 0–0.01 (none a quarter of the time); 40 % of the time each: vignetting 0–0.5,
          per-frame exposure jitter up to ±15 % (log gain), signal-dependent noise (variance 0–0.002·x in linear
          light); a power-law tone curve of γ 1.6–2.8 instead of sRGB 30 % of the time; a JPEG round trip at
          quality 70–95 half of the time.
        """
        psf = str(rng.choice(list(_psf.PSF_NAMES)))
        light = str(rng.choice(["srgb", "linear"]))
        method = "occlusion" if rng.uniform() < 0.5 else "layered"
        blur_scale = float(np.exp(rng.uniform(np.log(0.8), np.log(1.25))))
        noise = 0.0 if rng.uniform() < 0.25 else float(rng.uniform(0.0, 0.01))
        jpeg = int(rng.integers(70, 96)) if rng.uniform() < 0.5 else 0
        near_psf = None
        if rng.uniform() < 0.25:
            psf, near_psf = ("ring", "core") if rng.uniform() < 0.5 else ("core", "ring")
        chromatic = round(float(rng.uniform(0.02, 0.2)), 4) if rng.uniform() < 0.3 else 0.0
        vignetting = round(float(rng.uniform(0.0, 0.5)), 4) if rng.uniform() < 0.4 else 0.0
        jitter = round(float(rng.uniform(0.0, 0.15)), 4) if rng.uniform() < 0.4 else 0.0
        shot = round(float(rng.uniform(0.0, 0.002)), 6) if rng.uniform() < 0.4 else 0.0
        gamma = round(float(rng.uniform(1.6, 2.8)), 3) if rng.uniform() < 0.3 else None
        base = cls.of(psf, light, method, round(blur_scale, 4), round(noise, 5), jpeg)
        sensor = base.sensor.replace(vignetting=vignetting, exposure_jitter=jitter, shot_noise=shot, tone_gamma=gamma)
        return cls(base.forward, sensor, near_psf=near_psf, chromatic_dioptres=chromatic)


def synthesize_variant(
    aif: torch.Tensor, depth: torch.Tensor, focus_m: torch.Tensor, camera: ThinLensCamera,
    variant: SynthesisVariant, seed: int = 0,
) -> torch.Tensor:
    """:func:`synthesize` with the forward model, sensor and aberrations of ``variant``.

    Args: aif (B, 3, H, W), depth (B, 1, H, W) metres, focus_m (B, N) or (N,) metres. Returns (B, N, 3, H, W).
    """
    return synthesize(aif, depth, focus_m, camera, variant.forward, variant.sensor, seed=seed,
                      near_psf=variant.near_psf, chromatic_dioptres=variant.chromatic_dioptres)


def _resize(img: torch.Tensor, size: Sequence[int], mode: str) -> torch.Tensor:
    if tuple(img.shape[-2:]) == tuple(size):
        return img
    return F.interpolate(img[None], size=tuple(size), mode=mode)[0]


def stack_from_rgbd(
    rgb: torch.Tensor,
    depth_m: np.ndarray,
    focus_m: Sequence[float],
    camera: ThinLensCamera,
    protocol: "str | Protocol" = "paper",
    size: Sequence[int] | None = None,
    seed: int = 0,
    name: str = "stack",
) -> FocalStack:
    """A synthetic :class:`FocalStack` (with ground truth) from a real RGB-D pair.

    Holes (depth ≤ 0 or non-finite) are filled for rendering and kept as 0 (unknown) in the ground truth. The
    image is area-resized and the depth nearest-resized to ``size`` (H, W) first; the camera is used as given at
    that size (a preset's pixel pitch belongs to the preset's image size).

    Args:
        rgb: (3, H, W) sRGB image in [0, 1]; depth_m: (H, W) metres, 0 = unknown.
    """
    if tuple(depth_m.shape) != tuple(rgb.shape[-2:]):
        raise InputError(f"the RGB image is {rgb.shape[-1]}x{rgb.shape[-2]} but the depth is "
                         f"{depth_m.shape[1]}x{depth_m.shape[0]}", field="depth")
    filled, valid_np = fill_depth_holes(depth_m)
    size = tuple(size) if size else tuple(rgb.shape[-2:])
    rgb = _resize(rgb, size, "area")
    depth = _resize(torch.from_numpy(filled)[None], size, "nearest")
    valid = _resize(torch.from_numpy(valid_np)[None].float(), size, "nearest") > 0.5
    focus = torch.tensor(list(focus_m))
    stack = synthesize_stack(rgb, depth, focus, camera, protocol, seed=seed)
    gt_depth = np.where(valid[0].numpy(), depth[0].numpy(), 0.0).astype(np.float32)
    return FocalStack(images=stack, focus_distances_m=focus.float(), camera=camera, gt_depth=gt_depth, gt_aif=rgb,
                      name=name)


def stack_from_scene(
    rgb: torch.Tensor, depth_m: torch.Tensor, focus_m: Sequence[float], camera: ThinLensCamera,
    protocol: "str | Protocol" = "paper", seed: int = 0, name: str = "stack",
) -> FocalStack:
    """A synthetic :class:`FocalStack` (with ground truth) from a hole-free scene: rgb (3, H, W), depth (1, H, W)."""
    focus = torch.tensor(list(focus_m))
    stack = synthesize_stack(rgb, depth_m, focus, camera, protocol, seed=seed)
    return FocalStack(images=stack, focus_distances_m=focus.float(), camera=camera,
                      gt_depth=depth_m[0].numpy().astype(np.float32), gt_aif=rgb, name=name)
