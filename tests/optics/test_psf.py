"""Tests for defocus.optics.psf: the discrete Gaussian, the anti-aliased disk, blur sizes from the optics."""

from __future__ import annotations

import math

import pytest
import torch

from defocus.errors import DefocusError, InputError
from defocus.optics.camera import PRESETS
from defocus.optics.psf import (
    GENNORM_SHAPE,
    blur_size_px,
    check_psf,
    discrete_gaussian_1d,
    disk_kernel_2d,
    disk_weights,
    gaussian_kernel_2d,
    gennorm_kernel_2d,
    kernel_radius,
    psf_kernel_2d,
)

NYU = PRESETS["nyuv2"].camera
SIGMAS = [0.05, 0.2, 0.5, 1.0, 2.3, 5.0]


def _dg(sigma: float, radius: int) -> torch.Tensor:
    return discrete_gaussian_1d(torch.tensor(sigma, dtype=torch.float64), radius)


def _series_bessel_i(n: int, t: float, terms: int = 25) -> float:
    """Modified Bessel function I_n(t) from its power series Σ_k (t/2)^(2k+n) / (k!·(k+n)!)."""
    return sum((t / 2) ** (2 * k + n) / (math.factorial(k) * math.factorial(k + n)) for k in range(terms))


# ------------------------------------------------------------------------------------------ discrete Gaussian
def test_discrete_gaussian_hand_computed_sigma_1():
    # σ = 1 → t = σ² = 1; window −1..1, weights ∝ I_1(1), I_0(1), I_1(1):
    #   I_0(1) = 1 + 1/4 + 1/64 + 1/2304 + 1/147456 + … = 1.2660658778
    #   I_1(1) = 1/2 + 1/16 + 1/384 + 1/18432 + 1/1474560 + … = 0.5651591040
    #   sum = 1.2660658778 + 2·0.5651591040 = 2.3963840858
    #   kernel = [0.5651591040, 1.2660658778, 0.5651591040] / 2.3963840858 = [0.2358383, 0.5283234, 0.2358383]
    k = _dg(1.0, 1)
    assert k.tolist() == pytest.approx([0.2358382812, 0.5283234375, 0.2358382812], abs=1e-9)
    i0, i1 = _series_bessel_i(0, 1.0), _series_bessel_i(1, 1.0)
    assert i0 == pytest.approx(1.2660658778, abs=1e-9) and i1 == pytest.approx(0.5651591040, abs=1e-9)
    assert k[1].item() == pytest.approx(i0 / (i0 + 2 * i1), abs=1e-12)


def test_discrete_gaussian_hand_computed_sigma_half():
    # σ = 0.5 → t = 0.25; I_0 = 1.0156861412, I_1 = 0.1259791089, I_2 = 0.0078532697 (series above);
    # window −2..2 sums to 1.0156861412 + 2·(0.1259791089 + 0.0078532697) = 1.2833508984
    #   kernel = [0.0061193, 0.0981642, 0.7914329, 0.0981642, 0.0061193]
    k = _dg(0.5, 2)
    t = 0.25
    raw = [_series_bessel_i(abs(n), t) for n in range(-2, 3)]
    expected = [v / sum(raw) for v in raw]
    assert k.tolist() == pytest.approx(expected, abs=1e-12)
    assert k.tolist() == pytest.approx([0.0061193471, 0.0981641959, 0.7914329140, 0.0981641959, 0.0061193471], abs=1e-9)


@pytest.mark.parametrize("sigma", SIGMAS)
def test_discrete_gaussian_matches_scipy_ive(sigma):
    special = pytest.importorskip("scipy.special")
    radius = int(6 * sigma + 10)  # wide enough that the truncated mass is below 1e-12
    n = torch.arange(-radius, radius + 1, dtype=torch.float64)
    expected = torch.as_tensor(special.ive(n.abs().numpy(), sigma * sigma))  # e^{-t} I_n(t), t = σ²
    assert expected.sum().item() == pytest.approx(1.0, abs=1e-10)
    torch.testing.assert_close(_dg(sigma, radius), expected, rtol=1e-9, atol=1e-14)
    # on a short window, the kernel is the same values renormalised within it
    r = max(1, int(2 * sigma))
    short = expected[radius - r : radius + r + 1]
    torch.testing.assert_close(_dg(sigma, r), short / short.sum(), rtol=1e-9, atol=1e-14)


