"""Exposure normalisation across the frames of a stack: phones auto-expose every frame.

A frame exposed differently from the others would be read by the focus measure and the self-supervised
re-rendering as a change of blur. Every frame is brought, by one gain in linear light, to the stack's geometric-mean
exposure.

The gains are measured where defocus cannot change a value: on **flat** pixels, whose neighbourhood varies little
in every frame (so no blur, of either light model, moves light into or out of them), that no frame clips or leaves
too dark to measure. A frame's log gain is the median over those pixels of its linear log value's difference from
the pixel's mean over the frames. (Means over the whole frame would not do: a blur in sRGB values lowers the mean
linear intensity of a textured frame by several per cent, a blur in linear light raises its mean sRGB value.)

Gains within :data:`MIN_GAIN_CHANGE` of 1, or measured on too few flat pixels, are left alone: a stack of equal
exposures (tripod, synthetic) keeps its frames bit for bit. :func:`exposure_gains` measures,
:func:`normalise_exposure` applies.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from defocus.checks import check_shape
from defocus.color import linear_to_srgb, srgb_to_linear, to_grey

#: Gains closer to 1 than this (relative) are not applied: the measurement's own spread on stacks of one exposure
#: stays below it, phone auto-exposure steps go beyond it.
MIN_GAIN_CHANGE = 0.03
#: sRGB values outside these (in any frame) are too dark to measure a ratio on, or clipped.
DARK, BRIGHT = 0.08, 0.97
#: A pixel is flat where the local standard deviation of its grey sRGB value stays below this in every frame.
FLAT_STD = 0.012
#: Side of the local window of that standard deviation (at the measuring size).
FLAT_WINDOW = 9
#: Fewest flat pixels (fraction of the measured image) a measurement needs.
MIN_FLAT_FRACTION = 0.01
#: Longest side the gains are measured at (an area-resized copy).
MEASURE_SIZE = 512


def _local_std(grey: torch.Tensor, window: int) -> torch.Tensor:
    r = window // 2
    x = F.pad(grey, (r, r, r, r), mode="replicate")
    mean = F.avg_pool2d(x, window, stride=1)
    return (F.avg_pool2d(x * x, window, stride=1) - mean * mean).clamp_min(0.0).sqrt()


def exposure_gains(frames: torch.Tensor) -> torch.Tensor:
    """The linear-light gain (N,) that brings every frame of ``frames`` (N, 3, H, W) sRGB in [0, 1] to the
    stack's geometric-mean exposure (all 1 for a single frame or too few flat pixels to measure on)."""
    check_shape(frames, "N 3 H W", "frames")
    n, _, h, w = frames.shape
    if n < 2:
        return torch.ones(n)
    s = min(1.0, MEASURE_SIZE / max(h, w))
    small = frames.float()
    if s < 1.0:
        small = F.interpolate(small, size=(max(1, round(h * s)), max(1, round(w * s))), mode="area")
    flat = (_local_std(to_grey(small)[:, None], FLAT_WINDOW) < FLAT_STD).all(dim=0)[0]  # (h, w)
    usable = flat & ((small > DARK) & (small < BRIGHT)).all(dim=1).all(dim=0)
    if float(usable.float().mean()) < MIN_FLAT_FRACTION:
        return torch.ones(n)
    log_lin = torch.log(srgb_to_linear(small).clamp_min(1e-6))  # (N, 3, h, w)
    diff = (log_lin - log_lin.mean(dim=0, keepdim=True))[:, :, usable]  # (N, 3, P)
    log_gain = -diff.reshape(n, -1).median(dim=1).values
    return torch.exp(log_gain - log_gain.mean())


def normalise_exposure(frames: torch.Tensor, in_place: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    """``frames`` (N, 3, H, W) sRGB in [0, 1] with every frame at the stack's geometric-mean exposure.

    Returns (frames, gains (N,)). Where every gain is within :data:`MIN_GAIN_CHANGE` of 1 the input is returned
    as it is (and ``gains`` are those measured); otherwise a new tensor, or the input overwritten with ``in_place``
    (one frame at a time: bounded memory at 12+ MP). Gains are applied in linear light, and clipped values stay at 1.
    """
    gains = exposure_gains(frames)
    if bool((gains - 1.0).abs().max() <= MIN_GAIN_CHANGE):
        return frames, gains
    out = frames if in_place else torch.empty_like(frames)
    for i, g in enumerate(gains.tolist()):
        if math.isclose(g, 1.0, rel_tol=1e-9):
            out[i] = frames[i]
        else:
            out[i] = linear_to_srgb((srgb_to_linear(frames[i].float()) * g).clamp(0.0, 1.0)).to(frames.dtype)
    return out, gains
