"""The ``defocus`` command line: one entry point, one sub-command per job.

Bad input never produces a traceback: every :class:`~defocus.errors.DefocusError` (and OS errors, and running out
of memory) becomes one line on stderr and exit status 2. ``predict`` and ``evaluate`` over several stacks go on past
a stack that fails (one line naming it), then print a summary and exit 1 (2 when not one stack was processed;
``--fail-fast`` stops at the first); ``--shard I/N`` splits the stacks across machines. Sub-commands import their
heavy modules lazily so that ``defocus --help`` is instant.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Callable, Sequence

from defocus.errors import DefocusError, ShapeError

#: Refinement steps of ``--refine-steps`` given without a number: where the accuracy per second of refinement levels
#: off on the held-out scene groups (BENCHMARKS.md, "Refinement budget").
DEFAULT_REFINE_STEPS = 30


def _number_list(unit: str) -> Callable[[str], list[float]]:
    """An argparse type for comma-separated numbers in ``unit``."""

    def parse(text: str) -> list[float]:
        try:
            values = [float(v) for v in text.replace(" ", "").split(",") if v]
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected comma-separated numbers in {unit}, got {text!r}") from None
        if not values:
            raise argparse.ArgumentTypeError("expected at least one focus value")
        return values

    return parse


_float_list = _number_list("metres")
_dioptre_list = _number_list("dioptres")


def add_camera_flags(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("camera (overrides stack.json / EXIF)")
    g.add_argument("--focal-length-mm", type=float, help="lens focal length in millimetres")
    g.add_argument("--f-number", type=float, help="aperture f-number")
    g.add_argument("--pixel-size-um", type=float, help="pixel pitch in micrometres, for the images as given")


def camera_from_flags(args: argparse.Namespace, required: bool = False):
    """A camera from --focal-length-mm/--f-number/--pixel-size-um; all three or none (None when none)."""
    from defocus.optics.camera import ThinLensCamera

    vals = [args.focal_length_mm, args.f_number, args.pixel_size_um]
    if all(v is None for v in vals):
        if required:
            raise DefocusError("no camera given: pass --preset or --focal-length-mm, --f-number and --pixel-size-um")
        return None
    missing = [n for n, v in zip(("--focal-length-mm", "--f-number", "--pixel-size-um"), vals) if v is None]
    if missing:
        raise DefocusError(f"incomplete camera: also pass {', '.join(missing)}")
    return ThinLensCamera.from_mm_um(*vals)


# ------------------------------------------------------------------------------------------------------ render
def _render_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "render",
        help="synthesise a focal-stack folder from an RGB-D pair or a procedural scene",
        description="Synthesise a focal stack (stack.json, focus_<i>.png, gt_depth.tiff, gt_aif.png) from an RGB "
        "image and its depth map, or from a procedural scene, with the thin-lens model.",
    )
    src = p.add_argument_group("source (either --rgb and --depth, or --procedural)")
    src.add_argument("--rgb", type=Path, help="sharp RGB image")
    src.add_argument("--depth", type=Path, help="depth map: float TIFF or .npy in metres, or integer PNG (see --depth-scale)")
    src.add_argument("--depth-scale", type=float, help="metres per unit of an integer depth PNG (e.g. 0.001 for mm)")
    src.add_argument("--procedural", type=int, metavar="SEED", help="render the procedural scene of this seed")
    src.add_argument("--dataset", metavar="SPEC",
                     help="a public dataset, NAME:PATH[#OPTION] (nyuv2, ddff12, fod500, mobile-depth; see README "
                     "'Public datasets'): writes one stack folder per item into -o")
    src.add_argument("--limit", type=int, default=0, metavar="K", help="with --dataset: only the first K items")
    p.add_argument("--preset", help="camera preset: nyuv2 or defocusnet (sets camera, focus distances and image size)")
    p.add_argument("--focus", type=_float_list, help="focus distances in metres, comma-separated (overrides the preset's)")
    p.add_argument("--size", type=int, nargs=2, metavar=("H", "W"), help="output size (default: the preset's, or the input's)")
    p.add_argument("--protocol", default=None, metavar="NAME",
                   help="synthesis protocol, a name of the protocol registry (defocus.data.synthesis.PROTOCOLS): "
                   "paper (Gaussian PSF, no noise; the default) or realistic (disk PSF in linear light, occlusion, "
                   "noise); with --dataset nyuv2 it overrides the spec's #PROTOCOL")
    p.add_argument("--seed", type=int, default=0, help="seed of the sensor noise of the realistic protocol")
    add_camera_flags(p)
    p.add_argument("-o", "--output", type=Path, required=True,
                   help="output stack folder (with --dataset: the folder that receives one stack folder per item)")
    p.set_defaults(func=cmd_render)


def _render_dataset(args: argparse.Namespace) -> int:
    """``render --dataset``: one stack folder per item, named after the item, inside ``args.output``."""
    from defocus.data.datasets import open_dataset
    from defocus.data.folders import write_stack

    if args.rgb or args.depth or args.procedural is not None:
        raise DefocusError("pass either --dataset or --rgb/--depth or --procedural, not several")
    if args.limit < 0:
        raise DefocusError("--limit must be >= 0")
    if args.preset or args.focus or args.size or camera_from_flags(args):
        raise DefocusError("--dataset brings its own camera, focus distances and image size: drop --preset, "
                           "--focus, --size and the camera flags")
    ds = open_dataset(args.dataset)
    if args.output.exists() and not args.output.is_dir():
        raise DefocusError(f"cannot write to {args.output}: it exists and is not a folder")
    n = len(ds) if args.limit <= 0 else min(args.limit, len(ds))
    ds.check_writable(n)  # fail before writing anything
    count = 0
    for i in range(n):
        stack = ds.stack(i, protocol=args.protocol, seed=args.seed + i)
        write_stack(stack, args.output / ds.item_name(i))
        count += 1
    print(f"wrote {count} stack folder(s) from {args.dataset} to {args.output}")
    return 0


#: Longest side ``render --size`` accepts (larger sizes are refused before anything is rendered).
MAX_RENDER_SIDE = 16384


def _check_render_size(size: tuple[int, int]) -> None:
    """DefocusError unless ``size`` (H, W) is at least 1x1, at most MAX_RENDER_SIDE a side and the image-file
    pixel limit in all."""
    from defocus.data.codecs import MAX_IMAGE_PIXELS

    h, w = size
    if not (1 <= h <= MAX_RENDER_SIDE and 1 <= w <= MAX_RENDER_SIDE) or h * w > MAX_IMAGE_PIXELS:
        raise DefocusError(f"--size must be H W between 1 and {MAX_RENDER_SIDE} pixels (at most {MAX_IMAGE_PIXELS} "
                           f"pixels in all), got {h} {w}")


def cmd_render(args: argparse.Namespace) -> int:
    from defocus.data.codecs import load_image, read_depth
    from defocus.data.folders import write_stack
    from defocus.data.procedural import make_scene, scene_depth_range
    from defocus.data.synthesis import stack_from_rgbd, stack_from_scene
    from defocus.optics.camera import get_preset

    if not -(2**63) <= args.seed < 2**64:
        raise DefocusError(f"--seed must be a 64-bit integer, got {args.seed}")
    if args.protocol is not None:
        from defocus.data.synthesis import get_protocol

        get_protocol(args.protocol)  # an unknown name: one line listing the registered ones, before any work
    if args.dataset:
        return _render_dataset(args)
    args.protocol = args.protocol or "paper"
    preset = get_preset(args.preset) if args.preset else None
    camera = camera_from_flags(args) or (preset.camera if preset else None)
    if camera is None:
        raise DefocusError("no camera given: pass --preset or --focal-length-mm, --f-number and --pixel-size-um")
    focus = args.focus or (list(preset.focus_distances_m) if preset else None)
    if focus is None:
        raise DefocusError("no focus distances given: pass --focus or --preset")
    camera.validate_focus(focus)
    name = args.output.name
    if args.procedural is not None:
        if args.rgb or args.depth:
            raise DefocusError("pass either --procedural or --rgb/--depth, not both")
        size = tuple(args.size) if args.size else (preset.image_size if preset else (240, 320))
        _check_render_size(size)
        scene_range = scene_depth_range(preset.name if preset else None, focus, camera.focal_length_m)
        rgb, depth = make_scene(args.procedural, size[0], size[1], scene_range)
        stack = stack_from_scene(rgb, depth, focus, camera, args.protocol, seed=args.seed, name=name)
    else:
        if args.rgb is None or args.depth is None:
            raise DefocusError("no source given: pass --rgb and --depth, or --procedural SEED")
        rgb = load_image(args.rgb)
        depth = read_depth(args.depth, args.depth_scale)
        if depth.shape != tuple(rgb.shape[-2:]):
            raise DefocusError(
                f"--rgb is {rgb.shape[-1]}x{rgb.shape[-2]} but --depth is {depth.shape[1]}x{depth.shape[0]}"
            )
        size = tuple(args.size) if args.size else (preset.image_size if preset else tuple(rgb.shape[-2:]))
        _check_render_size(size)
        stack = stack_from_rgbd(rgb, depth, focus, camera, args.protocol, size=size, seed=args.seed, name=name)
    write_stack(stack, args.output)
    print(f"wrote {len(focus)}-image {args.protocol} stack {size[1]}x{size[0]} to {args.output}")
    return 0


# ------------------------------------------------------------------------------------------------------- train
def _train_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "train",
        help="train DAIF-Net self-supervised (no ground truth) on procedural sweeps and your own stacks",
        description="Train DAIF-Net fully self-supervised. The config is typed defaults <- --config YAML <- "
        "key=value overrides (e.g. optim.epochs=3 data.stack_dirs=[my/stack]; init=shipped starts from the "
        "shipped weights, init=W.safetensors from a checkpoint); the resolved config is saved next to the run and "
        "inside every checkpoint.",
    )
    p.add_argument("--config", type=Path, help="YAML config file, or the name of a packaged config: release (stage 1 of the "
                   "shipped weights), release_robust (stage 2, from stage 1's checkpoint), tiny")
    p.add_argument("overrides", nargs="*", help="key=value overrides, e.g. optim.lr=1e-3 name=myrun")
    p.add_argument("--resume", action="store_true", help="continue the run of the same name from its last epoch")
    p.add_argument("--export", type=Path,
                   help="after training, copy the weights named by the config's export_weights (best: lowest "
                   "validation AbsRel, the default; last: the last epoch) to this .safetensors file")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.set_defaults(func=cmd_train)


def cmd_train(args: argparse.Namespace) -> int:
    import shutil

    from defocus.files import atomic_write
    from defocus.train.config import load_config
    from defocus.train.distributed import is_main_process
    from defocus.train.trainer import train

    cfg = load_config(args.config, args.overrides)
    run_dir = train(cfg, resume=args.resume, progress=not args.quiet)
    if not is_main_process():  # under torchrun, rank 0 alone reports and exports
        return 0
    print(f"run written to {run_dir}")
    if args.export:
        src = run_dir / f"{cfg.export_weights}.safetensors"
        if not src.is_file():  # no validation scenes: no best.safetensors
            src = run_dir / "last.safetensors"
        atomic_write(args.export, lambda tmp: shutil.copyfile(src, tmp), "weights")
        print(f"weights exported to {args.export}")
    return 0


# ---------------------------------------------------------------------------------------------------- finetune
def _finetune_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "finetune",
        help="fine-tune the shipped network on your own unlabeled stacks (self-supervised), for predict --checkpoint",
        description="Fine-tune the shipped weights (or --checkpoint) on your own focal stacks, without any ground "
        "truth: each stack is read as predict reads it (stack.json, EXIF, --focus and camera flags) and prepared as "
        "predict prepares it; the camera's optics are self-calibrated on the stacks; each stack's own default-path "
        "depth and AIF are re-rendered through those optics and the network is trained to recover that depth "
        "(--resynthesis-steps; 0: the re-rendering loss instead). Part of the stacks is held out: the trained weights "
        "are written to WEIGHTS where its re-synthesised depth error fell by 1 % and its re-rendering error did not "
        "rise, else the starting ones, for `defocus predict --checkpoint WEIGHTS`. Every stack "
        "is checked before any training: a run with an unusable stack is refused and writes nothing.",
    )
    p.add_argument("stacks", nargs="+", type=Path, help="stack folders, or folders of stack folders")
    p.add_argument("-o", "--output", type=Path, required=True, metavar="WEIGHTS",
                   help="the .safetensors file to write")
    p.add_argument("--checkpoint", type=Path, help="starting weights (.safetensors); default: the shipped weights")
    _source_flags(p)
    g = p.add_argument_group("schedule (re-synthesis: 200 steps, a few minutes on 2 cores at 320 x 240; the "
                             "re-rendering loss's epochs: the packaged finetune config)")
    g.add_argument("--epochs", type=int, help="epochs (default 4)")
    g.add_argument("--steps-per-epoch", type=int, help="optimiser steps per epoch (default 40)")
    g.add_argument("--lr", type=float, help="peak learning rate (default 1e-4)")
    g.add_argument("--resynthesis-steps", type=int, default=None, metavar="N",
                   help="steps of depth supervision on stacks re-rendered from each stack's own default-path "
                   "estimate through the self-calibrated forward model (no ground truth; kept only where the held-out "
                   "re-synthesised stacks' depth error falls by 1 %% and the held-out stacks' re-rendering error "
                   "does not rise); default 200; 0: train with the re-rendering loss's epochs instead (--epochs, "
                   "--steps-per-epoch, --lr)")
    g.add_argument("--holdout", type=float, default=0.2,
                   help="fraction of the stacks held out for the re-rendering error (default 0.2; at least one "
                   "stack; a single stack holds out its right-hand strip)")
    p.add_argument("--forward", default="auto", metavar="auto|FAMILY",
                   help="the loss's forward model: auto (default: self-calibrated as predict --refine-psf auto "
                   "does, on up to three of the stacks, one model for all) or a named family (disk, gaussian, ...)")
    p.add_argument("--run-dir", type=Path, default=Path("runs"),
                   help="folder of the run (config.yaml, finetune.json, resynthesis.csv or metrics.csv and "
                   "checkpoints); default ./runs")
    p.add_argument("--name", help="run name (default: finetune-<WEIGHTS file stem>)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="any other training config key, e.g. --set data.size=[128,128] (repeatable)")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.set_defaults(func=cmd_finetune)


def cmd_finetune(args: argparse.Namespace) -> int:
    from defocus.data.folders import expand_stack_folders, read_stack
    from defocus.finetune import RESYNTHESIS_STEPS, check_holdout, finetune, finetune_config, prepare_stacks
    from defocus.models.factory import create_model
    from defocus.optics.forward import ForwardModel
    from defocus.predict import TARGET_BLUR_PER_DIOPTRE

    # Everything that can be refused is refused here, before any stack is prepared and before anything is written.
    out = args.output
    if out.suffix != ".safetensors" or out.is_dir():
        raise DefocusError(f"-o {out}: expected a .safetensors file path")
    if not out.parent.exists() and out.parent != Path(""):
        raise DefocusError(f"-o {out}: folder {out.parent} does not exist")
    if args.forward != "auto":
        ForwardModel.from_family(args.forward)  # an unknown family is an error here
    overrides = list(args.set)
    for key, value in (("optim.epochs", args.epochs), ("optim.steps_per_epoch", args.steps_per_epoch),
                       ("optim.lr", args.lr)):
        if value is not None:
            overrides.append(f"{key}={value}")
    init = str(args.checkpoint) if args.checkpoint else "shipped"
    name = args.name or f"finetune-{out.stem}"
    cfg = finetune_config(init, overrides, name=name, out_dir=str(args.run_dir))
    run_dir = args.run_dir / name
    if any((run_dir / f).exists() for f in ("metrics.csv", "resynthesis.csv", "finetune.json")):
        raise DefocusError(f"run folder {run_dir} already has a run: choose another --name or --run-dir")
    check_holdout(args.holdout)
    steps = RESYNTHESIS_STEPS if args.resynthesis_steps is None else args.resynthesis_steps
    if steps < 0:
        raise DefocusError(f"--resynthesis-steps must be 0 or more, got {steps}")
    schedule = [flag for flag, value in (("--epochs", args.epochs), ("--steps-per-epoch", args.steps_per_epoch),
                                         ("--lr", args.lr)) if value is not None]
    if steps > 0 and schedule:
        raise DefocusError(f"{', '.join(schedule)} set the re-rendering loss's schedule, which re-synthesis does not "
                           "use: add --resynthesis-steps 0 to train with it")
    start = create_model(pretrained=True) if init == "shipped" else create_model(checkpoint=init)
    read_kwargs = _read_args(args)
    folders = expand_stack_folders(args.stacks)
    prepared, problems = prepare_stacks(lambda f: read_stack(f, **read_kwargs), folders, cfg.data.size,
                                        getattr(start, "working_blur_per_dioptre", TARGET_BLUR_PER_DIOPTRE),
                                        progress=not args.quiet, flags=True)
    if problems:
        for line in problems:
            print(f"defocus finetune: error: cannot use {line}", file=sys.stderr)
        print(f"defocus finetune: error: {len(problems)} of {len(folders)} stack(s) cannot be used: nothing "
              "was trained or written", file=sys.stderr)
        return 2
    for st in prepared:
        fr = st.frames
        print(f"  {st.name}: {fr.shape[0]} frames at {fr.shape[-1]}x{fr.shape[-2]} working px, focus "
              + ", ".join(f"{v:.3g}" for v in st.focus_m.tolist()) + " m")
        for w in st.warnings:
            print(f"defocus finetune: warning: {st.name}: {w}", file=sys.stderr)
    result = finetune(prepared, out, cfg, holdout=args.holdout, family=args.forward, progress=not args.quiet,
                      start=start, resynthesis_steps=steps)
    errors = ", ".join(f"{e:.5f}" for e in result.epoch_rerender)
    if result.pseudo_error is not None:
        print(f"held-out pseudo-depth error (re-synthesised stacks): start {result.start_pseudo_error:.5f}; "
              f"after {steps} steps {result.pseudo_error:.5f}")
        print(f"held-out re-rendering error: start {result.start_rerender:.5f}; after {errors}")
    else:
        print(f"held-out re-rendering error: start {result.start_rerender:.5f}; epochs {errors}")
    print(f"trained on {len(result.train_stacks)} stack(s), held out {len(result.held_out_stacks)}; run in "
          f"{result.run_dir}")
    if result.kept_start:
        print("no clear gain on the held-out stacks: the starting weights were written")
    print(f"weights written to {out}: defocus predict STACK -o OUT --checkpoint {out}")
    return 0


# ----------------------------------------------------------------------------------------- evaluate / predict
def _model_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument("--checkpoint", type=Path, help="weights (.safetensors); default: the weights shipped with defocus")
    p.add_argument("--refine", action="store_true",
                   help=f"test-time self-supervised refinement with the default budget, {DEFAULT_REFINE_STEPS} steps "
                   "(off unless asked: on a large working size it costs minutes)")
    p.add_argument("--refine-steps", type=int, default=0, metavar="K",
                   help="test-time self-supervised refinement steps on each stack (no ground truth)")
    p.add_argument("--refine-psf", default="auto", metavar="auto|FAMILY",
                   help="forward model of the refinement: auto (default: calibrated on each stack by re-rendering "
                   "error among the registered PSF families — shape, light model, effective aperture), or a named "
                   "forward-model family (defocus.optics.forward.FAMILIES), e.g. disk (the disk PSF in linear "
                   "light) or gaussian (the paper's Gaussian on sRGB values)")
    p.add_argument("--depth-range", type=float, nargs=2, metavar=("NEAR", "FAR"),
                   help="depth range in metres of the output (default: the preset's, or from the focus distances)")
    p.add_argument("--threads", type=int, default=0,
                   help="CPU threads for torch, and for onnxruntime with --onnx (default: their choice)")


def _load_model(args: argparse.Namespace, onnx: Path | None = None):
    """The model of the flags (the factory loads it): ``--onnx`` (ONNX Runtime), ``--checkpoint`` or the shipped
    weights. Flag combinations that cannot work are refused here, before any stack is read."""
    import torch

    from defocus.models.factory import create_model

    if args.threads > 0:
        torch.set_num_threads(args.threads)
    if args.refine and not args.refine_steps:
        args.refine_steps = DEFAULT_REFINE_STEPS
    if onnx is not None:
        if args.checkpoint is not None:
            raise DefocusError("pass either --onnx (an exported model) or --checkpoint (PyTorch weights), not both")
        if args.refine_steps > 0:
            raise DefocusError("refinement needs PyTorch autograd, which --onnx runs without: drop --refine / "
                               "--refine-steps, or --onnx")
    path = onnx or args.checkpoint
    return create_model(checkpoint=path, threads=args.threads) if path else create_model(pretrained=True)


def _options(args: argparse.Namespace, **fields):
    """The pipeline options of the model flags (and ``fields`` of the command's own)."""
    from defocus.predict import PredictOptions

    return PredictOptions(depth_range=tuple(args.depth_range) if args.depth_range else None,
                          refine_steps=args.refine_steps, refine_model=args.refine_psf, **fields)


#: Exit status of predict / evaluate when some stacks failed and the others were processed (2: nothing was).
EXIT_SOME_FAILED = 1


def _shard_spec(text: str) -> tuple[int, int]:
    """An argparse type for ``--shard I/N``: part I (1-based) of N."""
    parts = text.strip().split("/")
    try:
        i, n = (int(v) for v in parts)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected I/N with whole numbers, e.g. 1/4, got {text!r}") from None
    if n < 1 or not 1 <= i <= n:
        raise argparse.ArgumentTypeError(f"expected I/N with 1 <= I <= N, got {text!r}")
    return i, n


def _check_json_path(path: Path | None) -> None:
    """--json names a file that can be written: refused before any work when it is a folder or no file name."""
    if path is None:
        return
    if path.name in ("", ".", "..") or path.is_dir():
        raise DefocusError(f"--json {str(path)!r}: expected a file path, not a folder")


def _batch_flags(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("batches")
    g.add_argument("--shard", type=_shard_spec, metavar="I/N",
                   help="process only part I of N (1-based) of the stack folders, e.g. 2/4: the folders (after "
                   "expanding folders of stack folders) are sorted by path and every N-th one, starting with the "
                   "I-th, is taken, so N machines given the same arguments cover every stack exactly once")
    g.add_argument("--fail-fast", action="store_true",
                   help="stop at the first stack that fails (default: report it on one line, go on with the others, "
                   "and exit with status 1 after a summary)")


def _select_shard(folders: Sequence[Path], shard: tuple[int, int] | None) -> list[int]:
    """Indices into ``folders`` of shard ``(I, N)`` (all of them without a shard): every N-th folder of the list
    sorted by path, starting at the I-th, in that sorted order."""
    if shard is None:
        return list(range(len(folders)))
    i, n = shard
    order = sorted(range(len(folders)), key=lambda k: str(folders[k]))
    return order[i - 1 :: n]


def _describe_failure(exc: BaseException) -> str:
    """One line for a stack that failed."""
    from defocus.files import describe_os_error

    if isinstance(exc, DefocusError):
        text = str(exc)
    elif isinstance(exc, MemoryError):
        text = "out of memory"
    elif isinstance(exc, OSError):
        where = f" ({exc.filename})" if getattr(exc, "filename", None) else ""
        text = describe_os_error(exc) + where
    else:  # a bug of defocus rather than bad input: say so, keep going with the other stacks
        text = f"unexpected {type(exc).__name__}: {exc} (please report this)"
    return " ".join(text.split()) or type(exc).__name__


def _run_batch(
    command: str, folders: Sequence[Path], work: Callable[[int], None], fail_fast: bool
) -> tuple[list[tuple[Path, str]], int]:
    """Runs ``work(k)`` for each folder ``k`` in turn; a stack that fails is one line on stderr and the batch goes
    on (unless ``fail_fast``). A single stack fails exactly like any other bad input (the exception goes up to
    ``main``: one line, exit 2). Returns (the failed folders with their reasons, the number attempted)."""
    from defocus.allocator import release_freed_memory
    from defocus.progress import progress_bar, progress_write

    if len(folders) == 1:
        work(0)
        return [], 1
    failed: list[tuple[Path, str]] = []
    attempted = 0
    for k, folder in enumerate(progress_bar(folders, desc=command, leave=False)):
        attempted += 1
        try:
            work(k)
        except Exception as exc:  # noqa: BLE001 - one bad stack must not end a batch; KeyboardInterrupt still does
            reason = _describe_failure(exc)
            failed.append((folder, reason))
            progress_write(f"defocus {command}: error: {folder}: {reason}", file=sys.stderr)
            if fail_fast:
                break
        finally:
            release_freed_memory()  # the next stack's sizes differ: do not let the kept heap fragment and grow
    return failed, attempted


def _batch_status(command: str, folders: Sequence[Path], failed: list[tuple[Path, str]], attempted: int) -> int:
    """The exit status of a batch, after a summary line on stderr when stacks failed: 0 all done,
    :data:`EXIT_SOME_FAILED` some failed and others were processed, 2 not one was processed."""
    if not failed:
        return 0
    shown = ", ".join(str(f) for f, _ in failed[:10]) + (f" and {len(failed) - 10} more" if len(failed) > 10 else "")
    stopped = f" (stopped by --fail-fast, {len(folders) - attempted} not attempted)" if attempted < len(folders) else ""
    print(f"defocus {command}: {len(failed)} of {len(folders)} stacks failed{stopped}: {shown}", file=sys.stderr)
    return 2 if len(failed) == attempted else EXIT_SOME_FAILED


def _choose_shard(labels: Sequence, shard: tuple[int, int] | None) -> list[int]:
    """The indices of this shard's items (all without ``--shard``), saying how many when sharded."""
    chosen = _select_shard(labels, shard)
    if shard and not chosen:
        print(f"shard {shard[0]}/{shard[1]}: no stacks ({len(labels)} in all)")
    elif shard:
        print(f"shard {shard[0]}/{shard[1]}: {len(chosen)} of {len(labels)} stacks")
    return chosen


def _batch_folders(args: argparse.Namespace) -> tuple[list[Path], list[int]]:
    """All stack folders of the arguments (folders of stack folders expanded) and the indices of this shard's."""
    from defocus.data.folders import expand_stack_folders

    folders = expand_stack_folders(args.stacks)
    return folders, _choose_shard(folders, args.shard)


def _evaluate_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "evaluate",
        help="depth metrics of the network and the classical baseline, side by side, on stacks with ground truth",
        description="Evaluate on stack folders holding gt_depth.tiff (and optionally gt_aif.png): depth metrics "
        "(AbsRel, SqRel, RMSE, RMSElog, δ1-3; AIF PSNR/SSIM) per stack and their mean, for the network and for the "
        "classical depth-from-focus baseline.",
    )
    p.add_argument("stacks", nargs="*", type=Path, help="stack folders, or folders of stack folders")
    p.add_argument("--dataset", action="append", default=[], metavar="SPEC",
                   help="a public dataset with ground truth, NAME:PATH[#OPTION] (nyuv2, ddff12, fod500; see README "
                   "'Public datasets'); repeatable, besides or instead of stack folders")
    p.add_argument("--limit", type=int, default=0, metavar="K", help="only the first K items of each --dataset")
    _model_flags(p)
    p.add_argument("--json", type=Path, help="also write the results as JSON here")
    p.add_argument("--markdown", action="store_true", help="print the table as markdown")
    p.add_argument("--fixed-baselines", action="store_true",
                   help="also report the classical baseline with a fixed pre-filter (σ = 0 and σ = 1 px) and the adaptive "
                   "one followed by the network's texture-less fill (classical_fill) beside the default adaptive one "
                   "(pre-filter chosen from each stack's estimated noise)")
    _batch_flags(p)
    p.set_defaults(func=cmd_evaluate)


def cmd_evaluate(args: argparse.Namespace) -> int:
    from defocus.data.datasets import open_dataset
    from defocus.data.folders import expand_stack_folders, read_stack
    from defocus.evaluate import evaluate_stack, fixed_baselines, format_table, results_to_json
    from defocus.files import atomic_write

    if not args.stacks and not args.dataset:
        raise DefocusError("nothing to evaluate: give stack folders or --dataset SPEC")
    if args.limit < 0:
        raise DefocusError("--limit must be >= 0")
    _check_json_path(args.json)
    sources = [open_dataset(spec) for spec in args.dataset]  # bad specs fail before the model loads
    for ds in sources:
        if ds.key == "mobile-depth":
            raise DefocusError(f"{ds.spec}: Mobile Depth has no ground-truth depth: nothing to evaluate "
                               "(use defocus predict on rendered folders instead)")
    # The items of the run: stack folders, then dataset items (labelled SPEC[item]); one loader each.
    items: list[tuple[str, Callable]] = [(str(f), lambda f=f: read_stack(f))
                                        for f in (expand_stack_folders(args.stacks) if args.stacks else [])]
    for ds in sources:
        n = len(ds) if args.limit <= 0 else min(args.limit, len(ds))
        items += [(f"{ds.spec}[{ds.item_name(i)}]", lambda ds=ds, i=i: ds.stack(i)) for i in range(n)]
    chosen = _choose_shard([label for label, _ in items], args.shard)
    if not chosen:
        return 0
    labels = [items[k][0] for k in chosen]
    model = _load_model(args)
    options = _options(args)
    extra = fixed_baselines() if args.fixed_baselines else None
    results = []  # metrics only (floats): one stack's images and predictions are dropped before the next is read

    def work(k: int) -> None:
        stack = items[chosen[k]][1]()
        results.append(evaluate_stack(model, stack, options, extra_baselines=extra))

    failed, attempted = _run_batch("evaluate", labels, work, args.fail_fast)
    if results:
        print(format_table(results, markdown=args.markdown))
        if args.json:
            extra_json = {"checkpoint": str(args.checkpoint or "shipped"), "refine_steps": args.refine_steps}
            if args.shard:
                extra_json["shard"] = f"{args.shard[0]}/{args.shard[1]}"
            if failed:
                extra_json["failed"] = [{"stack": str(f), "error": reason} for f, reason in failed]
            text = results_to_json(results, extra_json)
            atomic_write(args.json, lambda tmp: tmp.write_text(text), "results")
            print(f"results written to {args.json}")
    return _batch_status("evaluate", labels, failed, attempted)


def _predict_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "predict",
        help="depth map and all-in-focus image for each stack folder (photos of any size)",
        description="For each stack folder write OUT/<folder name>/: depth.tiff (float32 m), depth.png (uint16 mm), "
        "depth_preview.png, aif.png, confidence.tiff/.png, points.ply, report.png and prediction.json, at the "
        "input's full resolution. Hand-held frames are aligned first (--no-align for tripod stacks). A folder "
        "holding stack folders stands for all of them.",
    )
    p.add_argument("stacks", nargs="+", type=Path, help="stack folders (stack.json, or images with EXIF / --focus), "
                   "or folders of stack folders")
    p.add_argument("-o", "--output", type=Path, required=True, help="output folder")
    _source_flags(p)
    _model_flags(p)
    g = p.add_argument_group("real photos")
    g.add_argument("--max-size", type=int, default=None, metavar="PX",
                   help="longest side in pixels of the estimation (outputs stay at full size); default: automatic, "
                   "the size at which the stack's blur per dioptre matches what the network was trained on")
    g.add_argument("--no-align", action="store_true", help="do not register the frames (tripod or synthetic stacks)")
    g.add_argument("--trust-focus-order", action="store_true",
                   help="predict even when the frames' magnification strongly contradicts the order of the focus "
                   "distances (otherwise an error: the distances are probably given in the reverse file order)")
    g.add_argument("--no-exposure", action="store_true",
                   help="do not bring the frames to one exposure (by default a frame whose exposure differs by more "
                   "than a few per cent is rescaled in linear light, as phones auto-expose every frame)")
    g.add_argument("--no-solve", action="store_true",
                   help="skip the global edge-aware solve that follows the estimate (calibrated confidence as data "
                   "weight, the AIF as guide; defocus.solve): the raw per-pixel estimate")
    g.add_argument("--solve", action="store_true", help=argparse.SUPPRESS)  # on by default since issue 17
    g.add_argument("--solve-smoothness", type=float, default=None, metavar="L",
                   help="the solve's smoothness weight against its data term at a 640-px working image, "
                   "scaled by the working size squared (default 50, chosen on the validation and training scene "
                   "groups under random cameras and both synthesis protocols)")
    g.add_argument("--no-solve-classical", action="store_true",
                   help="the solve's data term from the network's estimate alone (by default the adaptive classical "
                   "estimate is a second data term, each weighted by its calibrated confidence)")
    g.add_argument("--confidence", choices=("calibrated", "raw"), default="calibrated",
                   help="calibrated (default): the probability that a pixel's (written, solved) depth is within "
                   "10 %%, fitted on held-out data; raw: the model's own score, before the solve")
    g.add_argument("--min-confidence", type=float, default=0.0, metavar="C",
                   help="write depth 0 (unknown) and no points where the confidence is below C (0-1; with the "
                   "calibrated confidence, 0.8 keeps the pixels that were within 10 %% 80 %% of the time)")
    g.add_argument("--device", choices=("auto", "cpu", "cuda"), default="cpu",
                   help="where the network runs: cpu (default), cuda, or auto (cuda when available)")
    g.add_argument("--skip-existing", action="store_true",
                   help="skip stacks whose output folder already holds a prediction.json")
    p.add_argument("--onnx", type=Path, metavar="MODEL",
                   help="run the network from this ONNX file of `defocus export` with onnxruntime (CPU, no PyTorch "
                   "autograd; needs defocus[onnx]) instead of PyTorch weights; not with --refine")
    _batch_flags(p)
    p.set_defaults(func=cmd_predict)


