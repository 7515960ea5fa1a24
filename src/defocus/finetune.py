"""Fine-tuning a network on the user's own unlabeled focal stacks (``defocus finetune``), fully self-supervised.

The shipped network was trained on rendered sweeps; a real camera differs (its PSF, its tone curve, its noise, its
blur per dioptre). Fine-tuning starts from the shipped weights (or a given checkpoint) and trains on the user's
stacks only, with the loss of training (re-render the stack from the predicted depth and AIF and compare, plus the
prior-consistency and sharpness terms), a small learning rate and a schedule of minutes on a CPU:

1. **Read and check every stack first** (:func:`prepare_stacks`): focus and camera exactly as ``defocus predict``
   reads them (stack.json, EXIF, the sensor table, the focus and camera flags); a stack that cannot be used (no
   focus distances, no camera, one image, too small at the working size, unreadable) is named with its reason, and
   the run is refused before anything is trained or written.
2. **Prepare them as predict does** (:func:`defocus.predict.working_stack`): alignment, exposure normalisation and
   the automatic working size, so that the network is tuned on what it will be given. The frames are sorted by
   focus distance (the sampler draws one frame per focus bin).
3. **The loss's forward model** is self-calibrated on the stacks, as ``predict --refine-psf auto`` does on one
   (:func:`defocus.calibrate.calibrate_forward_model`: the PSF shape, light model and effective aperture that best
   re-render a stack from the starting network's estimate), pooled over up to three of them into one model for
   all (:func:`calibrate_stacks`); or one named family.
4. **Held-out part**: about ``holdout`` of the stacks (at least one, when there are two or more) never reach the
   loss; with a single stack, its right-hand strip is held out instead. After every epoch, and once for the starting
   weights, the re-rendering error (the loss's photometric term, SSIM + L1) of the held-out part under its own forward
   model is computed: the ``val_rerender`` column of ``metrics.csv``; the weights of the epoch where it is lowest are
   exported — unless it is not at least :data:`MIN_IMPROVEMENT` below the starting weights', and then the starting
   weights are (it is the only check without ground truth; see the README for what it can and cannot tell).
   **Re-synthesis** (the default: ``resynthesis_steps`` = :data:`RESYNTHESIS_STEPS`; 0 trains with the
   re-rendering loss's epochs instead; BENCHMARKS.md "Fine-tuning by re-synthesis"): every stack's default-path estimate (the starting network, the
   classical term, the global solve: :func:`pseudo_scene`) is a pseudo-scene — its solved depth and AIF — that the
   self-calibrated forward model re-renders (:func:`resynthesise`, :data:`RESYNTHESIS_COPIES` copies with 8-bit noise
   at the stack's own level); the network is then trained for N steps on the relative error of its inverse depth
   against the pseudo-scene's (:func:`train_on_resynthesis`): depth supervision under the camera's own physics, still
   without any ground truth. The check on the held-out part is then the same error on *its* re-synthesised stacks
   (:func:`pseudo_depth_error`), which must fall by :data:`MIN_IMPROVEMENT`, and the held-out *real* stacks'
   re-rendering error must not rise (the re-synthesised stacks share the calibrated optics; the real ones are the
   check that those optics were right enough to learn from).
5. **Export**: the weights with the starting weights' confidence calibration (:mod:`defocus.confidence`; the
   user has no ground truth to refit it) and a ``finetune`` record (stacks, held-out stacks, errors) in their
   metadata, ready for ``defocus predict --checkpoint``.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from defocus.data.stack import FocalStack
from defocus.errors import DefocusError, InputError

#: The fine-tuned weights are exported only where their held-out re-rendering error is at least this fraction below
#: the starting weights'; otherwise the starting weights are (with a line saying so). Set after
#: benchmarks/bench_finetune.py: on a camera whose PSF the loss's forward models cannot represent (signed spherical
#: aberration) the error fell by 0.02-0.5 % while depth got worse; where the network improved it fell by 1.3-2.7 %.
MIN_IMPROVEMENT = 0.01
#: The packaged config fine-tuning starts from (``defocus/configs/finetune.yaml``).
FINETUNE_CONFIG = "finetune"
#: Longest side (working pixels) of the held-out crops the re-rendering error is computed on (bounded time per epoch).
VALIDATION_CROP = 192
#: Longest side of the copy the forward model is self-calibrated on (calibrate_forward_model's own default), and how
#: many stacks it is calibrated on at most.
CALIBRATION_SIZE = 128
CALIBRATION_STACKS = 3


#: Re-synthesis (module docstring, step 4): its steps by default (``defocus finetune --resynthesis-steps``; 0 = the
#: re-rendering loss's epochs instead), the copies rendered per stack, the training crop (working px), batch size,
#: learning rate (Adam) — those measured in benchmarks/bench_finetune.py (BENCHMARKS.md, "Fine-tuning by
#: re-synthesis").
RESYNTHESIS_STEPS = 200
RESYNTHESIS_COPIES = 2
RESYNTHESIS_CROP = 96
RESYNTHESIS_BATCH = 4
RESYNTHESIS_LR = 1e-4


@dataclass
class PreparedStack:
    """One user stack as the network will be given it: the working-size frames sorted by focus distance.

    Attributes:
        name: the stack's name; frames: (N, 3, h, w) uint8; focus_m: (N,) metres; blur_per_dioptre: (N,) K at the
        working size, pixels per dioptre; depth_range: (near, far) metres; physics: the loss's forward model (set by
        :func:`calibrate_stacks`); warnings: what the preparation noticed (exposure gains, alignment).
    """

    name: str
    frames: torch.Tensor
    focus_m: torch.Tensor
    blur_per_dioptre: torch.Tensor
    depth_range: tuple[float, float]
    physics: Any = None
    warnings: list[str] = field(default_factory=list)

    def float_frames(self) -> torch.Tensor:
        return self.frames.float() / 255.0


def stack_problem(stack: FocalStack, flags: bool = False) -> str | None:
    """Why ``stack`` cannot be fine-tuned on (one phrase), or None; with ``flags``, naming the command-line flags
    that would fix it."""
    if stack.provenance.get("relative"):
        given = "--focus or --focus-diopters" if flags else "focus distances in metres or dioptres"
        return f"no focus distances (give {given}, or focus_distances_m in stack.json): fine-tuning needs metric focus"
    if stack.camera is None:
        from defocus.data.sources import missing_camera_message

        return missing_camera_message(stack.provenance.get("camera", {}), stack.name, flags=flags)
    if stack.num_images < 2:
        return "a single image: the loss needs at least two focus settings"
    if len(set(stack.focus_distances_m.tolist())) < 2:
        return "every image has the same focus distance"
    return None


def prepare_stacks(
    read: Callable[[Path], FocalStack], folders: Sequence[Path], crop: Sequence[int], target_blur_per_dioptre: float,
    progress: bool = True, flags: bool = False,
) -> tuple[list[PreparedStack], list[str]]:
    """Reads every folder with ``read`` and prepares it (module docstring, steps 1-2).

    Returns (the prepared stacks, one line per folder that cannot be used: ``"<folder>: <reason>"``). Nothing is
    written; every folder is read even after a failure, so that all problems are reported at once.
    """
    from defocus.color import to_uint8
    from defocus.predict import PredictOptions, working_stack
    from defocus.progress import progress_bar

    prepared, problems = [], []
    for folder in progress_bar(folders, desc="reading stacks", enabled=progress, leave=False):
        try:
            st = read(folder)
        except DefocusError as exc:
            problems.append(f"{folder}: {exc}")
            continue
        why = stack_problem(st, flags)
        if why is None:
            warnings: list[str] = []
            try:
                ws = working_stack(st, PredictOptions(), target_blur_per_dioptre, in_place=True, warnings=warnings)
            except DefocusError as exc:
                problems.append(f"{folder}: {exc}")
                continue
            h, w = ws.working_size
            if h < crop[0] or w < crop[1]:
                why = (f"{w}x{h} px at the working size, smaller than the training crop {crop[1]}x{crop[0]} "
                       "(lower data.size)")
            else:
                order = torch.argsort(st.focus_distances_m)
                prepared.append(PreparedStack(
                    name=st.name, frames=to_uint8(ws.small[order]), focus_m=st.focus_distances_m[order].float(),
                    blur_per_dioptre=ws.blur_per_dioptre[0, order].float(), depth_range=ws.depth_range,
                    warnings=warnings))
        if why is not None:
            problems.append(f"{folder}: {why}")
        del st
    return prepared, problems


def check_holdout(holdout: float) -> float:
    """The held-out fraction, checked: an InputError unless 0 < ``holdout`` < 1."""
    if not 0.0 < holdout < 1.0:
        raise InputError(f"the held-out fraction must lie strictly between 0 and 1, got {holdout}", field="holdout")
    return holdout


def split_holdout(stacks: list[PreparedStack], holdout: float) -> tuple[list[PreparedStack], list[PreparedStack]]:
    """(training, held-out) stacks: every ⌈1/holdout⌉-th stack by name held out (at least one, at least one left
    for training); a single stack is split into its left (training) and right (held-out) parts, the right one
    ``holdout`` of its width (at least 32 px)."""
    check_holdout(holdout)
    if len(stacks) == 1:
        st = stacks[0]
        w = st.frames.shape[-1]
        cut = w - max(32, round(holdout * w))
        left = dataclasses.replace(st, frames=st.frames[..., :cut].contiguous())
        right = dataclasses.replace(st, name=f"{st.name} (right {w - cut} px)", frames=st.frames[..., cut:].contiguous())
        return [left], [right]
    ordered = sorted(stacks, key=lambda s: s.name)
    count = min(len(ordered) - 1, max(1, round(holdout * len(ordered))))
    step = len(ordered) / count
    held = {int(math.floor(i * step + step / 2)) for i in range(count)}
    return ([s for i, s in enumerate(ordered) if i not in held], [s for i, s in enumerate(ordered) if i in held])


def _small_copy(st: PreparedStack, size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(1, N, 3, h, w) float frames with the longest side at most ``size``, and their (1, N) K."""
    x = st.float_frames()
    h, w = x.shape[-2:]
    scale = min(1.0, size / max(h, w))
    if scale < 1.0:
        x = F.interpolate(x, size=(max(8, round(h * scale)), max(8, round(w * scale))), mode="area")
    return x[None], (st.blur_per_dioptre * (x.shape[-1] / w))[None]


