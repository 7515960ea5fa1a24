"""Point-spread functions: blur size from the optics and discrete kernels that are smooth down to zero blur.

Five PSF models, each parameterised by one per-pixel size in pixels:

* ``gaussian`` — isotropic Gaussian, standard deviation σ = c / (4p) pixels (half the CoC radius);
* ``disk`` — uniform disk of radius r = c / (2p) pixels, anti-aliased at its edge;
* ``gennorm`` — the generalised Gaussian ``exp(−(ρ/s)^q)`` with shape q = :data:`GENNORM_SHAPE` (4): a soft-edged
  disk between the two, as real lenses show (aberrations and diffraction round the disk's rim). Its size is the
  σ-equivalent c / (4p): s is chosen so that its per-axis variance is (c/4p)², the same second moment as the Gaussian
  of σ = c/4p and the disk of radius c/2p (variance r²/4). The three models therefore differ in shape only, not in
  how much they blur, and q = 2 would be the Gaussian, q → ∞ the disk.
* ``ring`` and ``core`` — the disk of radius r = c/(2p) with a bright rim (weights 0.4 + 1.2 (ρ/r)²) or a bright core
  (0.2 + 1.6 (1 − (ρ/r)²)): what spherical aberration makes of the disk on the two sides of focus (a lens shows one
  behind focus and the other in front). Synthesis can use the pair signed (``near_psf`` of
  :func:`defocus.data.synthesis.synthesize`); the loss and the self-calibration use each as one symmetric family.

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

**The registry.** Each model is one :class:`PsfFamily` in :data:`PSF_REGISTRY`: its CoC → size rule, its window
half-width, its normalised 2-D kernel and what the renderers need beyond it (a 1-D kernel when it is separable, the
integral-normalised sampling of very wide windows, per-pixel weights for the ``exact`` renderer, the first blur
level of the ``layered`` one). Nothing else in :mod:`defocus.optics` branches on a PSF's name, so adding a model is
one :func:`register_psf` call with its kernel function; every function below takes the name and looks it up with
:func:`get_psf`, which names the choices for an unknown one.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Callable, Literal, Protocol, Sequence

import torch

from defocus.checks import check_shape
from defocus.errors import InputError
from defocus.optics.camera import ThinLensCamera

PsfName = Literal["gaussian", "gennorm", "disk", "ring", "core"]

#: Shape q of the ``gennorm`` PSF exp(−(ρ/s)^q).
GENNORM_SHAPE = 4.0
# s / σ for that shape: per-axis variance of exp(−(ρ/s)^q) in 2-D is s²·Γ(4/q) / (2·Γ(2/q)).
_GENNORM_S_PER_SIGMA = math.sqrt(2.0 * math.gamma(2.0 / GENNORM_SHAPE) / math.gamma(4.0 / GENNORM_SHAPE))
# Below this σ the gennorm kernel is a blend of the identity and the kernel of this σ (no dead zone, as the disk).
_GENNORM_MIN_SIGMA = 0.5


def check_psf(psf: str) -> str:
    """``psf`` if it names a registered family, else an :class:`~defocus.errors.InputError` listing the names."""
    get_psf(psf)
    return psf


def psf_size_from_coc(coc_px: torch.Tensor, psf: str) -> torch.Tensor:
    """The one rule from CoC diameter (pixels) to PSF size: σ = c/4 for ``gaussian`` and ``gennorm`` (its
    σ-equivalent), radius r = c/2 for ``disk`` (:meth:`PsfFamily.size_from_coc`)."""
    return get_psf(psf).size_from_coc(coc_px)


def blur_size_px(camera: ThinLensCamera, depth_m: torch.Tensor, focus_m: torch.Tensor, psf: str) -> torch.Tensor:
    """Per-pixel PSF size in pixels: σ = c/(4p) for ``gaussian``/``gennorm``, radius r = c/(2p) for ``disk``.

    Args:
        depth_m: (B, 1, H, W) depth in metres (must be > 0).
        focus_m: (B, N) focus distances in metres.
    Returns:
        (B, N, 1, H, W) blur size in pixels.
    """
    family = get_psf(psf)
    sizes = check_shape(depth_m, "B 1 H W", "depth")
    check_shape(focus_m, "B N", "focus", sizes)
    fd = focus_m.to(depth_m.dtype)[:, :, None, None, None]
    return family.size_from_coc(camera.coc_px(depth_m[:, None], fd))  # (B, N, 1, H, W)


def kernel_radius(size_px: float, psf: str) -> int:
    """Half-width of a window holding a kernel without truncation (≥ 3σ for the Gaussian and the generalised
    Gaussian, whose tail is lighter, r + 1 for the disk; :meth:`PsfFamily.kernel_radius`)."""
    return get_psf(psf).kernel_radius(size_px)


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


# ------------------------------------------------------------------------------ aberrated disks (ring and core)
# Spherical aberration redistributes the light inside the blur disk, oppositely on the two sides of focus: a bright
# rim on one side, a bright core on the other (the disk's geometric radius stays about c/2). Two radial profiles over
# the ramped disk model the two sides; both integrate to π r² over the disk, as the flat disk does, so that only the
# shape changes. ``ring``: 0.4 + 1.2 (ρ/r)²; ``core``: 0.2 + 1.6 (1 − (ρ/r)²).
def _ring_profile(u: torch.Tensor) -> torch.Tensor:
    return 0.4 + 1.2 * u.clamp(0.0, 1.0) ** 2


def _core_profile(u: torch.Tensor) -> torch.Tensor:
    return 0.2 + 1.6 * (1.0 - u.clamp(0.0, 1.0) ** 2)


def _profiled_disk(profile: Callable[[torch.Tensor], torch.Tensor], radius_px: torch.Tensor, rho: torch.Tensor
                   ) -> torch.Tensor:
    """Unnormalised weights of the ramped disk of radius ``radius_px`` (≥ 1) times ``profile(ρ / r)``."""
    return _ramped_disk(radius_px, rho) * profile(rho / radius_px)


def _profiled_kernel(profile: Callable[[torch.Tensor], torch.Tensor], name: str):
    def kernel(radius_px: float | torch.Tensor, half_width: int | None = None) -> torch.Tensor:
        r = torch.as_tensor(radius_px, dtype=torch.float64).reshape(())
        if half_width is None:
            half_width = kernel_radius(float(r.detach()), name)
        off = torch.arange(-half_width, half_width + 1, dtype=torch.float64)
        rho = torch.sqrt(off[:, None] ** 2 + off[None, :] ** 2)
        if float(r.detach()) >= 1.0:
            k = _profiled_disk(profile, r, rho)
            return k / k.sum()
        # Below one pixel: the blend (1 − r²)·δ + r²·K(1), as the disk's (no dead zone).
        unit = _profiled_disk(profile, torch.ones((), dtype=torch.float64), rho)
        delta = (rho == 0).to(torch.float64)
        a = r.clamp_min(0.0) ** 2
        return (1.0 - a) * delta + a * unit / unit.sum()

    kernel.__name__ = f"{name}_kernel_2d"
    kernel.__doc__ = (f"A normalised {name} kernel (2R+1, 2R+1) of radius ``radius_px``: the anti-aliased disk "
                      f"weighted by the {name} profile (see the comment above :func:`_ring_profile`).")
    return kernel


ring_kernel_2d = _profiled_kernel(_ring_profile, "ring")
core_kernel_2d = _profiled_kernel(_core_profile, "core")


def _ring_wide_window(radius_px: float, rho: torch.Tensor) -> torch.Tensor:
    r = torch.tensor(radius_px, dtype=torch.float64)
    return _profiled_disk(_ring_profile, r, rho) / (math.pi * (radius_px * radius_px + 1.0 / 12.0))


def _core_wide_window(radius_px: float, rho: torch.Tensor) -> torch.Tensor:
    r = torch.tensor(radius_px, dtype=torch.float64)
    return _profiled_disk(_core_profile, r, rho) / (math.pi * (radius_px * radius_px + 1.0 / 12.0))


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
    sampled (the family's :attr:`PsfFamily.wide_window`), normalised by the kernel's integral — the disk with its
    one-pixel ramp π(r² + 1/12), the generalised Gaussian π s² Γ(1 + 2/q) — which its sum over the pixel grid
    matches to about 1e-6 (relative) at such sizes. A family without a wide window (the Gaussian, whose 1-D kernel
    is cheap at any size) is always cut from its full kernel.
    """
    family = get_psf(psf)
    if half_width <= FULL_KERNEL_MAX_HALF_WIDTH or family.wide_window is None:
        full = family.kernel_2d(size_px, half_width)
        return full[half_width - ky : half_width + ky + 1, half_width - kx : half_width + kx + 1]
    oy = torch.arange(-ky, ky + 1, dtype=torch.float64)[:, None]
    ox = torch.arange(-kx, kx + 1, dtype=torch.float64)[None, :]
    rho = torch.sqrt(oy * oy + ox * ox)
    return family.wide_window(float(size_px), rho)


