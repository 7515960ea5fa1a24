r"""Planar surfaces of the real focal stacks: how much of each plane's depth is off a robust plane fit (issue 17).

Hand-annotated planes (``benchmarks/planes.json``: floor, walls, box front, door, desk top, table top; polygons in
fractions of the output image) of the real stacks in ../shared/data/focal_stacks are measured on the output of
``defocus predict`` with the flags stored in the annotation (default working size unless ``--max-size``):

* the pixels inside a plane's polygons with depth > 0 are fitted by a plane in inverse depth,
  1/d = a·x + b·y + c over pixel coordinates (a 3-D plane seen through a pinhole camera is exactly that), robustly:
  RANSAC on the relative depth deviation (the plane most pixels agree with within the threshold) followed by
  iteratively reweighted least squares with Tukey's biweight on all pixels;
* "off plane" = |d − d_plane| / d_plane > 10 % (``threshold`` in the JSON); the table gives that fraction, the
  median depth and the range of the fitted plane's depth over the polygon;
* ordinal relations ("the wall is behind the box": median depth of A > median depth of B) between planes and the
  boxes in ``regions`` (those of tests/test_real_stacks.py for the phone stacks);
* per stack, ``OUT/<stack>_planes.png``: the all-in-focus image and the depth (inverse depth, turbo, near = red)
  side by side, polygons drawn, each plane's off-plane pixels painted red on the AIF.

A stack without metric focus distances (the Mobile Depth balls: its focus distances are in the dataset's own units)
is predicted without ``--focus``; its ``focus_index.tiff`` is turned into a *relative* inverse depth by each of the
stack's ``relative_maps``: ``index+1`` (predict's own pseudo dioptres, frame i at i + 1) or
``file:NAME`` (1 / the values of the stack's file NAME, interpolated at the index; a depth up to an unknown scale,
which the relative 10 % test does not see). Those rows are marked "rel.", and their depths are not metres.

Commands (the reported figures are the default run, about 2 minutes for the three stacks on 2 CPU cores;
``--max-size 1024`` is a quicker look, about 1.5 minutes, and NOT the reported figure: at that size the 12 MP walls
are filled smoother but nearer, to the box's depth)::

    .venv/bin/python benchmarks/bench_planes.py --out /tmp/planes_out
    .venv/bin/python benchmarks/bench_planes.py --out /tmp/planes_out --reuse      # re-measure existing outputs
    .venv/bin/python benchmarks/bench_planes.py --out /tmp/planes_quick --max-size 1024
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_DATA = ROOT.parent / "shared" / "data"
DEFAULT_ANNOTATIONS = Path(__file__).resolve().with_name("planes.json")
DEFAULT_OUT = Path("/tmp/bench_planes")

Polygon = list[tuple[float, float]]


# ============================================================================================== plane fitting
@dataclass
class PlaneFit:
    """A plane 1/d = a·x + b·y + c (x, y: pixel coordinates divided by the image width and height)."""

    coef: np.ndarray  # (3,) a, b, c
    iterations: int

    def inverse_depth(self, x: np.ndarray, y: np.ndarray) -> np.ndarray:
        """The plane's inverse depth at normalised coordinates x, y."""
        return self.coef[0] * x + self.coef[1] * y + self.coef[2]


def relative_deviation(inv_measured: np.ndarray, inv_plane: np.ndarray) -> np.ndarray:
    """|d − d_plane| / d_plane from inverse depths: |v − p| / v (v measured, p plane); inf where p ≤ 0."""
    with np.errstate(divide="ignore", invalid="ignore"):
        dev = np.abs(inv_measured - inv_plane) / inv_measured
    return np.where(inv_plane > 0, dev, np.inf)


def _lstsq(design: np.ndarray, target: np.ndarray, weight: np.ndarray | None = None) -> np.ndarray:
    """Weighted least squares coefficients of design @ coef ≈ target."""
    if weight is not None:
        sw = np.sqrt(weight)
        design, target = design * sw[:, None], target * sw
    coef, *_ = np.linalg.lstsq(design, target, rcond=None)
    return coef


