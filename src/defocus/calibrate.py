"""Self-calibration of the forward model on one stack, by re-rendering error alone (no ground truth).

Real lenses are neither Gaussian nor perfect disks, apertures are not exactly their EXIF value, and images may have
been blurred in sRGB or in linear light. Before refinement, candidate forward models are fitted to the stack itself:
starting from the same prediction, a short self-supervised refinement runs under each candidate on a downscaled copy
of the stack, and the candidate whose re-rendering then explains the observed images best (lowest reconstruction
term, 0.85·(1 − SSIM) + 0.15·L1) wins. The search is by coordinates: first the PSF shape × light model at the nominal
aperture (Gaussian, generalised Gaussian exp(−(ρ/s)⁴) and disk — three points along the family exp(−(ρ/s)^q) from
q = 2 to q = ∞ — each on sRGB values and in linear light), then the blur scale (an effective aperture) for the winner.
The blur scale is identifiable because one depth must explain every frame: scaling K cannot be compensated by moving
the depth for all focus distances at once.

The candidate shapes are the PSF families registered with ``calibrate=True``
(:data:`defocus.optics.psf.PSF_REGISTRY`, in registry order), each under every light model: a new family enters
the search by its registry entry alone. After them come the signed spherical aberrations of :data:`SIGNED_PAIRS` (a
bright rim behind focus and a bright core in front, or the reverse; ``ForwardSpec.near_psf``), which no symmetric
family re-renders on both sides of focus at once.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Sequence

import torch
import torch.nn.functional as F

from defocus.losses.terms import photometric
from defocus.models.prediction import Prediction
from defocus.optics.forward import LIGHT_MODELS, ForwardModel
from defocus.optics.psf import psf_names
from defocus.refine import refine

#: Blur scales tried by default with the best (psf, light) pair.
BLUR_SCALES = (0.7, 1.0, 1.4)
#: Signed spherical aberrations tried by default (PSF behind focus, PSF in front of it), where both are calibration
#: families.
SIGNED_PAIRS: tuple[tuple[str, str], ...] = (("ring", "core"), ("core", "ring"))


def calibration_families() -> tuple[tuple[str, ...], ...]:
    """The candidates tried by default: (psf, light) for every registered PSF family marked ``calibrate`` (in
    registry order: gaussian, gennorm, disk, ring, core), each on sRGB values and in linear light; then
    (psf, light, near_psf) for each signed aberration of :data:`SIGNED_PAIRS` under each light model."""
    names = psf_names(calibrate=True)
    symmetric = tuple((psf, light) for psf in names for light in LIGHT_MODELS)
    signed = tuple((far, light, near) for far, near in SIGNED_PAIRS if far in names and near in names
                   for light in LIGHT_MODELS)
    return symmetric + signed


def __getattr__(name: str) -> Any:
    # FAMILIES, the default candidate (psf, light) pairs, follows the PSF registry (calibration_families()).
    if name == "FAMILIES":
        return calibration_families()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


@dataclass
class Calibration:
    """The chosen forward model and the score of every candidate (lower is better)."""

    physics: ForwardModel
    scores: list[dict] = field(default_factory=list)

    def to_dict(self) -> dict:
        return {"chosen": self.physics.describe(), "candidates": self.scores}


@torch.no_grad()
def calibrate_forward_model(
    stack: torch.Tensor,
    focus: torch.Tensor,
    blur_per_dioptre: torch.Tensor,
    depth_range: tuple[float, float],
    init: Prediction,
    families: Sequence[tuple[str, str]] | None = None,
    blur_scales=BLUR_SCALES,
    steps: int = 15,
    max_size: int = 128,
) -> Calibration:
    """Picks the forward model that best re-renders ``stack`` (see module docstring).

    Args:
        stack: (1, N, 3, H, W) observed stack; focus, blur_per_dioptre: (1, N) for these pixels.
        depth_range: (near, far) metres; init: the starting prediction (batch of one) at the stack's size.
        families: (psf, light) pairs or (psf, light, near_psf) signed triples to try (at blur scale 1); default
            :func:`calibration_families` (``FAMILIES``);
            blur_scales: effective-aperture factors then tried with the best pair.
        steps: refinement steps per candidate; max_size: longest side of the downscaled copy used.
    """
    h, w = stack.shape[-2:]
    scale = min(1.0, max_size / max(h, w))
    size = (max(8, round(h * scale)), max(8, round(w * scale)))
    n = stack.shape[1]
    small = F.interpolate(stack[0], size=size, mode="area")[None] if scale < 1 else stack
    k = blur_per_dioptre * (size[1] / w)
    start = Prediction(
        depth=F.interpolate(init.depth, size=size, mode="area") if scale < 1 else init.depth,
        aif=F.interpolate(init.aif, size=size, mode="area") if scale < 1 else init.aif,
        confidence=F.interpolate(init.confidence, size=size, mode="area") if scale < 1 else init.confidence,
    )
    best: tuple[float, ForwardModel] | None = None
    scores: list[dict] = []

    def consider(psf: str, light: str, bs: float, near_psf: str | None = None) -> None:
        nonlocal best
        physics = ForwardModel(psf=psf, light=light, blur_scale=bs, near_psf=near_psf)
        with torch.enable_grad():
            # Per-pixel parameters (no correction pyramid): the candidates are compared as they were validated, and
            # at this small size the pyramid would have a level or none anyway.
            pred = refine(small, focus, k, depth_range, start, steps, physics, pyramid_levels=0)
        rendered = physics.rerender(pred.aif, pred.inv_depth, focus, k).stack
        score = float(photometric(rendered.reshape(-1, 3, *size), small.reshape(-1, 3, *size)))
        row = {"psf": psf, "light": light, "blur_scale": bs, "reconstruction": round(score, 6)}
        if physics.near_psf is not None:
            row["near_psf"] = physics.near_psf
        scores.append(row)
        if best is None or score < best[0]:
            best = (score, physics)

    for candidate in calibration_families() if families is None else families:
        consider(candidate[0], candidate[1], 1.0, *candidate[2:3])
    assert best is not None and n >= 1
    spec = best[1].spec
    for bs in blur_scales:
        if bs != 1.0:
            consider(spec.psf, spec.light, bs, spec.near_psf)
    return Calibration(physics=best[1], scores=scores)