def _disk_wide_window(radius_px: float, rho: torch.Tensor) -> torch.Tensor:
    """The ramped disk at distances ``rho`` over its integral π(r² + 1/12) (r ≥ 1 here: the plain ramped disk of
    :func:`disk_weights`)."""
    s = radius_px
    return _ramped_disk(torch.tensor(s, dtype=torch.float64), rho) / (math.pi * (s * s + 1.0 / 12.0))


def _gennorm_wide_window(sigma: float, rho: torch.Tensor) -> torch.Tensor:
    """exp(−(ρ/s)^q) at distances ``rho`` over its integral π s² Γ(1 + 2/q)."""
    scale = sigma * _GENNORM_S_PER_SIGMA
    return torch.exp(-((rho / scale) ** GENNORM_SHAPE)) / (
        math.pi * scale * scale * math.gamma(1.0 + 2.0 / GENNORM_SHAPE))


def psf_kernel_2d(size_px: float | torch.Tensor, psf: str, half_width: int | None = None) -> torch.Tensor:
    """A single normalised kernel of the given PSF model and size (σ for gaussian/gennorm, radius for disk)."""
    return get_psf(psf).kernel_2d(size_px, half_width)


# ------------------------------------------------------------------------------------- exact-renderer weights
class ExactWeights(Protocol):
    """What :func:`defocus.optics.render.render_exact` needs of a family: per-source-pixel kernel weights.

    ``prepare`` turns the per-pixel sizes (B, N, 1, H, W) into the tensors ``params`` that ``weight`` reads;
    ``weight(params, dy, dx)`` is W_(dy,dx)(q), the normalised weight that source pixel q gives the pixel at offset
    (dy, dx), shape (B, N, 1, H, W); ``accumulate_grad`` adds to ``grads`` (one tensor per param) the gradient of
    Σ g_w·W_(dy,dx) over the source pixels ``[..., sy, sx]`` (the renderer's hand-written backward pass).
    """

    def prepare(self, size: torch.Tensor, radius: int, radius_y: int, radius_x: int) -> tuple[torch.Tensor, ...]: ...

    def weight(self, params: Sequence[torch.Tensor], dy: int, dx: int) -> torch.Tensor: ...

    def accumulate_grad(self, params: Sequence[torch.Tensor], grads: Sequence[torch.Tensor], g_w: torch.Tensor,
                        sy: slice, sx: slice, dy: int, dx: int) -> None: ...


