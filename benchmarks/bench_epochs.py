"""Accuracy per epoch of a training run on the real RGB-D frames: the time-to-accuracy curve on unseen scenes.

Scores every ``epochs/epoch-NNN.safetensors`` of a run trained with ``save_epoch_weights=true`` (network alone, the
model config saved in each checkpoint, cue fill included) on the validation and test scene groups of
../shared/data/rgbd/INDEX.csv, rendered as in ``bench_rgbd_split.py`` (320 x 240, `nyuv2` lens, focus by kind,
both protocols); means over scene groups. The procedural validation column of ``metrics.csv`` flattens after a few
epochs; this is what the real frames say. Optionally a plot (needs matplotlib: ``pip install -e ".[plot]"``) with
the x axis in training minutes from ``metrics.csv``.

Usage: python benchmarks/bench_epochs.py RUN_DIR [RUN_DIR ...] [--plot docs/release_epochs.png] [--json F]
       [--threads 2]
"""

from __future__ import annotations

import argparse
import csv
import json
import re
from collections import defaultdict
from pathlib import Path

import numpy as np
import torch

from bench_rgbd_split import DEPTH_RANGE, KEYS, render_split, require_frames
from defocus.metrics import depth_metrics
from defocus.models.factory import create_model
from defocus.predict import predict_stack

SPLITS = ("validation", "test")
PROTOCOLS = ("paper", "realistic")


def score(model, stacks) -> dict[str, dict[str, float]]:
    """{protocol: {delta1, abs_rel, rmse}} means over scene groups, for stacks [(group, protocol, stack)]."""
    per: dict[str, dict[str, list]] = {p: defaultdict(list) for p in PROTOCOLS}
    for group, protocol, st in stacks:
        pred = predict_stack(model, st, depth_range=DEPTH_RANGE)  # the pipeline of `defocus predict`
        x0, y0, x1, y1 = pred.crop_box
        m = depth_metrics(pred.depth_map, torch.from_numpy(st.gt_depth)[y0:y1, x0:x1], depth_range_m=DEPTH_RANGE)
        per[protocol][group].append([m[k] for k in KEYS])
    return {p: dict(zip(KEYS, np.mean([np.mean(v, 0) for v in g.values()], 0).tolist())) for p, g in per.items()}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("run_dirs", type=Path, nargs="+")
    ap.add_argument("--plot", type=Path, help="write the curves to this PNG")
    ap.add_argument("--json", type=Path, help="also write every number to this file")
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    require_frames(args.threads)
    for run in args.run_dirs:  # before the minute of rendering
        if not any((run / "epochs").glob("epoch-*.safetensors")):
            raise SystemExit(f"{run}/epochs holds no epoch-NNN.safetensors: train with save_epoch_weights=true")
    stacks = {s: [(e.scene_group, p, st) for p in PROTOCOLS for e, st in render_split(s, p)] for s in SPLITS}
    results: dict[str, list[dict]] = {}
    for run in args.run_dirs:
        files = sorted((run / "epochs").glob("epoch-*.safetensors"))
        seconds = {}
        if (run / "metrics.csv").is_file():
            seconds = {int(r["epoch"]): float(r["seconds"]) for r in csv.DictReader((run / "metrics.csv").open())}
        rows = []
        print(f"\n### {run.name}: network alone, mean over scene groups, δ1 / AbsRel / RMSE (m)\n")
        print("| epoch | minutes | " + " | ".join(f"{s} {p}" for s in SPLITS for p in PROTOCOLS) + " |")
        print("|---:|---:|" + "---|" * (len(SPLITS) * len(PROTOCOLS)))
        for f in files:
            epoch = int(re.findall(r"\d+", f.stem)[0])
            model = create_model(checkpoint=f)
            row = {"epoch": epoch, "minutes": seconds.get(epoch, float("nan")) / 60,
                   **{s: score(model, stacks[s]) for s in SPLITS}}
            rows.append(row)
            cells = [" / ".join(f"{row[s][p][k]:.3f}" for k in KEYS) for s in SPLITS for p in PROTOCOLS]
            print(f"| {epoch} | {row['minutes']:.0f} | " + " | ".join(cells) + " |", flush=True)
        results[run.name] = rows
    if args.json:
        args.json.write_text(json.dumps(results, indent=1))
    if args.plot:
        _plot(results, args.plot)


def _plot(results: dict[str, list[dict]], path: Path) -> None:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        raise SystemExit('--plot needs matplotlib: pip install -e ".[plot]"') from None
    fig, axes = plt.subplots(2, 2, figsize=(10, 6.4), dpi=100, sharex=True)
    for col, key in enumerate(("delta1", "abs_rel")):
        for row, split in enumerate(SPLITS):
            ax = axes[row, col]
            for name, rows in results.items():
                x = [r["minutes"] if np.isfinite(r["minutes"]) else r["epoch"] for r in rows]
                for protocol, style in zip(PROTOCOLS, ("-", "--")):
                    ax.plot(x, [r[split][protocol][key] for r in rows], style, marker="o", ms=3,
                            label=f"{name} {protocol}")
            ax.set_title(f"{split} frames: {'δ1' if key == 'delta1' else 'AbsRel'} (network alone)")
            ax.grid(alpha=0.3)
            if row == 1:
                ax.set_xlabel("training time (minutes, 2-core CPU)")
    axes[0, 0].legend(fontsize=7)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    print(f"written {path}")


if __name__ == "__main__":
    main()
