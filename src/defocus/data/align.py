"""Registration of the frames of a hand-held focal stack (shift, small rotation, focus breathing).

Each frame is registered to a reference frame (the middle focus distance) by a similarity transform: isotropic scale
(the magnification change with focus, "focus breathing"), rotation and translation. The scale starts from the
thin-lens prediction: a frame focused at ``fd`` has its sensor at ``s = fd·f/(fd − f)``, and the image of a fixed scene
scales with ``s``, so frame i appears magnified by ``s_i / s_ref`` relative to the reference.

Frames differ in blur (each is focused elsewhere). The matching compares band-pass (difference-of-Gaussians)
images by normalised cross-correlation: a linear filter keeps the correlation peak of two frames that differ by a
symmetric blur in place, where a nonlinear feature (gradient magnitude) biases it. Frames are registered in a chain,
each to its neighbour in focus order (neighbours differ least in blur), coarse to fine over an image pyramid (from
about 64 px up to ``max_size``): at the coarsest level the best of no motion, the thin-lens scale and the shift of
the cross-correlation peak starts Gauss–Newton (Levenberg–Marquardt) iterations, which every finer level refines.

Not every estimated motion is camera motion. Frames focused at different distances differ by a blur that varies
over the image, and a similarity can always be found that matches such frames a little better: on registered
(tripod, synthetic) stacks the fit returns shifts of a few tenths of a pixel (up to two or three where near objects
are blurred very differently) and scale changes of a few tenths of a per cent, while lowering the residual by only a
few per cent. Applying such a motion would resample every frame (bilinear warping blurs the defocus cue), crop the
outputs and mislead the focus-order check. So the alignment is applied only where it buys something: a step of the
chain (a frame to its neighbour) is applied if it moves some point of the image, corners included, by at least
:data:`MIN_DISPLACEMENT_PX` and the residual falls clearly — by :data:`MIN_RESIDUAL_REDUCTION` over the whole chain,
or by :data:`MIN_FRAME_REDUCTION` for that step alone. :attr:`Alignment.applied` and :attr:`Alignment.reason` say
what was decided; when nothing is applied the alignment is the identity with the full image as its valid box (see
:meth:`Alignment.identity`), :func:`warp_to_reference` returns the frames untouched and :func:`check_focus_order`
stays silent. The blur-induced motion grows with the blur: on a synthetic 12-megapixel stack with 210 px of blur per
dioptre it reached 30 px at the corners — kept out of the registered stack by the rule, but it also biases the
motion fitted to moved frames of such a stack.

Cost: the frames are registered on grey float32 copies at most ``max_size`` pixels long, on one thread (see
:func:`_one_thread`), by Gauss–Newton with analytic derivatives (a few warps per level), and a step whose motion at
half resolution already buys nothing is not refined at the finest level (:data:`EARLY_STOP_PX`): a registered
5 × 240 × 320 stack takes about 0.06 s, a 12-megapixel one about half a second (benchmarks/bench_align.py).

Coordinates: a matrix ``M`` (3 × 3) maps *reference pixel coordinates* (x right, y down, pixel centres at
integer + 0.5) to the same point's coordinates in the frame; warping frame i into the reference grid samples frame i
at ``M_i @ [x, y, 1]``. Matrices are given for the images passed to :func:`estimate_alignment`; use
:meth:`Alignment.rescaled` for images resized by a factor.
"""

from __future__ import annotations

import math
from contextlib import contextmanager
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F

from defocus.checks import check_shape
from defocus.color import to_grey
from defocus.errors import DefocusError, InputError

#: Scale differences (relative) below this are within the estimation noise: the focus-order check ignores them ...
SCALE_NOISE = 5e-4
#: ... and so are those that move the corners of the registered copies (``max_size``) by less than this many pixels:
#: the scales fitted to registered frames differ by that much (up to a pixel or two at the corners, from the blur).
SCALE_NOISE_PX = 2.0
#: A step of the registration chain whose motion moves no point of the image (corners included) by this many input
#: pixels is not applied: a misalignment this small is far below what the depth estimate notices, while resampling
#: the frame (bilinear) would blur its defocus cue and the crop would cost a pixel per side.
MIN_DISPLACEMENT_PX = 0.5
#: The alignment is applied only if it lowers the residual (1 − NCC of the band-pass images, summed over the steps of
#: the chain) by at least this fraction. Camera motion is most of the residual between unaligned frames, the blur
#: difference little, so a real motion lowers it far more than a motion fitted to registered frames does (the
#: measurements on procedural and real stacks behind this value: BENCHMARKS.md, "Alignment only where it is needed").
MIN_RESIDUAL_REDUCTION = 0.2
#: ... or, for one step on its own evidence (a single frame knocked out of place in an otherwise still stack), by
#: this fraction of that step's residual (single steps of registered stacks stay below it).
MIN_FRAME_REDUCTION = 0.4
#: The cheap early test that registered frames are registered: a step whose motion, at the second-finest pyramid
#: level (half resolution), moves no point by this many input pixels or lowers the residual there by less than this
#: fraction is not refined at the finest level, nor applied (a real shift of 1 px lowers it far more at that level;
#: the finest level is three quarters of the work).
EARLY_STOP_PX, EARLY_STOP_REDUCTION = 0.5 * MIN_DISPLACEMENT_PX, 0.25 * MIN_RESIDUAL_REDUCTION
#: Coarsest pyramid level: about this many pixels on the long side (the cross-correlation search runs there).
COARSEST_SIZE = 64
#: Levenberg–Marquardt iterations per pyramid level (coarse levels, finest level) and the step, in pixels of the
#: level at the image corners, below which a level has converged.
ITERATIONS_COARSE, ITERATIONS_FINE, CONVERGED_PX = 12, 25, 0.01


