"""The randomised camera protocol: every test stack from its own random camera, as real captures differ.

The two synthesis protocols (``paper``, ``realistic``) render every stack with the presets' lenses, five frames in
focus order and one PSF; a result tuned to them need not survive another camera. :func:`random_capture` draws,
per seed, everything a real capture may change (the distribution is its own, drawn from a seed stream that the
training randomisation, :meth:`~defocus.data.synthesis.SynthesisVariant.random`, never uses):

* **camera**: focal length 4-60 mm and f-number 1.4-11 (log-uniform), and a pixel pitch that gives a blur per
  dioptre K of 4-60 px/D at the rendered size (log-uniform): phone, compact and large-sensor cameras alike;
* **frames**: 2-10 of them, focused at dioptres spread (jittered) over 70-110 % of the scene's inverse-depth range,
  written in a random file order;
* **lens**: a PSF of the registry (Gaussian, generalised Gaussian, disk, ring, core), a third of the time signed
  spherical aberration instead (ring on one side of focus, core on the other); sRGB or linear light; occlusion or
  not; an effective aperture 0.7-1.4x the nominal one; longitudinal chromatic aberration of 0.02-0.25 dioptres
  40 % of the time;
* **sensor**: additive noise σ 0-0.012; signal-dependent noise, vignetting 0-0.5, per-frame exposure jitter up to
  ±20 % (log gain) and a power-law tone curve of γ 1.6-2.8 each about 40 % of the time; a JPEG round trip at
  quality 60-95 60 % of the time;
* **image processing** (ISP), half of the captures: an edge-preserving denoise of 1.5-4x the capture's noise level
  (at least 0.004), then, 70 % of those, unsharp-mask sharpening of amount 0.3-1.5, as phone and camera JPEG
  pipelines do (:class:`~defocus.optics.sensor.SensorModel`'s ``denoise`` and ``sharpen``). It is drawn from a seed
  stream of its own, so every other draw of a seed is what it was before the ISP was added; ``isp=False`` gives
  those captures exactly (the protocol of the figures recorded before it).

:func:`capture_stack` renders an RGB-D pair (or any hole-free scene) through a capture into a
:class:`~defocus.data.stack.FocalStack` with ground truth, in the capture's file order.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np
import torch

from defocus.data.holes import fill_depth_holes
from defocus.data.stack import FocalStack
from defocus.data.synthesis import SYNTHESIS_LEVEL_RATIO, SynthesisVariant, synthesize_variant
from defocus.errors import InputError
from defocus.optics import psf as _psf
from defocus.optics.camera import MIN_PIXEL_SIZE_M, ThinLensCamera
from defocus.optics.forward import ForwardSpec
from defocus.optics.sensor import SensorModel

#: The seed stream of the randomised camera protocol (never used by training).
CAPTURE_SEED_TAG = 170_017
#: The seed stream of its image-processing draws (separate, so that adding them changed no other draw).
ISP_SEED_TAG = 170_018


@dataclass(frozen=True)
class Capture:
    """One random capture: the camera, the focus distances in file order (metres) and the imaging pipeline."""

    camera: ThinLensCamera
    focus_m: tuple[float, ...]
    variant: SynthesisVariant
    blur_per_dioptre: float

    def describe(self) -> dict[str, Any]:
        """Plain values for reports (the camera, the frames, the lens and the sensor)."""
        return {"camera": self.camera.to_dict(), "focus_m": [round(f, 4) for f in self.focus_m],
                "frames": len(self.focus_m), "blur_per_dioptre": round(self.blur_per_dioptre, 2),
                **self.variant.to_dict()}


def _log_uniform(rng: np.random.Generator, lo: float, hi: float) -> float:
    return float(np.exp(rng.uniform(np.log(lo), np.log(hi))))


def random_capture(seed: int, inverse_depth_range: Sequence[float], isp: bool = True) -> Capture:
    """The capture of seed ``seed`` (module docstring) for a scene whose inverse depth spans
    ``inverse_depth_range`` = (1/far, 1/near) dioptres (e.g. the 2nd and 98th percentiles of its depth); with
    ``isp=False`` never an image-processing stage."""
    lo, hi = float(inverse_depth_range[0]), float(inverse_depth_range[1])
    if not (np.isfinite(lo) and np.isfinite(hi) and 0 < lo < hi):
        raise InputError(f"a capture needs an inverse-depth range 0 < low < high, got {inverse_depth_range}")
    rng = np.random.default_rng([int(seed), CAPTURE_SEED_TAG])
    focal = _log_uniform(rng, 0.004, 0.060)
    f_number = _log_uniform(rng, 1.4, 11.0)
    k_target = _log_uniform(rng, 4.0, 60.0)
    # K = A s / p with A = f/N and s about f (the lens focused far): the pitch that gives the drawn K.
    pitch = focal * focal / (f_number * k_target)
    if pitch < MIN_PIXEL_SIZE_M:
        # A short lens stopped down at a large K asks for a pitch below any sensor's (which ThinLensCamera refuses):
        # the same K, so the same blur, from the smallest pitch and a wider aperture instead.
        pitch = MIN_PIXEL_SIZE_M
        f_number = focal * focal / (pitch * k_target)
    camera = ThinLensCamera(focal, f_number, pitch)
    n = int(rng.integers(2, 11))
    span = hi - lo
    cover = rng.uniform(0.7, 1.1)
    centre = (lo + hi) / 2.0 + rng.uniform(-0.1, 0.1) * span
    d_lo, d_hi = centre - cover * span / 2.0, centre + cover * span / 2.0
    d_lo = max(d_lo, 0.02)  # nothing focused beyond 50 m
    d_hi = min(max(d_hi, d_lo * 1.2), 0.9 / focal)  # nothing focused inside the focal length
    edges = np.linspace(d_lo, d_hi, n + 1)
    dioptres = edges[:-1] + rng.uniform(0.2, 0.8, n) * np.diff(edges)
    focus = 1.0 / dioptres
    rng.shuffle(focus)
    variant = _random_variant(rng)
    if isp:
        variant = _with_isp(variant, np.random.default_rng([int(seed), ISP_SEED_TAG]))
    k = float(camera.blur_per_dioptre(torch.tensor([float(focus.max())])).max())
    return Capture(camera, tuple(float(f) for f in focus), variant, k)


def _random_variant(rng: np.random.Generator) -> SynthesisVariant:
    psf = str(rng.choice(list(_psf.PSF_NAMES)))
    near_psf = None
    if rng.uniform() < 1.0 / 3.0:
        psf, near_psf = ("ring", "core") if rng.uniform() < 0.5 else ("core", "ring")
    light = str(rng.choice(["srgb", "linear"]))
    method = "occlusion" if rng.uniform() < 0.5 else "layered"
    level_ratio = 1.5 if method == "occlusion" else SYNTHESIS_LEVEL_RATIO
    forward = ForwardSpec(psf, light, method, level_ratio=level_ratio, blur_scale=round(_log_uniform(rng, 0.7, 1.4), 4))
    chromatic = round(float(rng.uniform(0.02, 0.25)), 4) if rng.uniform() < 0.4 else 0.0
    sensor = SensorModel(
        noise_std=round(float(rng.uniform(0.0, 0.012)), 5),
        shot_noise=round(float(rng.uniform(0.0, 0.003)), 6) if rng.uniform() < 0.4 else 0.0,
        vignetting=round(float(rng.uniform(0.0, 0.5)), 4) if rng.uniform() < 0.4 else 0.0,
        exposure_jitter=round(float(rng.uniform(0.0, 0.2)), 4) if rng.uniform() < 0.4 else 0.0,
        tone_gamma=round(float(rng.uniform(1.6, 2.8)), 3) if rng.uniform() < 0.4 else None,
        jpeg_quality=int(rng.integers(60, 96)) if rng.uniform() < 0.6 else None,
    )
    return SynthesisVariant(forward, sensor, near_psf=near_psf, chromatic_dioptres=chromatic)


def _with_isp(variant: SynthesisVariant, rng: np.random.Generator) -> SynthesisVariant:
    """``variant`` with the camera's image processing drawn (module docstring), or as it is (half the time)."""
    if rng.uniform() >= 0.5:
        return variant
    s = variant.sensor
    noise = s.noise_std + float(np.sqrt(s.shot_noise * 0.18))  # the shot noise's σ at mid-grey (linear 0.18)
    denoise = round(max(0.004, noise) * float(rng.uniform(1.5, 4.0)), 5)
    sharpen = round(float(rng.uniform(0.3, 1.5)), 3) if rng.uniform() < 0.7 else 0.0
    return dataclasses.replace(variant, sensor=s.replace(denoise=denoise, sharpen=sharpen))


