"""Point-spread functions: blur size from the optics and discrete kernels that are smooth down to zero blur.

Three PSF models, each parameterised by one per-pixel size in pixels:

* ``gaussian`` — isotropic Gaussian, standard deviation σ = c / (4p) pixels (half the CoC radius);
* ``disk`` — uniform disk of radius r = c / (2p) pixels, anti-aliased at its edge;
* ``gennorm`` — the generalised Gaussian ``exp(−(ρ/s)^q)`` with shape q = :data:`GENNORM_SHAPE` (4): a soft-edged
  disk between the two, as real lenses show (aberrations and diffraction round the disk's rim). Its size is the
  σ-equivalent c / (4p): s is chosen so that its per-axis variance is (c/4p)², the same second moment as the Gaussian
  of σ = c/4p and the disk of radius c/2p (variance r²/4). The three models therefore differ in shape only, not in
  how much they blur, and q = 2 would be the Gaussian, q → ∞ the disk.

Why the kernels are not simply sampled: a sampled Gaussian ``exp(−x²/2σ²)`` has neighbour weights of
``exp(−1/2σ²)``, which vanish exponentially as σ → 0 (below σ ≈ 0.3 px the blur, and with it the gradient with
respect to depth, is numerically zero: the "dead zone" near the focal plane). We use instead Lindeberg's
*discrete Gaussian* ``T(n; t) = e^{−t} I_n(t)`` with t = σ², the exact discrete analogue of the Gaussian: its
variance is exactly σ² for every σ, it is separable, it tends to the identity as σ → 0 with neighbour weights ≈ σ²/2
(so d/dσ ≠ 0 for every σ > 0), and for σ ≳ 1 it matches the sampled Gaussian closely. It is evaluated through the
ratios ``r_n = I_n/I_{n−1}``, which obey the continued fraction ``r_n = t / (2n + t·r_{n+1})`` — stable, free of
overflow, and differentiable with plain autograd.

The disk is anti-aliased with a one-pixel linear ramp at its rim. A ramped disk of radius below one pixel would be a
pure delta (dead zone again), so for r < 1 the kernel is the blend ``(1 − r²)·δ + r²·D₁`` of the identity and the
unit disk, whose second moment grows like r² as the true disk's does.
"""

from __future__ import annotations

import math
from typing import Literal

import torch

from defocus.checks import check_shape
from defocus.errors import DefocusError
from defocus.optics.camera import ThinLensCamera

PsfName = Literal["gaussian", "disk", "gennorm"]
PSF_NAMES: tuple[str, ...] = ("gaussian", "disk", "gennorm")

#: Shape q of the ``gennorm`` PSF exp(−(ρ/s)^q).
GENNORM_SHAPE = 4.0
# s / σ for that shape: per-axis variance of exp(−(ρ/s)^q) in 2-D is s²·Γ(4/q) / (2·Γ(2/q)).
_GENNORM_S_PER_SIGMA = math.sqrt(2.0 * math.gamma(2.0 / GENNORM_SHAPE) / math.gamma(4.0 / GENNORM_SHAPE))
# Below this σ the gennorm kernel is a blend of the identity and the kernel of this σ (no dead zone, as the disk).
_GENNORM_MIN_SIGMA = 0.5


def check_psf(psf: str) -> str:
    if psf not in PSF_NAMES:
        raise DefocusError(f"unknown PSF {psf!r}; choose one of {', '.join(PSF_NAMES)}")
    return psf


def psf_size_from_coc(coc_px: torch.Tensor, psf: str) -> torch.Tensor:
    """The one rule from CoC diameter (pixels) to PSF size: σ = c/4 for ``gaussian`` and ``gennorm`` (its
    σ-equivalent), radius r = c/2 for ``disk``."""
    check_psf(psf)
    return coc_px / (2.0 if psf == "disk" else 4.0)


def blur_size_px(camera: ThinLensCamera, depth_m: torch.Tensor, focus_m: torch.Tensor, psf: str) -> torch.Tensor:
    """Per-pixel PSF size in pixels: σ = c/(4p) for ``gaussian``/``gennorm``, radius r = c/(2p) for ``disk``.

    Args:
        depth_m: (B, 1, H, W) depth in metres (must be > 0).
        focus_m: (B, N) focus distances in metres.
    Returns:
        (B, N, 1, H, W) blur size in pixels.
    """
    check_psf(psf)
    sizes = check_shape(depth_m, "B 1 H W", "depth")
    check_shape(focus_m, "B N", "focus", sizes)
    fd = focus_m.to(depth_m.dtype)[:, :, None, None, None]
    return psf_size_from_coc(camera.coc_px(depth_m[:, None], fd), psf)  # (B, N, 1, H, W)


