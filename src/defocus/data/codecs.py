"""Image and depth-map codecs: files in, tensors and arrays out, and back.

* An image is a ``torch.float32`` tensor of shape ``(3, H, W)`` in ``[0, 1]``: the stored 8-bit values / 255
  (sRGB-encoded, as stored; 16-bit files are divided by 65535). Greyscale files are replicated to three channels,
  alpha is dropped, and the EXIF orientation is applied.
* A depth map is a ``numpy.float32`` array of shape ``(H, W)`` in **metres**, where ``0`` means unknown.

Every problem with a file is a :class:`~defocus.errors.DefocusError` with a one-line message; reading never changes
a file, and writing goes through :func:`defocus.files.atomic_write`.
"""

from __future__ import annotations

import math
import os
import warnings
from typing import Any

import numpy as np
import tifffile
import torch
from PIL import Image, ImageOps
from pathlib import Path

from defocus.color import to_uint8
from defocus.errors import DefocusError, InputError
from defocus.files import PNG_COMPRESS_LEVEL, atomic_write, describe_os_error

PathLike = str | os.PathLike

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".tif", ".tiff")

#: Most pixels an image or depth file may declare (Pillow's decompression-bomb limit, 2 x 89.5 million): a file
#: declaring more is refused from its header, before anything is decoded or allocated.
MAX_IMAGE_PIXELS = 178_956_970


def _check_declared_size(width: int, height: int, what: str) -> None:
    """DefocusError when a file's header declares more than :data:`MAX_IMAGE_PIXELS` pixels."""
    if int(width) * int(height) > MAX_IMAGE_PIXELS:
        raise DefocusError(
            f"{what}: it declares {int(width)}x{int(height)} pixels, more than the {MAX_IMAGE_PIXELS} defocus reads "
            "(a damaged file, or a decompression bomb)"
        )


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
        _check_declared_size(page.imagewidth, page.imagelength, f"cannot read image {path}")
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
        _check_declared_size(im.width, im.height, f"cannot read image {path}")
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
            except (FileNotFoundError, IsADirectoryError, PermissionError, DefocusError):
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
        raise DefocusError(f"cannot read image {p}: {describe_os_error(exc)}") from None
    if arr.ndim != 3 or arr.shape[0] == 0 or arr.shape[1] == 0:
        raise DefocusError(f"cannot read image {p}: empty image")
    channels = arr.shape[2]
    if channels in (1, 2):
        arr = np.repeat(arr[:, :, :1], 3, axis=2)
    elif channels >= 3:
        arr = arr[:, :, :3]
    out = _to_unit_range(np.ascontiguousarray(arr), str(p))
    return torch.from_numpy(np.ascontiguousarray(out.transpose(2, 0, 1)))


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
    u8 = to_uint8(t).cpu().numpy()
    if u8.ndim == 3:
        u8 = np.ascontiguousarray(u8.transpose(1, 2, 0))
    fmt = Image.registered_extensions().get(p.suffix.lower(), "PNG")
    pil = Image.fromarray(u8)
    options = {"compress_level": PNG_COMPRESS_LEVEL} if fmt == "PNG" else {}
    atomic_write(p, lambda tmp: pil.save(tmp, format=fmt, **options), "image")


# ================================================================================================ depth
def as_depth_map(depth: Any, what: str) -> np.ndarray:
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


def clean_depth(arr: np.ndarray) -> np.ndarray:
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
            raise InputError(f"the depth scale must be a number, got {depth_scale!r}", field="depth_scale") from None
        if not math.isfinite(depth_scale) or depth_scale <= 0:
            raise InputError(f"the depth scale must be a finite positive number (metres per unit), got {depth_scale}",
                             field="depth_scale")
    suffix = p.suffix.lower()
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # e.g. Pillow's DecompressionBombWarning: the size is checked here
            raw = _read_depth_samples(p, suffix)
    except DefocusError:
        raise
    except Exception as exc:  # noqa: BLE001 - every decoder failure is bad input
        raise DefocusError(f"cannot read depth {p}: {describe_os_error(exc)}") from None
    arr = as_depth_map(raw, f"cannot read depth {p}")
    if np.issubdtype(arr.dtype, np.integer) or arr.dtype == np.bool_:
        if depth_scale is None:
            raise InputError(f"depth {p} holds integers ({arr.dtype}): give its depth scale (metres per unit, e.g. "
                             "0.001 for mm)", field="depth_scale")
    depth = arr.astype(np.float64)
    if depth_scale is not None:
        depth = depth * depth_scale
    return clean_depth(depth)


def _read_depth_samples(p: Path, suffix: str) -> np.ndarray:
    """The stored samples of a depth file (header size checked before decoding)."""
    if suffix == ".npy":
        _check_npy_header(p)
        return np.load(p, allow_pickle=False)
    if suffix in (".tif", ".tiff"):
        with tifffile.TiffFile(p) as tif:
            page = tif.pages[0]
            _check_declared_size(page.imagewidth, page.imagelength, f"cannot read depth {p}")
            return page.asarray()
    with Image.open(p) as im:
        _check_declared_size(im.width, im.height, f"cannot read depth {p}")
        im.load()
        if im.mode not in ("I;16", "I;16B", "I;16L", "I;16N", "I", "L", "F", "1"):
            raise DefocusError(
                f"cannot read depth {p}: expected a single-channel (greyscale) image, got mode {im.mode}"
            )
        return np.array(im)


