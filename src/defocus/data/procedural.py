"""Procedural RGB-D scenes: the embedded default data for training, tests and the demo.

Every scene is a deterministic function of ``(seed, height, width, depth_range_m)``: all randomness comes from one
``numpy.random.default_rng(seed)``, so the same arguments give bit-identical tensors on every machine, and no file
or download is needed.

A scene is built in three steps:

1. **Background** (the farthest surface). Either a textured *far wall* (nearly constant depth in the farthest part
   of the range, sometimes slightly tilted) or a *slanted plane* such as a floor or an oblique wall, whose inverse
   depth varies linearly across the image (that is what a plane looks like through a pinhole). Regular patterns on
   a plane are drawn in perspective (they get finer with distance, and fade out where they would alias).
2. **Dead leaves.** 10–40 occluding shapes (discs, ellipses and rectangles, randomly rotated) whose size ``r``
   follows the power law ``p(r) ∝ 1/r³`` between 6 % and 60 % of ``sqrt(H·W)`` — many small shapes and a
   few large ones, the scale-invariant statistics of natural images. Each shape sits at its own depth, drawn
   uniformly in **inverse** depth over the whole range, and about a third of them are slanted (a linear
   inverse-depth gradient across the shape). Shapes are painted far to near with a per-pixel depth test, so nearer
   surfaces always occlude farther ones (slanted shapes and the background plane intersect correctly) and depth has
   sharp occlusion edges. The colour edges are anti-aliased (area coverage), the depth edges are not (a pixel takes
   the depth of the surface covering its centre).
3. **Appearance.** Each surface gets one texture: coloured 1/f noise (white noise shaped in the Fourier domain,
   amplitude ∝ 1/f^α with α ~ U(1.0, 1.8)), stripes or a checker board at a random period and orientation (some
   warped by noise, like wood or fabric), or — for about 15 % of surfaces, as in real rooms — a plain colour with
   only slight shading. Colours are drawn in sRGB with mostly moderate saturation, and a fine grain is added to
   many textured surfaces. Finally a mild global illumination gradient, vignetting and an exposure factor are
   applied in linear light, and the image is encoded back to sRGB and clipped to [0, 1].

Conventions: depth in metres, images sRGB-encoded float32 in [0, 1] (like a stored 8-bit photo / 255),
tensors ``rgb (3, H, W)`` and ``depth (1, H, W)`` for one scene, ``(B, 3, H, W)`` / ``(B, 1, H, W)`` for a batch.
"""

from __future__ import annotations

import math
import numbers
from typing import Iterable, Sequence

import numpy as np
import torch

from defocus.color import linear_to_srgb, srgb_to_linear
from defocus.checks import check_depth_range
from defocus.errors import DefocusError

__all__ = [
    "make_scene",
    "make_scenes",
    "DEFAULT_DEPTH_RANGE_M",
    "SCENE_DEPTH_RANGE_M",
    "VALIDATION_SEED_START",
    "TEST_SEED_START",
    "scene_depth_range",
]

#: Default depth range of the generated scenes, in metres (near, far).
DEFAULT_DEPTH_RANGE_M: tuple[float, float] = (0.5, 6.0)

#: Depth range of the scenes the package trains, validates and tests on for each camera preset (inside the preset's
#: range, like rooms and table tops).
SCENE_DEPTH_RANGE_M: dict[str, tuple[float, float]] = {"nyuv2": (0.7, 8.0), "defocusnet": (0.2, 2.5)}

#: Seeds below this are for training; from it up to TEST_SEED_START for validation during training.
VALIDATION_SEED_START = 900_000
#: Seeds from here on are for tests and the demo: never trained or validated on.
TEST_SEED_START = 1_000_000

_MIN_SHAPES, _MAX_SHAPES = 10, 40
_R_MIN_FRAC, _R_MAX_FRAC = 0.06, 0.6  # shape radius limits, as fractions of sqrt(H*W)
_P_SLANTED_SHAPE = 0.35
_P_SLANTED_BACKGROUND = 0.5
# Texture kinds and their probabilities.
_PLAIN, _NOISE, _STRIPES, _CHECKER, _WARPED = range(5)
_TEXTURE_P = np.array([0.15, 0.42, 0.15, 0.10, 0.18])


# --------------------------------------------------------------------------------------------------------------------
# argument checks


def _check_seed(seed: object) -> int:
    if isinstance(seed, bool) or not isinstance(seed, numbers.Integral):
        raise DefocusError(f"seed must be a non-negative integer, got {seed!r}")
    if int(seed) < 0:
        raise DefocusError(f"seed must be a non-negative integer, got {seed!r}")
    return int(seed)


