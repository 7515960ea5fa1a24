"""Differentiable defocus renderers: all-in-focus image + depth + focus distances → focal stack.

Three methods, one function each; :class:`defocus.optics.forward.ForwardModel` is the one interface, the object that
holds a camera, a PSF, a light model and one of these methods (its ``method`` picks the function):

``exact``
    The reference and test oracle. Every source pixel q spreads its own normalised kernel k_q; each output pixel
    is normalised by the weight it received, and only pixels inside the image contribute:
    ``out(p) = Σ_q k_q(p − q)·I(q) / Σ_q k_q(p − q)``. No truncation (the window holds ≥ 3.5σ of the widest
    kernel, or the whole image) and no dead zone (see :mod:`defocus.optics.psf`). Memory stays O(image) thanks to a
    hand-written backward pass; time is O(image × window²), so it is for small images and for checking.

``layered``
    The fast path for training, with the same semantics. Each per-pixel kernel is written as a blend of a few fixed
    kernels, ``k_q ≈ Σ_j w_j(q)·G_j``, with w_j interpolating linearly in blur *variance* (σ² or r²) between
    neighbouring levels (so the blend has exactly the right second moment, and d out / d depth ≠ 0 for every blur
    > 0); then ``out = Σ_j G_j ⋆ (w_j·I) / Σ_j G_j ⋆ w_j`` — a handful of ordinary zero-padded convolutions, depth
    edges included.

``occlusion``
    For synthesis of realistic data: the scene is cut into soft layers in inverse depth, each layer blurred with
    its own PSF and composited back to front ("over") in linear light, so that a blurred foreground spreads over the
    background and not the other way round. Differentiable in the image only (layer assignment is piecewise
    constant in depth).

What each method needs of a PSF comes from its :class:`~defocus.optics.psf.PsfFamily` in the registry (kernel,
CoC → size rule, first level, separable 1-D kernel, exact-renderer weights); a method a family does not list in its
``renderers`` is an :class:`~defocus.errors.InputError`.

Shapes: aif (B, C, H, W) in [0, 1]; depth (B, 1, H, W) metres; focus (B, N) metres → stack (B, N, C, H, W).
"""

from __future__ import annotations

import math
from typing import Sequence

import torch
import torch.nn.functional as F

from defocus.checks import check_shape
from defocus.color import linear_to_srgb, srgb_to_linear
from defocus.errors import InputError
from defocus.optics.camera import ThinLensCamera, blur_px_from_inverse_depth
from defocus.optics.psf import RENDERERS, ExactWeights, PsfFamily, blur_size_px, get_psf, psf_kernel_window

RENDER_METHODS: tuple[str, ...] = RENDERERS


# ------------------------------------------------------------------------------------------------ input checks
def _check_inputs(aif: torch.Tensor, depth: torch.Tensor, focus: torch.Tensor) -> torch.Tensor:
    """Checks shapes and values; returns focus as (B, N) in the AIF's dtype ((N,) is shared by the batch)."""
    sizes = check_shape(aif, "B C H W", "aif")
    check_shape(depth, "B 1 H W", "depth", sizes)
    focus = torch.as_tensor(focus, dtype=aif.dtype, device=aif.device)
    if focus.dim() == 1:
        focus = focus[None].expand(sizes["B"], -1)
    check_shape(focus, "B N", "focus", sizes)
    if focus.shape[1] < 1:
        raise InputError("focus must hold at least one distance per stack", field="focus")
    if not torch.isfinite(focus).all() or (focus <= 0).any():
        raise InputError("focus distances must be finite and positive", field="focus")
    if (depth.detach() <= 0).any() or not torch.isfinite(depth.detach()).all():
        raise InputError("depth must be finite and positive everywhere (fill holes before rendering)", field="depth")
    return focus


# -------------------------------------------------------------------------------------------------------- exact
def _slices(off: int, size: int) -> tuple[slice, slice]:
    """(source, target) slices along one axis for a shift by ``off`` with zero fill."""
    if off >= 0:
        return slice(0, size - off), slice(off, size)
    return slice(-off, size), slice(0, size + off)


