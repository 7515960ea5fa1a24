"""Reading and writing images, depth maps and focal-stack folders.

Conventions (SPEC §1, §6):

* an image is a ``torch.float32`` tensor of shape ``(3, H, W)`` in ``[0, 1]``: the stored 8-bit values / 255
  (sRGB-encoded, as stored; 16-bit files are divided by 65535). Greyscale files are replicated to three channels,
  alpha is dropped, and the EXIF orientation is applied;
* a depth map is a ``numpy.float32`` array of shape ``(H, W)`` in **metres**, where ``0`` means unknown;
* a focal-stack folder holds the images and a ``stack.json``::

      {"images": ["focus_0.png", ...], "focus_distances_m": [1.0, ...],
       "camera": {"focal_length_mm": 50.0, "f_number": 8.0, "pixel_size_um": 12.0}}

  and may hold ``gt_depth.tiff`` (float32 metres, 0 = unknown) and ``gt_aif.png``. Without ``stack.json`` the
  images are the picture files of the folder and focus / camera come from arguments or EXIF.

Every problem with the input is a :class:`~defocus.errors.DefocusError` with a one-line message; reading never
changes a file, and writing goes through a temporary file or folder so that a failure leaves no half-written output.
"""

from __future__ import annotations

import json
import math
import os
import re
import shutil
import uuid
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import tifffile
import torch
from PIL import Image, ImageOps

from defocus.errors import DefocusError
from defocus.optics.camera import ThinLensCamera

PathLike = str | os.PathLike

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".tif", ".tiff")
STACK_JSON = "stack.json"
GT_DEPTH_NAME = "gt_depth.tiff"
GT_AIF_NAME = "gt_aif.png"

# EXIF tags (all but Orientation live in the Exif sub-IFD 0x8769).
_EXIF_IFD = 0x8769
_TAG_ORIENTATION = 0x0112
_TAG_SUBJECT_DISTANCE = 0x9206
_TAG_FOCAL_LENGTH = 0x920A
_TAG_F_NUMBER = 0x829D
_TAG_FOCAL_PLANE_X_RES = 0xA20E
_TAG_FOCAL_PLANE_RES_UNIT = 0xA210
_TAG_FOCAL_LENGTH_35MM = 0xA405
# FocalPlaneResolutionUnit -> millimetres per unit (EXIF: 1 = none, 2 = inch (the default), 3 = cm, 4 = mm, 5 = µm).
_RES_UNIT_MM = {2: 25.4, 3: 10.0, 4: 1.0, 5: 1e-3}
_FULL_FRAME_DIAGONAL_MM = math.hypot(36.0, 24.0)


def _reason(exc: BaseException) -> str:
    """A one-line description of an exception."""
    if isinstance(exc, FileNotFoundError):
        return "no such file"
    if isinstance(exc, IsADirectoryError):
        return "is a folder, not a file"
    if isinstance(exc, PermissionError):
        return "permission denied"
    text = str(exc).strip().splitlines()
    return text[0] if text and text[0] else type(exc).__name__


# ================================================================================================ images
def _orient(arr: np.ndarray, orientation: int) -> np.ndarray:
    """Applies EXIF orientation ``1..8`` to an ``(H, W, C)`` array (same result as ``ImageOps.exif_transpose``)."""
    if orientation == 2:
        arr = arr[:, ::-1]
    elif orientation == 3:
        arr = arr[::-1, ::-1]
    elif orientation == 4:
        arr = arr[::-1]
    elif orientation == 5:
        arr = arr.transpose(1, 0, 2)
    elif orientation == 6:
        arr = np.rot90(arr, k=-1)
    elif orientation == 7:
        arr = np.rot90(arr, k=2).transpose(1, 0, 2)
    elif orientation == 8:
        arr = np.rot90(arr, k=1)
    return np.ascontiguousarray(arr)


