"""The files of a prediction, written by one function: :func:`write_prediction`.

For a metric result (:class:`~defocus.predict.StackPrediction`) a stack's folder holds, at the input's full
resolution: ``depth.tiff`` (float32 metres, 0 = unknown), ``depth.png`` (uint16 millimetres), ``depth_preview.png``,
``aif.png``, ``confidence.tiff`` / ``confidence.png``, ``points.ply``, ``report.png`` and ``prediction.json``. For a
relative result (:class:`~defocus.predict.RelativePrediction`, no focus distances): ``focus_index.tiff``,
``focus_index_preview.png``, ``aif.png``, the confidence files, ``report.png`` and ``prediction.json`` — no metric
depth, no point cloud. Folders are written whole or not at all (a temporary folder renamed into place).
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from defocus.data.codecs import save_image, write_depth_png_mm, write_depth_tiff, write_ply_points
from defocus.files import PNG_COMPRESS_LEVEL, atomic_folder
from defocus.predict import RelativePrediction, StackPrediction

#: Files of every metric prediction folder.
OUTPUT_FILES = ("depth.tiff", "depth.png", "depth_preview.png", "aif.png", "confidence.tiff", "confidence.png",
                "points.ply", "report.png", "prediction.json")
#: Files of a relative prediction folder.
RELATIVE_OUTPUT_FILES = ("focus_index.tiff", "focus_index_preview.png", "aif.png", "confidence.tiff",
                         "confidence.png", "report.png", "prediction.json")


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


def _alignment_label(result: StackPrediction | RelativePrediction) -> str:
    """Caption of the report's last cell: the mean of the frames, with the alignment residual where it was applied."""
    alignment = result.alignment
    if alignment is None:
        return "mean of the frames (not aligned)"
    if not alignment.applied:
        return "mean of the frames (registered)"  # nothing to align: the frames are as given
    return (f"alignment residual {float(alignment.residual_before.mean()):.3f} -> "
            f"{float(alignment.residual_after.mean()):.3f}")


#: Height in pixels of the report's picture cells.
REPORT_CELL_HEIGHT = 220


def _for_cell(depth: np.ndarray, height: int = REPORT_CELL_HEIGHT) -> np.ndarray:
    """A depth map subsampled (nearest: unknown pixels stay unknown) to about ``height`` rows, so that its preview's
    colour bar and labels are drawn at the size the report shows them, not shrunk from a large picture."""
    step = max(1, int(np.ceil(depth.shape[0] / height)))
    return depth[::step, ::step]


def report_page(result: StackPrediction | RelativePrediction, depth_cell: tuple[str, Any]) -> Image.Image:
    """One page per stack: input thumbnails labelled with their focus, the AIF, ``depth_cell`` (caption, picture),
    the confidence, and the mean of the (aligned) frames (doubled edges show there)."""
    from defocus.visualize import colorize, contact_sheet

    stack = result.stack
    thumbs = [(f"{name}: frame {i}" if result.relative else f"{name}: {float(fd):.3g} m", img)
              for i, (name, img, fd) in enumerate(zip(stack.image_names, stack.images, stack.focus_distances_m))]
    working_conf = result.working.confidence if isinstance(result, StackPrediction) else result.confidence
    mean = result.frames_mean if result.frames_mean is not None else result.aif[0]
    rows = [thumbs, [("all-in-focus", result.aif[0]), depth_cell,
                     ("confidence (black 0, white 1)", colorize(working_conf[0, 0].numpy(), 0.0, 1.0, "gray")),
                     (_alignment_label(result), mean)]]
    title = (f"{stack.name}: relative result from {stack.num_images} frames (no focus distances)" if result.relative
             else f"{stack.name}: depth from {stack.num_images} frames")
    return contact_sheet(rows, cell_height=REPORT_CELL_HEIGHT, title=title)


def prediction_info(result: StackPrediction | RelativePrediction, extra: dict | None = None) -> dict[str, Any]:
    """The content of ``prediction.json``: ``extra`` (e.g. the version, the model and checkpoint) plus what the run
    used and found — camera values and their sources, focus per image file, options, alignment, sizes, timings,
    warnings."""
    stack = result.stack
    alignment = result.alignment
    images = [{"file": n} if result.relative else {"file": n, "focus_m": fd}
              for n, fd in zip(stack.image_names, stack.focus_distances_m.tolist())]
    info: dict[str, Any] = {
        **(extra or {}),
        "provenance": stack.provenance,
        "images": images,
        "options": result.options.describe(),
        "aligned": alignment is not None and alignment.applied,
        "alignment": alignment.to_dict() if alignment is not None else None,
        "crop_box_xyxy": list(result.crop_box),
        "working_size": [result.working_size[1], result.working_size[0]],
        "scale": result.scale,
        "timings_s": result.timings,
        "warnings": result.warnings,
    }
    if result.relative:
        info["relative"] = True
    else:
        info["camera"] = stack.camera.to_dict()
        info["depth_range_m"] = list(result.depth_range)
        info["refine_forward_model"] = result.refine_model
        info["confidence"] = result.confidence_kind
        info["confidence_of"] = result.confidence_of
        gains = result.exposure_gains
        info["exposure_gains"] = None if gains is None else [round(float(g), 4) for g in gains]
    return info


