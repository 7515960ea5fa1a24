r"""Frame alignment (defocus.data.align) against the depth estimate: its cost, its decision, the motion it recovers.

Each stack runs through ``defocus.predict.predict_stack(model, stack)`` — the pipeline of ``defocus predict``, with
``daifnet_small`` and its shipped weights, default options (automatic working size, alignment on) — and the
timings of that one run give the ``align`` stage (estimate_alignment, and the warp and crop where it is applied)
and the ``estimate`` stage (the network at the working size). Timings on a shared machine are noisy; their ratio
align / estimate, taken in the same run, much less so. Cases:

* ``registered``: procedural scenes (test seeds) rendered as 5 × 240 × 320 stacks of the nyuv2 preset (``--presets``
  adds defocusnet, 5 × 256 × 256) under the protocols ``paper`` and ``realistic``: nothing to correct, the
  alignment should keep the frames (applied False).
* ``shifted``: the same scenes with every frame but the reference shifted by a known 1–3 px (random direction;
  ``shifted1px``: exactly 1 px), and ``scaled``: magnified by 1 % per frame towards near focus: the alignment should
  be applied.
* ``12mp``: a 5 × 3072 × 4080 stack of a phone camera (a procedural scene rendered at 768 × 1020 and upsampled
  4×, the way benchmarks/bench_photo.py builds its large stack), registered and with known shifts of up to
  ``--shift-12mp`` px applied at full size.
* ``--real``: the real stacks of ../shared/data/focal_stacks that are present (alignment only, no estimate).

Columns: the decision and its reason, the largest displacement of the true motion and the largest corner error of
the matrices used (identity when not applied) against it, both in input pixels, and the seconds of each stage.
``--baseline REV`` also times estimate_alignment of ``src/defocus/data/align.py`` at git revision REV on the same
frames (e.g. ``--baseline d9862ab``, the version before the decision and the Gauss–Newton registration).

Commands (the figures of the change that added the decision; the second gives the 48-scene figures quoted at
``MIN_RESIDUAL_REDUCTION`` in align.py)::

    .venv/bin/python benchmarks/bench_align.py --seeds 3 --threads 2 --baseline d9862ab --real
    .venv/bin/python benchmarks/bench_align.py --seeds 12 --presets nyuv2 defocusnet --no-12mp \
        --motions registered shifted shifted1px scaled
"""

from __future__ import annotations

import argparse
import math
import subprocess
import sys
import time
import types
from pathlib import Path

import torch
import torch.nn.functional as F

from defocus.data.align import _grid, _similarity, estimate_alignment
from defocus.data.procedural import SCENE_DEPTH_RANGE_M, TEST_SEED_START, make_scene
from defocus.data.stack import FocalStack
from defocus.data.synthesis import synthesize_stack
from defocus.optics.camera import ThinLensCamera, get_preset

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data" / "focal_stacks"
REAL = [  # (name, folder, focus distances or None, camera flags)
    ("pixel6pro/imgs_old", "hybriddepth_pixel6pro/imgs_old", [0.24, 0.36, 0.6, 1.5, 2.5],
     {"focal_length_mm": 6.81, "f_number": 1.85, "pixel_size_um": 7.65}),
    ("pixel6pro/images (12 MP)", "hybriddepth_pixel6pro/images", [0.35, 0.50, 0.90, 1.33, 2.21], None),
    ("mobiledepth_balls", "mobiledepth_balls_dffinthewild", None, None),
    ("pcb_macro", "focus_stack_pcb_macro/pcb", None, None),
    ("lytro_javidnia (refocused: registered)", "lytro_refocused_javidnia", None, None),
    ("povray_office (rendered: registered)", "synthetic_povray_office_devernay", None, None),
]
PAD = 24  # margin (pixels) rendered around the frames so that moved frames have content at their borders