@dataclass
class Alignment:
    """Result of :func:`estimate_alignment`.

    Attributes:
        matrices: (N, 3, 3) float64, reference pixel → frame pixel (see module docstring); identity for the frames
            whose motion was not worth applying (all of them when ``applied`` is False).
        reference: index of the reference frame.
        scales, rotations_deg: (N,) the similarity's scale and rotation per frame (of the applied matrices).
        residual_before, residual_after: (N,) 1 − NCC of the band-pass images of each frame and its neighbour in
            the registration chain, without / with the applied alignment (0 for the reference; equal for a frame
            whose step was not applied).
        valid_box: (x0, y0, x1, y1) in reference pixels: the largest axis-aligned box that every frame covers (the
            whole image when nothing is applied).
        size: (H, W) of the images the matrices belong to.
        applied: whether any frame is moved. False: use the frames as they are (no warp, no crop).
        reason: one line saying what was decided and why (largest displacement, residual before → after).
        displacement_px: (N,) largest displacement over the image (corners included, input pixels) of the motion
            *estimated* between each frame and its neighbour in the chain, applied or not (0 for the reference).
        fitted_residual: (N,) the residual with that estimated motion, applied or not.
        applied_frames: the frames whose own step of the chain was applied.
        scale_noise: relative scale differences below this are within this estimate's noise (see
            :data:`SCALE_NOISE_PX`).
    """

    matrices: torch.Tensor
    reference: int
    scales: torch.Tensor
    rotations_deg: torch.Tensor
    residual_before: torch.Tensor
    residual_after: torch.Tensor
    valid_box: tuple[int, int, int, int]
    size: tuple[int, int]
    applied: bool = True
    reason: str = ""
    displacement_px: torch.Tensor | None = None
    fitted_residual: torch.Tensor | None = None
    applied_frames: tuple[int, ...] = field(default_factory=tuple)
    scale_noise: float = SCALE_NOISE

    @classmethod
    def identity(
        cls, n: int, size: tuple[int, int], reference: int, reason: str, residual: torch.Tensor | None = None,
        displacement_px: torch.Tensor | None = None, fitted_residual: torch.Tensor | None = None,
    ) -> "Alignment":
        """No motion for ``n`` frames of ``size`` (H, W): identity matrices, scales 1, the full image as the valid
        box, ``applied`` False, with ``reason``; ``residual`` (N,) is both residuals (zeros without it)."""
        h, w = size
        res = torch.zeros(n, dtype=torch.float64) if residual is None else torch.as_tensor(residual).double().clone()
        return cls(torch.eye(3, dtype=torch.float64).repeat(n, 1, 1), reference, torch.ones(n, dtype=torch.float64),
                   torch.zeros(n, dtype=torch.float64), res, res.clone(), (0, 0, int(w), int(h)), (int(h), int(w)),
                   applied=False, reason=reason, displacement_px=displacement_px, fitted_residual=fitted_residual)

    def rescaled(self, factor: float) -> "Alignment":
        """The same alignment for the images resized by ``factor`` (new size = factor × old size)."""
        h, w = self.size
        size = (round(h * factor), round(w * factor))
        disp = None if self.displacement_px is None else self.displacement_px * factor
        if not self.applied:
            return Alignment.identity(len(self.matrices), size, self.reference, self.reason, self.residual_before,
                                      disp, self.fitted_residual)
        s = torch.diag(torch.tensor([factor, factor, 1.0], dtype=torch.float64))
        s_inv = torch.diag(torch.tensor([1.0 / factor, 1.0 / factor, 1.0], dtype=torch.float64))
        m = s @ self.matrices @ s_inv
        box = tuple(int(round(v * factor)) for v in self.valid_box)
        return Alignment(m, self.reference, self.scales, self.rotations_deg, self.residual_before,
                         self.residual_after, box, size, self.applied, self.reason, disp, self.fitted_residual,
                         self.applied_frames, self.scale_noise)

    def to_dict(self) -> dict:
        """JSON-able description (for prediction.json)."""
        d = {
            "model": "similarity",
            "applied": bool(self.applied),
            "reason": self.reason,
            "applied_frames": [int(i) for i in self.applied_frames],
            "reference": self.reference,
            "image_size_hw": list(self.size),
            "matrices_ref_to_frame": [[[round(float(v), 8) for v in row] for row in m] for m in self.matrices],
            "scales": [round(float(v), 6) for v in self.scales],
            "rotations_deg": [round(float(v), 4) for v in self.rotations_deg],
            "residual_before": [round(float(v), 5) for v in self.residual_before],
            "residual_after": [round(float(v), 5) for v in self.residual_after],
            "valid_box_xyxy": list(self.valid_box),
        }
        if self.displacement_px is not None:
            d["estimated_displacement_px"] = [round(float(v), 3) for v in self.displacement_px]
        if self.fitted_residual is not None:
            d["fitted_residual"] = [round(float(v), 5) for v in self.fitted_residual]
        return d


