"""ONNX Runtime against PyTorch for the exported network (issue 9): depth parity in metres and inference time.

Every frame of the test split (`defocus.data.rgbd_index.SPLIT`) of ../shared/data/rgbd/INDEX.csv is rendered at
320 x 240 with the `nyuv2` lens and the focus distances of its kind (5 images, as benchmarks/bench_rgbd_split.py),
under both protocols, and run through the shipped weights in PyTorch (eval, inference mode) and through their ONNX
export in onnxruntime (CPU provider), with the same number of threads. Reported per protocol and overall: the largest
and the median |depth_onnx - depth_torch| over all pixels (metres), the largest relative difference, the share of
pixels that differ by more than 1 mm, for scale the largest difference between PyTorch in float32 and the same model
in float64 (the model decides at thresholds in a few pixels, where rounding alone flips the decision), and the median
seconds per 5 x 240 x 320 stack of each runtime (each stack timed ``--repeats`` times, the two runtimes alternating,
the fastest repeat kept) with their ratio.

Usage: python benchmarks/bench_onnx.py [--onnx FILE] [--threads 1] [--repeats 3] [--json out.json]
(without --onnx the shipped weights are exported to a temporary file first, which takes a minute or two).
"""

from __future__ import annotations

import argparse
import copy
import json
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from defocus.data.rgbd_index import FOCUS_BY_KIND, load_rgbd, read_index, split_of
from defocus.data.synthesis import stack_from_rgbd
from defocus.export import export_onnx
from defocus.models.factory import create_model
from defocus.models.onnx import OnnxModel
from defocus.optics.camera import get_preset

ROOT = Path(__file__).resolve().parents[1]
INDEX = ROOT.parent / "shared" / "data" / "rgbd" / "INDEX.csv"
DEPTH_RANGE = (0.1, 20.0)