def _to_unit_range(arr: np.ndarray, what: str) -> np.ndarray:
    """Integer or float samples ``(H, W, C)`` -> float32 in [0, 1] (8-bit / 255, 16-bit / 65535)."""
    if arr.dtype.byteorder not in ("=", "|"):
        arr = arr.astype(arr.dtype.newbyteorder("="))
    if arr.dtype == np.uint8:
        return arr.astype(np.float32) / np.float32(255)
    if arr.dtype == np.uint16:
        return arr.astype(np.float32) / np.float32(65535)
    if arr.dtype == np.bool_:
        return arr.astype(np.float32)
    if np.issubdtype(arr.dtype, np.floating):
        out = arr.astype(np.float32)
        if not np.isfinite(out).all():
            raise DefocusError(f"cannot read image {what}: it holds non-finite values")
        return np.clip(out, 0.0, 1.0)
    if np.issubdtype(arr.dtype, np.integer) and arr.size and arr.min() >= 0 and arr.max() <= 65535:
        return arr.astype(np.float32) / np.float32(65535)
    raise DefocusError(f"cannot read image {what}: unsupported sample type {arr.dtype}")


def _read_tiff_image(path: Path) -> np.ndarray:
    """Samples ``(H, W, C)`` of the first page of a TIFF, orientation applied."""
    with tifffile.TiffFile(path) as tif:
        page = tif.pages[0]
        arr = page.asarray()
        axes = getattr(page, "axes", "")
        tag = page.tags.get(274)
        orientation = int(tag.value) if tag is not None else 1
    if arr.ndim == 3 and axes.startswith("S") and arr.shape[0] in (1, 2, 3, 4):
        arr = np.moveaxis(arr, 0, -1)
    if arr.ndim == 2:
        arr = arr[:, :, None]
    if arr.ndim != 3:
        raise ValueError(f"unsupported TIFF layout {arr.shape}")
    return _orient(arr, orientation)


def _read_pil_image(path: Path) -> np.ndarray:
    """Samples ``(H, W, C)`` (C = 1, 3) of an image read with Pillow, orientation applied, alpha dropped."""
    with Image.open(path) as im:
        tiles = getattr(im, "tile", None)
        rawmode = tiles[0].args if tiles and len(tiles) == 1 else None
        im.load()
        fmt = im.format
        im = ImageOps.exif_transpose(im)
        mode = im.mode
        if mode in ("I;16", "I;16B", "I;16L", "I;16N", "I", "F"):
            arr = np.array(im)[:, :, None]
            if mode == "I" and fmt == "PNG":  # 16-bit greyscale PNG on some Pillow versions
                arr = arr.astype(np.uint16)
            return arr
        if mode in ("1", "L", "LA", "La"):
            return np.array(im.convert("L"))[:, :, None]
        hi = np.array(im.convert("RGB"))
    if isinstance(rawmode, str) and rawmode in ("RGB;16B", "RGBA;16B") and mode in ("RGB", "RGBA"):
        # Pillow decodes 16-bit colour PNGs to their high bytes only; decoding the same stream again with the
        # little-endian rawmode (same 48/64 bits per pixel, so the same unfiltering) yields the low bytes.
        try:
            with Image.open(path) as im2:
                im2.tile = [t._replace(args=rawmode.replace(";16B", ";16L")) for t in im2.tile]
                im2.load()
                lo = np.array(ImageOps.exif_transpose(im2).convert("RGB"))
            if lo.shape == hi.shape:
                return hi.astype(np.uint16) * 256 + lo.astype(np.uint16)
        except Exception:  # noqa: BLE001 - fall back to the 8-bit high bytes
            pass
    return hi


