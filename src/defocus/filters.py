"""Edge-aware filters: box filtering, the guided filter, guided upsampling and confidence-weighted filling.

Used by the real-photo path of ``defocus predict``: depth is estimated at a working size and brought back to the
photo's full resolution with its edges on the image's edges (He, Sun and Tang's guided filter, ECCV 2010 / TPAMI
2013, and its "fast" form for upsampling, arXiv 1505.00996: the linear coefficients are computed at low resolution
and applied to the full-resolution guide), and regions without a focus cue are filled from confident neighbours
along the image's edges.

Shapes: images and maps are (B, C, H, W) float tensors; guides are (B, 1, H, W) grey images in [0, 1].
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from defocus.checks import check_shape
from defocus.errors import DefocusError


def box_filter(x: torch.Tensor, radius: int | torch.Tensor) -> torch.Tensor:
    """Mean over the (2r+1)² window around each pixel, the window clipped at the image border (O(1) per pixel).

    Args:
        x: (B, C, H, W).
        radius: r ≥ 0 in pixels; or a 0-d integer tensor r ≥ 1 (unchecked: a radius computed from the image size
            inside a traced graph, see :func:`confidence_fill`).
    """
    check_shape(x, "B C H W", "box_filter input")
    if not isinstance(radius, torch.Tensor):
        if radius < 0:
            raise DefocusError(f"box filter radius must be >= 0, got {radius}")
        if radius == 0:
            return x
    h, w = x.shape[-2:]

    def along(t: torch.Tensor, dim: int, n: int) -> torch.Tensor:
        c = torch.cumsum(t.double(), dim=dim)
        c = torch.cat([torch.zeros_like(c.narrow(dim, 0, 1)), c], dim=dim)  # c[k] = sum of the first k values
        idx = torch.arange(n, device=t.device)
        hi = (idx + radius + 1).clamp(max=n)
        lo = (idx - radius).clamp(min=0)
        shape = [1] * t.dim()
        shape[dim] = n
        return (c.index_select(dim, hi) - c.index_select(dim, lo)) / (hi - lo).to(c.dtype).reshape(shape)

    return along(along(x, 2, h), 3, w).to(x.dtype)


def guided_filter_coefficients(
    guide: torch.Tensor, src: torch.Tensor, radius: int, eps: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """The guided filter's mean linear coefficients (a, b): output = a·guide + b.

    Args:
        guide: (B, 1, H, W) grey guide; src: (B, C, H, W) the map to filter; radius in pixels; eps the
            regularisation (in guide units²: larger smooths across weaker edges).
    """
    sizes = check_shape(guide, "B 1 H W", "guide")
    check_shape(src, "B C H W", "source", sizes)
    mean_i = box_filter(guide, radius)
    mean_p = box_filter(src, radius)
    cov_ip = box_filter(guide * src, radius) - mean_i * mean_p
    var_i = box_filter(guide * guide, radius) - mean_i * mean_i
    a = cov_ip / (var_i + eps)
    b = mean_p - a * mean_i
    return box_filter(a, radius), box_filter(b, radius)


def guided_filter(guide: torch.Tensor, src: torch.Tensor, radius: int, eps: float) -> torch.Tensor:
    """Edge-preserving smoothing of ``src`` (B, C, H, W) guided by ``guide`` (B, 1, H, W)."""
    a, b = guided_filter_coefficients(guide, src, radius, eps)
    return a * guide + b


def guided_upsample(
    src_low: torch.Tensor, guide_low: torch.Tensor, guide_high: torch.Tensor, radius: int = 4, eps: float = 1e-3
) -> torch.Tensor:
    """Brings a low-resolution map to the guide's full resolution with its edges on the guide's edges.

    The fast guided filter: coefficients (a, b) are computed at low resolution, bilinearly upsampled, and applied to
    the full-resolution guide, so memory and time stay O(full-resolution pixels) with a small constant.

    Args:
        src_low: (B, C, h, w) map at the working size (e.g. inverse depth).
        guide_low: (B, 1, h, w) the guide at the working size (the guide_high resized to h × w).
        guide_high: (B, 1, H, W) the full-resolution guide.
        radius: window radius in low-resolution pixels; eps: regularisation (guide units²).
    Returns:
        (B, C, H, W).
    """
    sizes = check_shape(src_low, "B C h w", "low-resolution map")
    check_shape(guide_low, "B 1 h w", "low-resolution guide", sizes)
    check_shape(guide_high, "B 1 H W", "full-resolution guide", sizes)
    a, b = guided_filter_coefficients(guide_low, src_low, radius, eps)
    size = tuple(guide_high.shape[-2:])
    a = F.interpolate(a, size=size, mode="bilinear", align_corners=False)
    b = F.interpolate(b, size=size, mode="bilinear", align_corners=False)
    return a * guide_high + b


def confidence_fill(
    values: torch.Tensor, confidence: torch.Tensor, guide: torch.Tensor, threshold: float = 0.2,
    radii: tuple[int, ...] = (4, 16, 64), eps: float = 1e-3,
) -> torch.Tensor:
    """Replaces values where the confidence is low by an edge-aware average of confident neighbours.

    Normalised convolution with the guided filter as the kernel, from fine to coarse radii: at each radius the
    confidence-weighted average ``GF(w·v) / GF(w)`` (w = confidence where it is above ``threshold``, else 0) is
    computed; pixels get the finest average that has enough confident support. The result is blended with the
    input by confidence, so confident pixels keep their value.

    Args:
        values: (B, C, H, W) e.g. inverse depth; confidence: (B, 1, H, W) in [0, 1]; guide: (B, 1, H, W).
    Returns:
        (B, C, H, W).
    """
    sizes = check_shape(values, "B C H W", "values")
    check_shape(confidence, "B 1 H W", "confidence", sizes)
    check_shape(guide, "B 1 H W", "guide", sizes)
    w = torch.where(confidence >= threshold, confidence, torch.zeros_like(confidence))
    filled = values.clone()
    todo = torch.ones_like(confidence, dtype=torch.bool)
    h, wd = values.shape[-2:]
    # The radii are capped at half the longer side. As a 0-d tensor, so that an exported graph (ONNX) computes the cap
    # from the image size it is given rather than keeping the one it was traced with (same integers in eager mode).
    half = torch.full((), torch.sym_max(h, wd) // 2, dtype=torch.int64, device=values.device)
    for r in radii:
        r = half.clamp(min=1, max=r)  # one clamp: two in a row trip onnxscript 0.7's clip fusion (a dangling input)
        support = box_filter(w, r)
        num = guided_filter(guide, w * values, r, eps)
        den = guided_filter(guide, w, r, eps)
        ok = todo & (support > 0.05) & (den > 1e-3)
        avg = num / den.clamp_min(1e-3)
        filled = torch.where(ok, avg, filled)
        todo = todo & ~ok
    # Anything still without support gets the global confidence-weighted mean.
    global_mean = (w * values).sum(dim=(2, 3), keepdim=True) / w.sum(dim=(2, 3), keepdim=True).clamp_min(1e-12)
    filled = torch.where(todo, global_mean.expand_as(filled), filled)
    blend = (confidence / max(threshold, 1e-6)).clamp(0.0, 1.0)
    out = blend * values + (1.0 - blend) * filled
    # A stack with nothing confident to fill from keeps its values. Selected per stack (not a Python branch on the
    # whole batch's sum, which also made one stack's result depend on the others in its batch), so that the filter
    # exports to ONNX; for one stack, or a batch where every stack has support, the result is the same as before.
    has_support = w.sum(dim=(1, 2, 3), keepdim=True) > 0
    return torch.where(has_support, out, values)


def immerkaer_response(grey: torch.Tensor) -> torch.Tensor:
    """Absolute response of ``grey`` (..., H, W) to Immerkær's 3 × 3 mask [[1, −2, 1], [−2, 4, −2], [1, −2, 1]]
    (which cancels planes and is blind to smooth image structure), over the valid region: (..., H − 2, W − 2).

    The mask is separable, [1, −2, 1] along x then along y; written with slices rather than a float64 conv2d /
    avg_pool2d, which ONNX Runtime's CPU provider does not implement (the classical prior exports to ONNX). Used by
    the noise estimate of the classical baseline and by the texture feature of the confidence calibration.
    """
    rows = grey[..., :-2] - 2.0 * grey[..., 1:-1] + grey[..., 2:]
    return (rows[..., :-2, :] - 2.0 * rows[..., 1:-1, :] + rows[..., 2:, :]).abs()

