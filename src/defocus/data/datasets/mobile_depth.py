"""Mobile Depth (Suwajanakorn, Hernandez, Seitz, "Depth from Focus with Your Mobile Phone", CVPR 2015): real
hand-held phone focal stacks, no ground-truth depth.

Spec: ``mobile-depth:PATH[#SCENE]`` — PATH is the folder of scene folders (or one scene folder); SCENE picks one
scene by folder name (e.g. ``keyboard``, ``bottles``, ``fruits``, ``metals``, ``plants``, ``telephone``,
``window``, ``balls``).

Format (facts and where they come from):

* One folder per scene holding the aligned frames ``a*.jpg`` in focus order (sorted by name), and, in the
  re-organised copies of later works, ``focus_dpth.txt``: one focus distance per frame in inches (the reader divides
  by 39.37), which are the distances estimated by the authors' self-calibration, not measured: Eziotic/DEREC
  (Si et al.) ``utils/dataset.py`` class ``MobileDFD`` (``f[-4:] == '.jpg' and f[0] == 'a'``,
  ``np.genfromtxt('focus_dpth.txt') / 39.37``; it also reverses the order for ``metals``, which is not done here).
  fuy34/DFV (README) re-organises the original download with its own script and uses it for qualitative results
  only: "no ground truth is provided in this dataset".
* Where ``focus_dpth.txt`` is missing the focus distances are unknown: the stack is *relative* (placeholders
  1..N m, ``provenance["relative"] = True``, as :func:`defocus.data.folders.read_stack` does), usable for a relative
  focus-index result only. The camera (phone lens, aperture, pitch) is not in the data: ``camera`` is None.
* So: ``evaluate`` has nothing to compare with (no ground truth), ``render`` writes stacks whose focus distances are
  known (no camera in ``stack.json``), and ``train`` needs a camera and focus distances — it refuses these stacks.

Download: https://www.supasorn.com/dffdownload.html (``depth_from_focus_data2.zip`` and the aligned results).
Licence: none stated; research use, cite Suwajanakorn et al. (CVPR 2015).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from defocus.data.codecs import load_image
from defocus.data.datasets.base import DatasetSource
from defocus.data.stack import FocalStack
from defocus.errors import DefocusError

FOCUS_FILE = "focus_dpth.txt"
INCHES_PER_METRE = 39.37


def _frames(folder: Path) -> list[Path]:
    return sorted((p for p in folder.iterdir() if p.is_file() and p.name.startswith("a")
                   and p.suffix.lower() in (".jpg", ".jpeg")), key=lambda p: p.name)


class MobileDepth(DatasetSource):
    key = "mobile-depth"

    def __init__(self, spec, path, option) -> None:
        super().__init__(spec, path, option)
        if not self.path.is_dir():
            raise DefocusError(f"{spec}: folder {self.path} does not exist" if not self.path.exists()
                               else f"{spec}: {self.path} is not a folder")
        if _frames(self.path):
            scenes = [self.path]
        else:
            scenes = sorted(p for p in self.path.iterdir() if p.is_dir() and _frames(p))
        if option:
            scenes = [p for p in scenes if p.name == option]
            if not scenes:
                raise DefocusError(f"{spec}: no scene {option!r} with a*.jpg frames in {self.path}")
        if not scenes:
            raise DefocusError(f"{spec}: no Mobile Depth scene (a folder of a*.jpg frames) in {self.path}")
        self._scenes = scenes

    def __len__(self) -> int:
        return len(self._scenes)

    def item_name(self, index: int) -> str:
        return f"mobile_{self._scenes[self._check_index(index)].name}"

    def focus_m(self, index: int, count: int) -> list[float] | None:
        """The frames' focus distances in metres from ``focus_dpth.txt`` (inches), or None when absent."""
        p = self._scenes[self._check_index(index)] / FOCUS_FILE
        if not p.is_file():
            return None
        try:
            vals = np.atleast_1d(np.loadtxt(p, dtype=np.float64)).ravel()
        except ValueError as exc:
            raise DefocusError(f"{self.spec}: cannot read {p}: {exc}") from None
        if vals.size != count:
            raise DefocusError(f"{self.spec}: {p} has {vals.size} focus distances for {count} frames")
        return [float(v) / INCHES_PER_METRE for v in vals]

    def stack(self, index: int, load_ground_truth: bool = True, **_) -> FocalStack:
        folder = self._scenes[self._check_index(index)]
        frames = _frames(folder)
        images = [load_image(p) for p in frames]
        if len({tuple(im.shape) for im in images}) > 1:
            raise DefocusError(f"{self.spec}: the frames of {folder.name} differ in size (not an aligned stack)")
        fd = self.focus_m(index, len(frames))
        relative = fd is None
        st = FocalStack(images=torch.stack(images), focus_distances_m=fd or [float(i + 1) for i in range(len(frames))],
                        camera=None, image_names=[p.name for p in frames], name=self.item_name(index))
        st.provenance = {"dataset": self.spec, "item": int(index), "images": [p.name for p in frames],
                         "focus": {"values_m": fd, "source": FOCUS_FILE if fd else None}, "relative": relative}
        return st
