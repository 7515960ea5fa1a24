"""The one result type of every estimator (DAIF-Net, the classical baseline, refinement): :class:`Prediction`."""

from __future__ import annotations

from dataclasses import dataclass, fields

import torch

from defocus.checks import check_shape


@dataclass
class Prediction:
    """Depth, all-in-focus image and confidence for a batch of stacks.

    Attributes:
        depth: (B, 1, H, W) metres.
        aif: (B, 3, H, W) in [0, 1].
        confidence: (B, 1, H, W) in [0, 1]: how clearly one image of the stack is the sharpest at each pixel.
        inv_depth: (B, 1, H, W) dioptres, 1 / depth (kept as computed: the loss and refinement work on it).
        attention: optional (B, N, 1, H, W) per-image focus weights behind the depth (DAIF-Net only).
        prior_inv_depth, prior_cue: optional (B, 1, H, W): the classical estimate DAIF-Net took as its input prior
            (dioptres) and its normalised focus cue in [0, 1]; set in training mode only, for the loss's
            ``prior_consistency`` term.
    """

    depth: torch.Tensor
    aif: torch.Tensor
    confidence: torch.Tensor
    inv_depth: torch.Tensor | None = None
    attention: torch.Tensor | None = None
    prior_inv_depth: torch.Tensor | None = None
    prior_cue: torch.Tensor | None = None

    def __post_init__(self) -> None:
        sizes = check_shape(self.depth, "B 1 H W", "depth")
        check_shape(self.aif, "B 3 H W", "aif", sizes)
        check_shape(self.confidence, "B 1 H W", "confidence", sizes)
        if self.inv_depth is None:
            self.inv_depth = 1.0 / self.depth
        check_shape(self.inv_depth, "B 1 H W", "inv_depth", sizes)
        if self.attention is not None:
            check_shape(self.attention, "B N 1 H W", "attention", sizes)
        for name in ("prior_inv_depth", "prior_cue"):
            if getattr(self, name) is not None:
                check_shape(getattr(self, name), "B 1 H W", name, sizes)

    @property
    def batch_size(self) -> int:
        return int(self.depth.shape[0])

    def __getitem__(self, i: int) -> "Prediction":
        """The prediction of stack ``i`` of the batch (still with a batch dimension of 1)."""
        return Prediction(**{f.name: (None if getattr(self, f.name) is None else getattr(self, f.name)[i : i + 1])
                             for f in fields(self)})

    def detach(self) -> "Prediction":
        return Prediction(**{f.name: (None if getattr(self, f.name) is None else getattr(self, f.name).detach())
                             for f in fields(self)})

    @property
    def depth_map(self) -> torch.Tensor:
        """(H, W) depth in metres of a single-stack prediction."""
        return self._single("depth")[0]

    @property
    def aif_image(self) -> torch.Tensor:
        """(3, H, W) AIF of a single-stack prediction."""
        return self._single("aif")

    @property
    def confidence_map(self) -> torch.Tensor:
        """(H, W) confidence of a single-stack prediction."""
        return self._single("confidence")[0]

    def _single(self, name: str) -> torch.Tensor:
        if self.batch_size != 1:
            raise ValueError(f"{name} of a batch of {self.batch_size} predictions: index one first, e.g. pred[0]")
        return getattr(self, name)[0]