@dataclass(frozen=True)
class SeparableExactWeights:
    """Exact-renderer weights of a separable kernel: W_(dy,dx)(q) = g_q[dy]·g_q[dx], with g_q the family's 1-D
    kernel, normalised over the full untruncated window; params = (g,), g of shape (2K+1, B, N, 1, H, W)."""

    kernel_1d: Callable[[torch.Tensor, int], torch.Tensor]

    def prepare(self, size: torch.Tensor, radius: int, radius_y: int, radius_x: int) -> tuple[torch.Tensor, ...]:
        # Normalise over the full untruncated window, then keep the offsets that can land inside the image.
        g = self.kernel_1d(size, radius)
        keep = max(radius_y, radius_x)
        return (g[..., radius - keep : radius + keep + 1].movedim(-1, 0).contiguous(),)

    @staticmethod
    def weight(params: Sequence[torch.Tensor], dy: int, dx: int) -> torch.Tensor:
        (g,) = params
        r = (g.shape[0] - 1) // 2
        return g[dy + r] * g[dx + r]

    @staticmethod
    def accumulate_grad(params, grads, g_w: torch.Tensor, sy: slice, sx: slice, dy: int, dx: int) -> None:
        (g,) = params
        (acc,) = grads
        r = (g.shape[0] - 1) // 2
        acc[dy + r][..., sy, sx] += g_w * g[dx + r][..., sy, sx]
        acc[dx + r][..., sy, sx] += g_w * g[dy + r][..., sy, sx]


