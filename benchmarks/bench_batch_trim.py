"""Peak memory of `defocus predict` on several copies of the 4080 x 3072 phone stack in one call, with and without
trimming the kept heap between stacks (defocus.allocator.release_freed_memory).

Each run is its own subprocess (``ru_maxrss`` of that process). Needs ../shared/data/focal_stacks.

Usage: python benchmarks/bench_batch_trim.py [--copies 3] [--out /tmp/bench_batch_trim]
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PHONE = ROOT.parent / "shared" / "data" / "focal_stacks" / "hybriddepth_pixel6pro" / "images"
FOCUS = "0.35,0.50,0.90,1.33,2.21"
RUN = """
import resource, sys, time
import defocus.allocator as allocator
import defocus.cli as cli
if sys.argv[1] == "off":
    allocator.release_freed_memory = lambda: False
t = time.time()
rc = cli.main(["predict", *sys.argv[3:], "--focus", "{focus}", "-o", sys.argv[2]])
print(rc, round(time.time() - t, 1), resource.getrusage(resource.RUSAGE_SELF).ru_maxrss // 1024)
"""


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--copies", type=int, default=3)
    ap.add_argument("--out", type=Path, default=Path("/tmp/bench_batch_trim"))
    args = ap.parse_args()
    if not PHONE.is_dir():
        raise SystemExit(f"the phone stack is not at {PHONE}")
    folders = []
    for i in range(args.copies):
        folder = args.out / "stacks" / f"copy{i}"
        folder.mkdir(parents=True, exist_ok=True)
        for f in sorted(PHONE.iterdir()):
            link = folder / f.name
            if not link.exists():
                os.symlink(f, link)
        folders.append(str(folder))
    for mode in ("off", "on"):
        out = subprocess.run([sys.executable, "-c", RUN.format(focus=FOCUS), mode, str(args.out / f"out_{mode}"),
                              *folders], capture_output=True, text=True, check=True)
        rc, wall, peak = out.stdout.split()[-3:]
        print(f"trim {mode}: exit {rc}, {wall} s, {peak} MB peak ({args.copies} stacks)", flush=True)


if __name__ == "__main__":
    main()
