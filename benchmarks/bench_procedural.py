"""Network against the adaptive classical baseline on procedural test scenes: both presets (`defocusnet` and
`nyuv2`), both protocols, and stacks of 2, 5 and 10 images (issue 8's "also report").

Test seeds start at `defocus.data.procedural.TEST_SEED_START` (never used for training or validation). A stack of N
images is focused uniformly in dioptres between the preset's nearest and farthest focus distances (N = 5: the
preset's own distances). Images at 240 x 320 (`nyuv2`) and 256 x 256 (`defocusnet`). Means over scenes; network,
network + refinement (self-calibrated, ``--refine-steps``) and classical in the same run, each through the pipeline of
``defocus predict`` (:func:`defocus.predict.predict_stack`, default options but the preset's depth range).

Usage: python benchmarks/bench_procedural.py [--scenes 4] [--refine-steps 0 10] [--checkpoint FILE] [--threads 2]
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import torch

from defocus.data.procedural import SCENE_DEPTH_RANGE_M, TEST_SEED_START, make_scene
from defocus.data.synthesis import stack_from_scene
from defocus.metrics import depth_metrics
from defocus.models.classical import ClassicalEstimator
from defocus.models.factory import create_model
from defocus.optics.camera import get_preset
from defocus.predict import PredictOptions, predict_stack

SIZES = {"nyuv2": (240, 320), "defocusnet": (256, 256)}


def focus_for(preset, n: int) -> list[float]:
    fds = preset.focus_distances_m
    if n == len(fds):
        return list(fds)
    d = np.linspace(1.0 / max(fds), 1.0 / min(fds), n)
    return sorted((1.0 / d).tolist(), reverse=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--scenes", type=int, default=4)
    ap.add_argument("--stack-sizes", type=int, nargs="+", default=[2, 5, 10])
    ap.add_argument("--refine-steps", type=int, nargs="+", default=[0])
    ap.add_argument("--checkpoint", type=Path)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    model = create_model(checkpoint=args.checkpoint) if args.checkpoint else create_model(pretrained=True)
    refined = [b for b in args.refine_steps if b > 0]
    t0 = time.time()
    print("| preset | protocol | N | method | δ1 | AbsRel | RMSE (m) |")
    print("|---|---|---:|---|---:|---:|---:|")
    for preset_name in ("defocusnet", "nyuv2"):
        preset = get_preset(preset_name)
        h, w = SIZES[preset_name]
        dr = preset.depth_range_m
        for protocol in ("paper", "realistic"):
            for n in args.stack_sizes:
                focus = focus_for(preset, n)
                options = PredictOptions(depth_range=dr)
                rows: dict[str, list[dict]] = {}
                for i in range(args.scenes):
                    seed = TEST_SEED_START + 5000 + 100 * i
                    rgb, depth = make_scene(seed, h, w, SCENE_DEPTH_RANGE_M[preset_name])
                    st = stack_from_scene(rgb, depth, focus, preset.camera, protocol, seed=seed)
                    preds = {"classical": predict_stack(ClassicalEstimator(), st, options),
                             "network": predict_stack(model, st, options)}
                    for b in refined:
                        preds[f"network+{b}"] = predict_stack(model, st, options, refine_steps=b)
                    for name, p in preds.items():
                        x0, y0, x1, y1 = p.crop_box
                        rows.setdefault(name, []).append(depth_metrics(p.depth_map, depth[0, y0:y1, x0:x1],
                                                                       depth_range_m=dr))
                for name, ms in rows.items():
                    m = {key: float(np.mean([r[key] for r in ms])) for key in ("delta1", "abs_rel", "rmse")}
                    print(f"| {preset_name} | {protocol} | {n} | {name} | {m['delta1']:.3f} | {m['abs_rel']:.3f} | "
                          f"{m['rmse']:.3f} |", flush=True)
    print(f"\n({time.time() - t0:.0f} s)")


if __name__ == "__main__":
    main()
