"""Test-time self-supervised refinement of one prediction on its own stack (no ground truth).

The inverse depth (through the network's bounded parameterisation) and the AIF are initialised from a
prediction and optimised under the re-render-and-compare loss used for training (without its AIF-sharpness term,
see :func:`refinement_loss_config`), with a given :class:`~defocus.optics.forward.ForwardModel` — self-calibrated
on the stack with ``--refine-psf auto`` (:mod:`defocus.calibrate`), or a named family (``disk``: disk PSF in linear
light; ``gaussian``: the paper's Gaussian on sRGB values).

The inverse depth is not optimised pixel by pixel but as a multi-resolution sum: the initial logit plus one
correction grid per level of a pyramid (full size, 1/2, 1/4, ...; each upsampled bilinearly and guided-filtered on
the initial AIF so that it stops at image edges), see :func:`pyramid_levels_for`. The re-rendering loss only
constrains depth where the stack has texture; with per-pixel parameters a correction found at an edge spreads into
the texture-less area around it only through the smoothness term, a pixel or so per step. The coarse grids move
whole regions at once (a preconditioner, not a different loss: any per-pixel field is still reachable through the
full-size grid). The level count and the guide were chosen on the validation scene groups; the figures, and the
known weakness on real stacks whose forward model fits poorly (texture-less surfaces drift), are in BENCHMARKS.md
("Refinement as a correction pyramid", "The real phone stacks").
"""

from __future__ import annotations

import math
import time

import torch
import torch.nn.functional as F

from defocus.color import to_grey
from defocus.filters import guided_filter
from defocus.losses.selfsup import LossConfig, SelfSupervisedLoss
from defocus.models.daifnet import inverse_depth_to_logit, logit_to_inverse_depth
from defocus.models.prediction import Prediction
from defocus.optics.forward import ForwardModel


def refinement_loss_config() -> LossConfig:
    """The training loss without the AIF-sharpness term.

    That term rewards detail without bound; over a training set it only steers the network's blending, but optimising
    one stack's AIF directly it sharpens past the truth (ringing, amplified noise). Without it the reconstruction
    term alone decides how sharp the AIF is (BENCHMARKS.md has the AIF PSNR with and without).
    """
    cfg = LossConfig()
    cfg.weights = {**cfg.weights, "aif_sharpness": 0.0}
    return cfg


#: The coarsest correction grid keeps at least this many cells on the image's shorter side (chosen on the validation
#: scene groups; coarser grids overshoot under noise).
PYRAMID_MIN_CELLS = 30
#: Each coarse grid is upsampled bilinearly and then guided-filtered on the initial AIF (radius 2**level, this eps),
#: so that a coarse correction stops at strong image edges instead of crossing onto the neighbouring surface.
PYRAMID_GUIDE_EPS = 1e-3


def pyramid_levels_for(height: int, width: int, min_cells: int = PYRAMID_MIN_CELLS) -> int:
    """How many halvings below full size the refinement's correction pyramid has: the largest L with
    ``min(height, width) / 2**L >= min_cells`` (0 for images smaller than that: per-pixel only)."""
    short = min(height, width)
    return int(math.log2(short / min_cells)) if short >= min_cells else 0  # log2 >= 0 here: int() floors