def _source_flags(p: argparse.ArgumentParser) -> None:
    """Focus and camera flags of predict and inspect: each camera flag overrides only what it names."""
    f = p.add_argument_group("focus (overrides stack.json / EXIF SubjectDistance)")
    f.add_argument("--focus", type=_float_list, help="focus distances in metres, comma-separated, one per image "
                   "in file order")
    f.add_argument("--focus-diopters", type=_dioptre_list, metavar="LIST",
                   help="focus distances as dioptres (1/metres), as phones report them")
    add_camera_flags(p)
    p.add_argument("--sensor-width-mm", type=float, help="sensor width in mm, for the pixel pitch when nothing else "
                   "gives it (pitch = width / image width)")


def _read_args(args: argparse.Namespace) -> dict:
    """read_stack keyword arguments from the focus and camera flags."""
    if args.focus is not None and args.focus_diopters is not None:
        raise DefocusError("pass either --focus (metres) or --focus-diopters, not both")
    return {
        "focus": args.focus,
        "focus_diopters": args.focus_diopters,
        "camera_flags": {"focal_length_mm": args.focal_length_mm, "f_number": args.f_number,
                         "pixel_size_um": args.pixel_size_um},
        "sensor_width_mm": args.sensor_width_mm,
        "load_ground_truth": False,
        "require_focus": False,
    }