def _decode_image(p: Path) -> np.ndarray:
    """Samples ``(H, W, C)`` of any supported image file, orientation applied; decoder warnings silenced."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # e.g. Pillow's "Corrupt EXIF data": a real failure raises instead
        if p.suffix.lower() in (".tif", ".tiff"):
            try:
                return _read_tiff_image(p)
            except (FileNotFoundError, IsADirectoryError, PermissionError):
                raise
            except Exception:  # noqa: BLE001 - try Pillow on TIFFs tifffile rejects
                return _read_pil_image(p)
        return _read_pil_image(p)


def load_image(path: PathLike) -> torch.Tensor:
    """Reads an image file as a ``(3, H, W)`` float32 tensor in ``[0, 1]``.

    8-bit files give value / 255 (sRGB-encoded, as stored), 16-bit files value / 65535, float TIFFs are clipped to
    [0, 1]. Greyscale is replicated to 3 channels, alpha is dropped, EXIF orientation is applied.

    Raises:
        DefocusError: ``cannot read image PATH: REASON`` for a missing, corrupt or unsupported file.
    """
    p = Path(path)
    try:
        arr = _decode_image(p)
    except DefocusError:
        raise
    except Exception as exc:  # noqa: BLE001 - every decoder failure is bad input
        raise DefocusError(f"cannot read image {p}: {_reason(exc)}") from None
    if arr.ndim != 3 or arr.shape[0] == 0 or arr.shape[1] == 0:
        raise DefocusError(f"cannot read image {p}: empty image")
    channels = arr.shape[2]
    if channels in (1, 2):
        arr = np.repeat(arr[:, :, :1], 3, axis=2)
    elif channels >= 3:
        arr = arr[:, :, :3]
    out = _to_unit_range(np.ascontiguousarray(arr), str(p))
    return torch.from_numpy(np.ascontiguousarray(out.transpose(2, 0, 1)))


def _to_uint8(img: torch.Tensor) -> torch.Tensor:
    """floor(clamp(x, 0, 1) · 255 + 0.5) as uint8 (round half up), same shape."""
    x = img.detach().to(torch.float32).clamp(0.0, 1.0)
    return torch.floor(x * 255.0 + 0.5).to(torch.uint8)


def quantize_8bit(img: torch.Tensor) -> torch.Tensor:
    """The float32 tensor that :func:`save_image` followed by :func:`load_image` gives back.

    Any shape; values are clamped to [0, 1], rounded half up to 1/255 steps. No gradient flows through it.
    """
    return _to_uint8(img).to(torch.float32) / 255.0


def _atomic_write(path: Path, write: Any) -> None:
    """Calls ``write(tmp_path)`` and renames the temporary file onto ``path`` (no half-written file on failure)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex[:8]}.tmp")
    try:
        write(tmp)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def save_image(path: PathLike, img: torch.Tensor | np.ndarray) -> None:
    """Writes ``img`` — ``(3, H, W)``, ``(1, H, W)`` or ``(H, W)`` in [0, 1] — as an 8-bit PNG (round half up).

    Values are clamped to [0, 1] and stored as floor(x · 255 + 0.5). The format follows the file name's extension
    (PNG when it is not a known image extension).
    """
    p = Path(path)
    t = torch.as_tensor(img)
    if t.ndim == 3 and t.shape[0] == 1:
        t = t[0]
    if not (t.ndim == 2 or (t.ndim == 3 and t.shape[0] == 3)):
        raise DefocusError(f"cannot write image {p}: expected shape (3, H, W) or (H, W), got {tuple(t.shape)}")
    if t.is_floating_point() and not torch.isfinite(t).all():
        raise DefocusError(f"cannot write image {p}: it holds non-finite values")
    u8 = _to_uint8(t).cpu().numpy()
    if u8.ndim == 3:
        u8 = np.ascontiguousarray(u8.transpose(1, 2, 0))
    fmt = Image.registered_extensions().get(p.suffix.lower(), "PNG")
    pil = Image.fromarray(u8)
    try:
        _atomic_write(p, lambda tmp: pil.save(tmp, format=fmt))
    except OSError as exc:
        raise DefocusError(f"cannot write image {p}: {_reason(exc)}") from None