def refine(
    stack: torch.Tensor,
    focus: torch.Tensor,
    blur_per_dioptre: torch.Tensor,
    depth_range: tuple[float, float],
    init: Prediction,
    steps: int,
    physics: ForwardModel,
    lr: float = 0.05,
    aif_lr: float = 0.005,
    patience: int = 10,
    min_improvement: float = 1e-3,
    report: dict | None = None,
    snapshots: tuple[int, ...] = (),
    loss_config: LossConfig | None = None,
    pyramid_levels: int | None = None,
) -> Prediction:
    """Per-stack optimisation of (inverse depth, AIF) from ``init``.

    Args:
        stack: (B, N, 3, H, W) observed stack; focus, blur_per_dioptre: (B, N).
        depth_range: (near, far) metres, the bounds of the inverse-depth parameterisation.
        init: the starting prediction (its ``inv_depth`` and ``aif``); its confidence is kept.
        steps: the most optimisation steps (Adam); physics: the forward model of the loss.
        patience, min_improvement: stop early once the loss has not fallen by ``min_improvement`` (relative) below
            its best for ``patience`` steps, counted from the first step at which it is below its starting value
            or from step 2 x ``patience``, whichever comes first (0 = never stop early).
        loss_config: the weights of the loss (default :func:`refinement_loss_config`).
        pyramid_levels: coarser correction grids besides the full-size one (None: :func:`pyramid_levels_for`; 0:
            per-pixel parameters only).
        report: if given, receives ``steps_run``, ``losses`` (the loss at every step) and, for each count in
            ``snapshots``, ``snapshots[count]``: the prediction after that many steps (the final one if refinement
            stopped before) and ``snapshot_seconds[count]`` the time it took — one run gives the accuracy and
            cost of several budgets; ``seconds``: the whole run.
    Returns:
        The refined :class:`Prediction` (no gradient).
    """
    inv_near, inv_far = 1.0 / depth_range[0], 1.0 / depth_range[1]
    base = inverse_depth_to_logit(init.inv_depth, inv_near, inv_far).detach()
    h, w = base.shape[-2:]
    levels = pyramid_levels_for(h, w) if pyramid_levels is None else pyramid_levels
    if levels < 0:
        raise ValueError(f"pyramid_levels must be >= 0, got {levels}")
    guide = to_grey(init.aif.detach().to(base.dtype))[:, None]  # coarse corrections follow the AIF's edges
    corrections = [base.new_zeros(*base.shape[:2], max(1, h >> lv), max(1, w >> lv)).requires_grad_(True)
                   for lv in range(levels + 1)]
    aif_logit = torch.logit(init.aif.clamp(1e-3, 1 - 1e-3)).detach().requires_grad_(True)
    loss_fn = SelfSupervisedLoss(loss_config or refinement_loss_config())
    # The AIF moves slowly: the network's AIF is already good, and a fast AIF would fit the sensor noise.
    opt = torch.optim.Adam([{"params": corrections, "lr": lr}, {"params": [aif_logit], "lr": aif_lr}])
    confidence = init.confidence.detach()
    losses: list[float] = []
    taken: dict[int, Prediction] = {}

    def current() -> Prediction:
        """The prediction the parameters stand for now (with gradient when enabled)."""
        logit = base + corrections[0]
        for level, grid in enumerate(corrections[1:], start=1):
            up = F.interpolate(grid, size=(h, w), mode="bilinear", align_corners=False)
            logit = logit + guided_filter(guide, up, 2**level, PYRAMID_GUIDE_EPS)
        inv = logit_to_inverse_depth(logit, inv_near, inv_far)
        return Prediction(depth=1.0 / inv, aif=torch.sigmoid(aif_logit), confidence=confidence, inv_depth=inv)

    times: dict[int, float] = {}
    start = time.perf_counter()
    best, since_best = float("inf"), 0
    for step in range(steps):
        if step in snapshots:
            with torch.no_grad():
                taken[step], times[step] = current(), time.perf_counter() - start
        loss, _ = loss_fn(stack, current(), physics, focus, blur_per_dioptre)
        value = float(loss.detach())
        losses.append(value)
        if value < best * (1.0 - min_improvement):
            best, since_best = value, 0
        elif best < losses[0] or step >= 2 * patience:
            # The count starts once the loss has first fallen below its starting value (or after a grace of
            # 2 x patience steps, for a loss that cannot fall): the first Adam steps on the coarse grids often
            # overshoot and raise it for a while before it falls far below (on a validation stack 6.7 -> 11.6 at
            # step 2, back under 6.7 at step 12, 3.8 at step 30); counting from step 0 stopped such stacks at
            # step 11, in a state worse than the start.
            since_best += 1
            if patience and since_best >= patience:
                break  # the re-rendering error stopped falling
        opt.zero_grad()
        loss.backward()
        opt.step()
    with torch.no_grad():
        final, elapsed = current(), time.perf_counter() - start
    if report is not None:
        report.update(steps_run=len(losses), losses=losses, seconds=elapsed,
                      snapshots={c: taken.get(c, final) for c in snapshots},
                      snapshot_seconds={c: times.get(c, elapsed) for c in snapshots})
    return final
