"""Confidence that means something: the probability that a pixel's depth is within 10 % of the truth.

A model's raw confidence (the network's head, the classical cue's strength) orders pixels but is no probability, and
it misses the commonest failure on real photos: isolated speckle, confident pixels whose depth disagrees with their
neighbours'. The calibrated confidence is a table lookup, fitted on held-out data rendered with randomised physics
(the validation scene groups and procedural validation scenes through :mod:`defocus.data.captures`, never the test
ones), of two features at the working size:

* ``c`` — the model's raw confidence, in [0, 1];
* ``s`` — the local spread of its depth: the standard deviation of ln(depth) over a :attr:`window` × window
  neighbourhood (speckle has a large one, a surface a small one).

:meth:`ConfidenceCalibration.apply` gives, per pixel, the fraction of the fitting pixels with similar (c, s) whose
depth was within :attr:`tolerance` (relative) of the truth, interpolated bilinearly between bin centres. The table
is made monotone (more raw confidence never lowers it, more spread never raises it). The global solve
(:mod:`defocus.solve`) takes it as its data weight and ``--min-confidence`` thresholds it, so ``--min-confidence 0.8``
keeps the pixels that were right 80 % of the time on the fitting data. :func:`reliability` is the
confidence-vs-error curve (BENCHMARKS.md).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Mapping, Sequence

import torch
import torch.nn.functional as F

from defocus.checks import check_shape
from defocus.errors import InputError

#: Bin edges of the depth spread s (std of ln depth): about 1 % steps of depth up to 32 %, then everything beyond.
SPREAD_EDGES: tuple[float, ...] = (0.0, 0.005, 0.01, 0.02, 0.04, 0.08, 0.16, 0.32, 10.0)
#: Pseudo-count that pulls a sparsely filled bin towards the rate of its raw-confidence row.
PRIOR_COUNT = 20.0


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


@dataclass(frozen=True)
class ConfidenceCalibration:
    """The lookup table from (raw confidence, depth spread) to the probability of being within tolerance.

    Attributes:
        confidence_edges: K + 1 increasing bin edges over the raw confidence.
        spread_edges: L + 1 increasing bin edges over the depth spread.
        table: K rows of L probabilities.
        tolerance: relative depth error counted as right (0.1 = within 10 %).
        window: side of the spread's neighbourhood, working-size pixels.
        source: what it was fitted on (one line).
    """

    confidence_edges: tuple[float, ...]
    spread_edges: tuple[float, ...]
    table: tuple[tuple[float, ...], ...]
    tolerance: float = 0.1
    window: int = 5
    source: str = ""

    def __post_init__(self) -> None:
        k, l_ = len(self.confidence_edges) - 1, len(self.spread_edges) - 1
        if k < 1 or l_ < 1 or len(self.table) != k or any(len(row) != l_ for row in self.table):
            raise InputError(f"a confidence calibration needs a {k} x {l_} table for its edges", field="calibration")
        for edges in (self.confidence_edges, self.spread_edges):
            if any(b <= a for a, b in zip(edges, edges[1:])):
                raise InputError("a confidence calibration's bin edges must increase", field="calibration")
        if not all(0.0 <= v <= 1.0 and math.isfinite(v) for row in self.table for v in row):
            raise InputError("a confidence calibration's table holds probabilities in [0, 1]", field="calibration")

    # ---------------------------------------------------------------------------------------------- storage
    def to_dict(self) -> dict[str, Any]:
        return {"confidence_edges": list(self.confidence_edges), "spread_edges": list(self.spread_edges),
                "table": [list(r) for r in self.table], "tolerance": self.tolerance, "window": self.window,
                "source": self.source}

    @classmethod
    def from_dict(cls, values: Mapping[str, Any]) -> "ConfidenceCalibration":
        try:
            return cls(tuple(float(v) for v in values["confidence_edges"]),
                       tuple(float(v) for v in values["spread_edges"]),
                       tuple(tuple(float(v) for v in row) for row in values["table"]),
                       float(values.get("tolerance", 0.1)), int(values.get("window", 5)), str(values.get("source", "")))
        except (KeyError, TypeError, ValueError) as exc:
            raise InputError(f"not a confidence calibration: {exc}", field="calibration") from None

    # ---------------------------------------------------------------------------------------------- lookup
    def apply(self, confidence: torch.Tensor, inv_depth: torch.Tensor) -> torch.Tensor:
        """The calibrated confidence (B, 1, H, W) in [0, 1] of a raw ``confidence`` (B, 1, H, W) and the
        prediction's ``inv_depth`` (B, 1, H, W) dioptres."""
        sizes = check_shape(confidence, "B 1 H W", "confidence")
        check_shape(inv_depth, "B 1 H W", "inv_depth", sizes)
        spread = depth_spread(inv_depth, self.window)
        table = torch.tensor(self.table, dtype=torch.float32)
        ic = _fractional_index(confidence.float(), self.confidence_edges)
        is_ = _fractional_index(spread.float(), self.spread_edges)
        c0, s0 = ic.floor().long(), is_.floor().long()
        c1 = (c0 + 1).clamp_max(table.shape[0] - 1)
        s1 = (s0 + 1).clamp_max(table.shape[1] - 1)
        fc, fs = ic - c0, is_ - s0
        out = ((1 - fc) * (1 - fs) * table[c0, s0] + (1 - fc) * fs * table[c0, s1]
               + fc * (1 - fs) * table[c1, s0] + fc * fs * table[c1, s1])
        return out.clamp(0.0, 1.0).to(confidence.dtype)

    __call__ = apply


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
    confidence: Sequence[torch.Tensor], inv_depth: Sequence[torch.Tensor], true_depth: Sequence[torch.Tensor],
    tolerance: float = 0.1, confidence_bins: int = 10, window: int = 5, source: str = "",
) -> ConfidenceCalibration:
    """Fits the table on predictions and their ground truth.

    Args:
        confidence, inv_depth: per stack (1, 1, h, w) raw confidence and predicted inverse depth at the working size.
        true_depth: per stack (h, w) metres, 0 = unknown (ignored).
        confidence_bins: raw-confidence bins, at quantiles of the fitting pixels.
    """
    cs, ss, ok = [], [], []
    for conf, inv, gt in zip(confidence, inv_depth, true_depth):
        valid = (gt > 0).reshape(-1)
        depth = 1.0 / inv.double().clamp_min(1e-9)
        right = ((depth[0, 0] - gt).abs() <= tolerance * gt).reshape(-1)
        cs.append(conf.reshape(-1)[valid].float())
        ss.append(depth_spread(inv, window).reshape(-1)[valid].float())
        ok.append(right[valid].float())
    if not cs or sum(int(c.numel()) for c in cs) == 0:
        raise InputError("fit_calibration needs predictions with ground truth", field="calibration")
    c, s, r = torch.cat(cs), torch.cat(ss), torch.cat(ok)
    q = torch.quantile(c[torch.randperm(c.numel(), generator=torch.Generator().manual_seed(0))[:200_000]],
                       torch.linspace(0, 1, confidence_bins + 1))
    edges = [0.0]
    for v in q[1:-1].tolist():
        if v > edges[-1] + 1e-4:
            edges.append(v)
    edges.append(1.0 + 1e-6)
    c_idx = (torch.bucketize(c, torch.tensor(edges[1:-1]), right=True)).clamp(0, len(edges) - 2)
    s_idx = (torch.bucketize(s, torch.tensor(SPREAD_EDGES[1:-1]), right=True)).clamp(0, len(SPREAD_EDGES) - 2)
    k, l_ = len(edges) - 1, len(SPREAD_EDGES) - 1
    flat = c_idx * l_ + s_idx
    hits = torch.zeros(k * l_).index_add_(0, flat, r).reshape(k, l_)
    counts = torch.zeros(k * l_).index_add_(0, flat, torch.ones_like(r)).reshape(k, l_)
    row_rate = (hits.sum(1) + 1.0) / (counts.sum(1) + 2.0)
    table = (hits + PRIOR_COUNT * row_rate[:, None]) / (counts + PRIOR_COUNT)
    table = torch.cummax(table, dim=0).values  # more raw confidence never lowers it
    table = torch.flip(torch.cummax(torch.flip(table, [1]), dim=1).values, [1])  # more spread never raises it
    return ConfidenceCalibration(tuple(edges), SPREAD_EDGES, tuple(tuple(round(float(v), 4) for v in row)
                                                                  for row in table), tolerance, window, source)


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
