"""The one inference pipeline: depth and all-in-focus image for a focal stack, as ``defocus predict`` gives them.

:func:`predict_stack` is what every caller runs — ``defocus predict``, :func:`estimate` (``defocus.estimate``),
``defocus evaluate``, ``defocus demo`` and the benchmarks — so that every figure describes the path users get. Its
options (:class:`PredictOptions`) default to the command line's. Stages:

1. **align** the frames to the middle-focus frame (:mod:`defocus.data.align`) — only where the estimated motion is
   worth correcting: a registered (tripod, synthetic) stack keeps its frames untouched and its full size; then
   **normalise exposure** across the frames (:mod:`defocus.data.exposure`: phones auto-expose every frame) — only
   where a frame's exposure differs by more than a few per cent;
2. **estimate** at a working size (:func:`working_size`: the model's preferred blur per dioptre, bounded memory),
   the network in overlapping tiles, optionally followed by test-time refinement (:mod:`defocus.refine`); the
   texture-less fill is the model's own (it runs once, inside the model);
3. **upsample** to the input's full resolution: inverse depth by guided upsampling on the full-resolution AIF,
   which is composed from the full-resolution frames.

A stack without focus distances gives a relative result (:class:`RelativePrediction`, a focus-index map) instead.
Writing the outputs is :mod:`defocus.outputs`.
"""

from __future__ import annotations

import functools
import os
import time
from dataclasses import dataclass, field, replace
from typing import Any, Callable

import torch
import torch.nn.functional as F
from torch import nn

from defocus.checks import check_depth_range, check_shape
from defocus.data.stack import FocalStack, require_camera
from defocus.errors import DefocusError, InputError
from defocus.models.checkpoint import packaged_calibration
from defocus.models.classical import ClassicalEstimator
from defocus.models.prediction import Prediction
from defocus.optics.camera import ThinLensCamera, default_depth_range
from defocus.optics.forward import ForwardModel
from defocus.refine import refine

#: The automatic working size puts the stack's largest blur per dioptre K (CoC pixels per dioptre) near this value.
#: Chosen through this pipeline on the RGB-D frames of the train and validation scene groups (never the test ones),
#: rendered at 320 x 240 and 640 x 480 under both protocols, among 12-37 px/D and the input's size: 20 beat 16 (the
#: earlier choice) on δ1, AbsRel and RMSE in three of the four settings (BENCHMARKS.md, "Working size").
TARGET_BLUR_PER_DIOPTRE = 20.0
#: ... but a stack is not shrunk below this K, where the defocus cue starts to vanish into the pixels.
MIN_BLUR_PER_DIOPTRE = 6.0
#: Pixels of the working image above which the automatic size gives up K (down to MIN_BLUR_PER_DIOPTRE) for time.
WORKING_PIXEL_BUDGET = 2_000_000
#: ... and the automatic size never shrinks the longest side below this (or the input's, if smaller): a stack of a
#: camera with a large K (a long lens, a small pixel pitch) brought to K = 20 at 320 px wide would be estimated on
#: 90-pixel images, too few for the network (the dining-room frames of the validation split under random cameras:
#: δ1 0.31 at 118 x 88, 0.94 at the input's 320 x 240; BENCHMARKS.md, "Working size under random cameras").
MIN_AUTO_LONG_SIDE = 512
#: Confidence below which the relative focus-index map is filled edge-aware from confident neighbours (the
#: classical SML cue; relative stacks have no network).
RELATIVE_FILL_THRESHOLD = 0.15
#: Frames smaller than this (shorter side, pixels) are not aligned: too little image to register reliably.
MIN_ALIGN_SIZE = 64
#: Tiles of the network at the working size (bounded memory): side and overlap in working pixels.
TILE_SIZE, TILE_OVERLAP = 512, 64


@dataclass(frozen=True)
class PredictOptions:
    """What the pipeline does; the defaults are those of ``defocus predict``.

    Attributes:
        align: register hand-held frames first (a stack whose frames need no correction is left untouched).
        exposure: bring every frame to the stack's mean exposure (:mod:`defocus.data.exposure`; frames of equal
            exposure are left untouched).
        max_size: longest side in pixels of the estimation; None = automatic (:func:`working_size`).
        depth_range: (near, far) metres of the bounded output; None = the camera's default
            (:func:`~defocus.optics.camera.default_depth_range`).
        refine_steps: test-time self-supervised refinement steps (0 = none).
        refine_model: the refinement's forward model: ``"auto"`` (calibrated on the stack), a family name, or a
            :class:`~defocus.optics.forward.ForwardModel`.
        device: where the model runs (``"cpu"``, ``"cuda"``).
        confidence: ``"calibrated"`` (the model's confidence calibration, :mod:`defocus.confidence`: the probability
            that a pixel's depth is within 10 % — what the solve weighs and ``--min-confidence`` thresholds) or
            ``"raw"`` (the model's own score). A model without a calibration gives its raw confidence either way.
        solve: follow the estimate with the global edge-aware solve (:mod:`defocus.solve`,
            :func:`solve_inverse_depth`) on log depth at the working size, the AIF as its guide (a relative stack's
            focus-index map likewise); its data term is the model's estimate weighted by its (calibrated) confidence
            and, with ``solve_classical``, also the classical estimate weighted by its own.
        solve_smoothness: its λ at a working image of longer side :data:`SOLVE_REFERENCE_SIZE` px, scaled by
            (size / that)² at others (:func:`defocus.solve.resolution_smoothness`).
        solve_classical: give the solve the adaptive classical estimate (:class:`~defocus.models.classical.
            ClassicalEstimator`, at the working size) as a second data term beside the model's — the stack's
            focus evidence from both, each weighted by its calibrated probability of being right. Only where both
            models carry a calibration and the model is not the classical one itself.
        trust_focus_order: predict even when the frames' magnification strongly contradicts the order of the given
            focus distances (:data:`FOCUS_ORDER_REFUSAL` of the frame pairs or more); otherwise that is an error.
    """

    align: bool = True
    exposure: bool = True
    max_size: int | None = None
    depth_range: tuple[float, float] | None = None
    refine_steps: int = 0
    refine_model: ForwardModel | str = "auto"
    device: str = "cpu"
    confidence: str = "calibrated"
    solve: bool = True
    solve_smoothness: float = 50.0
    solve_classical: bool = True
    trust_focus_order: bool = False

    def __post_init__(self) -> None:
        if self.max_size is not None and not (isinstance(self.max_size, int) and self.max_size >= MIN_WORKING_SIZE):
            raise InputError(f"the working size must be at least {MIN_WORKING_SIZE} pixels, got {self.max_size}",
                             field="max_size")
        if not (isinstance(self.refine_steps, int) and self.refine_steps >= 0):
            raise InputError(f"refinement steps must be a whole number >= 0, got {self.refine_steps}",
                             field="refine_steps")
        if self.depth_range is not None:
            object.__setattr__(self, "depth_range", check_depth_range(self.depth_range))
        if not (isinstance(self.solve_smoothness, (int, float)) and self.solve_smoothness >= 0):
            raise InputError(f"the solve's smoothness must be a number >= 0, got {self.solve_smoothness}",
                             field="solve_smoothness")
        if self.confidence not in CONFIDENCE_KINDS:
            raise InputError(f"confidence must be one of {', '.join(CONFIDENCE_KINDS)}, got {self.confidence!r}",
                             field="confidence")
        if isinstance(self.refine_model, str) and self.refine_model != "auto":
            try:  # a named forward-model family (the registry decides which names exist)
                ForwardModel.from_family(self.refine_model)
            except DefocusError as exc:
                raise InputError(f"refinement forward model: {exc}", field="refine_model") from None

    def describe(self) -> dict[str, Any]:
        """Plain values for ``prediction.json`` and reports."""
        rm = self.refine_model
        return {"align": self.align, "exposure": self.exposure, "max_size": self.max_size, "refine_steps": self.refine_steps,
                "refine_model": (rm if isinstance(rm, str) else rm.describe()) if self.refine_steps else None,
                "device": str(self.device), "confidence": self.confidence, "solve": self.solve,
                "solve_smoothness": self.solve_smoothness if self.solve else None,
                "solve_classical": self.solve_classical if self.solve else None,
                "trust_focus_order": self.trust_focus_order}


