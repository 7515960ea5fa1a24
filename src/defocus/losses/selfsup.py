"""The fully self-supervised objective: re-render the observed stack from the prediction and compare.

All named terms of :mod:`defocus.losses.terms` are combined here, in one place, with weights from the config.
The forward model inside the loss (PSF model, linear light) is a config choice too: the paper uses a Gaussian PSF
on sRGB values; real lenses and our ``realistic`` protocol are closer to a disk PSF in linear light (SPEC §4).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

import torch
from torch import nn

from defocus.errors import DefocusError
from defocus.losses.terms import LOSS_TERMS
from defocus.optics.render import blur_from_inverse_depth, linear_to_srgb, render_layered_from_blur, srgb_to_linear


def _paper_weights() -> dict[str, float]:
    return {"reconstruction": 1e3, "aif_vs_coarse": 1e2, "aif_sharpness": 10.0, "depth_smoothness": 10.0}


@dataclass
class LossConfig:
    """Weights of the named terms and the forward model used to re-render (paper values by default)."""

    weights: dict[str, float] = field(default_factory=_paper_weights)
    psf: str = "gaussian"
    linear_light: bool = False
    level_ratio: float = 1.5
    # Half-resolution blur of wide Gaussian levels (faster, 0.03 % less accurate); off, as for the shipped weights.
    multires: bool = False

    def to_dict(self) -> dict:
        return asdict(self)


def rerender(
    aif: torch.Tensor,
    inv_depth: torch.Tensor,
    focus: torch.Tensor,
    blur_per_dioptre: torch.Tensor,
    psf: str = "gaussian",
    linear_light: bool = False,
    level_ratio: float = 1.5,
    multires: bool = False,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Forward model of the loss: (rendered stack (B, N, 3, H, W), blur size (B, N, 1, H, W) px)."""
    blur = blur_from_inverse_depth(inv_depth, focus, blur_per_dioptre, psf)
    img = srgb_to_linear(aif) if linear_light else aif
    out = render_layered_from_blur(img, blur, psf, level_ratio=level_ratio, multires=multires)
    return (linear_to_srgb(out) if linear_light else out), blur


class SelfSupervisedLoss(nn.Module):
    """Weighted sum of the named terms; returns (total, {term: unweighted value})."""

    def __init__(self, config: LossConfig | None = None) -> None:
        super().__init__()
        self.config = config or LossConfig()
        unknown = set(self.config.weights) - set(LOSS_TERMS)
        if unknown:
            raise DefocusError(f"unknown loss terms {sorted(unknown)}; known: {', '.join(LOSS_TERMS)}")

    def forward(
        self,
        observed: torch.Tensor,
        pred: dict[str, torch.Tensor],
        focus: torch.Tensor,
        blur_per_dioptre: torch.Tensor,
        psf: str | None = None,
        linear_light: bool | None = None,
    ) -> tuple[torch.Tensor, dict[str, float]]:
        """Args: observed (B, N, 3, H, W); pred with ``aif`` and ``inv_depth``; focus and K (B, N).

        ``psf`` / ``linear_light`` override the config for this call (e.g. per data source).
        """
        cfg = self.config
        rendered, blur = rerender(
            pred["aif"],
            pred["inv_depth"],
            focus,
            blur_per_dioptre,
            psf or cfg.psf,
            cfg.linear_light if linear_light is None else linear_light,
            cfg.level_ratio,
            cfg.multires,
        )
        pred = {**pred, "blur": blur}
        total = observed.new_zeros(())
        parts: dict[str, float] = {}
        for name, weight in cfg.weights.items():
            if weight == 0:
                continue
            value = LOSS_TERMS[name](observed, rendered, pred)
            total = total + weight * value
            parts[name] = float(value.detach())
        return total, parts
