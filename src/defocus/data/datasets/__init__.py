"""Public datasets as stack sources for ``train``, ``evaluate`` and ``render``.

A source is named by a spec string ``NAME:PATH[#OPTION]``:

==================  =================================  ============================================================
NAME                PATH                               OPTION
==================  =================================  ============================================================
``nyuv2``           ``nyu_depth_v2_labeled.mat``        synthesis protocol: ``paper`` (default) or ``realistic``
``ddff12``          a DDFF-12 ``.h5`` file              split: ``train``, ``val`` (default) or ``test``
``fod500``          the FoD500 / DefocusNet folder      split: ``all`` (default), ``train`` (0–399), ``test``
``mobile-depth``    folder of scene folders             one scene by name (default: all)
==================  =================================  ============================================================

``nyuv2`` is an RGB-D set: its pairs are rendered into stacks with the ``nyuv2`` preset. The others are focal
stacks. Each module's docstring records the format facts, camera values, download address and licence, and where
each fact was found. HDF5 sources need the optional ``h5py`` (``pip install 'defocus[datasets]'``); the rest of the
package imports without it. A bad spec, a missing file, a missing ``h5py`` or a file of the wrong format is one
:class:`~defocus.errors.DefocusError` line.
"""

from __future__ import annotations

from pathlib import Path

from defocus.data.datasets.base import DatasetSource
from defocus.data.datasets.ddff12 import DDFF12
from defocus.data.datasets.fod500 import FoD500
from defocus.data.datasets.mobile_depth import MobileDepth
from defocus.data.datasets.nyuv2 import NYUv2Labeled
from defocus.errors import DefocusError

DATASETS: dict[str, type[DatasetSource]] = {
    "nyuv2": NYUv2Labeled,
    "ddff12": DDFF12,
    "fod500": FoD500,
    "mobile-depth": MobileDepth,
}

__all__ = ["DATASETS", "DatasetSource", "open_dataset", "parse_spec"]


def parse_spec(spec: str) -> tuple[str, Path, str | None]:
    """``NAME:PATH[#OPTION]`` → (name, path, option or None); a malformed spec is a DefocusError."""
    known = ", ".join(DATASETS)
    if not isinstance(spec, str) or ":" not in spec:
        raise DefocusError(f"dataset spec {spec!r} must be NAME:PATH[#OPTION] with NAME one of {known}")
    name, _, rest = spec.partition(":")
    name = name.strip().lower()
    if name not in DATASETS:
        raise DefocusError(f"unknown dataset {name!r} in {spec!r}; known datasets: {known}")
    path, option = rest, None
    if "#" in rest:
        head, _, tail = rest.rpartition("#")
        if "/" not in tail and "\\" not in tail:
            path, option = head, (tail.strip() or None)
    if not path.strip():
        raise DefocusError(f"dataset spec {spec!r} has no path: write {name}:PATH")
    return name, Path(path).expanduser(), option


def open_dataset(spec: str) -> DatasetSource:
    """The adapter for ``spec`` (lists its items; reads nothing large)."""
    name, path, option = parse_spec(spec)
    return DATASETS[name](spec, path, option)
