"""Where a stack's camera values and focus distances come from: each value from the first source that has it, with
the source recorded.

Camera, per field (``focal_length_mm``, ``f_number``, ``pixel_size_um``; mm / µm as in ``stack.json``)::

    flag  >  stack.json  >  EXIF (FocalLength, FNumber; pitch from FocalPlaneXResolution/Unit or
    FocalLengthIn35mmFilm)  >  sensor table by EXIF Make/Model (pitch only)  >  --sensor-width-mm (pitch only)

Focus distances::

    --focus (metres)  >  --focus-diopters (1/D)  >  stack.json focus_distances_m  >  EXIF SubjectDistance of every
    image  >  none (the caller then gives a relative result)

Focus is never guessed from file names.
"""

from __future__ import annotations

import math
from typing import Any, Sequence

from defocus.data.sensors import find_model, lookup_sensor, pixel_pitch_um
from defocus.data.stack import focus_list
from defocus.errors import DefocusError, InputError
from defocus.optics.camera import ThinLensCamera

CAMERA_FIELDS: tuple[str, ...] = ("focal_length_mm", "f_number", "pixel_size_um")
CAMERA_FLAGS: dict[str, str] = {
    "focal_length_mm": "--focal-length-mm",
    "f_number": "--f-number",
    "pixel_size_um": "--pixel-size-um",
}
_FIELD_WORDS = {"focal_length_mm": "focal length", "f_number": "f-number", "pixel_size_um": "pixel pitch"}
_EXIF_TAG = {"focal_length_mm": "FocalLength", "f_number": "FNumber"}
# EXIF values beyond these are implausible and count as missing (ThinLensCamera's own limits).
_EXIF_LIMIT = {"focal_length_mm": 10_000.0, "f_number": math.inf, "pixel_size_um": 1_000.0}


def _number(value: Any) -> float | None:
    """A finite float, or None (for None and non-numbers)."""
    if value is None or isinstance(value, bool):
        return None
    try:
        v = float(value)
    except (TypeError, ValueError):
        return None
    return v if math.isfinite(v) else None


def _what(name: str | None) -> str:
    return f"stack {name}" if name else "the stack"


def resolve_camera(
    flags: dict | None,
    stack_json_camera: dict | None,
    exif: dict | None,
    image_width_px: int,
    sensor_width_mm: float | None = None,
    *,
    image_height_px: int | None = None,
) -> tuple[ThinLensCamera | None, dict]:
    """The camera from every source, each field from the first source that has it.

    Args:
        flags: any subset of ``focal_length_mm``, ``f_number``, ``pixel_size_um`` (None values count as not
            given); each overrides only the field it names.
        stack_json_camera: the ``camera`` object of ``stack.json`` (may be partial here), or None.
        exif: :func:`defocus.data.exif.read_exif_metadata` of the first image (``make`` / ``model`` select the
            sensor-table entry; implausible EXIF values count as missing).
        image_width_px: width of the images as given (the sensor table and ``sensor_width_mm`` scale to it).
        sensor_width_mm: the ``--sensor-width-mm`` flag: pitch = sensor width / image width (the last resort).
        image_height_px: when given, the image's long side stands for its width in the two pitch fallbacks, so
            that portrait photos of a landscape sensor get the right pitch.

    Returns:
        ``(camera, sources)``: the camera, or None when a field is found nowhere (see
        :func:`missing_camera_message`); ``sources`` maps each of :data:`CAMERA_FIELDS` to ``{"value": float |
        None, "source": str | None}`` — sources ``"flag"``, ``"stack.json"``, ``"exif:FocalLength"``,
        ``"exif:FNumber"``, ``"exif:FocalPlaneXResolution"``, ``"exif:FocalLengthIn35mmFilm"``,
        ``"sensor-table:<entry name>"``, ``"sensor-width-mm"`` — and ``"device"`` to ``{"make", "model",
        "sensor_table"}`` (EXIF Make / Model and the matching table entry's name, each None when absent).

    Raises:
        DefocusError: an unknown flag name, a bad ``sensor_width_mm`` or image width, or values from the flags or
            stack.json that make no camera (e.g. an f-number of 0), naming the flag.
    """
    flags = {k: v for k, v in (flags or {}).items() if v is not None}
    unknown = sorted(set(flags) - set(CAMERA_FIELDS))
    if unknown:
        raise DefocusError(f"unknown camera values {unknown}: expected {', '.join(CAMERA_FIELDS)}")
    js = stack_json_camera or {}
    exif = exif or {}
    width = int(image_width_px)
    long_side = max(width, int(image_height_px)) if image_height_px is not None else width
    if long_side <= 0:
        raise DefocusError(f"image width must be a positive number of pixels, got {image_width_px!r}")
    if sensor_width_mm is not None:
        sw = _number(sensor_width_mm)
        if sw is None or sw <= 0:
            raise InputError(f"the sensor width must be a finite positive number of mm, got {sensor_width_mm!r}",
                             field="sensor_width_mm")
        sensor_width_mm = sw

    sources: dict[str, Any] = {}
    for key in CAMERA_FIELDS:
        value: float | None = None
        source: str | None = None
        if key in flags:
            value, source = flags[key], "flag"
        elif js.get(key) is not None:
            value, source = js[key], "stack.json"
        else:
            v = _number(exif.get(key))
            if v is not None and 0 < v <= _EXIF_LIMIT[key]:
                tag = _EXIF_TAG.get(key) or str(exif.get("pixel_size_from") or "FocalPlaneXResolution")
                value, source = v, f"exif:{tag}"
        sources[key] = {"value": value, "source": source}

    make, model = exif.get("make"), exif.get("model")
    entry = lookup_sensor(make, model, _number(sources["focal_length_mm"]["value"])) if make and model else None
    sources["device"] = {"make": make, "model": model, "sensor_table": entry.name if entry else None}
    pitch = sources["pixel_size_um"]
    if pitch["source"] is None and entry is not None:
        pitch.update(value=pixel_pitch_um(entry, long_side), source=f"sensor-table:{entry.name}")
    if pitch["source"] is None and sensor_width_mm is not None:
        pitch.update(value=sensor_width_mm * 1e3 / long_side, source="sensor-width-mm")

    if any(sources[k]["source"] is None for k in CAMERA_FIELDS):
        return None, sources
    camera = ThinLensCamera.from_mm_um(
        sources["focal_length_mm"]["value"], sources["f_number"]["value"], sources["pixel_size_um"]["value"]
    )
    for k in CAMERA_FIELDS:
        sources[k]["value"] = float(sources[k]["value"])
    return camera, sources


