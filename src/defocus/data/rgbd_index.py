"""Real RGB-D frames listed in an ``INDEX.csv`` (the shared data's format), read in their own depth formats, and the
project's fixed split of them into training, validation and test scene groups.

``INDEX.csv`` columns: ``id, rgb, depth, depth_format, metres_per_unit, scene_group, kind, notes`` (paths relative
to the CSV's folder). Depth formats read here:

* ``png_uint16`` — integer PNG × ``metres_per_unit`` (0 = unknown);
* ``png_uint16_sun_bitrotated`` — SUN RGB-D: the 16 bits rotated right by 3, then × ``metres_per_unit``;
* ``npy_float32`` — metres;
* ``npy_pickle_dict`` — a pickled dict with ``image`` (uint8 RGB) and ``depth`` (float32 m, NaN = unknown), read
  with ``allow_pickle`` (only for files you trust: these are the project's shared data);
* ``pfm_disparity`` — PFM disparity (rows bottom-up) with a Middlebury/ETH3D ``calib.txt`` beside it:
  ``Z = f·B / (d + doffs)`` in the calibration's mm, /1000 for metres; inf = unknown.

Frames of one scene group are never split between training and testing: :data:`SPLIT` assigns whole groups.
"""

from __future__ import annotations

import csv
import os
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from defocus.data.codecs import load_image, read_depth
from defocus.errors import DefocusError

#: The fixed split by scene group (kept in the repository so that every run tests on the same scenes). Test groups
#: cover every source kind (rooms, a tabletop, outdoor); training groups are only ever used as rendered stacks,
#: never with their depth. Groups not listed (e.g. the sparse KITTI LiDAR frame) are not used.
SPLIT: dict[str, tuple[str, ...]] = {
    "train": ("dfd_indoor_floor", "sun3d_lounge", "tum", "graspnet", "eth3d_playground"),
    "validation": ("nyu_gupta", "sixdof"),
    "test": ("nyu_0045", "nyu_0001", "nyu_unidepth", "primesense_room", "sun", "ucn_lab", "eth3d_terrace"),
}

#: Focus distances (m) a photographer would set for each kind of scene with the `nyuv2` lens: the preset's for rooms
#: and outdoor views, nearer for tabletops.
FOCUS_BY_KIND: dict[str, tuple[float, ...]] = {
    "indoor": (1.0, 1.5, 2.5, 4.0, 6.0),
    "tabletop": (0.4, 0.55, 0.75, 1.0, 1.5),
    "outdoor": (1.5, 2.5, 4.0, 7.0, 12.0),
}


@dataclass(frozen=True)
class RGBDEntry:
    """One row of ``INDEX.csv``."""

    id: str
    rgb: Path
    depth: Path
    depth_format: str
    metres_per_unit: float | None
    scene_group: str
    kind: str


def read_index(csv_path: str | os.PathLike) -> list[RGBDEntry]:
    """The rows of an ``INDEX.csv``; paths are resolved against the CSV's folder."""
    p = Path(csv_path)
    if not p.is_file():
        raise DefocusError(f"RGB-D index {p} does not exist")
    rows = []
    with p.open(newline="", encoding="utf-8") as f:
        for r in csv.DictReader(f):
            scale = r.get("metres_per_unit") or ""
            rows.append(RGBDEntry(r["id"], p.parent / r["rgb"], p.parent / r["depth"], r["depth_format"],
                                  float(scale) if scale.strip() else None, r["scene_group"], r["kind"]))
    return rows


def split_of(entry: RGBDEntry) -> str | None:
    """"train", "validation", "test" or None (unused) for an entry's scene group."""
    for name, groups in SPLIT.items():
        if entry.scene_group in groups:
            return name
    return None


def _read_pfm(path: Path) -> np.ndarray:
    with path.open("rb") as f:
        header = f.readline().strip()
        if header not in (b"Pf", b"PF"):
            raise DefocusError(f"{path} is not a PFM file")
        w, h = (int(v) for v in f.readline().split())
        scale = float(f.readline())
        data = np.frombuffer(f.read(), dtype="<f4" if scale < 0 else ">f4")
    channels = 3 if header == b"PF" else 1
    return np.flipud(data[: w * h * channels].reshape(h, w, channels)[..., 0]).astype(np.float32)


def _calib(path: Path) -> dict[str, str]:
    return dict(line.split("=", 1) for line in path.read_text().splitlines() if "=" in line)


def load_rgbd(entry: RGBDEntry) -> tuple[torch.Tensor, np.ndarray]:
    """(rgb (3, H, W) in [0, 1], depth (H, W) float32 metres with 0 = unknown) of one entry."""
    fmt = entry.depth_format
    if fmt == "npy_pickle_dict":
        d = np.load(entry.depth, allow_pickle=True, encoding="latin1").item()
        rgb = torch.from_numpy(np.ascontiguousarray(d["image"].transpose(2, 0, 1))).float() / 255.0
        depth = np.nan_to_num(d["depth"].astype(np.float32), nan=0.0, posinf=0.0)
    else:
        rgb = load_image(entry.rgb)
        if fmt == "png_uint16":
            depth = read_depth(entry.depth, entry.metres_per_unit)
        elif fmt == "png_uint16_sun_bitrotated":
            raw = read_depth(entry.depth, 1.0).astype(np.uint32)
            depth = (((raw >> 3) | (raw << 13)) & 0xFFFF).astype(np.float32) * float(entry.metres_per_unit or 0.001)
        elif fmt == "npy_float32":
            depth = read_depth(entry.depth) * float(entry.metres_per_unit or 1.0)
        elif fmt == "pfm_disparity":
            disp = _read_pfm(entry.depth)
            cal = _calib(entry.depth.parent / "calib.txt")
            f = float(re.findall(r"[-\d.]+", cal["cam0"])[0])
            z = f * float(cal["baseline"]) / (disp + float(cal.get("doffs", 0))) / 1000.0
            depth = np.where(np.isfinite(z) & (z > 0), z, 0.0).astype(np.float32)
        else:
            raise DefocusError(f"{entry.id}: unknown depth format {fmt!r}")
    if tuple(depth.shape) != tuple(rgb.shape[-2:]):
        raise DefocusError(f"{entry.id}: RGB is {rgb.shape[-1]}x{rgb.shape[-2]} but depth is "
                           f"{depth.shape[1]}x{depth.shape[0]}")
    return rgb, depth