def kernel_radius(size_px: float, psf: str) -> int:
    """Half-width of a window holding a kernel without truncation (≥ 3σ for the Gaussian and the generalised
    Gaussian, whose tail is lighter, r + 1 for the disk)."""
    check_psf(psf)
    s = float(size_px.detach()) if isinstance(size_px, torch.Tensor) else float(size_px)
    if psf in ("gaussian", "gennorm"):
        return max(1, int(math.ceil(3.5 * s + 1.0)))
    return max(1, int(math.ceil(s + 1.0)))


# --------------------------------------------------------------------------------------------------- Gaussian
def discrete_gaussian_1d(sigma: torch.Tensor, radius: int) -> torch.Tensor:
    """Lindeberg's discrete Gaussian on offsets −radius..radius, normalised to sum 1 over the window.

    Args:
        sigma: any-shaped tensor of standard deviations in pixels (≥ 0).
        radius: half-width R of the window; R ≥ 3.5σ keeps the truncated mass below 1e-3.
    Returns:
        sigma.shape + (2R + 1,) kernel weights; differentiable w.r.t. ``sigma`` for every σ ≥ 0.
    """
    t = sigma.clamp_min(0.0) ** 2
    # Continued fraction for r_n = I_n(t)/I_{n-1}(t), started far enough beyond R that the tail does not matter.
    n_start = radius + 12 + int(math.ceil(float(sigma.detach().max()) * 2.0)) if sigma.numel() else radius + 12
    ratios: list[torch.Tensor] = []
    r = torch.zeros_like(t)
    for n in range(n_start, 0, -1):
        r = t / (2.0 * n + t * r)
        if n <= radius:
            ratios.append(r)
    ratios.reverse()  # ratios[k] = r_{k+1}
    # Unnormalised weights y_n / y_0 = prod_{k<=n} r_k; a cumulative product keeps everything in [0, 1].
    tail = torch.cumprod(torch.stack(ratios, dim=-1), dim=-1)
    one = torch.ones_like(t)[..., None]
    half = torch.cat([one, tail], dim=-1)  # offsets 0..R
    kernel = torch.cat([half.flip(-1)[..., :-1], half], dim=-1)
    return kernel / kernel.sum(dim=-1, keepdim=True)


def gaussian_kernel_2d(sigma: float | torch.Tensor, radius: int | None = None) -> torch.Tensor:
    """A single (2R+1, 2R+1) discrete Gaussian kernel (for fixed-level convolutions); sums to 1."""
    s = torch.as_tensor(sigma, dtype=torch.float64)
    if radius is None:
        radius = kernel_radius(float(s), "gaussian")
    g = discrete_gaussian_1d(s.reshape(()), radius)
    return g[:, None] * g[None, :]


# ------------------------------------------------------------------------------------------------------- disk
def _ramped_disk(radius_px: torch.Tensor, dist: torch.Tensor) -> torch.Tensor:
    """Coverage of a disk with a one-pixel linear ramp at its rim: clamp(r + 0.5 − ρ, 0, 1)."""
    return (radius_px - dist + 0.5).clamp(0.0, 1.0)


def disk_weights(radius_px: torch.Tensor, dy: torch.Tensor | float, dx: torch.Tensor | float) -> torch.Tensor:
    """Unnormalised anti-aliased disk weights at offset (dy, dx), smooth down to r = 0 (see module docstring).

    ``radius_px`` and the offsets broadcast against each other.
    """
    dy = torch.as_tensor(dy, dtype=radius_px.dtype)
    dx = torch.as_tensor(dx, dtype=radius_px.dtype)
    dist = torch.sqrt(dy * dy + dx * dx)
    r = radius_px.clamp_min(0.0)
    big = _ramped_disk(r.clamp_min(1.0), dist)
    unit = _ramped_disk(torch.ones_like(r), dist)
    delta = (dist == 0).to(r.dtype)
    # Normalise the two blend parts separately so that the blend weight is exactly r² of the unit disk's mass.
    unit_mass = _UNIT_DISK_MASS
    small = (1.0 - r * r) * delta + (r * r) * unit / unit_mass
    return torch.where(r >= 1.0, big, small)


_UNIT_DISK_MASS = float(
    sum(
        min(max(1.0 + 0.5 - math.hypot(i, j), 0.0), 1.0)
        for i in range(-2, 3)
        for j in range(-2, 3)
    )
)


