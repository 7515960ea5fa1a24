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
       [--robust none 0.05 0.1] [--power 1 2] [--network-weight 0.25 1] [--min-confidence 0 0.2]
       [--protocols paper realistic] [--fused-only] [--checkpoint FILE]
       [--min-texture 0 2] [--bleed none 16:0.25]   (data-weight experiments: zero weight on AIF texture under the
       value; weight × the own-texture fraction of bleed_factor)

With --protocols the same fitting frames are also rendered with the presets' protocols: the weights serve the
presets' cameras as well as random ones, so a choice is read off all sets together.
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
from bench_rgbd_split import render_split  # noqa: E402
from captures import set_isp, DEPTH_RANGE, procedural_captures, require_frames, rgbd_captures, run, working_truth  # noqa: E402

from defocus.color import to_grey  # noqa: E402
from defocus.metrics import depth_metrics  # noqa: E402
from defocus.models.classical import ClassicalEstimator  # noqa: E402
from defocus.models.factory import create_model  # noqa: E402
from defocus.predict import PredictOptions, aif_texture, solve_inverse_depth  # noqa: E402


def bleed_factor(aif, guide, radius: int, ratio: float):
    """An experiment's data-weight factor (1, 1, h, w): min(1, (own + ε) / (max within ``radius`` px + ε) / ``ratio``)
    of the grey AIF's local texture (Immerkær's response, 3 × 3 mean), ε twice the noise's response. It is low on the
    plain side of a strong edge, where a focus measure's window sees the edge (edge bleeding) rather than the pixel."""
    import torch
    import torch.nn.functional as F

    from defocus.filters import immerkaer_response
    from defocus.models.classical import estimate_noise_sigma

    resp = immerkaer_response(F.pad(guide.double(), (1, 1, 1, 1), mode="replicate"))
    own = F.avg_pool2d(F.pad(resp, (1,) * 4, mode="replicate"), 3, stride=1)
    ctx = F.max_pool2d(F.pad(own, (radius,) * 4, mode="replicate"), 2 * radius + 1, stride=1)
    eps = 2 * 6 * (2 / torch.pi) ** 0.5 * max(float(estimate_noise_sigma(aif)), 0.5 / 255)
    return ((own + eps) / (ctx + eps) / ratio).clamp(max=1.0).float()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--splits", nargs="+", default=["validation", "train"], choices=("validation", "train"))
    ap.add_argument("--per-frame", type=int, default=2)
    ap.add_argument("--procedural", type=int, default=24)
    ap.add_argument("--smoothness", type=float, nargs="+", default=[1, 3, 10, 30, 100])
    ap.add_argument("--robust", nargs="+", default=["none"])
    ap.add_argument("--power", type=float, nargs="+", default=[1.0, 2.0])
    ap.add_argument("--network-weight", type=float, nargs="+", default=[1.0],
                    help="factors of the network's data term against the classical one")
    ap.add_argument("--min-confidence", type=float, nargs="+", default=[0.0],
                    help="calibrated confidence under which a data term has no weight")
    ap.add_argument("--space", nargs="+", default=["log"], choices=("inverse", "log"),
                    help="what the solve smooths: inverse depth or log depth (defocus.predict.SOLVE_SPACE)")
    ap.add_argument("--network-full-k", type=float, nargs="+", default=[0.0],
                    help="working-size K (px/D) under which the network term is weighted by (K / this)^2; 0 = off")
    ap.add_argument("--edge-sigma", type=float, nargs="+", default=[0.05],
                    help="the solve's edge weight σ (grey levels of the AIF)")
    ap.add_argument("--smooth-full-k", type=float, nargs="+", default=[0.0],
                    help="working-size K (px/D) under which λ is multiplied by (this / K)^2; 0 = off")
    ap.add_argument("--min-texture", type=float, nargs="+", default=[0.0],
                    help="AIF texture / noise (defocus.predict.aif_texture) under which the data weight is zero")
    ap.add_argument("--bleed", nargs="+", default=["none"],
                    help="RADIUS:RATIO pairs: data weight x min(1, own texture / (max texture within RADIUS) / RATIO)")
    ap.add_argument("--protocols", nargs="*", default=[],
                    help="also the fitting frames rendered as bench_rgbd_split.py renders them (the nyuv2 lens) with "
                    "these synthesis protocols, scored as separate sets")
    ap.add_argument("--fused-only", action="store_true",
                    help="only the network + classical settings (and the two estimates themselves)")
    ap.add_argument("--checkpoint", type=Path)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--isp", action="store_true",
                    help="captures with the camera's image processing too (random_capture's isp; the shipped "
                    "choices were made without it, and refitting with it was not adopted: BENCHMARKS.md)")
    args = ap.parse_args()
    set_isp(args.isp)
    require_frames(args.threads)
    net = create_model(checkpoint=args.checkpoint) if args.checkpoint else create_model(pretrained=True)
    if getattr(net, "confidence_calibration", None) is None:
        raise SystemExit("the network has no confidence calibration: run benchmarks/fit_confidence.py first")
    options = replace(PredictOptions(depth_range=DEPTH_RANGE), solve=False)
    t0 = time.time()
    cache = []
    stacks = [("random", group, st) for split in args.splits for group, _, st in rgbd_captures(split, args.per_frame)]
    stacks += [("random", group, st) for group, _, st in procedural_captures(args.procedural)]
    stacks += [(p, e.scene_group, st) for p in args.protocols for split in args.splits for e, st in render_split(split, p)]
    classical = ClassicalEstimator()
    for kind, group, st in stacks:
        pred, _ = run(net, st, options)
        w = pred.working
        # The classical estimate at the network's working size, calibrated: the solve's optional second data term.
        cls, _ = run(classical, st, replace(options, max_size=max(pred.working_size)))
        assert cls.working_size == pred.working_size, (cls.working_size, pred.working_size)
        k_working = float(pred.camera.blur_per_dioptre(st.focus_distances_m).max()) * pred.scale
        cache.append((kind, group, k_working, w.inv_depth, w.confidence, cls.working.inv_depth, cls.working.confidence,
                      to_grey(w.aif)[:, None], working_truth(pred, st), aif_texture(w.aif), w.aif))
    print(f"{len(cache)} stacks predicted ({time.time() - t0:.0f} s)")
    robust = [None if r == "none" else float(r) for r in args.robust]
    bleeds = [None if b == "none" else (int(b.split(":")[0]), float(b.split(":")[1])) for b in args.bleed]
    # Each setting: a name and the keyword arguments of solve_inverse_depth (None = no solve: the estimate itself).
    grid: list[tuple[str, dict | None, bool]] = [("network", None, False), ("classical", None, True)]
    common = list(itertools.product(args.space, args.smoothness, args.min_confidence, args.edge_sigma,
                                    args.smooth_full_k, args.min_texture, bleeds))

    def label(space, lam, tau, sigma, ks, mt, bl) -> str:
        return (f"λ={lam:g} τ={tau:g} {space}" + (f" σ={sigma:g}" if sigma != 0.05 else "")
                + (f" λ×(K/{ks:g})^-2" if ks else "") + (f" texture≥{mt:g}" if mt else "")
                + (f" bleed r={bl[0]} ratio={bl[1]:g}" if bl else ""))

    # Each setting's kw holds smooth_full_k, min_texture and bleed too: experiments of this script only (λ × max(1,
    # it / K)², K the working size's blur per dioptre; the data-weight factors), not knobs of the pipeline.
    grid += [(f"classical {label(*c)} ρ={rho}", dict(space=c[0], smoothness=c[1], min_confidence=c[2], edge_sigma=c[3],
                                                      smooth_full_k=c[4], min_texture=c[5], bleed=c[6],
                                                      robust_scale=rho, power=2.0, network_weight=0.0), True)
             for rho in robust for c in common]
    fuses = (True,) if args.fused_only else (False, True)
    for fuse, rho, q, alpha, k0, c in itertools.product(fuses, robust, args.power, args.network_weight,
                                                          args.network_full_k, common):
        if not fuse and (alpha != args.network_weight[0] or k0):
            continue
        name = (f"{'network+classical' if fuse else 'network'} {label(*c)} ρ={rho} q={q:g} α={alpha:g}"
                + (f" K0={k0:g}" if k0 else ""))
        grid.append((name, dict(space=c[0], smoothness=c[1], min_confidence=c[2], edge_sigma=c[3], smooth_full_k=c[4],
                                min_texture=c[5], bleed=c[6], robust_scale=rho, power=q, network_weight=alpha,
                                network_full_k=k0), fuse))
    lo, hi = 1.0 / DEPTH_RANGE[1], 1.0 / DEPTH_RANGE[0]
    kinds = list(dict.fromkeys(kind for kind, *_ in cache))
    print("| setting | " + " | ".join(f"{k} δ1 | {k} AbsRel | {k} RMSE" for k in kinds) + " | s / stack |\n|---|"
          + "---:|" * (3 * len(kinds) + 1))
    for name, kw, fuse in grid:
        per_group, secs = defaultdict(list), []
        for kind, group, k_working, inv, conf, cinv, cconf, guide, gt, texture, aif in cache:
            t = time.perf_counter()
            if kw is None:
                out = cinv if fuse else inv
            else:  # as defocus.predict._solve
                args_k = {k: v for k, v in kw.items() if k not in ("smooth_full_k", "min_texture", "bleed")}
                factor = None  # the data-weight experiments (BENCHMARKS.md, "Issue 17, fifth round")
                if kw["min_texture"]:
                    factor = (texture >= kw["min_texture"]).float()
                if kw["bleed"]:
                    bleed = bleed_factor(aif, guide, *kw["bleed"])
                    factor = bleed if factor is None else factor * bleed
                args_k["weight_factor"] = factor
                if kw["smooth_full_k"]:
                    args_k["smoothness"] = kw["smoothness"] * max(1.0, kw["smooth_full_k"] / k_working) ** 2
                out = solve_inverse_depth(inv, conf, (cinv, cconf) if fuse else None, guide, inv_range=(lo, hi),
                                          blur_per_dioptre=k_working, **args_k)
            secs.append(time.perf_counter() - t)
            per_group[kind, group].append(depth_metrics(1.0 / out[0, 0], gt, depth_range_m=DEPTH_RANGE))
        cells = []
        for kind in kinds:
            groups = [ms for (kd, _), ms in per_group.items() if kd == kind]
            cells += [f"{np.mean([np.mean([m[k] for m in ms]) for ms in groups]):.3f}"
                      for k in ("delta1", "abs_rel", "rmse")]
        print(f"| {name} | " + " | ".join(cells) + f" | {np.mean(secs):.3f} |", flush=True)


if __name__ == "__main__":
    main()
