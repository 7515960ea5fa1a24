"""Mobile Depth (Suwajanakorn, Hernandez, Seitz, "Depth from Focus with Your Mobile Phone", CVPR 2015): real
hand-held phone focal stacks, no ground-truth depth.

Spec: ``mobile-depth:PATH[#SCENE]`` — PATH is the download folder (holding ``Aligned/`` and
``depth_from_focus_data2/``), a folder of re-organised scene folders, or one scene folder; SCENE picks one scene by
folder name (e.g. ``keyboard``, ``bottles``, ``fruits``, ``metals``, ``plants``, ``telephone``, ``window``,
``balls``, ``zeromotion``).

Format (facts and where they come from):

* One folder per scene holding the aligned frames ``a*.jpg`` in focus order (sorted by name), and, in the
  re-organised copies of later works, ``focus_dpth.txt``: one focus distance per frame in inches (the reader divides
  by 39.37), which are the distances estimated by the authors' self-calibration, not measured: Eziotic/DEREC
  (Si et al.) ``utils/dataset.py`` class ``MobileDFD`` (``f[-4:] == '.jpg' and f[0] == 'a'``,
  ``np.genfromtxt('focus_dpth.txt') / 39.37``; it also reverses the order for ``metals``, which is not done here).
  fuy34/DFV (README) re-organises the original download with its own script and uses it for qualitative results
  only: "no ground truth is provided in this dataset".
* The original download has two parts: ``Aligned/<scene>/`` (the aligned stacks) and
  ``depth_from_focus_data2/calibration/<scene>/calibrated.txt``, whose first column without its last row is the
  per-frame focus depth (that is how ``focus_dpth.txt`` is made), with four scenes named differently there:
  metals → metal, largemotion → GTLarge, smallmotion → GTSmall, zeromotion → GT. From DFV's re-organisation
  script (``data_preprocess/reorganize_mobileDFF.py``, found by content with the code search; Si et al. use a copy).
  Both layouts are read here: ``focus_dpth.txt`` in the scene folder first, else ``calibrated.txt`` of the download.
  Units: inches, as Si et al.'s reader assumes (DFV only uses their order) — uncertain. Both readers treat ``metals``
  as reversed (its estimated distances run opposite to the frames); that is not corrected here.
* A third layout, wcy199705/DfFintheWild ``End_to_End/Datasets/<scene>/`` (reader ``Real_Scenes`` there): the
  original, **unaligned** frames as ``00.jpg`` … with ``focus_distance.txt`` (one value per frame, the same calibrated
  numbers, e.g. 7223525.79 ≈ infinity … 10.0 for ``balls``) and ``focal_length.txt`` (0.2 in the same unit: about
  5 mm if the unit is the inch, a phone lens — consistent with the inch reading). Read too (frames: every
  ``*.jpg`` / ``*.png`` of a folder holding ``focus_distance.txt``); these frames still need registration
  (``defocus predict`` aligns them), so they are not for training as they are.
* Where no focus file is found the focus distances are unknown: the stack is *relative* (placeholders
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


WILD_FOCUS_FILE = "focus_distance.txt"


def _frames(folder: Path) -> list[Path]:
    """The aligned frames ``a*.jpg``; in the DfFintheWild layout (a ``focus_distance.txt`` beside them), every
    ``*.jpg`` / ``*.png`` of the folder."""
    files = [p for p in folder.iterdir() if p.is_file()]
    frames = [p for p in files if p.name.startswith("a") and p.suffix.lower() in (".jpg", ".jpeg")]
    if not frames and (folder / WILD_FOCUS_FILE).is_file():
        frames = [p for p in files if p.suffix.lower() in (".jpg", ".jpeg", ".png")]
    return sorted(frames, key=lambda p: p.name)


CALIBRATION = ("depth_from_focus_data2", "calibration")
CALIBRATION_FILE = "calibrated.txt"
CALIBRATION_NAMES = {"metals": "metal", "largemotion": "GTLarge", "smallmotion": "GTSmall", "zeromotion": "GT"}


class MobileDepth(DatasetSource):
    key = "mobile-depth"

    def __init__(self, spec, path, option) -> None:
        super().__init__(spec, path, option)
        if not self.path.is_dir():
            raise DefocusError(f"{spec}: folder {self.path} does not exist" if not self.path.exists()
                               else f"{spec}: {self.path} is not a folder")
        root = self.path / "Aligned" if (self.path / "Aligned").is_dir() else self.path
        calib = self.path.joinpath(*CALIBRATION)
        self._calibration = calib if calib.is_dir() else None
        if _frames(root):
            scenes = [root]
        else:
            scenes = sorted(p for p in root.iterdir() if p.is_dir() and _frames(p))
        if option:
            scenes = [p for p in scenes if p.name == option]
            if not scenes:
                raise DefocusError(f"{spec}: no scene {option!r} with a*.jpg frames in {root}")
        if not scenes:
            raise DefocusError(f"{spec}: no Mobile Depth scene (a folder of a*.jpg frames) in {root}")
        self._scenes = scenes

    def __len__(self) -> int:
        return len(self._scenes)

    def item_name(self, index: int) -> str:
        return f"mobile_{self._scenes[self._check_index(index)].name}"

    def focus_m(self, index: int, count: int) -> list[float] | None:
        """The frames' focus distances in metres from ``focus_dpth.txt`` / ``focus_distance.txt`` or the download's
        ``calibrated.txt`` (inches), or None when none is there."""
        scene = self._scenes[self._check_index(index)]
        p = scene / FOCUS_FILE if (scene / FOCUS_FILE).is_file() else scene / WILD_FOCUS_FILE
        drop_last = False
        if not p.is_file() and self._calibration is not None:
            p = self._calibration / CALIBRATION_NAMES.get(scene.name, scene.name) / CALIBRATION_FILE
            drop_last = True
        if not p.is_file():
            return None
        try:
            vals = np.atleast_1d(np.loadtxt(p, dtype=np.float64, usecols=0, ndmin=1)).ravel()
        except (ValueError, IndexError) as exc:
            raise DefocusError(f"{self.spec}: cannot read {p}: {exc}") from None
        if drop_last:
            vals = vals[:-1]
        if vals.size != count:
            raise DefocusError(f"{self.spec}: {p} has {vals.size} focus distances for {count} frames")
        if not (np.isfinite(vals).all() and (vals > 0).all()):
            raise DefocusError(f"{self.spec}: {p} holds focus distances that are not positive numbers")
        return [float(v) / INCHES_PER_METRE for v in vals]

    def check_writable(self, count: int) -> None:
        unknown = [self._scenes[i].name for i in range(min(count, len(self)))
                   if self.focus_m(i, len(_frames(self._scenes[i]))) is None]
        if unknown:
            raise DefocusError(f"{self.spec}: no {FOCUS_FILE}, {WILD_FOCUS_FILE} or {CALIBRATION_FILE} for "
                               f"{', '.join(unknown)}: their focus distances are unknown, a stack folder needs them")

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
                         "focus": {"values_m": fd,
                                   "source": "focus_dpth.txt or calibrated.txt (inches)" if fd else None},
                         "relative": relative}
        return st