def _resolve_device(name: str) -> str:
    import torch

    if name == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if name == "cuda" and not torch.cuda.is_available():
        raise DefocusError("--device cuda: no CUDA device is available to this PyTorch")
    return name


def cmd_predict(args: argparse.Namespace) -> int:
    from defocus import __version__
    from defocus.data.folders import output_names, read_stack
    from defocus.data.sources import check_focus_names, missing_camera_message
    from defocus.outputs import write_prediction
    from defocus.predict import predict_stack

    if not 0.0 <= args.min_confidence <= 1.0:
        raise DefocusError(f"--min-confidence must lie in [0, 1], got {args.min_confidence}")
    device = _resolve_device(args.device)
    solve = {} if args.solve_smoothness is None else {"solve_smoothness": args.solve_smoothness}
    options = _options(args, align=not args.no_align, max_size=args.max_size, device=device,
                       exposure=not args.no_exposure, solve=not args.no_solve, confidence=args.confidence,
                       trust_focus_order=args.trust_focus_order,
                       solve_classical=not args.no_solve_classical,
                       **solve)  # checked here
    read_kwargs = _read_args(args)
    if args.output.exists() and not args.output.is_dir():
        raise DefocusError(f"output {args.output} exists and is not a folder")
    all_folders, chosen = _batch_folders(args)
    all_names = output_names(all_folders)  # from every shard's folders: the same names whichever shard runs
    folders, names = [all_folders[k] for k in chosen], [all_names[k] for k in chosen]
    if not folders:
        return 0

    # One stack at a time: read, predict, write, drop (memory does not grow with the number of stacks). Output
    # folders are written whole or not at all (a temporary folder renamed into place), so a stack that fails leaves
    # nothing behind, and the output folder itself is made by the first stack written.
    model = _load_model(args, onnx=args.onnx)
    extra = {"defocus_version": __version__, "model": getattr(model, "checkpoint_metadata", {}).get("model_name"),
             "checkpoint": str(args.onnx or args.checkpoint or "shipped"),
             "runtime": "onnxruntime" if args.onnx else "pytorch"}

    def work(k: int) -> None:
        folder, name = folders[k], names[k]
        out = args.output / name
        if args.skip_existing and (out / "prediction.json").is_file():
            print(f"{name}: skipped, {out / 'prediction.json'} exists")
            return
        st = read_stack(folder, **read_kwargs)
        relative = bool(st.provenance.get("relative"))
        if st.camera is None and not relative:
            raise DefocusError(missing_camera_message(st.provenance.get("camera", {}), st.name, flags=True))
        source = st.provenance.get("focus", {}).get("source")
        for image_name, fd in zip(st.image_names, st.focus_distances_m.tolist()):
            print(f"  {image_name}: " + ("focus unknown (relative result)" if relative else
                                         f"focus {fd:.4g} m (from {source})"))
        name_warning = None if relative else check_focus_names(st.image_names, st.focus_distances_m.tolist())
        if name_warning:
            print(f"defocus predict: warning: {name}: {name_warning}", file=sys.stderr)
        result = predict_stack(model, st, options, progress=True, in_place=True)
        if name_warning:
            result.warnings.insert(0, name_warning)
        write_prediction(out, result, {**extra, "stack": str(folder)}, min_confidence=args.min_confidence)
        for w in result.warnings:
            if w != name_warning:  # that one was printed before the run
                print(f"defocus predict: warning: {name}: {w}", file=sys.stderr)
        if relative:
            print(f"{name}: relative focus-index map (no focus distances) -> {out}")
            return
        d = result.depth_map
        x0, y0, x1, y1 = result.crop_box
        h0, w0 = st.images.shape[-2:]
        if (x0, y0, x1, y1) != (0, 0, w0, h0):
            print(f"{name}: aligned; outputs cropped to the area all frames cover: x {x0}-{x1}, y {y0}-{y1} of "
                  f"{w0}x{h0}")
        print(f"{name}: depth {float(d.min()):.2f}-{float(d.max()):.2f} m, {d.shape[1]}x{d.shape[0]} -> {out}")

    failed, attempted = _run_batch("predict", folders, work, args.fail_fast)
    return _batch_status("predict", folders, failed, attempted)