def fit_plane_robust(x: np.ndarray, y: np.ndarray, inv: np.ndarray, threshold: float = 0.1,
                     ransac_iters: int = 400, sample: int = 20000, irls_iters: int = 30,
                     seed: int = 0) -> PlaneFit:
    """Robust plane in inverse depth through (x, y, inv): RANSAC, then Tukey-biweight IRLS on all points.

    RANSAC (on at most ``sample`` points, ``ransac_iters`` minimal 3-point samples, fixed seed) keeps the plane with
    the most points whose relative depth deviation is within ``threshold``; its inliers are refitted by least
    squares. IRLS then reweights every point by Tukey's biweight of its relative residual (v − p) / p with the
    tuning constant 2 × ``threshold`` (a fixed scale: with half the pixels or more off the plane, as on speckled
    walls, a MAD scale would grow until IRLS is least squares again and leaves the consensus RANSAC found), so that
    confetti far off the plane weighs nothing while the plane follows every pixel near it.
    """
    rng = np.random.default_rng(seed)
    design = np.stack([x, y, np.ones_like(x)], axis=1)
    n = len(inv)
    idx = rng.choice(n, size=min(n, sample), replace=False) if n > sample else np.arange(n)
    ds, vs = design[idx], inv[idx]
    best_coef, best_count = _lstsq(ds, vs), -1
    for _ in range(ransac_iters):
        pick = rng.choice(len(vs), size=3, replace=False)
        a = ds[pick]
        if abs(np.linalg.det(a)) < 1e-12:
            continue
        coef = np.linalg.solve(a, vs[pick])
        count = int((relative_deviation(vs, ds @ coef) <= threshold).sum())
        if count > best_count:
            best_coef, best_count = coef, count
    inliers = relative_deviation(inv, design @ best_coef) <= threshold
    coef = _lstsq(design[inliers], inv[inliers]) if inliers.sum() >= 3 else best_coef
    c = 2.0 * threshold  # Tukey's tuning constant on the relative residual: beyond twice the threshold, weight 0
    it = 0
    for it in range(1, irls_iters + 1):
        p = design @ coef
        u = np.where(p > 0, (inv - p) / np.where(p > 0, p, 1.0), np.inf) / c
        w = np.where(np.abs(u) < 1, (1 - np.minimum(u**2, 1)) ** 2, 0.0)
        if (w > 0).sum() < 3:
            break
        new = _lstsq(design, inv, w)
        done = np.max(np.abs(new - coef)) <= 1e-9 * max(1.0, float(np.max(np.abs(coef))))
        coef = new
        if done:
            break
    return PlaneFit(coef=coef, iterations=it)


# ============================================================================================== annotations
def polygon_mask(polygons: list[Polygon], width: int, height: int) -> np.ndarray:
    """(H, W) bool mask of the union of polygons given in fractions of the image (PIL.ImageDraw rasterisation)."""
    from PIL import Image, ImageDraw

    img = Image.new("L", (width, height), 0)
    draw = ImageDraw.Draw(img)
    for poly in polygons:
        draw.polygon([(float(px) * width, float(py) * height) for px, py in poly], fill=1)
    return np.asarray(img, dtype=bool)


def box_mask(box: list[float], width: int, height: int) -> np.ndarray:
    """(H, W) bool mask of a box (x0, y0, x1, y1) in fractions, cut as tests/test_real_stacks.py cuts it."""
    x0, y0, x1, y1 = box
    mask = np.zeros((height, width), dtype=bool)
    mask[int(y0 * height) : int(y1 * height), int(x0 * width) : int(x1 * width)] = True
    return mask


@dataclass
class PlaneResult:
    """One plane's figures on one depth map."""

    name: str
    pixels: int
    median_depth: float
    off_fraction: float
    plane_depth_min: float
    plane_depth_max: float
    off_mask: np.ndarray  # (H, W) bool: the plane's pixels more than the threshold off the fit


