"""Network against the classical baselines on the held-out scene groups of the real RGB-D frames (issue 8, item 2).

Every frame of the chosen split (`defocus.data.rgbd_index.SPLIT`, by scene group) of ../shared/data/rgbd/INDEX.csv is
rendered at 320 x 240 with the `nyuv2` lens and the focus distances of its kind (`FOCUS_BY_KIND`: the preset's for
rooms, nearer for tabletops, farther outdoors) under both protocols, and scored (metrics per image over valid ground
truth inside the depth range 0.1-20 m). Results per scene group, and the mean over scene groups (each group weighs
the same, however many frames it has). Baselines in the same run: the adaptive classical one (the default) and the
fixed σ = 0 / σ = 1 px variants.

Usage: python benchmarks/bench_rgbd_split.py [--split test] [--refine-steps 0] [--threads 2]
"""

from __future__ import annotations

import argparse
import time
from collections import defaultdict
from pathlib import Path

import numpy as np
import torch

from defocus.data.rgbd_index import FOCUS_BY_KIND, load_rgbd, read_index, split_of
from defocus.data.synthesis import stack_from_rgbd
from defocus.evaluate import evaluate_stack, fixed_baselines
from defocus.models.factory import create_model
from defocus.optics.camera import get_preset

ROOT = Path(__file__).resolve().parents[1]
INDEX = ROOT.parent / "shared" / "data" / "rgbd" / "INDEX.csv"
DEPTH_RANGE = (0.1, 20.0)
KEYS = ("delta1", "abs_rel", "rmse")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--split", default="test", choices=("train", "validation", "test"))
    ap.add_argument("--refine-steps", type=int, default=0)
    ap.add_argument("--refine-psf", default="disk", help="disk, gaussian or auto (self-calibrated per stack)")
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    if not INDEX.is_file():
        raise SystemExit(f"{INDEX} is absent: this benchmark needs the shared RGB-D frames")
    torch.set_num_threads(args.threads)
    model = create_model("daifnet_small", pretrained=True)
    cam = get_preset("nyuv2").camera
    entries = [e for e in read_index(INDEX) if split_of(e) == args.split]
    t0 = time.time()
    for protocol in ("paper", "realistic"):
        per_group: dict[str, list[dict]] = defaultdict(list)
        for e in entries:
            rgb, depth = load_rgbd(e)
            st = stack_from_rgbd(rgb, depth, FOCUS_BY_KIND[e.kind], cam, protocol, size=(240, 320), name=e.id)
            res = evaluate_stack(model, st, DEPTH_RANGE, args.refine_steps, refine_model=args.refine_psf,
                                 extra_baselines=fixed_baselines())
            per_group[e.scene_group].append(res.metrics)
        methods = list(next(iter(per_group.values()))[0])
        print(f"\n### {args.split} split, {protocol} protocol ({len(entries)} frames, {len(per_group)} scene groups)\n")
        print("| scene group | frames | " + " | ".join(f"{m} δ1 / AbsRel / RMSE" for m in methods) + " |")
        print("|---|---:|" + "---|" * len(methods))
        means = {m: {k: [] for k in KEYS} for m in methods}
        for group, rows in per_group.items():
            cells = []
            for m in methods:
                vals = {k: float(np.mean([r[m][k] for r in rows])) for k in KEYS}
                for k in KEYS:
                    means[m][k].append(vals[k])
                cells.append(f"{vals['delta1']:.3f} / {vals['abs_rel']:.3f} / {vals['rmse']:.3f}")
            print(f"| {group} | {len(rows)} | " + " | ".join(cells) + " |")
        cells = [" / ".join(f"{np.mean(means[m][k]):.3f}" for k in KEYS) for m in methods]
        print("| **mean over scene groups** | | " + " | ".join(f"**{c}**" for c in cells) + " |")
    print(f"\n({time.time() - t0:.0f} s)")


if __name__ == "__main__":
    main()
