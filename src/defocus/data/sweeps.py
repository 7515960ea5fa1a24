"""Training data: dense focus sweeps of procedural scenes, and the user's own unlabeled stacks.

Like the paper, each training scene is rendered as a dense focus sweep and every step samples N of its images,
stratified (one per bin of the sweep, in dioptres) and shuffled. On a CPU the sweeps are rendered once, up front,
and kept as 8-bit images; the ground-truth depth used to render them is dropped right after rendering, so that
nothing on the training path can read it (``tests/train/test_no_ground_truth.py`` proves it).

Further sources: folders of RGB-D pairs (``data.rgbd_dirs``), rendered into sweeps the same way (their depth is
used to render, then dropped), and the user's own unlabeled stacks (``data.stack_dirs``), whose ground-truth files,
if any, are never opened.

A batch is a dict with ``stack`` (B, N, 3, H, W) in [0, 1], ``focus`` (B, N) metres, ``blur_per_dioptre`` (B, N)
pixels per dioptre, ``depth_range`` (B, 2) metres and ``protocol`` (one name for the whole batch, which picks the
PSF model of the loss). There is no depth and no AIF in it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
from tqdm import tqdm

from defocus.color import to_uint8
from defocus.data.codecs import load_image, read_depth
from defocus.data.folders import read_stack
from defocus.data.holes import fill_depth_holes
from defocus.data.procedural import SCENE_DEPTH_RANGE_M, VALIDATION_SEED_START, make_scene
from defocus.data.stack import require_camera
from defocus.data.synthesis import synthesize_stack
from defocus.errors import DefocusError
from defocus.optics.camera import depth_range_from_focus, get_preset


@dataclass
class DataConfig:
    presets: list[str] = field(default_factory=lambda: ["nyuv2", "defocusnet"])
    protocols: list[str] = field(default_factory=lambda: ["paper", "realistic"])
    scenes_per_group: int = 200  # per (preset, protocol) pair
    size: list[int] = field(default_factory=lambda: [64, 64])  # (H, W) of training crops
    sweep: int = 12  # focus distances per dense sweep
    pitch_scale: list[float] = field(default_factory=lambda: [0.7, 1.4])  # camera augmentation (random resize)
    n_min: int = 2
    n_max: int = 10
    p_typical: float = 0.5  # probability of the preset's own N (5)
    n_typical: int = 5
    stack_dirs: list[str] = field(default_factory=list)  # the user's unlabeled stacks (folders)
    rgbd_dirs: list[str] = field(default_factory=list)  # folders of RGB-D pairs: rgb/<name>.*, depth/<name>.*
    rgbd_depth_scale: float = 0.0  # metres per unit of integer depth PNGs in rgbd_dirs (0: float depth files)
    rgbd_preset: str = "nyuv2"  # camera, focus range and image size the RGB-D pairs are rendered with
    stack_protocol: str = "realistic"  # forward model of the loss for real stacks
    seed_offset: int = 0  # procedural seeds used: seed_offset + i (below VALIDATION_SEED_START)


@dataclass
class SweepGroup:
    """Pre-rendered sweeps of one (camera, protocol) group: no ground truth inside."""

    stacks: torch.Tensor  # (S, M, 3, H, W) uint8
    focus: torch.Tensor  # (S, M) metres
    blur_per_dioptre: torch.Tensor  # (S, M)
    depth_range: tuple[float, float]
    protocol: str


def _sweep_focus(preset_name: str, count: int, rng: np.random.Generator) -> np.ndarray:
    """`count` focus distances spanning the preset's focus range (uniform in dioptres, jittered)."""
    fds = get_preset(preset_name).focus_distances_m
    lo, hi = 1.0 / max(fds), 1.0 / min(fds)
    pad = 0.1 * (hi - lo)
    edges = np.linspace(lo - pad, hi + pad, count + 1)
    d = edges[:-1] + rng.uniform(0, 1, count) * np.diff(edges)
    return np.sort(1.0 / np.clip(d, 1e-3, None))[::-1].copy()


