"""Colour rules, written once: luma, the sRGB transfer curves and 8-bit quantisation.

Images are sRGB-encoded values in [0, 1] (the stored 8-bit values / 255). Every function takes a torch tensor or a
numpy array and returns the same kind.
"""

from __future__ import annotations

from typing import TypeVar

import numpy as np
import torch

from defocus.errors import DefocusError

Array = TypeVar("Array", torch.Tensor, np.ndarray)

#: Rec. 601 luma weights (R, G, B), applied to the encoded values.
LUMA_WEIGHTS: tuple[float, float, float] = (0.299, 0.587, 0.114)


def to_grey(images: Array) -> Array:
    """Luma of (..., 3, H, W) images (or the single channel of (..., 1, H, W) ones): (..., H, W)."""
    c = images.shape[-3]
    if c == 1:
        return images[..., 0, :, :]
    if c != 3:
        raise DefocusError(f"images must have 1 or 3 channels, got {c}")
    r, g, b = LUMA_WEIGHTS
    return r * images[..., 0, :, :] + g * images[..., 1, :, :] + b * images[..., 2, :, :]


def srgb_to_linear(x: Array) -> Array:
    """Decodes sRGB-encoded values to linear light (inputs clipped to [0, 1])."""
    if isinstance(x, np.ndarray):
        x = np.clip(x, 0.0, 1.0)
        return np.where(x <= 0.04045, x / 12.92, ((x + 0.055) / 1.055) ** 2.4)
    x = x.clamp(0.0, 1.0)
    return torch.where(x <= 0.04045, x / 12.92, ((x + 0.055) / 1.055) ** 2.4)


def linear_to_srgb(x: Array) -> Array:
    """Encodes linear light to sRGB (inputs clipped to [0, 1]); finite gradient everywhere."""
    if isinstance(x, np.ndarray):
        x = np.clip(x, 0.0, 1.0)
        return np.where(x <= 0.0031308, x * 12.92, 1.055 * np.maximum(x, 0.0031308) ** (1.0 / 2.4) - 0.055)
    x = x.clamp(0.0, 1.0)
    return torch.where(x <= 0.0031308, x * 12.92, 1.055 * x.clamp_min(0.0031308) ** (1.0 / 2.4) - 0.055)


def to_uint8(x: Array) -> Array:
    """floor(clamp(x, 0, 1) · 255 + 0.5) as uint8 (round half up, as stored images are), same shape."""
    if isinstance(x, np.ndarray):
        return np.floor(np.clip(x.astype(np.float32), 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)
    return torch.floor(x.detach().to(torch.float32).clamp(0.0, 1.0) * 255.0 + 0.5).to(torch.uint8)


def quantize_8bit(x: torch.Tensor) -> torch.Tensor:
    """The float32 tensor that saving as 8-bit and reading back gives: values rounded half up to 1/255 steps."""
    return to_uint8(x).to(torch.float32) / 255.0