def _join(words: Sequence[str]) -> str:
    words = list(words)
    return words[0] if len(words) == 1 else ", ".join(words[:-1]) + " and " + words[-1]


def _describe(key: str, value: float, source: str, flags: bool = True) -> str:
    unit = {"focal_length_mm": " mm", "f_number": "", "pixel_size_um": " µm"}[key]
    v = f"{value:g}{unit}"
    if source.startswith("exif:"):
        return f"{source[5:]} {v}"
    if source == "flag":
        return f"{CAMERA_FLAGS[key]} {value:g}" if flags else f"{_FIELD_WORDS[key]} {v}"
    return f"{_FIELD_WORDS[key]} {v} from {source}"


def missing_camera_message(sources: dict, name: str | None = None, flags: bool = False) -> str:
    """Names exactly the camera values still to give when :func:`resolve_camera` found no camera, and why, e.g.::

        no pixel pitch for STACK: give the pixel pitch (pixel_size_um) or the sensor width (EXIF has FocalLength
        6.81 mm and FNumber 1.85 but no pixel pitch, and the camera model Google Pixel 9 is not in the sensor table)

    With ``flags`` (the command line's callers), the command-line flags that give them instead::

        no pixel pitch for STACK: pass --pixel-size-um or --sensor-width-mm (...)
    """
    missing = [k for k in CAMERA_FIELDS if (sources.get(k) or {}).get("source") is None]
    what = name or "the stack"
    if not missing:
        return f"{what} has a complete camera"
    if flags:
        names = [CAMERA_FLAGS[k] for k in missing]
        pitch, either = "--pixel-size-um or --sensor-width-mm", "one of --pixel-size-um / --sensor-width-mm"
        verb = "pass"
    else:  # the values' names as stack.json's camera and the API's camera_flags spell them
        names = [f"the {_FIELD_WORDS[k]} ({k})" for k in missing]
        pitch = either = "the pixel pitch (pixel_size_um) or the sensor width (sensor_width_mm)"
        verb = "give"
    if "pixel_size_um" in missing:
        pass_text = pitch if len(names) == 1 else _join(names[:-1] + [either])
    else:
        pass_text = _join(names)
    head = f"no {_join([_FIELD_WORDS[k] for k in missing])} for {what}: {verb} {pass_text}"

    found = [(k, sources[k]) for k in CAMERA_FIELDS if k not in missing]
    exif_found = [_describe(k, s["value"], s["source"], flags) for k, s in found if s["source"].startswith("exif:")]
    other_found = [_describe(k, s["value"], s["source"], flags) for k, s in found
                   if not s["source"].startswith("exif:")]
    lacks = f"no {_join([_FIELD_WORDS[k] for k in missing])}"
    parts = []
    if other_found:
        parts.append(f"{_join(other_found)} given")
    if exif_found:
        parts.append(f"EXIF has {_join(exif_found)} but {lacks}")
    if not found:
        parts.append("no flag, stack.json camera or EXIF camera values")
    if "pixel_size_um" in missing:
        device = sources.get("device") or {}
        make, model = device.get("make"), device.get("model")
        if not make or not model:
            parts.append("the images have no EXIF Make/Model to look up in the sensor table")
        else:
            label = model if str(model).lower().startswith(str(make).lower()) else f"{make} {model}"
            entries = find_model(make, model)
            modules = [e for e in entries if e.focal_length_mm is not None]
            if modules:
                fl = ", ".join(f"{e.focal_length_mm:g} mm" for e in modules)
                parts.append(
                    f"the sensor table has the camera model {label} only for its main camera (FocalLength {fl})"
                )
            elif entries:  # cannot happen: a model entry without focal length always matches
                parts.append(f"the camera model {label} is in the sensor table")
            else:
                parts.append(f"the camera model {label} is not in the sensor table")
    detail = parts[-1] if len(parts) == 1 else "; ".join(parts[:-1]) + ", and " + parts[-1]
    return f"{head} ({detail})"


