"""Depth and all-in-focus image for focal stacks: run an estimator (and optional refinement), write the outputs.

``predict_stack`` runs any model of the factory (DAIF-Net or the classical baseline) on one stack at its own
resolution and returns a :class:`~defocus.models.prediction.Prediction` (batch of one); ``write_prediction`` writes
the files of ``defocus predict``; :func:`estimate` is the one-call version for notebooks (``defocus.estimate``; not ``defocus.predict``, which is
this module).
"""

from __future__ import annotations

import math
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch import nn

from defocus.data.codecs import save_image, write_depth_png_mm, write_depth_tiff
from defocus.data.folders import read_stack
from defocus.data.stack import FocalStack, require_camera
from defocus.errors import DefocusError
from defocus.files import atomic_folder
from defocus.models.prediction import Prediction
from defocus.optics.camera import default_depth_range
from defocus.optics.forward import ForwardModel
from defocus.refine import refine

#: Files ``write_prediction`` writes for each stack.
OUTPUT_FILES = ("depth.tiff", "depth.png", "depth_preview.png", "aif.png", "confidence.tiff")


def resolve_depth_range(stack: FocalStack, depth_range: tuple[float, float] | None = None) -> tuple[float, float]:
    """The given (near, far) range, checked, or the stack's default (see ``default_depth_range``)."""
    camera = require_camera(stack)
    dr = depth_range or default_depth_range(camera, stack.focus_distances_m)
    if not (0 < dr[0] < dr[1] < math.inf):
        raise DefocusError(f"depth range must satisfy 0 < near < far < infinity, got {dr}")
    if dr[0] <= camera.focal_length_m:  # nothing nearer than the focal length is imaged (and 1/near must stay finite)
        raise DefocusError(f"depth range: near {dr[0]:g} m is inside the focal length "
                           f"({camera.focal_length_m * 1e3:g} mm) of stack {stack.name}")
    return dr


@torch.no_grad()
def predict_stack(
    model: nn.Module,
    stack: FocalStack,
    depth_range: tuple[float, float] | None = None,
    refine_steps: int = 0,
    refine_model: ForwardModel | str = "auto",
) -> Prediction:
    """Runs ``model`` (and ``refine_steps`` of refinement under ``refine_model``) on one stack.

    Args:
        model: a model of :func:`~defocus.models.factory.create_model` (DAIF-Net or ``classical``).
        stack: the focal stack; it must have a camera.
        depth_range: (near, far) metres of the bounded output; default from the camera and focus distances.
        refine_steps: test-time refinement steps (0 = none).
        refine_model: the forward model of the refinement, ``"auto"`` (calibrated on the stack) or a family name
            (``"disk"``, ``"gaussian"``).
    Returns:
        A Prediction with a batch dimension of 1: depth (1, 1, H, W) metres, aif (1, 3, H, W), confidence.
    """
    camera = require_camera(stack)
    fd = stack.focus_distances_m.float()[None]
    k = camera.blur_per_dioptre(fd)
    dr = resolve_depth_range(stack, depth_range)
    images = stack.images[None].float()
    model.eval()
    pred = model(images, fd, k, torch.tensor([dr], dtype=torch.float64))
    if refine_steps > 0:
        physics = refine_physics(refine_model, images, fd, k, dr, pred)
        with torch.enable_grad():
            pred = refine(images, fd, k, dr, pred, refine_steps, physics)
    return pred


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


def write_prediction(out_dir: str | os.PathLike, pred: Prediction, title: str | None = None) -> Path:
    """Writes the outputs of one stack into ``out_dir`` atomically (a temporary folder renamed into place):
    ``depth.tiff`` (float32 metres), ``depth.png`` (uint16 mm), ``depth_preview.png``, ``aif.png`` and
    ``confidence.tiff``. ``pred`` is a single-stack prediction."""
    depth = pred.depth_map.detach().cpu().numpy().astype("float32")
    conf = pred.confidence_map.detach().cpu().numpy().astype("float32")
    return atomic_folder(Path(out_dir), lambda tmp: _write_core_outputs(tmp, depth, pred.aif_image, conf, title),
                         "predictions to")