def render_sweep_group(
    preset_name: str, protocol: str, seeds: Sequence[int], size: Sequence[int], sweep: int,
    pitch_scale: Sequence[float], progress: bool = True,
) -> SweepGroup:
    """Renders the dense sweeps of procedural scenes `seeds` and keeps only the 8-bit stacks."""
    preset = get_preset(preset_name)
    h, w = int(size[0]), int(size[1])
    stacks, focus, ks = [], [], []
    for seed in tqdm(seeds, desc=f"render {preset_name}/{protocol}", disable=not progress, leave=False):
        if seed >= VALIDATION_SEED_START:
            raise DefocusError(f"procedural seed {seed} is reserved for validation and testing")
        rng = np.random.default_rng([seed, 7])
        camera = preset.camera.resized(float(rng.uniform(*pitch_scale)))
        # Scenes are rendered a little larger than the crops, so that crops vary and see no image border.
        aif, depth = make_scene(int(seed), h + 16, w + 16, SCENE_DEPTH_RANGE_M[preset_name])
        fd = torch.tensor(_sweep_focus(preset_name, sweep, rng), dtype=torch.float32)
        stack = synthesize_stack(aif, depth, fd, camera, protocol, seed=int(seed))
        del aif, depth  # ground truth goes no further
        stacks.append(to_uint8(stack))
        focus.append(fd)
        ks.append(camera.blur_per_dioptre(fd))
    return SweepGroup(torch.stack(stacks), torch.stack(focus), torch.stack(ks), preset.depth_range_m, protocol)


def _rgbd_pairs(folder: Path) -> list[tuple[Path, Path]]:
    rgb_dir, depth_dir = folder / "rgb", folder / "depth"
    if not rgb_dir.is_dir() or not depth_dir.is_dir():
        raise DefocusError(f"RGB-D folder {folder} must hold rgb/ and depth/ sub-folders with matching file names")
    depth_by_stem = {p.stem: p for p in depth_dir.iterdir() if p.is_file()}
    pairs = [(p, depth_by_stem[p.stem]) for p in sorted(rgb_dir.iterdir()) if p.stem in depth_by_stem]
    if not pairs:
        raise DefocusError(f"no RGB-D pairs with matching names in {folder}/rgb and {folder}/depth")
    return pairs


def render_rgbd_group(cfg: DataConfig, protocol: str, progress: bool = True) -> SweepGroup:
    """Dense sweeps rendered from the user's RGB-D pairs at the preset's image size (depth used for rendering only,
    then dropped, exactly like the procedural scenes)."""
    import torch.nn.functional as F

    preset = get_preset(cfg.rgbd_preset)
    h, w = preset.image_size
    if h < cfg.size[0] or w < cfg.size[1]:
        raise DefocusError(f"preset {preset.name} images are smaller than the training size {cfg.size}")
    pairs = [pair for folder in cfg.rgbd_dirs for pair in _rgbd_pairs(Path(folder))]
    stacks, focus, ks = [], [], []
    for i, (rgb_path, depth_path) in enumerate(tqdm(pairs, desc=f"render RGB-D/{protocol}", disable=not progress,
                                                    leave=False)):
        rng = np.random.default_rng([i, 11])
        rgb = F.interpolate(load_image(rgb_path)[None], size=(h, w), mode="area")[0]
        filled, _ = fill_depth_holes(read_depth(depth_path, cfg.rgbd_depth_scale or None))
        depth = F.interpolate(torch.from_numpy(filled)[None, None], size=(h, w), mode="nearest")[0]
        fd = torch.tensor(_sweep_focus(preset.name, cfg.sweep, rng), dtype=torch.float32)
        stack = synthesize_stack(rgb, depth, fd, preset.camera, protocol, seed=i)
        del rgb, depth, filled
        stacks.append(to_uint8(stack))
        focus.append(fd)
        ks.append(preset.camera.blur_per_dioptre(fd))
    return SweepGroup(torch.stack(stacks), torch.stack(focus), torch.stack(ks), preset.depth_range_m, protocol)


