"""Benchmark of the differentiable renderers (issue 2): speed and accuracy of `layered` against the `exact` oracle.

A 5x3x240x320 focal stack (one procedural scene, the `nyuv2` camera, focus 1, 1.5, 2.5, 4, 6 m, depths chosen so
that the largest Gaussian σ is about 8 px) is rendered forward and backward (loss = sum of the stack, gradients
w.r.t. the all-in-focus image and the depth) by

* `exact` — the oracle (per-pixel kernels, no truncation);
* `layered` with the default level ratio 1.5, and with ratios 1.25 and 2.0;
* `trunc7x7` — what the paper's code does, implemented here: each source pixel's sampled Gaussian
  exp(−(x² + y²)/2σ²) cut to a 7x7 window and renormalised within it, spread with the same normalisation semantics
  (out = Σ k·I / Σ k). It is only here to measure its error against `exact`.

Reports the median time of a few repeats, the speed-up over `exact`, and the mean absolute error against `exact`
relative to the mean image value. Writes the markdown table to benchmarks/results/render.md.

    .venv/bin/python benchmarks/bench_render.py [--threads 1] [--repeats 5]
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import time
from pathlib import Path

import torch

from defocus.data.procedural import make_scene
from defocus.optics.camera import get_preset
from defocus.optics.psf import blur_size_px
from defocus.optics.render import default_levels, render_exact, render_layered

RESULTS = Path(__file__).resolve().parent / "results" / "render.md"


def render_truncated_7x7(aif: torch.Tensor, depth: torch.Tensor, focus: torch.Tensor, camera) -> torch.Tensor:
    """The paper code's renderer: per-pixel sampled Gaussian cut to 7x7, renormalised, scatter-normalised."""
    b, c, h, w = aif.shape
    sigma = blur_size_px(camera, depth, focus, "gaussian").clamp_min(1e-3)  # (B, N, 1, H, W)
    two_var = 2.0 * sigma * sigma
    offs = range(-3, 4)
    g = [torch.exp(-(o * o) / two_var) for o in offs]  # 1-D sampled Gaussian, per pixel
    z = sum(g) ** 2  # 7x7 window mass of g ⊗ g
    img = aif[:, None]
    num = torch.zeros(b, focus.shape[1], c, h + 6, w + 6, dtype=aif.dtype)
    den = torch.zeros(b, focus.shape[1], 1, h + 6, w + 6, dtype=aif.dtype)
    for iy, dy in enumerate(offs):
        for ix, dx in enumerate(offs):
            k = g[iy] * g[ix] / z
            # source pixel q lands on p = q + (dy, dx); padded output, cropped below (only image pixels contribute)
            num = num + torch.nn.functional.pad(k * img, (3 + dx, 3 - dx, 3 + dy, 3 - dy))
            den = den + torch.nn.functional.pad(k, (3 + dx, 3 - dx, 3 + dy, 3 - dy))
    return (num / den)[..., 3 : 3 + h, 3 : 3 + w]


def _time_fwd_bwd(fn, aif: torch.Tensor, depth: torch.Tensor, repeats: int) -> tuple[float, torch.Tensor]:
    times, out = [], None
    for _ in range(repeats):
        a = aif.clone().requires_grad_(True)
        d = depth.clone().requires_grad_(True)
        t0 = time.perf_counter()
        out = fn(a, d)
        out.sum().backward()
        times.append(time.perf_counter() - t0)
        assert a.grad is not None and d.grad is not None
    return statistics.median(times), out.detach()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--threads", type=int, default=1, help="torch intra-op threads (default 1)")
    ap.add_argument("--repeats", type=int, default=5, help="repeats of the fast renderers (median reported)")
    ap.add_argument("--exact-repeats", type=int, default=2, help="repeats of the exact renderer")
    ap.add_argument("--seed", type=int, default=0, help="procedural scene seed")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)

    preset = get_preset("nyuv2")
    camera = preset.camera
    h, w = preset.image_size
    focus = torch.tensor([list(preset.focus_distances_m)])
    # 0.72..8 m is 1.39..0.125 dioptres: the largest offset, 1.39 − 1/6 D at fd = 6 m, gives σ ≈ 8 px
    depth_range = (0.72, 8.0)
    rgb, depth = make_scene(args.seed, h, w, depth_range)
    aif, depth = rgb[None], depth[None]
    sigma = blur_size_px(camera, depth, focus, "gaussian")
    sigma_max = float(sigma.max())
    print(f"stack 1x{focus.shape[1]}x3x{h}x{w}, nyuv2 camera, focus {list(preset.focus_distances_m)} m, "
          f"depth {float(depth.min()):.2f}..{float(depth.max()):.2f} m, max sigma {sigma_max:.2f} px, "
          f"mean sigma {float(sigma.mean()):.2f} px, torch threads {torch.get_num_threads()}")

    runs = []
    t_exact, ref = _time_fwd_bwd(lambda a, d: render_exact(a, d, focus, camera), aif, depth, args.exact_repeats)
    runs.append(("exact", "per-pixel kernels, window 3.5σ+1", t_exact, ref))
    print(f"exact: {t_exact:.2f} s")
    for ratio in (1.5, 1.25, 2.0):
        n_levels = len(default_levels(sigma_max, "gaussian", ratio))
        fn = lambda a, d, r=ratio: render_layered(a, d, focus, camera, level_ratio=r)  # noqa: E731
        t, out = _time_fwd_bwd(fn, aif, depth, args.repeats)
        label = f"layered, ratio {ratio}" + (" (default)" if ratio == 1.5 else "")
        runs.append((label, f"{n_levels} levels", t, out))
        print(f"{label}: {t:.3f} s")
    t, out = _time_fwd_bwd(lambda a, d: render_truncated_7x7(a, d, focus, camera), aif, depth, args.repeats)
    runs.append(("trunc7x7 (paper code)", "sampled Gaussian cut to 7x7", t, out))
    print(f"trunc7x7: {t:.3f} s")

    mean_val = float(ref.abs().mean())
    rows = [
        "| renderer | detail | fwd+bwd time (s) | speed-up vs exact | MAE vs exact / mean "
        "| max abs err (8-bit levels) |",
        "|---|---|---:|---:|---:|---:|",
    ]
    for label, detail, t, out in runs:
        err = (out - ref).abs()
        rel = float(err.mean()) / mean_val
        rows.append(
            f"| {label} | {detail} | {t:.3f} | {t_exact / t:.1f}x | {100 * rel:.3f} % | {255 * float(err.max()):.1f} |"
        )
    table = "\n".join(rows)
    note = (
        f"Stack 1x5x3x{h}x{w} (B, N, C, H, W), procedural scene seed {args.seed}, `nyuv2` camera, focus "
        f"1, 1.5, 2.5, 4, 6 m, depth range {depth_range[0]}–{depth_range[1]} m asked (scene spans "
        f"{float(depth.min()):.2f}–{float(depth.max()):.2f} m): max σ = {sigma_max:.2f} px "
        f"(mean {float(sigma.mean()):.2f} px). Loss = sum of the stack; gradients w.r.t. AIF and depth. Median of "
        f"{args.repeats} runs ({args.exact_repeats} for exact); torch {torch.__version__}, "
        f"{torch.get_num_threads()} intra-op thread(s), {os.cpu_count()} CPU cores, "
        f"{platform.processor() or platform.machine()}."
    )
    text = note + "\n\n" + table + "\n"
    print()
    print(text)
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(text, encoding="utf-8")
    print(f"wrote {RESULTS}")


if __name__ == "__main__":
    main()
