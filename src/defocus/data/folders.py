"""Focal-stack folders on disk: :func:`read_stack` and :func:`write_stack`.

A stack folder holds the images and a ``stack.json``::

    {"images": ["focus_0.png", ...], "focus_distances_m": [1.0, ...],
     "camera": {"focal_length_mm": 50.0, "f_number": 8.0, "pixel_size_um": 12.0}}

and may hold ``gt_depth.tiff`` (float32 metres, 0 = unknown) and ``gt_aif.png``. Without ``stack.json`` the images
are the picture files of the folder. Focus and camera values come from arguments, ``stack.json``, EXIF, the sensor
table or ``--sensor-width-mm``, each from the first that has it (:mod:`defocus.data.sources`), and the stack records
which (``FocalStack.provenance``). Reading never changes a file; writing is atomic
(:func:`defocus.files.atomic_folder`).
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch

from defocus.data.codecs import IMAGE_EXTENSIONS, load_image, read_depth, save_image, write_depth_tiff
from defocus.data.exif import read_exif_metadata
from defocus.data.sources import missing_focus_message, resolve_camera, resolve_focus
from defocus.data.stack import FocalStack, check_focus
from defocus.errors import DefocusError, InputError
from defocus.files import atomic_folder, describe_os_error
from defocus.optics.camera import ThinLensCamera

PathLike = str | os.PathLike

STACK_JSON = "stack.json"
GT_DEPTH_NAME = "gt_depth.tiff"
GT_AIF_NAME = "gt_aif.png"


def _natural_key(name: str) -> list[Any]:
    """Sort key that orders ``focus_2`` before ``focus_10``."""
    return [int(t) if t.isdigit() else t.lower() for t in re.split(r"(\d+)", name)]


def _list_stack_images(folder: Path) -> list[str]:
    """Picture files of a folder without stack.json: by name (numbers in natural order), ``gt_*`` excluded."""
    names = [
        e.name
        for e in folder.iterdir()
        if e.is_file()
        and e.suffix.lower() in IMAGE_EXTENSIONS
        and not e.name.lower().startswith("gt_")
        and not e.name.startswith(".")
    ]
    return sorted(names, key=_natural_key)


#: Picture formats that are not read, and how to convert them into one that is (EXIF kept).
UNREAD_FORMATS: dict[str, tuple[tuple[str, ...], str]] = {
    "HEIC/HEIF/AVIF": ((".heic", ".heif", ".hif", ".avif"),
                       "convert them to JPEG keeping their EXIF, e.g. with libheif's `heif-convert IN.heic OUT.jpg` "
                       "or ImageMagick's `magick mogrify -format jpg *.heic` (on a phone: set the camera to "
                       "'most compatible')"),
    "camera raw": ((".dng", ".cr2", ".cr3", ".nef", ".arw", ".raf", ".orf", ".rw2", ".pef", ".srw"),
                   "develop them to 16-bit TIFF or PNG with the same settings for every frame and no lens "
                   "correction that resamples, e.g. `dcraw -T -4 *.dng`, darktable or RawTherapee"),
}


def no_images_message(root: Path) -> str:
    """Why a folder without stack.json gave no images: which files it holds instead and, for formats that are not
    read (HEIC, camera raw), how to convert them."""
    files = sorted((e for e in root.iterdir() if e.is_file() and not e.name.startswith(".")), key=lambda e: e.name)
    head = f"no images in {root}: expected stack.json or *.png / *.jpg / *.tif files"
    if not files:
        return head + " (the folder is empty)"
    for label, (suffixes, advice) in UNREAD_FORMATS.items():
        found = [e.name for e in files if e.suffix.lower() in suffixes]
        if found:
            shown = ", ".join(found[:3]) + (", ..." if len(found) > 3 else "")
            return f"{head}; found {len(found)} {label} file(s) ({shown}), which are not read: {advice}"
    counts: dict[str, int] = {}
    for e in files:
        counts[e.suffix.lower() or "(no extension)"] = counts.get(e.suffix.lower() or "(no extension)", 0) + 1
    return head + "; found " + ", ".join(f"{n} {ext}" for ext, n in sorted(counts.items()))


def _read_stack_json(path: Path) -> dict:
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise DefocusError(f"bad stack.json in {path.parent}: {describe_os_error(exc)}") from None
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        where = f"line {exc.lineno}, column {exc.colno}"
        raise DefocusError(f"bad stack.json in {path.parent}: {exc.msg} ({where})") from None
    bad = f"bad stack.json in {path.parent}"
    if not isinstance(data, dict):
        raise DefocusError(f"{bad}: expected an object with images, focus_distances_m, camera")
    images = data.get("images")
    if not isinstance(images, list) or not images or not all(isinstance(s, str) and s for s in images):
        raise DefocusError(f"{bad}: 'images' must be a non-empty list of file names")
    if "focus_distances_m" in data:
        fd = data["focus_distances_m"]
        if not isinstance(fd, list) or not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in fd):
            raise DefocusError(f"{bad}: 'focus_distances_m' must be a list of numbers (metres)")
        if len(fd) != len(images):
            raise DefocusError(f"{bad}: {len(images)} images but {len(fd)} focus distances")
    if "camera" in data and data["camera"] is not None and not isinstance(data["camera"], dict):
        raise DefocusError(f"{bad}: 'camera' must be an object with focal_length_mm, f_number, pixel_size_um")
    return data


def read_stack(
    folder: PathLike,
    focus: Sequence[float] | torch.Tensor | np.ndarray | None = None,
    camera: ThinLensCamera | None = None,
    load_ground_truth: bool = True,
    *,
    camera_flags: dict | None = None,
    focus_diopters: Sequence[float] | torch.Tensor | np.ndarray | None = None,
    sensor_width_mm: float | None = None,
    require_focus: bool = True,
) -> FocalStack:
    """Reads a focal-stack folder.

    Images come from ``stack.json`` when present, else the folder's picture files (``*.png, *.jpg, *.jpeg, *.tif,
    *.tiff`` except ``gt_*``, by name with numbers in natural order). Each camera value and the focus distances
    come from the first source that has them (:mod:`defocus.data.sources`):

    * camera, per field: ``camera_flags`` (any of ``focal_length_mm``, ``f_number``, ``pixel_size_um``; each
      overrides only what it names) > ``stack.json`` > EXIF of the first image > the sensor table by EXIF
      Make/Model > ``sensor_width_mm`` (pitch = width / image width). A full ``camera`` overrides all of these.
      A field found nowhere leaves the camera None — :func:`require_camera` or
      :func:`defocus.data.sources.missing_camera_message` where it is needed;
    * focus: ``focus`` (metres, one per image) > ``focus_diopters`` (1/D) > ``stack.json`` > EXIF SubjectDistance
      of every image. With none of these it is an InputError (field ``focus``), unless ``require_focus`` is False:
      then the stack is *relative* — its ``focus_distances_m`` are the placeholders 1, 2, …, N (metres in type
      only: they keep the file order and FocalStack's checks, nothing else), ``provenance["relative"]`` is True
      and ``provenance["focus"]`` is ``{"values_m": None, "source": None}``.

    ``stack.provenance`` records it all: ``{"camera": {field: {"value", "source"}, "device": {"make", "model",
    "sensor_table"}}, "focus": {"values_m", "source"}, "images": [file names in order], "relative": bool}`` (camera
    source ``"argument"`` for a full ``camera``; see :func:`defocus.data.sources.resolve_camera` for the others).
    ``gt_depth.tiff`` and ``gt_aif.png`` are read when present and ``load_ground_truth`` is true; the training
    code passes False, so it never opens them.

    Raises:
        InputError: missing folder or images, corrupt files, bad JSON, sizes or counts that differ, focus
            distances that are missing (field ``focus``), not finite, not positive or inside the focal length, a
            dioptre of 0, camera values that make no camera.
    """
    root = Path(folder)
    if not root.is_dir():
        raise DefocusError(f"stack folder {root} does not exist" if not root.exists() else f"{root} is not a folder")
    name = root.resolve().name or str(root)
    json_path = root / STACK_JSON
    data: dict | None = _read_stack_json(json_path) if json_path.is_file() else None
    if data is not None:
        image_names: list[str] = list(data["images"])
    else:
        image_names = _list_stack_images(root)
        if not image_names:
            raise DefocusError(no_images_message(root))
    n = len(image_names)
    paths = [root / s for s in image_names]

    exif_cache: dict[int, dict[str, Any]] = {}

    def exif(i: int) -> dict[str, Any]:
        if i not in exif_cache:
            exif_cache[i] = read_exif_metadata(paths[i]) if paths[i].is_file() else {}
        return exif_cache[i]

    # stack.json's camera must be complete and plausible (unless a full camera replaces it)
    json_camera: dict | None = None
    if data is not None and data.get("camera") is not None:
        json_camera = data["camera"]
        if camera is None:
            try:
                ThinLensCamera.from_dict(json_camera)
            except DefocusError as exc:
                raise DefocusError(f"bad stack.json in {root}: {exc}") from None

    # focus: focus > focus_diopters > stack.json > EXIF (checked against the camera once it is known)
    exif_focus = focus is None and focus_diopters is None and (data is None or "focus_distances_m" not in data)
    exif_list = [exif(i) for i in range(n)] if exif_focus else None
    fd, focus_source = resolve_focus(n, focus, focus_diopters, data, exif_list, image_names, name)
    relative = fd is None
    if fd is None:
        if require_focus:
            raise InputError(missing_focus_message(name, image_names, exif_list, data is not None), field="focus")
        fd = [float(i + 1) for i in range(n)]
    check_focus(fd, camera, f"stack {name}")

    images: torch.Tensor | None = None  # filled frame by frame: one copy of a large stack in memory, not two
    size0: tuple[int, int] | None = None
    for i, p in enumerate(paths):
        img = load_image(p)
        size = (int(img.shape[2]), int(img.shape[1]))
        if size0 is None:
            size0 = size
            images = torch.empty(n, *img.shape, dtype=img.dtype)
        elif size != size0:
            raise DefocusError(
                f"image sizes differ in {name}: {image_names[0]} is {size0[0]}x{size0[1]} "
                f"but {image_names[i]} is {size[0]}x{size[1]} (WxH)"
            )
        images[i] = img
        del img
    assert size0 is not None

    # camera: camera > per field (flags > stack.json > EXIF > sensor table > sensor width), for the size as loaded
    if camera is not None:
        cam: ThinLensCamera | None = camera
        camera_sources: dict[str, Any] = {k: {"value": v, "source": "argument"} for k, v in camera.to_dict().items()}
        camera_sources["device"] = {"make": exif(0).get("make"), "model": exif(0).get("model"), "sensor_table": None}
    else:
        cam, camera_sources = resolve_camera(
            camera_flags, json_camera, exif(0), size0[0], sensor_width_mm, image_height_px=size0[1]
        )
    if not relative:
        check_focus(fd, cam, f"stack {name}")

    def same_size(file_name: str, w: int, h: int) -> None:
        if (w, h) != size0:
            raise DefocusError(
                f"{file_name} in {name} is {w}x{h} but the images are {size0[0]}x{size0[1]} (WxH)"
            )

    gt_depth = None
    if load_ground_truth and (root / GT_DEPTH_NAME).is_file():
        gt_depth = read_depth(root / GT_DEPTH_NAME)
        same_size(GT_DEPTH_NAME, gt_depth.shape[1], gt_depth.shape[0])
    gt_aif = None
    if load_ground_truth and (root / GT_AIF_NAME).is_file():
        gt_aif = load_image(root / GT_AIF_NAME)
        same_size(GT_AIF_NAME, gt_aif.shape[2], gt_aif.shape[1])
    provenance = {
        "camera": camera_sources,
        "focus": {"values_m": None if relative else [float(v) for v in fd], "source": focus_source},
        "images": list(image_names),
        "relative": relative,
    }
    return FocalStack(
        images=images,
        focus_distances_m=torch.tensor(fd, dtype=torch.float32),
        camera=cam,
        gt_depth=gt_depth,
        gt_aif=gt_aif,
        image_names=image_names,
        name=name,
        provenance=provenance,
    )


_WRITTEN_NAME = re.compile(r"^(focus_\d+\.png|stack\.json|gt_depth\.tiff|gt_aif\.png)$")


def _check_replaceable(folder: Path) -> None:
    """A non-empty existing folder may be replaced only if it looks like write_stack's own output."""
    entries = list(folder.iterdir())
    if not entries:
        return
    if not (folder / STACK_JSON).is_file():
        raise DefocusError(
            f"refusing to write a stack into {folder}: the folder is not empty and holds no stack.json "
            "(choose a new or empty output folder)"
        )
    for e in entries:
        if not e.is_file() or not _WRITTEN_NAME.match(e.name):
            raise DefocusError(
                f"refusing to replace stack folder {folder}: it holds {e.name}, which write_stack does not write "
                "(choose a new or empty output folder)"
            )


def _json_float(v: float) -> float:
    """A float32 value as the shortest decimal that reads back to the same float32 (0.3, not 0.30000001...)."""
    return float(str(np.float32(v)))


def write_stack(stack: FocalStack, folder: PathLike) -> None:
    """Writes ``stack`` as a stack folder: ``focus_<i>.png`` (8-bit), ``stack.json``, ``gt_depth.tiff`` (float32
    metres) and ``gt_aif.png`` when present.

    Atomic: everything is written into a temporary sibling folder that is then renamed into place, so a failure
    leaves no half-written output. An existing non-empty ``folder`` is replaced only if it is a stack folder holding
    nothing but what this function writes; otherwise it is a DefocusError and nothing changes.
    """
    dest = Path(folder)
    if dest.exists() and not dest.is_dir():
        raise DefocusError(f"cannot write a stack to {dest}: it exists and is not a folder")
    if stack.provenance.get("relative"):
        raise InputError(
            f"cannot write stack {stack.name}: its focus distances are unknown (a relative stack); "
            "give them when reading it", field="focus"
        )
    if dest.is_dir():
        _check_replaceable(dest)
    names = [f"focus_{i}.png" for i in range(stack.num_images)]
    meta: dict[str, Any] = {
        "images": names,
        "focus_distances_m": [_json_float(v) for v in stack.focus_distances_m.tolist()],
    }
    if stack.camera is not None:
        meta["camera"] = stack.camera.to_dict()
    def fill(tmp: Path) -> None:
        for i, nm in enumerate(names):
            save_image(tmp / nm, stack.images[i])
        (tmp / STACK_JSON).write_text(json.dumps(meta, indent=2) + "\n", encoding="utf-8")
        if stack.gt_depth is not None:
            write_depth_tiff(tmp / GT_DEPTH_NAME, stack.gt_depth)
        if stack.gt_aif is not None:
            save_image(tmp / GT_AIF_NAME, stack.gt_aif)

    atomic_folder(dest, fill, "a stack to")


def expand_stack_folders(folders: Sequence[PathLike]) -> list[Path]:
    """Stack folders, with a folder that holds no pictures but sub-folders standing for its sub-folders (sorted)."""
    out: list[Path] = []
    for folder in map(Path, folders):
        if folder.is_dir() and not (folder / "stack.json").is_file():
            has_images = any(e.is_file() and e.suffix.lower() in IMAGE_EXTENSIONS for e in folder.iterdir())
            subs = sorted(e for e in folder.iterdir() if e.is_dir() and not e.name.startswith("."))
            if not has_images and subs:
                out.extend(subs)
                continue
        out.append(folder)
    return out


def output_names(folders: Sequence[PathLike]) -> list[str]:
    """One output folder name per stack folder: its name, prefixed by its parents' names where two would collide."""
    parts = [Path(folder).resolve().parts for folder in folders]
    depth = 1
    while True:
        names = ["_".join(p[-depth:]) for p in parts]
        if len(set(names)) == len(names) or depth >= max(len(p) for p in parts):
            break
        depth += 1
    if len(set(names)) != len(names):
        raise InputError("the same stack folder is given twice")
    return names