class _ScatterNormalize(torch.autograd.Function):
    """out(p) = Σ_q W_{p−q}(q)·I(q) / Σ_q W_{p−q}(q), looping over offsets; backward recomputes the weights.

    Memory is O(image) whatever the window; the gradient w.r.t. the kernel parameters is accumulated offset by
    offset by the PSF family's own ``accumulate_grad`` (``family`` is its :class:`~defocus.optics.psf.ExactWeights`).
    """

    @staticmethod
    def forward(ctx, image, radius_y, radius_x, family: ExactWeights, *params):  # type: ignore[override]
        b, n = params[-1].shape[-5:-3]
        _, _, c, h, w = image.shape
        num = image.new_zeros(b, n, c, h, w)
        den = image.new_zeros(b, n, 1, h, w)
        for dy in range(-radius_y, radius_y + 1):
            sy, ty = _slices(dy, h)
            for dx in range(-radius_x, radius_x + 1):
                sx, tx = _slices(dx, w)
                wgt = family.weight(params, dy, dx)[..., sy, sx]
                num[..., ty, tx] += wgt * image[..., sy, sx]
                den[..., ty, tx] += wgt
        out = num / den
        ctx.save_for_backward(image, den, out, *params)
        ctx.radius = (radius_y, radius_x)
        ctx.family = family
        return out

    @staticmethod
    def backward(ctx, grad_out):  # type: ignore[override]
        image, den, out, *params = ctx.saved_tensors
        radius_y, radius_x = ctx.radius
        family = ctx.family
        _, _, c, h, w = image.shape
        g_num = grad_out / den  # dL/d num
        g_den = -(grad_out * out).sum(dim=2, keepdim=True) / den  # dL/d den
        need_image = ctx.needs_input_grad[0]
        need_params = any(ctx.needs_input_grad[4:])
        g_image = torch.zeros_like(image) if need_image else None
        g_params = [torch.zeros_like(p) for p in params]
        for dy in range(-radius_y, radius_y + 1):
            sy, ty = _slices(dy, h)
            for dx in range(-radius_x, radius_x + 1):
                sx, tx = _slices(dx, w)
                gn = g_num[..., ty, tx]
                if need_image:
                    wgt = family.weight(params, dy, dx)[..., sy, sx]
                    g_image[..., sy, sx] += (wgt * gn).sum(dim=1, keepdim=True)
                if need_params:
                    g_w = (image[..., sy, sx] * gn).sum(dim=2, keepdim=True) + g_den[..., ty, tx]
                    family.accumulate_grad(params, g_params, g_w, sy, sx, dy, dx)
        param_grads = [g if need else None for g, need in zip(g_params, ctx.needs_input_grad[4:])]
        return (g_image, None, None, None, *param_grads)


def render_exact(
    aif: torch.Tensor, depth: torch.Tensor, focus: torch.Tensor, camera: ThinLensCamera, psf: str = "gaussian"
) -> torch.Tensor:
    """Reference renderer (see module docstring) for the families with ``exact_weights`` (gaussian, disk).
    Returns (B, N, C, H, W)."""
    family = get_psf(psf).require("exact")
    focus = _check_inputs(aif, depth, focus)
    _, _, h, w = aif.shape
    size = blur_size_px(camera, depth, focus, psf)  # (B, N, 1, H, W)
    radius = family.kernel_radius(float(size.detach().max()))
    ry, rx = min(radius, h - 1), min(radius, w - 1)
    weights = family.exact_weights
    assert weights is not None  # require("exact") checked it
    params = weights.prepare(size, radius, ry, rx)
    return _ScatterNormalize.apply(aif[:, None], ry, rx, weights, *params)


# ------------------------------------------------------------------------------------------------------ layered
def default_levels(max_size_px: float, psf: str, ratio: float = 1.5) -> list[float]:
    """Blur levels 0 = s_0 < s_1 < … with s_L ≥ max_size_px: a first step, then geometric spacing by ``ratio``.

    The first step is the family's ``first_level`` (0.5; for ``disk`` the unit disk, so below one pixel the blend
    is the PSF itself).
    """
    levels = [0.0, get_psf(psf).first_level]
    while levels[-1] < max_size_px:
        levels.append(levels[-1] * ratio)
    return levels