@torch.no_grad()
def calibrate_stacks(model: nn.Module, stacks: Sequence[PreparedStack], family: str = "auto",
                     progress: bool = True, max_stacks: int = CALIBRATION_STACKS) -> None:
    """Sets every stack's ``physics`` to one forward model: self-calibrated (``family="auto"``, module docstring
    step 3) on up to ``max_stacks`` of them spread over the list — the (PSF, light, signed near-side PSF) chosen
    most often (ties: the lower mean re-rendering error), with the median of its chosen effective apertures — or
    the named family (:data:`defocus.optics.forward.FAMILIES`). One model for all: the stacks of one fine-tuning
    run are one camera's, and a choice pooled over several stacks is steadier than each stack's own (seconds per
    stack besides)."""
    from defocus.calibrate import calibrate_forward_model
    from defocus.optics.forward import ForwardModel
    from defocus.progress import progress_bar

    if family != "auto":
        spec = ForwardModel.from_family(family).spec
        for st in stacks:
            st.physics = spec
        return
    model.eval()
    count = min(len(stacks), max_stacks)
    chosen = sorted({round(i * (len(stacks) - 1) / max(1, count - 1)) for i in range(count)})
    picks = []
    for j in progress_bar(chosen, desc="calibrating the forward model", enabled=progress, leave=False):
        st = stacks[j]
        x, k = _small_copy(st, CALIBRATION_SIZE)
        fd = st.focus_m[None]
        dr = torch.tensor([st.depth_range], dtype=torch.float64)
        cal = calibrate_forward_model(x, fd, k, st.depth_range, model(x, fd, k, dr))
        best = min(c["reconstruction"] for c in cal.scores)
        picks.append((cal.physics.spec, best))
    by_pair: dict[tuple[str, str, str | None], list] = {}  # (psf, light, near-side psf of a signed aberration)
    for spec, score in picks:
        by_pair.setdefault((spec.psf, spec.light, spec.near_psf), []).append((spec, score))
    pair = max(by_pair, key=lambda p: (len(by_pair[p]), -sum(s for _, s in by_pair[p]) / len(by_pair[p])))
    scales = sorted(spec.blur_scale for spec, _ in by_pair[pair])
    spec = by_pair[pair][0][0].replace(blur_scale=scales[len(scales) // 2])
    for st in stacks:
        st.physics = spec


@torch.no_grad()
def rerendering_error(model: nn.Module, stacks: Sequence[PreparedStack]) -> float:
    """Mean over ``stacks`` of the photometric error (SSIM + L1, the loss's own term) between each stack and its
    re-rendering, under the stack's forward model, from the network's depth and AIF; on the central crop of at most
    :data:`VALIDATION_CROP` working pixels a side."""
    from defocus.losses.terms import photometric
    from defocus.optics.forward import ForwardModel

    was_training = model.training
    model.eval()
    errors = []
    for st in stacks:
        x = st.float_frames()
        h, w = x.shape[-2:]
        ch, cw = min(h, VALIDATION_CROP), min(w, VALIDATION_CROP)
        y0, x0 = (h - ch) // 2, (w - cw) // 2
        crop = x[..., y0 : y0 + ch, x0 : x0 + cw][None]
        fd, k = st.focus_m[None], st.blur_per_dioptre[None]
        pred = model(crop, fd, k, torch.tensor([st.depth_range], dtype=torch.float64))
        physics = ForwardModel(spec=st.physics) if st.physics is not None else ForwardModel()
        rendered = physics.rerender(pred.aif, pred.inv_depth, fd, k).stack
        errors.append(float(photometric(rendered.reshape(-1, 3, ch, cw), crop.reshape(-1, 3, ch, cw))))
    model.train(was_training)
    return sum(errors) / len(errors)


@torch.no_grad()
def pseudo_scene(model: nn.Module, st: PreparedStack) -> tuple[torch.Tensor, torch.Tensor]:
    """(AIF (1, 3, h, w) in [0, 1], inverse depth (1, 1, h, w) dioptres) of ``defocus predict``'s default path on the
    prepared stack: ``model``'s estimate with its calibrated confidence, the classical term, the global solve."""
    from defocus.predict import PredictOptions, _classical_term, _solve, aif_texture, run_tiled

    model.eval()
    x, fd, k = st.float_frames()[None], st.focus_m[None], st.blur_per_dioptre[None]
    pred = run_tiled(model, x, fd, k, torch.tensor([st.depth_range], dtype=torch.float64))
    calibration = getattr(model, "confidence_calibration", None)
    second = None
    if calibration is not None:
        pred = dataclasses.replace(pred, confidence=calibration(pred.confidence, pred.inv_depth, aif_texture(pred.aif)))
        second = _classical_term(x, fd, k, st.depth_range, False)
    solved, _ = _solve(pred, st.depth_range, PredictOptions().solve_smoothness, second, float(k.max()))
    return solved.aif.clamp(0.0, 1.0), solved.inv_depth


@torch.no_grad()
def resynthesise(st: PreparedStack, scene: tuple[torch.Tensor, torch.Tensor], copies: int = RESYNTHESIS_COPIES,
                 seed: int = 0) -> list[dict]:
    """``copies`` stacks re-rendered from the pseudo-scene (AIF, inverse depth) under the stack's forward model at
    its focus distances and K, each with its own 8-bit noise at the stack's estimated level (at least one grey
    level). Returns items {"x": (N, 3, h, w), "inv": (1, h, w), "focus": (N,), "k": (N,), "depth_range"}."""
    from defocus.models.classical import estimate_noise_sigma
    from defocus.optics.forward import ForwardModel
    from defocus.optics.sensor import SensorModel

    aif, inv = scene
    physics = ForwardModel(spec=st.physics) if st.physics is not None else ForwardModel()
    rendered = physics.rerender(aif, inv, st.focus_m[None], st.blur_per_dioptre[None]).stack[0]
    sensor = SensorModel(noise_std=max(float(estimate_noise_sigma(st.float_frames())), 1.0 / 255.0))
    return [{"x": sensor.apply(rendered, seed=seed + c), "inv": inv[0], "focus": st.focus_m,
             "k": st.blur_per_dioptre, "depth_range": st.depth_range} for c in range(copies)]


@torch.no_grad()
def pseudo_depth_error(model: nn.Module, items: Sequence[dict]) -> float:
    """Mean relative error |ŷ − y| / y of ``model``'s inverse depth on re-synthesised ``items`` against their
    pseudo-scenes' (central crop of at most :data:`VALIDATION_CROP` px a side)."""
    was_training = model.training
    model.eval()
    errors = []
    for it in items:
        h, w = it["x"].shape[-2:]
        ch, cw = min(h, VALIDATION_CROP), min(w, VALIDATION_CROP)
        y0, x0 = (h - ch) // 2, (w - cw) // 2
        x = it["x"][None, ..., y0 : y0 + ch, x0 : x0 + cw]
        target = it["inv"][..., y0 : y0 + ch, x0 : x0 + cw]
        pred = model(x, it["focus"][None], it["k"][None], torch.tensor([it["depth_range"]], dtype=torch.float64))
        errors.append(float(((pred.inv_depth[0] - target).abs() / target.clamp_min(1e-3)).mean()))
    model.train(was_training)
    return sum(errors) / len(errors)


def train_on_resynthesis(model: nn.Module, items: Sequence[dict], steps: int, seed: int = 0,
                         progress: bool = True) -> list[float]:
    """Trains ``model`` in place for ``steps`` Adam steps (lr :data:`RESYNTHESIS_LR`) on batches of
    :data:`RESYNTHESIS_BATCH` random :data:`RESYNTHESIS_CROP`² crops of the re-synthesised ``items``, minimising the
    relative error of its inverse depth against theirs; items of another frame count than the first crop's are
    drawn in their own batches. Returns the loss of every step."""
    from defocus.progress import progress_bar

    if steps < 1:
        return []
    gen = torch.Generator().manual_seed(int(seed))
    opt = torch.optim.Adam(model.parameters(), lr=RESYNTHESIS_LR)
    by_frames: dict[int, list[dict]] = {}
    for it in items:
        by_frames.setdefault(it["x"].shape[0], []).append(it)
    pools = list(by_frames.values())
    losses = []
    model.train()
    for _ in progress_bar(range(steps), desc="re-synthesis", enabled=progress, leave=False):
        pool = pools[int(torch.randint(len(pools), (1,), generator=gen))]
        xs, invs, fds, ks, drs = [], [], [], [], []
        for _ in range(RESYNTHESIS_BATCH):
            it = pool[int(torch.randint(len(pool), (1,), generator=gen))]
            h, w = it["x"].shape[-2:]
            ch, cw = min(h, RESYNTHESIS_CROP), min(w, RESYNTHESIS_CROP)
            y0 = int(torch.randint(h - ch + 1, (1,), generator=gen))
            x0 = int(torch.randint(w - cw + 1, (1,), generator=gen))
            xs.append(it["x"][..., y0 : y0 + ch, x0 : x0 + cw])
            invs.append(it["inv"][..., y0 : y0 + ch, x0 : x0 + cw])
            fds.append(it["focus"])
            ks.append(it["k"])
            drs.append(it["depth_range"])
        target = torch.stack(invs)
        pred = model(torch.stack(xs), torch.stack(fds), torch.stack(ks), torch.tensor(drs, dtype=torch.float64))
        loss = ((pred.inv_depth - target).abs() / target.clamp_min(1e-3)).mean()
        if not torch.isfinite(loss):
            raise DefocusError("re-synthesis training diverged (non-finite loss)")
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    model.eval()
    return losses


def sweep_groups(stacks: Sequence[PreparedStack], protocol: str) -> list:
    """One training group per stack (their sizes differ), with the stack's forward model as the group's."""
    from defocus.data.sweeps import SweepGroup

    return [SweepGroup(st.frames[None], st.focus_m[None], st.blur_per_dioptre[None], st.depth_range, protocol,
                       physics=st.physics, scene_ids=torch.tensor([j])) for j, st in enumerate(stacks)]


def finetune_config(init: str, overrides: Sequence[str] = (), **fields: Any):
    """The training config of a fine-tuning run: the packaged ``finetune.yaml`` ← ``overrides`` (``key=value``) ←
    ``fields`` (top-level keys such as ``name``, ``out_dir``); the model and its config are those of the starting
    weights ``init`` ("shipped" or a checkpoint), whatever the YAML says."""
    from defocus.models.checkpoint import read_metadata
    from defocus.models.factory import DEFAULT_MODEL, shipped_weights_path
    from defocus.train.config import load_config

    path = shipped_weights_path(DEFAULT_MODEL) if init == "shipped" else Path(init)
    if not path.is_file():
        raise InputError(f"starting weights {path} do not exist", field="init")
    meta = read_metadata(path)
    cfg = load_config(FINETUNE_CONFIG, [*overrides, f"init={init}"])
    cfg.model.name = meta["model_name"]
    cfg.model.config = dict(meta.get("model_config", {}))
    for key, value in fields.items():
        setattr(cfg, key, value)
    return cfg.validate()


@dataclass
class FinetuneResult:
    """What a run did: the exported weights, the run folder, the held-out re-rendering error of the starting weights
    and of each epoch, and the stacks used."""

    weights: Path
    run_dir: Path
    start_rerender: float
    epoch_rerender: list[float]
    train_stacks: list[str]
    held_out_stacks: list[str]
    kept_start: bool = False
    #: Re-synthesis runs only: the held-out pseudo-depth error before and after (else None).
    start_pseudo_error: float | None = None
    pseudo_error: float | None = None

    def to_dict(self) -> dict:
        d = dataclasses.asdict(self)
        d["weights"], d["run_dir"] = str(self.weights), str(self.run_dir)
        return d


def finetune(
    stacks: list[PreparedStack], output: str | os.PathLike, cfg, holdout: float = 0.2, family: str = "auto",
    progress: bool = True, start: nn.Module | None = None, resynthesis_steps: int = RESYNTHESIS_STEPS,
) -> FinetuneResult:
    """Fine-tunes ``cfg.init``'s network on the prepared ``stacks`` (module docstring steps 3-5) and writes the
    weights to ``output`` (a ``.safetensors`` file); the run folder is ``cfg.out_dir / cfg.name``. ``start``: those
    starting weights, already loaded (else they are loaded here). ``resynthesis_steps`` > 0: trained by
    re-synthesis for that many steps (the default), 0: with the re-rendering loss's epochs (step 4)."""
    from defocus.files import atomic_write
    from defocus.models.checkpoint import read_checkpoint, save_checkpoint
    from defocus.models.factory import create_model
    from defocus.train.trainer import train

    output = Path(output)
    check_holdout(holdout)  # before the calibration's minutes
    if start is None:
        start = create_model(pretrained=True) if cfg.init == "shipped" else create_model(checkpoint=cfg.init)
    calibrate_stacks(start, stacks, family, progress)  # before the split: a single stack's two parts share it
    train_stacks, held_out = split_holdout(stacks, holdout)
    start_error = rerendering_error(start, held_out)
    if progress:
        from defocus.progress import progress_write

        progress_write(f"held-out re-rendering error of the starting weights: {start_error:.5f} "
                       f"({len(held_out)} held-out part(s): {', '.join(s.name for s in held_out)})")
    epoch_errors: list[float] = []  # one per epoch, as metrics.csv's val_rerender
    pseudo: tuple[float, float] | None = None
    resynthesis_record = None
    if resynthesis_steps > 0:
        model, run_dir, meta, pseudo, resynthesis_record = _resynthesis_stage(
            start, train_stacks, held_out, resynthesis_steps, cfg, progress)
        epoch_errors.append(rerendering_error(model, held_out))
        rose = epoch_errors[-1] > start_error
        kept_start = rose or not pseudo[1] < (1.0 - MIN_IMPROVEMENT) * pseudo[0]
        what, before, after = "pseudo-depth error of the re-synthesised stacks", pseudo[0], pseudo[1]
        if rose:
            what, before, after = "re-rendering error", start_error, epoch_errors[-1]
        state = model.state_dict()
    else:
        def validator(model: nn.Module) -> dict[str, float]:
            epoch_errors.append(rerendering_error(model, held_out))
            return {"val_rerender": epoch_errors[-1]}

        run_dir = train(cfg, progress=progress, groups=sweep_groups(train_stacks, cfg.data.stack_protocol),
                        validator=validator)
        src = run_dir / ("best.safetensors" if cfg.export_weights == "best" else "last.safetensors")
        state, meta = read_checkpoint(src)
        model = create_model(meta["model_name"], **dict(meta["model_config"]))
        exported = epoch_errors[-1] if cfg.export_weights == "last" else min(epoch_errors)
        kept_start = not exported < (1.0 - MIN_IMPROVEMENT) * start_error
        what, before, after = "re-rendering error", start_error, exported
    if kept_start:  # no clear gain on the held-out part: do not hand out weights that may be worse
        state = start.state_dict()
        if progress:
            from defocus.progress import progress_write

            change = "rose" if after > before else f"fell by less than {100 * MIN_IMPROVEMENT:g} %"
            why = f"{what} {change} ({before:.5f} -> {after:.5f})"
            progress_write(f"the held-out {why}: the starting weights are written unchanged")
    model.load_state_dict(state)
    calibration = getattr(start, "confidence_calibration", None)
    record = {"stacks": [s.name for s in train_stacks], "held_out": [s.name for s in held_out],
              "start_rerender": start_error, "epoch_rerender": epoch_errors, "kept_start": kept_start,
              # The blur the weights were adapted to (px/D at the working size, the least of the stacks' largest).
              # Recorded only: letting predict's solve trust the tuned network down to it (instead of
              # SOLVE_NETWORK_FULL_K) lowered the default path on bench_finetune.py (BENCHMARKS.md).
              "trained_blur_per_dioptre": None if kept_start else
              min(float(s.blur_per_dioptre.max()) for s in train_stacks),
              "forward_models": {s.name: (s.physics.to_dict() if s.physics is not None else None)
                                 for s in [*train_stacks, *held_out]}}
    if resynthesis_record is not None:
        record["resynthesis"] = resynthesis_record
    extra = {**meta.get("extra", {}), "finetune": record}
    if calibration is not None:  # the starting weights' calibration: nothing to refit it against
        extra["confidence_calibration"] = calibration.to_dict()
    save_checkpoint(output, model, meta["model_name"], meta.get("train_config", {}), extra)
    summary = FinetuneResult(output, run_dir, start_error, epoch_errors, record["stacks"], record["held_out"],
                             kept_start, *(pseudo if pseudo is not None else (None, None)))
    text = json.dumps(summary.to_dict(), indent=2)
    atomic_write(run_dir / "finetune.json", lambda tmp: tmp.write_text(text + "\n"), "summary")
    return summary



def _resynthesis_stage(start: nn.Module, train_stacks: Sequence[PreparedStack], held_out: Sequence[PreparedStack],
                       steps: int, cfg, progress: bool):
    """Step 4's re-synthesis: (the trained copy of ``start``, the run folder, the checkpoint metadata to export with,
    (held-out pseudo-depth error before, after), the run's record). Writes the run folder's config.yaml and
    resynthesis.csv (the loss of every step)."""
    import copy

    import yaml

    from defocus.files import atomic_write
    from defocus.progress import progress_bar, progress_write

    def items(stacks: Sequence[PreparedStack], seed: int) -> list[dict]:
        out = []
        for j, st in enumerate(progress_bar(stacks, desc="pseudo-scenes", enabled=progress, leave=False)):
            out += resynthesise(st, pseudo_scene(start, st), seed=seed + RESYNTHESIS_COPIES * j)
        return out

    train_items, held_items = items(train_stacks, cfg.seed), items(held_out, cfg.seed + 10_000)
    before = pseudo_depth_error(start, held_items)
    model = copy.deepcopy(start)
    losses = train_on_resynthesis(model, train_items, steps, seed=cfg.seed, progress=progress)
    after = pseudo_depth_error(model, held_items)
    if progress:
        progress_write(f"held-out pseudo-depth error (re-synthesised stacks): {before:.5f} -> {after:.5f}")
    run_dir = Path(cfg.out_dir) / cfg.name
    run_dir.mkdir(parents=True, exist_ok=True)
    config = {**cfg.to_dict(), "resynthesis": {"steps": steps, "copies": RESYNTHESIS_COPIES, "crop": RESYNTHESIS_CROP,
                                               "batch": RESYNTHESIS_BATCH, "lr": RESYNTHESIS_LR}}
    text = yaml.safe_dump(config, sort_keys=False)
    atomic_write(run_dir / "config.yaml", lambda tmp: tmp.write_text(text), "config")
    rows = "step,loss\n" + "".join(f"{i + 1},{v:.6f}\n" for i, v in enumerate(losses))
    atomic_write(run_dir / "resynthesis.csv", lambda tmp: tmp.write_text(rows), "losses")
    meta = {"model_name": getattr(start, "checkpoint_metadata", {}).get("model_name", cfg.model.name),
            "model_config": dict(cfg.model.config), "train_config": config,
            "extra": dict(getattr(start, "checkpoint_metadata", {}).get("extra", {}))}
    record = {"steps": steps, "start_pseudo_error": before, "pseudo_error": after,
              "final_loss": losses[-1] if losses else None}
    return model, run_dir, meta, (before, after), record