def _inspect_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "inspect",
        help="what predict would read from each stack: images, focus per image, camera values and their sources",
        description="Print, without predicting, what `defocus predict` would read for each stack folder: the image "
        "files with their focus distances in order, where each camera value and the focus distances come from "
        "(flags, stack.json, EXIF, the sensor table), the blur per dioptre and the largest blur the stack can show.",
    )
    p.add_argument("stacks", nargs="+", type=Path, help="stack folders, or folders of stack folders")
    _source_flags(p)
    p.add_argument("--json", type=Path, help="also write the findings as JSON here")
    p.set_defaults(func=cmd_inspect)


def cmd_inspect(args: argparse.Namespace) -> int:
    import json

    from defocus.data.folders import expand_stack_folders
    from defocus.files import atomic_write
    from defocus.inspect import format_inspection, inspect_stack

    _check_json_path(args.json)
    kwargs = _read_args(args)
    kwargs.pop("load_ground_truth")
    infos = []
    for folder in expand_stack_folders(args.stacks):
        info = inspect_stack(folder, flags=True, **kwargs)
        infos.append(info)
        print(format_inspection(info))
    if args.json:
        text = json.dumps(infos if len(infos) > 1 else infos[0], indent=2)
        atomic_write(args.json, lambda tmp: tmp.write_text(text + "\n"), "inspection")
    return 0