def _check_size(height: object, width: object) -> tuple[int, int]:
    out = []
    for name, v in (("height", height), ("width", width)):
        if isinstance(v, bool) or not isinstance(v, numbers.Integral) or int(v) < 1:
            raise DefocusError(f"scene {name} must be an integer >= 1, got {v!r}")
        out.append(int(v))
    return out[0], out[1]


def _check_depth_range(depth_range_m: object) -> tuple[float, float]:
    return check_depth_range(depth_range_m)


# --------------------------------------------------------------------------------------------------------------------
# colour helpers


def _hsv_to_rgb(h: float, s: float, v: float) -> np.ndarray:
    k = (np.array([5.0, 3.0, 1.0]) + h * 6.0) % 6.0
    return v - v * s * np.clip(np.minimum(k, 4.0 - k), 0.0, 1.0)


def _random_colour(rng: np.random.Generator) -> np.ndarray:
    """An sRGB colour (3,), mostly moderately saturated, as surfaces in rooms are."""
    hue = rng.random()
    sat = 0.85 * rng.random() ** 1.6
    val = rng.uniform(0.12, 0.92)
    return _hsv_to_rgb(hue, sat, val)


def _second_colour(rng: np.random.Generator, c1: np.ndarray) -> np.ndarray:
    """A partner colour for two-tone textures: often a lighter/darker shade of ``c1``, else an unrelated colour."""
    if rng.random() < 0.55:
        factor = rng.uniform(0.3, 0.8)
        if rng.random() < 0.5 and c1.max() < 0.6:
            return np.clip(c1 / factor, 0.0, 1.0)
        return c1 * factor
    return _random_colour(rng)


# --------------------------------------------------------------------------------------------------------------------
# textures


def _pink_noise(rng: np.random.Generator, n: int, h: int, w: int, alpha: float) -> np.ndarray:
    """``n`` fields (n, h, w) of periodic 1/f^alpha noise (amplitude spectrum), zero mean and unit std."""
    white = rng.standard_normal((n, h, w))
    fy = np.fft.fftfreq(h)[:, None]
    fx = np.fft.rfftfreq(w)[None, :]
    f = np.sqrt(fy * fy + fx * fx)
    f[0, 0] = 1.0
    amp = f ** (-alpha)
    amp[0, 0] = 0.0  # no DC
    out = np.fft.irfft2(np.fft.rfft2(white) * amp, s=(h, w))
    out -= out.mean(axis=(1, 2), keepdims=True)
    std = out.std(axis=(1, 2), keepdims=True)
    return out / np.where(std > 1e-12, std, 1.0)


def _square_wave(phase: np.ndarray, period_px: float | np.ndarray) -> np.ndarray:
    """Anti-aliased square wave in [-1, 1] (edges about one pixel wide) for a phase field in radians."""
    sharp = np.maximum(np.asarray(period_px, dtype=np.float64) / math.pi, 1.0)
    return np.clip(np.sin(phase) * sharp, -1.0, 1.0)