def _interp_weights(size: torch.Tensor, levels: Sequence[float]) -> list[torch.Tensor]:
    """Hat-function weights in variance space: Σ_j w_j = 1 and Σ_j w_j·s_j² = s² (sizes clamped to the levels)."""
    var = size.clamp(max=levels[-1]) ** 2
    lv = [float(s) ** 2 for s in levels]
    weights = []
    for j, v in enumerate(lv):
        w = torch.zeros_like(var)
        if j > 0:
            rise = ((var - lv[j - 1]) / (v - lv[j - 1])).clamp(0.0, 1.0)
            w = torch.where(var <= v, rise, w)
        else:
            w = torch.where(var <= v, torch.ones_like(var), w)
        if j < len(lv) - 1:
            fall = ((lv[j + 1] - var) / (lv[j + 1] - v)).clamp(0.0, 1.0)
            w = torch.where(var > v, fall, w)
        else:
            w = torch.where(var > v, torch.ones_like(var), w)
        weights.append(w)
    return weights


def fft_conv2d_same(x: torch.Tensor, kernel: torch.Tensor) -> torch.Tensor:
    """Zero-padded 'same' 2-D convolution by FFT.

    Args:
        x: (..., H, W).
        kernel: (..., kh, kw) with odd sizes, broadcasting against x's leading dims (correlation = convolution for
            the symmetric kernels used here).
    """
    h, w = x.shape[-2:]
    kh, kw = kernel.shape[-2:]
    ph, pw = h + kh - 1, w + kw - 1
    fx = torch.fft.rfft2(x, s=(ph, pw))
    fk = torch.fft.rfft2(kernel.to(device=x.device, dtype=x.dtype), s=(ph, pw))
    y = torch.fft.irfft2(fx * fk, s=(ph, pw))
    oy, ox = (kh - 1) // 2, (kw - 1) // 2
    return y[..., oy : oy + h, ox : ox + w]


def toeplitz_blur_matrix(kernel_1d: torch.Tensor, n: int) -> torch.Tensor:
    """(n, n) matrix T with T[i, k] = kernel[i − k + R]: ``T @ x`` blurs x along its first axis with zero padding."""
    r = (kernel_1d.shape[-1] - 1) // 2
    idx = torch.arange(n)
    off = idx[:, None] - idx[None, :] + r
    inside = (off >= 0) & (off <= 2 * r)
    return torch.where(inside, kernel_1d[off.clamp(0, 2 * r)], torch.zeros((), dtype=kernel_1d.dtype))


# Wide Gaussians are blurred at half resolution: 2x2 area down-sampling (variance 1/4 px² per axis) and bilinear
# up-sampling (variance about 2/3 px²) add about 0.92 px² of blur, which is taken out of the half-resolution kernel.
HALF_RES_MIN_SIGMA = 3.0
_RESAMPLING_VARIANCE = 0.25 + 2.0 / 3.0


def _separable_blur_multires(x: torch.Tensor, sigma: float, family: PsfFamily, multires: bool = True) -> torch.Tensor:
    """Zero-padded blur of x (..., H, W) by a separable family's kernel (two banded matrix products); for a family
    whose blurs add variances (``half_resolution``, the Gaussian) a recursive half-resolution path for
    σ >= HALF_RES_MIN_SIGMA."""
    h, w = x.shape[-2:]
    if multires and family.half_resolution and sigma >= HALF_RES_MIN_SIGMA and h >= 16 and w >= 16:
        lead = x.shape[:-2]
        y = x.reshape(-1, 1, h, w)
        y = F.pad(y, (0, w % 2, 0, h % 2))  # zeros: outside the image contributes nothing
        y = F.avg_pool2d(y, 2)
        half_sigma = math.sqrt(max(sigma * sigma - _RESAMPLING_VARIANCE, 0.0)) / 2.0
        y = _separable_blur_multires(y, half_sigma, family)
        y = F.interpolate(y, scale_factor=2, mode="bilinear", align_corners=False)[..., :h, :w]
        return y.reshape(*lead, h, w)
    assert family.kernel_1d is not None
    g = family.kernel_1d(torch.tensor(sigma, dtype=torch.float64), family.kernel_radius(sigma))
    t_h = toeplitz_blur_matrix(g, h).to(device=x.device, dtype=x.dtype)
    t_w = toeplitz_blur_matrix(g, w).to(device=x.device, dtype=x.dtype)
    return torch.matmul(torch.matmul(t_h, x), t_w.T)


