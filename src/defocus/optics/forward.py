"""The forward model as one object: camera + :class:`ForwardSpec` (PSF family, light model, rendering method).

Synthesis, the self-supervised loss and test-time refinement all take a :class:`ForwardModel` instead of loose
strings and booleans, and configs, batches, protocols and ``prediction.json`` all describe it with one frozen,
hashable :class:`ForwardSpec`, so that "which blur, in which light, rendered how" is decided in one place:

* **PSF family** ``psf``: a name of :data:`defocus.optics.psf.PSF_NAMES` (``"gaussian"``, σ = c/4p, the paper's;
  ``"disk"``, radius c/2p; ``"gennorm"``), see :mod:`defocus.optics.psf`.
* **Light model** ``light``: ``"srgb"`` blurs the stored (sRGB-encoded) values, as the paper does; ``"linear"``
  decodes to linear light, blurs, and encodes again, as a real lens and sensor do.
* **Method** ``method``: ``"exact"`` (test oracle), ``"layered"`` (fast, differentiable in depth; the loss and
  refinement) or ``"occlusion"`` (back-to-front layers; realistic synthesis), see :mod:`defocus.optics.render`;
  ``level_ratio`` and ``multires`` tune the layered renderer.
* **Blur scale** ``blur_scale``: an effective aperture. It multiplies the aperture diameter A = f/N, and with it every
  CoC and K = A·s/p; a camera-based rendering (:meth:`ForwardModel.forward`) uses the camera of aperture
  ``blur_scale``·A (:meth:`ForwardSpec.effective_camera`), a K-based one (:meth:`ForwardModel.rerender`,
  :meth:`ForwardModel.blur_size`) the K of that camera, ``blur_scale``·K (:meth:`ForwardSpec.effective_k`).
* **Signed aberration** ``near_psf``: the PSF of points *nearer* than the focus distance, where it differs from
  ``psf`` (which then applies behind focus only). Spherical aberration shows a bright-rimmed disk on one side of focus
  and a bright-cored one on the other (``psf="ring", near_psf="core"`` or the reverse); a symmetric family cannot
  re-render both sides at once. Each side is rendered with its own PSF and every pixel of every frame takes the
  side its depth is on (as :func:`defocus.data.synthesis.synthesize` does); None = one PSF on both sides.

The sensor behind the lens (noise, quantisation, JPEG, exposure) is :class:`defocus.optics.sensor.SensorModel`; the
synthesis protocols that pair the two are :data:`defocus.data.synthesis.PROTOCOLS`.

Two named families cover what the package uses: ``"gaussian"`` = Gaussian PSF on sRGB values (matches the ``paper``
protocol) and ``"disk"`` = disk PSF in linear light (matches the ``realistic`` protocol and, by default, real
lenses); see :data:`FAMILIES` and :meth:`ForwardModel.from_family`.

Shapes: aif (B, 3, H, W) in [0, 1]; depth (B, 1, H, W) metres or inverse depth (B, 1, H, W) dioptres; focus (B, N)
metres; blur_per_dioptre K (B, N) pixels per dioptre → stack (B, N, 3, H, W).
"""

from __future__ import annotations

import math
import numbers
from dataclasses import asdict, dataclass, fields
from typing import Any, ClassVar, Mapping, NamedTuple

import torch
from torch import nn

from defocus.color import linear_to_srgb, srgb_to_linear
from defocus.errors import DefocusError, InputError
from defocus.optics import psf as _psf
from defocus.optics.camera import ThinLensCamera, get_preset
from defocus.optics.render import (
    RENDER_METHODS,
    blur_from_inverse_depth,
    render_exact,
    render_layered,
    render_layered_from_blur,
    render_occlusion,
)

LIGHT_MODELS: tuple[str, ...] = ("srgb", "linear")

#: Largest effective-aperture factor: ten times the nominal aperture is already no lens's error (and a factor of
#: 1e30 would ask the renderers for kernels wider than any memory).
MAX_BLUR_SCALE = 10.0

#: Named (PSF, light) families: the paper's Gaussian on sRGB values, and a disk in linear light.
FAMILIES: dict[str, tuple[str, str]] = {"gaussian": ("gaussian", "srgb"), "disk": ("disk", "linear")}


