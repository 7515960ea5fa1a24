"""Accuracy per second of the working size of the real-photo path (``defocus predict --max-size``).

The real RGB-D frames of ../shared/data/rgbd (the issue-3 set: NYU #0045 and 5 PrimeSense frames) are rendered at
640 x 480 with the `nyuv2` camera (pixel pitch 6 µm at that size, the preset's 12 µm at 320 x 240) under both
protocols; each stack is predicted through `predict_stack` (no alignment: the stacks are aligned) at several
working sizes, with outputs at 640 x 480, and scored against the ground truth (AbsRel, δ1). Time is per stack.

Usage: python benchmarks/bench_working_size.py [--sizes 160 240 320 480 640] [--threads 2] [--model classical]
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import torch

from defocus.data.codecs import load_image, read_depth
from defocus.data.synthesis import stack_from_rgbd
from defocus.metrics import depth_metrics
from defocus.models.factory import create_model
from defocus.optics.camera import get_preset
from defocus.predict import predict_stack

ROOT = Path(__file__).resolve().parents[1]
RGBD = ROOT.parent / "shared" / "data" / "rgbd"


def frames():
    nyu = RGBD / "nyuv2_labeled_0045_hollyjackson"
    out = [("nyu0045", nyu / "rgb_0045.png", nyu / "depth_0045_0.1mm.png", 1e-4)]
    ps = RGBD / "open3d_testdata_rgbd" / "RGBD"
    out += [(f"primesense{i}", ps / "color" / f"{i:05d}.jpg", ps / "depth" / f"{i:05d}.png", 1e-3) for i in range(5)]
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", type=int, nargs="+", default=[0, 160, 240, 320, 480, 640],
                    help="longest sides to try; 0 = the automatic size")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--model", default="shipped", help="'shipped' (the released weights) or a factory name")
    args = ap.parse_args()
    if not RGBD.is_dir():
        raise SystemExit(f"{RGBD} is absent: this benchmark needs the real RGB-D frames")
    torch.set_num_threads(args.threads)
    model = create_model("daifnet_small", pretrained=True) if args.model == "shipped" else create_model(args.model)
    preset = get_preset("nyuv2")
    camera = preset.camera.resized(2.0)  # 640 x 480
    rows = []
    for protocol in ("paper", "realistic"):
        stacks = []
        for name, rgb, depth, scale in frames():
            st = stack_from_rgbd(load_image(rgb), read_depth(depth, scale), preset.focus_distances_m, camera,
                                 protocol, size=(480, 640), name=name)
            stacks.append(st)
        for size in args.sizes:
            rel, d1, secs = [], [], []
            for st in stacks:
                t = time.perf_counter()
                res = predict_stack(model, st, max_size=size or None, depth_range=preset.depth_range_m)
                secs.append(time.perf_counter() - t)
                x0, y0, x1, y1 = res.crop_box
                gt = torch.from_numpy(st.gt_depth)[y0:y1, x0:x1]
                m = depth_metrics(res.depth_map, gt, depth_range_m=preset.depth_range_m)
                rel.append(m["abs_rel"])
                d1.append(m["delta1"])
            label = f"auto ({max(res.working_size)})" if size == 0 else str(size)
            rows.append((protocol, label, float(np.mean(rel)), float(np.mean(d1)), float(np.mean(secs))))
            print(f"{protocol:9s} max-size {label}: AbsRel {rows[-1][2]:.3f}  δ1 {rows[-1][3]:.3f}  "
                  f"{rows[-1][4]:.2f} s/stack", flush=True)
    print("\n| protocol | --max-size | AbsRel | δ1 | seconds per stack |\n|---|---:|---:|---:|---:|")
    for r in rows:
        print(f"| {r[0]} | {r[1]} | {r[2]:.3f} | {r[3]:.3f} | {r[4]:.2f} |")


if __name__ == "__main__":
    main()
