"""Accuracy of the network against the classical baseline on the issue-3 test stacks.

Test stacks (none used for training):
* the real RGB-D frames of ../shared/data/rgbd (NYU #0045 and the 5 PrimeSense frames) rendered at 320x240 with the
  `nyuv2` preset under both protocols (skipped with a message where ../shared is absent);
* procedural test scenes (seeds >= 1 000 000) for both presets and both protocols, at the presets' image sizes.

Usage:
    python benchmarks/bench_accuracy.py [--checkpoint W] [--refine-steps 0 30] [--procedural 4] [--out DIR]

Prints one markdown table per group (network and classical in the same run) and writes them to
benchmarks/results/accuracy.md. The stacks are written under --out (default benchmarks/results/test_stacks) and can
be evaluated again with `defocus evaluate DIR/<group>/*`.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch

from defocus.cli import main as cli_main
from defocus.demo import make_test_stack
from defocus.data.folders import write_stack
from defocus.evaluate import evaluate_stack, format_table, summarize
from defocus.data.folders import read_stack
from defocus.models.factory import create_model

ROOT = Path(__file__).resolve().parents[1]
RGBD = ROOT.parent / "shared" / "data" / "rgbd"
PAPER = {"paper": "δ1 0.950, RMSE 0.325, AbsRel 0.170 (NYUv2, paper protocol, paper's own numbers)"}


def real_frames() -> list[tuple[str, Path, Path, float]]:
    frames = []
    nyu = RGBD / "nyuv2_labeled_0045_hollyjackson"
    if nyu.is_dir():
        frames.append(("nyu0045", nyu / "rgb_0045.png", nyu / "depth_0045_0.1mm.png", 1e-4))
    ps = RGBD / "open3d_testdata_rgbd" / "RGBD"
    for i in range(5):
        c, d = ps / "color" / f"{i:05d}.jpg", ps / "depth" / f"{i:05d}.png"
        if c.is_file() and d.is_file():
            frames.append((f"primesense{i}", c, d, 1e-3))
    return frames


def make_stacks(out: Path, n_procedural: int) -> dict[str, list[Path]]:
    groups: dict[str, list[Path]] = {}
    for protocol in ("paper", "realistic"):
        key = f"real-rgbd/nyuv2/{protocol}"
        for name, rgb, depth, scale in real_frames():
            folder = out / key.replace("/", "_") / name
            if not (folder / "stack.json").is_file():
                rc = cli_main(["render", "--rgb", str(rgb), "--depth", str(depth), "--depth-scale", str(scale),
                               "--preset", "nyuv2", "--protocol", protocol, "-o", str(folder)])
                if rc != 0:
                    raise SystemExit(f"render failed for {name}")
            groups.setdefault(key, []).append(folder)
    for preset in ("nyuv2", "defocusnet"):
        for protocol in ("paper", "realistic"):
            key = f"procedural/{preset}/{protocol}"
            for i in range(n_procedural):
                st = make_test_stack(preset, protocol, i)
                folder = out / key.replace("/", "_") / st.name
                if not (folder / "stack.json").is_file():
                    write_stack(st, folder)
                groups.setdefault(key, []).append(folder)
    return groups


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--checkpoint", type=Path)
    ap.add_argument("--refine-steps", type=int, nargs="+", default=[0])
    ap.add_argument("--procedural", type=int, default=4, help="procedural test stacks per (preset, protocol)")
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "test_stacks")
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    if not RGBD.is_dir():
        print(f"note: {RGBD} is absent: real RGB-D test stacks skipped")
    model = create_model(checkpoint=args.checkpoint) if args.checkpoint else create_model(pretrained=True)
    groups = make_stacks(args.out, args.procedural)
    lines = [f"checkpoint: {args.checkpoint or 'shipped weights'}", ""]
    for steps in args.refine_steps:
        for key, folders in groups.items():
            t0 = time.time()
            results = [evaluate_stack(model, read_stack(f), refine_steps=steps) for f in folders]
            mean = summarize(results)
            head = f"### {key}, refine-steps {steps} ({len(results)} stacks, {time.time() - t0:.1f} s)"
            print(head)
            table = format_table(results, markdown=True)
            print(table)
            n, c = mean["network"], mean["classical"]
            verdict = all([n["abs_rel"] < c["abs_rel"], n["rmse"] < c["rmse"], n["delta1"] > c["delta1"]])
            summary = (f"mean network: δ1 {n['delta1']:.3f}, AbsRel {n['abs_rel']:.3f}, RMSE {n['rmse']:.3f} | "
                       f"classical: δ1 {c['delta1']:.3f}, AbsRel {c['abs_rel']:.3f}, RMSE {c['rmse']:.3f} | "
                       f"network beats classical on all three: {verdict}")
            print(summary, "\n")
            lines += [head, "", summary, "", table, ""]
    res = ROOT / "benchmarks" / "results"
    res.mkdir(parents=True, exist_ok=True)
    (res / "accuracy.md").write_text("\n".join(lines))
    print(f"written to {res / 'accuracy.md'}")


if __name__ == "__main__":
    main()