class Rerendering(NamedTuple):
    """What the forward model gives back for a prediction: the stack and the PSF size behind it."""

    stack: torch.Tensor  # (B, N, 3, H, W)
    blur: torch.Tensor  # (B, N, 1, H, W) σ or radius in pixels


def _is_number(value: Any) -> bool:
    return isinstance(value, numbers.Real) and not isinstance(value, bool)


@dataclass(frozen=True)
class ForwardSpec:
    """The one description of a forward model, without the camera: what configs, training batches, the synthesis
    protocols and ``prediction.json`` record. Frozen and hashable (a dictionary key); invalid values are an
    :class:`~defocus.errors.InputError` whose ``field`` names the setting."""

    psf: str = "gaussian"
    light: str = "srgb"
    method: str = "layered"
    level_ratio: float = 1.5
    # Half-resolution blur of wide Gaussian levels (faster, 0.03 % of the mean value less accurate).
    multires: bool = False
    # Multiplies the aperture diameter, hence every blur (an effective aperture: real apertures are not exactly
    # their EXIF value). See the module docstring.
    blur_scale: float = 1.0
    # The PSF of points nearer than the focus distance where it differs from ``psf`` (signed spherical aberration;
    # module docstring); None, or the same name as ``psf``, is one PSF on both sides of focus.
    near_psf: str | None = None

    #: What the camera does (PSF shape, light model, effective aperture), as opposed to how the stack is rendered
    #: (method, level_ratio, multires): the part that the data decide and the loss's forward model takes from them.
    LENS_FIELDS: ClassVar[tuple[str, ...]] = ("psf", "light", "blur_scale", "near_psf")

    def __post_init__(self) -> None:
        if not isinstance(self.psf, str):
            raise InputError(f"the PSF must be a name, one of {', '.join(_psf.PSF_NAMES)}; got {self.psf!r}",
                             field="psf")
        try:
            _psf.check_psf(self.psf)
        except DefocusError as exc:
            raise InputError(str(exc), field="psf") from None
        if self.light not in LIGHT_MODELS:
            raise InputError(f"unknown light model {self.light!r}; choose one of {', '.join(LIGHT_MODELS)}",
                             field="light")
        if self.method not in RENDER_METHODS:
            raise InputError(f"unknown render method {self.method!r}; choose one of {', '.join(RENDER_METHODS)}",
                             field="method")
        if not _is_number(self.level_ratio) or not math.isfinite(self.level_ratio) or not self.level_ratio > 1.0:
            raise InputError(f"level_ratio must be a finite number > 1, got {self.level_ratio!r}", field="level_ratio")
        if not isinstance(self.multires, bool):
            raise InputError(f"multires must be true or false, got {self.multires!r}", field="multires")
        if not _is_number(self.blur_scale) or not 0 < self.blur_scale <= MAX_BLUR_SCALE:
            raise InputError(f"blur_scale must be a number in (0, {MAX_BLUR_SCALE:g}], got {self.blur_scale!r}",
                             field="blur_scale")
        for key in ("level_ratio", "blur_scale"):  # plain floats: 1 and 1.0 (or numpy's) are one key
            object.__setattr__(self, key, float(getattr(self, key)))
        if self.near_psf is not None:
            if not isinstance(self.near_psf, str):
                raise InputError(f"near_psf must be a PSF name or null, got {self.near_psf!r}", field="near_psf")
            try:
                _psf.check_psf(self.near_psf)
            except DefocusError as exc:
                raise InputError(str(exc), field="near_psf") from None
            if self.near_psf == self.psf:  # one PSF on both sides: the one spelling, so that equal specs are equal
                object.__setattr__(self, "near_psf", None)

    @property
    def signed(self) -> bool:
        """Whether points in front of focus have another PSF than those behind it."""
        return self.near_psf is not None

    def describe_lens(self) -> str:
        """``psf`` or ``far/near`` for a signed aberration (``ring/core``: bright rim behind focus, core in front)."""
        return f"{self.psf}/{self.near_psf}" if self.signed else self.psf

    # ---------------------------------------------------------------------------------------------- dictionaries
    @staticmethod
    def upgrade_dict(values: Mapping[str, Any]) -> dict[str, Any]:
        """``values`` with the key of older configs, ``linear_light: true/false``, read as ``light``
        (``linear``/``srgb``); both given and disagreeing is an :class:`~defocus.errors.InputError`."""
        out = dict(values)
        if "linear_light" in out:
            flag = out.pop("linear_light")
            if not isinstance(flag, bool):
                raise InputError(f"linear_light must be true or false, got {flag!r}", field="linear_light")
            light = "linear" if flag else "srgb"
            if out.get("light", light) != light:
                raise InputError(f"light {out['light']!r} contradicts linear_light {flag}", field="light")
            out["light"] = light
        return out

    @classmethod
    def from_dict(cls, values: Mapping[str, Any]) -> "ForwardSpec":
        """From a mapping of the field names, missing ones at their defaults (configs, JSON). The old key
        ``linear_light`` is read as ``light``; an unknown key is an :class:`~defocus.errors.InputError`."""
        if isinstance(values, ForwardSpec):
            return values
        if not isinstance(values, Mapping):
            raise InputError(f"a forward model must be a mapping of {', '.join(f.name for f in fields(cls))}; "
                             f"got {values!r}")
        values = cls.upgrade_dict(values)
        known = [f.name for f in fields(cls)]
        for key in values:
            if key not in known:
                raise InputError(f"unknown forward-model setting {key!r}; known: {', '.join(known)}", field=str(key))
        return cls(**values)

    def to_dict(self) -> dict[str, Any]:
        """The settings as plain values (``from_dict`` reads them back); ``near_psf`` only when it is set, so that
        every symmetric model reads and writes as it did before signed aberration existed."""
        out = asdict(self)
        if out["near_psf"] is None:
            del out["near_psf"]
        return out

    def replace(self, **changes: Any) -> "ForwardSpec":
        """A copy with some settings changed (``linear_light`` is read as ``light``)."""
        if not changes:
            return self
        return ForwardSpec.from_dict({**self.to_dict(), **self.upgrade_dict(changes)})

    def lens(self) -> dict[str, Any]:
        """The settings that describe the camera, :attr:`LENS_FIELDS`, as a mapping (``near_psf`` only when set)."""
        return {k: getattr(self, k) for k in self.LENS_FIELDS if k != "near_psf" or self.signed}

    def with_lens_of(self, other: "ForwardSpec") -> "ForwardSpec":
        """This renderer (method, level ratio, multires) with the camera of ``other`` (PSF, light, blur scale,
        near-side PSF)."""
        return self.replace(**{**other.lens(), "near_psf": other.near_psf})

    @property
    def linear_light(self) -> bool:
        return self.light == "linear"

    # ------------------------------------------------------------------------------------------------ blur scale
    def effective_camera(self, camera: ThinLensCamera) -> ThinLensCamera:
        """The camera whose aperture diameter is ``blur_scale`` times ``camera``'s: the f-number divided by it."""
        if self.blur_scale == 1.0:
            return camera
        return ThinLensCamera(camera.focal_length_m, camera.f_number / self.blur_scale, camera.pixel_size_m)

    def effective_k(self, blur_per_dioptre: torch.Tensor) -> torch.Tensor:
        """K (pixels per dioptre) of the effective camera: ``blur_scale`` times K (K = A·s/p is linear in A)."""
        return blur_per_dioptre if self.blur_scale == 1.0 else blur_per_dioptre * self.blur_scale


