"""The sensor and codec behind the lens: what turns the irradiance a :class:`~defocus.optics.forward.ForwardModel`
renders into the stored image of a camera.

A recorded stack is ``sensor(forward(aif, depth, focus))``, the two halves of the physics kept apart as in
DeepInverse (an operator followed by a noise model): the forward model is the optics (PSF, light model, renderer),
the :class:`SensorModel` everything after it, in this order:

1. in **linear light** (only when one of these is set; the rendered sRGB values are decoded first): a radial
   **vignetting** fall-off ``1 − vignetting·ρ²`` (ρ = 1 at the image corner), a **per-frame exposure** gain
   ``exp(U(−exposure_jitter, exposure_jitter))`` (phones auto-expose every frame), **signal-dependent noise**
   (Poisson–Gaussian: variance ``shot_noise·x`` on the linear value x), then the **tone curve** that stores it: the
   sRGB curve, or the power law x^(1/tone_gamma);
2. **exposure** gain (1 = as rendered);
3. additive Gaussian **noise** of standard deviation ``noise_std`` on the [0, 1] sRGB values, drawn from a seeded
   generator (the same seed gives the same noise);
4. the camera's own **image processing** (ISP), each frame on its own, as phones and camera JPEGs do: an
   edge-preserving **denoise** (a self-guided filter, He et al. 2013, of radius :data:`DENOISE_RADIUS` and
   regulariser ``denoise``²: regions whose local standard deviation is below ``denoise`` are flattened to their local
   mean, stronger structure is kept) and an unsharp-mask **sharpen** of amount ``sharpen`` (σ 1 px). Denoising
   leaves low-frequency blotches that differ from frame to frame, and sharpening amplifies what is left: on plain
   surfaces the focus cue is gone while the image still has some "texture";
5. **clamp** to [0, 1];
6. **quantisation** to ``bits``-bit levels, rounded half up (8 by default, as stored images are; ``None`` keeps
   floats);
7. an optional **JPEG** round trip of every frame at ``jpeg_quality`` (after 8-bit quantisation).

:meth:`SensorModel.apply` is the one place where noise, clamping, quantisation and JPEG happen; synthesis
(:mod:`defocus.data.synthesis`) calls it for every stack it renders.
"""

from __future__ import annotations

import io
import math
from dataclasses import asdict, dataclass, fields, replace
from typing import Any, Mapping

import numpy as np
import torch

from defocus.color import linear_to_srgb, srgb_to_linear, to_uint8
from defocus.errors import InputError

#: Largest quantisation depth (bits) a sensor may have.
MAX_BITS = 16
#: Window radius (pixels) of the ISP's edge-preserving denoise, and σ (pixels) of its sharpening blur.
DENOISE_RADIUS = 2
SHARPEN_SIGMA = 1.0


# The ISP's two filters are written here rather than taken from defocus.filters (box_filter, guided_filter): the
# sensor is in the optics layer, below filters, and may not import it (tests/test_architecture.py). They also differ
# at the border: replicated pixels here, clipped windows there.
def _box_mean(x: torch.Tensor, radius: int) -> torch.Tensor:
    """Mean over (2 radius + 1)² windows of (B, C, H, W), edges replicated."""
    k = 2 * radius + 1
    return torch.nn.functional.avg_pool2d(torch.nn.functional.pad(x, (radius,) * 4, mode="replicate"), k, stride=1)


def guided_denoise(frames: torch.Tensor, strength: float, radius: int = DENOISE_RADIUS) -> torch.Tensor:
    """Edge-preserving smoothing of every channel of (..., C, H, W) by itself as the guide (the guided filter of He,
    Sun and Tang, TPAMI 2013, with ε = ``strength``²): windows whose standard deviation is well below ``strength``
    become their mean, windows well above it are kept. ``strength`` in the images' units (0: returned as is)."""
    if strength <= 0:
        return frames
    shape = frames.shape
    x = frames.reshape(-1, 1, *shape[-2:])
    mean = _box_mean(x, radius)
    var = (_box_mean(x * x, radius) - mean * mean).clamp_min(0.0)
    a = var / (var + strength * strength)
    b = mean - a * mean
    return (_box_mean(a, radius) * x + _box_mean(b, radius)).reshape(shape)


def unsharp_mask(frames: torch.Tensor, amount: float, sigma: float = SHARPEN_SIGMA) -> torch.Tensor:
    """``frames + amount · (frames − Gaussian blur of σ sigma px)`` on (..., C, H, W) (0: returned as is)."""
    if amount <= 0:
        return frames
    shape = frames.shape
    x = frames.reshape(-1, 1, *shape[-2:])
    r = max(1, int(math.ceil(3.0 * sigma)))
    t = torch.arange(-r, r + 1, dtype=x.dtype, device=x.device)
    g = torch.exp(-0.5 * (t / sigma) ** 2)
    g = g / g.sum()
    blur = torch.nn.functional.pad(x, (r, r, r, r), mode="replicate")
    blur = torch.nn.functional.conv2d(blur, g.view(1, 1, 1, -1))
    blur = torch.nn.functional.conv2d(blur, g.view(1, 1, -1, 1))
    return (x + amount * (x - blur)).reshape(shape)


