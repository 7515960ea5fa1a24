"""Frame registration (defocus.data.align) on the real focal stacks of ../shared/data/focal_stacks.

Each stack is loaded with defocus.data.codecs.load_image, area-downscaled to about 1024 px wide, aligned
(similarity, max_size 512) and reported as a markdown table: frames, seconds, mean residual before → after (robust
residual of the gradient-feature images against the reference, lower is better) and the scales found. For the Pixel 6
Pro stack a PNG of the mean of the frames before | after alignment is written to benchmarks/results/align/.
Stacks that are absent are skipped with a message. Usage: python benchmarks/bench_align.py [--threads 2]
"""

from __future__ import annotations

import argparse
import re
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from defocus.data.align import check_focus_order, estimate_alignment, warp_to_reference
from defocus.data.codecs import load_image, save_image

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data" / "focal_stacks"
OUT = ROOT / "benchmarks" / "results" / "align"
STACKS = [  # (name, folder, focal length m or None)
    ("pixel6pro/images", "hybriddepth_pixel6pro/images", 6.81e-3),
    ("pixel6pro/imgs_old", "hybriddepth_pixel6pro/imgs_old", 6.81e-3),
    ("mobiledepth_balls", "mobiledepth_balls_dffinthewild", None),
    ("pcb_macro", "focus_stack_pcb_macro/pcb", None),
    ("lytro_javidnia", "lytro_refocused_javidnia", None),
]


def load(folder: Path, width: int) -> tuple[torch.Tensor, torch.Tensor | None, list[str]]:
    files = sorted(p for p in folder.iterdir() if p.suffix.lower() in (".jpg", ".jpeg", ".png")
                   and not p.stem.lower().startswith(("expected", "all_in_focus")))
    frames = []
    for p in files:
        img = load_image(p)
        h, w = img.shape[-2:]
        if w > width:
            img = F.interpolate(img[None], size=(round(h * width / w), width), mode="area")[0]
        frames.append(img)
    focus = []
    for p in files:
        m = re.match(r"image_\d+_([0-9.]+)$", p.stem)
        focus.append(float(m.group(1)) if m else None)
    fd = torch.tensor(focus) if all(v is not None for v in focus) else None
    return torch.stack(frames), fd, [p.name for p in files]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--width", type=int, default=1024)
    ap.add_argument("--model", default="similarity")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    rows = []
    for name, rel, f in STACKS:
        folder = DATA / rel
        if not folder.is_dir():
            print(f"note: {folder} is absent: {name} skipped")
            continue
        frames, fd, names = load(folder, args.width)
        t = time.perf_counter()
        extra = {} if args.model == "similarity" else {"model": args.model}
        al = estimate_alignment(frames, fd, f if fd is not None else None, **extra)
        secs = time.perf_counter() - t
        warning = check_focus_order(al, fd) if fd is not None else None
        others = [i for i in range(len(names)) if i != al.reference]
        before = float(al.residual_before[others].mean())
        after = float(al.residual_after[others].mean())
        rows.append((name, frames.shape, secs, before, after, al, warning))
        print(f"{name}: {len(names)} frames {frames.shape[-1]}x{frames.shape[-2]}, {secs:.2f} s, residual "
              f"{before:.3f} -> {after:.3f}, scales {[round(float(s), 4) for s in al.scales]}, "
              f"rotations {[round(float(r), 3) for r in al.rotations_deg]} deg, box {al.valid_box}, "
              f"initial {None if getattr(al, 'initial_scales', None) is None else [round(float(s), 4) for s in al.initial_scales]}, "
              f"focus check: {warning}", flush=True)
        if rel.startswith("hybriddepth_pixel6pro"):
            warped, _ = warp_to_reference(frames, al)
            x0, y0, x1, y1 = al.valid_box
            pair = torch.cat([frames.mean(0)[:, y0:y1, x0:x1], torch.ones(3, y1 - y0, 8),
                              warped.mean(0)[:, y0:y1, x0:x1]], dim=2)
            OUT.mkdir(parents=True, exist_ok=True)
            path = OUT / f"{rel.replace('/', '_')}_mean_before_after.png"
            save_image(path, pair)
            print(f"wrote {path} (left: mean of the frames as taken; right: after alignment)")
    print(f"\n| stack | frames (W x H) | seconds ({torch.get_num_threads()} threads) | residual before → after | "
          "scales found |\n|---|---|---:|---|---|")
    for name, shape, secs, before, after, al, warning in rows:
        scales = ", ".join(f"{float(s):.4f}" for s in al.scales)
        print(f"| {name} | {shape[0]} ({shape[-1]} x {shape[-2]}) | {secs:.2f} | {before:.3f} → {after:.3f} | "
              f"{scales} |")


if __name__ == "__main__":
    main()
