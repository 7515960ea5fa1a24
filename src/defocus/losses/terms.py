"""Self-supervised loss terms, each a small named function with one shared signature (and a thin module).

Every term is ``term(observed, pred, physics, rendered) -> scalar``, as DeepInverse's ``loss(y, x_net, physics)``:

* ``observed``: (B, N, 3, H, W) the input focal stack;
* ``pred``: the :class:`~defocus.models.prediction.Prediction` (``aif`` (B, 3, H, W), ``inv_depth`` (B, 1, H, W));
* ``physics``: the :class:`~defocus.optics.forward.ForwardModel` that re-renders the prediction;
* ``rendered``: ``physics.rerender(pred.aif, pred.inv_depth, focus, K)``, the re-rendered stack (B, N, 3, H, W) and
  the PSF size of every image at every pixel (B, N, 1, H, W), computed once by
  :class:`~defocus.losses.selfsup.SelfSupervisedLoss` and shared by the terms.

So the self-supervised loss is literally "re-render and compare", and a term never sees ground truth. A new term is
a function with this signature added to :data:`LOSS_TERMS`; its weight then comes from the config.
Changes from the paper's code, and why:

* ``aif_sharpness`` is applied to the *predicted* AIF (in the paper's code it was computed on the coarse AIF, a
  stop-gradient tensor, so it carried no gradient at all);
* ``depth_smoothness`` acts on inverse depth divided by its mean (as Monodepth2), so its strength does not depend on
  the scene's scale or on the camera's depth range;
* the SSIM uses an 11x11 Gaussian window (σ 1.5) with reflect padding, C1 = 0.01², C2 = 0.03².
"""

from __future__ import annotations

from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn

from defocus.color import to_grey
from defocus.metrics import ssim_map
from defocus.models.prediction import Prediction
from defocus.optics.forward import ForwardModel, Rerendering

LossTerm = Callable[[torch.Tensor, Prediction, ForwardModel, Rerendering], torch.Tensor]


def _flat(x: torch.Tensor) -> torch.Tensor:
    return x.reshape(-1, *x.shape[-3:])


def photometric(a: torch.Tensor, b: torch.Tensor, alpha: float = 0.85) -> torch.Tensor:
    """alpha·(1 − SSIM) + (1 − alpha)·L1, averaged over all pixels; a, b (..., C, H, W)."""
    a, b = _flat(a), _flat(b)
    s = ssim_map(a, b, padding="reflect")
    return alpha * (1.0 - s).mean() + (1.0 - alpha) * (a - b).abs().mean()


def reconstruction(
    observed: torch.Tensor, pred: Prediction, physics: ForwardModel, rendered: Rerendering
) -> torch.Tensor:
    """Photometric mix between every re-rendered image and the observed one."""
    return photometric(rendered.stack, observed)


def coarse_aif(observed: torch.Tensor, blur: torch.Tensor) -> torch.Tensor:
    """Per pixel, the observed image with the smallest predicted blur: (B, 3, H, W), no gradient."""
    with torch.no_grad():
        idx = blur.argmin(dim=1, keepdim=True).expand(-1, -1, observed.shape[2], -1, -1)
        return observed.gather(1, idx)[:, 0]


def aif_vs_coarse(
    observed: torch.Tensor, pred: Prediction, physics: ForwardModel, rendered: Rerendering
) -> torch.Tensor:
    """Photometric mix between the predicted AIF and the coarse AIF (stop-gradient target)."""
    return photometric(pred.aif, coarse_aif(observed, rendered.blur))


_LOG_KERNEL_CACHE: dict[tuple, torch.Tensor] = {}


def _log_kernel(dtype: torch.dtype, device: torch.device, size: int = 5, sigma: float = 0.8) -> torch.Tensor:
    key = (dtype, device, size, sigma)
    if key not in _LOG_KERNEL_CACHE:
        r = torch.arange(size, dtype=torch.float64) - size // 2
        yy, xx = torch.meshgrid(r, r, indexing="ij")
        rr = (xx**2 + yy**2) / (2 * sigma**2)
        k = (rr - 1.0) * torch.exp(-rr)
        k = k - k.mean()  # zero response to constants
        _LOG_KERNEL_CACHE[key] = k.to(dtype=dtype, device=device)[None, None]
    return _LOG_KERNEL_CACHE[key]