#: The largest depth depth.png (uint16 millimetres) can hold, metres.
DEPTH_PNG_MAX_M = 65.535


def output_intrinsics(result: StackPrediction) -> dict[str, Any]:
    """The pinhole intrinsics of the output pixels (after the alignment's crop; the outputs are not resized): fx,
    fy = focal length / pixel pitch, and the principal point at the centre of the input image, moved by the crop.
    Pixel centres at integer coordinates (the OpenCV / Open3D convention): ``open3d.camera.PinholeCameraIntrinsic(
    width, height, fx, fy, cx, cy)`` takes them as they are. The thin-lens camera has no distortion model."""
    cam = result.camera
    x0, y0, x1, y1 = result.crop_box
    h0, w0 = result.stack.images.shape[-2:]
    f_px = cam.focal_length_m / cam.pixel_size_m
    return {"width": int(x1 - x0), "height": int(y1 - y0), "fx": f_px, "fy": f_px,
            "cx": w0 / 2.0 - 0.5 - x0, "cy": h0 / 2.0 - 0.5 - y0,
            "convention": "pixel centres at integer coordinates (OpenCV / Open3D)"}


def write_prediction(
    out_dir: str | os.PathLike,
    result: StackPrediction | RelativePrediction,
    info: dict | None = None,
    min_confidence: float = 0.0,
    max_points: int = 1_000_000,
) -> Path:
    """Writes every output of one stack into ``out_dir`` atomically (module docstring); returns the folder.

    Args:
        result: what :func:`defocus.predict.predict_stack` (or :func:`defocus.estimate`) returned.
        info: extra entries of ``prediction.json`` (the caller's: version, model, checkpoint, ...).
        min_confidence: depth is written as 0 (unknown), and no point, where the confidence is below this.
        max_points: the point cloud is subsampled to at most this many points.
    """
    from defocus.visualize import colorize, contact_sheet, depth_preview, save_png

    info = prediction_info(result, info)
    stack = result.stack
    if result.relative:
        n = stack.num_images
        index = result.focus_index[0, 0].numpy().astype("float32")
        conf = result.confidence[0, 0].numpy().astype("float32")
        # Frame 0 red, as the metric preview paints near red: stacks are usually listed from near focus to far.
        preview = colorize(max(n - 1, 1) - index, 0.0, max(n - 1, 1), "turbo")
        label = f"RELATIVE focus index (frame 0 red ... frame {n - 1} blue), NOT metric depth"
        # The label as the sheet's title: a cell label is cut to its image's width.
        preview_sheet = contact_sheet([[("", preview)]], cell_height=min(index.shape[0], 720), title=label)
        info["output_size"] = [index.shape[1], index.shape[0]]
        report = report_page(result, ("relative focus index (frame 0 red), not metric", preview))

        def files(tmp: Path) -> None:
            write_depth_tiff(tmp / "focus_index.tiff", index)
            save_png(tmp / "focus_index_preview.png", preview_sheet)
    else:
        full = result.full
        depth = full.depth[0, 0].clone()
        conf_t = full.confidence[0, 0]
        keep = conf_t >= min_confidence if min_confidence > 0 else torch.ones_like(conf_t, dtype=torch.bool)
        depth[~keep] = 0.0
        depth_np = depth.numpy().astype("float32")
        conf = conf_t.numpy().astype("float32")
        k = output_intrinsics(result)
        # point_cloud measures pixels from their corners: its principal point is half a pixel further.
        xyz, rgb = point_cloud(depth, full.aif[0], k["fx"], (k["cx"] + 0.5, k["cy"] + 0.5), keep, max_points)
        clipped = float((depth > DEPTH_PNG_MAX_M).float().mean())
        if clipped > 0:  # the float TIFF is exact; say so rather than let the 16-bit file saturate silently
            note = (f"depth.png (uint16 millimetres) clips {100 * clipped:.3g} % of the pixels at "
                    f"{DEPTH_PNG_MAX_M:g} m (depth reaches {float(depth.max()):.4g} m): depth.tiff holds the values")
            result.warnings.append(note)  # prediction.json's "warnings" is this list
        info.update({"output_size": [int(depth.shape[1]), int(depth.shape[0])], "intrinsics": k,
                     "min_confidence": min_confidence,
                     "masked_fraction": float((~keep).float().mean()), "points": int(len(xyz))})
        report = report_page(result, ("depth (m)", depth_preview(_for_cell(result.working.depth[0, 0].numpy()))))

        def files(tmp: Path) -> None:
            write_depth_tiff(tmp / "depth.tiff", depth_np)
            write_depth_png_mm(tmp / "depth.png", depth_np)
            depth_preview(depth_np, title=stack.name).save(tmp / "depth_preview.png", compress_level=PNG_COMPRESS_LEVEL)
            write_ply_points(tmp / "points.ply", xyz, rgb)

    def fill(tmp: Path) -> None:
        files(tmp)
        save_image(tmp / "aif.png", result.aif[0].clamp(0, 1))
        write_depth_tiff(tmp / "confidence.tiff", conf)
        save_png(tmp / "confidence.png", colorize(conf, 0.0, 1.0, "gray"))
        save_png(tmp / "report.png", report)
        (tmp / "prediction.json").write_text(json.dumps(info, indent=2) + "\n")

    return atomic_folder(Path(out_dir), fill, "predictions to")
