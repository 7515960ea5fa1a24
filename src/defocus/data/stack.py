"""The focal stack in memory: :class:`FocalStack`, the central type that every command reads, predicts and writes.

Conventions: images ``(N, 3, H, W)`` float32 in [0, 1] (stored 8-bit values / 255, sRGB-encoded); focus distances
``(N,)`` metres; the camera's pixel pitch belongs to the images as given.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Sequence

import numpy as np
import torch

from defocus.data.codecs import as_depth_map, clean_depth
from defocus.errors import DefocusError, InputError
from defocus.optics.camera import ThinLensCamera, check_focus_distances


def focus_list(focus: Any, what: str) -> list[float]:
    """Focus distances (metres) as a list of floats; a non-numeric entry is a DefocusError."""
    if isinstance(focus, torch.Tensor):
        focus = focus.detach().cpu().flatten().tolist()
    elif isinstance(focus, np.ndarray):
        focus = focus.flatten().tolist()
    elif isinstance(focus, (int, float)):
        focus = [focus]
    try:
        out = [float(v) for v in focus]
    except (TypeError, ValueError):
        raise InputError(f"{what}: focus distances must be numbers (metres), got {focus!r}", field="focus") from None
    return out

def check_focus(focus: Sequence[float], camera: ThinLensCamera | None, what: str) -> None:
    """:func:`~defocus.optics.camera.check_focus_distances` (with the camera's focal length where there is one);
    errors start with ``what`` (field ``focus``)."""
    try:
        check_focus_distances(list(focus), camera.focal_length_m if camera is not None else None)
    except InputError as exc:
        raise InputError(f"{what}: {exc}", field="focus") from None


@dataclass
class FocalStack:
    """A focal stack in memory.

    Attributes:
        images: float32 ``(N, 3, H, W)`` in [0, 1] (stored 8-bit values / 255, sRGB-encoded), N >= 1.
        focus_distances_m: float32 ``(N,)``, focus distance of each image in metres.
        camera: the thin-lens camera (pitch for this image size), or None when unknown (see :func:`require_camera`).
        gt_depth: optional float32 ``(H, W)`` ground-truth depth in metres, 0 = unknown.
        gt_aif: optional float32 ``(3, H, W)`` all-in-focus image in [0, 1].
        image_names: the file name of each image (defaults to ``focus_<i>.png``).
        name: the stack's name (its folder name).
        provenance: where each camera value and the focus distances came from, filled by
            :func:`defocus.data.folders.read_stack` (``{"camera": {field: {"value", "source"}}, "focus": {"values_m",
            "source"}, "images": [...], "relative": bool}``); empty for stacks built in memory.
    """

    images: torch.Tensor
    focus_distances_m: torch.Tensor
    camera: ThinLensCamera | None = None
    gt_depth: np.ndarray | None = None
    gt_aif: torch.Tensor | None = None
    image_names: list[str] = field(default_factory=list)
    name: str = "stack"
    provenance: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        what = f"stack {self.name}"
        images = torch.as_tensor(self.images)
        if images.ndim == 3 and images.shape[0] == 3:
            images = images.unsqueeze(0)
        if images.ndim != 4 or images.shape[1] != 3:
            raise DefocusError(f"{what}: images must have shape (N, 3, H, W), got {tuple(images.shape)}")
        n, _, h, w = images.shape
        if n < 1 or h < 1 or w < 1:
            raise DefocusError(f"{what}: needs at least one non-empty image, got shape {tuple(images.shape)}")
        images = images.to(torch.float32)
        if not torch.isfinite(images).all():
            raise DefocusError(f"{what}: images hold non-finite values")
        if images.min() < -1e-4 or images.max() > 1 + 1e-4:
            raise DefocusError(f"{what}: image values must lie in [0, 1]")
        self.images = images
        focus = focus_list(self.focus_distances_m, what)
        if len(focus) != n:
            raise DefocusError(f"{what}: {n} images but {len(focus)} focus distances")
        check_focus(focus, self.camera, what)
        self.focus_distances_m = torch.tensor(focus, dtype=torch.float32)
        if self.camera is not None and not isinstance(self.camera, ThinLensCamera):
            raise DefocusError(f"{what}: camera must be a ThinLensCamera, got {type(self.camera).__name__}")
        if not self.image_names:
            self.image_names = [f"focus_{i}.png" for i in range(n)]
        self.image_names = [str(s) for s in self.image_names]
        if len(self.image_names) != n:
            raise DefocusError(f"{what}: {n} images but {len(self.image_names)} image names")
        if self.gt_depth is not None:
            gt = clean_depth(as_depth_map(self.gt_depth, f"{what}: ground-truth depth"))
            if gt.shape != (h, w):
                raise DefocusError(
                    f"{what}: ground-truth depth is {gt.shape[1]}x{gt.shape[0]} but the images are {w}x{h} (WxH)"
                )
            self.gt_depth = gt
        if self.gt_aif is not None:
            aif = torch.as_tensor(self.gt_aif).to(torch.float32)
            if aif.ndim != 3 or aif.shape[0] != 3:
                raise DefocusError(f"{what}: ground-truth AIF must have shape (3, H, W), got {tuple(aif.shape)}")
            if tuple(aif.shape[1:]) != (h, w):
                raise DefocusError(
                    f"{what}: ground-truth AIF is {aif.shape[2]}x{aif.shape[1]} but the images are {w}x{h} (WxH)"
                )
            self.gt_aif = aif

    @classmethod
    def from_arrays(
        cls,
        images: Any,
        focus_m: Sequence[float] | torch.Tensor | np.ndarray,
        camera: ThinLensCamera | None = None,
        name: str = "stack",
    ) -> "FocalStack":
        """A stack from in-memory images: a sequence of (H, W, 3) uint8 / float arrays (as image libraries give
        them), an (N, H, W, 3) array, or an (N, 3, H, W) tensor in [0, 1]. uint8 values are divided by 255.

        Args:
            images: the N images, all of one size.
            focus_m: N focus distances in metres.
            camera: the camera (pixel pitch for these images), needed to predict.
        """
        if isinstance(images, (list, tuple)):
            arrays = [np.asarray(im) for im in images]
            if len({a.shape for a in arrays}) > 1:
                raise DefocusError(f"stack {name}: images differ in size: {[a.shape for a in arrays]}")
            images = np.stack(arrays) if arrays else np.zeros((0, 1, 1, 3), np.float32)
        if isinstance(images, np.ndarray):
            arr = images.astype(np.float32) / 255.0 if images.dtype == np.uint8 else images.astype(np.float32)
            if arr.ndim == 4 and arr.shape[-1] == 3 and arr.shape[1] != 3:
                arr = arr.transpose(0, 3, 1, 2)
            images = torch.from_numpy(np.ascontiguousarray(arr))
        elif isinstance(images, torch.Tensor) and images.dtype == torch.uint8:
            images = images.float() / 255.0
        return cls(images=images, focus_distances_m=focus_m, camera=camera, name=name)

    def __repr__(self) -> str:
        # A summary, not the pixels: printing a stack in a notebook must not dump megabytes of tensors.
        h, w = self.images.shape[-2:]
        focus = "relative (unknown)" if self.provenance.get("relative") else \
            "[" + ", ".join(f"{float(v):.4g}" for v in self.focus_distances_m) + "] m"
        gt = [k for k, v in (("depth", self.gt_depth), ("aif", self.gt_aif)) if v is not None]
        return (f"FocalStack(name={self.name!r}, {self.num_images} images of {w}x{h}, focus {focus}, "
                f"camera={self.camera}, ground truth: {', '.join(gt) or 'none'})")

    @property
    def num_images(self) -> int:
        """N, the number of images."""
        return int(self.images.shape[0])

    @property
    def image_size(self) -> tuple[int, int]:
        """(H, W) in pixels."""
        return int(self.images.shape[2]), int(self.images.shape[3])


def require_camera(stack: FocalStack) -> ThinLensCamera:
    """The stack's camera; an InputError when it is unknown."""
    if stack.camera is None:
        raise InputError(f"no camera for {stack.name}: give its focal length, f-number and pixel pitch (or add a "
                         "camera to stack.json)", field=("camera.focal_length_mm", "camera.f_number",
                                                         "camera.pixel_size_um"))
    return stack.camera
