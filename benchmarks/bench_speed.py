"""Speed of inference and training, as ratios measured in one run (timings on a shared CPU are noisy).

* inference latency (median of repeats) of the network on a 5 x 3 x 240 x 320 stack, beside the classical
  baseline on the same stack, and with --refine-steps;
* training throughput (stacks per second) of the release configuration's model, crop size and batch size.

Usage: python benchmarks/bench_speed.py [--checkpoint W] [--threads 2] [--repeats 7]
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

import torch

from defocus.demo import make_test_stack
from defocus.models.classical import classical_depth_from_focus
from defocus.predict import predict_stack
from defocus.losses.selfsup import SelfSupervisedLoss
from defocus.optics.forward import ForwardModel
from defocus.models.factory import count_parameters, create_model
from defocus.train.config import load_config

ROOT = Path(__file__).resolve().parents[1]


def median_time(fn, repeats: int) -> float:
    fn()  # warm-up
    ts = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        ts.append(time.perf_counter() - t)
    return statistics.median(ts)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--checkpoint", type=Path)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=7)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    model = create_model(checkpoint=args.checkpoint) if args.checkpoint else create_model(pretrained=True)
    meta = model.checkpoint_metadata
    stack = make_test_stack("nyuv2", "paper", 0)  # 5 x 3 x 240 x 320
    rows = []
    t_cls = median_time(lambda: classical_depth_from_focus(stack.images, stack.focus_distances_m), args.repeats)
    t_net = median_time(lambda: predict_stack(model, stack), args.repeats)
    t_ref = median_time(lambda: predict_stack(model, stack, refine_steps=20), max(1, args.repeats // 3))
    rows.append(("classical baseline (SML 9x9, 3-point interpolation)", t_cls))
    rows.append((f"network {meta['model_name']} ({count_parameters(model) / 1e6:.2f} M parameters)", t_net))
    rows.append(("network + 20 refinement steps", t_ref))

    cfg = load_config("release")
    train_model = create_model(cfg.model.name)
    loss_fn = SelfSupervisedLoss(cfg.loss)
    physics = ForwardModel.from_family("disk")
    opt = torch.optim.AdamW(train_model.parameters(), lr=1e-4)
    b, n, (h, w) = cfg.optim.batch_size, 5, cfg.data.size
    gen = torch.Generator().manual_seed(0)
    batch = torch.rand(b, n, 3, h, w, generator=gen)
    fd = torch.tensor([[1.0, 1.5, 2.5, 4.0, 6.0]]).expand(b, n)
    k = stack.camera.blur_per_dioptre(fd)
    dr = torch.tensor([[0.1, 10.0]]).expand(b, 2)

    def step() -> None:
        pred = train_model(batch, fd, k, dr)
        loss, _ = loss_fn(batch, pred, physics, fd, k)
        opt.zero_grad()
        loss.backward()
        opt.step()

    t_step = median_time(step, args.repeats)
    lines = [
        f"torch threads: {args.threads}; stack 5 x 3 x 240 x 320; median of {args.repeats} runs",
        "",
        "| what | median seconds | relative to classical |",
        "|---|---:|---:|",
    ]
    lines += [f"| {name} | {t:.3f} | {t / t_cls:.1f}x |" for name, t in rows]
    lines += [
        "",
        f"training step ({cfg.model.name}, batch {b} x N={n} x {h}x{w}, disk/linear-light loss): "
        f"{t_step:.3f} s -> {b / t_step:.1f} stacks/s",
    ]
    text = "\n".join(lines)
    print(text)
    out = ROOT / "benchmarks" / "results"
    out.mkdir(parents=True, exist_ok=True)
    (out / "speed.md").write_text(text + "\n")


if __name__ == "__main__":
    main()
