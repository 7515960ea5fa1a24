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

from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F

from defocus.color import quantize_8bit
from defocus.data.holes import fill_depth_holes
from defocus.data.stack import FocalStack
from defocus.errors import DefocusError
from defocus.optics.camera import ThinLensCamera
from defocus.optics.forward import ForwardModel

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