@pytest.mark.parametrize("sigma", SIGMAS + [8.0])
def test_discrete_gaussian_sum_and_variance(sigma):
    radius = int(6 * sigma + 10)
    k = _dg(sigma, radius)
    n = torch.arange(-radius, radius + 1, dtype=torch.float64)
    assert k.sum().item() == pytest.approx(1.0, abs=1e-12)
    assert (k >= 0).all()
    torch.testing.assert_close(k, k.flip(-1))  # symmetric
    assert (k * n).sum().item() == pytest.approx(0.0, abs=1e-12)
    # the discrete Gaussian's variance is exactly t = σ² for every σ
    assert (k * n * n).sum().item() == pytest.approx(sigma * sigma, rel=1e-9, abs=1e-12)
    # with the window kernel_radius picks, the truncation costs < 1e-3 of the mass and little variance
    r = kernel_radius(sigma, "gaussian")
    kr = _dg(sigma, r)
    nr = torch.arange(-r, r + 1, dtype=torch.float64)
    assert (k[radius - r : radius + r + 1]).sum().item() > 1 - 1e-3
    assert (kr * nr * nr).sum().item() == pytest.approx(sigma * sigma, rel=2e-2, abs=1e-12)


def test_discrete_gaussian_batched_shapes_and_unimodal():
    sigma = torch.tensor([[0.0, 0.3], [1.0, 3.0]], dtype=torch.float64)
    k = discrete_gaussian_1d(sigma, 7)
    assert k.shape == (2, 2, 15)
    torch.testing.assert_close(k.sum(-1), torch.ones(2, 2, dtype=torch.float64))
    half = k[..., 7:]
    assert (half[..., 1:] <= half[..., :-1]).all()  # decreasing away from the centre
    # float32 in, float32 out
    assert discrete_gaussian_1d(torch.tensor([0.7]), 3).dtype == torch.float32


def test_discrete_gaussian_sigma_to_zero_is_delta():
    k0 = _dg(0.0, 4)
    assert k0.tolist() == [0.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 0.0]
    # smooth approach: neighbour weight ≈ σ²/2
    for s in (1e-3, 1e-2, 0.05):
        k = _dg(s, 4)
        assert k[5].item() == pytest.approx(s * s / 2, rel=0.01)
        assert k[4].item() == pytest.approx(1 - s * s, rel=1e-3)
    # negative σ is treated as 0
    torch.testing.assert_close(_dg(-0.5, 4), k0)


@pytest.mark.parametrize("sigma", [0.01, 0.05, 0.1, 0.3])
def test_discrete_gaussian_no_dead_zone(sigma):
    """d kernel / dσ is far from zero for small σ (a sampled Gaussian gives ≈ e^{-1/2σ²}/σ³ ≈ 0)."""
    s = torch.tensor(sigma, dtype=torch.float64, requires_grad=True)
    k = discrete_gaussian_1d(s, 3)
    (g_side,) = torch.autograd.grad(k[4], s, retain_graph=True)
    (g_centre,) = torch.autograd.grad(k[3], s)
    # k[±1] ≈ σ²/2 → d/dσ ≈ σ; k[0] ≈ 1 − σ² → d/dσ ≈ −2σ
    rel = 0.05 if sigma <= 0.1 else 0.25
    assert g_side.item() == pytest.approx(sigma, rel=rel)
    assert g_centre.item() == pytest.approx(-2 * sigma, rel=rel)
    # the sampled Gaussian's neighbour gradient for comparison: numerically zero for σ ≤ 0.1
    sampled = torch.exp(-1 / (2 * s.detach() ** 2))
    if sigma <= 0.1:
        assert sampled.item() < 1e-20


