"""Is the global solve converged, and is its result independent of the working size? (issue 17)

``defocus.solve.edge_aware_solve`` runs conjugate gradients coarse to fine with fixed iteration counts, and predict
solves at most at ``SOLVE_MAX_SIZE`` px (a larger working image is reduced, solved, guided-upsampled). This script
predicts the real phone stacks of ../shared/data/focal_stacks (flags as benchmarks/planes.json) through
``predict_stack`` with the default options, keeps the solve's inputs at the working size (by wrapping
``defocus.predict._solve``), and re-solves them: the earlier schedule (60 / 15 iterations at the working size), the
default, the default with 4x the iterations, and 960 / 240 iterations at the full working size (the reference: the
minimiser of the energy at the working size). It prints, per stack and schedule, the seconds, the median and
99th-percentile relative depth change against the reference and against the 4x default, and each annotated
plane's fraction of pixels more than 10 % off a robust plane fit (bench_planes.py's measure, at the working size)
and median depth.

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

#: (label, coarsest-level iterations, finest-level minimum, max_size).
SCHEDULES = (
    ("60/15 at working size", 60, 15, None),
    ("default", P.SOLVE_ITERATIONS, P.SOLVE_FINE_ITERATIONS, P.SOLVE_MAX_SIZE),
    ("4x default", 4 * P.SOLVE_ITERATIONS, 4 * P.SOLVE_FINE_ITERATIONS, P.SOLVE_MAX_SIZE),
    ("960/240 at working size", 960, 240, None),
)


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
        for label, its, fine, cap in SCHEDULES:
            t = time.perf_counter()
            inv = P.solve_inverse_depth(pred.inv_depth, pred.confidence, second, guide, captured["smoothness"],
                                        (1e-3, 1e3), blur_per_dioptre=captured["k"], iterations=its,
                                        fine_iterations=fine, max_size=cap)
            results[label] = (inv, time.perf_counter() - t)
        ref, ref_4x = results[SCHEDULES[-1][0]][0], results["4x default"][0]
        print(f"{entry['name']} (working {tuple(ref.shape[-2:])})")

        def change(a: torch.Tensor, b: torch.Tensor) -> str:
            rel = ((a - b).abs() / b).flatten()
            return f"{float(rel.median()) * 100:.2f} / {float(torch.quantile(rel[::7], 0.99)) * 100:.1f} %"

        for label, (inv, secs) in results.items():
            planes = plane_figures(entry["planes"], inv[0, 0].double().numpy())
            print(f"  {label:>24}, {secs:5.1f} s: vs reference {change(inv, ref)}, vs 4x default "
                  f"{change(inv, ref_4x)}; "
                  + ", ".join(f"{k} {v[0] * 100:.1f} % / {v[1]:.2f} m" for k, v in planes.items()), flush=True)


if __name__ == "__main__":
    main()
