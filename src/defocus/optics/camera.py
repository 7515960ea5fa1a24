"""Thin-lens camera model and the camera presets of the paper.

Conventions used everywhere in ``defocus``:

* every distance is in **metres** inside the code (depth, focus distance, focal length, pixel pitch); only file
  formats and CLI flags use mm / µm, and then the name says so (``focal_length_mm``, ``pixel_size_um``);
* the circle of confusion (CoC) of a point at depth ``d`` seen by a lens focused at ``fd`` is

      c(d, fd) = A · s · |1/fd − 1/d|,   A = f / N,   s = fd·f / (fd − f)

  in metres on the sensor; divided by the pixel pitch ``p`` it is in pixels. ``K = A·s/p`` (pixels per dioptre) is
  the only camera quantity that matters for the blur, so ``c/p = K · |1/fd − 1/d|``. Every CoC in the package is
  computed here: :meth:`ThinLensCamera.coc_px` (depth) and :meth:`ThinLensCamera.coc_px_from_inverse_depth` for a
  camera, :func:`blur_px_from_inverse_depth` for the camera given per image as K (the network, the loss,
  refinement); the PSF's size then follows from :meth:`defocus.optics.psf.PsfFamily.size_from_coc`;
* pixel pitch belongs to the image as given: resizing an image by a factor ``k`` multiplies its pitch by ``1/k``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Sequence

import torch

from defocus.errors import DefocusError, InputError

Tensorish = torch.Tensor | float | Sequence[float]


def _check_positive_finite(name: str, value: float, field: str | None = None) -> float:
    try:
        v = float(value)
    except (TypeError, ValueError):
        raise InputError(f"{name} must be a number, got {value!r}", field=field) from None
    if not math.isfinite(v) or v <= 0:
        raise InputError(f"{name} must be a finite positive number, got {value!r}", field=field)
    return v


def check_focus_distances(focus_m: Tensorish, focal_length_m: float | None = None) -> None:
    """The one rule for focus distances (metres): at least one, finite, positive and, with a focal length, beyond
    it. Raises InputError (field ``focus``)."""
    fd = torch.as_tensor(focus_m, dtype=torch.float64)
    if fd.numel() == 0:
        raise InputError("no focus distances given", field="focus")
    if not (torch.isfinite(fd).all() and (fd > 0).all()):
        raise InputError(f"focus distances must be finite positive numbers of metres, got {fd.flatten().tolist()}",
                         field="focus")
    if focal_length_m is not None and (fd <= focal_length_m).any():
        raise InputError(f"focus distances must be beyond the focal length ({focal_length_m * 1e3:g} mm), "
                         f"got {fd.flatten().tolist()} m", field="focus")


#: The smallest f-number a lens in air can have (N = 1 / (2 NA), NA ≤ 1). Below it the aperture, and with it every
#: blur, grows without physical meaning until it overflows (hypothesis found f/7e-227: infinite blur, NaN depth).
MIN_F_NUMBER = 0.5
#: The smallest pixel pitch accepted (metres): 0.1 µm, a fifth of the smallest sensor pitch made (about 0.5 µm) and
#: under the wavelength of light; below it the blur in pixels overflows the same way (hypothesis: 7e-227 µm).
MIN_PIXEL_SIZE_M = 1e-7
#: The shortest focal length accepted (metres): 0.1 mm, under the shortest camera lenses made (about 0.5 mm); below it
#: the blur vanishes and a stack would be "measured" with no focus cue at all (1e-30 mm was accepted silently).
MIN_FOCAL_LENGTH_M = 1e-4


@dataclass(frozen=True)
class ThinLensCamera:
    """An ideal thin lens in front of a pixel grid.

    Args:
        focal_length_m: focal length f in metres.
        f_number: f-number N (aperture diameter A = f / N).
        pixel_size_m: pixel pitch p in metres, for the image size the camera is used with.
    """

    focal_length_m: float
    f_number: float
    pixel_size_m: float

    def __post_init__(self) -> None:
        _check_positive_finite("focal length", self.focal_length_m, "camera.focal_length_mm")
        _check_positive_finite("f-number", self.f_number, "camera.f_number")
        _check_positive_finite("pixel size", self.pixel_size_m, "camera.pixel_size_um")
        if self.f_number < MIN_F_NUMBER:
            raise InputError(f"f-number {self.f_number:g} is impossible: no lens in air is faster than "
                             f"f/{MIN_F_NUMBER:g}", field="camera.f_number")
        if self.pixel_size_m < MIN_PIXEL_SIZE_M:
            raise InputError(f"pixel size {self.pixel_size_m * 1e6:g} µm is impossible: no sensor's pitch is under "
                             f"{MIN_PIXEL_SIZE_M * 1e6:g} µm (give it in micrometres)", field="camera.pixel_size_um")
        if self.pixel_size_m > 1e-3:
            raise InputError(f"pixel size {self.pixel_size_m * 1e6:g} µm is over 1 mm: give the pixel size in "
                             "micrometres", field="camera.pixel_size_um")
        if self.focal_length_m < MIN_FOCAL_LENGTH_M:
            raise InputError(f"focal length {self.focal_length_m * 1e3:g} mm is impossible: no camera lens is shorter "
                             f"than {MIN_FOCAL_LENGTH_M * 1e3:g} mm (give it in millimetres)",
                             field="camera.focal_length_mm")
        if self.focal_length_m > 10.0:
            raise InputError(f"focal length {self.focal_length_m:g} m is impossible: is it in mm?",
                             field="camera.focal_length_mm")

    # ----------------------------------------------------------------------------------------------- conversions
    @classmethod
    def from_mm_um(cls, focal_length_mm: float, f_number: float, pixel_size_um: float) -> "ThinLensCamera":
        """Builds a camera from the units of files and flags (mm, µm)."""
        f = _check_positive_finite("focal length", focal_length_mm, "camera.focal_length_mm")
        p = _check_positive_finite("pixel size", pixel_size_um, "camera.pixel_size_um")
        return cls(focal_length_m=f * 1e-3, f_number=f_number, pixel_size_m=p * 1e-6)

    @classmethod
    def from_dict(cls, d: dict) -> "ThinLensCamera":
        """Reads ``{"focal_length_mm", "f_number", "pixel_size_um"}`` (the ``stack.json`` form)."""
        if not isinstance(d, dict):
            raise DefocusError(f"camera must be an object with focal_length_mm, f_number, pixel_size_um; got {d!r}")
        missing = [k for k in ("focal_length_mm", "f_number", "pixel_size_um") if k not in d]
        if missing:
            raise DefocusError(f"camera is missing {', '.join(missing)}")
        return cls.from_mm_um(d["focal_length_mm"], d["f_number"], d["pixel_size_um"])

    def to_dict(self) -> dict:
        return {
            "focal_length_mm": round(self.focal_length_m * 1e3, 9),
            "f_number": self.f_number,
            "pixel_size_um": round(self.pixel_size_m * 1e6, 9),
        }

    def resized(self, scale: float) -> "ThinLensCamera":
        """The camera for the image resized by ``scale`` (new size = scale × old size): pitch becomes p / scale."""
        scale = _check_positive_finite("resize factor", scale)
        return ThinLensCamera(self.focal_length_m, self.f_number, self.pixel_size_m / scale)

    # ---------------------------------------------------------------------------------------------------- optics
    @property
    def aperture_m(self) -> float:
        """Aperture diameter A = f / N in metres."""
        return self.focal_length_m / self.f_number

    def validate_focus(self, focus_m: Tensorish) -> None:
        """Raises :class:`InputError` unless every focus distance is finite and beyond the focal length
        (:func:`check_focus_distances`)."""
        check_focus_distances(focus_m, self.focal_length_m)

    def sensor_distance_m(self, focus_m: Tensorish) -> torch.Tensor:
        """Lens-to-sensor distance s = fd·f / (fd − f) for focus distance(s) ``fd`` (metres)."""
        fd = torch.as_tensor(focus_m)
        f = self.focal_length_m
        return fd * f / (fd - f)

    def blur_per_dioptre_px(self, focus_m: Tensorish) -> torch.Tensor:
        """K = A·s/p: CoC diameter in pixels per dioptre of defocus, for focus distance(s) ``fd``."""
        return self.aperture_m * self.sensor_distance_m(focus_m) / self.pixel_size_m

    def blur_per_dioptre(self, focus_m: Tensorish) -> torch.Tensor:
        """K as the network, the loss and the renderers take it: computed in float64, returned as float32.

        Args:
            focus_m: (..., N) focus distances in metres.
        Returns:
            float32 tensor of the same shape, CoC diameter in pixels per dioptre.
        """
        return self.blur_per_dioptre_px(torch.as_tensor(focus_m).double()).float()

    def coc_m(self, depth_m: Tensorish, focus_m: Tensorish) -> torch.Tensor:
        """CoC diameter on the sensor in metres, c = A·s·|1/fd − 1/d| (broadcasts depth against focus)."""
        return self.coc_m_from_inverse_depth(1.0 / torch.as_tensor(depth_m), focus_m)

    def coc_px(self, depth_m: Tensorish, focus_m: Tensorish) -> torch.Tensor:
        """CoC diameter in pixels, c / p."""
        return self.coc_m(depth_m, focus_m) / self.pixel_size_m

    def coc_m_from_inverse_depth(self, inv_depth: Tensorish, focus_m: Tensorish) -> torch.Tensor:
        """CoC diameter on the sensor in metres from inverse depth (dioptres), c = A·s·|1/fd − 1/d|; ``inv_depth``
        and ``focus_m`` broadcast against each other (e.g. (L, 1) layers against (1, N) focus → (L, N))."""
        inv = torch.as_tensor(inv_depth)
        fd = torch.as_tensor(focus_m)
        return self.aperture_m * self.sensor_distance_m(fd) * (1.0 / fd - inv).abs()

    def coc_px_from_inverse_depth(self, inv_depth: Tensorish, focus_m: Tensorish) -> torch.Tensor:
        """CoC diameter in pixels from inverse depth, c / p (broadcasting as :meth:`coc_m_from_inverse_depth`)."""
        return self.coc_m_from_inverse_depth(inv_depth, focus_m) / self.pixel_size_m


def blur_px_from_inverse_depth(
    inv_depth: torch.Tensor, focus_m: torch.Tensor, blur_per_dioptre: torch.Tensor, signed: bool = False
) -> torch.Tensor:
    """CoC diameter in pixels for a camera given per image as K (the K-form of the CoC law): K·|1/fd − 1/d|.

    Args:
        inv_depth: (B, 1, H, W) inverse depth 1/d in dioptres.
        focus_m: (B, N) focus distances fd in metres.
        blur_per_dioptre: (B, N) K = A·s/p, CoC diameter in pixels per dioptre
            (:meth:`ThinLensCamera.blur_per_dioptre`).
        signed: return K·(1/fd − 1/d) instead, positive beyond the focus distance.
    Returns:
        (B, N, 1, H, W) in ``inv_depth``'s dtype: every image n of stack b against the stack's inverse depth
        (1/fd and K are computed in their own dtype, then cast). Plain tensor arithmetic, no checks and no Python
        branches on values (it runs inside the exported network graph); callers check shapes.
    """
    fd_inv = (1.0 / focus_m).to(inv_depth.dtype)[:, :, None, None, None]
    k = blur_per_dioptre.to(inv_depth.dtype)[:, :, None, None, None]
    defocus = fd_inv - inv_depth[:, None]
    return k * (defocus if signed else defocus.abs())


@dataclass(frozen=True)
class CameraPreset:
    """A named camera with its image size, focus distances and depth range (the paper's two protocols)."""

    name: str
    camera: ThinLensCamera
    image_size: tuple[int, int]  # (H, W)
    focus_distances_m: tuple[float, ...]
    depth_range_m: tuple[float, float]
    description: str = field(default="", compare=False)


PRESETS: dict[str, CameraPreset] = {
    "nyuv2": CameraPreset(
        name="nyuv2",
        camera=ThinLensCamera(focal_length_m=50e-3, f_number=8.0, pixel_size_m=12e-6),
        image_size=(240, 320),
        focus_distances_m=(1.0, 1.5, 2.5, 4.0, 6.0),
        depth_range_m=(0.1, 10.0),
        description="indoor rooms (NYU Depth v2 protocol of the paper)",
    ),
    "defocusnet": CameraPreset(
        name="defocusnet",
        camera=ThinLensCamera(focal_length_m=7.2e-3, f_number=1.2, pixel_size_m=5.6e-6),
        image_size=(256, 256),
        focus_distances_m=(0.3, 0.45, 0.75, 1.2, 1.8),
        depth_range_m=(0.1, 3.0),
        description="table-top scenes (DefocusNet protocol of the paper)",
    ),
}


def depth_range_from_focus(camera: ThinLensCamera, focus_m: Tensorish) -> tuple[float, float]:
    """A depth range around the focus distances: from half the nearest (never nearer than twice the focal length)
    to four times the farthest, in metres."""
    fd = torch.as_tensor(focus_m, dtype=torch.float64)
    near = max(0.5 * float(fd.min()), 2.0 * camera.focal_length_m)
    return near, 4.0 * float(fd.max())


def default_depth_range(camera: ThinLensCamera, focus_m: Tensorish) -> tuple[float, float]:
    """The depth range (near, far) in metres that the network's bounded output spans for a stack.

    The range of a preset whose camera matches (same lens and pitch), else :func:`depth_range_from_focus`.
    """
    for preset in PRESETS.values():
        c = preset.camera
        if (
            abs(c.focal_length_m - camera.focal_length_m) < 1e-9
            and abs(c.f_number - camera.f_number) < 1e-9
            and abs(c.pixel_size_m - camera.pixel_size_m) < 1e-12
        ):
            return preset.depth_range_m
    return depth_range_from_focus(camera, focus_m)


def get_preset(name: str) -> CameraPreset:
    """Looks a preset up by name; unknown names are a :class:`DefocusError` listing the known ones."""
    try:
        return PRESETS[name]
    except KeyError:
        raise DefocusError(f"unknown preset {name!r}; known presets: {', '.join(sorted(PRESETS))}") from None
