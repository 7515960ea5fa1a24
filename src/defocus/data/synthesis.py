"""Focal-stack synthesis: from an RGB-D pair (or a procedural scene) to the stack a camera would record.

Two protocols (their forward models are :meth:`defocus.optics.forward.ForwardModel.for_synthesis`):

``paper``
    Gaussian PSF with the ``exact`` semantics (rendered by the ``layered`` renderer with fine levels, which agrees
    with the ``exact`` oracle to a small fraction of an 8-bit level), 8-bit output rounded half up, no noise.
``realistic``
    ``occlusion`` renderer with the ``disk`` PSF in linear light, Gaussian noise σ = 0.005 (on the [0, 1] sRGB
    values, before quantisation), 8-bit output.
"""

from __future__ import annotations

import io
from dataclasses import asdict, dataclass
from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F

from defocus.color import quantize_8bit
from defocus.data.holes import fill_depth_holes
from defocus.data.stack import FocalStack
from defocus.errors import DefocusError
from defocus.optics.camera import ThinLensCamera
from defocus.optics.forward import SYNTHESIS_LEVEL_RATIO, ForwardModel

PROTOCOLS: tuple[str, ...] = ("paper", "realistic")
REALISTIC_NOISE_STD = 0.005


def synthesize_stack(
    aif: torch.Tensor,
    depth: torch.Tensor,
    focus_m: torch.Tensor,
    camera: ThinLensCamera,
    protocol: str = "paper",
    seed: int = 0,
    quantize: bool = True,
) -> torch.Tensor:
    """Renders a focal stack as a camera would record it.

    Args:
        aif: (B, 3, H, W) or (3, H, W) sharp sRGB image in [0, 1].
        depth: (B, 1, H, W) or (1, H, W) depth in metres, holes already filled (> 0 everywhere).
        focus_m: (N,) or (B, N) focus distances in metres.
        protocol: ``"paper"`` or ``"realistic"``.
        seed: seed of the sensor noise (``realistic`` only).
        quantize: round to 8-bit levels (round half up), as stored images are.
    Returns:
        (B, N, 3, H, W) or (N, 3, H, W) stack in [0, 1], matching the input's batching.
    """
    if protocol not in PROTOCOLS:
        raise DefocusError(f"unknown protocol {protocol!r}; choose one of {', '.join(PROTOCOLS)}")
    batched = aif.dim() == 4
    if not batched:
        aif, depth = aif[None], depth[None]
    focus = torch.as_tensor(focus_m, dtype=torch.float32)
    if focus.dim() == 1:
        focus = focus[None].expand(aif.shape[0], -1)
    camera.validate_focus(focus)
    aif, depth = aif.float(), depth.float()
    physics = ForwardModel.for_synthesis(protocol, camera)
    with torch.no_grad():
        stack = physics(aif, depth, focus)
        if protocol == "realistic":
            gen = torch.Generator().manual_seed(int(seed))
            stack = stack + REALISTIC_NOISE_STD * torch.randn(stack.shape, generator=gen)
        stack = stack.clamp(0.0, 1.0)
        if quantize:
            stack = quantize_8bit(stack)
    return stack if batched else stack[0]


@dataclass(frozen=True)
class SynthesisVariant:
    """One randomised forward model for training data: what a lens, a sensor and a codec may do to a stack.

    ``psf``/``light``/``method``/``blur_scale`` are the forward model (the loss re-renders with the same ones: they
    describe the camera, not the scene, and are what :mod:`defocus.calibrate` estimates at test time);
    ``noise_std`` is Gaussian sensor noise on the [0, 1] values; ``jpeg_quality`` (0 = none) a JPEG round trip of
    every frame, after 8-bit quantisation.
    """

    psf: str = "gaussian"
    light: str = "srgb"
    method: str = "layered"
    blur_scale: float = 1.0
    noise_std: float = 0.0
    jpeg_quality: int = 0

    def to_dict(self) -> dict:
        return asdict(self)

    def forward_model(self, camera: ThinLensCamera | None = None) -> ForwardModel:
        level_ratio = 1.5 if self.method == "occlusion" else SYNTHESIS_LEVEL_RATIO
        return ForwardModel(camera, self.psf, self.light, self.method, level_ratio=level_ratio, multires=False,
                            blur_scale=self.blur_scale)

    @classmethod
    def for_protocol(cls, protocol: str) -> "SynthesisVariant":
        """The fixed variant of a synthesis protocol (``paper`` or ``realistic``)."""
        if protocol == "paper":
            return cls("gaussian", "srgb", "layered")
        if protocol == "realistic":
            return cls("disk", "linear", "occlusion", noise_std=REALISTIC_NOISE_STD)
        raise DefocusError(f"unknown protocol {protocol!r}; choose one of {', '.join(PROTOCOLS)}")

    @classmethod
    def random(cls, rng: np.random.Generator) -> "SynthesisVariant":
        """A random variant: PSF shape (Gaussian, generalised Gaussian, disk), light model, occlusion or not, an
        effective aperture 0.8–1.25× the nominal one, noise σ 0–0.01 (none a quarter of the time) and a JPEG round
        trip at quality 70–95 half of the time."""
        psf = str(rng.choice(["gaussian", "gennorm", "disk"]))
        light = str(rng.choice(["srgb", "linear"]))
        method = "occlusion" if rng.uniform() < 0.5 else "layered"
        blur_scale = float(np.exp(rng.uniform(np.log(0.8), np.log(1.25))))
        noise = 0.0 if rng.uniform() < 0.25 else float(rng.uniform(0.0, 0.01))
        jpeg = int(rng.integers(70, 96)) if rng.uniform() < 0.5 else 0
        return cls(psf, light, method, round(blur_scale, 4), round(noise, 5), jpeg)


