"""Network against the classical baselines on the held-out scene groups of the real RGB-D frames (issue 8).

Every frame of the chosen split (`defocus.data.rgbd_index.SPLIT`, by scene group) of ../shared/data/rgbd/INDEX.csv is
rendered at 320 x 240 with the `nyuv2` lens and the focus distances of its kind (`FOCUS_BY_KIND`: the preset's for
rooms, nearer for tabletops, farther outdoors) under both protocols, and scored (metrics per image over valid ground
truth inside the depth range 0.1-20 m). Every method runs through the pipeline of ``defocus predict``
(:func:`defocus.predict.predict_stack` with its default options: alignment where needed, the automatic working size,
guided upsampling), so the figures are those of the path users run. Results per scene group, and the mean over
scene groups (each group weighs the same, however many frames it has). In the same run: the adaptive classical
baseline (the default) and the fixed σ = 0 / σ = 1 px variants and ``classical_fill``, as per-pixel estimates, and
the adaptive baseline through the global solve (``classical+solve``); the network as ``defocus predict`` runs it
(``network``: the global solve included, issue 17) and without the solve (``network, no solve``); and the
network refined for each budget of ``--refine-steps`` (one pipeline run per budget; the forward model self-calibrated
per stack with ``--refine-psf auto``). Also the AIF PSNR against the true sharp image (does refinement degrade it?)
and the median seconds per stack of every method, as a ratio to the adaptive classical baseline.

Usage: python benchmarks/bench_rgbd_split.py [--split test] [--refine-steps 0 10 30] [--refine-psf auto]
       [--solve-smoothness 0.3 1 3] [--checkpoint FILE] [--json out.json] [--threads 2]
"""

from __future__ import annotations

import argparse
import json
import time
from collections import defaultdict
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch

from defocus.data.rgbd_index import FOCUS_BY_KIND, load_rgbd, read_index, split_of
from defocus.data.synthesis import stack_from_rgbd
from defocus.evaluate import fixed_baselines
from defocus.metrics import depth_metrics, psnr
from defocus.models.classical import ClassicalEstimator
from defocus.models.factory import create_model
from defocus.optics.camera import get_preset
from defocus.predict import PredictOptions, predict_stack

ROOT = Path(__file__).resolve().parents[1]
INDEX = ROOT.parent / "shared" / "data" / "rgbd" / "INDEX.csv"
DEPTH_RANGE = (0.1, 20.0)
KEYS = ("delta1", "abs_rel", "rmse")


def require_frames(threads: int) -> None:
    """Exits with one line where the shared RGB-D frames are absent; sets the torch thread count."""
    if not INDEX.is_file():
        raise SystemExit(f"{INDEX} is absent: this benchmark needs the shared RGB-D frames")
    torch.set_num_threads(threads)


def render_split(split: str, protocol: str):
    """(entry, stack) for every frame of ``split``: 320 x 240, the `nyuv2` lens, the focus distances of its kind."""
    cam = get_preset("nyuv2").camera
    for e in read_index(INDEX):
        if split_of(e) == split:
            rgb, depth = load_rgbd(e)
            yield e, stack_from_rgbd(rgb, depth, FOCUS_BY_KIND[e.kind], cam, protocol, size=(240, 320), name=e.id)


def _timed(fn):
    t0 = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - t0


