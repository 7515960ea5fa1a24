"""The self-supervised training loop: AdamW + warm-up + cosine, a CSV row per epoch, safetensors checkpoints
carrying the resolved config, crash-exact ``--resume``, repeatable per seed, one process or many (``torchrun``).

Files of a run, in ``<out_dir>/<name>/``: ``config.yaml`` (resolved), ``metrics.csv`` (one row per epoch: losses,
learning rate, wall time, validation depth metrics on held-out procedural scenes), ``last.safetensors`` (weights at
the last epoch end), ``best.safetensors`` (lowest validation AbsRel) and ``resume/step-<STEP>.ckpt`` (everything
``--resume`` needs, see :mod:`defocus.train.resume`; at epoch ends and every ``save_every_steps``); with
``save_epoch_weights`` also ``epochs/epoch-<NNN>.safetensors`` (every epoch's weights, for accuracy-per-epoch curves
on real frames: ``benchmarks/bench_epochs.py``).

Exactness: the samples of a step depend only on the seed and the data shards (not on the number of processes, see
:class:`~defocus.data.sweeps.FocalSweepSampler`), the model draws no random numbers, and a resume checkpoint restores
every state the next step reads; so a run killed at any moment and resumed ends with the same weights, bit for bit,
as one never interrupted (same thread count and device; on GPUs with ``deterministic: true``). Distributed: each rank draws the streams of its own data
shards, DistributedDataParallel averages the gradients, rank 0 alone validates and writes files.
"""

from __future__ import annotations

import contextlib
import csv
import io
import math
import os
import random
import signal
import time
from pathlib import Path
from typing import Callable

import numpy as np
import torch
from tqdm import tqdm

from defocus.data.procedural import SCENE_DEPTH_RANGE_M, VALIDATION_SEED_START, make_scene
from defocus.data.sweeps import DataShards, FocalSweepSampler, SweepGroup, build_training_groups
from defocus.data.synthesis import protocol_names, synthesize_stack
from defocus.errors import DefocusError, InputError
from defocus.files import atomic_write
from defocus.losses.selfsup import SelfSupervisedLoss
from defocus.losses.terms import LOSS_TERMS
from defocus.metrics import depth_metrics, mean_metrics
from defocus.models.checkpoint import save_checkpoint
from defocus.models.daifnet import DAIFNet
from defocus.models.factory import create_model
from defocus.optics.camera import get_preset
from defocus.optics.forward import ForwardModel, ForwardSpec
from defocus.progress import progress_bar
from defocus.train import faults
from defocus.train.config import TrainConfig, dump_config, loss_spec_for
from defocus.train.distributed import DistContext, all_reduce_sum, barrier, gather_to_all, init_distributed, shutdown
from defocus.train.resume import load_latest, remove_stale_temporaries, save_resume_checkpoint


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % (2**32))
    torch.manual_seed(seed)


def make_validation_set(n_scenes: int, size: tuple[int, int] = (96, 96)) -> list[dict]:
    """Held-out procedural stacks with ground truth, for monitoring only (never fed to the loss): every preset under
    every registered protocol (:func:`~defocus.data.synthesis.protocol_names`)."""
    items = []
    for preset_name in ("nyuv2", "defocusnet"):
        preset = get_preset(preset_name)
        for protocol in protocol_names():
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
    dev = next(model.parameters()).device
    per = []
    for it in items:
        fd = it["focus"][None]
        k = it["camera"].blur_per_dioptre(fd)
        dr = torch.tensor(it["depth_range"], dtype=torch.float32)[None]
        pred = model(it["stack"][None].to(dev), fd.to(dev), k.to(dev), dr.to(dev))
        per.append(depth_metrics(pred.depth_map.cpu(), it["depth"][0], depth_range_m=it["depth_range"]))
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


CSV_FIELDS = ["epoch", "step", "loss", *LOSS_TERMS, "lr", "seconds", "val_abs_rel", "val_rmse", "val_delta1",
              "val_rerender"]


def data_shards(cfg: TrainConfig, ctx: DistContext) -> DataShards:
    """This rank's data shards: ``data.shards`` (0: one per process), rank r owning shards r, r + W, ..."""
    count = cfg.data.shards or ctx.world_size
    if count % ctx.world_size:
        raise InputError(f"data.shards={count} is not a multiple of the {ctx.world_size} processes")
    if cfg.optim.batch_size % count:
        raise InputError(f"optim.batch_size={cfg.optim.batch_size} (global) is not a multiple of the {count} data "
                         "shards: each shard draws an equal share")
    return DataShards(count, tuple(range(ctx.rank, count, ctx.world_size)))