# ================================================================================================ depth
def _as_depth_array(depth: Any, what: str) -> np.ndarray:
    """``(H, W)`` float32 array from an array / tensor with optional leading or trailing singleton dimensions."""
    if isinstance(depth, torch.Tensor):
        depth = depth.detach().cpu().numpy()
    arr = np.asarray(depth)
    while arr.ndim > 2 and arr.shape[0] == 1:
        arr = arr[0]
    if arr.ndim == 3 and arr.shape[-1] == 1:
        arr = arr[..., 0]
    if arr.ndim != 2:
        raise DefocusError(f"{what}: expected a single-channel (H, W) depth map, got shape {tuple(arr.shape)}")
    if not (np.issubdtype(arr.dtype, np.number) or arr.dtype == np.bool_):
        raise DefocusError(f"{what}: depth must be numeric, got {arr.dtype}")
    return arr


def _clean_depth(arr: np.ndarray) -> np.ndarray:
    """float32 copy with non-finite and negative values set to 0 (unknown)."""
    out = np.array(arr, dtype=np.float32, copy=True)
    out[~np.isfinite(out) | (out < 0)] = 0.0
    return out


def read_depth(path: PathLike, depth_scale: float | None = None) -> np.ndarray:
    """Reads a depth map as a float32 ``(H, W)`` array in metres (0 = unknown).

    * float TIFF and float ``.npy``: metres;
    * integer files (8/16-bit PNG, integer TIFF or ``.npy``): ``depth_scale`` metres per unit is required
      (e.g. 0.001 for millimetres);
    * when ``depth_scale`` is given it multiplies the stored values of any format.

    Non-finite and negative values become 0 (unknown).

    Raises:
        DefocusError: missing/corrupt file, several channels, or integer depth without ``depth_scale``.
    """
    p = Path(path)
    if depth_scale is not None:
        try:
            depth_scale = float(depth_scale)
        except (TypeError, ValueError):
            raise DefocusError(f"--depth-scale must be a number, got {depth_scale!r}") from None
        if not math.isfinite(depth_scale) or depth_scale <= 0:
            raise DefocusError(f"--depth-scale must be a finite positive number (metres per unit), got {depth_scale}")
    suffix = p.suffix.lower()
    try:
        if suffix == ".npy":
            raw = np.load(p, allow_pickle=False)
        elif suffix in (".tif", ".tiff"):
            with tifffile.TiffFile(p) as tif:
                raw = tif.pages[0].asarray()
        else:
            with Image.open(p) as im:
                im.load()
                if im.mode not in ("I;16", "I;16B", "I;16L", "I;16N", "I", "L", "F", "1"):
                    raise DefocusError(
                        f"cannot read depth {p}: expected a single-channel (greyscale) image, got mode {im.mode}"
                    )
                raw = np.array(im)
    except DefocusError:
        raise
    except Exception as exc:  # noqa: BLE001 - every decoder failure is bad input
        raise DefocusError(f"cannot read depth {p}: {_reason(exc)}") from None
    arr = _as_depth_array(raw, f"cannot read depth {p}")
    if np.issubdtype(arr.dtype, np.integer) or arr.dtype == np.bool_:
        if depth_scale is None:
            raise DefocusError(
                f"depth {p} holds integers ({arr.dtype}): pass --depth-scale (metres per unit, e.g. 0.001 for mm)"
            )
    depth = arr.astype(np.float64)
    if depth_scale is not None:
        depth = depth * depth_scale
    return _clean_depth(depth)


def write_depth_tiff(path: PathLike, depth: np.ndarray | torch.Tensor) -> None:
    """Writes a ``(H, W)`` depth map (metres) as an uncompressed float32 TIFF, values exactly preserved."""
    p = Path(path)
    arr = np.ascontiguousarray(_as_depth_array(depth, f"cannot write depth {p}").astype(np.float32))
    try:
        _atomic_write(p, lambda tmp: tifffile.imwrite(tmp, arr, photometric="minisblack"))
    except OSError as exc:
        raise DefocusError(f"cannot write depth {p}: {_reason(exc)}") from None


