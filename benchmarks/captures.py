"""Shared by the randomised-camera benchmarks: RGB-D frames and procedural scenes rendered through random captures
(:mod:`defocus.data.captures`), and every method run through ``defocus predict``'s pipeline."""

from __future__ import annotations

import time
import zlib
from pathlib import Path
from typing import Iterator

import numpy as np
import torch
import torch.nn.functional as F

from defocus.data.captures import Capture, capture_stack, random_capture, scene_inverse_depth_range
from defocus.data.procedural import SCENE_DEPTH_RANGE_M, VALIDATION_SEED_START, make_scene
from defocus.data.rgbd_index import load_rgbd, read_index, split_of
from defocus.data.stack import FocalStack
from defocus.metrics import depth_metrics
from defocus.predict import predict_stack

ROOT = Path(__file__).resolve().parents[1]
INDEX = ROOT.parent / "shared" / "data" / "rgbd" / "INDEX.csv"
DEPTH_RANGE = (0.1, 20.0)
SIZE = (240, 320)
KEYS = ("delta1", "abs_rel", "rmse")
#: Procedural validation scenes start here (above the training seeds, apart from the trainer's own validation).
PROCEDURAL_START = VALIDATION_SEED_START + 50_000


def require_frames(threads: int) -> None:
    if not INDEX.is_file():
        raise SystemExit(f"{INDEX} is absent: this benchmark needs the shared RGB-D frames")
    torch.set_num_threads(threads)


def _seed(*parts: object) -> int:
    return zlib.crc32("/".join(map(str, parts)).encode())


#: Whether the captures include the camera's image processing (random_capture's ``isp``); the scripts' ``--no-isp``
#: sets it False, for the protocol of the figures recorded before the ISP was added.
ISP = True


def set_isp(enabled: bool) -> None:
    global ISP
    ISP = bool(enabled)


def rgbd_captures(split: str, per_frame: int) -> Iterator[tuple[str, Capture, FocalStack]]:
    """(scene group, capture, stack) for ``per_frame`` random captures of every frame of ``split`` at 320 x 240."""
    for e in read_index(INDEX):
        if split_of(e) != split:
            continue
        rgb, depth = load_rgbd(e)
        rgb = F.interpolate(rgb[None], size=SIZE, mode="area")[0]
        depth = F.interpolate(torch.from_numpy(depth)[None, None], size=SIZE, mode="nearest")[0, 0].numpy()
        for c in range(per_frame):
            seed = _seed(e.id, c)
            cap = random_capture(seed, scene_inverse_depth_range(depth), isp=ISP)
            yield e.scene_group, cap, capture_stack(rgb, depth, cap, seed=seed, name=f"{e.id}#{c}")


def procedural_captures(count: int) -> Iterator[tuple[str, Capture, FocalStack]]:
    """(``procedural``, capture, stack) for ``count`` procedural validation scenes, one random capture each."""
    for i in range(count):
        seed = PROCEDURAL_START + i
        rgb, depth = make_scene(seed, *SIZE, SCENE_DEPTH_RANGE_M["nyuv2" if i % 2 == 0 else "defocusnet"])
        d = depth[0].numpy()
        cap = random_capture(_seed("procedural", i), scene_inverse_depth_range(d), isp=ISP)
        yield "procedural", cap, capture_stack(rgb, d, cap, seed=seed, name=f"procedural{i}")


def run(model, stack: FocalStack, options):
    """(prediction, seconds) through the pipeline."""
    t0 = time.perf_counter()
    pred = predict_stack(model, stack, options)
    return pred, time.perf_counter() - t0


def score(pred, stack: FocalStack) -> dict[str, float]:
    x0, y0, x1, y1 = pred.crop_box
    gt = torch.from_numpy(stack.gt_depth)[y0:y1, x0:x1]
    return depth_metrics(pred.depth_map, gt, depth_range_m=DEPTH_RANGE)


def working_truth(pred, stack: FocalStack) -> torch.Tensor:
    """The ground truth (h, w) metres at the prediction's working size (nearest; 0 = unknown or out of range)."""
    x0, y0, x1, y1 = pred.crop_box
    gt = torch.from_numpy(stack.gt_depth)[y0:y1, x0:x1]
    h, w = pred.working_size
    small = F.interpolate(gt[None, None], size=(h, w), mode="nearest")[0, 0]
    return torch.where((small >= DEPTH_RANGE[0]) & (small <= DEPTH_RANGE[1]), small, torch.zeros_like(small))


def group_means(rows: dict[str, list[dict]]) -> dict[str, dict[str, float]]:
    """{method: mean over scene groups of the mean over a group's stacks} from {group: [{method: metrics}]}."""
    methods = list(next(iter(rows.values()))[0])
    out = {}
    for m in methods:
        per_group = [{k: float(np.mean([r[m][k] for r in rs])) for k in rs[0][m]} for rs in rows.values()]
        out[m] = {k: float(np.mean([g[k] for g in per_group])) for k in per_group[0]}
    return out