def _demo_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "demo",
        help="end-to-end demo on procedural scenes: render, predict, evaluate vs the classical baseline, report",
        description="Make procedural focal stacks for both presets and both protocols, predict with the shipped "
        "weights, evaluate against ground truth and the classical baseline, and write a report.",
    )
    p.add_argument("-o", "--output", type=Path, default=Path("defocus_demo"), help="report folder (default: ./defocus_demo)")
    p.add_argument("--stacks-per-group", type=int, default=2, help="stacks per (preset, protocol) pair")
    _model_flags(p)
    p.set_defaults(func=cmd_demo)


def cmd_demo(args: argparse.Namespace) -> int:
    from defocus.demo import run_demo

    model = _load_model(args)
    report = run_demo(model, args.output, args.stacks_per_group, _options(args))
    print(f"report written to {report}")
    return 0


# ------------------------------------------------------------------------------------------------------ export
def _export_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "export",
        help="export DAIF-Net to ONNX (dynamic batch, stack length and image size) for `predict --onnx`",
        description="Export the network (classical prior, network and cue fill: the whole tensor path of predict) to "
        "one ONNX file with dynamic batch, stack length N and image size (H, W >= 10), its inputs, outputs and "
        "checkpoint config in the metadata; then check it against PyTorch with onnxruntime on two procedural "
        "stacks at other sizes. Needs defocus[onnx].",
    )
    p.add_argument("--checkpoint", type=Path, help="weights (.safetensors); default: the weights shipped with defocus")
    p.add_argument("-o", "--output", type=Path, required=True, help="the .onnx file to write")
    p.add_argument("--opset", type=int, default=None, help="ONNX opset (default: the exporter's, at least 18)")
    p.add_argument("--no-check", action="store_true", help="skip the parity check against PyTorch")
    p.add_argument("--verbose", action="store_true", help="show the exporter's own messages")
    p.set_defaults(func=cmd_export)