def write_depth_png_mm(path: PathLike, depth: np.ndarray | torch.Tensor) -> None:
    """Writes a ``(H, W)`` depth map (metres) as a uint16 PNG of millimetres.

    Stored value = floor(depth · 1000 + 0.5) (round half up), clipped to [0, 65535]; non-finite and negative
    depths are stored as 0 (unknown). Read it back with ``read_depth(path, depth_scale=0.001)``.
    """
    p = Path(path)
    mm = _clean_depth(_as_depth_array(depth, f"cannot write depth {p}")).astype(np.float64) * 1000.0
    u16 = np.clip(np.floor(mm + 0.5), 0, 65535).astype(np.uint16)
    pil = Image.fromarray(u16)
    try:
        _atomic_write(p, lambda tmp: pil.save(tmp, format="PNG"))
    except OSError as exc:
        raise DefocusError(f"cannot write depth {p}: {_reason(exc)}") from None


def fill_depth_holes(depth: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Fills unknown pixels of a ``(H, W)`` depth map (metres) from the nearest valid pixels.

    Valid pixels are finite and > 0. Each hole pixel takes the largest (farthest) depth among the valid pixels
    nearest to it in chessboard (8-neighbour) distance — background wins ties, which suits the occlusion shadows
    of depth sensors. Computed by repeated 3x3 max-propagation, at most max(H, W) vectorised passes.

    Returns:
        ``(filled, valid)``: float32 ``(H, W)`` with no holes left, and the bool ``(H, W)`` mask of valid input pixels.

    Raises:
        DefocusError: when no pixel is valid.
    """
    arr = _as_depth_array(depth, "depth map").astype(np.float32)
    valid = np.isfinite(arr) & (arr > 0)
    if not valid.any():
        raise DefocusError("depth map has no valid pixel (all zero, negative or non-finite)")
    cur = np.where(valid, arr, -np.inf).astype(np.float32)
    known = valid.copy()
    h, w = cur.shape
    for _ in range(max(h, w)):
        if known.all():
            break
        pad = np.pad(cur, 1, mode="constant", constant_values=-np.inf)
        rows = np.maximum(np.maximum(pad[:, :-2], pad[:, 1:-1]), pad[:, 2:])  # (H+2, W) horizontal 3-max
        m = np.maximum(np.maximum(rows[:-2], rows[1:-1]), rows[2:])  # (H, W) 3x3 max
        new = ~known & np.isfinite(m)
        cur[new] = m[new]
        known |= new
    return cur, valid


# ================================================================================================ stacks
def _focus_list(focus: Any, what: str) -> list[float]:
    """Focus distances (metres) as a list of floats; a non-numeric entry is a DefocusError."""
    if isinstance(focus, torch.Tensor):
        focus = focus.detach().cpu().flatten().tolist()
    elif isinstance(focus, np.ndarray):
        focus = focus.flatten().tolist()
    elif isinstance(focus, (int, float)):
        focus = [focus]
    try:
        out = [float(v) for v in focus]
    except (TypeError, ValueError):
        raise DefocusError(f"{what}: focus distances must be numbers (metres), got {focus!r}") from None
    return out


def _check_focus(focus: Sequence[float], camera: ThinLensCamera | None, what: str) -> None:
    """Finite, positive and (with a camera) beyond the focal length; errors name ``what`` and ``--focus``."""
    if len(focus) == 0:
        raise DefocusError(f"{what}: no focus distances (pass --focus)")
    if not all(math.isfinite(v) and v > 0 for v in focus):
        raise DefocusError(f"{what}: focus distances must be finite positive numbers of metres, got {list(focus)}")
    if camera is not None:
        try:
            camera.validate_focus(list(focus))
        except DefocusError as exc:
            raise DefocusError(f"{what}: {exc}") from None


@dataclass
class FocalStack:
    """A focal stack in memory.

    Attributes:
        images: float32 ``(N, 3, H, W)`` in [0, 1] (stored 8-bit values / 255, sRGB-encoded), N >= 1.
        focus_distances_m: float32 ``(N,)``, focus distance of each image in metres.
        camera: the thin-lens camera (pitch for this image size), or None when unknown (see :func:`require_camera`).
        gt_depth: optional float32 ``(H, W)`` ground-truth depth in metres, 0 = unknown.
        gt_aif: optional float32 ``(3, H, W)`` all-in-focus image in [0, 1].
        image_names: the file name of each image (defaults to ``focus_<i>.png``).
        name: the stack's name (its folder name).
    """

    images: torch.Tensor
    focus_distances_m: torch.Tensor
    camera: ThinLensCamera | None = None
    gt_depth: np.ndarray | None = None
    gt_aif: torch.Tensor | None = None
    image_names: list[str] = field(default_factory=list)
    name: str = "stack"

    def __post_init__(self) -> None:
        what = f"stack {self.name}"
        images = torch.as_tensor(self.images)
        if images.ndim == 3 and images.shape[0] == 3:
            images = images.unsqueeze(0)
        if images.ndim != 4 or images.shape[1] != 3:
            raise DefocusError(f"{what}: images must have shape (N, 3, H, W), got {tuple(images.shape)}")
        n, _, h, w = images.shape
        if n < 1 or h < 1 or w < 1:
            raise DefocusError(f"{what}: needs at least one non-empty image, got shape {tuple(images.shape)}")
        images = images.to(torch.float32)
        if not torch.isfinite(images).all():
            raise DefocusError(f"{what}: images hold non-finite values")
        if images.min() < -1e-4 or images.max() > 1 + 1e-4:
            raise DefocusError(f"{what}: image values must lie in [0, 1]")
        self.images = images
        focus = _focus_list(self.focus_distances_m, what)
        if len(focus) != n:
            raise DefocusError(f"{what}: {n} images but {len(focus)} focus distances")
        _check_focus(focus, self.camera, what)
        self.focus_distances_m = torch.tensor(focus, dtype=torch.float32)
        if self.camera is not None and not isinstance(self.camera, ThinLensCamera):
            raise DefocusError(f"{what}: camera must be a ThinLensCamera, got {type(self.camera).__name__}")
        if not self.image_names:
            self.image_names = [f"focus_{i}.png" for i in range(n)]
        self.image_names = [str(s) for s in self.image_names]
        if len(self.image_names) != n:
            raise DefocusError(f"{what}: {n} images but {len(self.image_names)} image names")
        if self.gt_depth is not None:
            gt = _clean_depth(_as_depth_array(self.gt_depth, f"{what}: ground-truth depth"))
            if gt.shape != (h, w):
                raise DefocusError(
                    f"{what}: ground-truth depth is {gt.shape[1]}x{gt.shape[0]} but the images are {w}x{h} (WxH)"
                )
            self.gt_depth = gt
        if self.gt_aif is not None:
            aif = torch.as_tensor(self.gt_aif).to(torch.float32)
            if aif.ndim != 3 or aif.shape[0] != 3:
                raise DefocusError(f"{what}: ground-truth AIF must have shape (3, H, W), got {tuple(aif.shape)}")
            if tuple(aif.shape[1:]) != (h, w):
                raise DefocusError(
                    f"{what}: ground-truth AIF is {aif.shape[2]}x{aif.shape[1]} but the images are {w}x{h} (WxH)"
                )
            self.gt_aif = aif

    @property
    def num_images(self) -> int:
        """N, the number of images."""
        return int(self.images.shape[0])

    @property
    def image_size(self) -> tuple[int, int]:
        """(H, W) in pixels."""
        return int(self.images.shape[2]), int(self.images.shape[3])


def require_camera(stack: FocalStack) -> ThinLensCamera:
    """The stack's camera; a DefocusError naming the flags to pass when it is unknown."""
    if stack.camera is None:
        raise DefocusError(
            f"no camera for {stack.name}: pass --focal-length-mm, --f-number and --pixel-size-um "
            "(or add a camera to stack.json)"
        )
    return stack.camera


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


def _positive(value: Any) -> float | None:
    """EXIF rational / number -> positive finite float, or None."""
    try:
        v = float(value)
    except (TypeError, ValueError, ZeroDivisionError):
        return None
    return v if math.isfinite(v) and v > 0 else None


def read_exif_metadata(path: PathLike) -> dict[str, float]:
    """Focus and camera metadata from an image's EXIF, in the units of ``stack.json``.

    Returns a dict with any of: ``focus_distance_m`` (SubjectDistance; 0 and "infinity" count as missing),
    ``focal_length_mm`` (FocalLength), ``f_number`` (FNumber) and ``pixel_size_um`` — from FocalPlaneXResolution
    and FocalPlaneResolutionUnit (pixels per inch/cm/mm of the image as stored), else from FocalLengthIn35mmFilm:
    sensor diagonal = 43.27 mm · f / f35, pitch = diagonal / image diagonal in pixels (for 3:2 images this is
    36 mm · f / f35 / width). Missing or unusable values are left out; unreadable files give an empty dict.
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

    out: dict[str, float] = {}
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
    else:
        f35 = _positive(tag(_TAG_FOCAL_LENGTH_35MM))
        if f35 is not None and f_mm is not None and width > 0 and height > 0:
            sensor_diag_mm = _FULL_FRAME_DIAGONAL_MM * f_mm / f35
            out["pixel_size_um"] = sensor_diag_mm / math.hypot(width, height) * 1e3
    return out


def _camera_from_exif(meta: dict[str, float]) -> ThinLensCamera | None:
    if not all(k in meta for k in ("focal_length_mm", "f_number", "pixel_size_um")):
        return None
    try:
        return ThinLensCamera.from_mm_um(meta["focal_length_mm"], meta["f_number"], meta["pixel_size_um"])
    except DefocusError:
        return None  # implausible EXIF values count as missing


def _read_stack_json(path: Path) -> dict:
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise DefocusError(f"bad stack.json in {path.parent}: {_reason(exc)}") from None
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
) -> FocalStack:
    """Reads a focal-stack folder (SPEC §6).

    Images and focus distances come from ``stack.json`` when present, else the folder's picture files
    (``*.png, *.jpg, *.jpeg, *.tif, *.tiff`` except ``gt_*``, by name with numbers in natural order) and EXIF
    SubjectDistance. The camera comes from ``camera``, else ``stack.json``, else EXIF (see
    :func:`read_exif_metadata`), else is None — use :func:`require_camera` where it is needed. ``focus`` (metres,
    one per image) and ``camera`` override the files. ``gt_depth.tiff`` and ``gt_aif.png`` are read when present
    and ``load_ground_truth`` is true; the training code passes False, so it never opens them.

    Raises:
        DefocusError: missing folder or images, corrupt files, bad JSON, sizes or counts that differ, focus
            distances that are missing (names ``--focus``), not finite, not positive or inside the focal length.
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
            raise DefocusError(f"no images in {root}: expected stack.json or *.png / *.jpg / *.tif files")
    n = len(image_names)
    paths = [root / s for s in image_names]

    # camera: argument > stack.json > EXIF
    exif_cache: dict[int, dict[str, float]] = {}

    def exif(i: int) -> dict[str, float]:
        if i not in exif_cache:
            exif_cache[i] = read_exif_metadata(paths[i]) if paths[i].is_file() else {}
        return exif_cache[i]

    cam = camera
    if cam is None and data is not None and data.get("camera") is not None:
        try:
            cam = ThinLensCamera.from_dict(data["camera"])
        except DefocusError as exc:
            raise DefocusError(f"bad stack.json in {root}: {exc}") from None
    if cam is None:
        cam = _camera_from_exif(exif(0))

    # focus: argument > stack.json > EXIF
    if focus is not None:
        fd = _focus_list(focus, f"stack {name}")
        if len(fd) != n:
            raise DefocusError(f"--focus gives {len(fd)} distances but stack {name} has {n} images")
    elif data is not None and "focus_distances_m" in data:
        fd = [float(v) for v in data["focus_distances_m"]]
    else:
        fd = []
        for i in range(n):
            v = exif(i).get("focus_distance_m")
            if v is None:
                where = "add focus_distances_m to stack.json" if data is not None else "add stack.json"
                raise DefocusError(
                    f"no focus distances for {name}: pass --focus or {where} "
                    f"({image_names[i]} has no EXIF SubjectDistance)"
                )
            fd.append(v)
    _check_focus(fd, cam, f"stack {name}")

    images = []
    size0: tuple[int, int] | None = None
    for i, p in enumerate(paths):
        img = load_image(p)
        size = (int(img.shape[2]), int(img.shape[1]))
        if size0 is None:
            size0 = size
        elif size != size0:
            raise DefocusError(
                f"image sizes differ in {name}: {image_names[0]} is {size0[0]}x{size0[1]} "
                f"but {image_names[i]} is {size[0]}x{size[1]} (WxH)"
            )
        images.append(img)

    gt_depth = None
    if load_ground_truth and (root / GT_DEPTH_NAME).is_file():
        gt_depth = read_depth(root / GT_DEPTH_NAME)
        if (gt_depth.shape[1], gt_depth.shape[0]) != size0:
            raise DefocusError(
                f"{GT_DEPTH_NAME} in {name} is {gt_depth.shape[1]}x{gt_depth.shape[0]} but the images are "
                f"{size0[0]}x{size0[1]} (WxH)"
            )
    gt_aif = None
    if load_ground_truth and (root / GT_AIF_NAME).is_file():
        gt_aif = load_image(root / GT_AIF_NAME)
        if (gt_aif.shape[2], gt_aif.shape[1]) != size0:
            raise DefocusError(
                f"{GT_AIF_NAME} in {name} is {gt_aif.shape[2]}x{gt_aif.shape[1]} but the images are "
                f"{size0[0]}x{size0[1]} (WxH)"
            )
    return FocalStack(
        images=torch.stack(images),
        focus_distances_m=torch.tensor(fd, dtype=torch.float32),
        camera=cam,
        gt_depth=gt_depth,
        gt_aif=gt_aif,
        image_names=image_names,
        name=name,
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
    if dest.is_dir():
        _check_replaceable(dest)
    names = [f"focus_{i}.png" for i in range(stack.num_images)]
    meta: dict[str, Any] = {
        "images": names,
        "focus_distances_m": [_json_float(v) for v in stack.focus_distances_m.tolist()],
    }
    if stack.camera is not None:
        meta["camera"] = stack.camera.to_dict()
    parent = dest.absolute().parent
    tag = uuid.uuid4().hex[:8]
    tmp = parent / f".{dest.name}.{tag}.tmp"
    old = parent / f".{dest.name}.{tag}.old"
    try:
        parent.mkdir(parents=True, exist_ok=True)
        tmp.mkdir()
    except OSError as exc:
        raise DefocusError(f"cannot write a stack to {dest}: {_reason(exc)}") from None
    try:
        for i, nm in enumerate(names):
            save_image(tmp / nm, stack.images[i])
        (tmp / STACK_JSON).write_text(json.dumps(meta, indent=2) + "\n", encoding="utf-8")
        if stack.gt_depth is not None:
            write_depth_tiff(tmp / GT_DEPTH_NAME, stack.gt_depth)
        if stack.gt_aif is not None:
            save_image(tmp / GT_AIF_NAME, stack.gt_aif)
        if dest.exists():
            os.rename(dest, old)
            try:
                os.rename(tmp, dest)
            except BaseException:
                os.rename(old, dest)
                raise
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.rename(tmp, dest)
    except OSError as exc:
        shutil.rmtree(tmp, ignore_errors=True)
        raise DefocusError(f"cannot write a stack to {dest}: {_reason(exc)}") from None
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


__all__ = [
    "FocalStack",
    "fill_depth_holes",
    "load_image",
    "quantize_8bit",
    "read_depth",
    "read_exif_metadata",
    "read_stack",
    "require_camera",
    "save_image",
    "write_depth_png_mm",
    "write_depth_tiff",
    "write_stack",
]
