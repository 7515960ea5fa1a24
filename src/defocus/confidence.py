"""Confidence that means something: the probability that a pixel's depth is within 10 % of the truth.

A model's raw confidence (the network's head, the classical cue's strength) orders pixels but is no probability, and
it misses the commonest failure on real photos: isolated speckle, confident pixels whose depth disagrees with their
neighbours'. The calibrated confidence is a table lookup, fitted on held-out data rendered with randomised physics
(the validation scene groups and procedural validation scenes through :mod:`defocus.data.captures`, never the test
ones), of two features at the working size:

* ``c`` — the model's raw confidence, in [0, 1];
* ``s`` — the local spread of its depth: the standard deviation of ln(depth) over a :attr:`window` × window
  neighbourhood (speckle has a large one, a surface a small one);
* ``τ`` — the local texture of the all-in-focus image against the stack's noise (:func:`texture_snr`: about 1 where
  the image holds noise only, as on a plain wall, where no focus cue can exist however confident the model is).

:meth:`ConfidenceCalibration.apply` gives, per pixel, the fraction of the fitting pixels with similar (c, s, τ) whose
depth was within :attr:`tolerance` (relative) of the truth, interpolated linearly between the raw-confidence bin centres. The table
is made monotone in the raw confidence and the texture (more of either never lowers it). The global solve
(:mod:`defocus.solve`) takes it as its data weight and ``--min-confidence`` thresholds it, so ``--min-confidence 0.8``
keeps the pixels that were right 80 % of the time on the fitting data. :func:`reliability` is the
confidence-vs-error curve (BENCHMARKS.md).

The same table type, fitted on the default path's solved depth with the solve's evidence support
(:func:`defocus.predict.solve_support`) in the place of ``c``, is the written confidence after the solve (the
packaged entry ``"solve"``, :data:`defocus.predict.SOLVED_CALIBRATION`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Mapping, Sequence

import torch
import torch.nn.functional as F

from defocus.checks import check_shape
from defocus.errors import InputError
from defocus.filters import immerkaer_response

#: Bin edges of the depth spread s (std of ln depth): about 1 % steps of depth up to 32 %, then everything beyond.
SPREAD_EDGES: tuple[float, ...] = (0.0, 0.005, 0.01, 0.02, 0.04, 0.08, 0.16, 0.32, 10.0)
#: Bin edges of the texture τ (local response to Immerkær's mask / the noise's): noise only is about 1.
TEXTURE_EDGES: tuple[float, ...] = (0.0, 1.5, 2.5, 4.0, 8.0, 16.0, 1e9)
#: Pseudo-count that pulls a sparsely filled bin towards the rate of its raw-confidence row.
PRIOR_COUNT = 20.0
#: Immerkær's mask [[1, −2, 1], [−2, 4, −2], [1, −2, 1]] has a mean absolute response of 6 √(2/π) σ to white noise σ.
_NOISE_RESPONSE = 6.0 * math.sqrt(2.0 / math.pi)
#: The smallest noise σ assumed (half an 8-bit level): a clean render is not infinitely textured.
MIN_NOISE_SIGMA = 0.5 / 255.0


def depth_spread(inv_depth: torch.Tensor, window: int = 5) -> torch.Tensor:
    """Standard deviation of ln(depth) over ``window`` × ``window`` neighbourhoods (replicated border).

    Args:
        inv_depth: (B, 1, H, W) dioptres (> 0).
    Returns:
        (B, 1, H, W), dimensionless (0.1 ≈ 10 % of depth).
    """
    check_shape(inv_depth, "B 1 H W", "inv_depth")
    x = torch.log(inv_depth.double().clamp_min(1e-9))
    r = window // 2
    xp = F.pad(x, (r, r, r, r), mode="replicate")
    mean = F.avg_pool2d(xp, window, stride=1)
    mean_sq = F.avg_pool2d(xp * xp, window, stride=1)
    return (mean_sq - mean * mean).clamp_min(0.0).sqrt().to(inv_depth.dtype)


def texture_snr(grey: torch.Tensor, noise_sigma: torch.Tensor | float, window: int = 7) -> torch.Tensor:
    """Local texture against noise: the mean absolute response of ``grey`` to Immerkær's mask over ``window`` ×
    ``window`` neighbourhoods, divided by the response noise of σ ``noise_sigma`` alone would give.

    Args:
        grey: (B, 1, H, W) grey image in [0, 1] (the all-in-focus image); noise_sigma: the stack's noise σ in the
            same units, a number or (B,) (at least :data:`MIN_NOISE_SIGMA` is used).
    Returns:
        (B, 1, H, W): about 1 on noise alone, large on texture.
    """
    check_shape(grey, "B 1 H W", "grey")
    response = immerkaer_response(F.pad(grey.double(), (1, 1, 1, 1), mode="replicate"))
    r = window // 2
    local = F.avg_pool2d(F.pad(response, (r, r, r, r), mode="replicate"), window, stride=1)
    sigma = torch.as_tensor(noise_sigma, dtype=torch.float64).reshape(-1, 1, 1, 1).clamp_min(MIN_NOISE_SIGMA)
    return (local / (_NOISE_RESPONSE * sigma)).to(grey.dtype)


@dataclass(frozen=True)
class ConfidenceCalibration:
    """The lookup table from (raw confidence, depth spread) to the probability of being within tolerance.

    Attributes:
        confidence_edges: K + 1 increasing bin edges over the raw confidence.
        spread_edges: L + 1 increasing bin edges over the depth spread.
        texture_edges: M + 1 increasing bin edges over the texture τ.
        table: K × L × M probabilities (nested tuples).
        tolerance: relative depth error counted as right (0.1 = within 10 %).
        window: side of the spread's neighbourhood, working-size pixels.
        source: what it was fitted on (one line).
    """

    confidence_edges: tuple[float, ...]
    spread_edges: tuple[float, ...]
    texture_edges: tuple[float, ...]
    table: tuple[tuple[tuple[float, ...], ...], ...]
    tolerance: float = 0.1
    window: int = 5
    source: str = ""

    def __post_init__(self) -> None:
        shape = tuple(len(e) - 1 for e in (self.confidence_edges, self.spread_edges, self.texture_edges))
        try:
            table = torch.tensor(self.table, dtype=torch.float64)
        except (TypeError, ValueError):
            table = None
        if min(shape) < 1 or table is None or tuple(table.shape) != shape:
            raise InputError(f"a confidence calibration needs a {' x '.join(map(str, shape))} table for its edges",
                             field="calibration")
        for edges in (self.confidence_edges, self.spread_edges, self.texture_edges):
            if any(b <= a for a, b in zip(edges, edges[1:])):
                raise InputError("a confidence calibration's bin edges must increase", field="calibration")
        if not bool(((table >= 0) & (table <= 1)).all()):
            raise InputError("a confidence calibration's table holds probabilities in [0, 1]", field="calibration")

    # ---------------------------------------------------------------------------------------------- storage
    def to_dict(self) -> dict[str, Any]:
        return {"confidence_edges": list(self.confidence_edges), "spread_edges": list(self.spread_edges),
                "texture_edges": list(self.texture_edges), "table": [[list(r) for r in m] for m in self.table],
                "tolerance": self.tolerance, "window": self.window, "source": self.source}

    @classmethod
    def from_dict(cls, values: Mapping[str, Any]) -> "ConfidenceCalibration":
        try:
            return cls(tuple(float(v) for v in values["confidence_edges"]),
                       tuple(float(v) for v in values["spread_edges"]),
                       tuple(float(v) for v in values["texture_edges"]),
                       tuple(tuple(tuple(float(v) for v in row) for row in m) for m in values["table"]),
                       float(values.get("tolerance", 0.1)), int(values.get("window", 5)), str(values.get("source", "")))
        except (KeyError, TypeError, ValueError) as exc:
            raise InputError(f"not a confidence calibration: {exc}", field="calibration") from None

    # ---------------------------------------------------------------------------------------------- lookup
    def apply(self, confidence: torch.Tensor, inv_depth: torch.Tensor, texture: torch.Tensor) -> torch.Tensor:
        """The calibrated confidence (B, 1, H, W) in [0, 1] of a raw ``confidence`` (B, 1, H, W), the prediction's
        ``inv_depth`` (B, 1, H, W) dioptres and the AIF's ``texture`` (B, 1, H, W, :func:`texture_snr`)."""
        sizes = check_shape(confidence, "B 1 H W", "confidence")
        check_shape(inv_depth, "B 1 H W", "inv_depth", sizes)
        check_shape(texture, "B 1 H W", "texture", sizes)
        table = torch.tensor(self.table, dtype=torch.float32)
        # Linear between the raw-confidence bin centres (the map stays smooth where the confidence is); the bin
        # itself along the spread and the texture, whose rates need not vary linearly between bin centres (a
        # linear blend there is biased, measured on fitting data).
        ic = _fractional_index(confidence.float(), self.confidence_edges)
        c0 = ic.floor().long()
        c1 = (c0 + 1).clamp_max(table.shape[0] - 1)
        fc = ic - c0
        s = _bin(depth_spread(inv_depth, self.window).float(), self.spread_edges)
        t = _bin(texture.float(), self.texture_edges)
        out = (1 - fc) * table[c0, s, t] + fc * table[c1, s, t]
        return out.clamp(0.0, 1.0).to(confidence.dtype)

    __call__ = apply


