"""A minimal OpenEXR reader for the depth maps of FoD500 / DefocusNet (``*Dpt.exr``), without OpenEXR installed.

Written from the OpenEXR file-layout document (openexr.com, "OpenEXR File Layout"): magic ``76 2f 31 01``, a version
field (2, flags for tiled / deep / multi-part files), a header of ``name\\0 type\\0 int32 size value`` attributes ended
by a NUL byte, a table of one uint64 offset per chunk, then chunks of ``int32 y, int32 size, data``. Inside a chunk
each scan line holds every channel (sorted by name, as listed in ``channels``) one after the other, little-endian.

Supported: single-part scan-line files, channels HALF / FLOAT / UINT with sampling 1, compression NONE, RLE, ZIPS and
ZIP (RLE and ZIP first undo the compression, then the predictor ``t[i] = t[i-1] + t[i] - 128`` and the split of even
and odd bytes into two halves). Anything else (tiled, deep, multi-part, PIZ / PXR24 / B44 / DWA) is a
:class:`~defocus.errors.DefocusError` naming what is unsupported.
"""

from __future__ import annotations

import struct
import zlib
from pathlib import Path

import numpy as np

from defocus.errors import DefocusError

MAGIC = b"\x76\x2f\x31\x01"
_PIXEL_TYPES = {0: np.dtype("<u4"), 1: np.dtype("<f2"), 2: np.dtype("<f4")}
_COMPRESSIONS = {0: ("NONE", 1), 1: ("RLE", 1), 2: ("ZIPS", 1), 3: ("ZIP", 16), 4: ("PIZ", 32), 5: ("PXR24", 16),
                 6: ("B44", 32), 7: ("B44A", 32), 8: ("DWAA", 32), 9: ("DWAB", 256)}


def _cstring(buf: bytes, pos: int, what: str) -> tuple[str, int]:
    end = buf.find(b"\x00", pos)
    if end < 0:
        raise DefocusError(f"{what}: truncated header")
    return buf[pos:end].decode("latin-1"), end + 1


def _channels(value: bytes, what: str) -> list[tuple[str, int]]:
    out, pos = [], 0
    while pos < len(value) and value[pos] != 0:
        name, pos = _cstring(value, pos, what)
        if pos + 16 > len(value):
            raise DefocusError(f"{what}: truncated channel list")
        ptype, _linear, xs, ys = struct.unpack_from("<iB3xii", value, pos)
        pos += 16
        if ptype not in _PIXEL_TYPES:
            raise DefocusError(f"{what}: channel {name!r} has unknown pixel type {ptype}")
        if xs != 1 or ys != 1:
            raise DefocusError(f"{what}: sub-sampled channels are not supported")
        out.append((name, ptype))
    return out


def _undo_predictor_and_interleave(raw: bytes) -> bytes:
    t = np.frombuffer(raw, dtype=np.uint8).astype(np.int64)
    if t.size == 0:
        return b""
    t[1:] -= 128
    t = np.cumsum(t) & 0xFF
    half = (t.size + 1) // 2
    out = np.empty(t.size, dtype=np.uint8)
    out[0::2] = t[:half]
    out[1::2] = t[half:]
    return out.tobytes()


def _rle_decode(data: bytes, expected: int, what: str) -> bytes:
    out = bytearray()
    pos = 0
    while pos < len(data) and len(out) < expected:
        count = struct.unpack_from("b", data, pos)[0]
        pos += 1
        if count < 0:
            out += data[pos:pos - count]
            pos -= count
        else:
            if pos >= len(data):
                raise DefocusError(f"{what}: corrupt RLE data")
            out += bytes([data[pos]]) * (count + 1)
            pos += 1
    return bytes(out)


