"""Depth and all-in-focus image metrics.

Depth metrics are computed **per image** over its valid pixels, then averaged over images with
:func:`mean_metrics`; depth is metric, so there is no median scaling. With ``d`` the prediction and ``g`` the
ground truth, both in metres::

    AbsRel  = mean(|d − g| / g)
    SqRel   = mean((d − g)² / g)
    RMSE    = sqrt(mean((d − g)²))                       (metres)
    RMSElog = sqrt(mean((ln d − ln g)²))                 (natural log)
    δk      = fraction of pixels with max(d/g, g/d) < 1.25^k,  k = 1, 2, 3

A pixel is valid when its ground truth is finite and > 0, lies inside ``depth_range_m`` (inclusive) when one is
given, and is set in the optional extra mask. Everything is computed in float64.

AIF metrics (:func:`psnr`, :func:`ssim`) compare RGB images in [0, 1]. SSIM uses an 11x11 Gaussian window of
σ = 1.5 px, C1 = 0.01², C2 = 0.03² (data range 1), computed per channel and averaged over channels and pixels.
For evaluation the window is applied with **'valid' padding** (no padding: only the (H−10)x(W−10) positions where
the whole window lies inside the image count), so no invented border values enter the score. The training loss
reuses :func:`ssim_map` with ``padding="reflect"`` to get a map of the input's size.
"""

from __future__ import annotations

import math
from typing import Iterable, Mapping

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from defocus.checks import check_depth_range
from defocus.errors import DefocusError

__all__ = [
    "DEPTH_METRIC_KEYS",
    "depth_metrics",
    "mean_metrics",
    "psnr",
    "ssim",
    "ssim_map",
    "SSIM",
    "gaussian_window_1d",
]

#: Keys of the dict returned by :func:`depth_metrics`, besides ``n_valid``.
DEPTH_METRIC_KEYS: tuple[str, ...] = ("abs_rel", "sq_rel", "rmse", "rmse_log", "delta1", "delta2", "delta3")

#: Predictions are clamped to at least this many metres before logs and ratios (RMSElog, δk).
MIN_DEPTH_M: float = 1e-6


def _to_tensor(x: torch.Tensor | np.ndarray, name: str) -> torch.Tensor:
    if isinstance(x, torch.Tensor):
        return x.detach()
    if isinstance(x, np.ndarray):
        return torch.from_numpy(np.ascontiguousarray(x))
    raise DefocusError(f"{name} must be a torch tensor or numpy array, got {type(x).__name__}")


def _as_hw(x: torch.Tensor | np.ndarray, name: str) -> torch.Tensor:
    """Return a (H, W) view of a (H, W), (1, H, W) or (1, 1, H, W) array."""
    t = _to_tensor(x, name)
    if t.ndim < 2 or any(s != 1 for s in t.shape[:-2]):
        raise DefocusError(f"{name} must have shape (H, W) or (1, H, W), got {tuple(t.shape)}")
    return t.reshape(t.shape[-2], t.shape[-1])


def depth_metrics(
    pred: torch.Tensor | np.ndarray,
    gt: torch.Tensor | np.ndarray,
    valid: torch.Tensor | np.ndarray | None = None,
    depth_range_m: tuple[float, float] | None = None,
) -> dict[str, float]:
    """Depth metrics of one image.

    Args:
        pred: predicted depth, (H, W) or (1, H, W), metres.
        gt: ground-truth depth, same shape, metres; 0, negative or non-finite values mark unknown pixels.
        valid: optional extra boolean mask (H, W) or (1, H, W); pixels where it is False are excluded.
        depth_range_m: optional (near, far) in metres; only ground truth inside [near, far] counts.

    Returns:
        ``{"abs_rel", "sq_rel", "rmse", "rmse_log", "delta1", "delta2", "delta3": float, "n_valid": int}``;
        rmse is in metres, the δ values are fractions in [0, 1].

    Raises:
        DefocusError: shapes that differ, an invalid depth range, no valid pixel, or a non-finite prediction on a
            valid pixel.
    """
    p = _as_hw(pred, "pred").to(torch.float64)
    g = _as_hw(gt, "gt").to(torch.float64)
    if p.shape != g.shape:
        raise DefocusError(f"pred and gt differ in size: {tuple(p.shape)} vs {tuple(g.shape)}")
    mask = torch.isfinite(g) & (g > 0)
    if depth_range_m is not None:
        near, far = check_depth_range(depth_range_m, "depth_range_m", allow_zero_near=True)
        mask &= (g >= near) & (g <= far)
    if valid is not None:
        v = _as_hw(valid, "valid")
        if v.shape != g.shape:
            raise DefocusError(f"valid mask and gt differ in size: {tuple(v.shape)} vs {tuple(g.shape)}")
        mask &= v.to(device=g.device).bool()
    p = p[mask.to(p.device)]
    g = g[mask]
    n = int(g.numel())
    if n == 0:
        raise DefocusError("no valid ground-truth pixel (gt > 0, finite, inside the depth range and the mask)")
    if not bool(torch.isfinite(p).all()):
        bad = int((~torch.isfinite(p)).sum())
        raise DefocusError(f"prediction is not finite at {bad} of {n} valid pixels")

    diff = p - g
    pc = p.clamp_min(MIN_DEPTH_M)
    ratio = torch.maximum(pc / g, g / pc)
    out = {
        "abs_rel": (diff.abs() / g).mean().item(),
        "sq_rel": (diff.square() / g).mean().item(),
        "rmse": diff.square().mean().sqrt().item(),
        "rmse_log": (pc.log() - g.log()).square().mean().sqrt().item(),
    }
    for k in (1, 2, 3):
        out[f"delta{k}"] = (ratio < 1.25**k).to(torch.float64).mean().item()
    out["n_valid"] = n
    return out


