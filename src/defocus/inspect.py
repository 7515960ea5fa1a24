"""What ``predict`` would read from a stack folder, and how much blur the stack can show: :func:`inspect_stack` and
:func:`format_inspection`."""

from __future__ import annotations

import os
from typing import Any

from defocus.data.folders import read_stack
from defocus.data.sources import CAMERA_FIELDS, missing_camera_message
from defocus.optics.camera import default_depth_range

_UNITS = {"focal_length_mm": "mm", "f_number": "", "pixel_size_um": "µm"}


def inspect_stack(folder: str | os.PathLike, flags: bool = False, **read_stack_kwargs: Any) -> dict:
    """Reads ``folder`` as ``predict`` would (:func:`read_stack` with the same keyword arguments; ground truth is
    not loaded unless ``load_ground_truth=True`` is passed) and describes it.

    Returns a dict (JSON-serialisable)::

        {"name", "folder", "num_images", "width", "height",
         "images": [{"file", "focus_m" (None for a relative stack), "blur_per_dioptre_px" (K, None without a
                     camera or focus)}, ...]   (in stack order),
         "focus_source", "relative",
         "camera": {field: {"value", "source"}}, "device": {"make", "model", "sensor_table"},
         "camera_complete": bool,
         "depth_range_m": [near, far] | None  (defocus.optics.camera.default_depth_range),
         "max_blur_px": float | None  (largest CoC in pixels, K·|1/fd − 1/d| at the range ends, over the images),
         "warnings": [str, ...]}

    With ``flags`` (the ``inspect`` command), the warnings name the command-line flags that would fix them.

    Raises:
        DefocusError: whatever :func:`read_stack` raises (with ``require_focus=True``, the default, a stack without
            focus distances).
    """
    kwargs = {"load_ground_truth": False, **read_stack_kwargs}
    stack = read_stack(folder, **kwargs)
    prov = stack.provenance
    cam_prov = prov.get("camera", {})
    relative = bool(prov.get("relative"))
    focus = [float(v) for v in stack.focus_distances_m.tolist()]
    h, w = stack.image_size
    warnings: list[str] = []

    ks: list[float | None] = [None] * stack.num_images
    depth_range = None
    max_blur = None
    if stack.camera is None:
        warnings.append(missing_camera_message(cam_prov, stack.name, flags=flags))
    if relative:
        warnings.append(
            f"no focus distances for {stack.name} ("
            + ("no --focus, --focus-diopters, " if flags else "none given, no ")
            + "stack.json focus_distances_m or EXIF SubjectDistance): only a relative result is possible"
        )
    if stack.camera is not None and not relative:
        ks = [float(k) for k in stack.camera.blur_per_dioptre(stack.focus_distances_m).tolist()]
        near, far = default_depth_range(stack.camera, focus)
        depth_range = [float(near), float(far)]
        max_blur = max(k * max(abs(1 / fd - 1 / near), abs(1 / fd - 1 / far)) for k, fd in zip(ks, focus))
        if max_blur < 1.0:
            warnings.append(
                f"the largest blur over {near:g}-{far:g} m is {max_blur:.2f} px: the images barely differ in focus, "
                "so depth from defocus has little to go on"
            )
    if not relative and stack.num_images > 1:
        steps = [b - a for a, b in zip(focus, focus[1:])]
        if len(set(focus)) < len(focus):
            dup = sorted({v for v in focus if focus.count(v) > 1})
            warnings.append(f"several images share a focus distance: {', '.join(f'{v:g} m' for v in dup)}")
        if not (all(s > 0 for s in steps) or all(s < 0 for s in steps)):
            warnings.append(
                "the focus distances are not sorted in the order of the images: "
                + ", ".join(f"{n} {v:g} m" for n, v in zip(stack.image_names, focus))
            )
    if stack.num_images < 2:
        warnings.append("a single image: depth from defocus needs at least two focus settings")

    return {
        "name": stack.name,
        "folder": str(folder),
        "num_images": stack.num_images,
        "width": w,
        "height": h,
        "images": [
            {"file": nm, "focus_m": None if relative else fd, "blur_per_dioptre_px": k}
            for nm, fd, k in zip(stack.image_names, focus, ks)
        ],
        "focus_source": prov.get("focus", {}).get("source"),
        "relative": relative,
        "camera": {k: dict(cam_prov.get(k, {"value": None, "source": None})) for k in CAMERA_FIELDS},
        "device": dict(cam_prov.get("device", {})),
        "camera_complete": stack.camera is not None,
        "depth_range_m": depth_range,
        "max_blur_px": max_blur,
        "warnings": warnings,
    }


def format_inspection(info: dict) -> str:
    """A readable multi-line report of :func:`inspect_stack`'s dict."""
    lines = [f"stack {info['name']} ({info['folder']})"]
    lines.append(f"  {info['num_images']} images, {info['width']}x{info['height']} px (WxH)")
    src = info.get("focus_source")
    lines.append(f"  focus: {'relative (no focus distances)' if info.get('relative') else f'from {src}'}")
    for im in info["images"]:
        parts = [f"    {im['file']}"]
        if im["focus_m"] is not None:
            parts.append(f"focus {im['focus_m']:.4g} m")
        if im["blur_per_dioptre_px"] is not None:
            parts.append(f"K {im['blur_per_dioptre_px']:.4g} px/D")
        lines.append(": ".join(parts[:2]) + ("".join(f", {p}" for p in parts[2:])))
    lines.append("  camera:")
    for key in CAMERA_FIELDS:
        entry = info["camera"].get(key) or {}
        value, source = entry.get("value"), entry.get("source")
        label = key.replace("_mm", "").replace("_um", "").replace("_", " ")
        if source is None:
            lines.append(f"    {label}: missing")
        else:
            unit = f" {_UNITS[key]}" if _UNITS[key] else ""
            lines.append(f"    {label}: {float(value):.4g}{unit} (from {source})")
    device = info.get("device") or {}
    if device.get("make") or device.get("model"):
        table = device.get("sensor_table")
        lines.append(
            f"    device: {device.get('make') or '?'} {device.get('model') or '?'}"
            + (f" (sensor table: {table})" if table else " (no sensor-table entry)")
        )
    if info.get("depth_range_m") is not None:
        near, far = info["depth_range_m"]
        lines.append(f"  depth range: {near:.4g}-{far:.4g} m, largest blur {info['max_blur_px']:.3g} px")
    if info["warnings"]:
        lines.append("  warnings:")
        lines.extend(f"    - {w}" for w in info["warnings"])
    return "\n".join(lines)