def _check_npy_header(p: Path) -> None:
    """DefocusError when a ``.npy`` file's header declares more than :data:`MAX_IMAGE_PIXELS` values (read from the
    header alone, before anything is allocated); a header numpy cannot read is a DefocusError too."""
    with open(p, "rb") as f:
        try:
            version = np.lib.format.read_magic(f)
            if version == (1, 0):
                shape, _, _ = np.lib.format.read_array_header_1_0(f)
            else:  # 2.0 (and 3.0: the same layout, a UTF-8 header)
                shape, _, _ = np.lib.format.read_array_header_2_0(f)
        except ValueError as exc:
            raise DefocusError(f"cannot read depth {p}: {describe_os_error(exc)}") from None
    count = math.prod(int(v) for v in shape)
    if count > MAX_IMAGE_PIXELS:
        raise DefocusError(
            f"cannot read depth {p}: it declares shape {tuple(int(v) for v in shape)}, more than the "
            f"{MAX_IMAGE_PIXELS} values defocus reads (a damaged file, or a decompression bomb)"
        )


def write_depth_tiff(path: PathLike, depth: np.ndarray | torch.Tensor) -> None:
    """Writes a ``(H, W)`` depth map (metres) as an uncompressed float32 TIFF, values exactly preserved."""
    p = Path(path)
    arr = np.ascontiguousarray(as_depth_map(depth, f"cannot write depth {p}").astype(np.float32))
    atomic_write(p, lambda tmp: tifffile.imwrite(tmp, arr, photometric="minisblack"), "depth")


def write_depth_png_mm(path: PathLike, depth: np.ndarray | torch.Tensor) -> None:
    """Writes a ``(H, W)`` depth map (metres) as a uint16 PNG of millimetres.

    Stored value = floor(depth · 1000 + 0.5) (round half up), clipped to [0, 65535]; non-finite and negative
    depths are stored as 0 (unknown). Read it back with ``read_depth(path, depth_scale=0.001)``.
    """
    p = Path(path)
    mm = clean_depth(as_depth_map(depth, f"cannot write depth {p}")).astype(np.float64) * 1000.0
    u16 = np.clip(np.floor(mm + 0.5), 0, 65535).astype(np.uint16)
    pil = Image.fromarray(u16)
    atomic_write(p, lambda tmp: pil.save(tmp, format="PNG", compress_level=PNG_COMPRESS_LEVEL), "depth")


# ================================================================================================ point clouds
def write_ply_points(path: PathLike, xyz: np.ndarray, rgb: np.ndarray) -> None:
    """Writes a binary little-endian PLY point cloud: float32 x, y, z (metres) and uint8 red, green, blue.

    Args:
        xyz: (M, 3) float; rgb: (M, 3) uint8 (or float in [0, 1]).
    """
    p = Path(path)
    xyz = np.ascontiguousarray(np.asarray(xyz, dtype=np.float32))
    rgb = np.asarray(rgb)
    if rgb.dtype != np.uint8:
        rgb = np.floor(np.clip(rgb.astype(np.float32), 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)
    if xyz.ndim != 2 or xyz.shape[1] != 3 or rgb.shape != xyz.shape:
        raise DefocusError(f"cannot write points {p}: expected (M, 3) xyz and rgb, got {xyz.shape} and {rgb.shape}")
    rec = np.empty(len(xyz), dtype=[("x", "<f4"), ("y", "<f4"), ("z", "<f4"), ("r", "u1"), ("g", "u1"), ("b", "u1")])
    rec["x"], rec["y"], rec["z"] = xyz[:, 0], xyz[:, 1], xyz[:, 2]
    rec["r"], rec["g"], rec["b"] = rgb[:, 0], rgb[:, 1], rgb[:, 2]
    header = (
        "ply\nformat binary_little_endian 1.0\ncomment defocus point cloud: metres, camera at the origin, "
        f"x right, y down, z forward\nelement vertex {len(rec)}\nproperty float x\nproperty float y\n"
        "property float z\nproperty uchar red\nproperty uchar green\nproperty uchar blue\nend_header\n"
    ).encode("ascii")

    def write(tmp: Path) -> None:
        with open(tmp, "wb") as f:
            f.write(header)
            f.write(rec.tobytes())

    atomic_write(p, write, "points")


def read_ply_points(path: PathLike) -> tuple[np.ndarray, np.ndarray]:
    """Reads what :func:`write_ply_points` writes: (xyz (M, 3) float32, rgb (M, 3) uint8)."""
    data = Path(path).read_bytes()
    end = data.index(b"end_header\n") + len(b"end_header\n")
    header = data[:end].decode("ascii")
    if "binary_little_endian" not in header:
        raise DefocusError(f"{path}: only binary little-endian PLY files written by defocus are read")
    m = int(next(line.split()[-1] for line in header.splitlines() if line.startswith("element vertex")))
    rec = np.frombuffer(data[end:], dtype=[("x", "<f4"), ("y", "<f4"), ("z", "<f4"), ("r", "u1"), ("g", "u1"),
                                            ("b", "u1")], count=m)
    return np.stack([rec["x"], rec["y"], rec["z"]], 1), np.stack([rec["r"], rec["g"], rec["b"]], 1)
