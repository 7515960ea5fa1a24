"""Classical depth-from-focus baseline: a plain function and a thin module, both behind the model factory.

It runs side by side with the learned model in every evaluation, and DAIF-Net takes its estimate as an input
prior. Units: focus distances and depth in metres, images float in [0, 1] (sRGB-encoded, as stored).

Method, per stack:

1. Grey image ``I = 0.299 R + 0.587 G + 0.114 B`` of each frame (Rec. 601 luma on the encoded values).
2. Focus measure: the sum-modified Laplacian (SML)::

       ML(x, y)  = |2I − I(x−1, y) − I(x+1, y)| + |2I − I(x, y−1) − I(x, y+1)|     (replicate padding)
       SML(x, y) = Σ ML over the window x window box centred on (x, y)           (replicate padding)

3. Frames are sorted by dioptre ``1/fd`` (so any input order gives the same answer); per pixel the frame with the
   largest SML wins.
4. Sub-frame refinement by 3-point Gaussian interpolation in dioptres: a Gaussian ``F ∝ exp(−(x − x̂)² / 2s²)``
   through the winner and its two neighbours in dioptre is a parabola through ``(x_i, ln F_i)``; its vertex ``x̂`` is
   found with the general 3-point formula, so non-uniform dioptre spacing is handled exactly. At the ends of the
   stack, or when the fit is degenerate (flat, repeated dioptres) the winner's own dioptre is kept.
5. Dioptres are clamped to the stack's dioptre range (and to ``depth_range_m`` if given); ``depth = 1 / dioptres``.
6. AIF: every pixel is copied from its sharpest frame. Confidence: ``(max − mean) / max`` of the SML across the
   stack, in [0, 1] — 0 where the stack has no focus cue (flat texture, or a single frame).
"""

from __future__ import annotations

import math
from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from defocus.checks import check_depth_range, check_shape
from defocus.color import to_grey
from defocus.errors import DefocusError
from defocus.filters import confidence_fill, immerkaer_response
from defocus.models.prediction import Prediction

__all__ = [
    "ClassicalEstimator",
    "classical_depth_from_focus",
    "sum_modified_laplacian",
    "gaussian_presmooth",
    "estimate_noise_sigma",
    "choose_presmooth_sigma",
]

#: Estimated grey-level noise σ (on [0, 1] values) from which the focus measure is computed on pre-smoothed images.
#: Measured with :func:`estimate_noise_sigma`: clean 8-bit stacks (`paper` protocol, procedural and real RGB-D) give
#: 0.0000-0.0008, the `realistic` protocol (σ = 0.005 per channel) 0.0031-0.0035; the threshold sits between.
NOISE_PREFILTER_THRESHOLD = 0.0015
#: The pre-filter used on noisy stacks (σ in pixels).
NOISY_PRESMOOTH_SIGMA = 1.0

_LOG_EPS = 1e-12  # added to the focus measure before its log
_CONF_EPS = 1e-12


def gaussian_presmooth(grey: torch.Tensor, sigma: float) -> torch.Tensor:
    """Separable Gaussian blur (replicate padding, radius ceil(2σ)) of grey images (..., H, W); σ <= 0: identity."""
    if sigma <= 0:
        return grey
    r = max(1, int(math.ceil(2.0 * sigma)))
    t = torch.arange(-r, r + 1, dtype=grey.dtype, device=grey.device)
    g = torch.exp(-(t * t) / (2.0 * sigma * sigma))
    g = g / g.sum()
    lead, (h, w) = grey.shape[:-2], grey.shape[-2:]
    x = grey.reshape(-1, 1, h, w)
    x = F.conv2d(F.pad(x, (r, r, 0, 0), mode="replicate"), g.view(1, 1, 1, -1))
    x = F.conv2d(F.pad(x, (0, 0, r, r), mode="replicate"), g.view(1, 1, -1, 1))
    return x.reshape(*lead, h, w)