class ForwardModel(nn.Module):
    """Renders focal stacks from (AIF, depth): the physics shared by synthesis, the loss and refinement.

    ``ForwardModel(camera, spec=ForwardSpec(...))`` (or :meth:`from_spec`), or with the settings as keywords,
    ``ForwardModel(camera, psf="disk", light="linear", blur_scale=1.2)``; keywords given with ``spec`` replace its
    fields.

    Args:
        camera: the thin-lens camera, for :meth:`forward` (depth in metres); optional for
            :meth:`rerender`, which takes the camera as K per image.
        psf, light, method, level_ratio, multires, blur_scale, near_psf: see :class:`ForwardSpec` and the module
            docstring.
        spec: all of them at once.
    """

    def __init__(
        self,
        camera: ThinLensCamera | None = None,
        psf: str | None = None,
        light: str | None = None,
        method: str | None = None,
        level_ratio: float | None = None,
        multires: bool | None = None,
        blur_scale: float | None = None,
        *,
        spec: ForwardSpec | None = None,
        near_psf: str | None = None,
    ) -> None:
        super().__init__()
        given = {"psf": psf, "light": light, "method": method, "level_ratio": level_ratio, "multires": multires,
                 "blur_scale": blur_scale, "near_psf": near_psf}
        base = spec if spec is not None else ForwardSpec()
        if not isinstance(base, ForwardSpec):
            raise DefocusError(f"spec must be a ForwardSpec, got {type(base).__name__}")
        self.spec: ForwardSpec = base.replace(**{k: v for k, v in given.items() if v is not None})
        self.camera = camera

    # ------------------------------------------------------------------------------------------- constructors
    @classmethod
    def from_spec(cls, spec: ForwardSpec | Mapping[str, Any], camera: ThinLensCamera | None = None
                  ) -> "ForwardModel":
        """The forward model of ``spec`` (a :class:`ForwardSpec` or its dictionary) with ``camera``."""
        return cls(camera, spec=ForwardSpec.from_dict(spec))

    @classmethod
    def from_family(cls, family: str, camera: ThinLensCamera | None = None, **kwargs: Any) -> "ForwardModel":
        """``"gaussian"`` (Gaussian PSF, sRGB values) or ``"disk"`` (disk PSF, linear light); see :data:`FAMILIES`."""
        if family not in FAMILIES:
            raise InputError(f"unknown forward-model family {family!r}; choose one of {', '.join(FAMILIES)}",
                             field="psf")
        psf, light = FAMILIES[family]
        return cls(camera, psf=psf, light=light, **kwargs)

    @classmethod
    def from_preset(cls, name: str, family: str = "gaussian", **kwargs: Any) -> "ForwardModel":
        """The forward model of a camera preset (``nyuv2``, ``defocusnet``) with a named family."""
        return cls.from_family(family, get_preset(name).camera, **kwargs)

    @classmethod
    def from_config(cls, config: Any, camera: ThinLensCamera | None = None) -> "ForwardModel":
        """From a :class:`ForwardSpec`, a mapping of its fields (the old ``linear_light`` key is read as ``light``)
        or an object with a ``forward`` spec (a :class:`~defocus.losses.selfsup.LossConfig`); every field is kept,
        ``blur_scale`` included."""
        if not isinstance(config, (ForwardSpec, Mapping)):
            config = getattr(config, "forward", config)
        if not isinstance(config, (ForwardSpec, Mapping)):
            raise DefocusError(f"cannot read a forward model from a {type(config).__name__}")
        return cls.from_spec(config, camera)

    def replace(self, **changes: Any) -> "ForwardModel":
        """A copy with some settings (or ``camera``) changed."""
        camera = changes.pop("camera", self.camera)
        return ForwardModel(camera, spec=self.spec.replace(**changes))

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
        return self.spec.linear_light

    def describe(self) -> dict[str, Any]:
        """The settings as plain values (for reports and ``prediction.json``; :meth:`ForwardSpec.from_dict` reads
        them back, ignoring ``camera``)."""
        out: dict[str, Any] = self.spec.to_dict()
        if self.camera is not None:
            out["camera"] = self.camera.to_dict()
        return out

    @property
    def near_psf(self) -> str | None:
        return self.spec.near_psf

    def extra_repr(self) -> str:
        near = f", near_psf={self.near_psf!r}" if self.near_psf is not None else ""
        return f"psf={self.psf!r}{near}, light={self.light!r}, method={self.method!r}, camera={self.camera}"

    # ---------------------------------------------------------------------------------------------- rendering
    def forward(
        self, aif: torch.Tensor, depth: torch.Tensor, focus: torch.Tensor, camera: ThinLensCamera | None = None
    ) -> torch.Tensor:
        """Renders the stack (B, N, C, H, W) of ``aif`` (B, C, H, W) at ``depth`` (B, 1, H, W) metres, focused at
        ``focus`` (B, N) or (N,) metres, with this model's camera (or ``camera``) at its effective aperture."""
        cam = camera or self.camera
        if cam is None:
            raise DefocusError("this forward model has no camera: pass camera= or build it with one")
        spec = self.spec
        cam = spec.effective_camera(cam)
        out = self._render_depth(aif, depth, focus, cam, spec.psf)
        if spec.signed:
            near = self._render_depth(aif, depth, focus, cam, spec.near_psf)
            fd = focus if focus.dim() == 2 else focus[None].expand(aif.shape[0], -1)
            in_front = depth[:, None] < fd.to(depth.dtype)[:, :, None, None, None]  # (B, N, 1, H, W)
            out = torch.where(in_front, near, out)
        return out

    def _render_depth(self, aif: torch.Tensor, depth: torch.Tensor, focus: torch.Tensor, cam: ThinLensCamera,
                      psf: str) -> torch.Tensor:
        """The stack of one PSF on both sides of focus, by this model's method and light model."""
        spec = self.spec
        if spec.method == "occlusion":
            return render_occlusion(aif, depth, focus, cam, psf, linear_light=self.linear_light)
        img = srgb_to_linear(aif) if self.linear_light else aif
        if spec.method == "exact":
            out = render_exact(img, depth, focus, cam, psf)
        else:
            out = render_layered(img, depth, focus, cam, psf, level_ratio=spec.level_ratio, multires=spec.multires)
        return linear_to_srgb(out) if self.linear_light else out

    def blur_size(self, inv_depth: torch.Tensor, focus: torch.Tensor, blur_per_dioptre: torch.Tensor) -> torch.Tensor:
        """PSF size (B, N, 1, H, W) in pixels for inverse depth (B, 1, H, W) dioptres and K (B, N) of the nominal
        camera (the effective aperture is applied here)."""
        far, near = self._side_blurs(inv_depth, focus, blur_per_dioptre)
        return far if near is None else torch.where(self._in_front(inv_depth, focus), near, far)

    def _side_blurs(self, inv_depth: torch.Tensor, focus: torch.Tensor, blur_per_dioptre: torch.Tensor
                    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """The PSF sizes (B, N, 1, H, W) of every pixel under ``psf`` and, for a signed model, under ``near_psf``
        (else None), at the effective aperture."""
        k = self.spec.effective_k(blur_per_dioptre)
        far = blur_from_inverse_depth(inv_depth, focus, k, self.psf)
        near = blur_from_inverse_depth(inv_depth, focus, k, self.spec.near_psf) if self.spec.signed else None
        return far, near

    @staticmethod
    def _in_front(inv_depth: torch.Tensor, focus: torch.Tensor) -> torch.Tensor:
        """(B, N, 1, H, W): the pixel is nearer than frame n's focus distance (inverse depth above 1/fd)."""
        return inv_depth[:, None] > (1.0 / focus).to(inv_depth.dtype)[:, :, None, None, None]

    def rerender(
        self, aif: torch.Tensor, inv_depth: torch.Tensor, focus: torch.Tensor, blur_per_dioptre: torch.Tensor
    ) -> Rerendering:
        """The ``layered`` re-rendering used by the loss and refinement, with the camera given per image as K.

        Args:
            aif: (B, 3, H, W) in [0, 1]; inv_depth: (B, 1, H, W) dioptres; focus, blur_per_dioptre: (B, N).
        """
        if self.method != "layered":
            raise DefocusError(f"re-rendering for the loss uses the layered method, not {self.method!r}")
        blur, near_blur = self._side_blurs(inv_depth, focus, blur_per_dioptre)
        img = srgb_to_linear(aif) if self.linear_light else aif
        out = render_layered_from_blur(img, blur, self.psf, level_ratio=self.spec.level_ratio,
                                       multires=self.spec.multires)
        if near_blur is not None:
            # Each side of focus by its own PSF, each rendered whole with that PSF's sizes (as forward() renders
            # the two and keeps, per pixel and frame, the side the pixel's depth is on).
            near = render_layered_from_blur(img, near_blur, self.spec.near_psf, level_ratio=self.spec.level_ratio,
                                            multires=self.spec.multires)
            in_front = self._in_front(inv_depth, focus)
            out, blur = torch.where(in_front, near, out), torch.where(in_front, near_blur, blur)
        return Rerendering(linear_to_srgb(out) if self.linear_light else out, blur)
