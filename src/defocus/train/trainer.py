"""The self-supervised training loop: AdamW + warm-up + cosine, a CSV row per epoch, safetensors
checkpoints carrying the resolved config, exact ``--resume`` from the last epoch boundary, repeatable per seed.

Files of a run, in ``<out_dir>/<name>/``: ``config.yaml`` (resolved), ``metrics.csv`` (one row per epoch: losses,
learning rate, wall time, validation depth metrics on held-out procedural scenes), ``last.safetensors`` +
``last.state.pt`` (resume), ``best.safetensors`` (lowest validation AbsRel).
"""

from __future__ import annotations

import csv
import math
import random
import time
from dataclasses import asdict
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from defocus.data.procedural import SCENE_DEPTH_RANGE_M, VALIDATION_SEED_START, make_scene
from defocus.data.sweeps import FocalSweepSampler, build_training_groups
from defocus.data.synthesis import synthesize_stack
from defocus.errors import DefocusError
from defocus.files import atomic_write
from defocus.losses.selfsup import SelfSupervisedLoss
from defocus.losses.terms import LOSS_TERMS
from defocus.metrics import depth_metrics, mean_metrics
from defocus.models.checkpoint import load_checkpoint, save_checkpoint
from defocus.models.daifnet import DAIFNet
from defocus.models.factory import create_model
from defocus.optics.camera import get_preset
from defocus.train.config import TrainConfig, dump_config


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % (2**32))
    torch.manual_seed(seed)


def make_validation_set(n_scenes: int, size: tuple[int, int] = (96, 96)) -> list[dict]:
    """Held-out procedural stacks with ground truth, for monitoring only (never fed to the loss)."""
    items = []
    for preset_name in ("nyuv2", "defocusnet"):
        preset = get_preset(preset_name)
        for protocol in ("paper", "realistic"):
            for i in range(n_scenes):
                seed = VALIDATION_SEED_START + 1000 * len(items) + i
                aif, depth = make_scene(seed, size[0], size[1], SCENE_DEPTH_RANGE_M[preset_name])
                fd = torch.tensor(preset.focus_distances_m, dtype=torch.float32)
                stack = synthesize_stack(aif, depth, fd, preset.camera, protocol, seed=seed)
                items.append(
                    {"stack": stack, "focus": fd, "camera": preset.camera, "depth": depth,
                     "depth_range": preset.depth_range_m, "group": f"{preset_name}/{protocol}"}
                )
    return items


@torch.no_grad()
def validate(model: DAIFNet, items: list[dict]) -> dict[str, float]:
    model.eval()
    per = []
    for it in items:
        fd = it["focus"][None]
        k = it["camera"].blur_per_dioptre(fd)
        dr = torch.tensor(it["depth_range"], dtype=torch.float32)[None]
        pred = model(it["stack"][None], fd, k, dr)
        per.append(depth_metrics(pred.depth_map, it["depth"][0], depth_range_m=it["depth_range"]))
    model.train()
    m = mean_metrics(per)
    return {"val_abs_rel": m["abs_rel"], "val_rmse": m["rmse"], "val_delta1": m["delta1"]}


def _lr_lambda(cfg: TrainConfig):
    total = max(1, cfg.optim.epochs * cfg.optim.steps_per_epoch)
    warm = max(0, cfg.optim.warmup_steps)

    def f(step: int) -> float:
        if step < warm:
            return (step + 1) / warm
        t = (step - warm) / max(1, total - warm)
        return 0.5 * (1.0 + math.cos(math.pi * min(1.0, t)))

    return f