def evaluate_frame(model, st, budgets, refine_psf, solve_smoothness=()):
    """{method: metrics} and {method: seconds} for one rendered stack, every method through the pipeline."""
    options = PredictOptions(depth_range=DEPTH_RANGE)  # defocus predict's defaults, the global solve among them
    plain = replace(options, solve=False)
    # The baselines as they were measured before the solve existed (per-pixel estimate), and the classical one
    # through the same solve as the network's.
    runs = {name: (est, plain) for name, est in {"classical": ClassicalEstimator(), **fixed_baselines()}.items()}
    runs["classical+solve"] = (ClassicalEstimator(), options)
    runs["network, no solve"] = (model, plain)
    runs["network"] = (model, options)
    for b in budgets:
        if b > 0:
            runs[f"network+{b}"] = (model, replace(options, refine_steps=b, refine_model=refine_psf))
    for lam in solve_smoothness:  # other weights of the global solve (issue 17)
        runs[f"network+solve{lam:g}"] = (model, replace(options, solve=True, solve_smoothness=lam))
    preds, secs = {}, {}
    for name, (est, opts) in runs.items():
        preds[name], secs[name] = _timed(lambda est=est, opts=opts: predict_stack(est, st, opts))
    chosen = next((p.refine_model for p in preds.values() if p.refine_model), None)
    metrics = {}
    gt = torch.from_numpy(st.gt_depth)
    for name, p in preds.items():
        x0, y0, x1, y1 = p.crop_box
        m = depth_metrics(p.depth_map, gt[y0:y1, x0:x1], depth_range_m=DEPTH_RANGE)
        m["aif_psnr"] = psnr(p.aif_image.clamp(0, 1), st.gt_aif[:, y0:y1, x0:x1])
        metrics[name] = m
    return metrics, secs, chosen


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--split", default="test", choices=("train", "validation", "test"))
    ap.add_argument("--refine-steps", type=int, nargs="+", default=[0])
    ap.add_argument("--refine-psf", default="auto", help="auto (self-calibrated per stack), disk or gaussian")
    ap.add_argument("--checkpoint", type=Path, help="weights to evaluate (default: the shipped ones)")
    ap.add_argument("--protocols", nargs="+", default=["paper", "realistic"])
    ap.add_argument("--solve-smoothness", type=float, nargs="*", default=[],
                    help="also the network followed by the global edge-aware solve with each of these λ")
    ap.add_argument("--json", type=Path, help="also write every number to this file")
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    require_frames(args.threads)
    model = create_model(checkpoint=args.checkpoint) if args.checkpoint else create_model(pretrained=True)
    entries = [e for e in read_index(INDEX) if split_of(e) == args.split]
    t0 = time.time()
    out: dict = {"split": args.split, "checkpoint": str(args.checkpoint or "shipped"), "protocols": {}}
    for protocol in args.protocols:
        per_group: dict[str, list[dict]] = defaultdict(list)
        seconds: dict[str, list[float]] = defaultdict(list)
        chosen = []
        for e, st in render_split(args.split, protocol):
            metrics, secs, physics = evaluate_frame(model, st, args.refine_steps, args.refine_psf,
                                                    args.solve_smoothness)
            per_group[e.scene_group].append(metrics)
            for name, s in secs.items():
                seconds[name].append(s)
            if physics:
                chosen.append(f"{physics['psf']}/{physics['light']}/{physics['blur_scale']}")
        methods = list(next(iter(per_group.values()))[0])
        print(f"\n### {args.split} split, {protocol} protocol ({len(entries)} frames, {len(per_group)} scene groups)\n")
        print("| scene group | frames | " + " | ".join(f"{m} δ1 / AbsRel / RMSE" for m in methods) + " |")
        print("|---|---:|" + "---|" * len(methods))
        means = {m: {k: [] for k in (*KEYS, "aif_psnr")} for m in methods}
        for group, rows in per_group.items():
            cells = []
            for m in methods:
                vals = {k: float(np.mean([r[m][k] for r in rows])) for k in (*KEYS, "aif_psnr")}
                for k in vals:
                    means[m][k].append(vals[k])
                cells.append(f"{vals['delta1']:.3f} / {vals['abs_rel']:.3f} / {vals['rmse']:.3f}")
            print(f"| {group} | {len(rows)} | " + " | ".join(cells) + " |")
        summary = {m: {k: float(np.mean(v)) for k, v in means[m].items()} for m in methods}
        cells = [" / ".join(f"{summary[m][k]:.3f}" for k in KEYS) for m in methods]
        print("| **mean over scene groups** | | " + " | ".join(f"**{c}**" for c in cells) + " |")
        base = float(np.median(seconds["classical"]))
        print("\n| method | δ1 | AbsRel | RMSE | AIF PSNR (dB) | median s / stack | × classical |")
        print("|---|---:|---:|---:|---:|---:|---:|")
        for m in methods:
            med = float(np.median(seconds[m]))
            s = summary[m]
            summary[m]["seconds"] = med
            print(f"| {m} | {s['delta1']:.3f} | {s['abs_rel']:.3f} | {s['rmse']:.3f} | {s['aif_psnr']:.2f} | "
                  f"{med:.3f} | {med / base:.1f} |")
        if chosen:
            counts = {c: chosen.count(c) for c in sorted(set(chosen))}
            print(f"\nself-calibrated forward models: {counts}")
        out["protocols"][protocol] = {"mean_over_groups": summary, "calibrated": chosen,
                                      "per_group": {g: rows for g, rows in per_group.items()}}
    print(f"\n({time.time() - t0:.0f} s)")
    if args.json:
        args.json.write_text(json.dumps(out, indent=1, default=float))


if __name__ == "__main__":
    main()
