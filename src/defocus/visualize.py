"""Pictures for humans: colourised depth and error maps and contact sheets, drawn with Pillow only.

The package needs nothing more for the pictures its commands write, so outputs look the same on every machine;
plots of benchmark results are drawn with matplotlib (the ``plot`` extra) by the scripts in ``benchmarks/``.

Colour maps (:data:`COLORMAPS`), all sampled into 256-entry lookup tables:

* ``"turbo"`` — Google's Turbo rainbow, from its public polynomial approximation (blue at 0, red at 1);
* ``"inferno"`` — an inferno-like sequential map for errors (black → purple → orange → pale yellow at 1),
  linearly interpolated between 11 anchors; its lightness rises monotonically;
* ``"gray"`` — black to white.

Depth previews (:func:`depth_preview`) map **inverse depth** through turbo, so near surfaces are red/yellow and far
ones blue, with resolution spread the way a defocus cue resolves depth (finely near, coarsely far). The colour bar to
the right is labelled in metres, nearest depth at the top.

Text uses ``PIL.ImageFont.load_default`` (a built-in scalable font on Pillow ≥ 10.1, the bitmap font before), so no
font files are needed.
"""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
from PIL import Image, ImageDraw, ImageFont

from defocus.errors import DefocusError
from defocus.files import PNG_COMPRESS_LEVEL, atomic_write

__all__ = [
    "COLORMAPS",
    "colorize",
    "colormap_lut",
    "depth_preview",
    "error_map",
    "contact_sheet",
    "to_pil",
    "save_png",
]

#: Colour of pixels without a value in depth previews (NaN, ≤ 0 or masked).
INVALID_RGB: tuple[int, int, int] = (0, 0, 0)
#: Colour of invalid pixels in error maps.
ERROR_INVALID_RGB: tuple[int, int, int] = (128, 128, 128)

_WHITE = (255, 255, 255)
_TEXT = (20, 20, 20)


# ---------------------------------------------------------------------------------------------------------------
# Colour maps
# ---------------------------------------------------------------------------------------------------------------


def _turbo(t: np.ndarray) -> np.ndarray:
    """Turbo colour map, polynomial approximation published with it (Mikhailov 2019); ``t`` in [0, 1] → RGB [0, 1]."""
    t = np.clip(t, 0.0, 1.0)
    powers = np.stack([t**k for k in range(6)], axis=-1)  # 1, t, …, t^5
    coeffs = np.array(
        [
            [0.13572138, 4.61539260, -42.66032258, 132.13108234, -152.94239396, 59.28637943],
            [0.09140261, 2.19418839, 4.84296658, -14.18503333, 4.27729857, 2.82956604],
            [0.10667330, 12.64194608, -60.58204836, 110.36276771, -89.90310912, 27.34824973],
        ]
    )
    return np.clip(powers @ coeffs.T, 0.0, 1.0)


# 11 evenly spaced anchors of an inferno-like map (0 → near black, 1 → pale yellow).
_INFERNO_ANCHORS = (
    "000004", "160b39", "420a68", "6a176e", "932667", "bc3754",
    "dd513a", "f37819", "fca50a", "f6d746", "fcffa4",
)  # fmt: skip


def _anchors(hexes: Sequence[str]):
    table = np.array([[int(h[i : i + 2], 16) for i in (0, 2, 4)] for h in hexes], dtype=np.float64) / 255.0
    xs = np.linspace(0.0, 1.0, len(table))

    def cmap(t: np.ndarray) -> np.ndarray:
        t = np.clip(t, 0.0, 1.0)
        return np.stack([np.interp(t, xs, table[:, c]) for c in range(3)], axis=-1)

    return cmap


_CMAP_FUNCS = {
    "turbo": _turbo,
    "inferno": _anchors(_INFERNO_ANCHORS),
    "gray": _anchors(("000000", "ffffff")),
}

#: Names accepted by :func:`colorize`.
COLORMAPS: tuple[str, ...] = tuple(_CMAP_FUNCS)

_LUTS: dict[str, np.ndarray] = {}


