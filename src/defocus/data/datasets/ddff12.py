"""DDFF-12 (Hazirbas et al., "Deep Depth From Focus", ACCV 2018): Lytro ILLUM light fields refocused into 10-image
focal stacks, with registered depth stored as disparity, in one HDF5 file.

Spec: ``ddff12:PATH[#SPLIT]`` — PATH is the ``.h5`` file (``ddff-dataset-trainval.h5``, ``ddff-dataset-test.h5``, or
one packed with DFV's ``data_preprocess/pack_to_h5.py``); SPLIT is ``train``, ``val`` (default) or ``test``.

Format (facts and where they come from):

* Datasets ``stack_<split>`` (N, 10, H, W, 3) RGB, 0–255 (uint8 in the published files; float32 holding 0–255 in
  files packed by DFV, which reads PNGs with OpenCV and reverses BGR to RGB) and ``disp_<split>`` (N, H, W) float
  disparity in pixels, 0 = no depth; the test file has ``stack_test`` only. H x W = 383 x 552. Readers divide the
  images by 255 and transpose to (10, 3, H, W): soyers/ddff-pytorch ``FocalStackDDFFH5Reader.py`` as adopted by
  fuy34/DFV ``dataloader/DDFF12.py`` and Eziotic/DEREC (Si et al.) ``utils/dataset.py`` (class ``DDFF12``);
  DFV ``data_preprocess/pack_to_h5.py`` writes the same keys plus ``AiF_<split>`` (N, H, W, 3), the central
  sub-aperture view (``my_refocus.py`` saves ``lf[centre]`` as ``00.png``); read here as ``gt_aif`` when present
  (a sharp pinhole view, so ``evaluate`` reports AIF PSNR / SSIM against it).
* Disparity ↔ depth: ``depth = baseline · f_sub / disparity`` with ``f_sub = 521.4052`` px (sub-aperture focal
  length) and ``baseline = K2 / flens · 1e-3`` m from the Lytro calibration ``IntParamLF.mat``
  (K2 = 1982.0250823695178, flens = max(fx, fy) = 7317.020641763665): hazirbas/ddff-toolbox
  ``utility/python/refocus.py`` (the formula; the calibration file itself is in the toolbox's ``caldata``) and the
  numeric values as used in Eziotic/DEREC ``utils/dataset.py`` ``disp2dpt``. So ``baseline · f_sub`` =
  0.1412 m·px (``DISP_TIMES_DEPTH``).
* Focus: the toolbox refocuses at 10 disparities ``linspace(B·f/0.5, B·f/7, 10)``, i.e. from 0.5 m to 7 m evenly in
  dioptres, image 0 the nearest (ddff-toolbox ``refocus.py``/``refocus.m``: ``depth_range = [0.5 7]``; DFV uses
  ``linspace(0.28, 0.02, 10)`` px, the same numbers rounded).
* Camera: a refocused light field is not a thin lens, but shift-and-add over the sub-aperture views blurs a point at
  disparity d focused at disparity d_f into a box of width ≈ n_views · |d − d_f| px, i.e. a thin lens with
  aperture A = n_views · baseline and f / p = f_sub. The equivalent camera used here assumes 9 x 9 views (the
  published light fields; not checked against a file here) and a 20 µm pitch (scale-free: only A·s/p matters):
  f = 521.4052 · 20 µm = 10.43 mm, N = f / A = 4.28, i.e. about 1.27 px of blur per dioptre. Treat its blur scale
  as approximate; ``--refine`` calibrates the effective aperture per stack.

Download: https://hazirbas.com/datasets/ddff12scene/ (the page links the trainval and test ``.h5`` files, the raw light
fields and depth). Licence: the toolbox is GPLv3; the data page asks to cite Hazirbas et al. (ACCV 2018) — check the
page for the data licence before redistributing.
"""

from __future__ import annotations

import numpy as np
import torch

from defocus.data.datasets.base import DatasetSource, h5_read, open_h5
from defocus.data.stack import FocalStack
from defocus.errors import DefocusError
from defocus.optics.camera import ThinLensCamera

F_SUB_PX = 521.4052
K2 = 1982.0250823695178
FLENS = 7317.020641763665
BASELINE_M = K2 / FLENS * 1e-3
DISP_TIMES_DEPTH = BASELINE_M * F_SUB_PX  # metres · pixels
STACK_SIZE = 10
FOCUS_RANGE_M = (0.5, 7.0)
VIEWS = 9
EQUIV_PITCH_M = 20e-6
SPLITS = ("train", "val", "test")


