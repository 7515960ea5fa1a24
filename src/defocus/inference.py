"""Depth and all-in-focus image for one focal stack: the network, optional test-time refinement, the baseline.

Test-time refinement (``refine_steps`` > 0) optimises, on this stack alone, the per-pixel inverse-depth logits and
the AIF initialised from the network, under the same re-render-and-compare loss used for training (no ground
truth). The forward model of the refinement is a choice (``refine_psf`` / ``refine_linear_light``): the disk PSF
in linear light, our default, is closer to real lenses than the paper's Gaussian.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from defocus.data.stack_io import FocalStack, require_camera
from defocus.errors import DefocusError
from defocus.losses.selfsup import LossConfig, SelfSupervisedLoss
from defocus.models.daifnet import DAIFNet, inverse_depth_to_logit, logit_to_inverse_depth
from defocus.optics.camera import PRESETS, ThinLensCamera


def default_depth_range(camera: ThinLensCamera, focus_m: torch.Tensor) -> tuple[float, float]:
    """The depth range the network's bounded output spans for a stack.

    The range of a preset whose camera matches (same lens and pitch) — else from the focus distances: from half
    the nearest to four times the farthest, never nearer than twice the focal length.
    """
    for preset in PRESETS.values():
        c = preset.camera
        if (
            abs(c.focal_length_m - camera.focal_length_m) < 1e-9
            and abs(c.f_number - camera.f_number) < 1e-9
            and abs(c.pixel_size_m - camera.pixel_size_m) < 1e-12
        ):
            return preset.depth_range_m
    near = max(0.5 * float(focus_m.min()), 2.0 * camera.focal_length_m)
    return near, 4.0 * float(focus_m.max())


@dataclass
class Prediction:
    depth: torch.Tensor  # (H, W) metres
    aif: torch.Tensor  # (3, H, W) in [0, 1]
    confidence: torch.Tensor  # (H, W) in [0, 1]


def refine(
    stack: torch.Tensor,
    focus: torch.Tensor,
    blur_per_dioptre: torch.Tensor,
    depth_range: tuple[float, float],
    init_inv_depth: torch.Tensor,
    init_aif: torch.Tensor,
    steps: int,
    psf: str = "disk",
    linear_light: bool = True,
    lr: float = 0.05,
    aif_lr: float = 0.005,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-stack self-supervised optimisation of (inverse depth, AIF); shapes as :class:`DAIFNet` outputs."""
    inv_near, inv_far = 1.0 / depth_range[0], 1.0 / depth_range[1]
    logit = inverse_depth_to_logit(init_inv_depth, inv_near, inv_far).detach().requires_grad_(True)
    aif_logit = torch.logit(init_aif.clamp(1e-3, 1 - 1e-3)).detach().requires_grad_(True)
    loss_fn = SelfSupervisedLoss(LossConfig(psf=psf, linear_light=linear_light))
    # The AIF moves slowly: the network's AIF is already good, and a fast AIF would fit the sensor noise.
    opt = torch.optim.Adam([{"params": [logit], "lr": lr}, {"params": [aif_logit], "lr": aif_lr}])
    for _ in range(steps):
        inv = logit_to_inverse_depth(logit, inv_near, inv_far)
        pred = {"aif": torch.sigmoid(aif_logit), "inv_depth": inv}
        loss, _ = loss_fn(stack, pred, focus, blur_per_dioptre)
        opt.zero_grad()
        loss.backward()
        opt.step()
    with torch.no_grad():
        return logit_to_inverse_depth(logit, inv_near, inv_far), torch.sigmoid(aif_logit)


@torch.no_grad()
def predict_stack(
    model: DAIFNet,
    stack: FocalStack,
    depth_range: tuple[float, float] | None = None,
    refine_steps: int = 0,
    refine_psf: str = "disk",
    refine_linear_light: bool = True,
) -> Prediction:
    """Runs the network (and optional refinement) on one stack at its own resolution."""
    camera = require_camera(stack)
    fd = stack.focus_distances_m.float()[None]
    k = camera.blur_per_dioptre_px(fd.double()).float()
    dr = depth_range or default_depth_range(camera, stack.focus_distances_m)
    if not (0 < dr[0] < dr[1]):
        raise DefocusError(f"depth range must satisfy 0 < near < far, got {dr}")
    images = stack.images[None].float()
    model.eval()
    out = model(images, fd, k, torch.tensor([dr], dtype=torch.float32))
    inv, aif = out["inv_depth"], out["aif"]
    if refine_steps > 0:
        with torch.enable_grad():
            inv, aif = refine(images, fd, k, dr, inv, aif, refine_steps, refine_psf, refine_linear_light)
    return Prediction(depth=(1.0 / inv)[0, 0], aif=aif[0], confidence=out["confidence"][0, 0])
