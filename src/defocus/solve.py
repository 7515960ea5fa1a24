"""A global, edge-aware least-squares solve: a map from confident samples, smooth inside surfaces, sharp at edges.

:func:`edge_aware_solve` finds the map x (B, 1, H, W) that minimises

    E(x) = Σ_p c_p (x_p − t_p)²  +  λ Σ_{p~q} w_pq (x_p − x_q)²,      w_pq = exp(−(g_p − g_q)² / (2 σ²))

over the whole image: a data term pulling x to the target t where the confidence c says the target is known, and a
smoothness term over 4-neighbour pairs whose weight w falls where the guide image g (the all-in-focus image, grey)
has an edge. Where c is 0 (no focus cue: a texture-less wall) x is the weighted harmonic interpolation of its
surroundings — a surface spanned between its borders, not a nearest-neighbour fill, and exact for planes (a linear
function satisfies the discrete Laplace equation) — and depth edges stay where image edges are. This is the weighted
least squares of Lischinski et al. (2006) / Farbman et al. (2008) with an exponential edge weight, as used for depth
completion and the fast bilateral solver's problem.

The normal equations (C + λ L_w) x = C t (L_w the guide-weighted graph Laplacian) are symmetric positive definite
for any c ≥ 0 once a tiny floor is added to c, and are solved matrix-free by Jacobi-preconditioned conjugate
gradients on a coarse-to-fine pyramid (each level starts from the upsampled coarser solution), so that information
travels across large texture-less regions in a few iterations; memory is a handful of maps of the image size. The
solve is an inference step (no gradient is defined through it).

The balance of the two terms depends on the resolution: for a surface x(u) sampled on an n-pixel-wide grid the data
term grows as n² while Σ (x_p − x_q)² stays the same (the gradient per pixel shrinks as 1/n over n² pixels), so one λ
smooths a 2000-pixel working image 40 times less, relative to its size, than a 320-pixel one — the same scene
would come out speckled at one working size and smooth at another. :func:`resolution_smoothness` gives the λ at
the solve's size from a λ defined at a reference size, scaled by (n / n_ref)², so that the result is a property
of the scene rather than of the working size.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from defocus.checks import check_shape
from defocus.errors import InputError
from defocus.filters import guided_upsample

#: Floor of the data weight: keeps the system positive definite where no pixel of a connected region has a cue.
CONFIDENCE_FLOOR = 1e-6
#: A pyramid level is not made smaller than this (pixels, shorter side).
MIN_LEVEL_SIZE = 16
#: The guided upsampling of a solve run below the input's size (``max_size``): window radius in solved pixels and
#: ε in (guide units)².
UPSAMPLE_RADIUS = 2
UPSAMPLE_EPS = 1e-4


def resolution_smoothness(smoothness: float, size: tuple[int, int], reference_size: int) -> float:
    """λ at an image of ``size`` (h, w) px for a ``smoothness`` λ defined at an image whose longer side is
    ``reference_size`` px: λ · (max(h, w) / reference_size)² (module docstring: the same smoothing relative to the
    image's extent at every resolution)."""
    if not reference_size > 0:
        raise InputError(f"reference_size must be > 0, got {reference_size}")
    return float(smoothness) * (max(size) / reference_size) ** 2


def edge_weights(guide: torch.Tensor, edge_sigma: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Smoothness weights of the horizontal and vertical neighbour pairs: exp(−Δg² / 2σ²), summed over channels.

    Args:
        guide: (B, C, H, W) guide image (values of order 1, e.g. grey in [0, 1]).
        edge_sigma: σ, the guide difference at which a pair's weight has fallen to e^(−1/2).
    Returns:
        (wx (B, 1, H, W − 1), wy (B, 1, H − 1, W)).
    """
    dx = (guide[..., :, 1:] - guide[..., :, :-1]).pow(2).sum(1, keepdim=True)
    dy = (guide[..., 1:, :] - guide[..., :-1, :]).pow(2).sum(1, keepdim=True)
    s2 = 2.0 * edge_sigma * edge_sigma
    return torch.exp(-dx / s2), torch.exp(-dy / s2)


def _laplacian(x: torch.Tensor, wx: torch.Tensor, wy: torch.Tensor) -> torch.Tensor:
    """L_w x: (L x)_p = Σ_q w_pq (x_p − x_q) over the 4-neighbours q of p inside the image."""
    fx = wx * (x[..., :, 1:] - x[..., :, :-1])  # flux between horizontal neighbours
    fy = wy * (x[..., 1:, :] - x[..., :-1, :])
    out = torch.zeros_like(x)
    out[..., :, :-1] -= fx
    out[..., :, 1:] += fx
    out[..., :-1, :] -= fy
    out[..., 1:, :] += fy
    return out


def _degree(wx: torch.Tensor, wy: torch.Tensor, shape: torch.Size) -> torch.Tensor:
    """Σ_q w_pq per pixel: the diagonal of L_w."""
    deg = torch.zeros(shape, dtype=wx.dtype, device=wx.device)
    deg[..., :, :-1] += wx
    deg[..., :, 1:] += wx
    deg[..., :-1, :] += wy
    deg[..., 1:, :] += wy
    return deg


def _conjugate_gradients(
    target: torch.Tensor, conf: torch.Tensor, wx: torch.Tensor, wy: torch.Tensor, smoothness: float,
    x0: torch.Tensor, iterations: int, tolerance: float,
) -> torch.Tensor:
    """Jacobi-preconditioned CG on (C + λ L_w) x = C t, per batch element, from ``x0``."""

    def apply(v: torch.Tensor) -> torch.Tensor:
        return conf * v + smoothness * _laplacian(v, wx, wy)

    def dot(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        return (a * b).sum(dim=(1, 2, 3), keepdim=True)

    inv_diag = 1.0 / (conf + smoothness * _degree(wx, wy, conf.shape))
    rhs = conf * target
    x = x0.clone()
    r = rhs - apply(x)
    z = inv_diag * r
    p = z.clone()
    rz = dot(r, z)
    stop = tolerance * tolerance * dot(rhs, rhs).clamp_min(1e-30)
    for _ in range(iterations):
        if bool((dot(r, r) <= stop).all()):
            break
        ap = apply(p)
        alpha = rz / dot(p, ap).clamp_min(1e-30)
        x = x + alpha * p
        r = r - alpha * ap
        z = inv_diag * r
        rz_new = dot(r, z)
        p = z + (rz_new / rz.clamp_min(1e-30)) * p
        rz = rz_new
    return x


@torch.no_grad()
def edge_aware_solve(
    target: torch.Tensor,
    confidence: torch.Tensor,
    guide: torch.Tensor,
    smoothness: float = 1.0,
    edge_sigma: float = 0.05,
    iterations: int = 60,
    tolerance: float = 1e-5,
    levels: int | None = None,
    fine_iterations: int = 15,
    robust_scale: float | torch.Tensor | None = None,
    robust_iterations: int = 2,
    max_size: int | None = None,
) -> torch.Tensor:
    """The minimiser of the module docstring's E(x), coarse to fine; optionally with a robust data term.

    Args:
        target: (B, 1, H, W) the values to follow where they are confident (e.g. inverse depth in dioptres).
        confidence: (B, 1, H, W) data weights ≥ 0 (0 = unknown); only their ratio to ``smoothness`` matters.
        guide: (B, C, H, W) guide image (e.g. the grey AIF in [0, 1]); edges in it stop the smoothing.
        smoothness: λ ≥ 0, the weight of the smoothness term (0 returns the target).
        edge_sigma: σ > 0 of the edge weight, in guide units.
        iterations: CG iterations at the coarsest level; each finer level, which starts from the coarser solution
            and has only fine detail left to settle, gets half as many as the one before but at least
            ``fine_iterations`` (the finest levels cost most: this bounds the time at a few full-size passes).
        tolerance: relative residual at which a level stops early.
        levels: pyramid levels below full size (default: halvings while the shorter side stays ≥ 16 px).
        robust_scale: None for the least-squares data term; else the residual scale ρ > 0 in the target's units
            (a number, or a (B, 1, H, W) map of them: e.g. ρ·|t| for a relative scale on inverse depth; on log
            depth a number is already relative), and the data term becomes Cauchy's c_p ρ_p² ln(1 + (r_p / ρ_p)²)
            of the residual r_p = x_p − t_p, minimised by ``robust_iterations`` re-solves with the data weight
            c_p / (1 + (r_p / ρ_p)²) (iteratively reweighted least squares). A confident target that disagrees
            with the smooth surface its neighbours span (an isolated speckle) then loses its pull instead of
            denting the surface.
        max_size: None to solve at the input's size; else the longest side (px) the system is solved at: a larger
            input is reduced by a factor s (area: the targets as a confidence-weighted mean, the confidences and the
            guide as means), solved with λ s² (the same energy on the coarser grid, :func:`resolution_smoothness`),
            and brought back to the input's size by a guided upsampling on the guide, so that the iteration counts
            that converge at ``max_size`` converge at every input size and the cost stays bounded.
    Returns:
        (B, 1, H, W) in the dtype of ``target``.
    Raises:
        ShapeError: shapes that do not match; InputError: a negative smoothness, a non-positive σ.
    """
    sizes = check_shape(target, "B 1 H W", "target")
    check_shape(confidence, "B 1 H W", "confidence", sizes)
    check_shape(guide, "B * H W", "guide", sizes)
    if not smoothness >= 0:
        raise InputError(f"smoothness must be >= 0, got {smoothness}")
    if not edge_sigma > 0:
        raise InputError(f"edge_sigma must be > 0, got {edge_sigma}")
    if isinstance(robust_scale, torch.Tensor):
        check_shape(robust_scale, "B 1 H W", "robust_scale", sizes)
        if not bool((robust_scale > 0).all()):
            raise InputError("robust_scale must be > 0 everywhere (or None)")
    elif robust_scale is not None and not robust_scale > 0:
        raise InputError(f"robust_scale must be > 0 (or None), got {robust_scale}")
    if max_size is not None and not max_size >= MIN_LEVEL_SIZE:
        raise InputError(f"max_size must be >= {MIN_LEVEL_SIZE} px (or None), got {max_size}")
    if smoothness == 0:
        return target.clone()
    dtype = target.dtype
    t = target.to(torch.float64 if dtype == torch.float64 else torch.float32)
    c = confidence.to(t.dtype).clamp_min(0.0) + CONFIDENCE_FLOOR
    g = guide.to(t.dtype)
    h, w = t.shape[-2:]
    if max_size is not None and max(h, w) > max_size:
        scale = max_size / max(h, w)
        size = (max(1, round(h * scale)), max(1, round(w * scale)))
        c_small = F.interpolate(c, size=size, mode="area")
        t_small = F.interpolate(c * t, size=size, mode="area") / c_small
        g_small = F.interpolate(g, size=size, mode="area")
        rho = robust_scale
        if isinstance(rho, torch.Tensor):
            rho = F.interpolate(rho.to(t.dtype), size=size, mode="area")
        x = edge_aware_solve(t_small, c_small - CONFIDENCE_FLOOR, g_small, smoothness * scale * scale, edge_sigma,
                             iterations, tolerance, levels, fine_iterations, rho, robust_iterations)
        # Window of 2 solved pixels, ε at the grey levels of an edge the solve stops at (σ ≈ 0.01–0.05).
        return guided_upsample(x, g_small.mean(1, keepdim=True), g.mean(1, keepdim=True),
                               radius=UPSAMPLE_RADIUS, eps=UPSAMPLE_EPS).to(dtype)
    x = _solve_pyramid(t, c, g, smoothness, edge_sigma, iterations, tolerance, levels, fine_iterations)
    if robust_scale is not None:
        scale = robust_scale.to(t.dtype) if isinstance(robust_scale, torch.Tensor) else robust_scale
        for _ in range(robust_iterations):
            weight = 1.0 / (1.0 + ((x - t) / scale).pow(2))
            x = _solve_pyramid(t, c * weight + CONFIDENCE_FLOOR, g, smoothness, edge_sigma, iterations, tolerance,
                               levels, fine_iterations)
    return x.to(dtype)


def _solve_pyramid(t: torch.Tensor, c: torch.Tensor, g: torch.Tensor, smoothness: float, edge_sigma: float,
                   iterations: int, tolerance: float, levels: int | None, fine_iterations: int) -> torch.Tensor:
    """One least-squares solve, coarse to fine (arguments as :func:`edge_aware_solve`'s, already checked)."""
    h, w = t.shape[-2:]
    if levels is None:
        levels = 0
        while min(h, w) >> (levels + 1) >= MIN_LEVEL_SIZE:
            levels += 1
    # The pyramid: c·t and c are averaged (a confidence-weighted mean of the targets), the guide by area.
    pyramid = [(t, c, g)]
    for _ in range(levels):
        t_l, c_l, g_l = pyramid[-1]
        ct = F.avg_pool2d(c_l * t_l, 2, ceil_mode=True)
        c_n = F.avg_pool2d(c_l, 2, ceil_mode=True)
        pyramid.append((ct / c_n, c_n, F.avg_pool2d(g_l, 2, ceil_mode=True)))
    x = None
    for depth, (t_l, c_l, g_l) in enumerate(reversed(pyramid)):
        wx, wy = edge_weights(g_l, edge_sigma)
        its = iterations if depth == 0 else max(fine_iterations, iterations >> depth)
        if x is None:  # coarsest level: start from the confidence-weighted mean of the target
            mean = (c_l * t_l).sum(dim=(2, 3), keepdim=True) / c_l.sum(dim=(2, 3), keepdim=True)
            x = mean.expand_as(t_l).clone()
        else:
            x = F.interpolate(x, size=t_l.shape[-2:], mode="bilinear", align_corners=False)
        x = _conjugate_gradients(t_l, c_l, wx, wy, smoothness, x, its, tolerance)
    return x


class EdgeAwareSolve(nn.Module):
    """:func:`edge_aware_solve` as a module: ``EdgeAwareSolve(smoothness, edge_sigma)(target, confidence, guide)``."""

    def __init__(self, smoothness: float = 1.0, edge_sigma: float = 0.05, iterations: int = 60,
                 robust_scale: float | torch.Tensor | None = None, max_size: int | None = None) -> None:
        super().__init__()
        self.smoothness, self.edge_sigma, self.iterations = smoothness, edge_sigma, iterations
        self.robust_scale, self.max_size = robust_scale, max_size

    def forward(self, target: torch.Tensor, confidence: torch.Tensor, guide: torch.Tensor) -> torch.Tensor:
        return edge_aware_solve(target, confidence, guide, self.smoothness, self.edge_sigma, self.iterations,
                                robust_scale=self.robust_scale, max_size=self.max_size)

    def extra_repr(self) -> str:
        return (f"smoothness={self.smoothness}, edge_sigma={self.edge_sigma}, iterations={self.iterations}, "
                f"robust_scale={self.robust_scale}, max_size={self.max_size}")