def colormap_lut(cmap: str) -> np.ndarray:
    """The (256, 3) uint8 lookup table of colour map ``cmap``; entry 0 is the low end, 255 the high end."""
    if cmap not in _CMAP_FUNCS:
        raise DefocusError(f"unknown colour map {cmap!r}; choose one of {', '.join(COLORMAPS)}")
    if cmap not in _LUTS:
        rgb = _CMAP_FUNCS[cmap](np.linspace(0.0, 1.0, 256))
        _LUTS[cmap] = np.round(rgb * 255.0).astype(np.uint8)
    return _LUTS[cmap]


def _as_hw_array(x, name: str) -> np.ndarray:
    """(H, W) float64 numpy copy of a (H, W), (1, H, W) or (1, 1, H, W) numpy array or torch tensor."""
    if isinstance(x, torch.Tensor):
        x = x.detach().cpu().float().numpy()
    if not isinstance(x, np.ndarray):
        raise DefocusError(f"{name} must be a numpy array or torch tensor, got {type(x).__name__}")
    while x.ndim > 2 and x.shape[0] == 1:
        x = x[0]
    if x.ndim != 2:
        raise DefocusError(f"{name} must have shape (H, W), got {tuple(x.shape)}")
    if x.shape[0] == 0 or x.shape[1] == 0:
        raise DefocusError(f"{name} is empty: shape {tuple(x.shape)}")
    if x.dtype == np.bool_ or not (np.issubdtype(x.dtype, np.floating) or np.issubdtype(x.dtype, np.integer)):
        raise DefocusError(f"{name} must hold numbers, got dtype {x.dtype}")
    return x.astype(np.float64)


def _as_mask(mask, shape: tuple[int, int], name: str) -> np.ndarray | None:
    if mask is None:
        return None
    if isinstance(mask, torch.Tensor):
        mask = mask.detach().cpu().numpy()
    mask = np.asarray(mask)
    while mask.ndim > 2 and mask.shape[0] == 1:
        mask = mask[0]
    if mask.shape != shape:
        raise DefocusError(f"{name} must have shape {shape}, got {tuple(mask.shape)}")
    return mask.astype(bool)


def colorize(
    values: np.ndarray,
    vmin: float,
    vmax: float,
    cmap: str = "turbo",
    invalid: np.ndarray | None = None,
    invalid_color: tuple[int, int, int] = INVALID_RGB,
) -> np.ndarray:
    """Map a (H, W) float array to a (H, W, 3) uint8 RGB image.

    ``vmin`` maps to the low end of ``cmap`` and ``vmax`` to the high end; values outside are clipped. NaN/inf
    pixels and those set in the optional boolean mask ``invalid`` get ``invalid_color`` (black by default).
    """
    v = _as_hw_array(values, "values")
    bad = _as_mask(invalid, v.shape, "invalid")
    vmin, vmax = float(vmin), float(vmax)
    if not (math.isfinite(vmin) and math.isfinite(vmax)) or not vmax > vmin:
        raise DefocusError(f"colour range needs finite vmin < vmax, got vmin={vmin}, vmax={vmax}")
    lut = colormap_lut(cmap)
    finite = np.isfinite(v)
    t = np.clip((np.where(finite, v, vmin) - vmin) / (vmax - vmin), 0.0, 1.0)
    out = lut[np.round(t * 255.0).astype(np.intp)]
    bad = ~finite if bad is None else (bad | ~finite)
    out[bad] = np.asarray(invalid_color, dtype=np.uint8)
    return out


# ---------------------------------------------------------------------------------------------------------------
# Text helpers
# ---------------------------------------------------------------------------------------------------------------

_FONTS: dict[int, ImageFont.ImageFont] = {}


def _font(size: int = 13):
    """Pillow's built-in font at ``size`` px (scalable with Pillow ≥ 10.1 and FreeType; else the bitmap font)."""
    if size not in _FONTS:
        try:
            _FONTS[size] = ImageFont.load_default(size=size)
        except (TypeError, AttributeError, OSError, ImportError):
            _FONTS[size] = ImageFont.load_default()
    return _FONTS[size]


def _text_size(text: str, font) -> tuple[int, int]:
    """Ink-independent width and line height of ``text``: height covers ascenders and descenders of any string."""
    probe = ImageDraw.Draw(Image.new("RGB", (1, 1)))
    left, _, right, _ = probe.textbbox((0, 0), text, font=font)
    _, top, _, bottom = probe.textbbox((0, 0), "Ag|(y", font=font)
    return right - left, bottom - min(top, 0)