def jpeg_round_trip(stack: torch.Tensor, quality: int) -> torch.Tensor:
    """Every frame of ``stack`` (..., 3, H, W) in [0, 1] encoded as a JPEG of ``quality`` and decoded again."""
    from PIL import Image

    from defocus.color import to_uint8

    flat = to_uint8(stack).reshape(-1, *stack.shape[-3:])
    out = []
    for frame in flat:
        buf = io.BytesIO()
        Image.fromarray(frame.permute(1, 2, 0).numpy()).save(buf, format="JPEG", quality=int(quality))
        buf.seek(0)
        out.append(torch.from_numpy(np.array(Image.open(buf).convert("RGB"))).permute(2, 0, 1))
    return (torch.stack(out).float() / 255.0).reshape(stack.shape)


def synthesize_variant(
    aif: torch.Tensor, depth: torch.Tensor, focus_m: torch.Tensor, camera: ThinLensCamera,
    variant: SynthesisVariant, seed: int = 0,
) -> torch.Tensor:
    """Like :func:`synthesize_stack`, with the forward model, noise and codec of ``variant`` (always 8-bit).

    Args: aif (B, 3, H, W), depth (B, 1, H, W) metres, focus_m (B, N) or (N,) metres. Returns (B, N, 3, H, W).
    """
    focus = torch.as_tensor(focus_m, dtype=torch.float32)
    if focus.dim() == 1:
        focus = focus[None].expand(aif.shape[0], -1)
    camera.validate_focus(focus)
    with torch.no_grad():
        stack = variant.forward_model(camera)(aif.float(), depth.float(), focus)
        if variant.noise_std > 0:
            gen = torch.Generator().manual_seed(int(seed))
            stack = stack + variant.noise_std * torch.randn(stack.shape, generator=gen)
        stack = quantize_8bit(stack.clamp(0.0, 1.0))
        if variant.jpeg_quality:
            stack = jpeg_round_trip(stack, variant.jpeg_quality)
    return stack


def _resize(img: torch.Tensor, size: Sequence[int], mode: str) -> torch.Tensor:
    if tuple(img.shape[-2:]) == tuple(size):
        return img
    return F.interpolate(img[None], size=tuple(size), mode=mode)[0]


def stack_from_rgbd(
    rgb: torch.Tensor,
    depth_m: np.ndarray,
    focus_m: Sequence[float],
    camera: ThinLensCamera,
    protocol: str = "paper",
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
        raise DefocusError(
            f"the RGB image is {rgb.shape[-1]}x{rgb.shape[-2]} but the depth is {depth_m.shape[1]}x{depth_m.shape[0]}"
        )
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
    protocol: str = "paper", seed: int = 0, name: str = "stack",
) -> FocalStack:
    """A synthetic :class:`FocalStack` (with ground truth) from a hole-free scene: rgb (3, H, W), depth (1, H, W)."""
    focus = torch.tensor(list(focus_m))
    stack = synthesize_stack(rgb, depth_m, focus, camera, protocol, seed=seed)
    return FocalStack(images=stack, focus_distances_m=focus.float(), camera=camera,
                      gt_depth=depth_m[0].numpy().astype(np.float32), gt_aif=rgb, name=name)