def _write_core_outputs(folder: Path, depth: np.ndarray, aif: torch.Tensor, confidence: np.ndarray,
                        title: str | None) -> None:
    """The files every prediction has (:data:`OUTPUT_FILES`): depth (H, W) float32 m, aif (3, H, W), confidence."""
    from defocus.visualize import depth_preview

    write_depth_tiff(folder / "depth.tiff", depth)
    write_depth_png_mm(folder / "depth.png", depth)
    depth_preview(depth, title=title).save(folder / "depth_preview.png")
    save_image(folder / "aif.png", aif.clamp(0, 1))
    write_depth_tiff(folder / "confidence.tiff", confidence)


def estimate(
    stack: FocalStack | str | os.PathLike,
    model: nn.Module | None = None,
    depth_range: tuple[float, float] | None = None,
    refine_steps: int = 0,
    refine_model: ForwardModel | str = "auto",
) -> Prediction:
    """One call from a stack (or a stack folder) to a prediction, with the shipped weights by default."""
    from defocus.models.factory import DEFAULT_MODEL, create_model

    if not isinstance(stack, FocalStack):
        stack = read_stack(stack, load_ground_truth=False)
    model = model if model is not None else create_model(DEFAULT_MODEL, pretrained=True)
    return predict_stack(model, stack, depth_range, refine_steps, refine_model)


# ============================================================================================ real photos
#: The automatic working size puts the stack's largest blur per dioptre K (CoC pixels per dioptre) near this value,
#: the middle of the range the shipped weights were trained on (about 5.5 to 37 px/D: the two presets with pixel
#: pitches scaled by 0.7 to 1.4). On real RGB-D frames rendered at 640 x 480 (K = 52 px/D) the network's AbsRel is
#: 0.061-0.065 at 160-240 px (K 13-20) and 0.120 at 640 px: accuracy is best where K matches (BENCHMARKS.md).
TARGET_BLUR_PER_DIOPTRE = 16.0
#: ... but a stack is not shrunk below this K, where the defocus cue starts to vanish into the pixels.
MIN_BLUR_PER_DIOPTRE = 6.0
#: Pixels of the working image above which the automatic size gives up K (down to MIN_BLUR_PER_DIOPTRE) for time.
WORKING_PIXEL_BUDGET = 2_000_000
#: Frames smaller than this (shorter side, pixels) are not aligned: too little image to register reliably.
MIN_ALIGN_SIZE = 64
#: Tiles of the network at the working size (bounded memory): side and overlap in working pixels.
TILE_SIZE, TILE_OVERLAP = 512, 64


@dataclass
class PhotoResult:
    """The result of :func:`predict_photo_stack`: full-resolution outputs plus what is needed to report them.

    Attributes:
        full: the prediction at the (aligned, cropped) input resolution, batch of one.
        working: the prediction at the working size.
        working_size: (h, w) of the estimation; scale: working / full size.
        crop_box: (x0, y0, x1, y1) of the area all aligned frames cover, in input pixels (the outputs' extent).
        alignment: the alignment (or None without alignment).
        camera_full: the camera for the outputs' pixels.
        timings: seconds per stage; warnings: one-line messages for the user.
    """

    full: Prediction
    working: Prediction
    working_size: tuple[int, int]
    scale: float
    crop_box: tuple[int, int, int, int]
    alignment: object | None
    camera_full: object
    timings: dict
    warnings: list
    frames_mean: torch.Tensor | None = None  # (3, h, w) mean of the aligned frames at the working size
    depth_range: tuple[float, float] = (0.0, 0.0)  # (near, far) metres of the bounded output
    refine_model: dict | None = None  # the forward model the refinement used (after calibration with "auto")


