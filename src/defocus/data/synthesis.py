"""Focal-stack synthesis from an RGB-D pair under the two protocols of SPEC §2.

``paper``
    Gaussian PSF with the ``exact`` semantics (rendered by the ``layered`` renderer with fine levels, which agrees
    with the ``exact`` oracle to a small fraction of an 8-bit level), 8-bit output rounded half up, no noise.
``realistic``
    ``occlusion`` renderer with the ``disk`` PSF in linear light, Gaussian noise σ = 0.005 (on the [0, 1] sRGB
    values, before quantisation), 8-bit output.
"""

from __future__ import annotations

import torch

from defocus.data.stack_io import quantize_8bit
from defocus.errors import DefocusError
from defocus.optics.camera import ThinLensCamera
from defocus.optics.render import render_layered, render_occlusion

PROTOCOLS: tuple[str, ...] = ("paper", "realistic")
REALISTIC_NOISE_STD = 0.005
# Level spacing used for synthesis: finer than the training default, so that rendered stacks match `exact`.
SYNTHESIS_LEVEL_RATIO = 1.15


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
    with torch.no_grad():
        if protocol == "paper":
            stack = render_layered(
                aif, depth, focus, camera, "gaussian", level_ratio=SYNTHESIS_LEVEL_RATIO, multires=False
            )
        else:
            stack = render_occlusion(aif, depth, focus, camera, "disk", linear_light=True)
            gen = torch.Generator().manual_seed(int(seed))
            stack = stack + REALISTIC_NOISE_STD * torch.randn(stack.shape, generator=gen)
        stack = stack.clamp(0.0, 1.0)
        if quantize:
            stack = quantize_8bit(stack)
    return stack if batched else stack[0]