def _texture(
    rng: np.random.Generator,
    h: int,
    w: int,
    pu: np.ndarray,
    pv: np.ndarray,
    fade: np.ndarray | None = None,
) -> tuple[np.ndarray, bool]:
    """One surface texture, sRGB (3, h, w) in [0, 1], and whether it is plain (texture-less).

    ``pu``/``pv`` are the pattern coordinates (broadcastable to (h, w), pixels near the viewer) used by stripes and
    checkers; 1/f noise is scale-invariant and drawn directly on the (h, w) pixel grid. ``fade`` in [0, 1] (same
    shape) scales the contrast of regular patterns, to fade them out where perspective makes them alias.
    """
    kind = int(rng.choice(5, p=_TEXTURE_P))
    c1 = _random_colour(rng)
    c2 = _second_colour(rng, c1)
    lum = np.ones((h, w))
    if kind == _PLAIN:
        return np.broadcast_to(c1[:, None, None], (3, h, w)).copy(), True

    if kind == _NOISE:
        alpha = rng.uniform(1.0, 1.8)
        noise = _pink_noise(rng, 2, h, w, alpha)
        t = 0.5 + rng.uniform(0.1, 0.3) * noise[0]
        lum = lum + rng.uniform(0.0, 0.15) * noise[1]
    else:
        theta = rng.uniform(0.0, math.pi)
        period = math.exp(rng.uniform(math.log(4.0), math.log(max(5.0, 0.3 * math.sqrt(h * w)))))
        phase0 = rng.uniform(0.0, 2.0 * math.pi)
        # The local period shrinks where ``fade`` < 1 (perspective); keep the edges anti-aliased there too.
        local_period = period if fade is None else period * np.maximum(fade, 0.05)
        a = 2.0 * math.pi * (pu * math.cos(theta) + pv * math.sin(theta)) / period + phase0
        if kind == _STRIPES:
            wave = np.sin(a) if rng.random() < 0.4 else _square_wave(a, local_period)
        elif kind == _CHECKER:
            b = 2.0 * math.pi * (-pu * math.sin(theta) + pv * math.cos(theta)) / period + phase0
            wave = _square_wave(a, local_period) * _square_wave(b, local_period)
        else:  # _WARPED: stripes whose phase is bent by low-frequency noise (wood grain, fabric, marble)
            noise = _pink_noise(rng, 1, h, w, rng.uniform(1.3, 1.8))[0]
            wave = np.sin(a + rng.uniform(1.0, 4.0) * noise)
            wave = np.sign(wave) * np.abs(wave) ** rng.uniform(0.3, 1.0)
        wave = np.broadcast_to(wave, (h, w))
        if fade is not None:
            wave = wave * np.clip((fade * period - 2.5) / 2.5, 0.0, 1.0)
        t = 0.5 + 0.5 * rng.uniform(0.5, 1.0) * wave

    if rng.random() < 0.6:  # fine grain: real surfaces have detail down to the pixel
        grain = _pink_noise(rng, 1, h, w, rng.uniform(0.5, 1.0))[0]
        lum = lum + rng.uniform(0.01, 0.05) * grain
    t = np.clip(t, 0.0, 1.0)
    col = c1[:, None, None] * (1.0 - t) + c2[:, None, None] * t
    return np.clip(col * lum, 0.0, 1.0), False


def _shading(rng: np.random.Generator, dx: np.ndarray, dy: np.ndarray, size: float, plain: bool) -> np.ndarray:
    """Slight linear shading across a surface (multiplicative factor, broadcast of dx/dy)."""
    phi = rng.uniform(0.0, 2.0 * math.pi)
    amp = rng.uniform(0.02, 0.10) if plain else rng.uniform(0.0, 0.12)
    return 1.0 + amp * (dx * math.cos(phi) + dy * math.sin(phi)) / max(size, 1.0)


# --------------------------------------------------------------------------------------------------------------------
# scene


def _background(
    rng: np.random.Generator, h: int, w: int, inv_far: float, inv_near: float
) -> tuple[np.ndarray, np.ndarray]:
    """The farthest surface: inverse depth (h, w) in 1/m and sRGB colour (3, h, w)."""
    span = inv_near - inv_far
    ys = np.arange(h, dtype=np.float64)[:, None] - (h - 1) / 2.0
    xs = np.arange(w, dtype=np.float64)[None, :] - (w - 1) / 2.0
    size = math.sqrt(h * w)
    if rng.random() < _P_SLANTED_BACKGROUND:
        # Slanted plane: inverse depth linear in the image. Mostly a floor (nearer at the bottom), else an oblique
        # wall or ceiling seen from any side.
        if rng.random() < 0.6:
            phi = math.pi / 2 + rng.uniform(-0.4, 0.4)
        else:
            phi = rng.uniform(0.0, 2.0 * math.pi)
        ex, ey = math.cos(phi), math.sin(phi)  # direction towards the viewer (inverse depth grows along it)
        along = xs * ex + ys * ey
        across = -xs * ey + ys * ex
        half = 0.5 * (abs(ex) * (w - 1) + abs(ey) * (h - 1)) + 1e-9
        b = (along + half) / (2.0 * half)  # 0 at the far side, 1 at the near side
        i0 = inv_far + rng.uniform(0.0, 0.15) * span
        i1 = min(inv_near, i0 + rng.uniform(0.25, 0.7) * span)
        inv = i0 + (i1 - i0) * b
        # Perspective pattern coordinates: metric on the plane, in pixels at the nearest point.
        z = i1 / inv  # depth relative to the nearest point, >= 1
        pu = across * z
        pv = size * (z - 1.0) * (i1 - i0) / i1 * 0.8
        fade = 1.0 / (z * z)
        tex, plain = _texture(rng, h, w, pu, pv, fade)
        inv = np.broadcast_to(inv, (h, w))
        dx, dy = xs, ys
    else:
        # Far wall, maybe slightly tilted.
        i0 = inv_far + rng.uniform(0.0, 0.08) * span
        phi = rng.uniform(0.0, 2.0 * math.pi)
        tilt = rng.uniform(0.0, 0.05) * span if rng.random() < 0.5 else 0.0
        inv = i0 + tilt * (0.5 + (xs * math.cos(phi) + ys * math.sin(phi)) / max(size, 1.0))
        inv = np.broadcast_to(inv, (h, w))
        tex, plain = _texture(rng, h, w, xs, ys)
        dx, dy = xs, ys
    tex = tex * _shading(rng, dx, dy, size, plain)
    return np.clip(inv, inv_far, inv_near).copy(), tex