def _conv_level(x: torch.Tensor, size: float, psf: str, h: int, w: int, multires: bool = True) -> torch.Tensor:
    """Blurs x (..., H, W) with the fixed normalised kernel of the given size, zero padding, no truncation.

    A separable kernel (the Gaussian) is applied as two banded (Toeplitz) matrix products, which BLAS runs several
    times faster on a CPU than a depthwise convolution with a long kernel, forward and backward alike.
    """
    family = get_psf(psf)
    radius = family.kernel_radius(size)
    if family.kernel_1d is not None:
        return _separable_blur_multires(x, size, family, multires)
    ky, kx = min(radius, h - 1), min(radius, w - 1)
    k = psf_kernel_window(size, psf, radius, ky, kx)  # only what the image sees, whatever the blur
    if k.shape[-1] * k.shape[-2] <= 81:
        c = x.shape[1]
        return F.conv2d(x, k.to(device=x.device, dtype=x.dtype).expand(c, 1, -1, -1), padding=(ky, kx), groups=c)
    return fft_conv2d_same(x, k)


def render_layered(
    aif: torch.Tensor,
    depth: torch.Tensor,
    focus: torch.Tensor,
    camera: ThinLensCamera,
    psf: str = "gaussian",
    levels: Sequence[float] | None = None,
    level_ratio: float = 1.5,
    multires: bool = True,
) -> torch.Tensor:
    """Fast renderer with the ``exact`` semantics (see module docstring). Returns (B, N, C, H, W).

    Args:
        levels: blur levels in pixels (σ or radius), increasing from 0; default from the largest blur in the batch.
        level_ratio: spacing of the default levels; smaller is more accurate and slower.
        multires: blur wide Gaussian levels (σ ≥ 3 px) at half resolution, recursively: faster, and about 0.03 %
            of the mean image value less accurate; synthesis turns it off.
    """
    get_psf(psf).require("layered")
    focus = _check_inputs(aif, depth, focus)
    size = blur_size_px(camera, depth, focus, psf)  # (B, N, 1, H, W)
    return render_layered_from_blur(aif, size, psf, levels, level_ratio, multires)


def blur_from_inverse_depth(
    inv_depth: torch.Tensor, focus: torch.Tensor, blur_per_dioptre: torch.Tensor, psf: str
) -> torch.Tensor:
    """PSF size in pixels (σ or radius) from inverse depth, for a camera given per image by K = A·s/p.

    Args:
        inv_depth: (B, 1, H, W) dioptres.
        focus: (B, N) metres.
        blur_per_dioptre: (B, N) CoC diameter in pixels per dioptre (``camera.blur_per_dioptre_px(focus)``).
    Returns:
        (B, N, 1, H, W): the family's size of the CoC K·|1/fd − 1/d|
        (:func:`~defocus.optics.camera.blur_px_from_inverse_depth`): / 4 for ``gaussian``, / 2 for ``disk``.
    """
    family = get_psf(psf)
    sizes = check_shape(inv_depth, "B 1 H W", "inverse depth")
    check_shape(focus, "B N", "focus", sizes)
    check_shape(blur_per_dioptre, "B N", "blur_per_dioptre", sizes)
    return family.size_from_coc(blur_px_from_inverse_depth(inv_depth, focus, blur_per_dioptre))