def test_discrete_gaussian_gradcheck():
    sigma = torch.tensor([0.05, 0.4, 0.7, 1.3, 2.9], dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda s: discrete_gaussian_1d(s, 6), (sigma,))
    assert torch.autograd.gradgradcheck(lambda s: discrete_gaussian_1d(s, 4), (sigma[:3].detach().requires_grad_(),))


def test_gaussian_kernel_2d_separable():
    k = gaussian_kernel_2d(1.3)
    r = kernel_radius(1.3, "gaussian")
    assert k.shape == (2 * r + 1, 2 * r + 1)
    g = _dg(1.3, r)
    torch.testing.assert_close(k, g[:, None] * g[None, :])
    assert k.sum().item() == pytest.approx(1.0, abs=1e-12)


# ------------------------------------------------------------------------------------------------------ disk
DISK_RADII = [0.0, 0.1, 0.5, 0.999, 1.0, 1.001, 1.7, 2.5, 4.2, 7.0]


def _second_moment(k: torch.Tensor) -> float:
    r = (k.shape[-1] - 1) // 2
    off = torch.arange(-r, r + 1, dtype=k.dtype)
    rho2 = off[:, None] ** 2 + off[None, :] ** 2
    return float((k * rho2).sum())


@pytest.mark.parametrize("r", DISK_RADII)
def test_disk_kernel_normalised_symmetric(r):
    k = disk_kernel_2d(r)
    assert k.sum().item() == pytest.approx(1.0, abs=1e-12)
    assert (k >= 0).all()
    torch.testing.assert_close(k, k.flip(0))
    torch.testing.assert_close(k, k.flip(1))
    torch.testing.assert_close(k, k.T)
    # nothing at the window's edge (no truncation with kernel_radius)
    assert k[0].abs().max().item() == 0.0 and k[:, 0].abs().max().item() == 0.0


def test_disk_kernel_zero_radius_is_delta():
    k = disk_kernel_2d(0.0)
    c = (k.shape[0] - 1) // 2
    assert k[c, c].item() == 1.0 and k.sum().item() == 1.0


def test_disk_second_moment_monotonic():
    radii = torch.linspace(0.0, 8.0, 161, dtype=torch.float64)
    moments = [_second_moment(disk_kernel_2d(float(r), 10)) for r in radii]
    diffs = torch.tensor(moments[1:]) - torch.tensor(moments[:-1])
    assert (diffs > 0).all(), moments
    # large radius: close to the continuous disk's E[ρ²] = r²/2 (+ the ramp's share)
    assert _second_moment(disk_kernel_2d(7.0)) == pytest.approx(7.0**2 / 2, rel=0.05)
    # small radius: grows like r² (blend of identity and unit disk)
    m1 = _second_moment(disk_kernel_2d(1.0))
    for r in (0.1, 0.3, 0.7):
        assert _second_moment(disk_kernel_2d(r)) == pytest.approx(r * r * m1, rel=1e-9)


def test_disk_kernel_continuous_at_one():
    below = disk_kernel_2d(1.0 - 1e-7, 3)
    at = disk_kernel_2d(1.0, 3)
    above = disk_kernel_2d(1.0 + 1e-7, 3)
    torch.testing.assert_close(below, at, atol=1e-6, rtol=0)
    torch.testing.assert_close(above, at, atol=1e-6, rtol=0)
    # and continuous in general: small steps in r give small changes
    for r in (0.5, 1.5, 2.5, 3.3):
        a, b = disk_kernel_2d(r, 6), disk_kernel_2d(r + 1e-6, 6)
        assert (a - b).abs().max().item() < 1e-5