def read_exr(path: str | Path, channel: str | None = None) -> np.ndarray:
    """One channel of a scan-line OpenEXR file as a float32 ``(H, W)`` array.

    Args:
        path: the ``.exr`` file.
        channel: the channel name (e.g. ``"R"``); default: ``"R"`` if present, else ``"Y"``, else the first one.
    """
    p = Path(path)
    what = f"cannot read EXR {p}"
    try:
        buf = p.read_bytes()
    except OSError as exc:
        raise DefocusError(f"{what}: {exc.strerror or exc}") from None
    if buf[:4] != MAGIC:
        raise DefocusError(f"{what}: not an OpenEXR file")
    if len(buf) < 8:
        raise DefocusError(f"{what}: truncated header")
    flags = struct.unpack_from("<I", buf, 4)[0]
    if flags & 0xFF != 2:
        raise DefocusError(f"{what}: unsupported EXR version {flags & 0xFF}")
    if flags & 0x200:
        raise DefocusError(f"{what}: tiled EXR files are not supported")
    if flags & (0x800 | 0x1000):
        raise DefocusError(f"{what}: deep or multi-part EXR files are not supported")
    pos, attrs = 8, {}
    while True:
        if pos >= len(buf):
            raise DefocusError(f"{what}: truncated header")
        if buf[pos] == 0:
            pos += 1
            break
        name, pos = _cstring(buf, pos, what)
        atype, pos = _cstring(buf, pos, what)
        if pos + 4 > len(buf):
            raise DefocusError(f"{what}: truncated header")
        size = struct.unpack_from("<i", buf, pos)[0]
        pos += 4
        if size < 0 or pos + size > len(buf):
            raise DefocusError(f"{what}: truncated header")
        attrs[name] = (atype, buf[pos:pos + size])
        pos += size
    for required in ("channels", "compression", "dataWindow"):
        if required not in attrs:
            raise DefocusError(f"{what}: header has no {required!r}")
    chans = _channels(attrs["channels"][1], what)
    if not chans:
        raise DefocusError(f"{what}: no channels")
    names = [c for c, _ in chans]
    if channel is None:
        channel = "R" if "R" in names else ("Y" if "Y" in names else names[0])
    if channel not in names:
        raise DefocusError(f"{what}: no channel {channel!r} (has {', '.join(names)})")
    comp = attrs["compression"][1][0]
    if comp not in _COMPRESSIONS:
        raise DefocusError(f"{what}: unknown compression {comp}")
    comp_name, lines_per_chunk = _COMPRESSIONS[comp]
    if comp_name not in ("NONE", "RLE", "ZIPS", "ZIP"):
        raise DefocusError(f"{what}: {comp_name} compression is not supported (re-save as ZIP or uncompressed)")
    xmin, ymin, xmax, ymax = struct.unpack("<iiii", attrs["dataWindow"][1][:16])
    width, height = xmax - xmin + 1, ymax - ymin + 1
    if width <= 0 or height <= 0:
        raise DefocusError(f"{what}: empty data window")
    chunks = (height + lines_per_chunk - 1) // lines_per_chunk
    if pos + 8 * chunks > len(buf):
        raise DefocusError(f"{what}: truncated offset table")
    offsets = struct.unpack_from(f"<{chunks}Q", buf, pos)
    line_bytes = sum(_PIXEL_TYPES[t].itemsize for _, t in chans) * width
    out = np.zeros((height, width), dtype=np.float32)
    for off in offsets:
        if off + 8 > len(buf):
            raise DefocusError(f"{what}: truncated file (chunk offset beyond the end)")
        y, size = struct.unpack_from("<ii", buf, off)
        data = buf[off + 8: off + 8 + size]
        if size < 0 or len(data) != size:
            raise DefocusError(f"{what}: truncated file")
        row0 = y - ymin
        lines = min(lines_per_chunk, height - row0)
        if row0 < 0 or lines <= 0:
            raise DefocusError(f"{what}: chunk for line {y} outside the data window")
        expected = line_bytes * lines
        if size < expected and comp_name != "NONE":
            try:
                raw = zlib.decompress(data) if comp_name in ("ZIP", "ZIPS") else _rle_decode(data, expected, what)
            except zlib.error:
                raise DefocusError(f"{what}: corrupt ZIP data") from None
            raw = _undo_predictor_and_interleave(raw)
        else:
            raw = data
        if len(raw) != expected:
            raise DefocusError(f"{what}: chunk at line {y} holds {len(raw)} bytes, expected {expected}")
        start = 0
        for li in range(lines):
            for cname, ctype in chans:
                dt = _PIXEL_TYPES[ctype]
                n = dt.itemsize * width
                if cname == channel:
                    out[row0 + li] = np.frombuffer(raw, dtype=dt, count=width, offset=start).astype(np.float32)
                start += n
    return out