def render_layered_from_blur(
    aif: torch.Tensor,
    size: torch.Tensor,
    psf: str = "gaussian",
    levels: Sequence[float] | None = None,
    level_ratio: float = 1.5,
    multires: bool = True,
) -> torch.Tensor:
    """The ``layered`` renderer given the per-pixel PSF size directly (arguments as :func:`render_layered`).

    Args:
        aif: (B, C, H, W).
        size: (B, N, 1, H, W) σ (gaussian) or radius (disk) in pixels of each source pixel in each image.
    Returns:
        (B, N, C, H, W).
    """
    get_psf(psf).require("layered")
    sizes = check_shape(aif, "B C H W", "aif")
    check_shape(size, "B N 1 H W", "blur size", sizes)
    b, c, h, w = aif.shape
    n = size.shape[1]
    if levels is None:
        levels = default_levels(float(size.detach().max()), psf, level_ratio)
    weights = _interp_weights(size, levels)
    img = aif[:, None]
    num = weights[0] * img
    den = weights[0].expand(b, n, 1, h, w)
    for s, wj in zip(levels[1:], weights[1:]):
        x = torch.cat([wj * img, wj], dim=2).reshape(b * n, c + 1, h, w)
        y = _conv_level(x, float(s), psf, h, w, multires).reshape(b, n, c + 1, h, w)
        num = num + y[:, :, :c]
        den = den + y[:, :, c:]
    return num / den.clamp_min(1e-12)


# ---------------------------------------------------------------------------------------------------- occlusion
def render_occlusion(
    aif: torch.Tensor,
    depth: torch.Tensor,
    focus: torch.Tensor,
    camera: ThinLensCamera,
    psf: str = "disk",
    linear_light: bool = True,
    layer_step_px: float = 0.5,
    max_layers: int = 64,
) -> torch.Tensor:
    """Layered back-to-front compositing with occlusion (see module docstring). Returns (B, N, C, H, W).

    Args:
        layer_step_px: spacing of the depth layers, as CoC radius difference in pixels at the widest-aperture focus.
        max_layers: cap on the number of layers.
    """
    family = get_psf(psf).require("occlusion")
    focus = _check_inputs(aif, depth, focus)
    b, c, h, w = aif.shape
    n = focus.shape[1]
    img = srgb_to_linear(aif) if linear_light else aif
    outs = []
    for i in range(b):
        inv = 1.0 / depth[i : i + 1]  # dioptres, (1, 1, H, W)
        lo, hi = float(inv.min()), float(inv.max())
        k_max = float(camera.blur_per_dioptre_px(focus[i]).max())
        span_px = (hi - lo) * k_max / 2.0  # CoC radius change across the scene
        n_layers = int(min(max_layers, max(2, math.ceil(span_px / layer_step_px) + 1)))
        if hi - lo < 1e-9:
            hi = lo + 1e-6
        layer_inv = torch.linspace(lo, hi, n_layers, dtype=torch.float64, device=aif.device)
        # Soft assignment of each pixel to its two nearest layers, linear in dioptres.
        pos = ((inv.double() - lo) / (hi - lo) * (n_layers - 1)).clamp(0, n_layers - 1)
        alphas = [(1.0 - (pos - j).abs()).clamp(min=0.0).to(aif.dtype) for j in range(n_layers)]
        # PSF size of every (layer, focus) pair.
        fd = focus[i].double()
        sizes = family.size_from_coc(camera.coc_px_from_inverse_depth(layer_inv[:, None], fd[None, :]))  # (L, N)
        half = min(family.kernel_radius(float(sizes.max())), max(h, w))
        kernels = torch.stack(
            [torch.stack([family.kernel_2d(float(sizes[l, k]), half) for k in range(n)]) for l in range(n_layers)]
        )  # (L, N, K, K)
        acc_c = img.new_zeros(n, c, h, w)
        acc_a = img.new_zeros(n, 1, h, w)
        for l in range(n_layers):  # far (small dioptres) to near
            a = alphas[l]
            if float(a.max()) <= 0:
                continue
            x = torch.cat([a * img[i : i + 1], a], dim=1)  # (1, C+1, H, W)
            y = fft_conv2d_same(x, kernels[l][:, None]).clamp_min(0.0)  # (N, C+1, H, W)
            col, cov = y[:, :c], y[:, c:].clamp(max=1.0)
            acc_c = col + (1.0 - cov) * acc_c
            acc_a = cov + (1.0 - cov) * acc_a
        out = acc_c / acc_a.clamp_min(1e-6)
        outs.append(out)
    stack = torch.stack(outs)
    return linear_to_srgb(stack) if linear_light else stack.clamp(0.0, 1.0)


# ------------------------------------------------------------------------------------------------ one interface
