"""What every dataset adapter provides: a lazily read, indexed source of focal stacks (or RGB-D pairs).

An adapter opens nothing large when it is built: it lists its items, and :meth:`DatasetSource.stack` reads one item
when asked (HDF5 datasets are indexed per item), so that iterating over a large file holds one stack in memory.
``load_ground_truth=False`` (the training path) never touches a ground-truth file or HDF5 dataset.
"""

from __future__ import annotations

from pathlib import Path
from typing import Iterator

import numpy as np
import torch

from defocus.data.stack import FocalStack
from defocus.errors import DefocusError


class DatasetSource:
    """Base class of the adapters.

    Attributes:
        key: the registry name (``nyuv2``, ``ddff12``, ``fod500``, ``mobile-depth``).
        kind: ``"stacks"`` (real or pre-rendered focal stacks) or ``"rgbd"`` (RGB-D pairs rendered into stacks with
            :mod:`defocus.data.synthesis` and the ``preset``).
        spec: the spec string the source was opened from.
    """

    key = ""
    kind = "stacks"
    preset: str | None = None

    def __init__(self, spec: str, path: Path, option: str | None) -> None:
        self.spec, self.path, self.option = spec, Path(path), option

    def __len__(self) -> int:
        raise NotImplementedError

    def item_name(self, index: int) -> str:
        """The stack name of item ``index`` (also its output folder name in ``render --dataset``)."""
        raise NotImplementedError

    def stack(self, index: int, load_ground_truth: bool = True, **kwargs) -> FocalStack:
        """Item ``index`` as a :class:`FocalStack`; ground truth only when ``load_ground_truth``."""
        raise NotImplementedError

    def rgbd(self, index: int) -> tuple[torch.Tensor, np.ndarray]:
        """RGB-D sources only: ``(rgb (3, H, W) in [0, 1], depth (H, W) metres, 0 = unknown)``."""
        raise DefocusError(f"{self.spec}: not an RGB-D dataset")

    def check_writable(self, count: int) -> None:
        """Raises a DefocusError before anything is written if one of the first ``count`` items cannot be written
        as a stack folder (``render --dataset``). Default: every item can."""

    def _check_index(self, index: int) -> int:
        n = len(self)
        if not 0 <= index < n:
            raise DefocusError(f"{self.spec}: item {index} out of range (the source has {n} items)")
        return int(index)

    def iter_stacks(self, limit: int | None = None, load_ground_truth: bool = True, **kwargs) -> Iterator[FocalStack]:
        """Stacks in item order, one at a time (at most ``limit`` of them)."""
        n = len(self) if not limit or limit <= 0 else min(limit, len(self))
        for i in range(n):
            yield self.stack(i, load_ground_truth=load_ground_truth, **kwargs)


def require_h5py(spec: str):
    """The ``h5py`` module, or a DefocusError saying how to install it."""
    try:
        import h5py  # noqa: PLC0415 - optional dependency
    except ImportError:
        raise DefocusError(
            f"{spec}: reading this dataset needs h5py: pip install 'defocus[datasets]' (or pip install h5py)"
        ) from None
    return h5py


def open_h5(path: Path, spec: str, what: str):
    """An open read-only ``h5py.File``; a missing or non-HDF5 file is a DefocusError."""
    h5py = require_h5py(spec)
    if not path.exists():
        raise DefocusError(f"{spec}: file {path} does not exist")
    if not path.is_file():
        raise DefocusError(f"{spec}: {path} is not a file")
    try:
        return h5py.File(path, "r")
    except OSError as exc:
        raise DefocusError(f"{spec}: cannot open {path} as {what} (HDF5): {str(exc).splitlines()[0]}") from None


def h5_read(dataset, index: int, spec: str):
    """``dataset[index]`` with HDF5 read errors (truncated file) turned into a DefocusError."""
    try:
        return dataset[index]
    except (OSError, RuntimeError, ValueError) as exc:
        raise DefocusError(f"{spec}: cannot read item {index} of {dataset.name}: {str(exc).splitlines()[0]}") from None