def scene_inverse_depth_range(depth_m: np.ndarray) -> tuple[float, float]:
    """(1/far, 1/near) dioptres of a depth map (metres, 0 = unknown): its 98th and 2nd percentiles."""
    valid = depth_m[np.isfinite(depth_m) & (depth_m > 0)]
    if valid.size == 0:
        raise InputError("the depth map has no valid pixel")
    near, far = np.percentile(valid, [2, 98])
    return 1.0 / float(far), 1.0 / float(max(near, 1e-3))


def capture_stack(rgb: torch.Tensor, depth_m: np.ndarray, capture: Capture, seed: int = 0, name: str = "stack"
                  ) -> FocalStack:
    """The :class:`FocalStack` (with ground truth) that ``capture`` records of an RGB-D pair.

    Args:
        rgb: (3, H, W) sRGB in [0, 1]; depth_m: (H, W) metres, 0 = unknown (holes are filled for rendering and
            kept as 0 in the ground truth); seed: of the sensor noise.
    Returns:
        The stack, frames in the capture's file order, with ``gt_depth`` and ``gt_aif``.
    """
    if tuple(depth_m.shape) != tuple(rgb.shape[-2:]):
        raise InputError(f"the RGB image is {rgb.shape[-1]}x{rgb.shape[-2]} but the depth is "
                         f"{depth_m.shape[1]}x{depth_m.shape[0]}", field="depth")
    filled, valid = fill_depth_holes(depth_m)
    focus = torch.tensor(capture.focus_m, dtype=torch.float32)
    depth = torch.from_numpy(filled)[None, None].float()
    images = synthesize_variant(rgb[None].float(), depth, focus, capture.camera, capture.variant, seed=seed)[0]
    gt = np.where(valid, filled, 0.0).astype(np.float32)
    return FocalStack(images=images, focus_distances_m=focus, camera=capture.camera, gt_depth=gt, gt_aif=rgb,
                      name=name)