def mean_metrics(per_image: Iterable[Mapping[str, float]]) -> dict[str, float]:
    """Average per-image metric dicts over images (each image weighs the same).

    Args:
        per_image: dicts as returned by :func:`depth_metrics` (or any dicts of numbers with the same keys).

    Returns:
        The mean of every key over the images, except ``n_valid`` which is summed (total valid pixels); plus
        ``n_images``.

    Raises:
        DefocusError: an empty list or dicts with different keys.
    """
    items = list(per_image)
    if not items:
        raise DefocusError("no per-image metrics to average")
    keys = list(items[0].keys())
    for i, d in enumerate(items[1:], start=1):
        if set(d.keys()) != set(keys):
            raise DefocusError(f"metric dict {i} has keys {sorted(d.keys())}, expected {sorted(keys)}")
    out: dict[str, float] = {}
    for k in keys:
        vals = [float(d[k]) for d in items]
        out[k] = int(sum(vals)) if k == "n_valid" else math.fsum(vals) / len(vals)
    out["n_images"] = len(items)
    return out


# ----------------------------------------------------------------------------------------------- AIF metrics ---


def _as_bchw(x: torch.Tensor | np.ndarray, name: str) -> torch.Tensor:
    t = _to_tensor(x, name)
    if t.ndim == 3:
        t = t.unsqueeze(0)
    if t.ndim != 4:
        raise DefocusError(f"{name} must have shape (C, H, W) or (B, C, H, W), got {tuple(t.shape)}")
    return t