def _write_csv(path: Path, rows: list[dict]) -> None:
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(CSV_FIELDS)
    for row in rows:
        w.writerow([row.get(k, "") for k in CSV_FIELDS])
    text = buf.getvalue()
    atomic_write(path, lambda tmp: tmp.write_text(text), "metrics")


def train(cfg: TrainConfig, resume: bool = False, progress: bool = True, config_dict: dict | None = None,
          groups: list[SweepGroup] | None = None,
          validator: Callable[[torch.nn.Module], dict[str, float]] | None = None) -> Path:
    """Runs (or resumes) training; returns the run folder. Under ``torchrun`` every rank calls this; rank 0 alone
    writes files and shows progress. Errors on a rank of several name the rank.

    ``groups`` replaces the training data the config describes (fine-tuning passes the user's prepared stacks);
    ``validator`` (model → {"val_rerender": ...}) is called after every epoch on rank 0 besides the procedural
    validation scenes, and where there are none, its ``val_rerender`` (lower is better) chooses best.safetensors."""
    ctx = init_distributed(cfg.device, cfg.dist_backend, cfg.dist_timeout_s)
    previous = None
    if ctx.distributed:
        # torchrun stops the surviving ranks with SIGTERM when one fails: end with one line, not a silent death.
        def on_term(signum, frame):
            raise DefocusError("stopped by the launcher (another rank failed or the job was cancelled)")

        previous = signal.signal(signal.SIGTERM, on_term)
    try:
        return _train(cfg, ctx, resume, progress and ctx.is_main, config_dict, groups, validator)
    except DefocusError as exc:
        if ctx.distributed:
            raise DefocusError(f"rank {ctx.rank} of {ctx.world_size}: {exc}") from None
        raise
    except RuntimeError as exc:
        if ctx.distributed:  # a collective that lost its peers (gloo/nccl errors and timeouts)
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise DefocusError(f"rank {ctx.rank} of {ctx.world_size}: training failed: {first}") from None
        raise
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)
        shutdown(ctx)


def check_data_paths(data) -> None:
    """An InputError, before any work, for a data path of the config that does not exist: ``data.rgbd_index`` (a
    file), ``data.stack_dirs`` and ``data.rgbd_dirs`` (folders). Relative paths are read from the current folder."""
    where = f"relative paths are read from {Path.cwd()}"
    if data.rgbd_index and not Path(data.rgbd_index).is_file():
        raise InputError(f"config key data.rgbd_index: {data.rgbd_index} does not exist ({where}); give the path of "
                         "an INDEX.csv, or clear the key with data.rgbd_index=''", field="data.rgbd_index")
    for key in ("stack_dirs", "rgbd_dirs"):
        for folder in getattr(data, key):
            if not Path(folder).is_dir():
                raise InputError(f"config key data.{key}: folder {folder} does not exist ({where})",
                                 field=f"data.{key}")


def initial_weights(cfg: TrainConfig, model: torch.nn.Module) -> None:
    """Loads the starting weights ``cfg.init`` ("shipped" or a checkpoint) into ``model``: an InputError where they
    are another model or another model config than the run's."""
    source = create_model(pretrained=True) if cfg.init == "shipped" else create_model(checkpoint=cfg.init)
    meta = getattr(source, "checkpoint_metadata", {})
    what = "the shipped weights" if cfg.init == "shipped" else f"checkpoint {cfg.init}"
    if meta.get("model_name") != cfg.model.name:
        raise InputError(f"init: {what} hold model {meta.get('model_name')}, the run trains {cfg.model.name}",
                         field="init")
    wanted = {k: _plain(v) for k, v in model.config.to_dict().items()} if hasattr(model, "config") else {}
    have = dict(meta.get("model_config", {}))
    diff = sorted(k for k in wanted if have.get(k) != wanted[k])
    if diff:
        raise InputError(f"init: {what} have another model config than the run ({', '.join(diff)}); set model.config "
                         "to theirs", field="init")
    model.load_state_dict(source.state_dict())


def _plain(value):
    return list(value) if isinstance(value, tuple) else value