def sum_modified_laplacian(grey: torch.Tensor, window: int = 9) -> torch.Tensor:
    """Sum-modified Laplacian focus measure.

    Args:
        grey: grey images (..., H, W), any leading shape.
        window: odd box size in pixels over which the modified Laplacian is summed.

    Returns:
        SML (..., H, W), same dtype; >= 0, larger where the image is sharper.
    """
    if not isinstance(window, int) or window < 1 or window % 2 == 0:
        raise DefocusError(f"focus-measure window must be a positive odd integer, got {window!r}")
    lead = grey.shape[:-2]
    h, w = grey.shape[-2:]
    x = grey.reshape(-1, 1, h, w)
    p = F.pad(x, (1, 1, 1, 1), mode="replicate")
    c2 = 2.0 * x
    ml = (c2 - p[..., 1:-1, :-2] - p[..., 1:-1, 2:]).abs() + (c2 - p[..., :-2, 1:-1] - p[..., 2:, 1:-1]).abs()
    r = window // 2
    if r > 0:
        ml = F.pad(ml, (r, r, r, r), mode="replicate")
        ml = F.avg_pool2d(ml, (1, window), stride=1)
        ml = F.avg_pool2d(ml, (window, 1), stride=1) * float(window * window)
    return ml.reshape(*lead, h, w)


def _check_inputs(
    images: torch.Tensor | np.ndarray, focus_m: torch.Tensor | np.ndarray | Sequence[float]
) -> tuple[torch.Tensor, torch.Tensor, bool]:
    if isinstance(images, np.ndarray):
        images = torch.from_numpy(np.ascontiguousarray(images))
    if not isinstance(images, torch.Tensor):
        raise DefocusError(f"images must be a tensor, got {type(images).__name__}")
    if not images.is_floating_point():
        raise DefocusError(f"images must be floating point in [0, 1], got dtype {images.dtype}")
    batched = images.ndim == 5
    if images.ndim not in (4, 5):
        raise DefocusError(f"images must have shape (N, 3, H, W) or (B, N, 3, H, W), got {tuple(images.shape)}")
    imgs = images if batched else images.unsqueeze(0)
    b, n, c, h, w = imgs.shape
    if n < 1 or b < 1 or h < 1 or w < 1:
        raise DefocusError(f"empty focal stack, shape {tuple(images.shape)}")
    if c not in (1, 3):
        raise DefocusError(f"images must have 3 (RGB) channels, got shape {tuple(images.shape)}")
    if not bool(torch.isfinite(imgs).all()):
        raise DefocusError("images contain non-finite values")

    try:
        foc = torch.as_tensor(focus_m, dtype=torch.float64)
    except (TypeError, ValueError, RuntimeError):
        raise DefocusError(f"focus distances must be numbers in metres, got {focus_m!r}") from None
    foc = foc.to(imgs.device)
    if foc.ndim == 1 and foc.shape[0] == n:
        foc = foc.unsqueeze(0).expand(b, n)
    elif not (batched and foc.ndim == 2 and tuple(foc.shape) == (b, n)):
        want = f"({n},) or ({b}, {n})" if batched else f"({n},)"
        raise DefocusError(f"focus distances must have shape {want} to match {n} images, got {tuple(foc.shape)}")
    if not bool((torch.isfinite(foc) & (foc > 0)).all()):
        raise DefocusError(f"focus distances must be finite and positive metres, got {foc.tolist()}")
    return imgs, foc, batched


