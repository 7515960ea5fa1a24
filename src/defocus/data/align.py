"""Registration of the frames of a hand-held focal stack (shift, small rotation, focus breathing).

Each frame is registered to a reference frame (the middle focus distance) by a similarity transform: isotropic scale
(the magnification change with focus, "focus breathing"), rotation and translation. The scale starts from the
thin-lens prediction: a frame focused at ``fd`` has its sensor at ``s = fd·f/(fd − f)``, and the image of a fixed scene
scales with ``s``, so frame i appears magnified by ``s_i / s_ref`` relative to the reference.

Frames differ in blur (each is focused elsewhere). The matching compares band-pass (difference-of-Gaussians)
images by normalised cross-correlation: a linear filter keeps the correlation peak of two frames that differ by a
symmetric blur in place, where a nonlinear feature (gradient magnitude) biases it. Frames are registered in a chain,
each to its neighbour in focus order (neighbours differ least in blur), coarse to fine over an image pyramid (from
about 64 px up to ``max_size``), with sign-gradient steps at the coarse levels and L-BFGS at the finest.

Coordinates: a matrix ``M`` (3 × 3) maps *reference pixel coordinates* (x right, y down, pixel centres at
integer + 0.5) to the same point's coordinates in the frame; warping frame i into the reference grid samples frame i
at ``M_i @ [x, y, 1]``. Matrices are given for the images passed to :func:`estimate_alignment`; use
:meth:`Alignment.rescaled` for images resized by a factor.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from defocus.checks import check_shape
from defocus.color import to_grey
from defocus.errors import DefocusError

#: Scale differences (relative) below this are within the estimation noise: the focus-order check ignores them.
SCALE_NOISE = 5e-4


@dataclass
class Alignment:
    """Result of :func:`estimate_alignment`.

    Attributes:
        matrices: (N, 3, 3) float64, reference pixel → frame pixel (see module docstring).
        reference: index of the reference frame.
        scales, rotations_deg: (N,) the similarity's scale and rotation per frame.
        residual_before, residual_after: (N,) 1 − NCC of the smoothed gradient images of each frame and its
            neighbour in the registration chain, without / with the alignment (0 for the reference).
        valid_box: (x0, y0, x1, y1) in reference pixels: the largest axis-aligned box that every frame covers.
        size: (H, W) of the images the matrices belong to.
    """

    matrices: torch.Tensor
    reference: int
    scales: torch.Tensor
    rotations_deg: torch.Tensor
    residual_before: torch.Tensor
    residual_after: torch.Tensor
    valid_box: tuple[int, int, int, int]
    size: tuple[int, int]

    def rescaled(self, factor: float) -> "Alignment":
        """The same alignment for the images resized by ``factor`` (new size = factor × old size)."""
        s = torch.diag(torch.tensor([factor, factor, 1.0], dtype=torch.float64))
        s_inv = torch.diag(torch.tensor([1.0 / factor, 1.0 / factor, 1.0], dtype=torch.float64))
        m = s @ self.matrices @ s_inv
        h, w = self.size
        box = tuple(int(round(v * factor)) for v in self.valid_box)
        return Alignment(m, self.reference, self.scales, self.rotations_deg, self.residual_before,
                         self.residual_after, box, (round(h * factor), round(w * factor)))

    def to_dict(self) -> dict:
        """JSON-able description (for prediction.json)."""
        return {
            "model": "similarity",
            "reference": self.reference,
            "image_size_hw": list(self.size),
            "matrices_ref_to_frame": [[[round(float(v), 8) for v in row] for row in m] for m in self.matrices],
            "scales": [round(float(v), 6) for v in self.scales],
            "rotations_deg": [round(float(v), 4) for v in self.rotations_deg],
            "residual_before": [round(float(v), 5) for v in self.residual_before],
            "residual_after": [round(float(v), 5) for v in self.residual_after],
            "valid_box_xyxy": list(self.valid_box),
        }


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


def _features(grey: torch.Tensor, sigma: float) -> torch.Tensor:
    """Normalised, smoothed gradient magnitude of grey images (N, 1, h, w)."""
    def blur(x: torch.Tensor, s: float) -> torch.Tensor:
        r = max(1, int(math.ceil(3 * s)))
        t = torch.arange(-r, r + 1, dtype=x.dtype)
        g = torch.exp(-(t * t) / (2 * s * s))
        g = (g / g.sum()).to(x.dtype)
        x = F.conv2d(F.pad(x, (r, r, 0, 0), mode="replicate"), g.view(1, 1, 1, -1))
        return F.conv2d(F.pad(x, (0, 0, r, r), mode="replicate"), g.view(1, 1, -1, 1))

    # Band-pass (difference of Gaussians): linear, so two frames that differ by a symmetric blur keep their
    # correlation peak in place (a nonlinear feature such as the gradient magnitude would bias it).
    x = blur(grey, sigma) - blur(grey, 4.0 * sigma)
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


@torch.enable_grad()  # callers may run under no_grad (prediction); the registration optimises with autograd
def _register(
    grey: torch.Tensor, reference: int, init: torch.Tensor, max_size: int, smoothing_px: float
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Similarity parameters (N, 4) registering every frame of ``grey`` (N, 1, H, W) to frame ``reference``,
    coarse to fine from ``init``; returns (parameters, residual without, residual with the alignment)."""
    n, _, h, w = grey.shape
    scale0 = min(1.0, max_size / max(h, w))
    levels, s = [], scale0
    while True:
        levels.append(s)
        if max(h, w) * s / 2 < 64:
            break
        s /= 2
    levels.reverse()
    identity = torch.zeros(n, 4, dtype=torch.float64)
    params = init.clone()
    before = after = None
    for li, s in enumerate(levels):
        hs, ws = max(8, round(h * s)), max(8, round(w * s))
        feats = _features(F.interpolate(grey, size=(hs, ws), mode="area"), smoothing_px).double()
        ref = feats[reference : reference + 1].expand(n, -1, -1, -1)
        centre = (ws / 2.0, hs / 2.0)
        border = max(2, round(0.05 * min(hs, ws)))
        inner = torch.zeros(1, 1, hs, ws, dtype=torch.float64)
        inner[..., border:-border, border:-border] = 1.0
        ones = torch.ones(n, 1, hs, ws, dtype=torch.float64)

        def residual(p: torch.Tensor) -> torch.Tensor:
            q = torch.cat([p[:, :2], p[:, 2:] * s], dim=1)  # translations are kept in full-resolution pixels
            g = _grid(_similarity(q, centre), hs, ws, (hs, ws))
            warped = F.grid_sample(feats, g, mode="bilinear", padding_mode="zeros", align_corners=False)
            cover = F.grid_sample(ones, g, mode="bilinear", padding_mode="zeros", align_corners=False)
            return _ncc_residual(ref, warped, inner * (cover > 0.999).double())

        if li == 0:
            with torch.no_grad():
                keep = residual(params) <= residual(identity)
            # Keep the thin-lens start only where it is not worse than no transform at all.
            params = torch.where(keep[:, None], params, identity)
        p = params.clone().requires_grad_(True)
        if li < len(levels) - 1:
            # Sign-gradient steps with a decaying size per parameter kind (a fraction of a pixel at this level for
            # translation, 0.2 % for scale and rotation): robust whatever the loss's scale per parameter.
            steps = torch.tensor([2e-3, 2e-3, 0.5 / s, 0.5 / s], dtype=torch.float64)
            for it in range(60):
                p.grad = None
                residual(p).sum().backward()
                with torch.no_grad():
                    p.grad[reference] = 0.0
                    p -= torch.sign(p.grad) * steps * (0.96**it)
        else:
            opt = torch.optim.LBFGS([p], lr=0.5, max_iter=50, line_search_fn="strong_wolfe")

            def closure():
                opt.zero_grad()
                loss = residual(p).sum()
                loss.backward()
                p.grad[reference] = 0.0
                return loss

            opt.step(closure)
        params = p.detach().clone()
        params[reference] = 0.0
        if li == len(levels) - 1:
            with torch.no_grad():
                before, after = residual(identity), residual(params)
    return params, before, after