def measure_plane(depth: np.ndarray, mask: np.ndarray, name: str, threshold: float) -> PlaneResult:
    """Fit the plane of the pixels of ``mask`` with depth > 0 and count those more than ``threshold`` off it."""
    h, w = depth.shape
    sel = mask & np.isfinite(depth) & (depth > 0)
    ys, xs = np.nonzero(sel)
    d = depth[ys, xs].astype(np.float64)
    off = np.zeros_like(mask)
    if len(d) < 3:
        return PlaneResult(name, int(len(d)), float("nan"), float("nan"), float("nan"), float("nan"), off)
    xn, yn = (xs + 0.5) / w, (ys + 0.5) / h
    fit = fit_plane_robust(xn, yn, 1.0 / d, threshold)
    p = fit.inverse_depth(xn, yn)
    bad = relative_deviation(1.0 / d, p) > threshold
    off[ys[bad], xs[bad]] = True
    with np.errstate(divide="ignore"):
        plane_d = np.where(p > 0, 1.0 / p, np.inf)
    return PlaneResult(name, int(len(d)), float(np.median(d)), float(bad.mean()), float(plane_d.min()),
                       float(plane_d.max()), off)


def validate_annotations(ann: dict[str, Any]) -> None:
    """Raise ValueError on an annotation that cannot be measured: coordinates outside [0, 1], unknown names."""
    for stack in ann["stacks"]:
        names = {p["name"] for p in stack["planes"]} | set(stack.get("regions", {}))
        for plane in stack["planes"]:
            for poly in plane["polygons"]:
                if len(poly) < 3 or not all(0 <= c <= 1 for pt in poly for c in pt):
                    raise ValueError(f"{stack['name']} / {plane['name']}: a polygon needs 3+ points in [0, 1]")
        for pair in stack.get("behind", []):
            unknown = [n for n in pair if n not in names]
            if len(pair) != 2 or unknown:
                raise ValueError(f"{stack['name']}: relation {pair} names unknown planes/regions {unknown}")


# ============================================================================================== predict outputs
def run_key(stack: dict[str, Any]) -> str:
    """Output sub-folder of a stack: its name with '/' and spaces replaced."""
    return stack["name"].replace("/", "_").replace(" ", "_").replace("(", "").replace(")", "")


def result_dir(out: Path, stack: dict[str, Any]) -> Path:
    """Where ``defocus predict -o OUT/<key>`` writes the stack (OUT/<key>/<folder name>)."""
    return out / run_key(stack) / Path(stack["folder"]).name


def run_predict(data: Path, out: Path, stack: dict[str, Any], max_size: int | None,
                extra: list[str] | None = None) -> float:
    """``defocus predict`` of one annotated stack with its flags (and ``extra`` ones), through this interpreter;
    returns seconds."""
    cmd = [sys.executable, "-m", "defocus", "predict", str(data / "focal_stacks" / stack["folder"]), "-o",
           str(out / run_key(stack)), *stack["flags"], *(extra or [])]
    if max_size:
        cmd += ["--max-size", str(max_size)]
    print("$ " + " ".join(cmd), file=sys.stderr, flush=True)
    t = time.perf_counter()
    subprocess.run(cmd, check=True)
    return time.perf_counter() - t


def relative_inverse_depth(index: np.ndarray, spec: str, stack_folder: Path) -> np.ndarray:
    """A relative inverse depth from a focus-index map (0 … N−1): ``index+1`` or ``file:NAME`` (1 / its values)."""
    if spec == "index+1":
        return index.astype(np.float64) + 1.0
    if spec.startswith("file:"):
        values = np.array([float(v) for v in (stack_folder / spec[5:]).read_text().split()])
        return np.interp(index.astype(np.float64), np.arange(len(values)), 1.0 / values)
    raise ValueError(f"unknown relative map {spec!r} (index+1 or file:NAME)")