def focus_distances_m() -> np.ndarray:
    """The 10 focus distances (m) of a DDFF-12 stack, nearest first."""
    disp = np.linspace(DISP_TIMES_DEPTH / FOCUS_RANGE_M[0], DISP_TIMES_DEPTH / FOCUS_RANGE_M[1], STACK_SIZE)
    return DISP_TIMES_DEPTH / disp


def disparity_to_depth(disp: np.ndarray) -> np.ndarray:
    """Depth in metres from disparity in pixels; disparity <= 0 or non-finite gives 0 (unknown)."""
    disp = np.asarray(disp, dtype=np.float64)
    ok = np.isfinite(disp) & (disp > 0)
    out = np.zeros(disp.shape, dtype=np.float32)
    out[ok] = DISP_TIMES_DEPTH / disp[ok]
    return out


def equivalent_camera() -> ThinLensCamera:
    """The thin lens equivalent to shift-and-add refocusing over VIEWS x VIEWS views (see the module docstring)."""
    f = F_SUB_PX * EQUIV_PITCH_M
    return ThinLensCamera(focal_length_m=f, f_number=f / (VIEWS * BASELINE_M), pixel_size_m=EQUIV_PITCH_M)


class DDFF12(DatasetSource):
    key = "ddff12"

    def __init__(self, spec, path, option) -> None:
        super().__init__(spec, path, option)
        self.split = option or "val"
        if self.split not in SPLITS:
            raise DefocusError(f"{spec}: unknown split {self.split!r} after '#'; choose one of {', '.join(SPLITS)}")
        self.stack_key, self.disp_key = f"stack_{self.split}", f"disp_{self.split}"
        with open_h5(self.path, spec, "a DDFF-12 file") as f:
            if self.stack_key not in f:
                have = ", ".join(k for k in f.keys() if k.startswith("stack_")) or "none"
                raise DefocusError(f"{spec}: {self.path} has no dataset {self.stack_key!r} (stacks: {have})")
            ds = f[self.stack_key]
            if ds.ndim != 5 or ds.shape[1] != STACK_SIZE or ds.shape[4] != 3:
                raise DefocusError(f"{spec}: {self.stack_key} has shape {ds.shape}, expected (N, 10, H, W, 3)")
            self._n = int(ds.shape[0])
            self._hw = tuple(int(v) for v in ds.shape[2:4])
            self.has_disparity = self.disp_key in f
            aif = f.get(f"AiF_{self.split}")
            self.aif_key = aif.name if aif is not None and tuple(aif.shape) == (self._n, *self._hw, 3) else None
            if self.has_disparity and (f[self.disp_key].shape[0] != self._n
                                       or tuple(f[self.disp_key].shape[1:]) != self._hw):
                raise DefocusError(f"{spec}: {self.disp_key} {f[self.disp_key].shape} does not match "
                                   f"{self.stack_key} {ds.shape}")

    def __len__(self) -> int:
        return self._n

    def item_name(self, index: int) -> str:
        return f"ddff12_{self.split}_{self._check_index(index):04d}"

    def stack(self, index: int, load_ground_truth: bool = True, **_) -> FocalStack:
        i = self._check_index(index)
        gt = None
        with open_h5(self.path, self.spec, "a DDFF-12 file") as f:
            raw = np.asarray(h5_read(f[self.stack_key], i, self.spec))
            if load_ground_truth and self.has_disparity:
                gt = disparity_to_depth(h5_read(f[self.disp_key], i, self.spec))
            aif = None
            if load_ground_truth and self.aif_key:
                a = np.asarray(h5_read(f[self.aif_key], i, self.spec), dtype=np.float32)
                aif = torch.from_numpy(np.ascontiguousarray(a.transpose(2, 0, 1)) / 255.0).clamp_(0, 1)
        imgs = raw.astype(np.float32)
        if raw.dtype != np.uint8 and (not np.isfinite(imgs).all() or imgs.min() < 0 or imgs.max() > 255.0 + 1e-3):
            raise DefocusError(f"{self.spec}: item {i} holds values outside 0–255")
        images = torch.from_numpy(np.ascontiguousarray(imgs.transpose(0, 3, 1, 2)) / 255.0).clamp_(0, 1)
        fd = focus_distances_m()
        st = FocalStack(images=images, focus_distances_m=fd, camera=equivalent_camera(), gt_depth=gt, gt_aif=aif,
                        name=self.item_name(i))
        st.provenance = {"dataset": self.spec, "item": i, "camera": {"source": "equivalent thin lens (ddff12)"},
                         "focus": {"values_m": [float(v) for v in fd], "source": "ddff-toolbox refocus 0.5-7 m"},
                         "relative": False}
        return st
