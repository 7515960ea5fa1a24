"""FoD500 — the synthetic focal stacks of DefocusNet (Maximov, Galim, Leal-Taixé, "Focus on Defocus", CVPR 2020).

Spec: ``fod500:PATH[#SPLIT]`` — PATH is the folder of the unpacked data (``fs_6/`` in the DFV scripts); SPLIT is
``train`` (samples 0–399), ``test`` (400–499) or ``all`` (default). Copies re-organised into ``PATH/train/`` and
``PATH/test/`` sub-folders (as some later works read them, e.g. ``Datasets/fs_6/train``) are read too, the split
then being the sub-folder.

Format (facts and where they come from):

* One flat folder. Each sample has 5 focus images ``*All.tif`` (8-bit RGB, 256 x 256) and one depth map
  ``*Dpt.exr``; the first 6 characters of a file name are the sample number. Readers sort the ``All.tif`` names and
  take 5 consecutive ones per sample, paired in order with the focus distances; the split is ``int(name[:6]) < 400``
  (train) / ``>= 400`` (test): dvl-tum/defocus-net ``source/util_func.py`` (``ImageDataset``: ``f[-7:] ==
  "All.tif"`` / ``"Dpt.exr"``, ``imglist_all[idx * img_num + i]``) and fuy34/DFV ``dataloader/FoD500.py``
  (``FoD500Loader``). Here files are grouped by their 6-digit prefix and sorted by name inside a sample (the same
  order); what follows the prefix is not relied on.
* Depth: the ``R`` channel of the EXR, half float, metres (both readers use ``np.float16`` on channel R; DefocusNet
  clips at 3 m). Read with the small EXR reader of :mod:`defocus.data.datasets.exr`. Values <= 0, non-finite or above
  100 m (the renderer's background) are 0 = unknown.
* Focus distances 0.1, 0.15, 0.3, 0.7, 1.5 m; focal length 2.9 mm; f-number 1; depth up to 3 m: the "Data setting"
  of dvl-tum/defocus-net ``README.md`` (the code's ``CameraLens(2.9e-3, f_number)`` and ``focus_dist`` defaults).
* Pixel pitch: not in the DefocusNet sources. Third-party re-implementations use 1.2e-5 m, commented as a 3.1 mm
  sensor over 256 px (``init_DefocusNet``: ``ps = 1.2e-5 # 3.1e-3 / 256``, found with the code search; the Blender
  file ``scene_focalstack.blend`` holds the real value). Used here: 3.1 mm / 256 = 12.1 µm — uncertain; it scales the
  blur (about 0.7 px per dioptre), and ``--refine`` calibrates the effective aperture per stack.

Download: https://drive.google.com/file/d/1bR-WZQf44s0nsScC27HiEwaXPyEQ3-Dw/view (linked from
https://github.com/dvl-tum/defocus-net). Licence: none stated in the repository or for the data; research use, cite
Maximov et al. (CVPR 2020).
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import torch

from defocus.data.codecs import load_image
from defocus.data.datasets.base import DatasetSource
from defocus.data.datasets.exr import read_exr
from defocus.data.stack import FocalStack
from defocus.errors import DefocusError
from defocus.optics.camera import ThinLensCamera

FOCUS_M = (0.1, 0.15, 0.3, 0.7, 1.5)
FOCAL_LENGTH_M = 2.9e-3
F_NUMBER = 1.0
PIXEL_SIZE_M = 3.1e-3 / 256
TRAIN_SAMPLES = 400
MAX_DEPTH_M = 100.0
SPLITS = ("all", "train", "test")
_NAME = re.compile(r"^(\d{6}).*(All\.tif|Dpt\.exr)$")


def camera() -> ThinLensCamera:
    return ThinLensCamera(focal_length_m=FOCAL_LENGTH_M, f_number=F_NUMBER, pixel_size_m=PIXEL_SIZE_M)


class FoD500(DatasetSource):
    key = "fod500"

    def __init__(self, spec, path, option) -> None:
        super().__init__(spec, path, option)
        self.split = option or "all"
        if self.split not in SPLITS:
            raise DefocusError(f"{spec}: unknown split {self.split!r} after '#'; choose one of {', '.join(SPLITS)}")
        if not self.path.is_dir():
            raise DefocusError(f"{spec}: folder {self.path} does not exist" if not self.path.exists()
                               else f"{spec}: {self.path} is not a folder (give the FoD500 data folder)")
        flat = self._scan(self.path)
        if flat:
            keep = {"all": lambda sid: True, "train": lambda sid: sid < TRAIN_SAMPLES,
                    "test": lambda sid: sid >= TRAIN_SAMPLES}[self.split]
            self._items = [(self.path, sid, imgs, dpt, f"fod500_{sid:06d}") for sid, (imgs, dpt) in flat.items()
                           if keep(sid)]
        else:  # copies re-organised into train/ and test/ sub-folders (e.g. Datasets/fs_6/train, .../test)
            if not any((self.path / sub).is_dir() for sub in ("train", "test")):
                raise DefocusError(f"{spec}: no FoD500 images (NNNNNN...All.tif) in {self.path} "
                                   "(nor in train/ or test/ sub-folders)")
            subs = [sub for sub in ("train", "test") if self.split in ("all", sub) and (self.path / sub).is_dir()]
            self._items = [(self.path / sub, sid, imgs, dpt, f"fod500_{sub}_{sid:06d}")
                           for sub in subs for sid, (imgs, dpt) in self._scan(self.path / sub).items()]
        self._items.sort(key=lambda it: it[4])
        if not self._items:
            raise DefocusError(f"{spec}: no samples of split {self.split!r} in {self.path}")

    def _scan(self, folder: Path) -> dict[int, tuple[list[str], str | None]]:
        """Sample number -> (its All.tif names sorted, its Dpt.exr name or None) for one flat folder."""
        images: dict[int, list[str]] = {}
        depths: dict[int, str] = {}
        for p in folder.iterdir():
            m = _NAME.match(p.name)
            if not m or not p.is_file():
                continue
            sid = int(m.group(1))
            if m.group(2) == "All.tif":
                images.setdefault(sid, []).append(p.name)
            else:
                depths[sid] = p.name
        for sid, names in images.items():
            if len(names) != len(FOCUS_M):
                raise DefocusError(f"{self.spec}: sample {sid:06d} in {folder} has {len(names)} All.tif images, "
                                   f"expected {len(FOCUS_M)}")
        return {sid: (sorted(images[sid]), depths.get(sid)) for sid in sorted(images)}

    def __len__(self) -> int:
        return len(self._items)

    def item_name(self, index: int) -> str:
        return self._items[self._check_index(index)][4]

    def stack(self, index: int, load_ground_truth: bool = True, **_) -> FocalStack:
        folder, sid, names, depth_name, name = self._items[self._check_index(index)]
        images = [load_image(folder / n) for n in names]
        if len({tuple(im.shape) for im in images}) > 1:
            raise DefocusError(f"{self.spec}: the images of sample {sid:06d} differ in size")
        gt = None
        if load_ground_truth and depth_name is not None:
            gt = read_exr(folder / depth_name, "R")
            gt[~np.isfinite(gt) | (gt <= 0) | (gt > MAX_DEPTH_M)] = 0.0
        st = FocalStack(images=torch.stack(images), focus_distances_m=list(FOCUS_M), camera=camera(), gt_depth=gt,
                        image_names=list(names), name=name)
        st.provenance = {"dataset": self.spec, "item": int(index), "camera": {"source": "defocus-net README"},
                         "focus": {"values_m": list(FOCUS_M), "source": "defocus-net README"}, "relative": False}
        return st