@dataclass(frozen=True)
class PointwiseExactWeights:
    """Exact-renderer weights from an unnormalised weight function ``weights(size, dy, dx)`` (size (B, N, 1, H, W),
    offsets floats), divided by each pixel's kernel mass over the window; params = (size, mass). The gradient is
    taken by autograd through ``weights``, offset by offset."""

    weights: Callable[[torch.Tensor, float, float], torch.Tensor]

    def prepare(self, size: torch.Tensor, radius: int, radius_y: int, radius_x: int) -> tuple[torch.Tensor, ...]:
        norm = size.new_zeros(size.shape)
        for dy in range(-radius, radius + 1):
            for dx in range(-radius, radius + 1):
                norm = norm + self.weights(size, float(dy), float(dx))
        return (size, norm)

    def weight(self, params: Sequence[torch.Tensor], dy: int, dx: int) -> torch.Tensor:
        size, mass = params
        return self.weights(size, float(dy), float(dx)) / mass

    def accumulate_grad(self, params, grads, g_w: torch.Tensor, sy: slice, sx: slice, dy: int, dx: int) -> None:
        leaves = [p[..., sy, sx].detach().requires_grad_(True) for p in params]
        with torch.enable_grad():
            wgt = self.weight(leaves, dy, dx)
            parts = torch.autograd.grad(wgt, leaves, g_w)
        for acc, part in zip(grads, parts):
            acc[..., sy, sx] += part


# --------------------------------------------------------------------------------------------------- registry
#: The render methods a family may list in :attr:`PsfFamily.renderers`.
RENDERERS: tuple[str, ...] = ("exact", "layered", "occlusion")


