"""Peak memory of `defocus predict` and `defocus evaluate` over many stack folders in one run (issue 9).

Renders ``max(--counts)`` tiny procedural stacks (nyuv2 camera, 5 images, ``--size`` H W) into a temporary folder
(removed at the end unless ``--keep``), then for each count runs ``defocus predict`` and ``defocus evaluate`` on
the first ``count`` stacks, each in its own subprocess, and reads that process's peak resident memory
(``ru_maxrss`` of ``os.wait4``). A run that streams (read one stack, predict, write, drop) has the same peak at
20 and at 200 stacks; a run that keeps something per stack grows with the count.

Usage: python benchmarks/bench_batch_memory.py [--counts 20 200] [--size 48 64] [--threads 1] [--keep DIR]
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CLI = "import sys; from defocus.cli import main; sys.exit(main())"


def make_stacks(folder: Path, count: int, size: tuple[int, int]) -> list[Path]:
    from defocus.data.folders import write_stack
    from defocus.data.procedural import make_scene, scene_depth_range
    from defocus.data.synthesis import stack_from_scene
    from defocus.optics.camera import get_preset

    preset = get_preset("nyuv2")
    focus = list(preset.focus_distances_m)
    rng = scene_depth_range("nyuv2", focus, preset.camera.focal_length_m)
    out = []
    for i in range(count):
        rgb, depth = make_scene(i, size[0], size[1], rng)
        stack = stack_from_scene(rgb, depth, focus, preset.camera, "paper", name=f"s{i:04d}")
        write_stack(stack, folder / f"s{i:04d}")
        out.append(folder / f"s{i:04d}")
    return out


def run_measured(args: list[str], threads: int) -> tuple[int, float, float]:
    """(exit status, peak RSS in MiB, seconds) of ``defocus ARGS`` in a fresh subprocess."""
    env = dict(os.environ, OMP_NUM_THREADS=str(threads))
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT / "src"), env.get("PYTHONPATH")]))
    t = time.perf_counter()
    with open(os.devnull, "wb") as null:
        proc = subprocess.Popen([sys.executable, "-c", CLI, *args], stdout=null, stderr=null, env=env)
        _, status, usage = os.wait4(proc.pid, 0)
        proc.returncode = os.waitstatus_to_exitcode(status)
    return proc.returncode, usage.ru_maxrss / 1024.0, time.perf_counter() - t  # ru_maxrss is KiB on Linux


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--counts", type=int, nargs="+", default=[20, 200])
    ap.add_argument("--size", type=int, nargs=2, default=[48, 64], metavar=("H", "W"))
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--keep", type=Path, help="render the stacks here and keep them (default: a temporary folder)")
    args = ap.parse_args()
    work = args.keep or Path(tempfile.mkdtemp(prefix="defocus_batch_"))
    try:
        stacks_dir = work / "stacks"
        t = time.perf_counter()
        stacks = sorted(stacks_dir.iterdir()) if stacks_dir.is_dir() else []
        if len(stacks) < max(args.counts):
            shutil.rmtree(stacks_dir, ignore_errors=True)
            stacks = make_stacks(stacks_dir, max(args.counts), tuple(args.size))
        print(f"{len(stacks)} stacks of 5 x {args.size[1]}x{args.size[0]} px in {stacks_dir} "
              f"({time.perf_counter() - t:.1f} s)")
        rows = []
        for command in ("predict", "evaluate"):
            for count in args.counts:
                paths = [str(p) for p in stacks[:count]]
                extra = ["-o", str(work / f"out_{count}"), "--no-align"] if command == "predict" else []
                rc, mib, secs = run_measured([command, *paths, *extra, "--threads", str(args.threads)], args.threads)
                rows.append((command, count, rc, mib, secs))
                print(f"{command} x{count}: exit {rc}, peak RSS {mib:.0f} MiB, {secs:.1f} s", flush=True)
        print("\n| command | stacks | exit | peak RSS (MiB) | ratio to the fewest | time (s) | s per stack |")
        print("|---|---:|---:|---:|---:|---:|---:|")
        for command, count, rc, mib, secs in rows:
            base = min(r[3] for r in rows if r[0] == command and r[1] == min(args.counts))
            print(f"| {command} | {count} | {rc} | {mib:.0f} | {mib / base:.2f} | {secs:.1f} | {secs / count:.2f} |")
    finally:
        if args.keep is None:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
