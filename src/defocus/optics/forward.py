"""The forward model as one object: camera + PSF family + light model + rendering method.

Synthesis, the self-supervised loss and test-time refinement all take a :class:`ForwardModel` instead of loose
strings and booleans, so that "which blur, in which light, rendered how" is decided in one place:

* **PSF family** ``psf``: ``"gaussian"`` (σ = c/4p, the paper's) or ``"disk"`` (radius c/2p), see
  :mod:`defocus.optics.psf`.
* **Light model** ``light``: ``"srgb"`` blurs the stored (sRGB-encoded) values, as the paper does; ``"linear"``
  decodes to linear light, blurs, and encodes again, as a real lens and sensor do.
* **Method** ``method``: ``"exact"`` (test oracle), ``"layered"`` (fast, differentiable in depth; the loss and
  refinement) or ``"occlusion"`` (back-to-front layers; realistic synthesis), see :mod:`defocus.optics.render`.

Two named families cover what the package uses: ``"gaussian"`` = Gaussian PSF on sRGB values (matches the ``paper``
protocol) and ``"disk"`` = disk PSF in linear light (matches the ``realistic`` protocol and, by default, real
lenses); see :data:`FAMILIES` and :meth:`ForwardModel.from_family`.

Shapes: aif (B, 3, H, W) in [0, 1]; depth (B, 1, H, W) metres or inverse depth (B, 1, H, W) dioptres; focus (B, N)
metres; blur_per_dioptre K (B, N) pixels per dioptre → stack (B, N, 3, H, W).
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any, NamedTuple

import torch
from torch import nn

from defocus.color import linear_to_srgb, srgb_to_linear
from defocus.errors import DefocusError
from defocus.optics.camera import ThinLensCamera, get_preset
from defocus.optics.psf import check_psf
from defocus.optics.render import (
    RENDER_METHODS,
    blur_from_inverse_depth,
    render_exact,
    render_layered,
    render_layered_from_blur,
    render_occlusion,
)

LIGHT_MODELS: tuple[str, ...] = ("srgb", "linear")

#: Named (PSF, light) families: the paper's Gaussian on sRGB values, and a disk in linear light.
FAMILIES: dict[str, tuple[str, str]] = {"gaussian": ("gaussian", "srgb"), "disk": ("disk", "linear")}

#: Level spacing of the layered renderer for synthesis: finer than the training default, so that rendered test
#: stacks match the ``exact`` oracle to a small fraction of an 8-bit level.
SYNTHESIS_LEVEL_RATIO = 1.15


class Rerendering(NamedTuple):
    """What the forward model gives back for a prediction: the stack and the PSF size behind it."""

    stack: torch.Tensor  # (B, N, 3, H, W)
    blur: torch.Tensor  # (B, N, 1, H, W) σ or radius in pixels


@dataclass(frozen=True)
class ForwardSpec:
    """The settings of a :class:`ForwardModel`, without the camera (what configs and ``prediction.json`` record)."""

    psf: str = "gaussian"
    light: str = "srgb"
    method: str = "layered"
    level_ratio: float = 1.5
    # Half-resolution blur of wide Gaussian levels (faster, 0.03 % of the mean value less accurate).
    multires: bool = False
    # Multiplies every blur (an effective aperture: real apertures are not exactly their EXIF value).
    blur_scale: float = 1.0

    def __post_init__(self) -> None:
        check_psf(self.psf)
        if self.light not in LIGHT_MODELS:
            raise DefocusError(f"unknown light model {self.light!r}; choose one of {', '.join(LIGHT_MODELS)}")
        if self.method not in RENDER_METHODS:
            raise DefocusError(f"unknown render method {self.method!r}; choose one of {', '.join(RENDER_METHODS)}")
        if not self.level_ratio > 1.0:
            raise DefocusError(f"level_ratio must be > 1, got {self.level_ratio}")
        if not self.blur_scale > 0:
            raise DefocusError(f"blur_scale must be > 0, got {self.blur_scale}")


class ForwardModel(nn.Module):
    """Renders focal stacks from (AIF, depth): the physics shared by synthesis, the loss and refinement.

    Args:
        camera: the thin-lens camera, for :meth:`forward` (depth in metres); optional for
            :meth:`rerender`, which takes the camera as K per image.
        psf, light, method, level_ratio, multires: see :class:`ForwardSpec` and the module docstring.
    """

    def __init__(
        self,
        camera: ThinLensCamera | None = None,
        psf: str = "gaussian",
        light: str = "srgb",
        method: str = "layered",
        level_ratio: float = 1.5,
        multires: bool = False,
        blur_scale: float = 1.0,
    ) -> None:
        super().__init__()
        self.spec = ForwardSpec(psf, light, method, level_ratio, multires, blur_scale)
        self.camera = camera

    # ------------------------------------------------------------------------------------------- constructors
    @classmethod
    def from_family(cls, family: str, camera: ThinLensCamera | None = None, **kwargs: Any) -> "ForwardModel":
        """``"gaussian"`` (Gaussian PSF, sRGB values) or ``"disk"`` (disk PSF, linear light); see :data:`FAMILIES`."""
        if family not in FAMILIES:
            raise DefocusError(f"unknown forward-model family {family!r}; choose one of {', '.join(FAMILIES)}")
        psf, light = FAMILIES[family]
        return cls(camera, psf=psf, light=light, **kwargs)

    @classmethod
    def from_preset(cls, name: str, family: str = "gaussian", **kwargs: Any) -> "ForwardModel":
        """The forward model of a camera preset (``nyuv2``, ``defocusnet``) with a named family."""
        return cls.from_family(family, get_preset(name).camera, **kwargs)

    @classmethod
    def for_synthesis(cls, protocol: str, camera: ThinLensCamera) -> "ForwardModel":
        """How test stacks are rendered: ``paper`` = Gaussian on sRGB values with the exact semantics (fine
        layered levels); ``realistic`` = disk PSF in linear light with occlusion."""
        if protocol == "paper":
            return cls(camera, "gaussian", "srgb", "layered", level_ratio=SYNTHESIS_LEVEL_RATIO, multires=False)
        if protocol == "realistic":
            return cls(camera, "disk", "linear", "occlusion")
        raise DefocusError(f"unknown protocol {protocol!r}; choose one of paper, realistic")

    @classmethod
    def from_config(cls, config: Any, camera: ThinLensCamera | None = None) -> "ForwardModel":
        """From a mapping or object with ``psf`` and optionally ``linear_light``, ``light``, ``method``,
        ``level_ratio``, ``multires`` (the loss section of a training config)."""
        get = config.get if isinstance(config, dict) else (lambda k, d=None: getattr(config, k, d))
        light = get("light", None) or ("linear" if get("linear_light", False) else "srgb")
        return cls(
            camera,
            psf=get("psf", "gaussian"),
            light=light,
            method=get("method", None) or "layered",
            level_ratio=float(get("level_ratio", 1.5)),
            multires=bool(get("multires", False)),
        )

    @classmethod
    def from_stack(cls, stack: Any, family: str = "disk", **kwargs: Any) -> "ForwardModel":
        """The forward model of a :class:`~defocus.data.stack.FocalStack` (its camera) with a named family."""
        from defocus.data.stack import require_camera

        return cls.from_family(family, require_camera(stack), **kwargs)

    def replace(self, **changes: Any) -> "ForwardModel":
        """A copy with some settings (or ``camera``) changed."""
        camera = changes.pop("camera", self.camera)
        spec = replace(self.spec, **changes)
        return ForwardModel(camera, spec.psf, spec.light, spec.method, spec.level_ratio, spec.multires,
                            spec.blur_scale)

    # ------------------------------------------------------------------------------------------- properties
    @property
    def psf(self) -> str:
        return self.spec.psf

    @property
    def light(self) -> str:
        return self.spec.light

    @property
    def method(self) -> str:
        return self.spec.method

    @property
    def linear_light(self) -> bool:
        return self.spec.light == "linear"

    def describe(self) -> dict[str, Any]:
        """The settings as plain values (for reports and ``prediction.json``)."""
        out: dict[str, Any] = {
            "psf": self.psf, "light": self.light, "method": self.method,
            "level_ratio": self.spec.level_ratio, "multires": self.spec.multires, "blur_scale": self.spec.blur_scale,
        }
        if self.camera is not None:
            out["camera"] = self.camera.to_dict()
        return out

    def extra_repr(self) -> str:
        return f"psf={self.psf!r}, light={self.light!r}, method={self.method!r}, camera={self.camera}"

    # ---------------------------------------------------------------------------------------------- rendering
    def forward(
        self, aif: torch.Tensor, depth: torch.Tensor, focus: torch.Tensor, camera: ThinLensCamera | None = None
    ) -> torch.Tensor:
        """Renders the stack (B, N, C, H, W) of ``aif`` (B, C, H, W) at ``depth`` (B, 1, H, W) metres, focused at
        ``focus`` (B, N) or (N,) metres, with this model's camera (or ``camera``)."""
        cam = camera or self.camera
        if cam is None:
            raise DefocusError("this forward model has no camera: pass camera= or build it with one")
        spec = self.spec
        if spec.blur_scale != 1.0:  # a wider effective aperture: the f-number divided by the scale
            cam = ThinLensCamera(cam.focal_length_m, cam.f_number / spec.blur_scale, cam.pixel_size_m)
        if spec.method == "occlusion":
            return render_occlusion(aif, depth, focus, cam, spec.psf, linear_light=self.linear_light)
        img = srgb_to_linear(aif) if self.linear_light else aif
        if spec.method == "exact":
            out = render_exact(img, depth, focus, cam, spec.psf)
        else:
            out = render_layered(img, depth, focus, cam, spec.psf, level_ratio=spec.level_ratio,
                                 multires=spec.multires)
        return linear_to_srgb(out) if self.linear_light else out

    def blur_size(self, inv_depth: torch.Tensor, focus: torch.Tensor, blur_per_dioptre: torch.Tensor) -> torch.Tensor:
        """PSF size (B, N, 1, H, W) in pixels for inverse depth (B, 1, H, W) dioptres and K (B, N)."""
        k = blur_per_dioptre if self.spec.blur_scale == 1.0 else blur_per_dioptre * self.spec.blur_scale
        return blur_from_inverse_depth(inv_depth, focus, k, self.psf)

    def rerender(
        self, aif: torch.Tensor, inv_depth: torch.Tensor, focus: torch.Tensor, blur_per_dioptre: torch.Tensor
    ) -> Rerendering:
        """The ``layered`` re-rendering used by the loss and refinement, with the camera given per image as K.

        Args:
            aif: (B, 3, H, W) in [0, 1]; inv_depth: (B, 1, H, W) dioptres; focus, blur_per_dioptre: (B, N).
        """
        if self.method != "layered":
            raise DefocusError(f"re-rendering for the loss uses the layered method, not {self.method!r}")
        blur = self.blur_size(inv_depth, focus, blur_per_dioptre)
        img = srgb_to_linear(aif) if self.linear_light else aif
        out = render_layered_from_blur(img, blur, self.psf, level_ratio=self.spec.level_ratio,
                                       multires=self.spec.multires)
        return Rerendering(linear_to_srgb(out) if self.linear_light else out, blur)