def _bin(x: torch.Tensor, edges: Sequence[float]) -> torch.Tensor:
    """Index of the bin of ``edges`` that holds ``x`` (clamped to the first and last bins)."""
    inner = torch.tensor(list(edges[1:-1]), dtype=x.dtype)
    return torch.bucketize(x, inner, right=True).clamp(0, len(edges) - 2)


def _fractional_index(x: torch.Tensor, edges: Sequence[float]) -> torch.Tensor:
    """Position of ``x`` among the bin centres (0 at the first centre, K − 1 at the last; clamped): the coordinate
    of a bilinear lookup."""
    e = torch.tensor(edges, dtype=torch.float32)
    centres = (e[:-1] + e[1:]) / 2.0
    if centres.numel() == 1:
        return torch.zeros_like(x)
    xc = x.clamp(float(centres[0]), float(centres[-1]))
    i = (torch.bucketize(xc, centres, right=True) - 1).clamp(0, centres.numel() - 2)
    lo, hi = centres[i], centres[i + 1]
    return i.float() + ((xc - lo) / (hi - lo)).clamp(0.0, 1.0)


def fit_calibration(
    confidence: Sequence[torch.Tensor], inv_depth: Sequence[torch.Tensor], texture: Sequence[torch.Tensor],
    true_depth: Sequence[torch.Tensor], tolerance: float = 0.1, confidence_bins: int = 10, window: int = 5,
    source: str = "",
) -> ConfidenceCalibration:
    """Fits the table on predictions and their ground truth.

    Args:
        confidence, inv_depth, texture: per stack (1, 1, h, w) raw confidence, predicted inverse depth and AIF
            texture (:func:`texture_snr`) at the working size.
        true_depth: per stack (h, w) metres, 0 = unknown (ignored).
        confidence_bins: raw-confidence bins, at quantiles of the fitting pixels.
    """
    cs, ss, ts, ok = [], [], [], []
    for conf, inv, tex, gt in zip(confidence, inv_depth, texture, true_depth):
        valid = (gt > 0).reshape(-1)
        depth = 1.0 / inv.double().clamp_min(1e-9)
        right = ((depth[0, 0] - gt).abs() <= tolerance * gt).reshape(-1)
        cs.append(conf.reshape(-1)[valid].float())
        ss.append(depth_spread(inv, window).reshape(-1)[valid].float())
        ts.append(tex.reshape(-1)[valid].float())
        ok.append(right[valid].float())
    if not cs or sum(int(c.numel()) for c in cs) == 0:
        raise InputError("fit_calibration needs predictions with ground truth", field="calibration")
    c, s, t, r = torch.cat(cs), torch.cat(ss), torch.cat(ts), torch.cat(ok)
    q = torch.quantile(c[torch.randperm(c.numel(), generator=torch.Generator().manual_seed(0))[:200_000]],
                       torch.linspace(0, 1, confidence_bins + 1))
    edges = [0.0]
    for v in q[1:-1].tolist():
        if v > edges[-1] + 1e-4:
            edges.append(v)
    edges.append(1.0 + 1e-6)
    k, l_, m = len(edges) - 1, len(SPREAD_EDGES) - 1, len(TEXTURE_EDGES) - 1
    flat = (_bin(c, edges) * l_ + _bin(s, SPREAD_EDGES)) * m + _bin(t, TEXTURE_EDGES)
    hits = torch.zeros(k * l_ * m).index_add_(0, flat, r).reshape(k, l_, m)
    counts = torch.zeros(k * l_ * m).index_add_(0, flat, torch.ones_like(r)).reshape(k, l_, m)
    row_rate = (hits.sum((1, 2)) + 1.0) / (counts.sum((1, 2)) + 2.0)
    table = (hits + PRIOR_COUNT * row_rate[:, None, None]) / (counts + PRIOR_COUNT)
    # Monotone in raw confidence and in texture (both are evidence of a focus cue). Not in the spread: a smooth
    # patch can be smoothly wrong as well as right (a blob on a plain wall), so a small spread is no evidence alone.
    for _ in range(2):
        table = _monotone(table, dim=0)
        table = _monotone(table, dim=2)
    nested = tuple(tuple(tuple(round(float(v), 4) for v in row) for row in mat) for mat in table)
    return ConfidenceCalibration(tuple(edges), SPREAD_EDGES, TEXTURE_EDGES, nested, tolerance, window, source)


def _monotone(table: torch.Tensor, dim: int) -> torch.Tensor:
    """``table`` made non-decreasing along ``dim``: the mean of its running maximum from the start and its running
    minimum from the end (both monotone; either alone would bias every violation one way)."""
    up = torch.cummax(table, dim=dim).values
    down = torch.flip(torch.cummin(torch.flip(table, [dim]), dim=dim).values, [dim])
    return (up + down) / 2.0


def reliability(probability: torch.Tensor, right: torch.Tensor, bins: int = 10) -> list[dict[str, float]]:
    """The confidence-vs-error curve: for bins of the (calibrated) ``probability`` (any shape), the mean predicted
    probability, the observed fraction ``right`` (bool, same shape) and the pixel count."""
    p, r = probability.reshape(-1).float(), right.reshape(-1).float()
    idx = (p * bins).long().clamp(0, bins - 1)
    rows = []
    for b in range(bins):
        m = idx == b
        n = int(m.sum())
        if n:
            rows.append({"bin": f"{b / bins:.1f}-{(b + 1) / bins:.1f}", "predicted": float(p[m].mean()),
                         "observed": float(r[m].mean()), "pixels": n})
    return rows