def _train(cfg: TrainConfig, ctx: DistContext, resume: bool, progress: bool, config_dict: dict | None,
           groups: list[SweepGroup] | None = None,
           validator: Callable[[torch.nn.Module], dict[str, float]] | None = None) -> Path:
    if cfg.num_threads > 0:
        torch.set_num_threads(cfg.num_threads)
    elif ctx.distributed and ctx.device.type == "cpu":
        # Ranks on one node share its cores (torchrun's own default is 1 thread each).
        local = int(os.environ.get("LOCAL_WORLD_SIZE", ctx.world_size))
        torch.set_num_threads(max(1, (os.cpu_count() or 1) // local))
    seed_everything(cfg.seed)
    if cfg.deterministic:
        # GPU kernels that pick algorithms by timing or reduce with atomics are what makes CUDA runs differ;
        # CPU runs are deterministic for a fixed thread count anyway.
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        torch.use_deterministic_algorithms(True, warn_only=True)
        torch.backends.cudnn.benchmark = False
    shards = data_shards(cfg, ctx)
    run_dir = Path(cfg.out_dir) / cfg.name
    if not resume and (run_dir / "metrics.csv").exists():
        raise InputError(f"run folder {run_dir} already has a run: resume it or choose another run name")
    state = None
    if resume:
        # Every rank reads the same file (a shared file system across nodes), so all agree on where they start.
        state, _ = load_latest(run_dir, warn=(lambda m: tqdm.write(m)) if ctx.is_main else (lambda m: None))
    if groups is None:
        check_data_paths(cfg.data)  # before anything is rendered or written
    barrier(ctx)  # no rank creates files before every rank has checked the folder
    resolved = config_dict or cfg.to_dict()
    created = not run_dir.exists()
    if ctx.is_main:
        run_dir.mkdir(parents=True, exist_ok=True)
        remove_stale_temporaries(run_dir)
        config_text = dump_config(cfg)
        atomic_write(run_dir / "config.yaml", lambda tmp: tmp.write_text(config_text), "config")

    if groups is None:
        try:
            groups = build_training_groups(cfg.data, progress=progress, shards=shards)
        except BaseException:
            # A run that failed before its first step leaves no folder behind that a rerun would trip over.
            if ctx.is_main and created and not (run_dir / "metrics.csv").exists():
                import shutil

                shutil.rmtree(run_dir, ignore_errors=True)
            raise
    sampler = FocalSweepSampler(groups, cfg.data, seed=cfg.seed, shards=shards)
    per_stream = cfg.optim.batch_size // shards.count
    model = create_model(cfg.model.name, **cfg.model.config)
    if state is None and cfg.init:
        initial_weights(cfg, model)
    model = model.to(ctx.device)  # before the optimiser sees it
    optimizer = torch.optim.AdamW(model.parameters(), lr=cfg.optim.lr, weight_decay=cfg.optim.weight_decay)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, _lr_lambda(cfg))
    loss_fn = SelfSupervisedLoss(cfg.loss)
    # The loss's forward model of each group, by the group's protocol name or its own ForwardSpec (a batch's
    # "physics"): loss_spec_for; one ForwardModel per distinct spec.
    models: dict[ForwardSpec, ForwardModel] = {}
    val_items = make_validation_set(cfg.val_scenes) if cfg.val_scenes > 0 and ctx.is_main else []

    spe = cfg.optim.steps_per_epoch
    step, best, elapsed, rows = 0, float("inf"), 0.0, []
    sums: dict[str, float] = {}
    if state is not None:
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        sampler.set_state(state["sampler"])
        torch.set_rng_state(state["torch_rng"])
        np.random.set_state(state["numpy_rng"])
        random.setstate(state["python_rng"])
        step, best, elapsed, rows = state["step"], state["best"], state["elapsed"], state["rows"]
        partial = state["epoch_sums"]  # one dict per rank of the run that wrote it
        if len(partial) == ctx.world_size:
            sums = dict(partial[ctx.rank])
        elif ctx.is_main:  # resumed on another number of processes: rank 0 carries the total
            sums = {k: sum(p.get(k, 0.0) for p in partial) for k in partial[0]}
        if step > cfg.optim.epochs * spe:
            raise DefocusError(f"the checkpoint is at step {step}, beyond optim.epochs x steps_per_epoch")

    loss_fn.to(ctx.device)
    net = model
    if ctx.distributed:
        net = torch.nn.parallel.DistributedDataParallel(
            model, device_ids=[ctx.device] if ctx.device.type == "cuda" else None)
    csv_path = run_dir / "metrics.csv"
    if ctx.is_main:
        _write_csv(csv_path, rows)  # on resume: exactly the rows of the checkpoint (none lost, none repeated)

    def batch_physics(batch: dict) -> ForwardModel:
        # A random-variant group carries its own spec; a protocol's group is looked up by the protocol's name.
        spec = loss_spec_for(cfg, batch["physics"] if batch.get("physics") is not None else batch["protocol"])
        if spec not in models:
            models[spec] = ForwardModel(spec=spec)
        return models[spec]

    def save_resume() -> None:
        every_rank = gather_to_all(ctx, {"sampler": sampler.state(), "sums": sums})
        if not ctx.is_main:
            return
        sampler_state: dict = {}
        for r in every_rank:
            sampler_state.update(r["sampler"])
        payload = {
            "step": step, "model": {k: v.detach().cpu() for k, v in model.state_dict().items()},
            "optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(), "sampler": sampler_state,
            "torch_rng": torch.get_rng_state(), "numpy_rng": np.random.get_state(), "python_rng": random.getstate(),
            "epoch_sums": [r["sums"] for r in every_rank], "best": best, "elapsed": elapsed, "rows": rows,
            "config": resolved, "world_size": ctx.world_size,
        }
        save_resume_checkpoint(run_dir, step, payload, cfg.keep_checkpoints)

    net.train()
    while step < cfg.optim.epochs * spe:
        epoch = step // spe
        t0 = time.time()
        bar = progress_bar(total=spe, initial=step % spe, desc=f"epoch {epoch + 1}/{cfg.optim.epochs}",
                           enabled=progress, leave=False)
        while True:
            streams = sampler.sample_streams(per_stream)
            optimizer.zero_grad(set_to_none=True)
            loss_value, parts_sum = 0.0, {}
            for j, batch in enumerate(streams):
                last_stream = j == len(streams) - 1
                # Gradients of the streams of this rank accumulate locally; DDP averages over ranks on the last.
                sync = contextlib.nullcontext() if (last_stream or not ctx.distributed) else net.no_sync()
                with sync:
                    b = {k: v.to(ctx.device) if torch.is_tensor(v) else v for k, v in batch.items()}
                    pred = net(b["stack"], b["focus"], b["blur_per_dioptre"], b["depth_range"])
                    loss, parts = loss_fn(b["stack"], pred, batch_physics(b), b["focus"], b["blur_per_dioptre"])
                    if not torch.isfinite(loss):
                        raise DefocusError(f"training diverged at step {step} (loss {float(loss)}); lower optim.lr")
                    (loss / len(streams)).backward()
                loss_value += loss.item() / len(streams)
                for k, v in parts.items():
                    parts_sum[k] = parts_sum.get(k, 0.0) + v / len(streams)
            if cfg.optim.grad_clip > 0:
                torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.optim.grad_clip)
            optimizer.step()
            scheduler.step()
            step += 1
            # In units of the global mean (each rank adds its share), so that partial sums survive a resume on
            # another number of processes.
            sums["loss"] = sums.get("loss", 0.0) + loss_value / ctx.world_size
            for k, v in parts_sum.items():
                sums[k] = sums.get(k, 0.0) + v / ctx.world_size
            bar.update(1)
            bar.set_postfix(loss=f"{loss_value:.2f}")
            faults.check("step", step, ctx.rank)
            if step % spe == 0:
                break
            if cfg.save_every_steps > 0 and step % cfg.save_every_steps == 0:
                elapsed += time.time() - t0
                t0 = time.time()
                save_resume()
        bar.close()
        elapsed += time.time() - t0
        total = all_reduce_sum(ctx, {k: sums.get(k, 0.0) for k in ["loss", *LOSS_TERMS] if k in sums})
        sums = {}
        row = {k: v / spe for k, v in total.items()}
        row.update(epoch=epoch + 1, step=step, lr=scheduler.get_last_lr()[0], seconds=round(elapsed, 2))
        if ctx.is_main:
            if val_items:
                row.update(validate(model, val_items))
                model.train()
            if validator is not None:
                row.update(validator(model))
                model.train()
            rows.append(row)
            extra = {"epoch": epoch + 1, "step": step, **{k: row[k] for k in row if k.startswith("val_")}}
            best_key = "val_abs_rel" if val_items else "val_rerender" if "val_rerender" in row else None
            if best_key is not None and row[best_key] < best:
                best = row[best_key]
                save_checkpoint(run_dir / "best.safetensors", model, cfg.model.name, resolved, extra)
        at_end = step == cfg.optim.epochs * spe
        if (epoch + 1) % cfg.save_every_epochs == 0 or at_end:
            if ctx.is_main:
                save_checkpoint(run_dir / "last.safetensors", model, cfg.model.name, resolved, extra)
            save_resume()
        if cfg.save_epoch_weights and ctx.is_main:  # every epoch, whatever save_every_epochs says
            (run_dir / "epochs").mkdir(exist_ok=True)
            save_checkpoint(run_dir / "epochs" / f"epoch-{epoch + 1:03d}.safetensors", model, cfg.model.name,
                            resolved, extra)
        if ctx.is_main:
            _write_csv(csv_path, rows)
            if progress:
                msg = f"epoch {epoch + 1}: loss {row['loss']:.3f}"
                if val_items:
                    msg += f", val AbsRel {row['val_abs_rel']:.3f}, δ1 {row['val_delta1']:.3f}"
                if "val_rerender" in row:
                    msg += f", held-out re-rendering error {row['val_rerender']:.5f}"
                tqdm.write(msg)
    barrier(ctx)
    return run_dir