def thin_lens_magnification_ratio(focal_length_m: float, focus_m: torch.Tensor, reference: int) -> torch.Tensor:
    """(N,) image scale of each frame relative to frame ``reference``: s_i / s_ref with s = fd·f / (fd − f)."""
    fd = torch.as_tensor(focus_m, dtype=torch.float64)
    f = float(focal_length_m)
    if not (fd > f).all():
        raise DefocusError("focus distances must lie beyond the focal length to predict the magnification")
    s = fd * f / (fd - f)
    return s / s[reference]


def _similarity(params: torch.Tensor, centre: tuple[float, float]) -> torch.Tensor:
    """(N, 3, 3) matrices from (N, 4) parameters (log scale, angle rad, tx, ty px) about ``centre``."""
    n = params.shape[0]
    s = torch.exp(params[:, 0])
    c, si = torch.cos(params[:, 1]), torch.sin(params[:, 1])
    cx, cy = centre
    m = torch.zeros(n, 3, 3, dtype=params.dtype)
    m[:, 0, 0], m[:, 0, 1] = s * c, -s * si
    m[:, 1, 0], m[:, 1, 1] = s * si, s * c
    m[:, 0, 2] = cx + params[:, 2] - (s * c * cx - s * si * cy)
    m[:, 1, 2] = cy + params[:, 3] - (s * si * cx + s * c * cy)
    m[:, 2, 2] = 1.0
    return m


def _grid(m: torch.Tensor, h: int, w: int, src_hw: tuple[int, int]) -> torch.Tensor:
    """Sampling grid (N, h, w, 2) for grid_sample: reference pixel centres mapped by m into normalised source coords."""
    ys = torch.arange(h, dtype=m.dtype) + 0.5
    xs = torch.arange(w, dtype=m.dtype) + 0.5
    yy, xx = torch.meshgrid(ys, xs, indexing="ij")
    pts = torch.stack([xx, yy, torch.ones_like(xx)], -1).reshape(-1, 3)  # (h·w, 3)
    mapped = torch.einsum("nij,pj->npi", m, pts)[..., :2]
    sh, sw = src_hw
    gx = mapped[..., 0] / sw * 2.0 - 1.0
    gy = mapped[..., 1] / sh * 2.0 - 1.0
    return torch.stack([gx, gy], -1).reshape(m.shape[0], h, w, 2)