def _paint_shape(
    rng: np.random.Generator,
    inv: np.ndarray,
    rgb: np.ndarray,
    radius: float,
    inv0: float,
    inv_far: float,
    inv_near: float,
) -> None:
    """Draw one dead-leaves shape into ``inv`` (h, w) and ``rgb`` (3, h, w), in place, with a depth test."""
    h, w = inv.shape
    span = inv_near - inv_far
    cx = rng.uniform(-0.1 * w, 1.1 * w)
    cy = rng.uniform(-0.1 * h, 1.1 * h)
    kind = int(rng.choice(3, p=[0.3, 0.4, 0.3]))  # disc, ellipse, rectangle
    theta = rng.uniform(0.0, math.pi)
    if kind == 0:
        a = b = radius
    else:
        aspect = rng.uniform(0.2, 0.9)
        a, b = radius / math.sqrt(aspect), radius * math.sqrt(aspect)  # same area as the disc of this radius
        if kind == 2:
            a, b = a * math.sqrt(math.pi) / 2.0, b * math.sqrt(math.pi) / 2.0
    c, s = math.cos(theta), math.sin(theta)
    if kind == 2:
        hx, hy = a * abs(c) + b * abs(s), a * abs(s) + b * abs(c)
    else:
        hx, hy = math.hypot(a * c, b * s), math.hypot(a * s, b * c)
    x0, x1 = max(0, math.floor(cx - hx - 1)), min(w, math.ceil(cx + hx + 2))
    y0, y1 = max(0, math.floor(cy - hy - 1)), min(h, math.ceil(cy + hy + 2))
    slanted = rng.random() < _P_SLANTED_SHAPE
    phi = rng.uniform(0.0, 2.0 * math.pi)
    delta = rng.uniform(0.05, 0.3) * span
    if x0 >= x1 or y0 >= y1:
        return
    dx = np.arange(x0, x1, dtype=np.float64)[None, :] - cx
    dy = np.arange(y0, y1, dtype=np.float64)[:, None] - cy
    xr = dx * c + dy * s
    yr = -dx * s + dy * c
    # Approximate signed distance to the outline (pixels; < 0 inside) for anti-aliased coverage.
    if kind == 2:
        dist = np.maximum(np.abs(xr) - a, np.abs(yr) - b)
    else:
        f = (xr / a) ** 2 + (yr / b) ** 2 - 1.0
        g = 2.0 * np.sqrt((xr / (a * a)) ** 2 + (yr / (b * b)) ** 2)
        dist = np.where(g > 1e-12, f / np.maximum(g, 1e-12), -np.inf)
    cover = np.clip(0.5 - dist, 0.0, 1.0)
    if slanted:
        sinv = inv0 + delta * (dx * math.cos(phi) + dy * math.sin(phi)) / max(radius, 1e-6)
        sinv = np.clip(sinv, inv_far, inv_near)
    else:
        sinv = np.full(cover.shape, inv0)
    cur = inv[y0:y1, x0:x1]
    visible = sinv > cur
    alpha = cover * visible
    if not alpha.any():
        return
    bh, bw = y1 - y0, x1 - x0
    tex, plain = _texture(rng, bh, bw, dx + cx, dy + cy)
    tex = tex * _shading(rng, dx, dy, radius, plain)
    region = rgb[:, y0:y1, x0:x1]
    region += alpha * (tex - region)
    inside = visible & (dist <= 0.0)
    cur[inside] = np.broadcast_to(sinv, cur.shape)[inside]