def jpeg_round_trip(stack: torch.Tensor, quality: int) -> torch.Tensor:
    """Every frame of ``stack`` (..., 3, H, W) in [0, 1] encoded as a JPEG of ``quality`` and decoded again
    (through 8-bit values, rounded half up)."""
    from PIL import Image

    flat = to_uint8(stack).reshape(-1, *stack.shape[-3:])
    out = []
    for frame in flat:
        buf = io.BytesIO()
        Image.fromarray(frame.permute(1, 2, 0).numpy()).save(buf, format="JPEG", quality=int(quality))
        buf.seek(0)
        out.append(torch.from_numpy(np.array(Image.open(buf).convert("RGB"))).permute(2, 0, 1))
    return (torch.stack(out).float() / 255.0).reshape(stack.shape)


def _number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


@dataclass(frozen=True)
class SensorModel:
    """What the sensor and the codec do to a rendered stack (see the module docstring for the order).

    Args:
        noise_std: standard deviation of additive Gaussian noise on the [0, 1] values (0 = none).
        bits: quantisation depth, rounded half up (``None``: no quantisation, float values).
        jpeg_quality: quality (1-100) of a JPEG round trip of every frame, ``None`` for none; needs 8 bits.
        exposure: gain applied to the rendered values before the noise.
        clamp: clip to [0, 1] after the noise (quantisation clips anyway).
        vignetting: relative linear-light fall-off at the image corner (0 = none, 0.4 = 40 % darker corners).
        exposure_jitter: half-width of the per-frame log gain in linear light (0 = every frame alike).
        shot_noise: signal-dependent noise, variance ``shot_noise·x`` on the linear value x (0 = none).
        tone_gamma: the tone curve that stores linear light: ``None`` the sRGB curve, else x^(1/tone_gamma).
        denoise: the ISP's edge-preserving denoise, the local standard deviation (in [0, 1] values) below which
            structure is flattened (0 = none; :func:`guided_denoise`).
        sharpen: the ISP's unsharp-mask amount (0 = none; :func:`unsharp_mask`).
    """

    noise_std: float = 0.0
    bits: int | None = 8
    jpeg_quality: int | None = None
    exposure: float = 1.0
    clamp: bool = True
    vignetting: float = 0.0
    exposure_jitter: float = 0.0
    shot_noise: float = 0.0
    tone_gamma: float | None = None
    denoise: float = 0.0
    sharpen: float = 0.0

    def __post_init__(self) -> None:
        if not _number(self.noise_std) or self.noise_std < 0:
            raise InputError(f"the sensor noise must be a finite number >= 0, got {self.noise_std!r}",
                             field="noise_std")
        if self.bits is not None and (not isinstance(self.bits, int) or isinstance(self.bits, bool)
                                      or not 1 <= self.bits <= MAX_BITS):
            raise InputError(f"the quantisation depth must be a whole number of bits 1-{MAX_BITS} or none, got "
                             f"{self.bits!r}", field="bits")
        if self.jpeg_quality is not None:
            if (not isinstance(self.jpeg_quality, int) or isinstance(self.jpeg_quality, bool)
                    or not 1 <= self.jpeg_quality <= 100):
                raise InputError(f"the JPEG quality must be a whole number 1-100 or none, got {self.jpeg_quality!r}",
                                 field="jpeg_quality")
            if self.bits != 8:
                raise InputError(f"a JPEG round trip stores 8-bit values; the sensor has {self.bits} bits",
                                 field="bits")
        if not _number(self.exposure) or self.exposure <= 0:
            raise InputError(f"the exposure gain must be a finite number > 0, got {self.exposure!r}",
                             field="exposure")
        if not isinstance(self.clamp, bool):
            raise InputError(f"clamp must be true or false, got {self.clamp!r}", field="clamp")
        if not _number(self.vignetting) or not 0 <= self.vignetting < 1:
            raise InputError(f"the vignetting must be a number in [0, 1), got {self.vignetting!r}", field="vignetting")
        if not _number(self.exposure_jitter) or not 0 <= self.exposure_jitter <= 1:
            raise InputError(f"the exposure jitter must be a number in [0, 1] (a log gain), got "
                             f"{self.exposure_jitter!r}", field="exposure_jitter")
        if not _number(self.shot_noise) or self.shot_noise < 0:
            raise InputError(f"the shot noise must be a finite number >= 0, got {self.shot_noise!r}",
                             field="shot_noise")
        if self.tone_gamma is not None and (not _number(self.tone_gamma) or not 1 <= self.tone_gamma <= 4):
            raise InputError(f"the tone gamma must be a number in [1, 4] or none, got {self.tone_gamma!r}",
                             field="tone_gamma")
        if not _number(self.denoise) or not 0 <= self.denoise <= 0.5:
            raise InputError(f"the denoise strength must be a number in [0, 0.5], got {self.denoise!r}",
                             field="denoise")
        if not _number(self.sharpen) or not 0 <= self.sharpen <= 5:
            raise InputError(f"the sharpening amount must be a number in [0, 5], got {self.sharpen!r}",
                             field="sharpen")

    @property
    def linear_stage(self) -> bool:
        """Whether step 1 (linear light: vignetting, per-frame exposure, shot noise, tone curve) does anything."""
        return bool(self.vignetting or self.exposure_jitter or self.shot_noise or self.tone_gamma is not None)

    # ------------------------------------------------------------------------------------------ construction
    def to_dict(self) -> dict[str, Any]:
        """The fields as plain values; the ISP fields only where set (so that records written before they existed
        read the same)."""
        out = asdict(self)
        for name in ("denoise", "sharpen"):
            if not out[name]:
                del out[name]
        return out

    @classmethod
    def from_dict(cls, values: Mapping[str, Any]) -> "SensorModel":
        """From a mapping of the field names (unknown keys are an :class:`~defocus.errors.InputError`)."""
        known = {f.name for f in fields(cls)}
        unknown = [k for k in values if k not in known]
        if unknown:
            raise InputError(f"unknown sensor setting {unknown[0]!r}; known: {', '.join(sorted(known))}",
                             field=str(unknown[0]))
        return cls(**dict(values))

    def replace(self, **changes: Any) -> "SensorModel":
        return replace(self, **changes)

    @property
    def levels(self) -> int | None:
        """Number of steps between 0 and 1 (2**bits − 1), ``None`` without quantisation."""
        return None if self.bits is None else 2**self.bits - 1

    # ---------------------------------------------------------------------------------------------- recording
    def apply(self, stack: torch.Tensor, seed: int | None = None, generator: torch.Generator | None = None
              ) -> torch.Tensor:
        """The recorded version of a rendered ``stack`` (any shape ending in (3, H, W), values in about [0, 1]).

        The noise is drawn on the CPU from ``generator``, or from a generator seeded with ``seed`` (0 when neither
        is given), so that a seed gives the same stack on every machine. Returns a new float tensor; no gradient.
        """
        gen = generator if generator is not None else torch.Generator().manual_seed(int(seed or 0))
        with torch.no_grad():
            out = self._linear_stage(stack, gen) if self.linear_stage else stack
            out = out if self.exposure == 1.0 else out * self.exposure
            if self.noise_std > 0:
                out = out + self.noise_std * torch.randn(stack.shape, generator=gen).to(stack.device)
            if self.denoise or self.sharpen:
                out = unsharp_mask(guided_denoise(out, self.denoise), self.sharpen)
            if self.clamp:
                out = out.clamp(0.0, 1.0)
            if self.levels is not None:
                levels = float(self.levels)
                out = torch.floor(out.clamp(0.0, 1.0) * levels + 0.5) / levels
            if self.jpeg_quality is not None:
                out = jpeg_round_trip(out.cpu(), self.jpeg_quality).to(stack.device)
        return out

    __call__ = apply

    def _linear_stage(self, stack: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
        """Step 1 of the module docstring on (..., 3, H, W) sRGB values: the stored values of that linear light."""
        lin = srgb_to_linear(stack.clamp(0.0, 1.0))
        h, w = stack.shape[-2:]
        if self.vignetting:
            yy = torch.linspace(-1.0, 1.0, h, device=stack.device)[:, None]
            xx = torch.linspace(-1.0, 1.0, w, device=stack.device)[None, :]
            lin = lin * (1.0 - self.vignetting * (yy * yy + xx * xx) / 2.0)
        if self.exposure_jitter:
            frames = stack.shape[:-3]
            log_gain = (torch.rand(frames, generator=gen) * 2.0 - 1.0) * self.exposure_jitter
            lin = lin * torch.exp(log_gain).to(stack.device)[..., None, None, None]
        if self.shot_noise:
            noise = torch.randn(stack.shape, generator=gen).to(stack.device)
            lin = lin + torch.sqrt(self.shot_noise * lin.clamp_min(0.0)) * noise
        lin = lin.clamp(0.0, 1.0)
        return linear_to_srgb(lin) if self.tone_gamma is None else lin ** (1.0 / self.tone_gamma)
