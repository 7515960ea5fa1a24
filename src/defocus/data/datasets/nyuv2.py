"""NYU Depth v2, labeled subset: ``nyu_depth_v2_labeled.mat`` (RGB-D pairs, rendered here into focal stacks).

Spec: ``nyuv2:PATH[#PROTOCOL]`` — PATH is ``nyu_depth_v2_labeled.mat``; PROTOCOL (``paper`` default, or
``realistic``) is the synthesis protocol of :mod:`defocus.data.synthesis` used by ``evaluate`` and ``render``
(training renders every protocol of ``data.protocols``, like ``data.rgbd_dirs``).

Format (facts and where they come from):

* The file is a MATLAB v7.3 ``.mat``, i.e. HDF5 (with a 512-byte user block), read with ``h5py``. MATLAB stores
  arrays column-major, so h5py sees them with the axes reversed: ``images`` is uint8 ``(1449, 3, 640, 480)`` =
  (N, C, W, H) and ``depths`` float32 ``(1449, 640, 480)`` = (N, W, H), in metres (in-painted, no holes). An image
  is ``images[i].transpose(0, 2, 1)`` → (3, 480, 640) and a depth map ``depths[i].T`` → (480, 640). Seen in the
  public converters, e.g. sleekEagle/defocus_camind ``source/extract_nyu.py`` (``depths[i].transpose()``, times 1000
  to mm) and several others printing ``images.shape=(1449, 3, 640, 480)``; the user guide on the dataset page
  describes ``images`` as HxWx3xN and ``depths`` as HxWxN in metres (MATLAB's order).
* Items are numbered here from 1 like MATLAB (``nyuv2_0001`` is ``images[0]``). The official train/test split lives
  in a separate ``splits.mat`` (not read here).
* Camera: none in the data (a Kinect); stacks are rendered with the project's ``nyuv2`` preset (50 mm, f/8, 12 µm
  at 320x240, focus 1, 1.5, 2.5, 4, 6 m), the protocol of Si et al. (SPEC §2).

Download: http://horatio.cs.nyu.edu/mit/silberman/nyu_depth_v2/nyu_depth_v2_labeled.mat (2.8 GB), from
https://cs.nyu.edu/~silberman/datasets/nyu_depth_v2.html. Licence: none stated on the page; research use, cite
Silberman, Hoiem, Kohli, Fergus, "Indoor Segmentation and Support Inference from RGBD Images", ECCV 2012.
"""

from __future__ import annotations

import numpy as np
import torch

from defocus.data.datasets.base import DatasetSource, h5_read, open_h5
from defocus.data.stack import FocalStack
from defocus.data.synthesis import PROTOCOLS, stack_from_rgbd
from defocus.errors import DefocusError
from defocus.optics.camera import get_preset


class NYUv2Labeled(DatasetSource):
    key = "nyuv2"
    kind = "rgbd"
    preset = "nyuv2"

    def __init__(self, spec, path, option) -> None:
        super().__init__(spec, path, option)
        self.protocol = option or "paper"
        if self.protocol not in PROTOCOLS:
            raise DefocusError(f"{spec}: unknown protocol {self.protocol!r} after '#'; choose {' or '.join(PROTOCOLS)}")
        with open_h5(self.path, spec, "NYU Depth v2 labeled .mat (MATLAB v7.3)") as f:
            missing = [k for k in ("images", "depths") if k not in f]
            if missing:
                raise DefocusError(f"{spec}: {self.path} is not nyu_depth_v2_labeled.mat: no {', '.join(missing)}")
            ims, dps = f["images"], f["depths"]
            if ims.ndim != 4 or ims.shape[1] != 3 or dps.ndim != 3:
                raise DefocusError(f"{spec}: images {ims.shape} / depths {dps.shape} are not (N, 3, W, H) / (N, W, H)")
            if ims.shape[0] != dps.shape[0] or ims.shape[2:] != dps.shape[1:]:
                raise DefocusError(f"{spec}: images {ims.shape} and depths {dps.shape} do not match")
            self._n = int(ims.shape[0])

    def __len__(self) -> int:
        return self._n

    def item_name(self, index: int) -> str:
        return f"nyuv2_{self._check_index(index) + 1:04d}"

    def rgbd(self, index: int) -> tuple[torch.Tensor, np.ndarray]:
        i = self._check_index(index)
        with open_h5(self.path, self.spec, "NYU Depth v2 labeled .mat") as f:
            img = np.asarray(h5_read(f["images"], i, self.spec))
            depth = np.asarray(h5_read(f["depths"], i, self.spec), dtype=np.float32)
        if img.dtype != np.uint8:
            raise DefocusError(f"{self.spec}: images must be uint8, got {img.dtype}")
        rgb = torch.from_numpy(np.ascontiguousarray(img.transpose(0, 2, 1))).float() / 255.0  # (3, W, H) -> (3, H, W)
        depth = np.ascontiguousarray(depth.T)  # (W, H) -> (H, W), metres
        depth[~np.isfinite(depth) | (depth < 0)] = 0.0
        return rgb, depth

    def stack(self, index: int, load_ground_truth: bool = True, protocol: str | None = None, seed: int | None = None,
              **_) -> FocalStack:
        """Item ``index`` rendered with the ``nyuv2`` preset (its image size, camera and focus distances)."""
        preset = get_preset(self.preset)
        rgb, depth = self.rgbd(index)
        st = stack_from_rgbd(rgb, depth, preset.focus_distances_m, preset.camera, protocol or self.protocol,
                             size=preset.image_size, seed=index if seed is None else seed, name=self.item_name(index))
        if not load_ground_truth:
            st.gt_depth, st.gt_aif = None, None
        st.provenance = {"dataset": self.spec, "item": int(index), "protocol": protocol or self.protocol,
                         "camera": {"source": "preset nyuv2"}, "relative": False}
        return st
