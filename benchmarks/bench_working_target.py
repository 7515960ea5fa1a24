"""Which blur per dioptre K should the pipeline's automatic working size aim at? Chosen on frames never scored.

The RGB-D frames of the `train` and `validation` scene groups (`defocus.data.rgbd_index.SPLIT`; never the `test`
groups, which every published figure uses) are rendered with the `nyuv2` lens at 320 x 240 (K = 26 px/D) and at
640 x 480 (K = 53 px/D) under both protocols, and predicted through the pipeline of ``defocus predict``
(:func:`defocus.predict.predict_stack`, network alone) with the automatic working size aiming at each target K
(``none``: the input's size). Means over scene groups of δ1 / AbsRel / RMSE, and seconds per stack.

Usage: python benchmarks/bench_working_target.py [--targets 12 16 20 26 37 none] [--splits train validation]
       [--threads 2]
"""

from __future__ import annotations

import argparse
import time
from collections import defaultdict

import numpy as np
import torch

import defocus.predict as pipeline
from defocus.data.rgbd_index import FOCUS_BY_KIND, load_rgbd, read_index, split_of
from defocus.data.synthesis import stack_from_rgbd
from defocus.metrics import depth_metrics
from defocus.models.factory import create_model
from defocus.optics.camera import get_preset

from bench_rgbd_split import DEPTH_RANGE, INDEX, KEYS, require_frames

SIZES = {"320x240": ((240, 320), 1.0), "640x480": ((480, 640), 2.0)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--targets", nargs="+", default=["12", "16", "20", "26", "37", "none"])
    ap.add_argument("--splits", nargs="+", default=["train", "validation"])
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    require_frames(args.threads)
    model = create_model(pretrained=True)
    cam = get_preset("nyuv2").camera
    entries = [e for e in read_index(INDEX) if split_of(e) in args.splits]
    t0 = time.time()
    print(f"{len(entries)} frames of the {' + '.join(args.splits)} scene groups\n")
    print("| size | protocol | target K | δ1 | AbsRel | RMSE (m) | s / stack |")
    print("|---|---|---:|---:|---:|---:|---:|")
    for size_name, (size, factor) in SIZES.items():
        for protocol in ("paper", "realistic"):
            stacks = []
            for e in entries:
                rgb, depth = load_rgbd(e)
                stacks.append((e.scene_group, stack_from_rgbd(rgb, depth, FOCUS_BY_KIND[e.kind], cam.resized(factor),
                                                              protocol, size=size, name=e.id)))
            for target in args.targets:
                pipeline.TARGET_BLUR_PER_DIOPTRE = None if target == "none" else float(target)
                per_group: dict[str, list] = defaultdict(list)
                secs = []
                for group, st in stacks:
                    t = time.perf_counter()
                    pred = pipeline.predict_stack(model, st, depth_range=DEPTH_RANGE)
                    secs.append(time.perf_counter() - t)
                    x0, y0, x1, y1 = pred.crop_box
                    gt = torch.from_numpy(st.gt_depth)[y0:y1, x0:x1]
                    m = depth_metrics(pred.depth_map, gt, depth_range_m=DEPTH_RANGE)
                    per_group[group].append([m[k] for k in KEYS])
                mean = np.mean([np.mean(v, 0) for v in per_group.values()], 0)
                print(f"| {size_name} | {protocol} | {target} | {mean[0]:.3f} | {mean[1]:.3f} | {mean[2]:.3f} | "
                      f"{np.median(secs):.2f} |", flush=True)
    print(f"\n({time.time() - t0:.0f} s)")


if __name__ == "__main__":
    main()