def _moved(padded: torch.Tensor, params: torch.Tensor, h: int, w: int, pad: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Frames (N, 3, h, w) of a padded rendering as a moving camera records them: frame pixel q shows the reference
    point M⁻¹ q, M = the similarity of ``params`` (N, 4) about the centre; returns (frames, M (N, 3, 3))."""
    m = _similarity(params, (w / 2, h / 2))
    shift = torch.tensor([[1, 0, pad], [0, 1, pad], [0, 0, 1.0]], dtype=torch.float64)
    out = torch.empty(padded.shape[0], 3, h, w)
    for i in range(padded.shape[0]):
        grid = _grid((shift @ torch.linalg.inv(m[i])).float()[None], h, w, tuple(padded.shape[-2:]))
        out[i] = F.grid_sample(padded[i : i + 1], grid, mode="bilinear", padding_mode="border",
                               align_corners=False)[0]
        del grid
    return out, m


def _motion(kind: str, n: int, ref: int, seed: int, max_shift: float = 3.0) -> torch.Tensor:
    """(N, 4) similarity parameters (log scale, angle, tx, ty) of a known motion; the reference frame stays."""
    g = torch.Generator().manual_seed(seed)
    p = torch.zeros(n, 4, dtype=torch.float64)
    if kind == "shifted1px":
        angle = 2 * math.pi * torch.rand(n, generator=g, dtype=torch.float64)
        p[:, 2], p[:, 3] = torch.cos(angle), torch.sin(angle)
    elif kind in ("shifted", "12mp"):
        angle = 2 * math.pi * torch.rand(n, generator=g, dtype=torch.float64)
        r = max_shift / 3 + (max_shift - max_shift / 3) * torch.rand(n, generator=g, dtype=torch.float64)
        p[:, 2], p[:, 3] = r * torch.cos(angle), r * torch.sin(angle)
    elif kind == "scaled":
        p[:, 0] = math.log(1.01) * (ref - torch.arange(n)).double()  # nearer focus (lower index) magnified
    p[ref] = 0.0
    return p


def _corners(m: torch.Tensor, h: int, w: int) -> torch.Tensor:
    c = torch.tensor([[0, 0, 1.0], [w, 0, 1], [0, h, 1], [w, h, 1]], dtype=torch.float64).T
    return (m.double() @ c)[:, :2]


def _corner_error(matrices: torch.Tensor, truth: torch.Tensor, h: int, w: int) -> float:
    """Largest distance (px) between where the matrices and the true motion put an image corner, over the frames."""
    return float((_corners(matrices, h, w) - _corners(truth, h, w)).norm(dim=1).max())


def _baseline(rev: str) -> types.ModuleType:
    """align.py at git revision ``rev``, as a module."""
    src = subprocess.run(["git", "show", f"{rev}:src/defocus/data/align.py"], cwd=ROOT, check=True,
                         capture_output=True, text=True).stdout
    mod = types.ModuleType(f"align_{rev}")
    sys.modules[mod.__name__] = mod  # dataclasses look their module up
    exec(compile(src, f"align.py@{rev}", "exec"), mod.__dict__)
    return mod


def _cases(args: argparse.Namespace):
    """Yields (case, protocol, seed, FocalStack, true matrices (N, 3, 3))."""
    for name in args.presets:
        preset = get_preset(name)
        h, w = preset.image_size
        focus = torch.tensor(preset.focus_distances_m)
        eye = torch.eye(3, dtype=torch.float64).repeat(len(focus), 1, 1)
        for protocol in ("paper", "realistic"):
            for k in range(args.seeds):
                seed = TEST_SEED_START + k
                rgb, depth = make_scene(seed, h + 2 * PAD, w + 2 * PAD, SCENE_DEPTH_RANGE_M[name])
                padded = synthesize_stack(rgb, depth, focus, preset.camera, protocol, seed=k)
                for kind in args.motions:
                    if kind == "registered":
                        frames, truth = padded[..., PAD : PAD + h, PAD : PAD + w].contiguous(), eye
                    else:
                        frames, truth = _moved(padded, _motion(kind, len(focus), 2, k), h, w, PAD)
                    stack = FocalStack(images=frames, focus_distances_m=focus, camera=preset.camera,
                                       name=f"{kind}_{protocol}_{seed}")
                    yield f"{kind} ({name})", protocol, seed, stack, truth
    if args.no_12mp:
        return
    # 12 MP: a phone's main camera (6.81 mm f/1.85, 2.4 µm pixels at 4080 x 3072: the Pixel 6 Pro's binned output;
    # 9.6 µm at the rendering's 1020 x 768) focused like the phone stack of ../shared/data (0.24 to 2.5 m).
    h, w, up, pad = 3072, 4080, 4, 8
    cam_small = ThinLensCamera.from_mm_um(6.81, 1.85, 2.4 * up)
    focus = torch.tensor([0.24, 0.36, 0.6, 1.5, 2.5])
    rgb, depth = make_scene(TEST_SEED_START + 777, h // up + 2 * pad, w // up + 2 * pad, (0.2, 4.0))
    small = synthesize_stack(rgb, depth, focus, cam_small, "realistic", seed=1)
    big = F.interpolate(small, scale_factor=up, mode="bilinear", align_corners=False).clamp(0, 1)
    del small
    for kind in ("registered", "12mp"):
        params = _motion(kind, len(focus), 2, 12, args.shift_12mp)
        frames, truth = _moved(big, params, h, w, pad * up)
        yield ("12mp registered" if kind == "registered" else f"12mp shifted ≤{args.shift_12mp:g} px", "realistic",
               TEST_SEED_START + 777, FocalStack(images=frames, focus_distances_m=focus, camera=cam_small.resized(up),
                                                 name=kind), truth)
        del frames


def _real(baseline: types.ModuleType | None) -> None:
    from defocus.data.folders import read_stack

    rows = []
    for name, rel, focus, flags in REAL:
        folder = DATA / rel
        if not folder.is_dir():
            print(f"note: {folder} is absent: {name} skipped")
            continue
        st = read_stack(folder, focus=focus, camera_flags=flags, require_focus=focus is not None)
        fd = st.focus_distances_m if focus is not None else None
        f = st.camera.focal_length_m if fd is not None and st.camera is not None else None
        t = time.perf_counter()
        al = estimate_alignment(st.images, fd, f)
        secs = time.perf_counter() - t
        base = ""
        if baseline is not None:
            t = time.perf_counter()
            baseline.estimate_alignment(st.images, fd, f)
            base = f"{time.perf_counter() - t:.2f}"
        scales = ", ".join(f"{float(s):.4f}" for s in al.scales)
        rows.append(f"| {name} | {st.num_images} ({st.images.shape[-1]} x {st.images.shape[-2]}) | "
                    f"{'yes' if al.applied else 'no'} | {al.reason} | {scales} | {secs:.2f} | {base} |")
        print(rows[-1], flush=True)
    print("\n| real stack | frames (W x H) | applied | reason | scales | align s | baseline align s |\n"
          "|---|---|---|---|---|---:|---:|")
    print("\n".join(rows))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seeds", type=int, default=3, help="procedural scenes per protocol")
    ap.add_argument("--motions", nargs="+", default=["registered", "shifted", "scaled"],
                    choices=["registered", "shifted", "shifted1px", "scaled"])
    ap.add_argument("--presets", nargs="+", default=["nyuv2"], choices=["nyuv2", "defocusnet"])
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--no-12mp", action="store_true", help="skip the 12-megapixel stack")
    ap.add_argument("--shift-12mp", type=float, default=12.0, help="largest shift (px) of the moved 12 MP stack")
    ap.add_argument("--baseline", metavar="REV", help="also time align.py of this git revision on the same frames")
    ap.add_argument("--real", action="store_true", help="also align the real stacks of ../shared/data")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    from defocus.models.factory import create_model
    from defocus.predict import predict_stack

    model = create_model("daifnet_small", pretrained=True)
    baseline = _baseline(args.baseline) if args.baseline else None
    rows = []
    for kind, protocol, seed, stack, truth in _cases(args):
        h, w = stack.images.shape[-2:]
        base = ""
        if baseline is not None:
            t = time.perf_counter()
            baseline.estimate_alignment(stack.images, stack.focus_distances_m, stack.camera.focal_length_m)
            base = f"{time.perf_counter() - t:.2f}"
        res = predict_stack(model, stack)
        al = res.alignment
        applied = al is not None and getattr(al, "applied", True)
        used = al.matrices if applied else torch.eye(3, dtype=torch.float64).repeat(len(truth), 1, 1)
        true_px = float((_corners(truth, h, w) - _corners(torch.eye(3, dtype=torch.float64)[None], h, w))
                        .norm(dim=1).max())
        t_align, t_est = res.timings["align"], res.timings["estimate"]
        out_hw = tuple(res.full.depth.shape[-2:])
        rows.append(f"| {kind} | {protocol} | {seed} | {w} x {h} | {'yes' if applied else 'no'} | "
                    f"{getattr(al, 'reason', '')} | {true_px:.2f} | {_corner_error(used, truth, h, w):.2f} | "
                    f"{out_hw[1]} x {out_hw[0]} | {t_align:.2f} | {t_est:.2f} | {t_align / max(t_est, 1e-9):.2f} | "
                    f"{base} |")
        print(rows[-1], flush=True)
        del stack, res
    print("\n| case | protocol | seed | input | applied | reason | true motion px | corner error px | output | "
          "align s | estimate s | align / estimate | baseline align s |\n"
          "|---|---|---|---|---|---|---:|---:|---|---:|---:|---:|---:|")
    print("\n".join(rows))
    print(f"\n({torch.get_num_threads()} threads; align = estimate_alignment + warp and crop where applied, "
          "estimate = the network at the working size, both from predict_stack's timings of one run)")
    if args.real:
        _real(baseline)


if __name__ == "__main__":
    main()