@dataclass(frozen=True)
class PsfFamily:
    """One PSF model: everything the renderers know of it (see the module docstring, "The registry").

    Args:
        name: the name configs, ``ForwardModel(psf=...)`` and the command line use.
        kernel: ``kernel(size, half_width=None)`` → the normalised (2R+1, 2R+1) float64 kernel of that size
            (R = :meth:`kernel_radius` when ``half_width`` is None); must sum to 1, be symmetric, and tend to the
            identity as size → 0 (no dead zone, see the module docstring).
        coc_per_size: CoC diameter / size: 4 for a σ (σ = c/4), 2 for a radius (r = c/2).
        support_per_size: window half-width R = max(1, ⌈support_per_size·size + 1⌉) (3.5 for the Gaussian's 3.5σ).
        renderers: the render methods that support it; ``"exact"`` needs ``exact_weights``.
        calibrate: whether :mod:`defocus.calibrate` tries it as a candidate shape (in registry order).
        first_level: the first non-zero blur level of the ``layered`` renderer's default levels (the disk's is the
            unit disk, so that below one pixel the blend is the PSF itself).
        kernel_1d: for a separable kernel, ``kernel_1d(size, radius)`` → size.shape + (2·radius + 1,) normalised
            1-D weights (differentiable in size); the ``layered`` renderer then blurs with two banded matrix products.
        half_resolution: blurs compose by adding variances (the Gaussian): the ``layered`` renderer may blur wide
            levels at half resolution (``multires``). Needs ``kernel_1d``.
        wide_window: ``wide_window(size, rho)`` → the kernel at distances ``rho`` (float64 tensor) normalised by its
            integral, for windows wider than :data:`FULL_KERNEL_MAX_HALF_WIDTH`; None: always cut from the full kernel.
        exact_weights: the per-pixel weights of the ``exact`` renderer (:class:`SeparableExactWeights`,
            :class:`PointwiseExactWeights` or another :class:`ExactWeights`); None: no ``exact`` rendering.
        description: one line for documentation.
    """

    name: str
    kernel: Callable[..., torch.Tensor]
    coc_per_size: float
    support_per_size: float
    renderers: tuple[str, ...] = ("layered", "occlusion")
    calibrate: bool = False
    first_level: float = 0.5
    kernel_1d: Callable[[torch.Tensor, int], torch.Tensor] | None = None
    half_resolution: bool = False
    wide_window: Callable[[float, torch.Tensor], torch.Tensor] | None = None
    exact_weights: ExactWeights | None = None
    description: str = field(default="", compare=False)

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not self.name:
            raise InputError(f"a PSF family needs a non-empty name, got {self.name!r}", field="psf")
        object.__setattr__(self, "renderers", tuple(self.renderers))
        unknown = [m for m in self.renderers if m not in RENDERERS]
        if unknown:
            raise InputError(f"PSF {self.name!r}: unknown render method(s) {', '.join(map(repr, unknown))}; "
                             f"choose from {', '.join(RENDERERS)}", field="psf")
        if ("exact" in self.renderers) != (self.exact_weights is not None):
            raise InputError(f"PSF {self.name!r}: the 'exact' renderer needs exact_weights, and exact_weights "
                             f"needs 'exact' in renderers", field="psf")
        if self.half_resolution and self.kernel_1d is None:
            raise InputError(f"PSF {self.name!r}: half_resolution needs a separable kernel_1d", field="psf")
        for what in ("coc_per_size", "support_per_size", "first_level"):
            v = getattr(self, what)
            if not (isinstance(v, (int, float)) and math.isfinite(v) and v > 0):
                raise InputError(f"PSF {self.name!r}: {what} must be a finite positive number, got {v!r}",
                                 field="psf")

    def size_from_coc(self, coc_px: torch.Tensor) -> torch.Tensor:
        """PSF size (σ or radius, pixels) of a CoC diameter in pixels: c / :attr:`coc_per_size`."""
        return coc_px / self.coc_per_size

    def kernel_radius(self, size_px: float | torch.Tensor) -> int:
        """Half-width of a window holding the kernel of this size without truncation."""
        s = float(size_px.detach()) if isinstance(size_px, torch.Tensor) else float(size_px)
        return max(1, int(math.ceil(self.support_per_size * s + 1.0)))

    def kernel_2d(self, size_px: float | torch.Tensor, half_width: int | None = None) -> torch.Tensor:
        """The normalised (2R+1, 2R+1) kernel of this size (:attr:`kernel`)."""
        return self.kernel(size_px, half_width)

    def supports(self, method: str) -> bool:
        return method in self.renderers

    def require(self, method: str) -> "PsfFamily":
        """This family, or an :class:`~defocus.errors.InputError` when render method ``method`` cannot render it."""
        if method not in self.renderers:
            able = [n for n, f in PSF_REGISTRY.items() if method in f.renderers]
            raise InputError(
                f"the {method} renderer knows the {', '.join(able) or 'no'} PSF(s), not {self.name!r}; render "
                f"{self.name} with {' or '.join(repr(m) for m in self.renderers)}", field="psf")
        return self