#: The solve's data weight is the (calibrated) confidence to this power, and its data term is robust (Cauchy) at
#: this relative residual (None: least squares). Chosen with PredictOptions.solve_smoothness and solve_classical by
#: benchmarks/choose_solve.py on the validation and training scene groups and procedural validation scenes under
#: random cameras (BENCHMARKS.md, "The global solve"): q = 2 beat 1 at λ ≤ 3. The robust term (ρ = 0.2, λ = 50) was
#: chosen once the solve converged (BENCHMARKS.md, "Issue 17, fourth round"): with the unconverged 60-iteration
#: solve it lowered δ1 at every λ; converged, it raises δ1 on both presets' protocols by 0.02 and lowers RMSE under
#: random cameras, and it stops the real phone stacks' confident speckle dragging texture-less walls and doors
#: (ρ = 0.1 and 0.05 were worse on the presets, ρ = 0.2 at λ = 80 slightly worse everywhere).
SOLVE_WEIGHT_POWER = 2.0
SOLVE_ROBUST_SCALE: float | None = 0.2
#: The network's data term is weighted by this factor against the classical one (both calibrated confidence ** q),
#: and a term whose calibrated confidence is below SOLVE_MIN_CONFIDENCE has no weight there (the smoothness term
#: then spans it from its surroundings). Chosen with the same script over random cameras and the presets'
#: protocols together (``--protocols paper realistic``): τ = 0.2 helped in all three sets, α = 0.5 gained on random
#: cameras (the network is weak at low blur per dioptre) what it lost on the presets' within 0.002 δ1.
SOLVE_NETWORK_WEIGHT = 0.5
SOLVE_MIN_CONFIDENCE = 0.2
#: PredictOptions.solve_smoothness is λ at a working image of this longer side (px); at other working sizes it is
#: scaled by (size / this)² (:func:`defocus.solve.resolution_smoothness`), so that a 12-megapixel stack's
#: 2000-pixel working image is smoothed as much, relative to its extent, as a 640-pixel RGB-D frame.
SOLVE_REFERENCE_SIZE = 640
#: What the solve smooths: "log" depth (a residual is a relative depth error, so a near outlier pulls as hard as a
#: far one — in inverse depth a speckle at the nearest frame pulls a texture-less wall forward) or "inverse" depth.
#: Log depth was chosen by choose_solve.py ``--space inverse log --smoothness 3 10`` (BENCHMARKS.md, "Issue 17, third
#: round"): better than inverse depth on random cameras and ``realistic``, equal on ``paper``.
SOLVE_SPACE = "log"
#: Below this working-size blur per dioptre (px/D, the stack's largest) the network's term is weighted down by
#: (K / this)²: its calibration has no K, and under K ≈ 10 the network is outside the blur it was trained at
#: (TARGET_BLUR_PER_DIOPTRE) while the classical focus measure is not; 0 turns it off. Chosen by choose_solve.py
#: ``--network-full-k 0 10 20``: 20 beat 10 and off under random cameras and left the presets' protocols unchanged.
SOLVE_NETWORK_FULL_K = TARGET_BLUR_PER_DIOPTRE
#: The solve's edge weight σ, in grey levels of the AIF (defocus.solve.edge_weights). Chosen with λ by
#: choose_solve.py ``--smoothness 20 30 50 --edge-sigma 0.015 0.02 0.03`` (BENCHMARKS.md, "Issue 17, third round"):
#: sharper edges let the surfaces be smoother; better than λ = 10, σ = 0.05 on all three sets (σ = 0.03 was worse
#: again with the converged, robust solve). Scaling λ up at low K (choose_solve.py ``--smooth-full-k``) was worse
#: under random cameras.
SOLVE_EDGE_SIGMA = 0.02
#: The solve runs at most at this longer side (px; a larger working image is reduced, solved with the λ that is the
#: same energy there, and guided-upsampled back: defocus.solve.edge_aware_solve's max_size), with these
#: conjugate-gradient iterations at the coarsest pyramid level and at least these at each finer one. The counts
#: converge the solve at this size (benchmarks/bench_solve_convergence.py: median 0.01 %, 99th percentile 0.5 % from
#: 4× as many on the phone stacks), so the result does not depend on the working size: a fixed count at the
#: working size left a 2261-px image 9.6 % (median) from its minimiser and smoothed it more than a small one.
SOLVE_MAX_SIZE = SOLVE_REFERENCE_SIZE
#: The packaged confidence calibration (defocus.models.checkpoint.packaged_calibration key) of the solved depth: a
#: table over (the solve's support, the solved depth's spread, the AIF's texture), fitted by
#: benchmarks/fit_confidence.py on the default path's output. Without it the written confidence stays the per-pixel
#: estimate's.
SOLVED_CALIBRATION = "solve"
SOLVE_ITERATIONS = 480
SOLVE_FINE_ITERATIONS = 120
#: What PredictOptions.confidence may be.
CONFIDENCE_KINDS = ("calibrated", "raw")
#: Smallest working size (longest side, pixels) the options accept.
MIN_WORKING_SIZE = 16


def resolve_depth_range(stack: FocalStack, depth_range: tuple[float, float] | None = None) -> tuple[float, float]:
    """The given (near, far) range, checked, or the stack's default (see ``default_depth_range``)."""
    camera = require_camera(stack)
    near, far = check_depth_range(depth_range or default_depth_range(camera, stack.focus_distances_m))
    if near <= camera.focal_length_m:  # nothing nearer than the focal length is imaged (and 1/near must stay finite)
        raise InputError(f"depth range: near {near:g} m is inside the focal length "
                         f"({camera.focal_length_m * 1e3:g} mm) of stack {stack.name}", field="depth_range")
    return near, far


