"""Training data: dense focus sweeps of procedural scenes, and the user's own unlabeled stacks.

Like the paper, each training scene is rendered as a dense focus sweep and every step samples N of its images,
stratified (one per bin of the sweep, in dioptres) and shuffled. On a CPU the sweeps are rendered once, up front,
and kept as 8-bit images; the ground-truth depth used to render them is dropped right after rendering, so that
nothing on the training path can read it (``tests/train/test_no_ground_truth.py`` proves it).

The forward model is randomised (``data.forward_variants``): besides the two synthesis protocols, every preset gets
groups rendered with a random :class:`~defocus.data.synthesis.SynthesisVariant` each (PSF shape, light model,
occlusion, effective aperture, aberrations, tone curve, vignetting, per-frame exposure, noise, JPEG), so that one
set of weights meets every protocol and real lenses. Every sweep is exposure-normalised as ``defocus predict``
normalises a stack (:mod:`defocus.data.exposure`), so the network sees what it will see at test time. The loss
re-renders every group with that group's own forward model (the camera's, not the scene's: what
:mod:`defocus.calibrate` estimates at test time); the network is always given the nominal K.

Further sources: folders of RGB-D pairs (``data.rgbd_dirs``) and the frames of one split of an RGB-D ``INDEX.csv``
(``data.rgbd_index``, ``data.rgbd_split``: the project's training scene groups), rendered into sweeps the same way
(their depth is used to render, then dropped), and the user's own unlabeled stacks (``data.stack_dirs``), whose
ground-truth files, if any, are never opened. Public datasets (``data.datasets``, :mod:`defocus.data.datasets`)
enter the same two ways: focal-stack sets as unlabeled stacks, RGB-D sets rendered into sweeps.

A batch is a dict with ``stack`` (B, N, 3, H, W) in [0, 1], ``focus`` (B, N) metres, ``blur_per_dioptre`` (B, N)
pixels per dioptre, ``depth_range`` (B, 2) metres, ``protocol`` (one name for the whole batch: a protocol of
:data:`~defocus.data.synthesis.PROTOCOLS`, or ``"variant"``) and ``physics`` (the
:class:`~defocus.optics.forward.ForwardSpec` the loss re-renders a random-variant group with, ``None`` for a protocol's
group, whose forward model the training config's ``protocol_loss`` gives). There is no depth and no AIF in it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F

from defocus.color import to_uint8
from defocus.data.codecs import load_image, read_depth
from defocus.data.folders import read_stack
from defocus.data.exposure import normalise_exposure
from defocus.data.holes import fill_depth_holes
from defocus.data.procedural import SCENE_DEPTH_RANGE_M, VALIDATION_SEED_START, make_scene
from defocus.data.stack import require_camera
from defocus.data.synthesis import SynthesisVariant, protocol_names, synthesize_variant
from defocus.errors import InputError
from defocus.optics.camera import depth_range_from_focus, get_preset
from defocus.optics.forward import ForwardSpec
from defocus.progress import progress_bar


@dataclass
class DataConfig:
    presets: list[str] = field(default_factory=lambda: ["nyuv2", "defocusnet"])
    protocols: list[str] = field(default_factory=lambda: list(protocol_names()))  # defocus.data.synthesis.PROTOCOLS
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
    forward_variants: int = 0  # per preset: groups with a random forward model each, besides the protocols
    variant_scenes: int = 50  # procedural scenes per random-variant group
    rgbd_index: str = ""  # an INDEX.csv of real RGB-D frames (e.g. ../shared/data/rgbd/INDEX.csv)
    rgbd_split: str = "train"  # which split (defocus.data.rgbd_index.SPLIT) of rgbd_index to render
    rgbd_variants: int = 0  # random-variant groups of the rgbd_index frames, besides the protocols
    rgbd_depth_range: list[float] = field(default_factory=lambda: [0.1, 20.0])  # network range for those frames
    # Data shards = sampling streams of the global batch (DataShards); 0: one per process. Fix it (e.g. to the
    # largest process count you will use) to make runs with different process counts draw the same samples.
    shards: int = 0
    # Public datasets, NAME:PATH[#OPTION] (defocus.data.datasets): focal stacks enter like stack_dirs (ground truth
    # never read), RGB-D sets (nyuv2) are rendered into sweeps like rgbd_dirs. dataset_limit: first K items (0: all).
    datasets: list[str] = field(default_factory=list)
    dataset_limit: int = 0


@dataclass
class SweepGroup:
    """Pre-rendered sweeps of one (camera, protocol) group: no ground truth inside."""

    stacks: torch.Tensor  # (S, M, 3, H, W) uint8
    focus: torch.Tensor  # (S, M) metres
    blur_per_dioptre: torch.Tensor  # (S, M)
    depth_range: tuple[float, float]
    protocol: str
    # The loss's forward model for this group (a random variant's lens); None = the protocol's (config.protocol_loss).
    physics: ForwardSpec | None = None
    # Index of each held scene among all the group's scenes (its data shard is scene_id % shards); None = 0..S-1.
    scene_ids: torch.Tensor | None = None

    def ids(self) -> torch.Tensor:
        return self.scene_ids if self.scene_ids is not None else torch.arange(self.stacks.shape[0])


@dataclass(frozen=True)
class DataShards:
    """Which data shards this process holds. Scene ``i`` of every group (procedural seed, RGB-D frame, stack folder)
    belongs to shard ``i % count``; a process renders and reads only the scenes of its ``owned`` shards, so that
    distributed ranks hold disjoint shares of the data. One shard, owned, is the single-process default."""

    count: int = 1
    owned: tuple[int, ...] = (0,)

    def __post_init__(self) -> None:
        if self.count < 1 or not self.owned or any(not 0 <= s < self.count for s in self.owned):
            raise InputError(f"bad data shards: {self.owned} of {self.count}")

    def keeps(self, index: int) -> bool:
        return index % self.count in self.owned


def _owned(count: int, shards: DataShards | None) -> list[int]:
    """The positions among ``count`` scenes that this process holds (all of them without shards)."""
    return [i for i in range(count) if shards is None or shards.keeps(i)]


def _sweep_focus(preset_name: str, count: int, rng: np.random.Generator, fds: Sequence[float] | None = None
                 ) -> np.ndarray:
    """`count` focus distances spanning the preset's focus range, or ``fds``'s (uniform in dioptres, jittered)."""
    fds = fds or get_preset(preset_name).focus_distances_m
    lo, hi = 1.0 / max(fds), 1.0 / min(fds)
    pad = 0.1 * (hi - lo)
    edges = np.linspace(lo - pad, hi + pad, count + 1)
    d = edges[:-1] + rng.uniform(0, 1, count) * np.diff(edges)
    return np.sort(1.0 / np.clip(d, 1e-3, None))[::-1].copy()


def _variant(protocol: str | SynthesisVariant) -> tuple[str, SynthesisVariant, ForwardSpec | None]:
    """(group label, variant, the loss's forward model or None for a protocol's own)."""
    if isinstance(protocol, SynthesisVariant):
        return "variant", protocol, protocol.loss
    return protocol, SynthesisVariant.for_protocol(protocol), None


def render_sweep_group(
    preset_name: str, protocol: str | SynthesisVariant, seeds: Sequence[int], size: Sequence[int], sweep: int,
    pitch_scale: Sequence[float], progress: bool = True, shards: DataShards | None = None,
) -> SweepGroup:
    """Renders the dense sweeps of procedural scenes `seeds` under a protocol or a random forward-model variant and
    keeps only the 8-bit stacks (with ``shards``, only the seeds at positions of the owned shards)."""
    preset = get_preset(preset_name)
    label, variant, physics = _variant(protocol)
    h, w = int(size[0]), int(size[1])
    ids = _owned(len(seeds), shards)
    stacks, focus, ks = [], [], []
    for seed in progress_bar([seeds[i] for i in ids], desc=f"render {preset_name}/{label}", enabled=progress,
                     leave=False):
        if seed >= VALIDATION_SEED_START:
            raise InputError(f"procedural seed {seed} is reserved for validation and testing")
        rng = np.random.default_rng([seed, 7])
        camera = preset.camera.resized(float(rng.uniform(*pitch_scale)))
        # Scenes are rendered a little larger than the crops, so that crops vary and see no image border.
        aif, depth = make_scene(int(seed), h + 16, w + 16, SCENE_DEPTH_RANGE_M[preset_name])
        fd = torch.tensor(_sweep_focus(preset_name, sweep, rng), dtype=torch.float32)
        stack = normalise_exposure(synthesize_variant(aif[None], depth[None], fd, camera, variant, seed=int(seed))[0])[0]
        del aif, depth  # ground truth goes no further
        stacks.append(to_uint8(stack))
        focus.append(fd)
        ks.append(camera.blur_per_dioptre(fd))
    return _group(stacks, focus, ks, preset.depth_range_m, label, physics, ids)


def _group(stacks: list, focus: list, ks: list, depth_range: tuple[float, float], label: str,
           physics: ForwardSpec | None, ids: Sequence[int]) -> SweepGroup:
    if not stacks:  # this process holds none of the group's scenes
        return SweepGroup(torch.zeros(0, 1, 3, 1, 1, dtype=torch.uint8), torch.zeros(0, 1), torch.zeros(0, 1),
                          depth_range, label, physics, torch.zeros(0, dtype=torch.long))
    return SweepGroup(torch.stack(stacks), torch.stack(focus), torch.stack(ks), depth_range, label, physics,
                      torch.tensor(list(ids), dtype=torch.long))


def _rgbd_pairs(folder: Path) -> list[tuple[Path, Path]]:
    rgb_dir, depth_dir = folder / "rgb", folder / "depth"
    if not rgb_dir.is_dir() or not depth_dir.is_dir():
        raise InputError(f"RGB-D folder {folder} must hold rgb/ and depth/ sub-folders with matching file names")
    depth_by_stem = {p.stem: p for p in depth_dir.iterdir() if p.is_file()}
    pairs = [(p, depth_by_stem[p.stem]) for p in sorted(rgb_dir.iterdir()) if p.stem in depth_by_stem]
    if not pairs:
        raise InputError(f"no RGB-D pairs with matching names in {folder}/rgb and {folder}/depth")
    return pairs


def _render_frames(frames, ids: Sequence[int], preset_name: str, protocol: str | SynthesisVariant, sweep: int,
                   seed_tag: int, depth_range: tuple[float, float], desc: str, progress: bool) -> SweepGroup:
    """Dense sweeps of real RGB-D frames at the preset's image size. ``frames`` yields ``(rgb (3, H, W), depth (H, W)
    metres with holes, focus distances or None for the preset's)`` of the frames at positions ``ids`` of the whole
    list (which seed their focus jitter and noise); the depth is used to render, then dropped."""
    preset = get_preset(preset_name)
    h, w = preset.image_size
    label, variant, physics = _variant(protocol)
    stacks, focus, ks = [], [], []
    for i, (rgb, depth_m, fds) in zip(ids, progress_bar(frames, total=len(ids), desc=f"{desc}/{label}",
                                                        enabled=progress, leave=False)):
        rng = np.random.default_rng([i, seed_tag])
        filled, _ = fill_depth_holes(depth_m)
        rgb = F.interpolate(rgb[None], size=(h, w), mode="area")
        depth = F.interpolate(torch.from_numpy(filled)[None, None], size=(h, w), mode="nearest")
        fd = torch.tensor(_sweep_focus(preset.name, sweep, rng, fds), dtype=torch.float32)
        stack = normalise_exposure(synthesize_variant(rgb, depth, fd, preset.camera, variant, seed=i)[0])[0]
        del rgb, depth, filled, depth_m
        stacks.append(to_uint8(stack))
        focus.append(fd)
        ks.append(preset.camera.blur_per_dioptre(fd))
    return _group(stacks, focus, ks, depth_range, label, physics, ids)


def render_rgbd_group(cfg: DataConfig, protocol: str, progress: bool = True, shards: DataShards | None = None
                      ) -> SweepGroup:
    """Dense sweeps rendered from the user's RGB-D pairs at the preset's image size (depth used for rendering only,
    then dropped, exactly like the procedural scenes)."""
    preset = get_preset(cfg.rgbd_preset)
    h, w = preset.image_size
    if h < cfg.size[0] or w < cfg.size[1]:
        raise InputError(f"preset {preset.name} images are smaller than the training size {cfg.size}")
    pairs = [pair for folder in cfg.rgbd_dirs for pair in _rgbd_pairs(Path(folder))]
    ids = _owned(len(pairs), shards)
    frames = ((load_image(pairs[i][0]), read_depth(pairs[i][1], cfg.rgbd_depth_scale or None), None) for i in ids)
    return _render_frames(frames, ids, preset.name, protocol, cfg.sweep, 11, preset.depth_range_m,
                          "render RGB-D", progress)


def render_rgbd_index_group(cfg: DataConfig, protocol: str | SynthesisVariant, progress: bool = True,
                            shards: DataShards | None = None) -> SweepGroup:
    """Dense sweeps of the frames of split ``cfg.rgbd_split`` of ``cfg.rgbd_index``, rendered with the
    ``rgbd_preset`` lens at its image size around the focus distances of each frame's kind
    (:data:`~defocus.data.rgbd_index.FOCUS_BY_KIND`). Depth is used to render, then dropped."""
    from defocus.data.rgbd_index import FOCUS_BY_KIND, SPLIT, load_rgbd, read_index, split_of

    if cfg.rgbd_split not in SPLIT:
        raise InputError(f"unknown RGB-D split {cfg.rgbd_split!r}; choose one of {', '.join(SPLIT)}")
    if not Path(cfg.rgbd_index).is_file():
        raise InputError(f"RGB-D index {cfg.rgbd_index} does not exist (data.rgbd_index)")
    entries = [e for e in read_index(cfg.rgbd_index) if split_of(e) == cfg.rgbd_split]
    if not entries:
        raise InputError(f"no frames of split {cfg.rgbd_split!r} in {cfg.rgbd_index}")
    ids = _owned(len(entries), shards)
    frames = ((*load_rgbd(entries[i]), FOCUS_BY_KIND[entries[i].kind]) for i in ids)
    dr = (float(cfg.rgbd_depth_range[0]), float(cfg.rgbd_depth_range[1]))
    return _render_frames(frames, ids, cfg.rgbd_preset, protocol, cfg.sweep, 13, dr,
                          f"render RGB-D {cfg.rgbd_split}", progress)


def dataset_groups(cfg: DataConfig, progress: bool = True, shards: DataShards | None = None) -> list[SweepGroup]:
    """Groups from the public datasets of ``cfg.datasets``. RGB-D sources (nyuv2) are rendered like ``rgbd_dirs``
    with their preset, one group per protocol (depth used to render, then dropped). Focal-stack sources are read
    with ``load_ground_truth=False`` (no ground-truth dataset or file is ever opened) and kept as 8-bit stacks, one
    group per (image size, focus distances, camera), groups in sorted key order. With ``shards``, item ``i`` is read
    only by the owner of shard ``i % count``."""
    from defocus.data.datasets import open_dataset

    groups: list[SweepGroup] = []
    for spec in cfg.datasets:
        ds = open_dataset(spec)
        n = len(ds) if cfg.dataset_limit <= 0 else min(cfg.dataset_limit, len(ds))
        if ds.kind == "rgbd":
            preset = get_preset(ds.preset)
            if preset.image_size[0] < cfg.size[0] or preset.image_size[1] < cfg.size[1]:
                raise InputError(f"{spec}: preset {preset.name} images are smaller than the training size {cfg.size}")
            ids = _owned(n, shards)
            for protocol in cfg.protocols:
                frames = ((*ds.rgbd(i), None) for i in ids)
                groups.append(_render_frames(frames, ids, preset.name, protocol, cfg.sweep, 17, preset.depth_range_m,
                                             f"render {ds.key}", progress))
            continue
        by_key: dict[tuple, list] = {}
        ids = _owned(n, shards)
        for i in progress_bar(ids, desc=f"read {ds.key}", enabled=progress, leave=False):
            st = ds.stack(i, load_ground_truth=False)
            if st.provenance.get("relative") or st.camera is None:
                raise InputError(f"{spec}: stack {st.name} has no camera or no focus distances; training needs "
                                 "both (use stack folders with stack.json instead)")
            if st.images.shape[-2] < cfg.size[0] or st.images.shape[-1] < cfg.size[1]:
                raise InputError(f"{spec}: stack {st.name} is smaller than the training size {cfg.size}")
            cam = st.camera
            key = (tuple(st.images.shape), tuple(st.focus_distances_m.tolist()),
                   (cam.focal_length_m, cam.f_number, cam.pixel_size_m))
            entry = by_key.setdefault(key, [cam, st.focus_distances_m, [], []])
            entry[2].append(to_uint8(st.images))
            entry[3].append(i)
        # Sorted keys: every process lists its groups in the same order whichever items it read.
        for key in sorted(by_key):
            cam, fd, imgs, ids = by_key[key]
            k = cam.blur_per_dioptre(fd)
            m = len(imgs)
            groups.append(SweepGroup(torch.stack(imgs), fd[None].expand(m, -1).clone(), k[None].expand(m, -1).clone(),
                                     depth_range_from_focus(cam, fd), cfg.stack_protocol,
                                     scene_ids=torch.tensor(ids, dtype=torch.long)))
    return groups


def load_stack_group(folders: Sequence[str], size: Sequence[int], protocol: str,
                     shards: DataShards | None = None) -> list[SweepGroup]:
    """The user's unlabeled stacks (ground-truth files are never opened), one group per stack; with ``shards``, only
    the stacks of the owned shards are read (the others stay empty groups, so that every process lists the same
    groups)."""
    groups = []
    for j, folder in enumerate(folders):
        if shards is not None and not shards.keeps(j):
            groups.append(_group([], [], [], (0.0, 0.0), protocol, None, []))
            continue
        st = read_stack(folder, load_ground_truth=False)
        cam = require_camera(st)
        fd = st.focus_distances_m
        k = cam.blur_per_dioptre(fd)
        if st.images.shape[-2] < size[0] or st.images.shape[-1] < size[1]:
            raise InputError(f"stack {folder} is smaller than the training size {size[0]}x{size[1]}")
        groups.append(
            SweepGroup(to_uint8(st.images)[None], fd[None], k[None], depth_range_from_focus(cam, fd), protocol,
                       scene_ids=torch.tensor([j]))
        )
    return groups


class FocalSweepSampler:
    """Draws training batches from sweep groups: stratified N-of-M focus sampling, shuffled order, random crops.

    The global batch is made of ``shards.count`` streams, one per data shard: stream ``s`` draws its group, its N and
    its items from the scenes of shard ``s`` with its own generator (seeded by ``(seed, s)``; stream 0 by ``seed``
    alone). A process draws only the streams of the shards it owns, so the samples of a step are the same whether one
    process draws every stream or each of several distributed ranks draws its own: the run does not depend on the
    number of processes.
    """

    def __init__(self, groups: list[SweepGroup], cfg: DataConfig, seed: int = 0,
                 shards: DataShards | None = None) -> None:
        if not groups:
            raise InputError("no training data")
        self.groups, self.cfg = groups, cfg
        self.shards = shards or DataShards()
        count = self.shards.count
        self.rngs = {s: np.random.default_rng(seed if s == 0 else [seed, s]) for s in self.shards.owned}
        # Per stream: the groups with scenes in its shard, and their local indices of those scenes.
        self.candidates: dict[int, list[tuple[SweepGroup, torch.Tensor]]] = {}
        for s in self.shards.owned:
            cands = []
            for g in groups:
                local = torch.nonzero(g.ids() % count == s).flatten()
                if len(local):
                    cands.append((g, local))
            if not cands:
                raise InputError(f"data shard {s} of {count} holds no training scene: use fewer processes "
                                 "(or data.shards) or more scenes")
            self.candidates[s] = cands

    def state(self) -> dict:
        """The generator state of each owned stream, by shard."""
        return {int(s): r.bit_generator.state for s, r in self.rngs.items()}

    def set_state(self, state: dict) -> None:
        for s, r in self.rngs.items():
            if s not in state:
                raise InputError(f"the resume state has no sampler state for data shard {s}")
            r.bit_generator.state = state[s]

    def _pick_n(self, rng: np.random.Generator, m: int) -> int:
        cfg = self.cfg
        if rng.uniform() < cfg.p_typical:
            n = cfg.n_typical
        else:
            n = int(rng.integers(cfg.n_min, cfg.n_max + 1))
        return max(1, min(n, m))

    def sample(self, batch_size: int) -> dict:
        """One batch of the first owned stream."""
        return self._sample_stream(self.shards.owned[0], batch_size)

    def sample_streams(self, batch_size: int) -> list[dict]:
        """One batch of ``batch_size`` items per owned stream, in shard order."""
        return [self._sample_stream(s, batch_size) for s in self.shards.owned]

    def _sample_stream(self, stream: int, batch_size: int) -> dict:
        rng, cands = self.rngs[stream], self.candidates[stream]
        g, local = cands[int(rng.integers(len(cands)))]
        m = g.stacks.shape[1]
        n = self._pick_n(rng, m)
        h, w = self.cfg.size
        out_stack, out_fd, out_k = [], [], []
        for _ in range(batch_size):
            i = int(local[int(rng.integers(len(local)))])
            # One focus image per bin of the (sorted) sweep, then shuffled.
            edges = np.linspace(0, m, n + 1)
            idx = np.array([int(rng.integers(math.floor(a), max(math.floor(a) + 1, math.floor(b))))
                            for a, b in zip(edges[:-1], edges[1:])])
            rng.shuffle(idx)
            full = g.stacks[i, idx]
            y = int(rng.integers(full.shape[-2] - h + 1))
            x = int(rng.integers(full.shape[-1] - w + 1))
            crop = full[..., y : y + h, x : x + w]
            if rng.uniform() < 0.5:  # flips keep the optics unchanged
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
            "physics": g.physics,
        }


def build_training_groups(cfg: DataConfig, progress: bool = True, shards: DataShards | None = None
                          ) -> list[SweepGroup]:
    """All groups the config asks for: procedural (preset × protocol) groups, random forward-model variants, RGB-D
    frames, plus the user's stacks. Every process lists the same groups in the same order; with ``shards`` each holds
    only the scenes of its own shards (see :class:`DataShards`)."""
    groups = []
    k = 0
    for preset in cfg.presets:
        for protocol in cfg.protocols:
            seeds = [cfg.seed_offset + k * cfg.scenes_per_group + i for i in range(cfg.scenes_per_group)]
            k += 1
            if cfg.scenes_per_group > 0:
                groups.append(render_sweep_group(preset, protocol, seeds, cfg.size, cfg.sweep, cfg.pitch_scale, progress,
                                                 shards))
    # Random forward models: their own seeds, after the protocol groups' (and below VALIDATION_SEED_START).
    base = cfg.seed_offset + k * cfg.scenes_per_group
    vrng = np.random.default_rng([cfg.seed_offset, 17])
    for j in range(cfg.forward_variants * len(cfg.presets)):
        preset = cfg.presets[j % len(cfg.presets)]
        seeds = [base + j * cfg.variant_scenes + i for i in range(cfg.variant_scenes)]
        groups.append(render_sweep_group(preset, SynthesisVariant.random(vrng), seeds, cfg.size, cfg.sweep,
                                         cfg.pitch_scale, progress, shards))
    if cfg.rgbd_dirs:
        for protocol in cfg.protocols:
            groups.append(render_rgbd_group(cfg, protocol, progress, shards))
    if cfg.rgbd_index:
        for protocol in [*cfg.protocols, *(SynthesisVariant.random(vrng) for _ in range(cfg.rgbd_variants))]:
            groups.append(render_rgbd_index_group(cfg, protocol, progress, shards))
    if cfg.stack_dirs:
        groups.extend(load_stack_group(cfg.stack_dirs, cfg.size, cfg.stack_protocol, shards))
    if cfg.datasets:
        groups.extend(dataset_groups(cfg, progress, shards))
    return groups
