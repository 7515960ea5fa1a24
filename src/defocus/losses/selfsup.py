"""The fully self-supervised objective: re-render the observed stack from the prediction and compare.

All named terms of :mod:`defocus.losses.terms` are combined here, in one place, with weights from the config. The
forward model inside the loss is a :class:`~defocus.optics.forward.ForwardModel` passed with every call: the paper
uses a Gaussian PSF on sRGB values; real lenses and our ``realistic`` protocol are closer to a disk PSF in linear
light. ``LossConfig.forward`` is the config's default forward model, a
:class:`~defocus.optics.forward.ForwardSpec` (``loss.forward: {psf: gaussian, light: srgb, ...}``);
:meth:`LossConfig.forward_model` builds it. Which one re-renders each training group (the protocol's, a random
variant's) is decided by :func:`defocus.train.config.loss_spec_for`.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

import torch
from torch import nn

from defocus.errors import InputError
from defocus.losses.terms import LOSS_TERMS
from defocus.models.prediction import Prediction
from defocus.optics.forward import ForwardModel, ForwardSpec


def _paper_weights() -> dict[str, float]:
    return {"reconstruction": 1e3, "aif_vs_coarse": 1e2, "aif_sharpness": 10.0, "depth_smoothness": 10.0}


@dataclass
class LossConfig:
    """Weights of the named terms and the default forward model used to re-render (paper values by default)."""

    weights: dict[str, float] = field(default_factory=_paper_weights)
    # The default forward model of the loss (multires off, as for the shipped weights).
    forward: ForwardSpec = field(default_factory=ForwardSpec)

    def to_dict(self) -> dict:
        # The forward model as ForwardSpec writes it (no near_psf key for a symmetric lens).
        return {**asdict(self), "forward": self.forward.to_dict()}

    def forward_model(self, **overrides) -> ForwardModel:
        """The forward model of :attr:`forward`; ``overrides`` (fields of :class:`ForwardSpec`, e.g. ``psf``,
        ``light``; ``None`` keeps the config's value) replace fields."""
        return ForwardModel(spec=self.forward.replace(**{k: v for k, v in overrides.items() if v is not None}))


class SelfSupervisedLoss(nn.Module):
    """Weighted sum of the named terms; returns (total, {term: unweighted value})."""

    def __init__(self, config: LossConfig | None = None) -> None:
        super().__init__()
        self.config = config or LossConfig()
        unknown = set(self.config.weights) - set(LOSS_TERMS)
        if unknown:
            raise InputError(f"unknown loss terms {sorted(unknown)}; known: {', '.join(LOSS_TERMS)}")

    def forward(
        self,
        observed: torch.Tensor,
        pred: Prediction,
        physics: ForwardModel,
        focus: torch.Tensor,
        blur_per_dioptre: torch.Tensor,
    ) -> tuple[torch.Tensor, dict[str, float]]:
        """Args: observed (B, N, 3, H, W); the prediction; the forward model; focus and K (B, N)."""
        rendered = physics.rerender(pred.aif, pred.inv_depth, focus, blur_per_dioptre)
        total = observed.new_zeros(())
        parts: dict[str, float] = {}
        for name, weight in self.config.weights.items():
            if weight == 0:
                continue
            value = LOSS_TERMS[name](observed, pred, physics, rendered)
            total = total + weight * value
            parts[name] = float(value.detach())
        return total, parts
