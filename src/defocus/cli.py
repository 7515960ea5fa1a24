"""The ``defocus`` command line: one entry point, one sub-command per job.

Bad input never produces a traceback: every :class:`~defocus.errors.DefocusError` (and a few predictable OS
errors) becomes one line on stderr and exit status 2. Sub-commands import their heavy modules lazily so that
``defocus --help`` is instant.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Callable, Sequence

from defocus.errors import DefocusError


def _float_list(text: str) -> list[float]:
    try:
        values = [float(v) for v in text.replace(" ", "").split(",") if v]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated numbers in metres, got {text!r}") from None
    if not values:
        raise argparse.ArgumentTypeError("expected at least one focus distance")
    return values


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
    p.add_argument("--preset", help="camera preset: nyuv2 or defocusnet (sets camera, focus distances and image size)")
    p.add_argument("--focus", type=_float_list, help="focus distances in metres, comma-separated (overrides the preset's)")
    p.add_argument("--size", type=int, nargs=2, metavar=("H", "W"), help="output size (default: the preset's, or the input's)")
    p.add_argument("--protocol", choices=("paper", "realistic"), default="paper", help="synthesis protocol (SPEC §2)")
    p.add_argument("--seed", type=int, default=0, help="seed of the sensor noise of the realistic protocol")
    add_camera_flags(p)
    p.add_argument("-o", "--output", type=Path, required=True, help="output stack folder")
    p.set_defaults(func=cmd_render)


def _resize(img, size, mode: str):
    import torch.nn.functional as F

    if tuple(img.shape[-2:]) == tuple(size):
        return img
    if mode == "area":
        return F.interpolate(img[None], size=size, mode="area")[0]
    return F.interpolate(img[None], size=size, mode="nearest")[0]


def cmd_render(args: argparse.Namespace) -> int:
    import numpy as np
    import torch

    from defocus.data.procedural import make_scene
    from defocus.data.stack_io import FocalStack, fill_depth_holes, load_image, read_depth, write_stack
    from defocus.data.synthesis import synthesize_stack
    from defocus.optics.camera import get_preset

    preset = get_preset(args.preset) if args.preset else None
    camera = camera_from_flags(args) or (preset.camera if preset else None)
    if camera is None:
        raise DefocusError("no camera given: pass --preset or --focal-length-mm, --f-number and --pixel-size-um")
    focus = args.focus or (list(preset.focus_distances_m) if preset else None)
    if focus is None:
        raise DefocusError("no focus distances given: pass --focus or --preset")
    camera.validate_focus(focus)

    if args.procedural is not None:
        if args.rgb or args.depth:
            raise DefocusError("pass either --procedural or --rgb/--depth, not both")
        size = tuple(args.size) if args.size else (preset.image_size if preset else (240, 320))
        depth_range = preset.depth_range_m if preset else (0.5, 6.0)
        near = max(depth_range[0], 1.5 * camera.focal_length_m)
        rgb, depth = make_scene(args.procedural, size[0], size[1], (max(near, 0.3), depth_range[1] * 0.8))
        valid = torch.ones_like(depth, dtype=torch.bool)
    else:
        if args.rgb is None or args.depth is None:
            raise DefocusError("no source given: pass --rgb and --depth, or --procedural SEED")
        rgb = load_image(args.rgb)
        depth_np = read_depth(args.depth, args.depth_scale)
        if depth_np.shape != tuple(rgb.shape[-2:]):
            raise DefocusError(
                f"--rgb is {rgb.shape[-1]}x{rgb.shape[-2]} but --depth is {depth_np.shape[1]}x{depth_np.shape[0]}"
            )
        filled, valid_np = fill_depth_holes(depth_np)
        depth = torch.from_numpy(filled)[None]
        valid = torch.from_numpy(valid_np)[None]
        size = tuple(args.size) if args.size else (preset.image_size if preset else tuple(rgb.shape[-2:]))
        # The preset's pixel pitch belongs to the preset's image size: the camera is used as given at `size`.
        rgb = _resize(rgb, size, "area")
        depth = _resize(depth, size, "nearest")
        valid = _resize(valid.float(), size, "nearest") > 0.5
    stack = synthesize_stack(rgb, depth, torch.tensor(focus), camera, args.protocol, seed=args.seed)
    gt_depth = np.where(valid[0].numpy(), depth[0].numpy(), 0.0).astype(np.float32)
    out = FocalStack(
        images=stack,
        focus_distances_m=torch.tensor(focus, dtype=torch.float32),
        camera=camera,
        gt_depth=gt_depth,
        gt_aif=rgb,
        name=args.output.name,
    )
    write_stack(out, args.output)
    print(f"wrote {len(focus)}-image {args.protocol} stack {size[1]}x{size[0]} to {args.output}")
    return 0


# -------------------------------------------------------------------------------------------------------- main
PARSERS: list[Callable[[argparse._SubParsersAction], None]] = [_render_parser]


def build_parser() -> argparse.ArgumentParser:
    from defocus import __version__

    parser = argparse.ArgumentParser(
        prog="defocus",
        description="Metric depth and all-in-focus images from focal stacks (self-supervised depth from defocus).",
    )
    parser.add_argument("--version", action="version", version=f"defocus {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for add in PARSERS:
        add(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        return int(args.func(args) or 0)
    except DefocusError as exc:
        print(f"defocus {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except FileNotFoundError as exc:
        print(f"defocus {args.command}: error: file not found: {exc.filename}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"defocus {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