def _best_of(fn, repeats: int) -> tuple[object, float]:
    best, out = float("inf"), None
    for _ in range(repeats):
        t0 = time.perf_counter()
        out = fn()
        best = min(best, time.perf_counter() - t0)
    return out, best


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--onnx", type=Path, help="an exported model (default: export the weights now)")
    ap.add_argument("--checkpoint", type=Path, help="PyTorch weights (default: the shipped ones)")
    ap.add_argument("--threads", type=int, default=1, help="threads of both runtimes")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--protocols", nargs="+", default=["paper", "realistic"])
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()
    if not INDEX.is_file():
        raise SystemExit(f"{INDEX} is absent: this benchmark needs the shared RGB-D frames")
    torch.set_num_threads(args.threads)
    model = create_model(checkpoint=args.checkpoint) if args.checkpoint else create_model(pretrained=True)
    meta = model.checkpoint_metadata
    onnx_path = args.onnx
    tmp = tempfile.TemporaryDirectory()  # removed at exit
    if onnx_path is None:
        onnx_path = Path(tmp.name) / "daifnet.onnx"
        t0 = time.perf_counter()
        export_onnx(model, onnx_path, meta, source=str(args.checkpoint or "shipped"))
        print(f"exported to {onnx_path} in {time.perf_counter() - t0:.0f} s")
    runner = OnnxModel(onnx_path, threads=args.threads)
    model64 = copy.deepcopy(model).double()
    cam = get_preset("nyuv2").camera
    entries = [e for e in read_index(INDEX) if split_of(e) == "test"]
    out: dict = {"threads": args.threads, "repeats": args.repeats, "frames": len(entries), "protocols": {}}
    all_diffs, all_rel, all_t, all_o, all_self = [], [], [], [], []
    for protocol in args.protocols:
        diffs, rels, t_torch, t_onnx, self_max = [], [], [], [], []
        for e in entries:
            rgb, depth = load_rgbd(e)
            st = stack_from_rgbd(rgb, depth, FOCUS_BY_KIND[e.kind], cam, protocol, size=(240, 320), name=e.id)
            fd = st.focus_distances_m.float()[None]
            k = cam.blur_per_dioptre(fd).float()
            x = st.images[None].float()
            dr = torch.tensor([DEPTH_RANGE])
            with torch.inference_mode():
                ref, s_t = _best_of(lambda: model(x, fd, k, dr), 1)
                got, s_o = _best_of(lambda: runner(x, fd, k, dr), 1)
                for _ in range(args.repeats - 1):  # alternate, so that load spikes hit both alike
                    s_t = min(s_t, _best_of(lambda: model(x, fd, k, dr), 1)[1])
                    s_o = min(s_o, _best_of(lambda: runner(x, fd, k, dr), 1)[1])
                # For scale: PyTorch float32 against the same model in float64. Where the model decides at a
                # threshold (the cue fill's support, the prior's sharpest frame), float32 rounding alone flips the
                # decision in a few pixels, whichever runtime sums in whichever order.
                exact = model64(x.double(), fd.double(), k.double(), dr.double())
            d = (got.depth.double() - ref.depth.double()).abs()
            self_d = (exact.depth - ref.depth.double()).abs()
            self_max.append(float(self_d.max()))
            diffs.append(d.flatten().numpy())
            rels.append((d / ref.depth.double()).flatten().numpy())
            t_torch.append(s_t)
            t_onnx.append(s_o)
            print(f"{protocol:9s} {e.id:28s} max |Δdepth| {float(d.max()):.2e} m (PyTorch float32 vs float64: "
                  f"{float(self_d.max()):.2e} m)   torch {s_t:.3f} s   onnx {s_o:.3f} s")
        dd, rr = np.concatenate(diffs), np.concatenate(rels)
        res = {"max_abs_m": float(dd.max()), "median_abs_m": float(np.median(dd)), "max_rel": float(rr.max()),
               "frac_over_1mm": float((dd > 1e-3).mean()), "torch_self_max_abs_m": max(self_max),
               "torch_median_s": float(np.median(t_torch)), "onnx_median_s": float(np.median(t_onnx))}
        res["torch_over_onnx"] = res["torch_median_s"] / res["onnx_median_s"]
        out["protocols"][protocol] = res
        all_diffs.append(dd), all_rel.append(rr), all_t.extend(t_torch), all_o.extend(t_onnx), all_self.extend(self_max)
    dd, rr = np.concatenate(all_diffs), np.concatenate(all_rel)
    out["all"] = {"max_abs_m": float(dd.max()), "median_abs_m": float(np.median(dd)), "max_rel": float(rr.max()),
                  "frac_over_1mm": float((dd > 1e-3).mean()), "torch_self_max_abs_m": max(all_self),
                  "torch_median_s": float(np.median(all_t)), "onnx_median_s": float(np.median(all_o))}
    out["all"]["torch_over_onnx"] = out["all"]["torch_median_s"] / out["all"]["onnx_median_s"]
    print(f"\n{len(entries)} test frames per protocol, 5 x 240 x 320 stacks, {args.threads} thread(s), "
          f"best of {args.repeats}\n")
    print("| protocol | max \\|Δdepth\\| (m) | median \\|Δdepth\\| (m) | max relative | pixels > 1 mm | PyTorch "
          "float32 vs float64: max (m) | PyTorch s / stack | ORT s / stack | PyTorch / ORT |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|")
    for name, r in [*out["protocols"].items(), ("both", out["all"])]:
        print(f"| {name} | {r['max_abs_m']:.2e} | {r['median_abs_m']:.1e} | {r['max_rel']:.1e} | "
              f"{100 * r['frac_over_1mm']:.4f} % | {r['torch_self_max_abs_m']:.2e} | "
              f"{r['torch_median_s']:.3f} | {r['onnx_median_s']:.3f} | {r['torch_over_onnx']:.2f} |")
    if args.json:
        args.json.write_text(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