@pytest.mark.parametrize("r", [0.05, 0.2, 0.5, 0.8, 0.95])
def test_disk_gradient_below_one_pixel(r):
    """No dead zone for the disk either: the kernel changes with r for 0 < r < 1."""
    rad = torch.tensor(r, dtype=torch.float64, requires_grad=True)
    k = disk_kernel_2d(rad, 2)
    (g_centre,) = torch.autograd.grad(k[2, 2], rad, retain_graph=True)
    (g_side,) = torch.autograd.grad(k[2, 3], rad)
    assert g_centre.item() < -1e-3 * r
    assert g_side.item() > 1e-3 * r


def test_disk_gradcheck():
    # radii away from the kinks of the ramp (ρ = r ± 0.5 at ρ² integer)
    for r in (0.3, 0.77, 1.3, 2.3, 3.1):
        rad = torch.tensor(r, dtype=torch.float64, requires_grad=True)
        assert torch.autograd.gradcheck(lambda x: disk_kernel_2d(x, 5), (rad,))


def test_disk_weights_broadcast():
    radius = torch.tensor([[0.5], [2.0]], dtype=torch.float64)
    w = disk_weights(radius, 0.0, torch.tensor([0.0, 1.0, 2.0, 3.0], dtype=torch.float64))
    assert w.shape == (2, 4)
    assert w[0, 0] > w[0, 1] > 0  # below one pixel: blend of delta and unit disk
    assert w[1, 0] == w[1, 1] == 1.0  # inside a larger disk: uniform
    assert w[1, 3].item() == 0.0  # beyond r + 0.5


# ---------------------------------------------------------------------------------------------- blur sizes
def test_blur_size_px_values_and_shape():
    depth = torch.full((2, 1, 3, 4), 2.0, dtype=torch.float64)
    focus = torch.tensor([[1.0, 2.0, 4.0], [1.0, 1.0, 1.0]], dtype=torch.float64)
    sig = blur_size_px(NYU, depth, focus, "gaussian")
    rad = blur_size_px(NYU, depth, focus, "disk")
    assert sig.shape == (2, 3, 1, 3, 4) and rad.shape == (2, 3, 1, 3, 4)
    # worked by hand in test_camera: CoC 13.70614035 px at fd = 1 m, d = 2 m → σ = c/4, r = c/2
    assert sig[0, 0, 0, 0, 0].item() == pytest.approx(13.70614035 / 4, rel=1e-8)
    assert rad[0, 0, 0, 0, 0].item() == pytest.approx(13.70614035 / 2, rel=1e-8)
    assert sig[0, 1].abs().max().item() == 0.0  # in focus
    torch.testing.assert_close(rad, 2 * sig)


def test_blur_size_px_errors():
    depth = torch.ones(1, 1, 3, 4)
    with pytest.raises(DefocusError, match="depth"):
        blur_size_px(NYU, torch.ones(1, 3, 3, 4), torch.ones(1, 2), "gaussian")
    with pytest.raises(DefocusError, match="focus"):
        blur_size_px(NYU, depth, torch.ones(2, 2), "gaussian")
    with pytest.raises(DefocusError, match="focus"):
        blur_size_px(NYU, depth, torch.ones(3), "gaussian")
    with pytest.raises(InputError, match="unknown PSF"):
        blur_size_px(NYU, depth, torch.ones(1, 2), "airy")


def test_check_psf_and_kernel_radius():
    assert check_psf("gaussian") == "gaussian" and check_psf("disk") == "disk"
    with pytest.raises(InputError, match="gaussian, gennorm, disk"):
        check_psf("box")
    assert kernel_radius(0.0, "gaussian") == 1 and kernel_radius(0.0, "disk") == 1
    for s in (0.5, 1.0, 3.7, 10.0):
        assert kernel_radius(s, "gaussian") >= 3.5 * s
        assert kernel_radius(s, "disk") >= s + 1
    assert kernel_radius(torch.tensor(2.0), "gaussian") == kernel_radius(2.0, "gaussian")


def test_psf_kernel_2d_dispatch():
    torch.testing.assert_close(psf_kernel_2d(1.2, "gaussian"), gaussian_kernel_2d(1.2))
    torch.testing.assert_close(psf_kernel_2d(1.2, "disk", 4), disk_kernel_2d(1.2, 4))
    with pytest.raises(InputError):
        psf_kernel_2d(1.0, "square")


