"""Unseen cameras: the RGB-D frames of a split rendered through the randomised camera protocol (issue 17).

Every frame of the split (by scene group) of ../shared/data/rgbd/INDEX.csv, at 320 x 240, goes through --per-frame
random captures (defocus.data.captures: its own camera with K 4-60 px/D, 2-10 frames in random file order, any
registered PSF or signed spherical aberration, chromatic aberration, tone curve, vignetting, per-frame exposure,
noise, JPEG, and half the time the camera's image processing: denoise and sharpening; --no-isp leaves that out, the
protocol of the figures recorded before it was added). Every method runs through defocus predict's pipeline (exposure normalisation, automatic working size,
calibrated confidence): the adaptive classical baseline, the network alone, the network + the global solve for
the default smoothness and each other --solve-smoothness, and the network refined then solved (--refine-steps,
forward model self-calibrated with auto); the classical baseline alone and through the same solve (the strongest
honest baseline; --no-classical-solve skips it). Reports
δ1 / AbsRel / RMSE as the mean over scene groups, the same split by frame count and by blur per dioptre, and the
reliability of the network's calibrated confidence and of the default path's written confidence (the solved depth's,
defocus.predict.SOLVED_CALIBRATION): mean predicted probability of being within 10 % against the observed fraction,
per confidence bin.

Usage: python benchmarks/bench_randomised.py [--split test] [--per-frame 2] [--solve-smoothness 3 10]
       [--refine-steps 30] [--checkpoint FILE] [--json out.json] [--threads 2] [--no-isp]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections import defaultdict
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from captures import set_isp, DEPTH_RANGE, KEYS, group_means, require_frames, rgbd_captures, run, score, working_truth  # noqa

from defocus.confidence import reliability  # noqa: E402
from defocus.models.classical import ClassicalEstimator  # noqa: E402
from defocus.models.factory import create_model  # noqa: E402
from defocus.predict import PredictOptions  # noqa: E402


def _fmt(m: dict) -> str:
    return " / ".join(f"{m[k]:.3f}" for k in KEYS)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--split", default="test", choices=("train", "validation", "test"))
    ap.add_argument("--per-frame", type=int, default=2)
    ap.add_argument("--solve-smoothness", type=float, nargs="*", default=[])
    ap.add_argument("--refine-steps", type=int, nargs="*", default=[30])
    ap.add_argument("--checkpoint", type=Path, help="the network's weights (default: the shipped ones)")
    ap.add_argument("--baseline-checkpoint", type=Path, help="also another network (e.g. the previous weights)")
    ap.add_argument("--no-classical-solve", action="store_true", help="skip the classical baseline + the solve")
    ap.add_argument("--json", type=Path)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--no-isp", action="store_true",
                    help="captures without the camera's image processing (the protocol before it was added)")
    args = ap.parse_args()
    set_isp(not args.no_isp)
    require_frames(args.threads)
    net = create_model(checkpoint=args.checkpoint) if args.checkpoint else create_model(pretrained=True)
    base = PredictOptions(depth_range=DEPTH_RANGE)  # defocus predict's defaults (the solve among them)
    classical = ClassicalEstimator()
    runs = {"classical": (classical, replace(base, solve=False))}
    if not args.no_classical_solve:  # the strongest honest baseline: the classical estimate through the same solve
        runs["classical+solve"] = (classical, replace(base, solve=True))
    runs["network"] = (net, replace(base, solve=False))
    if args.baseline_checkpoint:
        other = create_model(checkpoint=args.baseline_checkpoint)
        if getattr(other, "confidence_calibration", None) is None:
            other.confidence_calibration = getattr(net, "confidence_calibration", None)
        runs["baseline network"] = (other, replace(base, solve=False))
    runs[f"network+solve (default, λ={base.solve_smoothness:g})"] = (net, replace(base, solve=True))  # default_name
    if base.solve_classical:  # the ablation: the solve with the network's data term alone
        runs["network+solve, network term only"] = (net, replace(base, solve=True, solve_classical=False))
    for lam in args.solve_smoothness:
        if lam != base.solve_smoothness:
            runs[f"network+solve λ={lam:g}"] = (net, replace(base, solve=True, solve_smoothness=lam))
    for b in args.refine_steps:
        if b > 0:
            runs[f"network+solve+refine{b}"] = (net, replace(base, solve=True, refine_steps=b))
    per_group: dict[str, list[dict]] = defaultdict(list)
    by_frames: dict[str, list[dict]] = defaultdict(list)
    by_k: dict[str, list[dict]] = defaultdict(list)
    seconds: dict[str, list[float]] = defaultdict(list)
    probs, rights, chosen = [], [], []
    default_name = f"network+solve (default, λ={base.solve_smoothness:g})"
    solved_probs, solved_rights = [], []
    t0 = time.time()
    count = 0
    for group, cap, st in rgbd_captures(args.split, args.per_frame):
        row = {}
        for name, (model, opts) in runs.items():
            pred, secs = run(model, st, opts)
            row[name] = score(pred, st)
            seconds[name].append(secs)
            if name in ("network", default_name):
                gt = working_truth(pred, st)
                valid = gt > 0
                inv = pred.working.inv_depth[0, 0]
                (probs if name == "network" else solved_probs).append(pred.working.confidence[0, 0][valid])
                (rights if name == "network" else solved_rights).append(((1.0 / inv - gt).abs() <= 0.1 * gt)[valid])
            if pred.refine_model:
                chosen.append(pred.refine_model["psf"])
        per_group[group].append(row)
        n = len(cap.focus_m)
        by_frames["2-3" if n <= 3 else "4-6" if n <= 6 else "7-10"].append(row)
        k = cap.blur_per_dioptre
        by_k["K < 10" if k < 10 else "K 10-25" if k < 25 else "K >= 25"].append(row)
        count += 1
        print(f"{st.name}: N={n} K={k:.1f} {cap.variant.forward.psf}/{cap.variant.near_psf} "
              + " ".join(f"{m}={r['delta1']:.3f}" for m, r in row.items()), flush=True)
    means = group_means(per_group)
    methods = list(runs)
    print(f"\n### {args.split} split, randomised cameras ({count} stacks, {len(per_group)} scene groups)\n")
    print("| method | δ1 | AbsRel | RMSE | median s / stack |")
    print("|---|---:|---:|---:|---:|")
    for m in methods:
        s = means[m]
        print(f"| {m} | {s['delta1']:.3f} | {s['abs_rel']:.3f} | {s['rmse']:.3f} | {np.median(seconds[m]):.2f} |")
    for title, split in (("frames", by_frames), ("blur per dioptre", by_k)):
        print(f"\n| {title} | stacks | " + " | ".join(f"{m} δ1 / AbsRel / RMSE" for m in methods) + " |")
        print("|---|---:|" + "---|" * len(methods))
        for key in sorted(split):
            rows = split[key]
            cells = [_fmt({k: float(np.mean([r[m][k] for r in rows])) for k in KEYS}) for m in methods]
            print(f"| {key} | {len(rows)} | " + " | ".join(cells) + " |")
    curve = reliability(torch.cat(probs), torch.cat(rights))
    solved_curve = reliability(torch.cat(solved_probs), torch.cat(solved_rights)) if solved_probs else []
    for title, rows in (("network's calibrated confidence (no solve)", curve),
                        ("the default path's written confidence (the solved depth's)", solved_curve)):
        if not rows:
            continue
        print(f"\n{title} against its error (working size, pixels with ground truth):\n")
        print("| confidence | mean predicted P(within 10 %) | observed fraction within 10 % | pixels |")
        print("|---|---:|---:|---:|")
        for r in rows:
            print(f"| {r['bin']} | {r['predicted']:.3f} | {r['observed']:.3f} | {r['pixels']} |")
    if chosen:
        print(f"\nself-calibrated PSFs: { {c: chosen.count(c) for c in sorted(set(chosen))} }")
    print(f"\n({time.time() - t0:.0f} s)")
    if args.json:
        args.json.write_text(json.dumps({"split": args.split, "per_frame": args.per_frame, "mean_over_groups": means,
                                         "reliability": curve, "reliability_default": solved_curve,
                                         "per_group": per_group}, indent=1, default=float))


if __name__ == "__main__":
    main()