def train(cfg: TrainConfig, resume: bool = False, progress: bool = True, config_dict: dict | None = None) -> Path:
    """Runs (or resumes) training; returns the run folder."""
    if cfg.num_threads > 0:
        torch.set_num_threads(cfg.num_threads)
    seed_everything(cfg.seed)
    run_dir = Path(cfg.out_dir) / cfg.name
    last = run_dir / "last.safetensors"
    state_path = run_dir / "last.state.pt"
    if resume and not state_path.is_file():
        raise DefocusError(f"nothing to resume in {run_dir}: no last.state.pt")
    if not resume and (run_dir / "metrics.csv").exists():
        raise DefocusError(f"run folder {run_dir} already has a run: pass --resume or choose another name=")
    run_dir.mkdir(parents=True, exist_ok=True)
    resolved = config_dict or cfg.to_dict()
    config_text = dump_config(cfg)
    atomic_write(run_dir / "config.yaml", lambda tmp: tmp.write_text(config_text), "config")

    groups = build_training_groups(cfg.data, progress=progress)
    sampler = FocalSweepSampler(groups, cfg.data, seed=cfg.seed)
    model = create_model(cfg.model.name, **cfg.model.config)
    optimizer = torch.optim.AdamW(model.parameters(), lr=cfg.optim.lr, weight_decay=cfg.optim.weight_decay)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, _lr_lambda(cfg))
    loss_fn = SelfSupervisedLoss(cfg.loss)
    default_physics = cfg.loss.forward_model()
    # The forward model of the loss for each data source's protocol (real stacks use data.stack_protocol).
    physics: dict = {
        protocol: cfg.loss.forward_model(psf=pl.get("psf"), linear_light=pl.get("linear_light"))
        for protocol, pl in asdict(cfg.protocol_loss).items()
    }
    val_items = make_validation_set(cfg.val_scenes) if cfg.val_scenes > 0 else []

    start_epoch, best, elapsed = 0, float("inf"), 0.0
    if resume:
        state = torch.load(state_path, weights_only=False)
        loaded, _ = load_checkpoint(last)
        model.load_state_dict(loaded.state_dict())
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        sampler.set_state(state["sampler"])
        torch.set_rng_state(state["torch_rng"])
        start_epoch, best, elapsed = state["epoch"], state["best"], state.get("elapsed", 0.0)

    csv_path = run_dir / "metrics.csv"
    fields = ["epoch", "step", "loss", *LOSS_TERMS, "lr", "seconds", "val_abs_rel", "val_rmse", "val_delta1"]
    if not csv_path.exists():
        with csv_path.open("w", newline="") as f:
            csv.writer(f).writerow(fields)
    model.train()
    step = start_epoch * cfg.optim.steps_per_epoch
    for epoch in range(start_epoch, cfg.optim.epochs):
        t0 = time.time()
        sums: dict[str, float] = {}
        bar = tqdm(range(cfg.optim.steps_per_epoch), desc=f"epoch {epoch + 1}/{cfg.optim.epochs}",
                   disable=not progress, leave=False)
        for _ in bar:
            batch = sampler.sample(cfg.optim.batch_size)
            pred = model(batch["stack"], batch["focus"], batch["blur_per_dioptre"], batch["depth_range"])
            if batch.get("physics"):  # a group with its own (randomised) forward model
                key = tuple(sorted(batch["physics"].items()))
                if key not in physics:
                    physics[key] = default_physics.replace(**batch["physics"])
                batch_physics = physics[key]
            else:
                batch_physics = physics.get(batch["protocol"], default_physics)
            loss, parts = loss_fn(batch["stack"], pred, batch_physics, batch["focus"], batch["blur_per_dioptre"])
            if not torch.isfinite(loss):
                raise DefocusError(f"training diverged at step {step} (loss {float(loss)}); lower optim.lr")
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            if cfg.optim.grad_clip > 0:
                torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.optim.grad_clip)
            optimizer.step()
            scheduler.step()
            step += 1
            sums["loss"] = sums.get("loss", 0.0) + loss.item()
            for k, v in parts.items():
                sums[k] = sums.get(k, 0.0) + v
            bar.set_postfix(loss=f"{loss.item():.2f}")
        elapsed += time.time() - t0
        row = {k: v / cfg.optim.steps_per_epoch for k, v in sums.items()}
        row.update(epoch=epoch + 1, step=step, lr=scheduler.get_last_lr()[0], seconds=round(elapsed, 2))
        if val_items:
            row.update(validate(model, val_items))
        with csv_path.open("a", newline="") as f:
            csv.writer(f).writerow([row.get(k, "") for k in fields])
        extra = {"epoch": epoch + 1, "step": step, **{k: row[k] for k in row if k.startswith("val_")}}
        if val_items and row["val_abs_rel"] < best:
            best = row["val_abs_rel"]
            save_checkpoint(run_dir / "best.safetensors", model, cfg.model.name, resolved, extra)
        if (epoch + 1) % cfg.save_every_epochs == 0 or epoch + 1 == cfg.optim.epochs:
            save_checkpoint(last, model, cfg.model.name, resolved, extra)
            state = {"optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(),
                     "sampler": sampler.state(), "torch_rng": torch.get_rng_state(), "epoch": epoch + 1,
                     "best": best, "elapsed": elapsed}
            atomic_write(state_path, lambda tmp: torch.save(state, tmp), "training state")
        if progress:
            msg = f"epoch {epoch + 1}: loss {row['loss']:.3f}"
            if val_items:
                msg += f", val AbsRel {row['val_abs_rel']:.3f}, δ1 {row['val_delta1']:.3f}"
            tqdm.write(msg)
    return run_dir