def _fit_text(text: str, font, max_w: int) -> str:
    """``text`` shortened with an ellipsis so it is at most ``max_w`` px wide."""
    if _text_size(text, font)[0] <= max_w:
        return text
    while text and _text_size(text + "…", font)[0] > max_w:
        text = text[:-1]
    return text + "…" if text else ""


# ---------------------------------------------------------------------------------------------------------------
# Depth and error maps
# ---------------------------------------------------------------------------------------------------------------


def _round_sig(x: float, sig: int) -> float:
    if x == 0 or not math.isfinite(x):
        return x
    return round(x, sig - 1 - int(math.floor(math.log10(abs(x)))))


def _fmt_metres(x: float) -> str:
    return f"{x:.3g} m" if abs(x) < 1e4 else f"{x:.2e} m"


def _depth_ticks(vmin: float, vmax: float, n: int) -> list[float]:
    """About ``n`` round depths in [vmin, vmax], evenly spaced in inverse depth, endpoints included."""
    if n <= 2:
        return [vmin, vmax]
    inv_near, inv_far = 1.0 / vmin, 1.0 / vmax
    pos = lambda d: (inv_near - 1.0 / d) / (inv_near - inv_far)  # noqa: E731  0 at vmin, 1 at vmax
    ticks = [vmin]
    for k in range(1, n - 1):
        target = k / (n - 1)
        d = 1.0 / (inv_near + (inv_far - inv_near) * target)
        for sig in (1, 2, 3):  # as round as possible while staying near its even spacing
            r = _round_sig(d, sig)
            if vmin < r < vmax and abs(pos(r) - target) <= 0.3 / (n - 1):
                break
        else:
            r = d
        ticks.append(r)
    ticks.append(vmax)
    out: list[float] = []
    for t in ticks:  # drop labels that would repeat after formatting
        if not out or _fmt_metres(t) != _fmt_metres(out[-1]):
            out.append(t)
    return out


def _default_depth_range(depth: np.ndarray, valid: np.ndarray, vmin, vmax) -> tuple[float, float]:
    vals = depth[valid]
    if vmin is None:
        vmin = float(np.percentile(vals, 2)) if vals.size else (1.0 if vmax is None else float(vmax) / 10.0)
    if vmax is None:
        vmax = float(np.percentile(vals, 98)) if vals.size else 10.0 * float(vmin)
    vmin, vmax = float(vmin), float(vmax)
    if not (math.isfinite(vmin) and math.isfinite(vmax)) or vmin <= 0:
        raise DefocusError(f"depth colour range must be finite and positive, got vmin={vmin}, vmax={vmax}")
    if vmax < vmin:
        raise DefocusError(f"depth colour range needs vmin < vmax, got vmin={vmin}, vmax={vmax}")
    if vmax == vmin:  # constant depth: widen symmetrically so the bar still reads
        vmin, vmax = vmin * 0.95, vmax * 1.05
    return vmin, vmax


def _wrap(text: str, font, width: int) -> list[str]:
    """``text`` broken at spaces into lines no wider than ``width`` px (a single long word stays whole)."""
    lines: list[str] = []
    for word in text.split(" "):
        if lines and _text_size(lines[-1] + " " + word, font)[0] <= width:
            lines[-1] += " " + word
        else:
            lines.append(word)
    return lines


def depth_colour_caption(depth_m: np.ndarray, vmin: float, vmax: float) -> tuple[str, float, float]:
    """(caption, fraction of valid pixels nearer than ``vmin``, fraction farther than ``vmax``) of a depth preview
    coloured over [vmin, vmax] metres: the colour range, and where depth leaves it, its own range and how much of it
    the colours clip."""
    d = np.asarray(depth_m, dtype=np.float64)
    vals = d[np.isfinite(d) & (d > 0)]
    below, above = (float((vals < vmin).mean()), float((vals > vmax).mean())) if vals.size else (0.0, 0.0)
    caption = f"colours {_fmt_metres(vmin)} (red) to {_fmt_metres(vmax)} (blue)"
    if below > 0 or above > 0:
        caption += (f"; depth spans {_fmt_metres(float(vals.min()))} to {_fmt_metres(float(vals.max()))}, "
                    f"{100 * (below + above):.2g} % of it clipped to the colour range")
    return caption, below, above