def load_depth_maps(res: Path, stack: dict[str, Any], data: Path) -> dict[str, np.ndarray]:
    """Depth maps to measure, by label: metric depth.tiff, or one relative depth per ``relative_maps`` entry."""
    import tifffile

    if (res / "depth.tiff").is_file():
        return {"": tifffile.imread(res / "depth.tiff").astype(np.float64)}
    if not (res / "focus_index.tiff").is_file():
        raise FileNotFoundError(f"{res} holds neither depth.tiff nor focus_index.tiff (run without --reuse)")
    index = tifffile.imread(res / "focus_index.tiff")
    maps = {}
    for spec in stack.get("relative_maps", ["index+1"]):
        inv = relative_inverse_depth(index, spec, data / "focal_stacks" / stack["folder"])
        maps[f"rel. {spec}"] = np.where(inv > 0, 1.0 / np.maximum(inv, 1e-300), 0.0)
    return maps


# ============================================================================================== picture
def draw_picture(res: Path, depth: np.ndarray, planes: list[dict[str, Any]], results: list[PlaneResult],
                 path: Path, max_width: int = 1600) -> None:
    """AIF (off-plane pixels red) and colourised inverse depth side by side, polygons and names drawn, to ``path``."""
    from PIL import Image, ImageDraw, ImageFont

    from defocus.visualize import colorize

    h, w = depth.shape
    aif = np.asarray(Image.open(res / "aif.png").convert("RGB"), dtype=np.float32)
    if aif.shape[:2] != (h, w):
        aif = np.asarray(Image.fromarray(aif.astype(np.uint8)).resize((w, h)), dtype=np.float32)
    aif = 0.35 * aif + 0.65 * aif.mean(axis=2, keepdims=True)  # desaturated, so that the red stands out
    for r in results:
        aif[r.off_mask] = (255.0, 0.0, 0.0)
    valid = depth > 0
    inv = np.where(valid, 1.0 / np.where(valid, depth, 1.0), 0.0)
    lo, hi = np.percentile(inv[valid], [1, 99]) if valid.any() else (0.0, 1.0)
    col = colorize(inv, lo, hi if hi > lo else lo + 1e-6, invalid=~valid)
    scale = min(1.0, max_width / w)
    size = (max(1, round(w * scale)), max(1, round(h * scale)))
    left = Image.fromarray(aif.clip(0, 255).astype(np.uint8)).resize(size, Image.BOX)
    right = Image.fromarray(col).resize(size, Image.BOX)
    try:
        font = ImageFont.load_default(size=max(12, size[0] // 70))
    except (TypeError, OSError):  # Pillow < 10.1: the small bitmap font
        font = ImageFont.load_default()
    for img in (left, right):
        draw = ImageDraw.Draw(img)
        for plane, r in zip(planes, results):
            for poly in plane["polygons"]:
                pts = [(px * size[0], py * size[1]) for px, py in poly]
                draw.line(pts + pts[:1], fill=(0, 0, 0), width=5)
                draw.line(pts + pts[:1], fill=(255, 255, 0), width=2)
            x0, y0 = plane["polygons"][0][0]
            label = f"{plane['name']}: {100 * r.off_fraction:.0f} % off"
            tx, ty = x0 * size[0] + 5, y0 * size[1] + 5
            draw.rectangle(draw.textbbox((tx, ty), label, font=font), fill=(0, 0, 0))
            draw.text((tx, ty), label, fill=(255, 255, 0), font=font)
    sheet = Image.new("RGB", (2 * size[0] + 8, size[1]), (255, 255, 255))
    sheet.paste(left, (0, 0))
    sheet.paste(right, (size[0] + 8, 0))
    sheet.save(path)


# ============================================================================================== main
def relation_rows(stack: dict[str, Any], med: dict[str, float]) -> list[str]:
    """Markdown rows of the stack's 'behind' relations: A behind B when median depth of A > median depth of B."""
    rows = []
    for far, near in stack.get("behind", []):
        a, b = med.get(far, float("nan")), med.get(near, float("nan"))
        ok = "yes" if a > b else "**no**"
        rows.append(f"| {far} behind {near} | {a:.3g} | {b:.3g} | {ok} |")
    return rows


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    """Command-line options."""
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--data", type=Path, default=DEFAULT_DATA, help="the shared data folder (holds focal_stacks/)")
    ap.add_argument("--annotations", type=Path, default=DEFAULT_ANNOTATIONS, help="planes.json")
    ap.add_argument("--out", type=Path, default=DEFAULT_OUT, help="predict outputs and the pictures go here")
    ap.add_argument("--reuse", action="store_true", help="measure existing outputs under --out, do not predict")
    ap.add_argument("--max-size", type=int, default=None,
                    help="quick mode: pass --max-size PX to predict (the reported figures use the default)")
    ap.add_argument("--stacks", nargs="*", default=None, help="only the stacks with these names")
    ap.add_argument("--predict-flag", action="append", default=[], metavar="FLAG",
                    help="pass this flag to predict as well (repeatable), e.g. --predict-flag=--solve")
    return ap.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    """Predict (or reuse), measure every annotated plane and relation, print the markdown tables."""
    args = parse_args(argv)
    if not (args.data / "focal_stacks").is_dir():
        print(f"bench_planes: real data not available: {args.data / 'focal_stacks'} is absent", file=sys.stderr)
        return 2
    ann = json.loads(args.annotations.read_text())
    validate_annotations(ann)
    threshold = float(ann.get("threshold", 0.1))
    stacks = [s for s in ann["stacks"] if args.stacks is None or s["name"] in args.stacks]
    args.out.mkdir(parents=True, exist_ok=True)
    plane_rows, rel_rows, seconds = [], [], {}
    for stack in stacks:
        res = result_dir(args.out, stack)
        if not args.reuse:
            seconds[stack["name"]] = run_predict(args.data, args.out, stack, args.max_size, args.predict_flag)
        for label, depth in load_depth_maps(res, stack, args.data).items():
            h, w = depth.shape
            name = stack["name"] + (f" [{label}]" if label else "")
            results, med = [], {}
            for plane in stack["planes"]:
                r = measure_plane(depth, polygon_mask(plane["polygons"], w, h), plane["name"], threshold)
                results.append(r)
                med[plane["name"]] = r.median_depth
                plane_rows.append(f"| {name} | {r.name} | {r.pixels} | {r.median_depth:.3g} | "
                                  f"{r.plane_depth_min:.3g}–{r.plane_depth_max:.3g} | "
                                  f"{100 * r.off_fraction:.1f} % |")
            for region, box in stack.get("regions", {}).items():
                m = box_mask(box, w, h) & (depth > 0)
                med[region] = float(np.median(depth[m])) if m.any() else float("nan")
            rel_rows += [f"| {name} " + row for row in relation_rows(stack, med)]
            suffix = "" if not label else "_" + "".join(c if c.isalnum() else "_" for c in label)
            pic = args.out / f"{run_key(stack)}{suffix}_planes.png"
            draw_picture(res, depth, stack["planes"], results, pic)
            print(f"picture: {pic}", file=sys.stderr)
    size = f"--max-size {args.max_size}" if args.max_size else "default working size"
    print(f"\nPlanes (predict {size}; off plane: |d − d_plane| / d_plane > {100 * threshold:.0f} % of a robust "
          "plane fit in inverse depth; 'rel.' rows are relative depths, not metres)\n")
    print("| stack | plane | pixels | median depth m | plane depth range m | fraction > 10 % off plane |")
    print("|---|---|---:|---:|---:|---:|")
    print("\n".join(plane_rows))
    print("\nRelations (median depths)\n")
    print("| stack | relation | median A | median B | holds |")
    print("|---|---|---:|---:|---|")
    print("\n".join(rel_rows))
    if seconds:
        print("\npredict seconds: " + ", ".join(f"{k} {v:.0f} s" for k, v in seconds.items()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