def disk_kernel_2d(radius_px: float | torch.Tensor, half_width: int | None = None) -> torch.Tensor:
    """A single normalised anti-aliased disk kernel of shape (2R+1, 2R+1)."""
    r = torch.as_tensor(radius_px, dtype=torch.float64).reshape(())
    if half_width is None:
        half_width = kernel_radius(float(r), "disk")
    off = torch.arange(-half_width, half_width + 1, dtype=torch.float64)
    k = disk_weights(r, off[:, None], off[None, :])
    return k / k.sum()


# -------------------------------------------------------------------------------------------- generalised Gaussian
def _sampled_gennorm(sigma: torch.Tensor, off: torch.Tensor) -> torch.Tensor:
    """Normalised samples of exp(−(ρ/s)^q) (s from the σ-equivalent) on the square grid of offsets ``off``."""
    rho = torch.sqrt(off[:, None] ** 2 + off[None, :] ** 2)
    s = sigma * _GENNORM_S_PER_SIGMA
    k = torch.exp(-((rho / s) ** GENNORM_SHAPE))
    return k / k.sum()


def gennorm_kernel_2d(sigma: float | torch.Tensor, half_width: int | None = None) -> torch.Tensor:
    """A single normalised generalised-Gaussian kernel (2R+1, 2R+1) of σ-equivalent ``sigma`` pixels.

    Sampled exp(−(ρ/s)^q) for σ ≥ 0.5 px; below, the blend (1 − (σ/0.5)²)·δ + (σ/0.5)²·K(0.5), whose variance grows
    like σ² down to zero (a sampled kernel would be a pure delta there: the dead zone, see the module docstring).
    """
    sg = torch.as_tensor(sigma, dtype=torch.float64).reshape(())
    if half_width is None:
        half_width = kernel_radius(max(float(sg.detach()), _GENNORM_MIN_SIGMA), "gennorm")
    off = torch.arange(-half_width, half_width + 1, dtype=torch.float64)
    if float(sg.detach()) >= _GENNORM_MIN_SIGMA:
        return _sampled_gennorm(sg, off)
    base = _sampled_gennorm(torch.tensor(_GENNORM_MIN_SIGMA, dtype=torch.float64), off)
    delta = torch.zeros_like(base)
    delta[half_width, half_width] = 1.0
    a = (sg.clamp_min(0.0) / _GENNORM_MIN_SIGMA) ** 2
    return (1.0 - a) * delta + a * base


#: Half-width above which :func:`psf_kernel_window` samples only the window an image sees and normalises by the
#: kernel's integral, instead of summing a (2R + 1)² grid (a blur far wider than the image: R = 20000 px would take
#: 13 GB).
FULL_KERNEL_MAX_HALF_WIDTH = 1024


def psf_kernel_window(size_px: float, psf: str, half_width: int, ky: int, kx: int) -> torch.Tensor:
    """The central (2ky + 1, 2kx + 1) window of ``psf_kernel_2d(size_px, psf, half_width)`` (ky, kx <= half_width).

    Up to :data:`FULL_KERNEL_MAX_HALF_WIDTH` it is cut from the full kernel (exact). Beyond, only the window is
    sampled, normalised by the kernel's integral — the disk with its one-pixel ramp π(r² + 1/12), the generalised
    Gaussian π s² Γ(1 + 2/q) — which its sum over the pixel grid matches to about 1e-6 (relative) at such sizes.
    """
    if half_width <= FULL_KERNEL_MAX_HALF_WIDTH or psf == "gaussian":
        full = psf_kernel_2d(size_px, psf, half_width)
        return full[half_width - ky : half_width + ky + 1, half_width - kx : half_width + kx + 1]
    check_psf(psf)
    s = float(size_px)
    oy = torch.arange(-ky, ky + 1, dtype=torch.float64)[:, None]
    ox = torch.arange(-kx, kx + 1, dtype=torch.float64)[None, :]
    rho = torch.sqrt(oy * oy + ox * ox)
    if psf == "disk":  # r >= 1 here: the plain ramped disk of disk_weights
        return _ramped_disk(torch.tensor(s, dtype=torch.float64), rho) / (math.pi * (s * s + 1.0 / 12.0))
    scale = s * _GENNORM_S_PER_SIGMA
    return torch.exp(-((rho / scale) ** GENNORM_SHAPE)) / (
        math.pi * scale * scale * math.gamma(1.0 + 2.0 / GENNORM_SHAPE))


def psf_kernel_2d(size_px: float | torch.Tensor, psf: str, half_width: int | None = None) -> torch.Tensor:
    """A single normalised kernel of the given PSF model and size (σ for gaussian/gennorm, radius for disk)."""
    check_psf(psf)
    if psf == "gaussian":
        return gaussian_kernel_2d(size_px, half_width)
    if psf == "gennorm":
        return gennorm_kernel_2d(size_px, half_width)
    return disk_kernel_2d(size_px, half_width)