def _gaussian_peak(
    x0: torch.Tensor, x1: torch.Tensor, x2: torch.Tensor, y0: torch.Tensor, y1: torch.Tensor, y2: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Vertex of the parabola through (x0, y0), (x1, y1), (x2, y2) with y1 the largest; returns (vertex, ok).

    ``ok`` is False where the fit is unusable: repeated abscissae, a flat triple, or a non-finite result.
    """
    dx0 = x1 - x0  # > 0 for sorted distinct dioptres
    dx2 = x1 - x2  # < 0
    dy0 = y1 - y0  # >= 0 since y1 is the maximum
    dy2 = y1 - y2  # >= 0
    num = dx0 * dx0 * dy2 - dx2 * dx2 * dy0
    den = dx0 * dy2 - dx2 * dy0  # > 0 exactly when the parabola is strictly concave (given dx0 > 0 > dx2)
    ok = (dx0 > 0) & (dx2 < 0) & (den > 0)
    vertex = x1 - 0.5 * num / torch.where(ok, den, torch.ones_like(den))
    ok &= torch.isfinite(vertex)
    vertex = torch.minimum(torch.maximum(vertex, x0), x2)  # mathematically inside [x0, x2]; guard rounding
    return vertex, ok


def classical_depth_from_focus(
    images: torch.Tensor | np.ndarray,
    focus_m: torch.Tensor | np.ndarray | Sequence[float],
    window: int = 9,
    depth_range_m: tuple[float, float] | None = None,
    presmooth_sigma: float = 1.0,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Depth, AIF and confidence from a focal stack by the classical SML + Gaussian-interpolation method.

    The grey images are smoothed by a small Gaussian (``presmooth_sigma`` px, 0 to switch off) before the
    modified Laplacian: without it, sensor noise of σ = 0.005 dominates the focus measure in flat regions and the
    baseline's AbsRel on `realistic` NYU stacks triples (0.33 instead of 0.15); on noise-free stacks it changes
    little. We keep the baseline as strong as it honestly can be.

    Args:
        images: focal stack (N, 3, H, W) or batched (B, N, 3, H, W), float in [0, 1]; any N >= 1, any order.
        focus_m: focus distance of each frame in metres, (N,) or (B, N) (a (N,) vector is shared by the batch).
        window: odd box size (pixels) of the sum-modified Laplacian.
        presmooth_sigma: standard deviation (pixels) of the Gaussian pre-filter of the grey images.
        depth_range_m: optional (near, far) in metres the depth is clamped to.

    Returns:
        ``(depth, aif, confidence)``: depth (1, H, W) metres, aif (3, H, W) in the images' range, confidence
        (1, H, W) in [0, 1]; with a leading batch dimension B for batched input. Dtype of the images.
        With N = 1 the depth is the focus distance everywhere and the confidence 0.

    Raises:
        DefocusError: bad shapes, non-floating or non-finite images, focus distances that are not finite and
            positive, a bad window or depth range.
    """
    imgs, foc, batched = _check_inputs(images, focus_m)
    if depth_range_m is not None:
        near, far = check_depth_range(depth_range_m, "depth_range_m")
    with torch.no_grad():
        clamp = None if depth_range_m is None else (1.0 / far, 1.0 / near)
        depth, aif, conf = dff_core(imgs, foc, window, presmooth_sigma, clamp)
    if not batched:
        return depth[0], aif[0], conf[0]
    return depth, aif, conf


def _prefiltered_grey(imgs: torch.Tensor, presmooth_sigma: float | str) -> torch.Tensor:
    """Grey images (B, N, H, W) of (B, N, C, H, W) stacks, pre-filtered by ``presmooth_sigma`` pixels, or with
    ``"auto"`` by the pre-filter :func:`choose_presmooth_sigma` picks for each stack's estimated noise. The choice
    is made per stack by selection (both versions are computed), not by Python branches on tensor values, so that
    the function traces into an exported graph (ONNX) with any batch."""
    grey = to_grey(imgs)
    if presmooth_sigma != "auto":
        return gaussian_presmooth(grey, float(presmooth_sigma))
    noisy = estimate_noise_sigma(imgs) >= NOISE_PREFILTER_THRESHOLD  # (B,) bool
    smooth = gaussian_presmooth(grey, NOISY_PRESMOOTH_SIGMA)
    return torch.where(noisy[:, None, None, None], smooth, grey)


def normalised_cue(confidence: torch.Tensor, n: int | torch.Tensor) -> torch.Tensor:
    """The focus cue in [0, 1]: the classical confidence (fmax − mean)/fmax of the focus measure over the stack
    divided by its largest possible value 1 − 1/N, so that one threshold serves every N (N = 1: the confidence, and
    so the cue, is 0). ``confidence`` (B, 1, H, W); ``n`` the stack length, an int or a (B, 1, 1, 1) tensor."""
    top = 1.0 - 1.0 / n
    top = top.clamp_min(1e-6) if isinstance(top, torch.Tensor) else max(top, 1e-6)
    return (confidence / top).clamp(0.0, 1.0)


def dff_core(
    imgs: torch.Tensor, focus: torch.Tensor, window: int = 9, presmooth_sigma: float | str = 1.0,
    dioptre_clamp: tuple[float, float] | None = None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The tensor path of :func:`classical_depth_from_focus`, without input checks: imgs (B, N, C, H, W) float,
    focus (B, N) metres (any float dtype; computed in float64), ``presmooth_sigma`` pixels or ``"auto"``,
    ``dioptre_clamp`` (low, high) optional. Returns (depth (B, 1, H, W), aif (B, C, H, W), confidence (B, 1, H, W)).

    Written without Python control flow on tensor values or on the stack length (N = 1 and 2 fall out of the
    general 3-point code: the fit is rejected there), so that DAIF-Net's prior exports to ONNX with a dynamic N.
    """
    b, n, c, h, w = imgs.shape
    foc = focus.to(torch.float64)
    fm = sum_modified_laplacian(_prefiltered_grey(imgs, presmooth_sigma), window)  # (B, N, H, W)
    diop = 1.0 / foc  # (B, N) float64
    diop_sorted, order = torch.sort(diop, dim=1)
    fm_sorted = fm.gather(1, order.view(b, n, 1, 1).expand(b, n, h, w))
    fmax, i = fm_sorted.max(dim=1)  # (B, H, W)
    flat_i = i.view(b, h * w)
    src = order.gather(1, flat_i).view(b, h, w)  # index of the sharpest frame in the input order
    x1 = diop_sorted.gather(1, flat_i).view(b, h, w)

    # 3-point refinement; at the ends of the stack (so everywhere when N <= 2) the fit is rejected and x1 kept.
    im = (i - 1).clamp(min=0)
    ip = torch.minimum(i + 1, torch.full_like(i, n - 1))

    def at(k: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x = diop_sorted.gather(1, k.view(b, h * w)).view(b, h, w)
        y = fm_sorted.gather(1, k.unsqueeze(1)).squeeze(1).to(torch.float64)
        return x, torch.log(y.clamp_min(0) + _LOG_EPS)

    x0, y0 = at(im)
    x2, y2 = at(ip)
    y1 = torch.log(fmax.to(torch.float64).clamp_min(0) + _LOG_EPS)
    vertex, ok = _gaussian_peak(x0, x1, x2, y0, y1, y2)
    ok &= (i > 0) & (i < n - 1)
    d_est = torch.where(ok, vertex, x1)

    lo = diop_sorted[:, :1].view(b, 1, 1)
    hi = diop_sorted[:, -1:].view(b, 1, 1)
    d_est = torch.minimum(torch.maximum(d_est, lo), hi)
    if dioptre_clamp is not None:
        d_est = d_est.clamp(*dioptre_clamp)
    depth = (1.0 / d_est).to(imgs.dtype).unsqueeze(1)  # (B, 1, H, W)

    aif = imgs.gather(1, src.view(b, 1, 1, h, w).expand(b, 1, c, h, w)).squeeze(1)  # (B, C, H, W)
    conf = ((fmax - fm.mean(dim=1)) / (fmax + _CONF_EPS)).clamp(0.0, 1.0).to(imgs.dtype).unsqueeze(1)
    return depth, aif, conf


#: On pure Gaussian noise the 10th percentile of 8 x 8 block means is 0.79-0.83 of the global mean (measured at 64 x 80
#: to 480 x 640 px, 1 and 5 frames); dividing by 0.8 makes the estimate unbiased within a few per cent.
_LOW_BLOCK_BIAS = 0.8


def estimate_noise_sigma(images: torch.Tensor) -> torch.Tensor:
    """Sensor-noise σ of each stack, from the images themselves (Immerkær, "Fast noise variance estimation", CVIU
    1996): the mean absolute response of the grey image to the 3 × 3 mask [[1, −2, 1], [−2, 4, −2], [1, −2, 1]] (which
    cancels planes and is blind to smooth image structure) times √(π/2) / 6 — taken over the flattest 10 % of 8 × 8
    blocks (texture leaks into the response), and the smallest value over the stack's frames.

    Args:
        images: (B, N, C, H, W) or (N, C, H, W) in [0, 1], H and W ≥ 3.
    Returns:
        (B,) float64, or a 0-d tensor for an unbatched stack.
    """
    batched = images.ndim == 5
    imgs = images if batched else images[None]
    b, n, c, h, w = imgs.shape
    if h < 3 or w < 3:
        raise DefocusError(f"images of {w}x{h} px are too small to estimate their noise")
    grey = to_grey(imgs.double()).reshape(b * n, h, w)
    response = immerkaer_response(grey)
    # Texture leaks into the mask's response; the flattest blocks carry the noise alone: take a low percentile of
    # the 8 x 8 block means (whole image where it is smaller).
    rh, rw = response.shape[-2:]
    block = min(8, rw, rh)
    bh, bw = rh // block, rw // block
    means = response[..., : bh * block, : bw * block].reshape(b * n, bh, block, bw, block).mean(dim=(2, 4)).flatten(1)
    low = torch.quantile(means, 0.1, dim=1) / _LOW_BLOCK_BIAS
    sigma = (math.sqrt(math.pi / 2.0) / 6.0 * low).view(b, n).amin(dim=1)
    return sigma if batched else sigma[0]


def choose_presmooth_sigma(noise_sigma: float) -> float:
    """The focus measure's pre-filter for a stack of this noise level: none on clean stacks (smoothing only blunts
    the focus cue there), :data:`NOISY_PRESMOOTH_SIGMA` from :data:`NOISE_PREFILTER_THRESHOLD` on."""
    return NOISY_PRESMOOTH_SIGMA if noise_sigma >= NOISE_PREFILTER_THRESHOLD else 0.0


class ClassicalEstimator(nn.Module):
    """:func:`classical_depth_from_focus` as a module with the same call as DAIF-Net, returning a :class:`Prediction`.

    ``presmooth_sigma="auto"`` (the default: the strongest honest baseline) picks the pre-filter per stack from the
    stack's own estimated noise (:func:`estimate_noise_sigma`, :func:`choose_presmooth_sigma`); a number fixes it.
    ``cue_fill_threshold`` > 0 adds the texture-less fill the network applies at inference (DAIFNetConfig's
    ``cue_fill_threshold``: pixels whose normalised focus cue is below it take the edge-aware average of their cued
    neighbours' inverse depth, guided by the AIF) — a variant that shows what the network adds beyond that
    non-learned step.

    ``estimator(stack, focus, blur_per_dioptre=None, depth_range=None)``: stack (B, N, 3, H, W), focus (B, N)
    metres; ``blur_per_dioptre`` is ignored (the focus measure needs no camera); ``depth_range`` (B, 2) or
    (near, far) metres clamps the depth of each stack.
    """

    #: The pipeline estimates at the input's size (within its pixel budget): the focus measure needs no particular
    #: blur per dioptre, unlike the network (see :func:`defocus.predict.working_size`).
    working_blur_per_dioptre = None

    def __init__(self, window: int = 9, presmooth_sigma: float | str = "auto", cue_fill_threshold: float = 0.0) -> None:
        super().__init__()
        if not (presmooth_sigma == "auto" or isinstance(presmooth_sigma, (int, float))):
            raise DefocusError(f"presmooth_sigma must be 'auto' or a number of pixels, got {presmooth_sigma!r}")
        if not 0.0 <= cue_fill_threshold <= 1.0:
            raise DefocusError(f"cue_fill_threshold must be in [0, 1], got {cue_fill_threshold}")
        self.window, self.presmooth_sigma = window, presmooth_sigma
        self.cue_fill_threshold = cue_fill_threshold
        self.last_presmooth_sigmas: list[float] = []  # what the last call used, per stack (for reports)

    @property
    def confidence_calibration(self):
        """The packaged calibration of the classical confidence (:mod:`defocus.confidence`), or None."""
        from defocus.models.checkpoint import packaged_calibration

        if not hasattr(self, "_calibration"):
            self._calibration = packaged_calibration("classical")
        return self._calibration

    def forward(
        self,
        stack: torch.Tensor,
        focus: torch.Tensor,
        blur_per_dioptre: torch.Tensor | None = None,
        depth_range: torch.Tensor | Sequence[float] | None = None,
    ) -> Prediction:
        sizes = check_shape(stack, "B N 3 H W", "stack")
        check_shape(torch.as_tensor(focus), "B N", "focus", sizes)
        b = sizes["B"]
        if self.presmooth_sigma == "auto":
            sigmas = [choose_presmooth_sigma(float(v)) for v in estimate_noise_sigma(stack)]
        else:
            sigmas = [float(self.presmooth_sigma)] * b
        self.last_presmooth_sigmas = sigmas
        ranges: list[tuple[float, float] | None] = [None] * b
        if depth_range is not None:
            d = torch.as_tensor(depth_range, dtype=torch.float64)
            if d.shape not in ((2,), (1, 2), (b, 2)):
                raise DefocusError(f"depth_range must be (near, far) or ({b}, 2), got shape {tuple(d.shape)}")
            d = d.reshape(-1, 2).expand(b, 2)
            ranges = [(float(d[i, 0]), float(d[i, 1])) for i in range(b)]
        if all(r == ranges[0] for r in ranges) and all(s_ == sigmas[0] for s_ in sigmas):  # one call for the batch
            depth, aif, conf = classical_depth_from_focus(stack, focus, self.window, ranges[0], sigmas[0])
        else:
            focus = torch.as_tensor(focus)
            parts = [classical_depth_from_focus(stack[i : i + 1], focus[i : i + 1], self.window, ranges[i], sigmas[i])
                     for i in range(b)]
            depth, aif, conf = (torch.cat([p[j] for p in parts]) for j in range(3))
        if self.cue_fill_threshold > 0 and sizes["N"] > 1:
            inv = confidence_fill(1.0 / depth, normalised_cue(conf, sizes["N"]), to_grey(aif)[:, None],
                                  self.cue_fill_threshold)
            lo = torch.tensor([r[0] if r else float(depth.min()) for r in ranges], dtype=depth.dtype)
            hi = torch.tensor([r[1] if r else float(depth.max()) for r in ranges], dtype=depth.dtype)
            depth = torch.minimum(torch.maximum(1.0 / inv, lo.view(-1, 1, 1, 1)), hi.view(-1, 1, 1, 1))
        return Prediction(depth=depth, aif=aif, confidence=conf)

    def extra_repr(self) -> str:
        fill = f", cue_fill_threshold={self.cue_fill_threshold}" if self.cue_fill_threshold else ""
        return f"window={self.window}, presmooth_sigma={self.presmooth_sigma}{fill}"