def depth_preview(
    depth_m: np.ndarray,
    vmin: float | None = None,
    vmax: float | None = None,
    title: str | None = None,
    font_px: int | None = None,
) -> Image.Image:
    """RGB picture of a metric depth map with a colour bar in metres on its right, an optional title above and a
    caption below that states the colour range and the depth's own range.

    Inverse depth is mapped through turbo: ``vmin`` (near) is red, ``vmax`` (far) is blue, and values outside are
    clipped (the end labels then read "<= vmin" / ">= vmax" and the caption says how much is clipped). ``vmin``/``vmax``
    default to the 2nd/98th percentiles of valid depths (finite and > 0); an empty range (constant depth) is widened
    by ±5 %, and with no valid pixel at all the range is 1–10 m. Invalid pixels are black. Text is ``font_px`` high,
    by default 1/40 of the image height (at least 13 px), so that it stays legible when a large preview is fitted to a
    screen. The picture is ``W`` plus the bar area wide and ``H`` plus the title and caption bands high.
    """
    d = _as_hw_array(depth_m, "depth_m")
    valid = np.isfinite(d) & (d > 0)
    vmin, vmax = _default_depth_range(d, valid, vmin, vmax)
    inv = np.where(valid, 1.0 / np.where(valid, d, 1.0), np.nan)
    rgb = colorize(inv, 1.0 / vmax, 1.0 / vmin, "turbo", invalid=~valid)
    h, w = d.shape
    size = int(font_px) if font_px else max(13, round(h / 40))

    font = _font(size)
    _, line_h = _text_size("0", font)
    margin, bar_w, tick_len = max(10, size * 3 // 4), max(16, size * 5 // 4), max(4, size // 3)
    half = line_h // 2 + 1  # bar inset so the end labels are not cut off
    bar_h = max(h - 2 * half, 2)
    n_ticks = int(np.clip(bar_h // int(line_h * 1.8) + 1, 2, 5))
    ticks = _depth_ticks(vmin, vmax, n_ticks)
    caption, below, above = depth_colour_caption(d, vmin, vmax)
    labels = [_fmt_metres(t) for t in ticks]
    if below > 0:
        labels[0] = "<= " + labels[0]
    if above > 0:
        labels[-1] = ">= " + labels[-1]
    label_w = max(_text_size(s, font)[0] for s in labels)
    bar_area = margin + bar_w + tick_len + 3 + label_w + margin
    caption_font = _font(max(11, size * 4 // 5))

    title_h = 0
    if title:
        title_font = _font(max(15, size * 6 // 5))
        tw, th = _text_size(title, title_font)
        title_h = th + 10
    canvas_w = w + bar_area
    if title:
        canvas_w = max(canvas_w, tw + 2 * margin)
    lines = _wrap(caption, caption_font, canvas_w - margin)
    ch = _text_size("Ag", caption_font)[1]
    caption_h = ch * len(lines) + margin
    canvas = Image.new("RGB", (canvas_w, h + title_h + caption_h), _WHITE)
    canvas.paste(Image.fromarray(rgb, "RGB"), (0, title_h))
    draw = ImageDraw.Draw(canvas)
    if title:
        draw.text(((canvas_w - tw) // 2, 5), title, fill=_TEXT, font=title_font)
    for i, line in enumerate(lines):
        draw.text((margin // 2, title_h + h + margin // 2 + i * ch), line, fill=_TEXT, font=caption_font)

    # Colour bar: top row = near (vmin, high end of turbo), bottom row = far (vmax).
    x0, y0 = w + margin, title_h + (h - bar_h) // 2
    frac = np.linspace(1.0, 0.0, bar_h)  # position in inverse depth, top to bottom
    column = colormap_lut("turbo")[np.round(frac * 255.0).astype(np.intp)]
    bar = np.repeat(column[:, None, :], bar_w, axis=1)
    canvas.paste(Image.fromarray(np.ascontiguousarray(bar), "RGB"), (x0, y0))
    draw.rectangle([x0 - 1, y0 - 1, x0 + bar_w, y0 + bar_h], outline=(90, 90, 90))
    inv_near, inv_far = 1.0 / vmin, 1.0 / vmax
    for t, s in zip(ticks, labels):
        pos = (1.0 / t - inv_far) / (inv_near - inv_far)  # 1 at the top
        y = y0 + int(round((1.0 - pos) * (bar_h - 1)))
        draw.line([x0 + bar_w, y, x0 + bar_w + tick_len, y], fill=_TEXT)
        draw.text((x0 + bar_w + tick_len + 3, y), s, fill=_TEXT, font=font, anchor="lm")
    return canvas


def error_map(
    pred_m: np.ndarray,
    gt_m: np.ndarray,
    valid: np.ndarray | None = None,
    max_rel: float = 0.5,
) -> np.ndarray:
    """(H, W, 3) uint8 map of the relative error ``|pred − gt| / gt`` through ``"inferno"``.

    0 is black and ``max_rel`` pale yellow (larger errors are clipped). Pixels with non-finite or non-positive ground
    truth, a non-finite prediction, or unset in ``valid`` are grey (:data:`ERROR_INVALID_RGB`).
    """
    p = _as_hw_array(pred_m, "pred_m")
    g = _as_hw_array(gt_m, "gt_m")
    if p.shape != g.shape:
        raise DefocusError(f"pred_m {p.shape} and gt_m {g.shape} differ in shape")
    if not (math.isfinite(max_rel) and max_rel > 0):
        raise DefocusError(f"max_rel must be positive, got {max_rel}")
    ok = np.isfinite(g) & (g > 0) & np.isfinite(p)
    mask = _as_mask(valid, g.shape, "valid")
    if mask is not None:
        ok &= mask
    rel = np.abs(p - g) / np.where(ok, g, 1.0)
    return colorize(rel, 0.0, max_rel, "inferno", invalid=~ok, invalid_color=ERROR_INVALID_RGB)


# ---------------------------------------------------------------------------------------------------------------
# Images, contact sheets, files
# ---------------------------------------------------------------------------------------------------------------


def to_pil(image) -> Image.Image:
    """RGB PIL image from a PIL image, a (H, W, 3) / (H, W) numpy array (uint8, or float in [0, 1]) or a torch
    tensor shaped (3, H, W), (1, 3, H, W), (1, H, W) or (H, W) (float in [0, 1] or uint8)."""
    if isinstance(image, Image.Image):
        return image.convert("RGB")
    if isinstance(image, torch.Tensor):
        t = image.detach().cpu()
        while t.ndim > 3 and t.shape[0] == 1:
            t = t[0]
        if t.ndim == 3 and t.shape[0] in (1, 3):
            t = t.permute(1, 2, 0)
        elif t.ndim != 2:
            raise DefocusError(f"image tensor must be (3, H, W), (1, H, W) or (H, W), got {tuple(image.shape)}")
        arr = t.numpy() if t.dtype == torch.uint8 else t.float().numpy()
    elif isinstance(image, np.ndarray):
        arr = image
    else:
        raise DefocusError(f"image must be a PIL image, numpy array or torch tensor, got {type(image).__name__}")
    if arr.ndim == 3 and arr.shape[2] == 1:
        arr = arr[:, :, 0]
    if arr.ndim == 2:
        arr = np.repeat(arr[:, :, None], 3, axis=2)
    if arr.ndim != 3 or arr.shape[2] != 3:
        raise DefocusError(f"image array must be (H, W, 3) or (H, W), got {tuple(arr.shape)}")
    if arr.shape[0] == 0 or arr.shape[1] == 0:
        raise DefocusError(f"image is empty: shape {tuple(arr.shape)}")
    if arr.dtype != np.uint8:
        if not (np.issubdtype(arr.dtype, np.floating) or np.issubdtype(arr.dtype, np.integer)):
            raise DefocusError(f"image must hold numbers, got dtype {arr.dtype}")
        f = np.nan_to_num(arr.astype(np.float64), nan=0.0, posinf=1.0, neginf=0.0)
        arr = np.round(np.clip(f, 0.0, 1.0) * 255.0).astype(np.uint8)
    return Image.fromarray(np.ascontiguousarray(arr), "RGB")


def _shrink_tensor(image, height: int):
    """A float image tensor taller than ``height`` px area-reduced to about that height (aspect kept), anything else
    as given: converting a 12-megapixel frame to 8-bit only to shrink it to a thumbnail cost seconds per cell."""
    if not (isinstance(image, torch.Tensor) and image.is_floating_point() and image.ndim >= 2):
        return image
    h, w = image.shape[-2:]
    if h <= height:
        return image
    flat = image.detach().cpu().float().reshape(-1, 1, h, w)
    size = (height, max(1, round(w * height / h)))
    small = torch.nn.functional.interpolate(flat, size=size, mode="bilinear", antialias=True, align_corners=False)
    return small.reshape(*image.shape[:-2], *size)


#: Contact-sheet spacing in pixels: around and between cells, and between a label and its image.
SHEET_PAD: int = 8
SHEET_LABEL_GAP: int = 3


def contact_sheet(
    rows: list[list[tuple[str, object]]],
    cell_height: int = 160,
    title: str | None = None,
) -> Image.Image:
    """Grid of labelled images on white: ``rows`` is a list of rows, each a list of ``(label, image)`` cells.

    Images are anything :func:`to_pil` takes; each is resized to ``cell_height`` px high keeping its aspect ratio,
    with its label (shortened with "…" if wider than the image) centred above it. Rows may hold different numbers of
    cells; cells are left-aligned. Layout, with ``P`` = :data:`SHEET_PAD` and ``L`` the label band height::

        width  = P + max over rows of Σ (cell width + P)
        height = [title band] + P + rows × (L + cell_height + P)
    """
    if cell_height < 8:
        raise DefocusError(f"cell_height must be at least 8 px, got {cell_height}")
    if not rows:
        raise DefocusError("contact_sheet needs at least one row")
    cells: list[list[tuple[str, Image.Image]]] = []
    for r, row in enumerate(rows):
        if not row:
            raise DefocusError(f"contact_sheet row {r} is empty")
        out_row = []
        for c, cell in enumerate(row):
            if not (isinstance(cell, (tuple, list)) and len(cell) == 2):
                raise DefocusError(f"contact_sheet cell ({r}, {c}) must be a (label, image) pair")
            label, img = cell
            pil = to_pil(_shrink_tensor(img, 2 * cell_height))
            new_w = max(1, int(round(pil.width * cell_height / pil.height)))
            if pil.size != (new_w, cell_height):
                pil = pil.resize((new_w, cell_height), Image.LANCZOS)
            out_row.append((str(label), pil))
        cells.append(out_row)

    font = _font(13)
    label_h = _text_size("Ag", font)[1] + SHEET_LABEL_GAP
    row_h = label_h + cell_height + SHEET_PAD
    width = SHEET_PAD + max(sum(im.width + SHEET_PAD for _, im in row) for row in cells)
    title_h = 0
    if title:
        title_font = _font(16)
        tw, th = _text_size(title, title_font)
        title_h = th + SHEET_PAD
        width = max(width, tw + 2 * SHEET_PAD)
    height = title_h + SHEET_PAD + len(cells) * row_h
    sheet = Image.new("RGB", (width, height), _WHITE)
    draw = ImageDraw.Draw(sheet)
    if title:
        draw.text(((width - tw) // 2, SHEET_PAD), title, fill=_TEXT, font=title_font)
    y = title_h + SHEET_PAD
    for row in cells:
        x = SHEET_PAD
        for label, im in row:
            text = _fit_text(label, font, im.width)
            draw.text((x + im.width // 2, y), text, fill=_TEXT, font=font, anchor="ma")
            sheet.paste(im, (x, y + label_h))
            x += im.width + SHEET_PAD
        y += row_h
    return sheet


def save_png(path: str | os.PathLike, image) -> Path:
    """Write ``image`` (anything :func:`to_pil` takes) as PNG at ``path`` atomically (see :mod:`defocus.files`).
    Missing parent folders are created. Returns the path."""
    pil = to_pil(image)
    return atomic_write(path, lambda tmp: pil.save(tmp, format="PNG", compress_level=PNG_COMPRESS_LEVEL), "image")
