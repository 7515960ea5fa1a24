"""Focus and camera metadata from a photo's EXIF, in the units of ``stack.json``."""

from __future__ import annotations

import math
import os
import warnings
from typing import Any

from PIL import Image

from defocus.errors import DefocusError
from defocus.optics.camera import ThinLensCamera

# EXIF tags (all but Orientation live in the Exif sub-IFD 0x8769).
_EXIF_IFD = 0x8769
_TAG_ORIENTATION = 0x0112
_TAG_MAKE = 0x010F  # IFD0
_TAG_MODEL = 0x0110  # IFD0
_TAG_SUBJECT_DISTANCE = 0x9206
_TAG_FOCAL_LENGTH = 0x920A
_TAG_F_NUMBER = 0x829D
_TAG_FOCAL_PLANE_X_RES = 0xA20E
_TAG_FOCAL_PLANE_RES_UNIT = 0xA210
_TAG_FOCAL_LENGTH_35MM = 0xA405
# FocalPlaneResolutionUnit -> millimetres per unit (EXIF: 1 = none, 2 = inch (the default), 3 = cm, 4 = mm, 5 = µm).
_RES_UNIT_MM = {2: 25.4, 3: 10.0, 4: 1.0, 5: 1e-3}
_FULL_FRAME_DIAGONAL_MM = math.hypot(36.0, 24.0)


def _positive(value: Any) -> float | None:
    """EXIF rational / number -> positive finite float, or None."""
    try:
        v = float(value)
    except (TypeError, ValueError, ZeroDivisionError):
        return None
    return v if math.isfinite(v) and v > 0 else None


def _text(value: Any) -> str | None:
    """EXIF ASCII value -> stripped string (NULs and runs of whitespace removed), or None when empty."""
    if isinstance(value, bytes):
        value = value.decode("utf-8", "replace")
    if not isinstance(value, str):
        return None
    s = " ".join(value.replace("\x00", " ").split())
    return s or None


def read_exif_metadata(path: str | os.PathLike) -> dict[str, Any]:
    """Focus and camera metadata from an image's EXIF, in the units of ``stack.json``.

    Returns a dict with any of: ``focus_distance_m`` (SubjectDistance; 0 and "infinity" count as missing),
    ``focal_length_mm`` (FocalLength), ``f_number`` (FNumber) and ``pixel_size_um`` — from FocalPlaneXResolution
    and FocalPlaneResolutionUnit (pixels per inch/cm/mm of the image as stored), else from FocalLengthIn35mmFilm:
    sensor diagonal = 43.27 mm · f / f35, pitch = diagonal / image diagonal in pixels (for 3:2 images this is
    36 mm · f / f35 / width) — with ``pixel_size_from`` naming the tag it came from (``"FocalPlaneXResolution"``
    or ``"FocalLengthIn35mmFilm"``); and the strings ``make`` and ``model`` (IFD0 Make / Model, NULs and extra
    whitespace removed). Missing or unusable values are left out; unreadable files give an empty dict.
    """
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # corrupt EXIF is common in real photos: treat it as missing
            with Image.open(path) as im:
                exif = im.getexif()
                width, height = im.size
                sub = dict(exif.get_ifd(_EXIF_IFD))
    except Exception:  # noqa: BLE001 - no EXIF is not an error here
        return {}

    def tag(t: int) -> Any:
        return sub.get(t, exif.get(t))

    out: dict[str, Any] = {}
    for key, t in (("make", _TAG_MAKE), ("model", _TAG_MODEL)):
        text = _text(exif.get(t))
        if text is not None:
            out[key] = text
    dist = _positive(tag(_TAG_SUBJECT_DISTANCE))
    if dist is not None and dist < 4294967295.0:  # 0xFFFFFFFF means infinity
        out["focus_distance_m"] = dist
    f_mm = _positive(tag(_TAG_FOCAL_LENGTH))
    if f_mm is not None:
        out["focal_length_mm"] = f_mm
    n = _positive(tag(_TAG_F_NUMBER))
    if n is not None:
        out["f_number"] = n
    xres = _positive(tag(_TAG_FOCAL_PLANE_X_RES))
    unit_raw = tag(_TAG_FOCAL_PLANE_RES_UNIT)
    try:
        unit = 2 if unit_raw is None else int(unit_raw)
    except (TypeError, ValueError):
        unit = -1
    if xres is not None and unit in _RES_UNIT_MM:
        out["pixel_size_um"] = _RES_UNIT_MM[unit] / xres * 1e3
        out["pixel_size_from"] = "FocalPlaneXResolution"
    else:
        f35 = _positive(tag(_TAG_FOCAL_LENGTH_35MM))
        if f35 is not None and f_mm is not None and width > 0 and height > 0:
            sensor_diag_mm = _FULL_FRAME_DIAGONAL_MM * f_mm / f35
            out["pixel_size_um"] = sensor_diag_mm / math.hypot(width, height) * 1e3
            out["pixel_size_from"] = "FocalLengthIn35mmFilm"
    return out


def camera_from_exif(meta: dict[str, Any]) -> ThinLensCamera | None:
    """The camera of complete, plausible EXIF metadata, else None."""
    if not all(k in meta for k in ("focal_length_mm", "f_number", "pixel_size_um")):
        return None
    try:
        return ThinLensCamera.from_mm_um(meta["focal_length_mm"], meta["f_number"], meta["pixel_size_um"])
    except DefocusError:
        return None  # implausible EXIF values count as missing