def _illumination(rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    """Linear-light gain (h, w): exposure × smooth illumination gradient × vignetting."""
    ys = (np.arange(h, dtype=np.float64)[:, None] - (h - 1) / 2.0) / max(h, w)
    xs = (np.arange(w, dtype=np.float64)[None, :] - (w - 1) / 2.0) / max(h, w)
    phi = rng.uniform(0.0, 2.0 * math.pi)
    grad = 1.0 + rng.uniform(0.0, 0.5) * (xs * math.cos(phi) + ys * math.sin(phi))
    r2 = (xs * xs + ys * ys) / 0.5  # ~1 at the corners of a square image
    vignette = 1.0 - rng.uniform(0.05, 0.3) * r2
    exposure = rng.uniform(0.75, 1.05)
    return exposure * grad * vignette


def _scene_arrays(seed: int, h: int, w: int, near: float, far: float) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    inv_near, inv_far = 1.0 / near, 1.0 / far
    inv, rgb = _background(rng, h, w, inv_far, inv_near)

    n = int(rng.integers(_MIN_SHAPES, _MAX_SHAPES + 1))
    size = math.sqrt(h * w)
    r_min = max(0.8, _R_MIN_FRAC * size)
    r_max = max(1.5 * r_min, _R_MAX_FRAC * size)
    u = rng.random(n)
    radii = (r_min**-2 - u * (r_min**-2 - r_max**-2)) ** -0.5  # inverse CDF of p(r) ∝ r^-3 on [r_min, r_max]
    inv0 = rng.uniform(inv_far, inv_near, n)  # uniform in inverse depth
    for i in np.argsort(inv0, kind="stable"):  # far to near
        _paint_shape(rng, inv, rgb, float(radii[i]), float(inv0[i]), inv_far, inv_near)

    lin = srgb_to_linear(np.clip(rgb, 0.0, 1.0)) * _illumination(rng, h, w)
    rgb = linear_to_srgb(np.clip(lin, 0.0, 1.0))

    depth = (1.0 / inv).astype(np.float32)
    lo, hi = np.float32(near), np.float32(far)
    if float(lo) < near:
        lo = np.nextafter(lo, np.float32(np.inf))
    if float(hi) > far:
        hi = np.nextafter(hi, np.float32(-np.inf))
    depth = np.clip(depth, lo, hi)
    return np.clip(rgb, 0.0, 1.0).astype(np.float32), depth[None]


def make_scene(
    seed: int,
    height: int,
    width: int,
    depth_range_m: tuple[float, float] = DEFAULT_DEPTH_RANGE_M,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Generate one procedural RGB-D scene (see the module docstring for what is in it).

    Args:
        seed: non-negative integer; the scene is a deterministic function of (seed, height, width, depth_range_m).
        height: image height H in pixels, >= 1.
        width: image width W in pixels, >= 1.
        depth_range_m: (near, far) in metres, 0 < near < far; every depth value lies inside it.

    Returns:
        ``rgb`` (3, H, W) float32 in [0, 1], sRGB-encoded like a photo, all in focus;
        ``depth`` (1, H, W) float32 in metres, inside ``[near, far]``.

    Raises:
        DefocusError: on a bad seed, size or depth range.
    """
    s = _check_seed(seed)
    h, w = _check_size(height, width)
    near, far = _check_depth_range(depth_range_m)
    rgb, depth = _scene_arrays(s, h, w, near, far)
    return torch.from_numpy(rgb), torch.from_numpy(depth)


def make_scenes(
    seeds: Iterable[int],
    height: int,
    width: int,
    depth_range_m: tuple[float, float] = DEFAULT_DEPTH_RANGE_M,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Generate a batch of scenes, one per seed (same as stacking :func:`make_scene` outputs).

    Args:
        seeds: non-negative integers, one per scene (may be empty).
        height, width: image size in pixels, >= 1.
        depth_range_m: (near, far) in metres, 0 < near < far.

    Returns:
        ``rgb`` (B, 3, H, W) float32 in [0, 1] (sRGB) and ``depth`` (B, 1, H, W) float32 metres, B = len(seeds).
    """
    seed_list = [_check_seed(s) for s in seeds]
    h, w = _check_size(height, width)
    near, far = _check_depth_range(depth_range_m)
    rgb = np.empty((len(seed_list), 3, h, w), dtype=np.float32)
    depth = np.empty((len(seed_list), 1, h, w), dtype=np.float32)
    for i, s in enumerate(seed_list):
        rgb[i], depth[i] = _scene_arrays(s, h, w, near, far)
    return torch.from_numpy(rgb), torch.from_numpy(depth)


def scene_depth_range(preset_name: str | None, focus_m: Sequence[float], focal_length_m: float) -> tuple[float, float]:
    """Depth range (metres) of procedural scenes for a camera: the preset's scene range, else around the focus
    distances (half the nearest, never nearer than twice the focal length, to twice the farthest)."""
    if preset_name is not None:
        return SCENE_DEPTH_RANGE_M[preset_name]
    return max(0.5 * min(focus_m), 2.0 * focal_length_m), 2.0 * max(focus_m)