@dataclass
class StackPrediction:
    """What the pipeline gives for one stack: the prediction at full resolution plus what reports need.

    It reads like a :class:`~defocus.models.prediction.Prediction` (``depth``, ``aif``, ``confidence``,
    ``inv_depth``, ``depth_map``, ``aif_image``, ``confidence_map`` are those of ``full``).

    Attributes:
        stack: the stack it was computed from (its images aligned in place when the pipeline was asked to).
        full: the prediction at the (aligned, cropped) input resolution, batch of one.
        working: the prediction at the working size.
        working_size: (h, w) of the estimation; scale: working / full size.
        crop_box: (x0, y0, x1, y1) of the area all aligned frames cover, in input pixels (the outputs' extent).
        alignment: the :class:`~defocus.data.align.Alignment` found (``applied`` says whether the frames were
            resampled), or None when not attempted.
        camera: the camera for the outputs' pixels.
        depth_range: (near, far) metres of the bounded output.
        options: the options it ran with; refine_model: the refinement's forward model (after calibration).
        timings: seconds per stage; warnings: one-line messages for the user.
        frames_mean: (3, h, w) mean of the (aligned) frames at the working size.
        confidence_kind: ``"calibrated"`` (the probability of being within 10 %, :mod:`defocus.confidence`) or
            ``"raw"`` (the model's own score).
        exposure_gains: (N,) linear-light gain measured for every frame (:mod:`defocus.data.exposure`; applied
            where it says so in ``warnings``), None when not measured.
        solve_support: (1, 1, h, w) the global solve's evidence support at the working size (:func:`solve_support`,
            the feature the solved depth's confidence is calibrated on), None without a solve.
        confidence_of: what the confidence is about: ``"solved depth"`` (the written depth, after the solve) or
            ``"estimate"`` (the per-pixel estimate before any solve).
    """

    stack: FocalStack
    full: Prediction
    working: Prediction
    working_size: tuple[int, int]
    scale: float
    crop_box: tuple[int, int, int, int]
    alignment: Any
    camera: ThinLensCamera
    depth_range: tuple[float, float]
    options: PredictOptions
    refine_model: dict | None = None
    timings: dict = field(default_factory=dict)
    warnings: list = field(default_factory=list)
    frames_mean: torch.Tensor | None = None
    exposure_gains: torch.Tensor | None = None
    confidence_kind: str = "raw"
    solve_support: torch.Tensor | None = None
    confidence_of: str = "estimate"

    relative = False

    def to_numpy(self) -> dict[str, Any]:
        """The full-resolution outputs as numpy arrays, as a notebook wants them: ``depth`` (H, W) float32 metres,
        ``aif`` (H, W, 3) float32 in [0, 1], ``confidence`` (H, W) float32 in [0, 1]."""
        full = self.full
        return {"depth": full.depth_map.detach().cpu().numpy().astype("float32"),
                "aif": full.aif_image.detach().cpu().permute(1, 2, 0).numpy().astype("float32"),
                "confidence": full.confidence_map.detach().cpu().numpy().astype("float32")}

    def __getattr__(self, name: str) -> Any:
        # Only reached for names the dataclass lacks: the Prediction fields and accessors of ``full``.
        if name in _PREDICTION_NAMES:
            return getattr(self.full, name)
        raise AttributeError(f"{type(self).__name__} has no attribute {name!r}")


_PREDICTION_NAMES = frozenset({"depth", "aif", "confidence", "inv_depth", "attention", "depth_map", "aif_image",
                               "confidence_map", "batch_size"})


@dataclass
class RelativePrediction:
    """A stack without focus distances: which frame is sharpest at each pixel (interpolated), not metric depth.

    Attributes:
        stack: the stack; focus_index: (1, 1, H, W) in [0, N − 1], frame positions in file order (fractional between
            frames); aif: (1, 3, H, W) composed from the frames; confidence: (1, 1, H, W) in [0, 1].
        working_size, scale, crop_box, alignment, options, timings, warnings, frames_mean: as in
            :class:`StackPrediction`.
    """

    stack: FocalStack
    focus_index: torch.Tensor
    aif: torch.Tensor
    confidence: torch.Tensor
    working_size: tuple[int, int]
    scale: float
    crop_box: tuple[int, int, int, int]
    alignment: Any
    options: PredictOptions
    timings: dict = field(default_factory=dict)
    warnings: list = field(default_factory=list)
    frames_mean: torch.Tensor | None = None

    relative = True