#: Every known PSF family by name, in registration order (the order of :data:`PSF_NAMES`, of the calibration
#: candidates and of the command line's choices). Add to it with :func:`register_psf`.
PSF_REGISTRY: dict[str, PsfFamily] = {}


def register_psf(family: PsfFamily, replace: bool = False) -> PsfFamily:
    """Adds ``family`` to :data:`PSF_REGISTRY` (an :class:`~defocus.errors.InputError` if its name is taken,
    unless ``replace``); returns it. From then on every renderer, ``ForwardModel(psf=family.name)`` and (if
    ``family.calibrate``) the self-calibration know it."""
    if not isinstance(family, PsfFamily):
        raise InputError(f"register_psf takes a PsfFamily, got {type(family).__name__}", field="psf")
    if family.name in PSF_REGISTRY and not replace:
        raise InputError(f"a PSF named {family.name!r} is already registered (pass replace=True)", field="psf")
    PSF_REGISTRY[family.name] = family
    return family


def unregister_psf(name: str) -> PsfFamily:
    """Removes a family from :data:`PSF_REGISTRY` and returns it (for tests and plug-ins that clean up)."""
    family = get_psf(name)
    del PSF_REGISTRY[name]
    return family


def get_psf(name: str) -> PsfFamily:
    """The registered family called ``name``; an :class:`~defocus.errors.InputError` naming the choices if none."""
    try:
        return PSF_REGISTRY[name]
    except (KeyError, TypeError):
        raise InputError(f"unknown PSF {name!r}; choose one of {', '.join(PSF_REGISTRY)}", field="psf") from None


def psf_names(calibrate: bool | None = None) -> tuple[str, ...]:
    """The registered names in registry order; ``calibrate=True`` only the calibration candidates."""
    return tuple(n for n, f in PSF_REGISTRY.items() if calibrate is None or f.calibrate == calibrate)


def __getattr__(name: str) -> Any:
    # PSF_NAMES is computed from the registry when read, so that it always lists the registered families (an
    # import ``from defocus.optics.psf import PSF_NAMES`` takes the names registered at that moment).
    if name == "PSF_NAMES":
        return psf_names()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


register_psf(PsfFamily(
    "gaussian", gaussian_kernel_2d, coc_per_size=4.0, support_per_size=3.5,
    renderers=("exact", "layered", "occlusion"), calibrate=True, first_level=0.5,
    kernel_1d=discrete_gaussian_1d, half_resolution=True, wide_window=None,
    exact_weights=SeparableExactWeights(discrete_gaussian_1d),
    description="Lindeberg's discrete Gaussian, σ = c/4 (the paper's PSF)",
))
register_psf(PsfFamily(
    "gennorm", gennorm_kernel_2d, coc_per_size=4.0, support_per_size=3.5,
    renderers=("layered", "occlusion"), calibrate=True, first_level=0.5,
    wide_window=_gennorm_wide_window,
    description="generalised Gaussian exp(−(ρ/s)⁴) of σ-equivalent c/4: a soft-edged disk",
))
register_psf(PsfFamily(
    "disk", disk_kernel_2d, coc_per_size=2.0, support_per_size=1.0,
    renderers=("exact", "layered", "occlusion"), calibrate=True, first_level=1.0,
    wide_window=_disk_wide_window, exact_weights=PointwiseExactWeights(disk_weights),
    description="anti-aliased uniform disk of radius c/2",
))
register_psf(PsfFamily(
    "ring", ring_kernel_2d, coc_per_size=2.0, support_per_size=1.0, calibrate=True, first_level=1.0,
    wide_window=_ring_wide_window,
    description="disk of radius c/2 with a bright rim (spherical aberration, one side of focus)",
))
register_psf(PsfFamily(
    "core", core_kernel_2d, coc_per_size=2.0, support_per_size=1.0, calibrate=True, first_level=1.0,
    wide_window=_core_wide_window,
    description="disk of radius c/2 with a bright core (spherical aberration, the other side of focus)",
))
