"""Training throughput (stacks per second) with 1, 2, ... torchrun processes, in one run.

Each configuration trains the release model (crop size, batch and loss of ``configs/release.yaml``) under
``torchrun --standalone --nproc_per_node=K`` on fewer scenes (rendering is not what is measured) and reads
``metrics.csv``: throughput = global batch x steps of epochs 2.. / their training seconds (epoch 1 is warm-up;
rendering and validation are not counted). Every configuration draws the same samples (``data.shards`` is fixed to
the largest process count), so they do the same work. On a CPU the cores are shared: one process uses all of them
as threads, K processes 1/K each.

    .venv/bin/python benchmarks/bench_train_throughput.py --nproc 1 2            # gloo on this machine
    python3 benchmarks/bench_train_throughput.py --nproc 1 --device cuda --batch 8 64   # a GPU (nccl)
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def run_one(out: Path, nproc: int, shards: int, batch: int, args: argparse.Namespace) -> dict:
    name = f"n{nproc}_b{batch}"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}",
           "-m", "defocus", "train", "--config", "release", "--quiet",
           f"out_dir={out}", f"name={name}", "num_threads=0", f"device={args.device}",
           f"data.shards={shards}", f"data.scenes_per_group={args.scenes}", "data.forward_variants=0",
           "data.rgbd_index=''", "val_scenes=0", f"optim.epochs={args.epochs}",
           f"optim.steps_per_epoch={args.steps}", f"optim.batch_size={batch}"]
    env = dict(os.environ)
    src = Path(__file__).resolve().parents[1] / "src"
    env["PYTHONPATH"] = f"{src}{os.pathsep}{env['PYTHONPATH']}" if env.get("PYTHONPATH") else str(src)
    t0 = time.time()
    done = subprocess.run(cmd, env=env, capture_output=True, text=True)
    wall = time.time() - t0
    if done.returncode != 0:
        lines = [ln for ln in done.stderr.splitlines() if "error" in ln.lower()][:5]
        raise SystemExit(f"{name} failed (rc {done.returncode}):\n" + "\n".join(lines or done.stderr.splitlines()[-20:]))
    with (out / name / "metrics.csv").open() as f:
        rows = list(csv.DictReader(f))
    secs = float(rows[-1]["seconds"]) - float(rows[0]["seconds"])
    steps = int(rows[-1]["step"]) - int(rows[0]["step"])
    return {"nproc": nproc, "batch": batch, "device": args.device, "steps": steps, "seconds": round(secs, 2),
            "stacks_per_s": round(batch * steps / secs, 2), "wall_s": round(wall, 1),
            "loss_last": float(rows[-1]["loss"])}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--nproc", type=int, nargs="+", default=[1, 2])
    ap.add_argument("--batch", type=int, nargs="+", default=[8], help="global batch sizes")
    ap.add_argument("--device", default="cpu", help="cpu (gloo) or cuda (nccl)")
    ap.add_argument("--epochs", type=int, default=3)
    ap.add_argument("--steps", type=int, default=10, help="steps per epoch")
    ap.add_argument("--scenes", type=int, default=8, help="procedural scenes per group")
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()
    shards = max(args.nproc)
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        for batch in args.batch:
            for nproc in args.nproc:
                r = run_one(Path(tmp), nproc, shards, batch, args)
                results.append(r)
                print(json.dumps(r), flush=True)
    base = {r["batch"]: r["stacks_per_s"] for r in results if r["nproc"] == args.nproc[0]}
    print(f"\n| processes | device | global batch | stacks/s | ratio to {args.nproc[0]} process(es) |")
    print("|---|---|---|---|---|")
    for r in results:
        print(f"| {r['nproc']} | {r['device']} | {r['batch']} | {r['stacks_per_s']:.2f} | "
              f"{r['stacks_per_s'] / base[r['batch']]:.2f} |")
    if args.json:
        args.json.write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
