"""Pictures for humans: colourised depth and error maps, contact sheets and line plots, drawn with Pillow only.

Nothing here needs matplotlib; even where it is installed the Pillow versions are used, so outputs look the same on
every machine.

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
import tempfile
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np
import torch
from PIL import Image, ImageDraw, ImageFont

from defocus.errors import DefocusError

__all__ = [
    "COLORMAPS",
    "colorize",
    "colormap_lut",
    "depth_preview",
    "error_map",
    "contact_sheet",
    "to_pil",
    "save_png",
    "plot_curve",
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


def depth_preview(
    depth_m: np.ndarray,
    vmin: float | None = None,
    vmax: float | None = None,
    title: str | None = None,
) -> Image.Image:
    """RGB picture of a metric depth map with a colour bar in metres on its right and an optional title above.

    Inverse depth is mapped through turbo: ``vmin`` (near) is red, ``vmax`` (far) is blue, and values outside are
    clipped. ``vmin``/``vmax`` default to the 2nd/98th percentiles of valid depths (finite and > 0); an empty range
    (constant depth) is widened by ±5 %, and with no valid pixel at all the range is 1–10 m. Invalid pixels are
    black. The picture is ``W`` plus the bar area wide and ``H`` plus the title band (if any) high.
    """
    d = _as_hw_array(depth_m, "depth_m")
    valid = np.isfinite(d) & (d > 0)
    vmin, vmax = _default_depth_range(d, valid, vmin, vmax)
    inv = np.where(valid, 1.0 / np.where(valid, d, 1.0), np.nan)
    rgb = colorize(inv, 1.0 / vmax, 1.0 / vmin, "turbo", invalid=~valid)
    h, w = d.shape

    font = _font(13)
    _, line_h = _text_size("0", font)
    margin, bar_w, tick_len = 10, 16, 4
    half = line_h // 2 + 1  # bar inset so the end labels are not cut off
    bar_h = max(h - 2 * half, 2)
    n_ticks = int(np.clip(bar_h // int(line_h * 1.8) + 1, 2, 5))
    ticks = _depth_ticks(vmin, vmax, n_ticks)
    labels = [_fmt_metres(t) for t in ticks]
    label_w = max(_text_size(s, font)[0] for s in labels)
    bar_area = margin + bar_w + tick_len + 3 + label_w + margin

    title_h = 0
    if title:
        title_font = _font(15)
        tw, th = _text_size(title, title_font)
        title_h = th + 10
    canvas_w = w + bar_area
    if title:
        canvas_w = max(canvas_w, tw + 2 * margin)
    canvas = Image.new("RGB", (canvas_w, h + title_h), _WHITE)
    canvas.paste(Image.fromarray(rgb, "RGB"), (0, title_h))
    draw = ImageDraw.Draw(canvas)
    if title:
        draw.text(((canvas_w - tw) // 2, 5), title, fill=_TEXT, font=title_font)

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
            pil = to_pil(img)
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
    """Write ``image`` (anything :func:`to_pil` takes) as PNG at ``path`` atomically: into a temporary file in the
    same folder, then renamed over ``path``. Missing parent folders are created. Returns the path."""
    path = Path(path)
    pil = to_pil(image)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            pil.save(f, format="PNG")
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise
    return path


# ---------------------------------------------------------------------------------------------------------------
# Line plots
# ---------------------------------------------------------------------------------------------------------------

#: Series colours of :func:`plot_curve`, in order (the common "category 10" palette).
PLOT_COLORS: tuple[tuple[int, int, int], ...] = tuple(
    tuple(int(h[i : i + 2], 16) for i in (0, 2, 4))
    for h in ("1f77b4", "ff7f0e", "2ca02c", "d62728", "9467bd", "8c564b", "e377c2", "7f7f7f", "bcbd22", "17becf")
)


def _nice_step(span: float, n: int) -> float:
    """A 1/2/5 × 10^k step giving about ``n`` intervals over ``span``."""
    raw = span / max(n, 1)
    mag = 10.0 ** math.floor(math.log10(raw))
    for m in (1.0, 2.0, 2.5, 5.0, 10.0):
        if raw <= m * mag * 1.0000001:
            return m * mag
    return 10.0 * mag


def _linear_axis(lo: float, hi: float, n: int = 5) -> tuple[float, float, list[float], float]:
    """Round limits enclosing [lo, hi] and the ticks between them; returns (lo, hi, ticks, step)."""
    if hi <= lo:
        pad = abs(lo) * 0.1 or 1.0
        lo, hi = lo - pad, hi + pad
    step = _nice_step(hi - lo, n)
    lo_r = math.floor(lo / step + 1e-9) * step
    hi_r = math.ceil(hi / step - 1e-9) * step
    k = int(round((hi_r - lo_r) / step))
    ticks = [lo_r + i * step for i in range(k + 1)]
    return lo_r, hi_r, ticks, step


def _compact_exp(text: str) -> str:
    """"1.5e+06" → "1.5e6", "2e-05" → "2e-5"."""
    mant, e, exp = text.partition("e")
    if not e:
        return text
    sign = "-" if exp.startswith("-") else ""
    return f"{mant}e{sign}{exp.lstrip('+-').lstrip('0') or '0'}"


def _fmt_tick(v: float, step: float) -> str:
    if v == 0 or abs(v) < step * 1e-6:
        return "0"
    if abs(v) >= 1e5 or step < 1e-3:
        return _compact_exp(f"{v:.2g}" if abs(step / v) > 0.05 else f"{v:.3g}")
    decimals = max(0, -int(math.floor(math.log10(step) + 1e-9)))
    if abs(step * 10**decimals - round(step * 10**decimals)) > 1e-6:  # 2.5 steps
        decimals += 1
    return f"{v:.{decimals}f}"


def _log_axis(lo: float, hi: float) -> tuple[float, float, list[float]]:
    """Decade limits enclosing [lo, hi] (positive) and ticks; 2 and 5 multiples added for short ranges."""
    e_lo, e_hi = math.floor(math.log10(lo) + 1e-9), math.ceil(math.log10(hi) - 1e-9)
    if e_hi == e_lo:
        e_hi += 1
    every = (e_hi - e_lo + 7) // 8  # at most about 8 labelled decades
    e_lo -= (e_lo % every) if every > 1 else 0
    e_hi += (-e_hi % every) if every > 1 else 0
    ticks = [10.0**e for e in range(e_lo, e_hi + 1, every)]
    if e_hi - e_lo <= 2:
        ticks = sorted(ticks + [m * 10.0**e for e in range(e_lo, e_hi) for m in (2.0, 5.0)])
    return 10.0**e_lo, 10.0**e_hi, ticks


def _fmt_log_tick(v: float) -> str:
    return f"{v:g}" if 1e-4 <= v < 1e5 else _compact_exp(f"{v:.0e}")


def _as_1d(seq, name: str) -> np.ndarray:
    if isinstance(seq, torch.Tensor):
        seq = seq.detach().cpu().double().numpy()
    try:
        arr = np.asarray(seq, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise DefocusError(f"{name} must be a 1-D sequence of numbers ({exc})") from None
    if arr.ndim != 1:
        raise DefocusError(f"{name} must be a 1-D sequence of numbers, got shape {arr.shape}")
    return arr


def plot_curve(
    xs: Sequence[float],
    ys_dict: Mapping[str, Sequence[float]],
    xlabel: str,
    ylabel: str,
    title: str,
    path: str | os.PathLike | None,
    size: tuple[int, int] = (640, 400),
    logy: bool = False,
) -> Image.Image:
    """Line plot of one or more series over shared ``xs``, with axes, ticks, grid, labels, title and a legend.

    ``ys_dict`` maps a legend name to values aligned with ``xs``; NaN/inf values leave gaps (and, with ``logy``, so
    do values ≤ 0). Text is drawn with Pillow's built-in font, which covers Latin script only (write "delta1", not
    "δ1"). Points are marked when a series has at most 40 of them. The legend goes in whichever corner of
    the plot area holds fewest points. Drawn at twice the size and downsampled, so lines are anti-aliased.
    Written atomically as PNG to ``path`` unless it is None; returns the image either way.
    """
    xs_a = _as_1d(xs, "xs")
    if xs_a.size == 0:
        raise DefocusError("plot_curve needs at least one x value")
    if not ys_dict:
        raise DefocusError("plot_curve needs at least one series in ys_dict")
    width, height = int(size[0]), int(size[1])
    if width < 200 or height < 150:
        raise DefocusError(f"plot size must be at least 200x150, got {width}x{height}")
    series: list[tuple[str, np.ndarray]] = []
    for name, ys in ys_dict.items():
        y = _as_1d(ys, f"series {name!r}")
        if y.shape != xs_a.shape:
            raise DefocusError(f"series {name!r} has {y.size} values but there are {xs_a.size} x values")
        if logy:
            y = np.where(y > 0, y, np.nan)
        series.append((str(name), np.where(np.isfinite(y), y, np.nan)))

    # Data ranges.
    fin_x = xs_a[np.isfinite(xs_a)]
    all_y = np.concatenate([y for _, y in series])
    fin_y = all_y[np.isfinite(all_y)]
    if fin_x.size == 0:
        raise DefocusError("plot_curve: no finite x value")
    x_lo, x_hi, x_ticks, x_step = _linear_axis(float(fin_x.min()), float(fin_x.max()), 6)
    if logy:
        y_lo, y_hi, y_ticks = _log_axis(*((float(fin_y.min()), float(fin_y.max())) if fin_y.size else (1.0, 10.0)))
        y_labels = [_fmt_log_tick(t) for t in y_ticks]
        y_map = lambda v: (np.log10(v) - math.log10(y_lo)) / (math.log10(y_hi) - math.log10(y_lo))  # noqa: E731
    else:
        y_range = (float(fin_y.min()), float(fin_y.max())) if fin_y.size else (0.0, 1.0)
        y_lo, y_hi, y_ticks, y_step = _linear_axis(*y_range)
        y_labels = [_fmt_tick(t, y_step) for t in y_ticks]
        y_map = lambda v: (np.asarray(v) - y_lo) / (y_hi - y_lo)  # noqa: E731
    x_labels = [_fmt_tick(t, x_step) for t in x_ticks]

    s = 2  # supersampling factor
    W, H = width * s, height * s
    font, title_font = _font(12 * s), _font(15 * s)
    _, line_h = _text_size("0", font)
    y_label_w = max(_text_size(t, font)[0] for t in y_labels)
    left = 8 * s + line_h + 6 * s + y_label_w + 6 * s
    right = W - max(16 * s, _text_size(x_labels[-1], font)[0] // 2 + 6 * s)
    top = (_text_size(title, title_font)[1] + 16 * s) if title else 14 * s
    bottom = H - (line_h * 2 + 16 * s)
    if right - left < 40 * s or bottom - top < 40 * s:
        raise DefocusError(f"plot size {width}x{height} is too small for its labels")

    def px(xv, yv):
        fx = (np.asarray(xv) - x_lo) / (x_hi - x_lo)
        fy = y_map(yv)
        return left + fx * (right - left), bottom - fy * (bottom - top)

    img = Image.new("RGB", (W, H), _WHITE)
    draw = ImageDraw.Draw(img)
    grid, axis = (228, 228, 228), (60, 60, 60)
    for t, lab in zip(x_ticks, x_labels):
        x, _ = px(t, y_lo if logy else y_ticks[0])
        draw.line([x, top, x, bottom], fill=grid, width=s)
        draw.line([x, bottom, x, bottom + 5 * s], fill=axis, width=s)
        draw.text((x, bottom + 7 * s), lab, fill=_TEXT, font=font, anchor="ma")
    for t, lab in zip(y_ticks, y_labels):
        _, y = px(x_lo, t)
        draw.line([left, y, right, y], fill=grid, width=s)
        draw.line([left - 5 * s, y, left, y], fill=axis, width=s)
        draw.text((left - 7 * s, y), lab, fill=_TEXT, font=font, anchor="rm")
    draw.rectangle([left, top, right, bottom], outline=axis, width=s)

    # Series (the axis limits enclose every finite point, so nothing needs clipping).
    counts = np.zeros(4)  # points per corner: top-left, top-right, bottom-left, bottom-right
    for i, (name, y) in enumerate(series):
        color = PLOT_COLORS[i % len(PLOT_COLORS)]
        ok = np.isfinite(y) & np.isfinite(xs_a)
        X, Y = px(xs_a, np.where(ok, y, y_lo if logy else 0.0))
        run: list[tuple[float, float]] = []
        for k in range(xs_a.size + 1):
            if k < xs_a.size and ok[k]:
                run.append((float(X[k]), float(Y[k])))
                continue
            if len(run) >= 2:
                draw.line(run, fill=color, width=2 * s, joint="curve")
            elif len(run) == 1:
                cx, cy = run[0]
                draw.ellipse([cx - 2 * s, cy - 2 * s, cx + 2 * s, cy + 2 * s], fill=color)
            run = []
        if ok.sum() <= 40:
            for cx, cy in zip(X[ok], Y[ok]):
                r = 3 * s
                draw.ellipse([cx - r, cy - r, cx + r, cy + r], fill=color, outline=_WHITE, width=max(1, s // 2))
        fx, fy = (X[ok] - left) / (right - left), (Y[ok] - top) / (bottom - top)
        counts += [
            np.sum((fx < 0.5) & (fy < 0.5)), np.sum((fx >= 0.5) & (fy < 0.5)),
            np.sum((fx < 0.5) & (fy >= 0.5)), np.sum((fx >= 0.5) & (fy >= 0.5)),
        ]  # fmt: skip
    # Legend.
    legend_font = font
    entries = [(name, PLOT_COLORS[i % len(PLOT_COLORS)]) for i, (name, _) in enumerate(series)]
    sw = 22 * s
    max_name_w = max(right - left - sw - 30 * s, 20 * s)
    names = [_fit_text(n, legend_font, max_name_w) for n, _ in entries]
    lw = max(_text_size(n, legend_font)[0] for n in names) + sw + 18 * s
    lh = len(entries) * (line_h + 4 * s) + 8 * s
    corner = int(np.argmin(counts + np.array([0.1, 0.0, 0.2, 0.3])))  # ties: top-right, top-left, bottom-left…
    lx = left + 8 * s if corner in (0, 2) else right - 8 * s - lw
    ly = top + 8 * s if corner in (0, 1) else bottom - 8 * s - lh
    draw.rectangle([lx, ly, lx + lw, ly + lh], fill=_WHITE, outline=(170, 170, 170), width=s)
    for j, ((_, color), name) in enumerate(zip(entries, names)):
        cy = ly + 4 * s + j * (line_h + 4 * s) + (line_h + 4 * s) // 2
        draw.line([lx + 6 * s, cy, lx + 6 * s + sw, cy], fill=color, width=2 * s)
        draw.text((lx + 12 * s + sw, cy), name, fill=_TEXT, font=legend_font, anchor="lm")

    # Labels.
    if title:
        draw.text(((left + right) // 2, 8 * s), title, fill=_TEXT, font=title_font, anchor="ma")
    draw.text(((left + right) // 2, H - 6 * s), xlabel, fill=_TEXT, font=font, anchor="md")
    if ylabel:
        yw, yh = _text_size(ylabel, font)
        yl = Image.new("RGB", (yw + 4 * s, yh + 2 * s), _WHITE)
        ImageDraw.Draw(yl).text((2 * s, 0), ylabel, fill=_TEXT, font=font)
        yl = yl.rotate(90, expand=True)
        img.paste(yl, (8 * s, int((top + bottom) / 2 - yl.height / 2)))

    out = img.resize((width, height), Image.LANCZOS)
    if path is not None:
        save_png(path, out)
    return out
