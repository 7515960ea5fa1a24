"""Is the global solve converged at predict's iteration counts? (issue 17)

``defocus.solve.edge_aware_solve`` runs a fixed number of conjugate-gradient iterations per pyramid level. This
script predicts the real phone stacks of ../shared/data/focal_stacks (flags as benchmarks/planes.json) through
``predict_stack`` with the default options, keeps the solve's inputs at the working size (by wrapping
``defocus.predict._solve``), and re-solves them with 4× and 16× the iterations. It prints, per stack, the median and
99th-percentile relative depth change against the 16× solve, the seconds, and each annotated plane's fraction of
pixels more than 10 % off a robust plane fit (bench_planes.py's measure, at the working size) and median depth.

Usage: python benchmarks/bench_solve_convergence.py [--data ../shared/data]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_planes import DEFAULT_ANNOTATIONS, DEFAULT_DATA, fit_plane_robust, polygon_mask, relative_deviation  # noqa: E402

from defocus import predict as P  # noqa: E402
from defocus.color import to_grey  # noqa: E402
from defocus.data.folders import read_stack  # noqa: E402

#: (coarsest-level iterations, finest-level minimum): predict's, then 4× and 16×.
SCHEDULES = ((60, 15), (240, 60), (960, 240))


def _camera_flags(flags: list[str]) -> tuple[list[float], dict]:
    focus, camera = [], {}
    names = {"--focal-length-mm": "focal_length_mm", "--f-number": "f_number", "--pixel-size-um": "pixel_size_um"}
    for key, value in zip(flags[::2], flags[1::2]):
        if key == "--focus":
            focus = [float(v) for v in value.split(",")]
        elif key in names:
            camera[names[key]] = float(value)
    return focus, camera


def plane_figures(planes: list[dict], inv: np.ndarray) -> dict[str, tuple[float, float]]:
    """{plane: (fraction > 10 % off its robust plane, median depth m)} of an (h, w) inverse-depth map."""
    h, w = inv.shape
    yy, xx = np.mgrid[0:h, 0:w]
    x, y = xx / w, yy / h
    out = {}
    for plane in planes:
        m = polygon_mask(plane["polygons"], w, h)
        fit = fit_plane_robust(x[m], y[m], inv[m])
        dev = relative_deviation(inv[m], fit.inverse_depth(x[m], y[m]))
        out[plane["name"]] = (float((dev > 0.1).mean()), float(np.median(1.0 / inv[m])))
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", type=Path, default=DEFAULT_DATA)
    args = ap.parse_args()
    root = args.data / "focal_stacks"
    if not root.is_dir():
        raise SystemExit(f"no focal stacks under {args.data}: this benchmark needs ../shared/data")
    annotations = json.loads(DEFAULT_ANNOTATIONS.read_text())
    captured: dict = {}
    solve = P._solve

    def capture(pred, depth_range, smoothness, second=None, blur_per_dioptre=None):
        captured.update(pred=pred, second=second, k=blur_per_dioptre, smoothness=smoothness)
        return solve(pred, depth_range, smoothness, second, blur_per_dioptre)

    P._solve = capture
    for entry in annotations["stacks"]:
        focus, camera = _camera_flags(entry["flags"])
        if not focus:
            continue  # relative stacks: another path
        stack = read_stack(root / entry["folder"], focus=focus, camera_flags=camera or None, load_ground_truth=False)
        P.predict_stack(None, stack)
        pred, second = captured["pred"], captured["second"]
        guide = to_grey(pred.aif)[:, None]
        results = {}
        for its, fine in SCHEDULES:
            t = time.perf_counter()
            inv = P.solve_inverse_depth(pred.inv_depth, pred.confidence, second, guide, captured["smoothness"],
                                        (1e-3, 1e3), blur_per_dioptre=captured["k"], iterations=its,
                                        fine_iterations=fine)
            results[its] = (inv, time.perf_counter() - t)
        ref = results[SCHEDULES[-1][0]][0]
        print(f"{entry['name']} (working {tuple(ref.shape[-2:])})")
        for its, (inv, secs) in results.items():
            rel = ((inv - ref).abs() / ref).flatten()
            planes = plane_figures(entry["planes"], inv[0, 0].double().numpy())
            print(f"  {its:4d} iterations, {secs:5.1f} s: vs 16x median {float(rel.median()):.4f}, p99 "
                  f"{float(torch.quantile(rel[::7], 0.99)):.4f}; "
                  + ", ".join(f"{k} {v[0] * 100:.1f} % / {v[1]:.2f} m" for k, v in planes.items()), flush=True)


if __name__ == "__main__":
    main()