def estimate_alignment(
    images: torch.Tensor,
    focus_m: torch.Tensor | None = None,
    focal_length_m: float | None = None,
    reference: int | None = None,
    max_size: int = 512,
    smoothing_px: float = 2.0,
) -> Alignment:
    """Registers every frame of a stack to the reference frame (see module docstring).

    Frames are registered in a chain, each to its neighbour in focus order on the way to the reference (neighbours
    differ least in blur), and the transforms are composed.

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
    grey = to_grey(images)[:, None].float()
    centre = (w / 2.0, h / 2.0)
    matrices = torch.zeros(n, 3, 3, dtype=torch.float64)
    matrices[reference] = torch.eye(3, dtype=torch.float64)
    before = torch.zeros(n, dtype=torch.float64)
    after = torch.zeros(n, dtype=torch.float64)
    pos = order.index(reference)
    # Walk outwards from the reference: each frame is registered to the previous one in the chain.
    for side in (range(pos - 1, -1, -1), range(pos + 1, n)):
        prev = reference
        for k in side:
            i = order[k]
            init = torch.zeros(2, 4, dtype=torch.float64)
            init[1, 0] = math.log(float(ratio[i] / ratio[prev]))
            p, b, a = _register(grey[[prev, i]], 0, init, max_size, smoothing_px)
            if float(a[1]) > float(b[1]):  # the optimisation made it worse: keep the frame as it is
                p, a = torch.zeros_like(p), b
            step = _similarity(p, centre)[1]  # prev pixel -> frame i pixel
            matrices[i] = step @ matrices[prev]
            before[i], after[i] = b[1], a[1]
            prev = i
    scales = torch.sqrt(torch.det(matrices[:, :2, :2]).abs())
    rotations = torch.rad2deg(torch.atan2(matrices[:, 1, 0], matrices[:, 0, 0]))
    corners = torch.tensor([[0.0, 0.0, 1.0], [w, 0.0, 1.0], [0.0, h, 1.0], [w, h, 1.0]], dtype=torch.float64)
    x0, y0, x1, y1 = 0.0, 0.0, float(w), float(h)
    for i in range(n):
        c = (torch.linalg.inv(matrices[i]) @ corners.T).T  # frame corners in reference pixels: tl, tr, bl, br
        x0 = max(x0, float(c[0, 0]), float(c[2, 0]))
        x1 = min(x1, float(c[1, 0]), float(c[3, 0]))
        y0 = max(y0, float(c[0, 1]), float(c[1, 1]))
        y1 = min(y1, float(c[2, 1]), float(c[3, 1]))
    box = (int(math.ceil(x0)), int(math.ceil(y0)), int(math.floor(x1)), int(math.floor(y1)))
    if box[2] - box[0] < 8 or box[3] - box[1] < 8:
        raise DefocusError("the frames do not overlap after alignment: are they one scene? (try --no-align)")
    return Alignment(matrices, reference, scales, rotations, before, after, box, (h, w))


def warp_to_reference(
    images: torch.Tensor, alignment: Alignment, out: torch.Tensor | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Warps every frame into the reference grid (bilinear), one frame at a time.

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
    coverage = torch.empty(sizes["N"], 1, h, w, dtype=images.dtype)
    for i in range(sizes["N"]):
        g = _grid(alignment.matrices[i : i + 1], h, w, (h, w)).to(images.dtype)
        coverage[i] = F.grid_sample(torch.ones(1, 1, h, w, dtype=images.dtype), g, mode="bilinear",
                                    padding_mode="zeros", align_corners=False)[0]
        out[i] = F.grid_sample(images[i : i + 1], g, mode="bilinear", padding_mode="border",
                               align_corners=False)[0]
        del g
    return out, coverage


def check_focus_order(alignment: Alignment, focus_m: torch.Tensor) -> str | None:
    """A warning when the magnification found disagrees with the given focus distances, else None.

    Magnification grows as focus comes nearer. Frames whose scales differ by more than :data:`SCALE_NOISE` are
    compared pairwise; if most such pairs are ordered against their focus distances, the focus distances are
    probably assigned to the wrong files (e.g. ``*_far`` and ``*_near`` swapped).
    """
    fd = torch.as_tensor(focus_m, dtype=torch.float64).flatten()
    sc = alignment.scales.double()
    agree = disagree = 0
    for i in range(len(fd)):
        for j in range(i + 1, len(fd)):
            ds = float(torch.log(sc[i] / sc[j]))
            if abs(ds) < SCALE_NOISE or float(fd[i]) == float(fd[j]):
                continue
            nearer_i = float(fd[i]) < float(fd[j])
            if (ds > 0) == nearer_i:
                agree += 1
            else:
                disagree += 1
    if disagree > agree:
        order = ", ".join(f"{float(v):.3g} m" for v in fd)
        return (f"the frames' magnification says the focus order is the opposite of the given focus distances "
                f"({order}; {disagree} of {agree + disagree} frame pairs disagree): check that each distance "
                "belongs to its file")
    return None