def resolve_focus(
    n_images: int,
    focus_m: Sequence[float] | Any | None = None,
    focus_diopters: Sequence[float] | Any | None = None,
    stack_json: dict | None = None,
    exif_list: Sequence[dict] | None = None,
    file_names: Sequence[str] | None = None,
    name: str | None = None,
) -> tuple[list[float] | None, str | None]:
    """The focus distances (metres) from the first source that has them, and that source's name.

    Precedence: ``focus_m`` (``"flag"``) > ``focus_diopters`` (``"flag-diopters"``, converted to 1/D metres) >
    ``stack_json["focus_distances_m"]`` (``"stack.json"``) > EXIF SubjectDistance when every image has it
    (``exif_list``, one :func:`read_exif_metadata` dict per image; ``"exif:SubjectDistance"``) > ``(None, None)``:
    no focus distances, the caller then goes to a relative result (or raises, see :func:`missing_focus_message`).
    Focus is never guessed from ``file_names`` (used in messages only).

    Raises:
        DefocusError: a flag that gives the wrong number of values, a dioptre of 0 (infinity), a negative or
            non-finite dioptre.
    """
    what = _what(name)
    if focus_m is not None:
        fd = focus_list(focus_m, what)
        if len(fd) != n_images:
            raise InputError(f"{len(fd)} focus distances given but {what} has {n_images} images", field="focus")
        return fd, "flag"
    if focus_diopters is not None:
        dio = focus_list(focus_diopters, what)
        if len(dio) != n_images:
            raise InputError(f"{len(dio)} focus dioptres given but {what} has {n_images} images", field="focus")
        for v in dio:
            if not math.isfinite(v) or v < 0:
                raise DefocusError(f"{what}: focus dioptres must be finite positive numbers (1/m), got {dio}")
            if v == 0:
                raise DefocusError(
                    f"{what}: a focus of 0 dioptres is infinity, which has no distance: give each image's focus "
                    f"as a positive dioptre (1/m), got {dio}"
                )
        return [1.0 / v for v in dio], "flag-diopters"
    if stack_json is not None and stack_json.get("focus_distances_m") is not None:
        fd = focus_list(stack_json["focus_distances_m"], what)
        if len(fd) != n_images:
            raise DefocusError(f"{what}: {n_images} images but {len(fd)} focus distances in stack.json")
        return fd, "stack.json"
    if exif_list is not None and len(exif_list) == n_images and n_images > 0:
        values = [(e or {}).get("focus_distance_m") for e in exif_list]
        if all(v is not None for v in values):
            return [float(v) for v in values], "exif:SubjectDistance"
    return None, None


def missing_focus_message(
    name: str | None,
    file_names: Sequence[str],
    exif_list: Sequence[dict] | None,
    has_stack_json: bool,
) -> str:
    """The message for a stack without focus distances (field ``focus``): what to add to stack.json, and the first
    image without EXIF SubjectDistance."""
    where = "add focus_distances_m to stack.json" if has_stack_json else "add stack.json"
    msg = f"no focus distances for {name or 'the stack'}: give them (metres or dioptres) or {where}"
    lacking = [
        f for f, e in zip(file_names, exif_list or [{}] * len(file_names)) if (e or {}).get("focus_distance_m") is None
    ]
    return f"{msg} ({lacking[0]} has no EXIF SubjectDistance)" if lacking else msg


def check_focus_names(file_names: Sequence[str], focus_m: Sequence[float]) -> str | None:
    """A warning when file names say "near" / "far" and the focus distances given to them say the opposite.

    Two-image depth-from-defocus pairs are often named ``*_near.png`` / ``*_far.png``; focus distances passed on the
    command line are matched to the files in name order, in which ``far`` sorts before ``near``. Returns one line,
    or None when the names carry no such word or agree.
    """
    import re

    def kind(name: str) -> str | None:
        words = set(re.split(r"[^a-z]+", name.lower()))
        if words & {"near", "close", "nah"}:
            return "near"
        if words & {"far", "fern"}:
            return "far"
        return None

    kinds = [kind(n) for n in file_names]
    near = [float(f) for k, f in zip(kinds, focus_m) if k == "near"]
    far = [float(f) for k, f in zip(kinds, focus_m) if k == "far"]
    if near and far and max(near) > min(far):
        pairs = ", ".join(f"{n} -> {float(f):.4g} m" for n, f in zip(file_names, focus_m))
        return (f"the file names say near/far but the focus distances given to them say the opposite ({pairs}): "
                "focus distances are matched to the files in name order")
    return None
