"""Wall time and peak memory of `defocus predict` on large stacks (the real-photo path).

* The 4080 x 3072, 5-frame Pixel 6 Pro stack of ../shared/data/focal_stacks/hybriddepth_pixel6pro/images with only
  `--focus` given (the camera comes from EXIF and the sensor table), alignment on.
* A 20-megapixel synthetic stack (5 frames, 5472 x 3648, a procedural scene rendered at 1368 x 912 and upsampled, so
  that rendering stays cheap; focus and camera in stack.json).

Each case runs `defocus predict` in a subprocess and reads its peak resident memory from the kernel (`ru_maxrss`
of the child). Usage: python benchmarks/bench_photo.py [--cases phone synthetic20] [--out DIR] [--allocator both]

``--allocator both`` runs each case twice in the same run, with glibc's default malloc behaviour
(``DEFOCUS_KEEP_FREED_MEMORY=0``) and with the command line's default (``defocus.allocator.keep_freed_memory``), so
that the two wall times are compared on the same machine at the same hour.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PHONE = ROOT.parent / "shared" / "data" / "focal_stacks" / "hybriddepth_pixel6pro" / "images"


def make_synthetic(folder: Path) -> Path:
    import torch
    import torch.nn.functional as F

    from defocus.data.folders import write_stack
    from defocus.data.procedural import make_scene
    from defocus.data.stack import FocalStack
    from defocus.data.synthesis import synthesize_stack
    from defocus.optics.camera import ThinLensCamera

    if (folder / "stack.json").is_file():
        return folder
    cam_small = ThinLensCamera.from_mm_um(24.0, 2.8, 4.0 * 4)  # a 24 mm lens, 4 µm pixels at full size
    focus = torch.tensor([0.6, 0.9, 1.4, 2.2, 4.0])
    rgb, depth = make_scene(1_000_777, 912, 1368, (0.5, 6.0))
    small = synthesize_stack(rgb, depth, focus, cam_small, "realistic", seed=1)
    big = F.interpolate(small, size=(3648, 5472), mode="bilinear", align_corners=False).clamp(0, 1)
    write_stack(FocalStack(images=big, focus_distances_m=focus, camera=cam_small.resized(4.0), name=folder.name),
                folder)
    return folder


def run(args: list[str], keep_freed_memory: bool = True) -> tuple[float, float, int]:
    env = {k: v for k, v in os.environ.items() if k != "DEFOCUS_KEEP_FREED_MEMORY"}
    if not keep_freed_memory:
        env["DEFOCUS_KEEP_FREED_MEMORY"] = "0"
    t = time.perf_counter()
    code = ("import resource, sys; from defocus.cli import main; rc = main(sys.argv[1:]); "
            "print('PEAK_KB', resource.getrusage(resource.RUSAGE_SELF).ru_maxrss, file=sys.stderr); sys.exit(rc)")
    proc = subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True, env=env)
    wall = time.perf_counter() - t
    peaks = [int(line.split()[1]) for line in proc.stderr.splitlines() if line.startswith("PEAK_KB")]
    peak_mb = peaks[-1] / 1024 if peaks else float("nan")
    if proc.returncode != 0:
        print(proc.stderr[-2000:])
    return wall, peak_mb, proc.returncode


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cases", nargs="+", default=["phone", "synthetic20"])
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "photo")
    ap.add_argument("--allocator", choices=["default", "glibc", "both"], default="default",
                    help="default: as the command line runs (freed memory kept); glibc: DEFOCUS_KEEP_FREED_MEMORY=0; "
                    "both: each case both ways")
    args = ap.parse_args()
    modes = {"default": [True], "glibc": [False], "both": [False, True]}[args.allocator]
    rows = []
    for case, keep in [(c, m) for c in args.cases for m in modes]:
        if case == "phone":
            if not PHONE.is_dir():
                print(f"note: {PHONE} is absent: phone case skipped")
                continue
            cmd = ["predict", str(PHONE), "-o", str(args.out / "phone"), "--focus", "0.35,0.50,0.90,1.33,2.21"]
        else:
            folder = make_synthetic(args.out / "synthetic20_stack")
            cmd = ["predict", str(folder), "-o", str(args.out / "synthetic20")]
        wall, peak, rc = run(cmd, keep)
        out_dir = args.out / ("phone" if case == "phone" else "synthetic20")
        info = {}
        for p in out_dir.glob("*/prediction.json"):
            info = json.loads(p.read_text())
        case = f"{case} ({'kept' if keep else 'glibc'} freed memory)" if len(modes) > 1 else case
        rows.append((case, wall, peak, rc, info.get("output_size"), info.get("working_size"), info.get("timings_s")))
        print(f"{case}: {wall:.1f} s, peak {peak:.0f} MB, rc {rc}, output {info.get('output_size')}, "
              f"working {info.get('working_size')}, stages {info.get('timings_s')}", flush=True)
    print("\n| stack | wall s | peak MB | output (W x H) | working (W x H) | stages (s) |\n|---|---:|---:|---|---|---|")
    for r in rows:
        print(f"| {r[0]} | {r[1]:.1f} | {r[2]:.0f} | {r[4]} | {r[5]} | {r[6]} |")


if __name__ == "__main__":
    main()