def _area_resize(x: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    if tuple(x.shape[-2:]) == tuple(size):
        return x
    return F.interpolate(x, size=size, mode="area")


def working_size(
    height: int, width: int, max_size: int | None = None, blur_per_dioptre_max: float | None = None,
    target_blur_per_dioptre: float | None = TARGET_BLUR_PER_DIOPTRE,
) -> tuple[tuple[int, int], float]:
    """The size (h, w) the estimation runs at, and the scale factor working / input (never above 1).

    With ``max_size``: the longest side is at most ``max_size`` pixels. Without (the automatic size): the scale
    that brings the stack's largest K (``blur_per_dioptre_max``, px/D at the input size) to
    ``target_blur_per_dioptre`` (the model's preference; None = the input size); where that leaves more than
    :data:`WORKING_PIXEL_BUDGET` pixels, the scale shrinks towards the budget but not below K =
    :data:`MIN_BLUR_PER_DIOPTRE`; and the longest side is not shrunk below :data:`MIN_AUTO_LONG_SIDE`.
    """
    if max_size is not None:
        scale = min(1.0, max_size / max(height, width))
    else:
        if blur_per_dioptre_max is None or not blur_per_dioptre_max > 0:
            raise InputError("the automatic working size needs the stack's blur per dioptre (a camera)")
        scale = 1.0 if target_blur_per_dioptre is None else min(1.0, target_blur_per_dioptre / blur_per_dioptre_max)
        budget = (WORKING_PIXEL_BUDGET / (height * width)) ** 0.5
        if scale > budget:
            scale = min(scale, max(budget, MIN_BLUR_PER_DIOPTRE / blur_per_dioptre_max))
        scale = max(scale, MIN_AUTO_LONG_SIDE / max(height, width))
        scale = min(1.0, max(scale, MIN_WORKING_SIZE / max(height, width)))
    return (max(1, round(height * scale)), max(1, round(width * scale))), scale


def _tile_layout(n: int, tile: int, overlap: int, multiple: int = 16) -> tuple[list[int], int]:
    """Starts and common size of the fewest tiles of at most ``tile`` px that cover ``n`` px with at least
    ``overlap`` px shared by neighbours, spread evenly. The size is the smallest multiple of ``multiple`` (the
    network pads its input to one) that does so, rather than ``tile`` itself: a 1701-px side takes four 480-px
    tiles instead of four 512-px ones, the last overlapping the third by 335 px."""
    if n <= tile:
        return [0], n
    count = -(-(n - overlap) // (tile - overlap))
    size = -(-(n + (count - 1) * overlap) // count)
    size = min(tile, -(-size // multiple) * multiple)
    return sorted({round(i * (n - size) / (count - 1)) for i in range(count)}), size


def run_tiled(
    model: nn.Module, stack: torch.Tensor, focus: torch.Tensor, blur_per_dioptre: torch.Tensor,
    depth_range: torch.Tensor, tile: int = TILE_SIZE, overlap: int = TILE_OVERLAP, progress: bool = False,
) -> Prediction:
    """Runs ``model`` on overlapping tiles of a (1, N, 3, H, W) stack and blends them with linear ramps, so memory
    is bounded by one tile whatever the image size. Depth is blended in inverse depth."""
    from defocus.progress import progress_bar

    _, n, _, h, w = stack.shape
    (ys, tile_h), (xs, tile_w) = _tile_layout(h, tile, overlap), _tile_layout(w, tile, overlap)
    if len(ys) == 1 and len(xs) == 1:
        return model(stack, focus, blur_per_dioptre, depth_range)
    acc = {k: torch.zeros(1, c, h, w) for k, c in (("inv_depth", 1), ("aif", 3), ("confidence", 1))}
    weight = torch.zeros(1, 1, h, w)
    for y in progress_bar(ys, desc="tiles (rows)", enabled=progress, leave=False):
        for x in xs:
            th, tw = tile_h, tile_w
            out = model(stack[..., y : y + th, x : x + tw], focus, blur_per_dioptre, depth_range)
            ramp_y = torch.minimum(torch.arange(th) + 1.0, torch.arange(th, 0, -1).float()).clamp(max=overlap)
            ramp_x = torch.minimum(torch.arange(tw) + 1.0, torch.arange(tw, 0, -1).float()).clamp(max=overlap)
            wt = (ramp_y[:, None] * ramp_x[None, :])[None, None]
            for k in acc:
                acc[k][..., y : y + th, x : x + tw] += wt * getattr(out, k).cpu()
            weight[..., y : y + th, x : x + tw] += wt
    inv = acc["inv_depth"] / weight
    return Prediction(depth=1.0 / inv, aif=acc["aif"] / weight, confidence=acc["confidence"] / weight, inv_depth=inv)


def compose_aif(
    frames: torch.Tensor, inv_depth: torch.Tensor, focus_m: torch.Tensor, blur_per_dioptre: torch.Tensor,
    tolerance_px: float = 1.0,
) -> torch.Tensor:
    """All-in-focus image from the frames themselves: each pixel mixes the frames by how sharp each should be at the
    predicted depth (weight exp(−c²/2τ²), c the CoC diameter in pixels), one frame at a time to bound memory.

    Args:
        frames: (N, 3, H, W) aligned frames; inv_depth: (1, 1, H, W) dioptres; focus_m, blur_per_dioptre: (N,) for
            these frames' pixels; tolerance_px: τ.
    Returns:
        (1, 3, H, W).
    """
    from defocus.optics.camera import blur_px_from_inverse_depth

    def coc(i: int) -> torch.Tensor:  # (1, 1, H, W) CoC diameter in pixels of frame i at the predicted depth
        return blur_px_from_inverse_depth(inv_depth, focus_m[i].reshape(1, 1), blur_per_dioptre[i].reshape(1, 1))[:, 0]

    return _blend_frames(frames, lambda i: coc(i) / tolerance_px)


def _blend_frames(frames: torch.Tensor, distance: Callable[[int], torch.Tensor]) -> torch.Tensor:
    """(1, 3, H, W): each pixel mixes the (N, 3, H, W) frames with weights exp(−d_i²/2), d_i = ``distance(i)``
    (1, 1, H, W) how far frame i is from being the right one there; one frame at a time to bound memory."""
    num = torch.zeros(1, 3, *frames.shape[-2:])
    den = torch.zeros(1, 1, *frames.shape[-2:])
    for i in range(frames.shape[0]):
        w = torch.exp(-0.5 * distance(i) ** 2) + 1e-6
        num += w * frames[i : i + 1]
        den += w
    return (num / den).clamp(0.0, 1.0)


def _compose_by_index(frames: torch.Tensor, index: torch.Tensor, width: float = 0.5) -> torch.Tensor:
    """AIF (1, 3, H, W) from (N, 3, H, W) frames, each pixel mixing the frames near its focus index (1, 1, H, W)."""
    return _blend_frames(frames, lambda i: (index - i) / width)


#: A focus order contradicted by at least this fraction of the frame pairs (of at least MIN_FOCUS_ORDER_PAIRS with a
#: measurable magnification difference) is refused unless trusted; a weaker contradiction is a warning. Only on frames
#: of at least FOCUS_ORDER_MIN_SIDE px: on small frames defocus itself shifts the measured scale by a few per cent
#: (a 64 x 80 synthetic stack in the right order measured 7 of 7 pairs "reversed"), so there it stays a warning.
#: And only where the measured scales contradict the thin lens's breathing for the given order and follow it for the
#: reversed one (correlations ≤ −FOCUS_ORDER_CORRELATION and ≥ +FOCUS_ORDER_CORRELATION, defocus.data.align.
#: breathing_correlation): hand-held scale jitter of 3 % (above a 50 mm lens's breathing) on a stack in the right
#: order reached −0.88 in tests, with 8 of 8 pairs "disagreeing"; real hand-held jitter is far below a phone's.
FOCUS_ORDER_REFUSAL = 0.8
MIN_FOCUS_ORDER_PAIRS = 3
FOCUS_ORDER_MIN_SIDE = 200
FOCUS_ORDER_CORRELATION = 0.9


def _align_frames(
    stack: FocalStack, align: bool, in_place: bool, warnings: list[str], metric: bool,
    trust_focus_order: bool = False,
) -> tuple[torch.Tensor, Any, tuple[int, int, int, int]]:
    """Registers the stack's (N, 3, H, W) frames to the reference and crops them to the area all cover.

    Returns (frames — a view of the crop, no copy —, the alignment or None when not attempted, the crop box
    (x0, y0, x1, y1)). Where the alignment finds nothing worth correcting (``alignment.applied`` False) the frames
    are returned untouched at full size. One-line warnings (frames too small to align, a focus order the
    magnification contradicts) are appended to ``warnings``. With ``in_place`` the aligned frames overwrite
    ``stack.images``.
    """
    frames = stack.images
    n, _, h0, w0 = frames.shape
    full_box = (0, 0, w0, h0)
    if not align or n < 2:
        return frames, None, full_box
    if min(h0, w0) < MIN_ALIGN_SIZE:
        warnings.append(f"frames of {w0}x{h0} px are too small to align (under {MIN_ALIGN_SIZE} px): not aligned")
        return frames, None, full_box
    from defocus.data.align import (breathing_correlation, check_focus_order, estimate_alignment, focus_order_votes,
                                    warp_to_reference)

    focus = stack.focus_distances_m if metric else None
    camera = stack.camera if metric else None
    alignment = estimate_alignment(frames, focus_m=focus, focal_length_m=camera.focal_length_m if camera else None)
    if not alignment.applied:
        return frames, alignment, full_box
    if focus is not None:
        agree, disagree = focus_order_votes(alignment, focus)
        warning = check_focus_order(alignment, focus)
        if (not trust_focus_order and agree + disagree >= MIN_FOCUS_ORDER_PAIRS
                and disagree >= FOCUS_ORDER_REFUSAL * (agree + disagree) and min(h0, w0) >= FOCUS_ORDER_MIN_SIDE
                and breathing_correlation(alignment, focus, camera.focal_length_m) <= -FOCUS_ORDER_CORRELATION
                and breathing_correlation(alignment, focus.flip(0), camera.focal_length_m) >= FOCUS_ORDER_CORRELATION):
            raise InputError(f"{stack.name}: {warning}; refusing to predict from distances that are probably "
                             "in the reverse order of the files (give them in file order, or trust the given "
                             "order to proceed)", field="trust_focus_order")
        if warning:
            warnings.append(warning)
    frames, _ = warp_to_reference(frames, alignment, out=frames if in_place else None)
    box = tuple(int(v) for v in alignment.valid_box)
    return frames[..., box[1] : box[3], box[0] : box[2]], alignment, box


def refine_physics(
    refine_model: ForwardModel | str, images: torch.Tensor, focus: torch.Tensor, blur_per_dioptre: torch.Tensor,
    depth_range: tuple[float, float], init: Prediction,
) -> ForwardModel:
    """The forward model of the refinement: given, a named family (``"disk"``, ``"gaussian"``), or ``"auto"`` —
    self-calibrated on the stack itself (:func:`defocus.calibrate.calibrate_forward_model`)."""
    if isinstance(refine_model, ForwardModel):
        return refine_model
    if refine_model == "auto":
        from defocus.calibrate import calibrate_forward_model

        return calibrate_forward_model(images, focus, blur_per_dioptre, depth_range, init).physics
    return ForwardModel.from_family(refine_model)


def _is_relative(stack: FocalStack) -> bool:
    return bool(stack.provenance.get("relative"))


def _options(options: PredictOptions | None, overrides: dict[str, Any]) -> PredictOptions:
    options = options or PredictOptions()
    return replace(options, **overrides) if overrides else options


@dataclass
class WorkingStack:
    """A metric stack as the estimator sees it (:func:`working_stack`).

    Attributes:
        frames: (N, 3, H, W) the frames registered and cropped to the area all cover (a view of the stack's own
            frames where nothing needed correcting), exposure-normalised.
        small: (N, 3, h, w) those frames area-reduced to the working size.
        blur_per_dioptre: (1, N) K of the working size, pixels per dioptre.
        working_size: (h, w); scale: h / H.
        depth_range: (near, far) metres.
        alignment: the alignment (None when not attempted); crop_box: (x0, y0, x1, y1) of the crop in the input.
        exposure_gains: (N,) the gains applied, or None.
    """

    frames: torch.Tensor
    small: torch.Tensor
    blur_per_dioptre: torch.Tensor
    working_size: tuple[int, int]
    scale: float
    depth_range: tuple[float, float]
    alignment: Any
    crop_box: tuple[int, int, int, int]
    exposure_gains: torch.Tensor | None


#: Focus distances beyond this many hyperfocal distances (at a one-pixel circle of confusion) are implausible: frames
#: focused there are indistinguishable from one focused at infinity (millimetres read as metres land far beyond).
MAX_FOCUS_HYPERFOCAL = 10.0


def hyperfocal_distance_m(camera) -> float:
    """The hyperfocal distance f²/(N·c) + f of ``camera`` with a circle of confusion of one pixel, in metres: focused
    there, everything from half of it to infinity blurs by at most a pixel."""
    f = camera.focal_length_m
    return f * f / (camera.f_number * camera.pixel_size_m) + f


def plausibility_warnings(stack: FocalStack) -> list[str]:
    """One-line warnings about a metric stack whose numbers look wrong for its camera: focus distances far beyond
    the hyperfocal distance (probably millimetres given as metres), and a single image (no focus cue at all)."""
    out = []
    camera = require_camera(stack)
    focus = stack.focus_distances_m.double()
    h = hyperfocal_distance_m(camera)
    if float(focus.max()) > MAX_FOCUS_HYPERFOCAL * h:
        out.append(f"focus distances up to {float(focus.max()):.4g} m are far beyond this camera's hyperfocal "
                   f"distance ({h:.3g} m): frames focused there barely differ, so depth is unreliable; focus "
                   "distances are metres (were millimetres given?)")
    if stack.num_images == 1:
        out.append("a single image has no focus cue: its depth is the network's guess from image content and the "
                   "camera alone, not measured from blur (confidence 0 everywhere); depth from defocus needs two or "
                   "more focus settings")
    return out


def working_stack(stack: FocalStack, options: PredictOptions | None = None,
                  target_blur_per_dioptre: float | None = TARGET_BLUR_PER_DIOPTRE, in_place: bool = False,
                  warnings: list[str] | None = None) -> WorkingStack:
    """The first stage of the pipeline, shared by prediction and fine-tuning (so that a network is tuned on what it
    will be given): alignment, exposure normalisation and the automatic working size (:func:`working_size` with
    the model's target K). One-line warnings are appended to ``warnings``."""
    options = options or PredictOptions()
    warnings = [] if warnings is None else warnings
    camera = require_camera(stack)
    dr = resolve_depth_range(stack, options.depth_range)
    warnings.extend(plausibility_warnings(stack))
    frames, alignment, box = _align_frames(stack, options.align, in_place, warnings, metric=True,
                                           trust_focus_order=options.trust_focus_order)
    gains = None
    if options.exposure:
        frames, gains = _normalise_exposure(frames, in_place or frames is not stack.images, warnings)
    h, w = frames.shape[-2:]
    fd = stack.focus_distances_m.float()[None]
    (hw, ww), scale = working_size(h, w, options.max_size, float(camera.blur_per_dioptre(fd).max()),
                                   target_blur_per_dioptre)
    return WorkingStack(frames=frames, small=_area_resize(frames, (hw, ww)),
                        blur_per_dioptre=camera.resized(scale).blur_per_dioptre(fd), working_size=(hw, ww),
                        scale=scale, depth_range=dr, alignment=alignment, crop_box=box, exposure_gains=gains)


@torch.no_grad()
def predict_stack(
    model: nn.Module | None,
    stack: FocalStack,
    options: PredictOptions | None = None,
    *,
    progress: bool = False,
    in_place: bool = False,
    **overrides: Any,
) -> StackPrediction | RelativePrediction:
    """The pipeline (module docstring) on one stack.

    Args:
        model: an estimator of :func:`~defocus.models.factory.create_model` (DAIF-Net, ``classical``, an ONNX
            runner); None = the shipped weights. Not used for a relative stack.
        stack: the focal stack (a camera and focus distances for metric depth; without focus distances the result
            is relative).
        options: :class:`PredictOptions`; keyword ``overrides`` replace its fields (``max_size=320``).
        progress: show a progress bar; in_place: let the alignment overwrite ``stack.images`` (saves a copy of a
            large stack; the command line does so).
    Returns:
        :class:`StackPrediction` (metric) or :class:`RelativePrediction` (no focus distances).
    """
    options = _options(options, overrides)
    if _is_relative(stack):
        return _predict_relative(stack, options, in_place)
    if model is None:
        from defocus.models.factory import create_model

        model = create_model(pretrained=True)
    from defocus.progress import progress_bar

    # The bar closes on an error too, so that its line is cleared before the error is printed.
    with progress_bar(total=3, desc=f"predict {stack.name}", enabled=progress, leave=False) as bar:
        camera = require_camera(stack)
        timings: dict[str, float] = {}
        warnings: list[str] = []
        refine_used = None

        def stage(name: str, t0: float) -> None:
            timings[name] = round(time.perf_counter() - t0, 3)
            bar.set_postfix_str(name)
            bar.update(1)

        t = time.perf_counter()
        ws = working_stack(stack, options, getattr(model, "working_blur_per_dioptre", TARGET_BLUR_PER_DIOPTRE),
                           in_place, warnings)
        frames, alignment, box, gains, dr = ws.frames, ws.alignment, ws.crop_box, ws.exposure_gains, ws.depth_range
        stage("align", t)

        t = time.perf_counter()
        (hw, ww), scale, small, k_w = ws.working_size, ws.scale, ws.small, ws.blur_per_dioptre
        fd = stack.focus_distances_m.float()[None]
        dev = torch.device(options.device)
        model = model.to(dev).eval()
        x, fd_d, k_d = small[None].to(dev), fd.to(dev), k_w.to(dev)
        working = run_tiled(model, x, fd_d, k_d, torch.tensor([dr], dtype=torch.float64).to(dev), progress=progress)
        if options.refine_steps > 0:
            physics = refine_physics(options.refine_model, x, fd_d, k_d, dr, working)
            refine_used = physics.describe()
            with torch.enable_grad():
                working = refine(x, fd_d, k_d, dr, working, options.refine_steps, physics)
        working = Prediction(**{k: (None if v is None else v.detach().cpu()) for k, v in vars(working).items()})
        calibration = getattr(model, "confidence_calibration", None) if options.confidence == "calibrated" else None
        texture = aif_texture(working.aif) if calibration is not None else None  # the solve keeps the AIF: reused
        if calibration is not None:
            working = replace(working, confidence=calibration(working.confidence, working.inv_depth, texture))
        if stack.num_images == 1:  # no focus cue: nothing is measured (plausibility_warnings says so)
            working = replace(working, confidence=torch.zeros_like(working.confidence))
        stage("estimate", t)
        support, confidence_of = None, "estimate"
        if options.solve:
            t = time.perf_counter()
            second = None
            if options.solve_classical and calibration is not None and not isinstance(model, ClassicalEstimator):
                second = _classical_term(x, fd_d, k_d, dr, progress)
            working, support = _solve(working, dr, options.solve_smoothness, second, float(k_w.max()))
            # The written confidence is about the written (solved) depth: calibrated on the solve's support where
            # that calibration is packaged (defocus.confidence, "solve"), not the per-pixel estimate's.
            solved_cal = _solved_calibration() if calibration is not None else None
            if solved_cal is not None and stack.num_images > 1:
                working = replace(working, confidence=solved_cal(support, working.inv_depth, texture))
                confidence_of = "solved depth"
            timings["solve"] = round(time.perf_counter() - t, 3)

        t = time.perf_counter()
        full = working
        if scale < 1.0:
            full = _upsample(working, frames, stack.focus_distances_m, camera.blur_per_dioptre(stack.focus_distances_m),
                             dr)
        stage("upsample", t)
    return StackPrediction(stack=stack, full=full, working=working, working_size=(hw, ww), scale=scale, crop_box=box,
                           alignment=alignment, camera=camera, depth_range=dr, options=options,
                           refine_model=refine_used, timings=timings, warnings=warnings, frames_mean=small.mean(0),
                           exposure_gains=gains, confidence_kind="raw" if calibration is None else "calibrated",
                           solve_support=support, confidence_of=confidence_of)


@functools.cache
def _solved_calibration():
    """The packaged :data:`SOLVED_CALIBRATION` (read once per process), or None."""
    return packaged_calibration(SOLVED_CALIBRATION)


def aif_texture(aif: torch.Tensor) -> torch.Tensor:
    """The texture feature of the confidence calibration (:func:`defocus.confidence.texture_snr`) of an all-in-focus
    image (B, 3, h, w) in [0, 1]: its grey texture against its own noise σ (Immerkær's estimator on its flattest
    blocks, :func:`~defocus.models.classical.estimate_noise_sigma`). Returns (B, 1, h, w)."""
    from defocus.color import to_grey
    from defocus.confidence import texture_snr
    from defocus.models.classical import estimate_noise_sigma

    sigma = torch.stack([estimate_noise_sigma(a[None]) for a in aif]) if min(aif.shape[-2:]) >= 8 else 0.0
    return texture_snr(to_grey(aif)[:, None], sigma)


def _normalise_exposure(frames: torch.Tensor, in_place: bool, warnings: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
    """The frames at one exposure (:func:`~defocus.data.exposure.normalise_exposure`) and the measured gains; a
    one-line note in ``warnings`` when they were applied."""
    from defocus.data.exposure import MIN_GAIN_CHANGE, normalise_exposure

    out, gains = normalise_exposure(frames, in_place=in_place)
    if float((gains - 1.0).abs().max()) > MIN_GAIN_CHANGE:
        spread = float(gains.max() / gains.min()) - 1.0
        warnings.append(f"the frames' exposures differ by up to {100 * spread:.0f} %: normalised (linear gains "
                        + ", ".join(f"{g:.3f}" for g in gains.tolist()) + ")")
    return out, gains


def _classical_term(x: torch.Tensor, focus: torch.Tensor, blur_per_dioptre: torch.Tensor,
                    depth_range: tuple[float, float], progress: bool) -> tuple[torch.Tensor, torch.Tensor] | None:
    """(inverse depth, calibrated confidence) of the adaptive classical estimate of the working-size stack ``x``
    (1, N, 3, h, w), both (1, 1, h, w) on the CPU; None where the classical calibration is not packaged."""
    est = ClassicalEstimator()
    cal = est.confidence_calibration
    if cal is None:
        return None
    pred = run_tiled(est, x.cpu(), focus.cpu(), blur_per_dioptre.cpu(), torch.tensor([depth_range], dtype=torch.float64),
                     progress=progress)
    return pred.inv_depth, cal(pred.confidence, pred.inv_depth, aif_texture(pred.aif))


def solve_data_term(
    inv_depth: torch.Tensor, confidence: torch.Tensor, second: tuple[torch.Tensor, torch.Tensor] | None = None,
    power: float = SOLVE_WEIGHT_POWER, network_weight: float = SOLVE_NETWORK_WEIGHT,
    min_confidence: float = SOLVE_MIN_CONFIDENCE,
) -> tuple[torch.Tensor, torch.Tensor]:
    """(target, data weight), each (B, 1, h, w), of the global solve from the network's inverse depth (dioptres)
    and calibrated confidence (B, 1, h, w), and optionally a ``second`` (inverse depth, calibrated confidence) term
    (the classical estimate). A term's weight is its confidence ** ``power`` (times ``network_weight`` for the
    first), zero where its confidence is under ``min_confidence``; two terms Σ w₁ (x − t₁)² + w₂ (x − t₂)² are
    Σ (w₁ + w₂)(x − t)² with t their weighted mean, up to a constant."""

    def term_weight(conf: torch.Tensor) -> torch.Tensor:
        return torch.where(conf >= min_confidence, conf.clamp_min(0.0).pow(power), torch.zeros_like(conf))

    weight, target = network_weight * term_weight(confidence), inv_depth
    if second is None:
        return target, weight
    weight_2 = term_weight(second[1])
    total = weight + weight_2
    target = torch.where(total > 0, (weight * target + weight_2 * second[0]) / total.clamp_min(1e-12), target)
    return target, total


def solve_inverse_depth(
    inv_depth: torch.Tensor, confidence: torch.Tensor, second: tuple[torch.Tensor, torch.Tensor] | None,
    guide: torch.Tensor, smoothness: float, inv_range: tuple[float, float], *,
    power: float = SOLVE_WEIGHT_POWER, network_weight: float = SOLVE_NETWORK_WEIGHT,
    min_confidence: float = SOLVE_MIN_CONFIDENCE, robust_scale: float | None = SOLVE_ROBUST_SCALE,
    space: str | None = None, blur_per_dioptre: float | None = None, network_full_k: float | None = None,
    edge_sigma: float | None = None, iterations: int = SOLVE_ITERATIONS,
    fine_iterations: int = SOLVE_FINE_ITERATIONS, max_size: int | None = SOLVE_MAX_SIZE,
    return_support: bool = False, weight_factor: torch.Tensor | None = None,
) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
    """The global solve as the pipeline runs it: inverse depth (B, 1, h, w, dioptres) from the network's
    ``inv_depth`` and calibrated ``confidence`` and the optional ``second`` term (:func:`solve_data_term`), guided
    by ``guide`` (B, 1, h, w, the grey AIF), with λ = ``smoothness`` at :data:`SOLVE_REFERENCE_SIZE` scaled to the
    map's size, in :data:`SOLVE_SPACE` (or ``space``), clamped to ``inv_range`` (low, high dioptres). With a
    ``second`` term and the working size's ``blur_per_dioptre`` (px/D), the network's weight is scaled by
    min(1, K / ``network_full_k``)² (default :data:`SOLVE_NETWORK_FULL_K`). ``edge_sigma``: the edge weight's σ
    (default :data:`SOLVE_EDGE_SIGMA`);
    ``iterations``, ``fine_iterations``, ``max_size``: as :func:`defocus.solve.edge_aware_solve`'s (defaults
    :data:`SOLVE_ITERATIONS`, :data:`SOLVE_FINE_ITERATIONS`, :data:`SOLVE_MAX_SIZE`). With ``return_support``
    also the solve's evidence support (:func:`solve_support`), the feature of the solved depth's confidence.
    ``weight_factor`` (B, 1, h, w, ≥ 0) multiplies the data weight (a mask of pixels whose evidence is not to be
    used; benchmarks/choose_solve.py's data-weight experiments); the pipeline passes none."""
    from defocus.solve import edge_aware_solve, resolution_smoothness

    space = SOLVE_SPACE if space is None else space
    if space not in ("inverse", "log"):
        raise InputError(f"the solve's space is 'inverse' or 'log', got {space!r}")
    to_space = (lambda v: v.clamp_min(1e-9).log()) if space == "log" else (lambda v: v)
    if second is not None:
        second = (to_space(second[0]), second[1])
    if network_full_k is None:
        network_full_k = SOLVE_NETWORK_FULL_K
    if network_full_k and blur_per_dioptre is not None and second is not None:
        network_weight = network_weight * min(1.0, blur_per_dioptre / network_full_k) ** 2
    target, weight = solve_data_term(to_space(inv_depth), confidence, second, power, network_weight, min_confidence)
    if weight_factor is not None:
        check_shape(weight_factor, f"B 1 {target.shape[-2]} {target.shape[-1]}", "weight_factor",
                    {"B": target.shape[0]})
        weight = weight * weight_factor.to(weight.dtype).clamp_min(0.0)
    lam = resolution_smoothness(smoothness, tuple(target.shape[-2:]), SOLVE_REFERENCE_SIZE)
    # ρ is relative: a log-depth residual already is one; an inverse-depth residual is scaled by the target.
    rho = robust_scale
    if rho is not None and space == "inverse":
        rho = target.abs().clamp_min(1e-6) * rho
    sigma = SOLVE_EDGE_SIGMA if edge_sigma is None else edge_sigma
    out = edge_aware_solve(target, weight, guide, smoothness=lam, robust_scale=rho, edge_sigma=sigma,
                           iterations=iterations, fine_iterations=fine_iterations, max_size=max_size)
    inv = (out.exp() if space == "log" else out).clamp(inv_range[0], inv_range[1])
    if not return_support:
        return inv
    return inv, solve_support(weight, guide, lam, sigma, iterations, fine_iterations, max_size)


def solve_support(weight: torch.Tensor, guide: torch.Tensor, smoothness: float, edge_sigma: float = SOLVE_EDGE_SIGMA,
                  iterations: int = SOLVE_ITERATIONS, fine_iterations: int = SOLVE_FINE_ITERATIONS,
                  max_size: int | None = SOLVE_MAX_SIZE) -> torch.Tensor:
    """How much focus evidence the solved depth at each pixel rests on: the solve's data weight (B, 1, h, w,
    clamped to [0, 1]) spread by the same edge-aware smoothness (λ = ``smoothness`` at this size, guide and σ as
    the solve's) with a uniform data weight, so it decays away from confident pixels within a surface and stops at
    image edges. (B, 1, h, w) in [0, 1]; the raw feature of the solved confidence's calibration (the per-pixel
    confidence before the solve says nothing about a pixel the solve spanned from its surroundings)."""
    from defocus.solve import edge_aware_solve

    target = weight.clamp(0.0, 1.0)
    out = edge_aware_solve(target, torch.ones_like(target), guide, smoothness=smoothness, edge_sigma=edge_sigma,
                           iterations=iterations, fine_iterations=fine_iterations, max_size=max_size)
    return out.clamp(0.0, 1.0)


def _solve(pred: Prediction, depth_range: tuple[float, float], smoothness: float,
           second: tuple[torch.Tensor, torch.Tensor] | None = None,
           blur_per_dioptre: float | None = None) -> tuple[Prediction, torch.Tensor]:
    """The prediction with its inverse depth replaced by the global edge-aware solve
    (:func:`solve_inverse_depth`, with ``second`` = the classical (inverse depth, confidence) if given; the grey AIF
    as the guide; ``blur_per_dioptre`` the working size's largest K, px/D), kept inside the depth range, and the
    solve's evidence support (:func:`solve_support`, (1, 1, h, w))."""
    from defocus.color import to_grey

    inv, support = solve_inverse_depth(pred.inv_depth, pred.confidence, second, to_grey(pred.aif)[:, None],
                                       smoothness, (1.0 / depth_range[1], 1.0 / depth_range[0]),
                                       blur_per_dioptre=blur_per_dioptre, return_support=True)
    return Prediction(depth=1.0 / inv, aif=pred.aif, confidence=pred.confidence, inv_depth=inv,
                      attention=pred.attention), support


def _upsample(working: Prediction, frames: torch.Tensor, focus_m: torch.Tensor, blur_per_dioptre: torch.Tensor,
              depth_range: tuple[float, float]) -> Prediction:
    """The working-size prediction at the size of ``frames`` (N, 3, H, W): the AIF composed from the frames around
    the (bilinearly upsampled) depth, then inverse depth guided-upsampled on that AIF so depth edges sit on image
    edges."""
    from defocus.color import to_grey
    from defocus.filters import guided_upsample

    h, w = frames.shape[-2:]
    inv_up = F.interpolate(working.inv_depth, size=(h, w), mode="bilinear", align_corners=False)
    aif_full = compose_aif(frames, inv_up, focus_m, blur_per_dioptre)
    del inv_up
    # Window of 3 working-size pixels, eps small enough that AIF edges of a few grey levels carry depth edges.
    inv_full = guided_upsample(working.inv_depth, to_grey(working.aif)[:, None], to_grey(aif_full)[:, None],
                               radius=3, eps=1e-4)
    inv_full = inv_full.clamp(1.0 / depth_range[1], 1.0 / depth_range[0])
    conf_full = F.interpolate(working.confidence, size=(h, w), mode="bilinear", align_corners=False)
    return Prediction(depth=1.0 / inv_full, aif=aif_full, confidence=conf_full.clamp(0, 1), inv_depth=inv_full)


def estimate(
    stack: FocalStack | str | os.PathLike,
    model: nn.Module | None = None,
    options: PredictOptions | None = None,
    **overrides: Any,
) -> StackPrediction:
    """One call from a stack (or a stack folder) to its prediction, as ``defocus predict`` computes it.

    ``model`` defaults to the shipped weights; ``options`` / keyword overrides as :func:`predict_stack`
    (``refine_steps=30``, ``max_size=640``, ``align=False``, ...). The result reads like a
    :class:`~defocus.models.prediction.Prediction` (``result.depth_map`` is (H, W) metres) and
    :func:`defocus.write_prediction` writes it.
    """
    if not isinstance(stack, FocalStack):
        from defocus.data.folders import read_stack

        stack = read_stack(stack, load_ground_truth=False)
    if _is_relative(stack):
        raise InputError(f"stack {stack.name} has no focus distances: metric depth needs them (predict_stack gives "
                         "the relative focus-index map without)", field="focus")
    return predict_stack(model, stack, options, **overrides)


# ====================================================================================== without focus distances
#: Longest side of the focus-measure estimation of a relative stack (its blur per dioptre is unknown).
RELATIVE_MAX_SIZE = 1024


def _solve_relative(index: torch.Tensor, confidence: torch.Tensor, guide: torch.Tensor, n: int,
                    smoothness: float) -> torch.Tensor:
    """The global edge-aware solve (:mod:`defocus.solve`) of a relative stack's focus-index map (1, 1, h, w):
    data weight = the normalised classical cue² (zero under :data:`RELATIVE_FILL_THRESHOLD`; there is no calibration
    without a blur per dioptre), λ = ``smoothness`` at :data:`SOLVE_REFERENCE_SIZE` scaled to the map's size, the
    metric solve's edge σ; the index is linear in the pseudo dioptres, so it is solved as it is. Clamped to
    [0, n − 1]."""
    from defocus.models.classical import normalised_cue
    from defocus.solve import edge_aware_solve, resolution_smoothness

    cue = normalised_cue(confidence, n)
    weight = torch.where(cue >= RELATIVE_FILL_THRESHOLD, cue * cue, torch.zeros_like(cue))
    lam = resolution_smoothness(smoothness, tuple(index.shape[-2:]), SOLVE_REFERENCE_SIZE)
    return edge_aware_solve(index, weight, guide, smoothness=lam, edge_sigma=SOLVE_EDGE_SIGMA,
                            iterations=SOLVE_ITERATIONS, fine_iterations=SOLVE_FINE_ITERATIONS,
                            max_size=SOLVE_MAX_SIZE).clamp(0, n - 1)


def _predict_relative(stack: FocalStack, options: PredictOptions, in_place: bool) -> RelativePrediction:
    """The relative result for a stack whose focus distances are unknown (refocused light fields, microscopes).

    The classical focus measure (SML, the package's baseline) runs at the working size on frames placed at
    "dioptres" 1, 2, …, N, so its 3-point interpolation gives a fractional frame index; the index map goes through
    the global edge-aware solve (:func:`_solve_relative`; with ``solve=False`` it is only filled where the focus
    cue is weak), is brought to full resolution by guided upsampling, and the AIF is composed from the
    full-resolution frames around that index.
    """
    from defocus.color import to_grey
    from defocus.filters import confidence_fill, guided_upsample
    from defocus.models.classical import classical_depth_from_focus

    timings: dict[str, float] = {}
    warnings: list[str] = ["no focus distances: the result is a relative focus-index map, not metric depth"]
    n = stack.num_images
    t = time.perf_counter()
    frames, alignment, box = _align_frames(stack, options.align, in_place, warnings, metric=False)
    timings["align"] = round(time.perf_counter() - t, 3)
    t = time.perf_counter()
    h, w = frames.shape[-2:]
    (hw, ww), scale = working_size(h, w, options.max_size or RELATIVE_MAX_SIZE)
    small = _area_resize(frames, (hw, ww))
    # Frame i at "dioptre" i + 1 (focus 1/(i+1) m): the interpolated dioptre minus one is the frame index.
    pseudo_focus = 1.0 / torch.arange(1, n + 1, dtype=torch.float64)
    depth, aif_w, conf = classical_depth_from_focus(small[None], pseudo_focus)
    index_w = (1.0 / depth.double() - 1.0).float()
    guide_w = to_grey(aif_w)[:, None]
    if options.solve:
        index_w = _solve_relative(index_w, conf, guide_w, n, options.solve_smoothness)
    else:
        index_w = confidence_fill(index_w, conf, guide_w, threshold=RELATIVE_FILL_THRESHOLD).clamp(0, n - 1)
    timings["estimate"] = round(time.perf_counter() - t, 3)
    t = time.perf_counter()
    if scale < 1.0:
        idx_up = F.interpolate(index_w, size=(h, w), mode="bilinear", align_corners=False)
        aif = _compose_by_index(frames, idx_up)
        index = guided_upsample(index_w, guide_w, to_grey(aif)[:, None], radius=3, eps=1e-4).clamp(0, n - 1)
        conf_full = F.interpolate(conf, size=(h, w), mode="bilinear", align_corners=False).clamp(0, 1)
    else:
        index, aif, conf_full = index_w, _compose_by_index(frames, index_w), conf
    timings["upsample"] = round(time.perf_counter() - t, 3)
    return RelativePrediction(stack=stack, focus_index=index, aif=aif, confidence=conf_full, working_size=(hw, ww),
                              scale=scale, crop_box=box, alignment=alignment, options=options, timings=timings,
                              warnings=warnings, frames_mean=small.mean(0))