def cmd_export(args: argparse.Namespace) -> int:
    from defocus.export import export_and_check

    for line in export_and_check(args.checkpoint, args.output, args.opset, check=not args.no_check,
                                 verbose=args.verbose):
        print(line)
    return 0


# -------------------------------------------------------------------------------------------------------- main
#: The flag that sets each named input of the library (InputError.field) -> (argparse dest, flag text). The library
#: speaks of the input itself; the command line says which of its flags sets it, where the command has that flag.
FIELD_FLAGS: dict[str, tuple[str, str]] = {
    "focus": ("focus", "--focus or --focus-diopters"),
    "depth_range": ("depth_range", "--depth-range NEAR FAR"),
    "max_size": ("max_size", "--max-size"),
    "refine_steps": ("refine_steps", "--refine-steps"),
    "checkpoint": ("checkpoint", "--checkpoint"),
    "device": ("device", "--device"),
    "refine_model": ("refine_psf", "--refine-psf"),
    "protocol": ("protocol", "--protocol"),
    "solve_smoothness": ("solve_smoothness", "--solve-smoothness"),
    "opset": ("opset", "--opset"),
    "camera.focal_length_mm": ("focal_length_mm", "--focal-length-mm"),
    "camera.f_number": ("f_number", "--f-number"),
    "camera.pixel_size_um": ("pixel_size_um", "--pixel-size-um"),
    "sensor_width_mm": ("sensor_width_mm", "--sensor-width-mm"),
    "depth_scale": ("depth_scale", "--depth-scale"),
    "align": ("no_align", "--no-align"),
    "confidence": ("confidence", "--confidence"),
    "trust_focus_order": ("trust_focus_order", "--trust-focus-order"),
    "holdout": ("holdout", "--holdout"),
}