# ------------------------------------------------------------------------------------------- generalised Gaussian
GENNORM_SIGMAS = [0.0, 0.1, 0.3, 0.5, 1.0, 2.0, 4.5]


@pytest.mark.parametrize("s", GENNORM_SIGMAS)
def test_gennorm_kernel_normalised_symmetric_untruncated(s):
    k = gennorm_kernel_2d(s)
    assert k.dtype == torch.float64 and k.shape[0] == k.shape[1] and k.shape[0] % 2 == 1
    assert k.sum().item() == pytest.approx(1.0, abs=1e-12)
    assert (k >= 0).all()
    torch.testing.assert_close(k, k.flip(0))
    torch.testing.assert_close(k, k.T)
    assert k[0].max().item() < 1e-5 * k.max().item()  # the window holds the kernel


@pytest.mark.parametrize("s", [0.5, 1.0, 2.0, 4.5])
def test_gennorm_has_the_gaussians_second_moment(s):
    # Same per-axis variance as the Gaussian of the same σ (and the disk of radius 2σ): shape differs, not the blur.
    moment = _second_moment(gennorm_kernel_2d(s)) / 2
    assert moment == pytest.approx(s * s, rel=0.1 if s < 1 else 0.01)


def test_gennorm_shape_is_between_gaussian_and_disk():
    # Reference values of exp(-(rho/s)^4), s = sigma * sqrt(2 Gamma(1/2) / Gamma(1)), computed independently.
    assert GENNORM_SHAPE == 4.0
    s = 3.0 * math.sqrt(2 * math.sqrt(math.pi))
    k = gennorm_kernel_2d(3.0, 12)
    off = torch.arange(-12, 13, dtype=torch.float64)
    ref = torch.exp(-((torch.sqrt(off[:, None] ** 2 + off[None, :] ** 2) / s) ** 4))
    torch.testing.assert_close(k, ref / ref.sum())
    # flatter top than the Gaussian, steeper shoulder: centre/half-width ratio between the Gaussian's and the disk's
    g, d = gaussian_kernel_2d(3.0, 12), disk_kernel_2d(6.0, 12)
    ratio = [float(x[12, 12] / x[12, 16]) for x in (g, k, d)]
    assert ratio[0] > ratio[1] > ratio[2]


def test_gennorm_small_sigma_blends_to_identity_with_gradient():
    k0 = gennorm_kernel_2d(0.0, 2)
    assert k0[2, 2].item() == 1.0
    m_half = _second_moment(gennorm_kernel_2d(0.5, 3))
    for s in (0.1, 0.25, 0.4):
        assert _second_moment(gennorm_kernel_2d(s, 3)) == pytest.approx((s / 0.5) ** 2 * m_half, rel=1e-9)
    sig = torch.tensor(0.2, dtype=torch.float64, requires_grad=True)
    (g,) = torch.autograd.grad(gennorm_kernel_2d(sig, 2)[2, 2], sig)
    assert g.item() < -1e-3


def test_gennorm_gradcheck():
    for s in (0.2, 0.7, 1.6):
        sig = torch.tensor(s, dtype=torch.float64, requires_grad=True)
        assert torch.autograd.gradcheck(lambda x: gennorm_kernel_2d(x, 4), (sig,))


def test_gennorm_sizes_and_dispatch():
    depth = torch.full((1, 1, 2, 2), 2.0, dtype=torch.float64)
    focus = torch.tensor([[1.0, 4.0]], dtype=torch.float64)
    torch.testing.assert_close(blur_size_px(NYU, depth, focus, "gennorm"), blur_size_px(NYU, depth, focus, "gaussian"))
    torch.testing.assert_close(psf_kernel_2d(1.3, "gennorm", 6), gennorm_kernel_2d(1.3, 6))
    assert kernel_radius(2.0, "gennorm") == kernel_radius(2.0, "gaussian")