def _max_displacement(m: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """(N,) largest distance (pixels) any point of an H × W image moves under the (N, 3, 3) matrices: a similarity
    moves points by an affine function of their position, so the largest is at a corner."""
    h, w = size
    corners = torch.tensor([[0.0, 0.0, 1.0], [w, 0.0, 1.0], [0.0, h, 1.0], [w, h, 1.0]], dtype=m.dtype).T
    return ((m @ corners)[:, :2] - corners[:2]).norm(dim=1).amax(dim=1)


def _features(grey: torch.Tensor, sigma: float) -> torch.Tensor:
    """Normalised band-pass images of grey images (N, 1, h, w): difference of Gaussians DoG(σ, 4σ), replicated
    borders, computed in the Fourier domain (one transform each way, whatever σ)."""
    # Band-pass (difference of Gaussians): linear, so two frames that differ by a symmetric blur keep their
    # correlation peak in place (a nonlinear feature such as the gradient magnitude would bias it).
    h, w = grey.shape[-2:]
    r = int(math.ceil(12 * sigma))  # 3 σ of the wider Gaussian
    x = F.pad(grey, (r, r, r, r), mode="replicate")
    hp, wp = x.shape[-2:]
    f2 = torch.fft.fftfreq(hp).view(-1, 1) ** 2 + torch.fft.rfftfreq(wp).view(1, -1) ** 2
    band = torch.exp(-2 * (math.pi * sigma) ** 2 * f2) - torch.exp(-2 * (4 * math.pi * sigma) ** 2 * f2)
    x = torch.fft.irfft2(torch.fft.rfft2(x) * band, s=(hp, wp))[..., r : r + h, r : r + w]
    return x / x.std(dim=(2, 3), keepdim=True).clamp_min(1e-8)


def _ncc_residual(ref: torch.Tensor, warped: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """1 − normalised cross-correlation per frame over the mask: (N,)."""
    wsum = mask.sum(dim=(1, 2, 3)).clamp_min(1.0)

    def centred(x: torch.Tensor) -> torch.Tensor:
        mean = (x * mask).sum(dim=(1, 2, 3), keepdim=True) / wsum.view(-1, 1, 1, 1)
        return (x - mean) * mask

    a, b = centred(ref), centred(warped)
    num = (a * b).sum(dim=(1, 2, 3))
    den = torch.sqrt((a * a).sum(dim=(1, 2, 3)) * (b * b).sum(dim=(1, 2, 3))).clamp_min(1e-12)
    return 1.0 - num / den


@contextmanager
def _one_thread():
    """Runs the block on one intra-op thread. The registration is hundreds of small tensor operations: a second
    thread gains little, and when other processes share the cores, threads that wait for one another at every
    operation made it 9 to 60 times slower (a 5 × 240 × 320 stack with one of two cores busy elsewhere: 7.3 s with
    two threads against 0.8 s with one; 12.7 s against 0.2 s on a loaded machine)."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(n)


class _Level:
    """One pyramid level of a (reference, moving) pair: band-pass features, the moving frame's gradients and the
    fixed sampling geometry, for repeated warps at parameters (log scale, angle, tx, ty in input pixels)."""

    def __init__(self, ref: torch.Tensor, mov: torch.Tensor, scale: float):
        self.ref, self.mov, self.s = ref, mov, scale
        _, _, h, w = ref.shape
        self.h, self.w = h, w
        self.cx, self.cy = w / 2.0, h / 2.0
        gx = F.pad(mov, (1, 1, 0, 0), mode="replicate")
        gy = F.pad(mov, (0, 0, 1, 1), mode="replicate")
        gx = 0.5 * (gx[..., 2:] - gx[..., :-2])
        gy = 0.5 * (gy[..., 2:, :] - gy[..., :-2, :])
        self.stack = torch.cat([mov, gx, gy], dim=1)  # (1, 3, h, w): value and gradient, sampled together
        self.ux = (torch.arange(w, dtype=torch.float32) + 0.5 - self.cx).view(1, w)
        self.uy = (torch.arange(h, dtype=torch.float32) + 0.5 - self.cy).view(h, 1)
        border = max(2, round(0.05 * min(h, w)))
        inner = torch.zeros(h, w, dtype=torch.bool)
        inner[border:-border, border:-border] = True
        self.inner = inner
        self.radius = math.hypot(self.cx, self.cy)

    def mapped(self, p: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """Frame coordinates (mx, my) of the reference pixels and the similarity's part (vx, vy) = sR(x − c)."""
        sc, th = math.exp(float(p[0])), float(p[1])
        a, b = sc * math.cos(th), sc * math.sin(th)
        vx = a * self.ux - b * self.uy
        vy = b * self.ux + a * self.uy
        return self.cx + float(p[2]) * self.s + vx, self.cy + float(p[3]) * self.s + vy, vx, vy

    def sample(self, image: torch.Tensor, mx: torch.Tensor, my: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``image`` (1, C, h, w) sampled at (mx, my) (bilinear), and where that is inside both the frame and the
        reference's inner area (a bool (h, w) mask)."""
        grid = torch.stack([mx / self.w * 2.0 - 1.0, my / self.h * 2.0 - 1.0], dim=-1)[None]
        out = F.grid_sample(image, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
        inside = (mx >= 0.5) & (mx <= self.w - 0.5) & (my >= 0.5) & (my <= self.h - 0.5) & self.inner
        return out, inside

    def cost(self, p: torch.Tensor) -> tuple[float, tuple | None]:
        """1 − NCC² (uncentred) of the warped moving features and the reference over their common area, and the
        quantities one Gauss–Newton step needs."""
        mx, my, vx, vy = self.mapped(p)
        sampled, inside = self.sample(self.stack, mx, my)
        m = inside.to(sampled.dtype)
        if float(m.sum()) < 16:
            return math.inf, None
        wv, wx, wy = sampled[0, 0], sampled[0, 1], sampled[0, 2]
        r0 = self.ref[0, 0]
        ww, rr, wr = float((m * wv * wv).sum()), float((m * r0 * r0).sum()), float((m * wv * r0).sum())
        if ww <= 0 or rr <= 0:
            return math.inf, None
        gain = wr / rr
        return 1.0 - wr * wr / (ww * rr), (m, wv - gain * r0, wx, wy, vx, vy)

    def step(self, parts: tuple, damping: float) -> torch.Tensor:
        """A Levenberg–Marquardt step (4,) float64 in (log scale, angle, tx, ty input pixels)."""
        m, res, wx, wy, vx, vy = parts
        jac = torch.stack([wx * vx + wy * vy, wy * vx - wx * vy, wx, wy]).reshape(4, -1)  # d warped / d params
        weighted = jac * m.reshape(1, -1)
        hess = (weighted @ jac.T).double()
        grad = (weighted @ res.reshape(-1)).double()
        hess = hess + damping * torch.diag(torch.diagonal(hess).clamp_min(1e-12))
        try:
            d = -torch.linalg.solve(hess, grad)
        except RuntimeError:
            return torch.zeros(4, dtype=torch.float64)
        d[2:] /= self.s  # level pixels -> input pixels
        return d

    def step_px(self, d: torch.Tensor) -> float:
        """Bound on how far a parameter change moves any point, in pixels of this level."""
        return float(d[0].abs() + d[1].abs()) * self.radius + float(d[2:].norm()) * self.s

    def refine(self, p: torch.Tensor, iterations: int) -> torch.Tensor:
        """Levenberg–Marquardt from ``p``: each accepted step lowers the cost."""
        cost, parts = self.cost(p)
        if parts is None:
            return p
        damping = 1e-3
        for _ in range(iterations):
            d = self.step(parts, damping)
            trial = p + d
            c, q = self.cost(trial)
            if q is not None and c <= cost:
                p, cost, parts = trial, c, q
                damping = max(damping / 3.0, 1e-6)
                if self.step_px(d) < CONVERGED_PX:
                    break
            else:
                damping *= 10.0
                if damping > 1e4:
                    break
        return p

    def correlation_shift(self) -> tuple[float, float]:
        """The translation (input pixels) at the peak of the cross-correlation of the two levels' features."""
        h, w = self.h, self.w
        a = self.ref[0, 0] * self.inner
        b = self.mov[0, 0]
        fa = torch.fft.rfft2(a, s=(2 * h, 2 * w))
        fb = torch.fft.rfft2(b, s=(2 * h, 2 * w))
        corr = torch.fft.irfft2(fa.conj() * fb, s=(2 * h, 2 * w))  # corr[t] = Σ a(x) b(x + t)
        k = int(torch.argmax(corr))
        ty, tx = divmod(k, 2 * w)
        ty = ty - 2 * h if ty >= h else ty
        tx = tx - 2 * w if tx >= w else tx
        return tx / self.s, ty / self.s

    def residual(self, p: torch.Tensor) -> float:
        """1 − NCC (centred, as reported) of the reference and the moving features warped by ``p``."""
        mx, my, _, _ = self.mapped(p)
        warped, inside = self.sample(self.mov, mx, my)
        return float(_ncc_residual(self.ref, warped, inside[None, None].to(warped.dtype))[0])


def _area(x: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """``x`` (N, C, h, w) area-resized to ``size`` (itself when it has that size)."""
    return x if tuple(x.shape[-2:]) == tuple(size) else F.interpolate(x, size=size, mode="area")


def _pyramid(h: int, w: int, max_size: int) -> list[float]:
    """Scales of the pyramid levels (coarse to fine) relative to an H × W input; the finest has ``max_size`` px."""
    s = min(1.0, max_size / max(h, w))
    levels = [s]
    while max(h, w) * s / 2 >= COARSEST_SIZE:
        s /= 2
        levels.append(s)
    return levels[::-1]


def _register_pair(
    ref_levels: list[torch.Tensor], mov_levels: list[torch.Tensor], scales: list[float], init_log_scale: float,
    size: tuple[int, int],
) -> dict:
    """Registers one frame to its neighbour over the pyramid. Returns the parameters (4,) float64 (log scale, angle,
    tx, ty in input pixels about the image centre), the residual without / with them at the finest level, their
    largest displacement over the image (input pixels), and whether the early test stopped the refinement."""
    h, w = size

    def displacement(q: torch.Tensor) -> float:
        return float(_max_displacement(_similarity(q[None], (w / 2.0, h / 2.0)), size)[0])

    zero = torch.zeros(4, dtype=torch.float64)
    p, early, last = zero, False, len(scales) - 1
    for li, (ref, mov, s) in enumerate(zip(ref_levels, mov_levels, scales)):
        level = _Level(ref, mov, s)
        if early:  # the finest level only measures the residuals of the motion found so far
            break
        if li == 0:
            # Start from the best of: no motion, the thin-lens scale, and either with the correlation peak's shift.
            tx, ty = level.correlation_shift()
            starts = [zero, torch.tensor([init_log_scale, 0.0, 0.0, 0.0], dtype=torch.float64),
                      torch.tensor([0.0, 0.0, tx, ty], dtype=torch.float64),
                      torch.tensor([init_log_scale, 0.0, tx, ty], dtype=torch.float64)]
            p = min(starts, key=lambda q: level.cost(q)[0])
        p = level.refine(p, ITERATIONS_FINE if li == last else ITERATIONS_COARSE)
        if li == last - 1:
            before = level.residual(zero)
            gain = 1.0 - level.residual(p) / before if before > 0 else 0.0
            early = displacement(p) < EARLY_STOP_PX or gain < EARLY_STOP_REDUCTION
    return {"params": p, "before": level.residual(zero), "after": level.residual(p), "displacement": displacement(p),
            "early": early}


def _decide(steps: dict) -> float:
    """Marks each step (frame → result of :func:`_register_pair`) ``apply`` True or False (module docstring) and
    returns the fraction by which the estimated motion lowers the chain's residual."""
    before = sum(r["before"] for r in steps.values())
    after = sum(min(r["after"], r["before"]) for r in steps.values())
    reduction = 1.0 - after / before if before > 0 else 0.0
    for r in steps.values():
        own = 1.0 - r["after"] / r["before"] if r["before"] > 0 else 0.0
        r["apply"] = (not r["early"] and r["displacement"] >= MIN_DISPLACEMENT_PX and r["after"] < r["before"]
                      and (reduction >= MIN_RESIDUAL_REDUCTION or own >= MIN_FRAME_REDUCTION))
    return reduction


def estimate_alignment(
    images: torch.Tensor,
    focus_m: torch.Tensor | None = None,
    focal_length_m: float | None = None,
    reference: int | None = None,
    max_size: int = 512,
    smoothing_px: float = 2.0,
) -> Alignment:
    """Registers every frame of a stack to the reference frame and decides whether that is worth applying (see
    module docstring).

    Frames are registered in a chain, each to its neighbour in focus order on the way to the reference (neighbours
    differ least in blur), and the applied steps are composed. The frames are registered on grey copies whose long
    side is ``max_size``; the matrices are for the images as given. When no step is worth applying the result is
    :meth:`Alignment.identity` (``applied`` False, ``reason`` says why).

    Args:
        images: (N, 3, H, W) frames in [0, 1].
        focus_m: (N,) focus distances (metres), for the focus order, the reference and the initial scales; without
            them the file order is used and the scales start at 1.
        focal_length_m: the lens's focal length, for the thin-lens initial scales (with ``focus_m``).
        reference: index of the reference frame (default: the middle one in focus order).
        max_size: longest side of the finest pyramid level.
        smoothing_px: σ (pixels of each pyramid level) of the band-pass features: DoG(σ, 4σ).
    """
    sizes = check_shape(images, "N 3 H W", "images")
    n, h, w = sizes["N"], sizes["H"], sizes["W"]
    if focus_m is not None:
        focus_m = torch.as_tensor(focus_m, dtype=torch.float64).flatten()
        if focus_m.numel() != n:
            raise DefocusError(f"{n} frames but {focus_m.numel()} focus distances")
        order = [int(i) for i in torch.argsort(focus_m)]
    else:
        order = list(range(n))
    if reference is None:
        reference = order[n // 2]
    if not 0 <= reference < n:
        raise DefocusError(f"reference frame {reference} out of range for {n} frames")
    ratio = torch.ones(n, dtype=torch.float64)
    if focus_m is not None and focal_length_m is not None:
        ratio = thin_lens_magnification_ratio(focal_length_m, focus_m, reference)
    scales = _pyramid(h, w, max_size)
    level_sizes = [(max(8, round(h * s)), max(8, round(w * s))) for s in scales]
    with torch.no_grad():
        # One grey float32 copy of each frame at the finest level's size: all the registration works on those.
        finest = torch.cat([_area(to_grey(images[i : i + 1].float())[:, None], level_sizes[-1]) for i in range(n)])
        with _one_thread():
            feats = [_features(_area(finest, hw), smoothing_px) for hw in level_sizes]
            steps = {}
            pos = order.index(reference)
            # Walk outwards from the reference: each frame is registered to the previous one in the chain.
            for side in (range(pos - 1, -1, -1), range(pos + 1, n)):
                prev = reference
                for k in side:
                    i = order[k]
                    steps[i] = _register_pair([f[prev : prev + 1] for f in feats], [f[i : i + 1] for f in feats],
                                              scales, math.log(float(ratio[i] / ratio[prev])), (h, w))
                    steps[i]["prev"] = prev
                    prev = i
    hf, wf = level_sizes[-1]
    return _compose(steps, order, reference, n, (h, w), max(SCALE_NOISE, SCALE_NOISE_PX / math.hypot(hf / 2, wf / 2)))


def _compose(
    steps: dict, order: list[int], reference: int, n: int, size: tuple[int, int], scale_noise: float
) -> Alignment:
    """The alignment from the chain's steps (frame → its registration), after the decision."""
    h, w = size
    reduction = _decide(steps)
    disp = torch.zeros(n, dtype=torch.float64)
    fitted = torch.zeros(n, dtype=torch.float64)
    before = torch.zeros(n, dtype=torch.float64)
    after = torch.zeros(n, dtype=torch.float64)
    for i, r in steps.items():
        disp[i], fitted[i], before[i] = r["displacement"], r["after"], r["before"]
        after[i] = r["after"] if r["apply"] else r["before"]
    applied = sorted(i for i, r in steps.items() if r["apply"])
    kept = sorted(i for i, r in steps.items() if not r["apply"])

    def summary(frames: list[int]) -> str:
        b = sum(float(before[i]) for i in frames) / len(frames)
        a = sum(float(fitted[i]) for i in frames) / len(frames)
        return f"largest displacement {max(float(disp[i]) for i in frames):.2f} px, residual {b:.3f} -> {a:.3f}"

    if not steps:
        return Alignment.identity(n, size, reference, "a single frame: nothing to align")
    if not applied:
        if float(disp.max()) < MIN_DISPLACEMENT_PX:
            reason = f"nothing to correct (under {MIN_DISPLACEMENT_PX:g} px): " + summary(kept)
        else:
            reason = (f"no camera motion found: the fitted motion lowers the residual by {100 * reduction:.0f} % "
                      f"(under {100 * MIN_RESIDUAL_REDUCTION:.0f} %), what is left is the frames' different blur: "
                      + summary(kept))
        return Alignment.identity(n, size, reference, reason, before, disp, fitted)
    centre = (w / 2.0, h / 2.0)
    matrices = torch.zeros(n, 3, 3, dtype=torch.float64)
    matrices[reference] = torch.eye(3, dtype=torch.float64)
    pos = order.index(reference)
    for side in (range(pos - 1, -1, -1), range(pos + 1, n)):
        for k in side:
            r = steps[order[k]]
            step = _similarity(r["params"][None], centre)[0] if r["apply"] else torch.eye(3, dtype=torch.float64)
            matrices[order[k]] = step @ matrices[r["prev"]]
    reason = (f"applied to frame{'s' if len(applied) > 1 else ''} {', '.join(map(str, applied))} (residual "
              f"{100 * reduction:.0f} % lower over the chain): " + summary(applied))
    if kept:
        reason += f"; frame{'s' if len(kept) > 1 else ''} {', '.join(map(str, kept))} left as taken: " + summary(kept)
    sc = torch.sqrt(torch.det(matrices[:, :2, :2]).abs())
    rotations = torch.rad2deg(torch.atan2(matrices[:, 1, 0], matrices[:, 0, 0]))
    corners = torch.tensor([[0.0, 0.0, 1.0], [w, 0.0, 1.0], [0.0, h, 1.0], [w, h, 1.0]], dtype=torch.float64)
    x0, y0, x1, y1 = 0.0, 0.0, float(w), float(h)
    for i in range(n):
        c = (torch.linalg.inv(matrices[i]) @ corners.T).T  # frame corners in reference pixels: tl, tr, bl, br
        x0 = max(x0, float(c[0, 0]), float(c[2, 0]))
        x1 = min(x1, float(c[1, 0]), float(c[3, 0]))
        y0 = max(y0, float(c[0, 1]), float(c[1, 1]))
        y1 = min(y1, float(c[2, 1]), float(c[3, 1]))
    box = (int(math.ceil(x0 - 1e-6)), int(math.ceil(y0 - 1e-6)), int(math.floor(x1 + 1e-6)),
           int(math.floor(y1 + 1e-6)))
    if box[2] - box[0] < 8 or box[3] - box[1] < 8:
        raise InputError("the frames do not overlap after alignment: are they one scene? (or turn the alignment off)",
                         field="align")
    return Alignment(matrices, reference, sc, rotations, before, after, box, size, True, reason, disp, fitted,
                     tuple(applied), scale_noise)


def warp_to_reference(
    images: torch.Tensor, alignment: Alignment, out: torch.Tensor | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Warps every frame into the reference grid (bilinear), one frame at a time; frames with an identity matrix
    (all of them when ``alignment.applied`` is False) are passed through unchanged, not resampled.

    Args:
        images: (N, C, H, W) frames of the size the alignment belongs to (else rescale it first).
        out: optional (N, C, H, W) tensor to write into — may be ``images`` itself (in place, to bound memory).
    Returns:
        (warped (N, C, H, W), coverage (N, 1, H, W) in [0, 1]: 1 where the frame covers the reference pixel).
    """
    sizes = check_shape(images, "N C H W", "images")
    h, w = sizes["H"], sizes["W"]
    if (h, w) != tuple(alignment.size):
        raise DefocusError(f"images are {w}x{h} but the alignment is for {alignment.size[1]}x{alignment.size[0]}: "
                           "use alignment.rescaled(factor)")
    out = torch.empty_like(images) if out is None else out
    coverage = torch.ones(sizes["N"], 1, h, w, dtype=images.dtype)
    eye = torch.eye(3, dtype=alignment.matrices.dtype)
    for i in range(sizes["N"]):
        if not alignment.applied or torch.equal(alignment.matrices[i], eye):
            if out.data_ptr() != images.data_ptr():
                out[i] = images[i]
            continue
        # The similarity in normalised coordinates (pixel centres, align_corners=False): N M N⁻¹.
        norm = torch.tensor([[2.0 / w, 0.0, -1.0], [0.0, 2.0 / h, -1.0], [0.0, 0.0, 1.0]], dtype=torch.float64)
        theta = (norm @ alignment.matrices[i].double() @ torch.linalg.inv(norm))[:2]
        g = F.affine_grid(theta[None].to(images.dtype), [1, 1, h, w], align_corners=False)
        coverage[i] = F.grid_sample(torch.ones(1, 1, h, w, dtype=images.dtype), g, mode="bilinear",
                                    padding_mode="zeros", align_corners=False)[0]
        out[i] = F.grid_sample(images[i : i + 1], g, mode="bilinear", padding_mode="border",
                               align_corners=False)[0]
        del g
    return out, coverage


def focus_order_votes(alignment: Alignment, focus_m: torch.Tensor) -> tuple[int, int]:
    """(agree, disagree): the frame pairs whose measured magnification (scales differing by more than the
    alignment's ``scale_noise``) follows, or contradicts, their focus distances (magnification grows as focus comes
    nearer). An alignment that was not applied measured nothing: (0, 0)."""
    if not alignment.applied:
        return 0, 0
    fd = torch.as_tensor(focus_m, dtype=torch.float64).flatten()
    sc = alignment.scales.double()
    noise = max(SCALE_NOISE, float(getattr(alignment, "scale_noise", SCALE_NOISE)))
    agree = disagree = 0
    for i in range(len(fd)):
        for j in range(i + 1, len(fd)):
            ds = float(torch.log(sc[i] / sc[j]))
            if abs(ds) < noise or float(fd[i]) == float(fd[j]):
                continue
            if (ds > 0) == (float(fd[i]) < float(fd[j])):
                agree += 1
            else:
                disagree += 1
    return agree, disagree


def breathing_correlation(alignment: Alignment, focus_m: torch.Tensor, focal_length_m: float) -> float:
    """Pearson correlation, over the frames, of the measured log image scale with the log magnification the thin
    lens predicts for the given focus distances (:func:`thin_lens_magnification_ratio`): near +1 when the frames
    breathe as their focus distances say, near −1 when the distances are in the reverse order of the files, anywhere
    between for hand-held scale jitter. 0 where nothing was measured (alignment not applied, equal scales or
    focus)."""
    if not alignment.applied:
        return 0.0
    fd = torch.as_tensor(focus_m, dtype=torch.float64).flatten()
    try:
        predicted = torch.log(thin_lens_magnification_ratio(focal_length_m, fd, int(alignment.reference)))
    except DefocusError:
        return 0.0
    measured = torch.log(alignment.scales.double())
    a, b = predicted - predicted.mean(), measured - measured.mean()
    den = float(a.norm() * b.norm())
    return float((a * b).sum()) / den if den > 0 else 0.0


def check_focus_order(alignment: Alignment, focus_m: torch.Tensor) -> str | None:
    """A warning when the magnification found disagrees with the given focus distances, else None.

    Magnification grows as focus comes nearer. Frames whose scales differ by more than the alignment's
    ``scale_noise`` are compared pairwise; if most such pairs are ordered against their focus distances, the focus
    distances are probably assigned to the wrong files (e.g. ``*_far`` and ``*_near`` swapped). An alignment that was
    not applied measured no magnification: no warning.
    """
    agree, disagree = focus_order_votes(alignment, focus_m)
    if disagree > agree:
        order = ", ".join(f"{float(v):.3g} m" for v in torch.as_tensor(focus_m).flatten())
        return (f"the frames' magnification says the focus order is the opposite of the given focus distances "
                f"({order}; {disagree} of {agree + disagree} frame pairs disagree): check that each distance "
                "belongs to its file")
    return None
