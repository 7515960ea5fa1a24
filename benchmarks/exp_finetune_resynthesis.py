"""Experiment (issue 18, not in the package): fine-tuning by supervised training on *re-synthesised* stacks of the
user's own scenes, no ground truth anywhere.

For bench_finetune.py's unseen cameras and halves (the same captures): every tuning stack goes through the shipped
default path; its solved inverse depth and AIF (working size) are a pseudo-scene, re-rendered twice through the
forward model that defocus.finetune self-calibrates on those stacks (defocus.finetune.calibrate_stacks), with 8-bit
noise at the stack's own estimated level. The shipped network is then trained for STEPS steps (Adam, lr 1e-4, 4
random 96 x 96 crops) on the relative L1 error of its inverse depth against the pseudo-scene's, and the other half
is scored as bench_finetune.py scores it (default path and network alone, shipped and tuned).

Usage: python benchmarks/exp_finetune_resynthesis.py CAMERAS [STEPS]     e.g. 2 200, or 1,2 200
"""
import copy
import sys
import time
from collections import defaultdict
from dataclasses import replace
from pathlib import Path

import torch
sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_finetune import _test_frames, CAMERA_SEED, BRACKET, _mean, _fmt
from captures import DEPTH_RANGE, _seed, run, score, require_frames
from defocus.data.captures import capture_stack, random_capture
from defocus.models.factory import create_model
from defocus.predict import PredictOptions, working_stack
from defocus.finetune import PreparedStack, calibrate_stacks
from defocus.optics.forward import ForwardModel
from defocus.optics.sensor import SensorModel
from defocus.models.classical import estimate_noise_sigma
from defocus.color import to_uint8
from defocus.data.stack import FocalStack

cams = [int(a) for a in sys.argv[1].split(",")]
steps = int(sys.argv[2]) if len(sys.argv) > 2 else 200
require_frames(2)
frames = _test_frames()
groups = sorted({e.scene_group for e, _, _ in frames})
halves = [groups[0::2], groups[1::2]]
shipped = create_model(pretrained=True)
default = PredictOptions(depth_range=DEPTH_RANGE)
no_solve = replace(default, solve=False)
for c in cams:
    cap = random_capture(CAMERA_SEED + c, BRACKET, isp=False)
    print(f"camera {c}: K {cap.blur_per_dioptre:.1f} {cap.variant.forward.psf}/{cap.variant.near_psf}", flush=True)
    stacks = {e.id: (e, capture_stack(rgb, depth, cap, seed=_seed(e.id, "finetune", c), name=e.id)) for e, rgb, depth in frames}
    rows = {m: defaultdict(list) for m in ("shipped", "tuned", "shipped ns", "tuned ns")}
    for h, tune in enumerate(halves):
        t0 = time.time()
        data = []
        prepared = []
        for e, st in stacks.values():
            if e.scene_group not in tune:
                continue
            bare = FocalStack(images=st.images, focus_distances_m=st.focus_distances_m, camera=st.camera, name=st.name)
            pred, _ = run(shipped, bare, default)
            ws = working_stack(bare, default, 20.0, False, [])
            order = torch.argsort(bare.focus_distances_m)
            small = ws.small[order].float()
            if small.max() > 1.5: small = small / 255.0
            ps = PreparedStack(name=st.name, frames=to_uint8(small), focus_m=bare.focus_distances_m[order].float(),
                               blur_per_dioptre=ws.blur_per_dioptre[0, order].float(), depth_range=ws.depth_range)
            prepared.append(ps)
            w = pred.working
            assert w.inv_depth.shape[-2:] == small.shape[-2:], (w.inv_depth.shape, small.shape)
            sigma = float(estimate_noise_sigma(small))
            data.append(dict(aif=w.aif.float(), inv=w.inv_depth.float(), sigma=sigma))
        calibrate_stacks(shipped, prepared, progress=False)
        spec = prepared[0].physics
        fm = ForwardModel(spec=spec)
        print(f"  half {h}: {len(prepared)} stacks, physics {spec.psf}/{spec.near_psf}/{spec.light} x{spec.blur_scale}, sigma {[round(d['sigma']*255,2) for d in data]}", flush=True)
        synth = []
        for ps, d in zip(prepared, data):
            with torch.no_grad():
                r = fm.rerender(d["aif"], d["inv"], ps.focus_m[None], ps.blur_per_dioptre[None]).stack
            sens = SensorModel(noise_std=max(d["sigma"], 1.0 / 255))
            for rep in range(2):
                synth.append(dict(x=sens.apply(r, seed=rep)[0], inv=d["inv"][0], fd=ps.focus_m, k=ps.blur_per_dioptre, dr=ps.depth_range))
        model = copy.deepcopy(shipped); model.train()
        opt = torch.optim.Adam(model.parameters(), lr=1e-4)
        g = torch.Generator().manual_seed(h)
        crop = 96
        for step in range(steps):
            batch = [synth[int(torch.randint(len(synth), (1,), generator=g))] for _ in range(4)]
            xs, invs, fds, ks, drs = [], [], [], [], []
            for b in batch:
                H, W = b["x"].shape[-2:]
                y0 = int(torch.randint(H - crop + 1, (1,), generator=g)); x0 = int(torch.randint(W - crop + 1, (1,), generator=g))
                xs.append(b["x"][..., y0:y0+crop, x0:x0+crop]); invs.append(b["inv"][..., y0:y0+crop, x0:x0+crop])
                fds.append(b["fd"]); ks.append(b["k"]); drs.append(b["dr"])
            # frame counts equal within a camera
            x = torch.stack(xs); inv = torch.stack(invs)
            pred = model(x, torch.stack(fds), torch.stack(ks), torch.tensor(drs, dtype=torch.float64))
            loss = ((pred.inv_depth - inv).abs() / inv.clamp_min(1e-3)).mean()
            opt.zero_grad(); loss.backward(); opt.step()
            if step % 50 == 0: print(f"    step {step} loss {loss.item():.4f}", flush=True)
        model.eval()
        print(f"  half {h}: trained in {time.time()-t0:.0f} s", flush=True)
        for e, st in stacks.values():
            if e.scene_group in tune:
                continue
            for name, m, o in (("shipped", shipped, default), ("tuned", model, default), ("shipped ns", shipped, no_solve), ("tuned ns", model, no_solve)):
                pred, _ = run(m, st, o)
                rows[name][e.scene_group].append(score(pred, st))
        print("  " + "; ".join(f"{m} {_fmt(_mean(rows[m]))}" for m in rows), flush=True)
    print(f"camera {c} final: " + "; ".join(f"{m} {_fmt(_mean(rows[m]))}" for m in rows), flush=True)
