"""Fits the packaged confidence calibrations (defocus.confidence) of the shipped network and the classical baseline.

Fitting data, never the test scene groups: the validation scene groups of ../shared/data/rgbd/INDEX.csv, each frame
through --per-frame random captures of the randomised camera protocol (defocus.data.captures), and --procedural
procedural validation scenes with one random capture each, all at 320 x 240, through defocus predict's pipeline
with the raw confidence. Writes src/defocus/models/weights/confidence.json (one entry per model) and prints the
reliability of the fitted calibration on its own fitting data (the test-split curve is bench_randomised.py's).

--solved fits only the solved depth's calibration (entry "solve", defocus.predict.SOLVED_CALIBRATION) on the default
path's output (the network + the classical term through the global solve, with the packaged per-model calibrations):
its raw feature is the solve's evidence support (defocus.predict.solve_support), the other entries stay as they are.

Usage: python benchmarks/fit_confidence.py [--per-frame 12] [--procedural 40] [--checkpoint FILE] [--solved]
       [--dry-run] [--isp]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from captures import set_isp, DEPTH_RANGE, procedural_captures, require_frames, rgbd_captures, run, working_truth  # noqa: E402

from defocus.confidence import fit_calibration, reliability  # noqa: E402
from defocus.models.checkpoint import CALIBRATION_FILE  # noqa: E402
from defocus.models.classical import ClassicalEstimator  # noqa: E402
from defocus.models.factory import create_model  # noqa: E402
from defocus.predict import SOLVED_CALIBRATION, PredictOptions, aif_texture  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--per-frame", type=int, default=12)
    ap.add_argument("--procedural", type=int, default=40)
    ap.add_argument("--checkpoint", type=Path, help="the network's weights (default: the shipped ones)")
    ap.add_argument("--solved", action="store_true", help="fit only the solved depth's calibration")
    ap.add_argument("--dry-run", action="store_true", help="print, write nothing")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--isp", action="store_true",
                    help="captures with the camera's image processing too (random_capture's isp; the shipped "
                    "choices were made without it, and refitting with it was not adopted: BENCHMARKS.md)")
    args = ap.parse_args()
    set_isp(args.isp)
    require_frames(args.threads)
    network = create_model(checkpoint=args.checkpoint) if args.checkpoint else create_model(pretrained=True)
    name = network.checkpoint_metadata.get("model_name", "daifnet_small")
    models = {name: network, "classical": ClassicalEstimator()}
    options = PredictOptions(depth_range=DEPTH_RANGE, confidence="raw", solve=False)  # calibrated before any solve
    if args.solved:
        models = {SOLVED_CALIBRATION: network}
        options = PredictOptions(depth_range=DEPTH_RANGE)  # the default path
    data: dict[str, dict[str, list]] = {m: {"conf": [], "inv": [], "tex": [], "gt": []} for m in models}
    t0 = time.time()
    stacks = list(rgbd_captures("validation", args.per_frame)) + list(procedural_captures(args.procedural))
    for _, _, st in stacks:
        for m, model in models.items():
            pred, _ = run(model, st, options)
            data[m]["conf"].append(pred.solve_support if args.solved else pred.working.confidence)
            data[m]["inv"].append(pred.working.inv_depth)
            data[m]["tex"].append(aif_texture(pred.working.aif))
            data[m]["gt"].append(working_truth(pred, st))
    print(f"{len(stacks)} stacks predicted ({time.time() - t0:.0f} s)")
    existing = json.loads(CALIBRATION_FILE.read_text()) if CALIBRATION_FILE.is_file() else {}
    source = (f"validation scene groups x {args.per_frame} random captures + {args.procedural} procedural validation "
              "scenes, 320x240, benchmarks/fit_confidence.py" + (" --solved (the default path's solved depth, raw "
              "feature: the solve's support)" if args.solved else ""))
    for m in models:
        d = data[m]
        cal = fit_calibration(d["conf"], d["inv"], d["tex"], d["gt"], source=source)
        probs, rights = [], []
        for conf, inv, tex, gt in zip(d["conf"], d["inv"], d["tex"], d["gt"]):
            valid = gt > 0
            probs.append(cal(conf, inv, tex)[0, 0][valid])
            rights.append(((1.0 / inv[0, 0] - gt).abs() <= 0.1 * gt)[valid])
        print(f"\n{m}: fitted reliability (predicted / observed / pixels)")
        for row in reliability(torch.cat(probs), torch.cat(rights)):
            print(f"  {row['bin']}: {row['predicted']:.3f} / {row['observed']:.3f} / {row['pixels']}")
        existing[m] = cal.to_dict()
    if not args.dry_run:
        CALIBRATION_FILE.write_text(json.dumps(existing, indent=1) + "\n")
        print(f"\nwritten to {CALIBRATION_FILE}")


if __name__ == "__main__":
    main()