def _area_resize(x: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    if tuple(x.shape[-2:]) == tuple(size):
        return x
    return F.interpolate(x, size=size, mode="area")


def working_size(
    height: int, width: int, max_size: int | None = None, blur_per_dioptre_max: float | None = None
) -> tuple[tuple[int, int], float]:
    """The size (h, w) the estimation runs at, and the scale factor working / input (never above 1).

    With ``max_size``: the longest side is at most ``max_size`` pixels. Without (the automatic size): the scale
    that brings the stack's largest K (``blur_per_dioptre_max``, px/D at the input size) to
    :data:`TARGET_BLUR_PER_DIOPTRE`; where that leaves more than :data:`WORKING_PIXEL_BUDGET` pixels, the scale
    shrinks towards the budget but not below K = :data:`MIN_BLUR_PER_DIOPTRE`.
    """
    if max_size is not None:
        if max_size < 16:
            raise DefocusError(f"--max-size must be at least 16 pixels, got {max_size}")
        scale = min(1.0, max_size / max(height, width))
    else:
        if blur_per_dioptre_max is None or not blur_per_dioptre_max > 0:
            raise DefocusError("the automatic working size needs the stack's blur per dioptre (a camera)")
        scale = min(1.0, TARGET_BLUR_PER_DIOPTRE / blur_per_dioptre_max)
        budget = (WORKING_PIXEL_BUDGET / (height * width)) ** 0.5
        if scale > budget:
            scale = min(scale, max(budget, MIN_BLUR_PER_DIOPTRE / blur_per_dioptre_max))
        scale = min(1.0, max(scale, 16.0 / max(height, width)))
    return (max(1, round(height * scale)), max(1, round(width * scale))), scale


def _tile_starts(n: int, tile: int, overlap: int) -> list[int]:
    if n <= tile:
        return [0]
    step = tile - overlap
    starts = list(range(0, n - tile, step)) + [n - tile]
    return sorted(set(starts))


def run_tiled(
    model: nn.Module, stack: torch.Tensor, focus: torch.Tensor, blur_per_dioptre: torch.Tensor,
    depth_range: torch.Tensor, tile: int = TILE_SIZE, overlap: int = TILE_OVERLAP, progress: bool = False,
) -> Prediction:
    """Runs ``model`` on overlapping tiles of a (1, N, 3, H, W) stack and blends them with linear ramps, so memory
    is bounded by one tile whatever the image size. Depth is blended in inverse depth."""
    from tqdm import tqdm

    _, n, _, h, w = stack.shape
    ys, xs = _tile_starts(h, tile, overlap), _tile_starts(w, tile, overlap)
    if len(ys) == 1 and len(xs) == 1:
        return model(stack, focus, blur_per_dioptre, depth_range)
    acc = {k: torch.zeros(1, c, h, w) for k, c in (("inv_depth", 1), ("aif", 3), ("confidence", 1))}
    weight = torch.zeros(1, 1, h, w)
    for y in tqdm(ys, desc="tiles (rows)", disable=not progress, leave=False):
        for x in xs:
            th, tw = min(tile, h - y), min(tile, w - x)
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
    return _blend_frames(
        frames, lambda i: float(blur_per_dioptre[i]) * (inv_depth - 1.0 / float(focus_m[i])).abs() / tolerance_px)


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


def _align_frames(
    frames: torch.Tensor, align: bool, in_place: bool, warnings: list[str],
    focus_m: torch.Tensor | None = None, focal_length_m: float | None = None,
) -> tuple[torch.Tensor, object | None, tuple[int, int, int, int]]:
    """Registers (N, 3, H, W) frames to the reference and crops them to the area all cover.

    Returns (frames — a view of the crop, no copy —, the alignment or None, the crop box (x0, y0, x1, y1)); one-line
    warnings (frames too small to align, a focus order the magnification contradicts) are appended to ``warnings``.
    With ``in_place`` the aligned frames overwrite ``frames``.
    """
    n, _, h0, w0 = frames.shape
    if not align or n < 2:
        return frames, None, (0, 0, w0, h0)
    if min(h0, w0) < MIN_ALIGN_SIZE:
        warnings.append(f"frames of {w0}x{h0} px are too small to align (under {MIN_ALIGN_SIZE} px): not aligned")
        return frames, None, (0, 0, w0, h0)
    from defocus.data.align import check_focus_order, estimate_alignment, warp_to_reference

    alignment = estimate_alignment(frames, focus_m=focus_m, focal_length_m=focal_length_m)
    if focus_m is not None:
        warning = check_focus_order(alignment, focus_m)
        if warning:
            warnings.append(warning)
    frames, _ = warp_to_reference(frames, alignment, out=frames if in_place else None)
    box = tuple(int(v) for v in alignment.valid_box)
    return frames[..., box[1] : box[3], box[0] : box[2]], alignment, box


@torch.no_grad()
def predict_photo_stack(
    model: nn.Module,
    stack: FocalStack,
    max_size: int | None = None,
    align: bool = True,
    depth_range: tuple[float, float] | None = None,
    refine_steps: int = 0,
    refine_model: ForwardModel | str = "auto",
    fill_threshold: float = 0.15,
    device: str | torch.device = "cpu",
    progress: bool = False,
    in_place: bool = False,
) -> PhotoResult:
    """Depth and AIF for a stack of any size in bounded memory, with outputs at the input's full resolution.

    ``max_size`` (longest side of the estimation, pixels) defaults to the automatic size of :func:`working_size`.
    ``in_place`` lets the alignment overwrite ``stack.images`` with the aligned frames (saves a copy of a large
    stack; the command line does so).
    Stages: align the frames to the middle-focus frame and crop to the area all cover (unless ``align`` is False);
    estimate at the working size (pixel pitch follows the resize); fill low-confidence regions edge-aware from
    confident neighbours; bring inverse depth back to full resolution by guided upsampling on the full-resolution
    all-in-focus image, which is composed from the full-resolution aligned frames.
    """
    from tqdm import tqdm

    # The bar closes on an error too, so that its line is cleared before the error is printed.
    with tqdm(total=4, desc=f"predict {stack.name}", disable=not progress, leave=False) as bar:
        camera = require_camera(stack)
        dr = resolve_depth_range(stack, depth_range)
        timings: dict[str, float] = {}
        warnings: list[str] = []
        refine_used = None

        def stage(name: str, t0: float) -> None:
            timings[name] = round(time.perf_counter() - t0, 3)
            bar.set_postfix_str(name)
            bar.update(1)

        t = time.perf_counter()
        frames, alignment, box = _align_frames(stack.images, align, in_place, warnings, stack.focus_distances_m,
                                               camera.focal_length_m)
        stage("align", t)

        t = time.perf_counter()
        h, w = frames.shape[-2:]
        fd = stack.focus_distances_m.float()[None]
        (hw, ww), scale = working_size(h, w, max_size, float(camera.blur_per_dioptre(fd).max()))
        small = _area_resize(frames, (hw, ww))
        cam_w = camera.resized(scale)
        k_w = cam_w.blur_per_dioptre(fd)
        dev = torch.device(device)
        model = model.to(dev).eval()
        pred = run_tiled(model, small[None].to(dev), fd.to(dev), k_w.to(dev),
                         torch.tensor([dr], dtype=torch.float64).to(dev), progress=progress)
        if refine_steps > 0:
            physics = refine_physics(refine_model, small[None].to(dev), fd.to(dev), k_w.to(dev), dr, pred)
            refine_used = physics.describe()
            with torch.enable_grad():
                pred = refine(small[None].to(dev), fd.to(dev), k_w.to(dev), dr, pred, refine_steps, physics)
        pred = Prediction(**{k: (None if v is None else v.cpu()) for k, v in vars(pred).items()})
        stage("estimate", t)

        t = time.perf_counter()
        from defocus.color import to_grey
        from defocus.filters import confidence_fill, guided_upsample

        inv_lo, inv_hi = 1.0 / dr[1], 1.0 / dr[0]
        guide_w = to_grey(pred.aif)[:, None]
        inv_w = confidence_fill(pred.inv_depth, pred.confidence, guide_w, threshold=fill_threshold)
        inv_w = inv_w.clamp(inv_lo, inv_hi)
        working = Prediction(depth=1.0 / inv_w, aif=pred.aif, confidence=pred.confidence, inv_depth=inv_w,
                             attention=pred.attention)
        stage("fill", t)

        t = time.perf_counter()
        camera_full = camera  # cropping keeps the pitch
        if scale < 1.0:
            k_full = camera_full.blur_per_dioptre(stack.focus_distances_m)
            inv_up = F.interpolate(inv_w, size=(h, w), mode="bilinear", align_corners=False)
            aif_full = compose_aif(frames, inv_up, stack.focus_distances_m, k_full)
            del inv_up
            # Window of 3 working-size pixels, eps small enough that AIF edges of a few grey levels carry depth edges.
            inv_full = guided_upsample(inv_w, guide_w, to_grey(aif_full)[:, None], radius=3, eps=1e-4)
            inv_full = inv_full.clamp(inv_lo, inv_hi)
            conf_full = F.interpolate(working.confidence, size=(h, w), mode="bilinear", align_corners=False)
            full = Prediction(depth=1.0 / inv_full, aif=aif_full, confidence=conf_full.clamp(0, 1), inv_depth=inv_full)
        else:
            full = working
        stage("upsample", t)
        return PhotoResult(full=full, working=working, working_size=(hw, ww), scale=scale, crop_box=box,
                           alignment=alignment, camera_full=camera_full, timings=timings, warnings=warnings,
                           frames_mean=small.mean(0), depth_range=tuple(dr), refine_model=refine_used)


def point_cloud(
    depth_m: torch.Tensor, aif: torch.Tensor, focal_length_px: float, principal_point: tuple[float, float],
    mask: torch.Tensor | None = None, max_points: int = 1_000_000,
) -> tuple[np.ndarray, np.ndarray]:
    """Metric XYZ (camera at the origin, x right, y down, z forward) and colours of a depth map, by the pinhole model.

    Args:
        depth_m: (H, W) metres (z); aif: (3, H, W) colours in [0, 1]; focal_length_px: f / pixel pitch;
        principal_point: (cx, cy) in these pixels; mask: optional (H, W) bool of pixels to keep;
        max_points: the grid is subsampled by a regular step to stay below this.
    Returns:
        (xyz (M, 3) float32, rgb (M, 3) uint8).
    """
    from defocus.color import to_uint8

    h, w = depth_m.shape
    step = max(1, int(np.ceil(np.sqrt(h * w / max_points))))
    ys = torch.arange(0, h, step, dtype=torch.float64)
    xs = torch.arange(0, w, step, dtype=torch.float64)
    z = depth_m[::step, ::step].double()
    keep = torch.isfinite(z) & (z > 0)
    if mask is not None:
        keep &= mask[::step, ::step]
    cx, cy = principal_point
    x = (xs[None, :] + 0.5 - cx) / focal_length_px * z
    y = (ys[:, None] + 0.5 - cy) / focal_length_px * z
    xyz = torch.stack([x, y, z], dim=-1)[keep].float().numpy()
    rgb = to_uint8(aif[:, ::step, ::step]).permute(1, 2, 0)[keep].numpy()
    return xyz, rgb


def photo_report(stack: FocalStack, result: PhotoResult, title: str) -> Image.Image:
    """One page per stack: input thumbnails labelled with their focus, aligned AIF, depth with a colour bar in
    metres, confidence, and the mean of the aligned frames with the alignment residual (doubled edges show there)."""
    from defocus.visualize import colorize, contact_sheet, depth_preview

    full = result.full
    thumbs = [(f"{name}: {float(fd):.3g} m" if not getattr(stack, "provenance", {}).get("relative") else f"{name}: frame {i}",
               img) for i, (name, img, fd) in enumerate(zip(stack.image_names, stack.images,
                                                               stack.focus_distances_m))]
    depth = result.working.depth[0, 0].numpy()
    conf = result.working.confidence[0, 0].numpy()
    aligned_mean = result.frames_mean if result.frames_mean is not None else result.working.aif[0]
    label_mean = "mean of the frames (not aligned)"
    if result.alignment is not None:
        before = getattr(result.alignment, "residual_before", None)
        after = getattr(result.alignment, "residual_after", None)
        if before is not None and after is not None:
            label_mean = f"alignment residual {float(torch.as_tensor(before).mean()):.3f} -> " \
                         f"{float(torch.as_tensor(after).mean()):.3f}"
    rows = [
        thumbs,
        [
            ("all-in-focus", full.aif[0]),
            ("depth (m)", depth_preview(depth)),
            ("confidence (black 0, white 1)", colorize(conf, 0.0, 1.0, "gray")),
            (label_mean, aligned_mean),
        ],
    ]
    return contact_sheet(rows, cell_height=220, title=title)


#: Files :func:`write_photo_outputs` writes for each stack, besides those of :data:`OUTPUT_FILES`.
PHOTO_OUTPUT_FILES = ("confidence.png", "points.ply", "report.png", "prediction.json")


def write_photo_outputs(
    out_dir: str | os.PathLike,
    stack: FocalStack,
    result: PhotoResult,
    info: dict,
    min_confidence: float = 0.0,
    max_points: int = 1_000_000,
) -> Path:
    """Writes every output of one real-photo stack into ``out_dir`` atomically: the files of
    :func:`write_prediction` at full resolution (depth set to 0 = unknown where the confidence is below
    ``min_confidence``), ``confidence.png``, ``points.ply`` (metric XYZ + AIF colour, masked likewise),
    ``report.png`` and ``prediction.json`` (``info`` plus what the run found)."""
    import json

    from defocus.visualize import colorize, save_png

    full = result.full
    depth = full.depth[0, 0].clone()
    conf = full.confidence[0, 0]
    keep = conf >= min_confidence if min_confidence > 0 else torch.ones_like(conf, dtype=torch.bool)
    depth[~keep] = 0.0
    depth_np = depth.numpy().astype("float32")
    cam = result.camera_full
    x0, y0, _, _ = result.crop_box
    h0, w0 = stack.images.shape[-2:]
    xyz, rgb = point_cloud(depth, full.aif[0], cam.focal_length_m / cam.pixel_size_m,
                           (w0 / 2.0 - x0, h0 / 2.0 - y0), keep, max_points)
    info = {
        **info,
        "output_size": [int(depth.shape[1]), int(depth.shape[0])],
        "crop_box_xyxy": list(result.crop_box),
        "working_size": [result.working_size[1], result.working_size[0]],
        "scale": result.scale,
        "min_confidence": min_confidence,
        "masked_fraction": float((~keep).float().mean()),
        "points": int(len(xyz)),
        "alignment": result.alignment.to_dict() if result.alignment is not None else None,
        "timings_s": result.timings,
        "warnings": result.warnings,
        "refine_forward_model": result.refine_model,
    }
    report = photo_report(stack, result, title=f"{stack.name}: depth from {stack.num_images} frames")

    def fill(tmp: Path) -> None:
        from defocus.data.codecs import write_ply_points

        _write_core_outputs(tmp, depth_np, full.aif[0], conf.numpy().astype("float32"), stack.name)
        save_png(tmp / "confidence.png", colorize(conf.numpy(), 0.0, 1.0, "gray"))
        write_ply_points(tmp / "points.ply", xyz, rgb)
        save_png(tmp / "report.png", report)
        (tmp / "prediction.json").write_text(json.dumps(info, indent=2) + "\n")

    return atomic_folder(Path(out_dir), fill, "predictions to")


# ====================================================================================== without focus distances
#: Longest side of the focus-measure estimation of a relative stack (its blur per dioptre is unknown).
RELATIVE_MAX_SIZE = 1024


@dataclass
class RelativeResult:
    """A stack without focus distances: which frame is sharpest at each pixel (interpolated), not metric depth.

    Attributes:
        focus_index: (1, 1, H, W) in [0, N − 1], frame positions in file order (fractional between frames).
        aif: (1, 3, H, W) composed from the frames; confidence: (1, 1, H, W) in [0, 1].
        crop_box, alignment, working_size, scale, timings, warnings, frames_mean: as in :class:`PhotoResult`.
    """

    focus_index: torch.Tensor
    aif: torch.Tensor
    confidence: torch.Tensor
    working_size: tuple[int, int]
    scale: float
    crop_box: tuple[int, int, int, int]
    alignment: object | None
    timings: dict
    warnings: list
    frames_mean: torch.Tensor | None = None


@torch.no_grad()
def predict_relative_stack(
    stack: FocalStack, max_size: int | None = None, align: bool = True, fill_threshold: float = 0.15,
    in_place: bool = False,
) -> RelativeResult:
    """The relative result for a stack whose focus distances are unknown (refocused light fields, microscopes).

    The classical focus measure (SML, the package's baseline) runs at the working size on frames placed at
    "dioptres" 0, 1, …, N − 1, so its 3-point interpolation gives a fractional frame index; the index map is
    filled edge-aware where the focus cue is weak, brought to full resolution by guided upsampling, and the AIF is
    composed from the full-resolution frames around that index.
    """
    from defocus.color import to_grey
    from defocus.filters import confidence_fill, guided_upsample
    from defocus.models.classical import classical_depth_from_focus

    timings: dict[str, float] = {}
    warnings: list[str] = ["no focus distances: the result is a relative focus-index map, not metric depth "
                           "(pass --focus or --focus-diopters for metres)"]
    n = stack.num_images
    t = time.perf_counter()
    frames, alignment, box = _align_frames(stack.images, align, in_place, warnings)
    timings["align"] = round(time.perf_counter() - t, 3)
    t = time.perf_counter()
    h, w = frames.shape[-2:]
    (hw, ww), scale = working_size(h, w, max_size or RELATIVE_MAX_SIZE)
    small = _area_resize(frames, (hw, ww))
    # Frame i at "dioptre" i + 1 (focus 1/(i+1) m): the interpolated dioptre minus one is the frame index.
    pseudo_focus = 1.0 / torch.arange(1, n + 1, dtype=torch.float64)
    depth, aif_w, conf = classical_depth_from_focus(small[None], pseudo_focus)
    index_w = (1.0 / depth.double() - 1.0).float()
    guide_w = to_grey(aif_w)[:, None]
    index_w = confidence_fill(index_w, conf, guide_w, threshold=fill_threshold).clamp(0, n - 1)
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
    return RelativeResult(focus_index=index, aif=aif, confidence=conf_full, working_size=(hw, ww), scale=scale,
                          crop_box=box, alignment=alignment, timings=timings, warnings=warnings,
                          frames_mean=small.mean(0))


def _compose_by_index(frames: torch.Tensor, index: torch.Tensor, width: float = 0.5) -> torch.Tensor:
    """AIF (1, 3, H, W) from (N, 3, H, W) frames, each pixel mixing the frames near its focus index (1, 1, H, W)."""
    return _blend_frames(frames, lambda i: (index - i) / width)


def write_relative_outputs(out_dir: str | os.PathLike, stack: FocalStack, result: RelativeResult, info: dict) -> Path:
    """Writes a relative result: ``focus_index.tiff`` (float32 frame index), ``focus_index_preview.png`` (labelled
    as not metric), ``aif.png``, ``confidence.tiff``/``.png``, ``report.png`` and ``prediction.json``; no metric
    depth and no point cloud."""
    import json

    from defocus.visualize import colorize, contact_sheet, save_png

    n = stack.num_images
    index = result.focus_index[0, 0].numpy().astype("float32")
    conf = result.confidence[0, 0].numpy().astype("float32")
    preview = colorize(index, 0.0, max(n - 1, 1), "turbo")
    label = f"RELATIVE focus index (frame 0 blue ... frame {n - 1} red), NOT metric depth"
    preview_sheet = contact_sheet([[(label, preview)]], cell_height=min(index.shape[0], 720))
    info = {**info, "relative": True, "output_size": [index.shape[1], index.shape[0]],
            "crop_box_xyxy": list(result.crop_box), "working_size": [result.working_size[1], result.working_size[0]],
            "alignment": result.alignment.to_dict() if result.alignment is not None else None,
            "timings_s": result.timings, "warnings": result.warnings}
    thumbs = [(f"{name}: frame {i}", img) for i, (name, img) in enumerate(zip(stack.image_names, stack.images))]
    report = contact_sheet(
        [thumbs, [("all-in-focus", result.aif[0]), (label, preview),
                  ("confidence (black 0, white 1)", colorize(conf, 0.0, 1.0, "gray")),
                  ("mean of the aligned frames" if result.alignment is not None else "mean of the frames (not aligned)",
                   result.frames_mean)]],
        cell_height=220, title=f"{stack.name}: relative result from {n} frames (no focus distances)",
    )

    def fill(tmp: Path) -> None:
        write_depth_tiff(tmp / "focus_index.tiff", index)
        save_png(tmp / "focus_index_preview.png", preview_sheet)
        save_image(tmp / "aif.png", result.aif[0])
        write_depth_tiff(tmp / "confidence.tiff", conf)
        save_png(tmp / "confidence.png", colorize(conf, 0.0, 1.0, "gray"))
        save_png(tmp / "report.png", report)
        (tmp / "prediction.json").write_text(json.dumps(info, indent=2) + "\n")

    return atomic_folder(Path(out_dir), fill, "predictions to")