def load_stack_group(folders: Sequence[str], size: Sequence[int], protocol: str) -> list[SweepGroup]:
    """The user's unlabeled stacks (ground-truth files are never opened), one group per stack."""
    groups = []
    for folder in folders:
        st = read_stack(folder, load_ground_truth=False)
        cam = require_camera(st)
        fd = st.focus_distances_m
        k = cam.blur_per_dioptre(fd)
        if st.images.shape[-2] < size[0] or st.images.shape[-1] < size[1]:
            raise DefocusError(f"stack {folder} is smaller than the training size {size[0]}x{size[1]}")
        groups.append(
            SweepGroup(to_uint8(st.images)[None], fd[None], k[None], depth_range_from_focus(cam, fd), protocol)
        )
    return groups


class FocalSweepSampler:
    """Draws training batches from sweep groups: stratified N-of-M focus sampling, shuffled order, random crops."""

    def __init__(self, groups: list[SweepGroup], cfg: DataConfig, seed: int = 0) -> None:
        if not groups:
            raise DefocusError("no training data")
        self.groups, self.cfg = groups, cfg
        self.rng = np.random.default_rng(seed)

    def state(self) -> dict:
        return self.rng.bit_generator.state

    def set_state(self, state: dict) -> None:
        self.rng.bit_generator.state = state

    def _pick_n(self, m: int) -> int:
        cfg = self.cfg
        if self.rng.uniform() < cfg.p_typical:
            n = cfg.n_typical
        else:
            n = int(self.rng.integers(cfg.n_min, cfg.n_max + 1))
        return max(1, min(n, m))

    def sample(self, batch_size: int) -> dict:
        g = self.groups[int(self.rng.integers(len(self.groups)))]
        s, m = g.stacks.shape[:2]
        n = self._pick_n(m)
        h, w = self.cfg.size
        out_stack, out_fd, out_k = [], [], []
        for _ in range(batch_size):
            i = int(self.rng.integers(s))
            # One focus image per bin of the (sorted) sweep, then shuffled.
            edges = np.linspace(0, m, n + 1)
            idx = np.array([int(self.rng.integers(math.floor(a), max(math.floor(a) + 1, math.floor(b))))
                            for a, b in zip(edges[:-1], edges[1:])])
            self.rng.shuffle(idx)
            full = g.stacks[i, idx]
            y = int(self.rng.integers(full.shape[-2] - h + 1))
            x = int(self.rng.integers(full.shape[-1] - w + 1))
            crop = full[..., y : y + h, x : x + w]
            if self.rng.uniform() < 0.5:  # flips keep the optics unchanged
                crop = crop.flip(-1)
            out_stack.append(crop)
            out_fd.append(g.focus[i, idx])
            out_k.append(g.blur_per_dioptre[i, idx])
        return {
            "stack": torch.stack(out_stack).float() / 255.0,
            "focus": torch.stack(out_fd),
            "blur_per_dioptre": torch.stack(out_k),
            "depth_range": torch.tensor(g.depth_range, dtype=torch.float32)[None].expand(batch_size, 2).clone(),
            "protocol": g.protocol,
        }


def build_training_groups(cfg: DataConfig, progress: bool = True) -> list[SweepGroup]:
    """All groups the config asks for: procedural (preset × protocol) groups plus the user's stacks."""
    groups = []
    k = 0
    for preset in cfg.presets:
        for protocol in cfg.protocols:
            seeds = [cfg.seed_offset + k * cfg.scenes_per_group + i for i in range(cfg.scenes_per_group)]
            k += 1
            if cfg.scenes_per_group > 0:
                groups.append(render_sweep_group(preset, protocol, seeds, cfg.size, cfg.sweep, cfg.pitch_scale, progress))
    if cfg.rgbd_dirs:
        for protocol in cfg.protocols:
            groups.append(render_rgbd_group(cfg, protocol, progress))
    if cfg.stack_dirs:
        groups.extend(load_stack_group(cfg.stack_dirs, cfg.size, cfg.stack_protocol))
    return groups