def _with_flag(exc: DefocusError, args: argparse.Namespace) -> str:
    """The error's line, with the flags that set its inputs where the library named them (``InputError.field``) and
    this command has them."""
    text = str(exc)
    fields = getattr(exc, "field", None) or ()
    flags = [FIELD_FLAGS[f][1] for f in ((fields,) if isinstance(fields, str) else fields)
             if f in FIELD_FLAGS and hasattr(args, FIELD_FLAGS[f][0])]
    flags = [f for f in flags if f.split()[0] not in text]
    if flags:
        text += f" (set with {' or '.join(flags) if len(flags) < 3 else ', '.join(flags[:-1]) + ' and ' + flags[-1]})"
    return text


PARSERS: list[Callable[[argparse._SubParsersAction], None]] = [
    _demo_parser, _predict_parser, _inspect_parser, _evaluate_parser, _train_parser, _finetune_parser, _render_parser,
    _export_parser,
]


class _Parser(argparse.ArgumentParser):
    """argparse, with a usage error as one line (``defocus predict: error: ... (see defocus predict --help)``)
    instead of the whole usage text before it."""

    def error(self, message: str):  # type: ignore[override]
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def build_parser() -> argparse.ArgumentParser:
    from defocus import __version__

    parser = _Parser(
        prog="defocus",
        description="Metric depth and all-in-focus images from focal stacks (self-supervised depth from defocus).",
    )
    parser.add_argument("--version", action="version", version=f"defocus {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    for add in PARSERS:
        add(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    # `train`'s key=value overrides may come on both sides of its flags (argparse stops a positional list at a flag).
    if extra and getattr(args, "command", None) == "train" and all("=" in a and not a.startswith("-") for a in extra):
        args.overrides = [*args.overrides, *extra]
    elif extra:
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    from defocus.allocator import keep_freed_memory

    keep_freed_memory()  # large tensors reused rather than re-faulted from the kernel: half the wall time at 12 MP
    try:
        return int(args.func(args) or 0)
    except ShapeError as exc:  # a tensor of the wrong shape between defocus's own functions: a bug, not bad input
        print(f"defocus {args.command}: internal error: {exc} (please report this)", file=sys.stderr)
        return 2
    except DefocusError as exc:
        print(f"defocus {args.command}: error: {_with_flag(exc, args)}", file=sys.stderr)
        return 2
    except FileNotFoundError as exc:
        print(f"defocus {args.command}: error: file not found: {exc.filename}", file=sys.stderr)
        return 2
    except OSError as exc:
        print(f"defocus {args.command}: error: {_describe_failure(exc)}", file=sys.stderr)
        return 2
    except MemoryError:
        print(f"defocus {args.command}: error: out of memory", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"defocus {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
