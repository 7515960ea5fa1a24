"""Filling the holes of a depth map (depth sensors leave unknown pixels at occlusions and on dark or shiny surfaces)."""

from __future__ import annotations

import numpy as np

from defocus.data.codecs import as_depth_map
from defocus.errors import DefocusError


def fill_depth_holes(depth: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Fills unknown pixels of a ``(H, W)`` depth map (metres) from the nearest valid pixels.

    Valid pixels are finite and > 0. Each hole pixel takes the largest (farthest) depth among the valid pixels
    nearest to it in chessboard (8-neighbour) distance — background wins ties, which suits the occlusion shadows
    of depth sensors. Computed by repeated 3x3 max-propagation, at most max(H, W) vectorised passes.

    Returns:
        ``(filled, valid)``: float32 ``(H, W)`` with no holes left, and the bool ``(H, W)`` mask of valid input pixels.

    Raises:
        DefocusError: when no pixel is valid.
    """
    arr = as_depth_map(depth, "depth map").astype(np.float32)
    valid = np.isfinite(arr) & (arr > 0)
    if not valid.any():
        raise DefocusError("depth map has no valid pixel (all zero, negative or non-finite)")
    cur = np.where(valid, arr, -np.inf).astype(np.float32)
    known = valid.copy()
    h, w = cur.shape
    for _ in range(max(h, w)):
        if known.all():
            break
        pad = np.pad(cur, 1, mode="constant", constant_values=-np.inf)
        rows = np.maximum(np.maximum(pad[:, :-2], pad[:, 1:-1]), pad[:, 2:])  # (H+2, W) horizontal 3-max
        m = np.maximum(np.maximum(rows[:-2], rows[1:-1]), rows[2:])  # (H, W) 3x3 max
        new = ~known & np.isfinite(m)
        cur[new] = m[new]
        known |= new
    return cur, valid
