"""Chooses the global solve's weights on fitting data (issue 17): never the test scene groups, never the real photos.

The scene groups of --splits (default: validation and train; the training frames' depth never reached the
self-supervised loss, and the validation split alone holds two frames) of ../shared/data/rgbd/INDEX.csv through
--per-frame random captures of the randomised camera protocol, plus --procedural procedural validation scenes with one capture each (320 x 240), are predicted
once through defocus predict's pipeline with the solve off (calibrated confidence, working size), and so is the
classical estimate at the same working size; then every (second data term or not, smoothness λ, robust scale ρ,
data-weight power q) of the grid is applied to those working-size predictions as the pipeline applies it
(defocus.predict._solve: data weight = calibrated confidence ** q, the classical estimate with its own as the second
term, the grey AIF as guide) and
scored against the ground truth at the working size: δ1 / AbsRel / RMSE, means over scene groups (the procedural
scenes one group). The pipeline's defaults are chosen from this table; the test-split figures are
bench_randomised.py's, through the whole pipeline.

Usage: python benchmarks/choose_solve.py [--splits validation train] [--per-frame 2] [--procedural 24] [--smoothness 1 3 10 30 100]
       [--robust none 0.05 0.1] [--power 1 2] [--checkpoint FILE]
"""

from __future__ import annotations

import argparse
import itertools
import sys
import time
from collections import defaultdict
from dataclasses import replace
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from captures import DEPTH_RANGE, procedural_captures, require_frames, rgbd_captures, run, working_truth  # noqa: E402

from defocus.color import to_grey  # noqa: E402
from defocus.metrics import depth_metrics  # noqa: E402
from defocus.models.classical import ClassicalEstimator  # noqa: E402
from defocus.models.factory import create_model  # noqa: E402
from defocus.predict import PredictOptions  # noqa: E402
from defocus.solve import edge_aware_solve  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--splits", nargs="+", default=["validation", "train"], choices=("validation", "train"))
    ap.add_argument("--per-frame", type=int, default=2)
    ap.add_argument("--procedural", type=int, default=24)
    ap.add_argument("--smoothness", type=float, nargs="+", default=[1, 3, 10, 30, 100])
    ap.add_argument("--robust", nargs="+", default=["none"])
    ap.add_argument("--power", type=float, nargs="+", default=[1.0, 2.0])
    ap.add_argument("--checkpoint", type=Path)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    require_frames(args.threads)
    net = create_model(checkpoint=args.checkpoint) if args.checkpoint else create_model(pretrained=True)
    if getattr(net, "confidence_calibration", None) is None:
        raise SystemExit("the network has no confidence calibration: run benchmarks/fit_confidence.py first")
    options = replace(PredictOptions(depth_range=DEPTH_RANGE), solve=False)
    t0 = time.time()
    cache = []
    stacks = [c for split in args.splits for c in rgbd_captures(split, args.per_frame)]
    stacks += list(procedural_captures(args.procedural))
    classical = ClassicalEstimator()
    for group, _, st in stacks:
        pred, _ = run(net, st, options)
        w = pred.working
        # The classical estimate at the network's working size, calibrated: the solve's optional second data term.
        cls, _ = run(classical, st, replace(options, max_size=max(pred.working_size)))
        assert cls.working_size == pred.working_size, (cls.working_size, pred.working_size)
        cache.append((group, w.inv_depth, w.confidence, cls.working.inv_depth, cls.working.confidence,
                      to_grey(w.aif)[:, None], working_truth(pred, st)))
    print(f"{len(cache)} stacks predicted ({time.time() - t0:.0f} s)")
    robust = [None if r == "none" else float(r) for r in args.robust]
    grid = [("network", None, None, None, False), ("classical", None, None, None, True)]
    grid += [(f"{'network+classical' if fuse else 'network'} λ={lam:g} ρ={rho} q={q:g}", lam, rho, q, fuse)
             for fuse, lam, rho, q in itertools.product((False, True), args.smoothness, robust, args.power)]
    lo, hi = 1.0 / DEPTH_RANGE[1], 1.0 / DEPTH_RANGE[0]
    print("| setting | δ1 | AbsRel | RMSE | s / stack |\n|---|---:|---:|---:|---:|")
    for name, lam, rho, q, fuse in grid:
        per_group, secs = defaultdict(list), []
        for group, inv, conf, cinv, cconf, guide, gt in cache:
            t = time.perf_counter()
            if lam is None:
                out = cinv if fuse else inv
            else:  # as defocus.predict._solve
                weight, target = conf.pow(q), inv
                if fuse:
                    total = weight + cconf.pow(q)
                    target = (weight * inv + cconf.pow(q) * cinv) / total.clamp_min(1e-12)
                    weight = total
                out = edge_aware_solve(target, weight, guide, smoothness=lam, robust_scale=rho).clamp(lo, hi)
            secs.append(time.perf_counter() - t)
            per_group[group].append(depth_metrics(1.0 / out[0, 0], gt, depth_range_m=DEPTH_RANGE))
        means = {k: float(np.mean([np.mean([m[k] for m in ms]) for ms in per_group.values()]))
                 for k in ("delta1", "abs_rel", "rmse")}
        print(f"| {name} | {means['delta1']:.3f} | {means['abs_rel']:.3f} | {means['rmse']:.3f} | "
              f"{np.mean(secs):.3f} |", flush=True)


if __name__ == "__main__":
    main()