def _pair(pred: torch.Tensor | np.ndarray, target: torch.Tensor | np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
    p = _as_bchw(pred, "pred").to(torch.float64)
    t = _as_bchw(target, "target").to(torch.float64)
    if p.shape != t.shape:
        raise DefocusError(f"pred and target differ in shape: {tuple(p.shape)} vs {tuple(t.shape)}")
    if p.numel() == 0:
        raise DefocusError("empty image")
    return p, t.to(p.device)


def psnr(pred: torch.Tensor | np.ndarray, target: torch.Tensor | np.ndarray, max_val: float = 1.0) -> float:
    """Peak signal-to-noise ratio in dB, ``10·log10(max_val² / MSE)``.

    Args:
        pred, target: images (C, H, W) or (B, C, H, W), values in [0, max_val].
        max_val: peak value (1.0 for images in [0, 1]).

    Returns:
        PSNR per image, averaged over the batch (``inf`` when an image is reproduced exactly).
    """
    p, t = _pair(pred, target)
    mse = (p - t).square().flatten(1).mean(1)
    vals = 10.0 * torch.log10(float(max_val) ** 2 / mse)  # mse == 0 gives +inf
    return vals.mean().item()


def gaussian_window_1d(
    window_size: int = 11, sigma: float = 1.5, dtype: torch.dtype = torch.float32, device=None
) -> torch.Tensor:
    """Normalised 1-D Gaussian window (window_size,), centred, summing to 1."""
    x = torch.arange(window_size, dtype=torch.float64) - (window_size - 1) / 2
    w = torch.exp(-(x**2) / (2.0 * sigma**2))
    return (w / w.sum()).to(dtype=dtype, device=device)


def ssim_map(
    x: torch.Tensor,
    y: torch.Tensor,
    window_size: int = 11,
    sigma: float = 1.5,
    padding: str = "valid",
    c1: float = 0.01**2,
    c2: float = 0.03**2,
) -> torch.Tensor:
    """Per-pixel, per-channel SSIM map; differentiable in both inputs.

    Local means, variances and covariance use a separable normalised Gaussian window (``window_size`` odd,
    ``sigma`` px) on each channel independently; ``SSIM = (2μxμy + C1)(2σxy + C2) / ((μx² + μy² + C1)(σx² + σy² + C2))``.

    Args:
        x, y: images (B, C, H, W) with data range 1 (C1, C2 assume that range).
        window_size: odd window width in pixels (11 for the loss and the metrics).
        sigma: Gaussian standard deviation in pixels (1.5).
        padding: ``"valid"`` — no padding, output (B, C, H − ws + 1, W − ws + 1); ``"reflect"`` — the input is
            reflect-padded by ``ws // 2`` so the output is (B, C, H, W).
        c1, c2: stabilising constants (0.01², 0.03²).

    Returns:
        SSIM map in the dtype of the inputs.
    """
    if not isinstance(x, torch.Tensor) or not isinstance(y, torch.Tensor):
        raise DefocusError("ssim_map expects torch tensors")
    if x.ndim != 4 or x.shape != y.shape:
        raise DefocusError(f"ssim_map expects two (B, C, H, W) tensors of one shape, got {tuple(x.shape)}, {tuple(y.shape)}")
    if window_size < 1 or window_size % 2 == 0:
        raise DefocusError(f"SSIM window size must be a positive odd integer, got {window_size}")
    if padding not in ("valid", "reflect"):
        raise DefocusError(f"SSIM padding must be 'valid' or 'reflect', got {padding!r}")
    b, c, h, w = x.shape
    r = window_size // 2
    if padding == "valid" and (h < window_size or w < window_size):
        raise DefocusError(f"image {h}x{w} is smaller than the {window_size}x{window_size} SSIM window")
    if padding == "reflect" and (h <= r or w <= r):
        raise DefocusError(f"image {h}x{w} is too small to reflect-pad by {r} px for SSIM")

    g = gaussian_window_1d(window_size, sigma, dtype=x.dtype, device=x.device)
    kx = g.view(1, 1, 1, window_size).expand(5 * c, 1, 1, window_size)
    ky = g.view(1, 1, window_size, 1).expand(5 * c, 1, window_size, 1)
    # Filter x, y, x², y², xy in one grouped convolution pass.
    stacked = torch.cat([x, y, x * x, y * y, x * y], dim=1)
    if padding == "reflect" and r > 0:
        stacked = F.pad(stacked, (r, r, r, r), mode="reflect")
    filt = F.conv2d(F.conv2d(stacked, kx, groups=5 * c), ky, groups=5 * c)
    mu_x, mu_y, exx, eyy, exy = filt.split(c, dim=1)
    mu_xx, mu_yy, mu_xy = mu_x * mu_x, mu_y * mu_y, mu_x * mu_y
    var_x = exx - mu_xx
    var_y = eyy - mu_yy
    cov = exy - mu_xy
    num = (2 * mu_xy + c1) * (2 * cov + c2)
    den = (mu_xx + mu_yy + c1) * (var_x + var_y + c2)
    return num / den


class SSIM(nn.Module):
    """Module form of :func:`ssim_map` (kornia style): ``SSIM(**options)(x, y) == ssim_map(x, y, **options)``."""

    def __init__(self, window_size: int = 11, sigma: float = 1.5, padding: str = "valid",
                 c1: float = 0.01**2, c2: float = 0.03**2) -> None:
        super().__init__()
        self.options = {"window_size": window_size, "sigma": sigma, "padding": padding, "c1": c1, "c2": c2}

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return ssim_map(x, y, **self.options)

    def extra_repr(self) -> str:
        return ", ".join(f"{k}={v!r}" for k, v in self.options.items())


def ssim(pred: torch.Tensor | np.ndarray, target: torch.Tensor | np.ndarray) -> float:
    """Mean SSIM of AIF images, computed in float64.

    11x11 Gaussian window, σ = 1.5, C1 = 0.01², C2 = 0.03², 'valid' padding; the map is averaged over channels
    and pixels of each image, then over the batch.

    Args:
        pred, target: images (C, H, W) or (B, C, H, W) in [0, 1], H and W >= 11.

    Returns:
        SSIM in [-1, 1]; 1 for identical images.
    """
    p, t = _pair(pred, target)
    m = ssim_map(p, t, window_size=11, sigma=1.5, padding="valid")
    return m.flatten(1).mean(1).mean().item()