def aif_sharpness(
    observed: torch.Tensor, pred: Prediction, physics: ForwardModel, rendered: Rerendering
) -> torch.Tensor:
    """−log of the mean Laplacian-of-Gaussian energy of the grey predicted AIF (rewards detail)."""
    grey = to_grey(pred.aif)[:, None]
    k = _log_kernel(grey.dtype, grey.device)
    response = F.conv2d(F.pad(grey, (2, 2, 2, 2), mode="reflect"), k)
    return -torch.log(response.pow(2).mean() + 1e-8)


def depth_smoothness(
    observed: torch.Tensor, pred: Prediction, physics: ForwardModel, rendered: Rerendering
) -> torch.Tensor:
    """Edge-aware smoothness of mean-normalised inverse depth, ×2.5 as in the paper's code."""
    inv = pred.inv_depth
    inv = inv / inv.mean(dim=(2, 3), keepdim=True).clamp_min(1e-6)
    aif = pred.aif.detach()
    dx = (inv[..., :, 1:] - inv[..., :, :-1]).abs()
    dy = (inv[..., 1:, :] - inv[..., :-1, :]).abs()
    wx = torch.exp(-(aif[..., :, 1:] - aif[..., :, :-1]).abs().mean(1, keepdim=True))
    wy = torch.exp(-(aif[..., 1:, :] - aif[..., :-1, :]).abs().mean(1, keepdim=True))
    return 2.5 * ((dx * wx).mean() + (dy * wy).mean())


#: Pixels whose normalised focus cue is at least this count in :func:`prior_consistency` (the cue-fill threshold).
PRIOR_CUE_THRESHOLD = 0.5


def prior_consistency(
    observed: torch.Tensor, pred: Prediction, physics: ForwardModel, rendered: Rerendering
) -> torch.Tensor:
    """Mean |log inverse depth − log classical prior| over the pixels whose focus cue is clear, weighted by the cue.

    A pseudo-label from the stack itself (no ground truth): where the focus measure has a clear peak, its 3-point fit
    is an accurate estimate, and the re-rendering error alone does not stop the network from drifting from it.
    Zero for predictions without a prior (the classical model, the ablation, eval mode)."""
    if pred.prior_inv_depth is None or pred.prior_cue is None:
        return pred.inv_depth.sum() * 0.0
    w = torch.where(pred.prior_cue >= PRIOR_CUE_THRESHOLD, pred.prior_cue, torch.zeros_like(pred.prior_cue))
    diff = (pred.inv_depth.clamp_min(1e-6).log() - pred.prior_inv_depth.clamp_min(1e-6).log()).abs()
    return (w * diff).sum() / w.sum().clamp_min(1.0)


LOSS_TERMS: dict[str, LossTerm] = {
    "reconstruction": reconstruction,
    "aif_vs_coarse": aif_vs_coarse,
    "aif_sharpness": aif_sharpness,
    "depth_smoothness": depth_smoothness,
    "prior_consistency": prior_consistency,
}


class _Term(nn.Module):
    """Thin module around a term function (kornia style): ``module(...) == function(...)``."""

    function: LossTerm

    def forward(
        self, observed: torch.Tensor, pred: Prediction, physics: ForwardModel, rendered: Rerendering
    ) -> torch.Tensor:
        return type(self).function(observed, pred, physics, rendered)


class Reconstruction(_Term):
    """Module form of :func:`reconstruction`."""

    function = staticmethod(reconstruction)


class AifVsCoarse(_Term):
    """Module form of :func:`aif_vs_coarse`."""

    function = staticmethod(aif_vs_coarse)


class AifSharpness(_Term):
    """Module form of :func:`aif_sharpness`."""

    function = staticmethod(aif_sharpness)


class DepthSmoothness(_Term):
    """Module form of :func:`depth_smoothness`."""

    function = staticmethod(depth_smoothness)


class PriorConsistency(_Term):
    """Module form of :func:`prior_consistency`."""

    function = staticmethod(prior_consistency)
