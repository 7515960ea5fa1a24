"""The aberrated disks ``ring`` and ``core`` (spherical aberration): the kernel checklist — smoke, shapes, values
against the documented profiles, the blend below one pixel, the wide-window integral, float64 gradcheck — and that
every renderer that renders the disk renders them."""

from __future__ import annotations

import math

import pytest
import torch

from defocus.optics.forward import ForwardModel
from defocus.optics.psf import (
    FULL_KERNEL_MAX_HALF_WIDTH,
    core_kernel_2d,
    get_psf,
    psf_kernel_window,
    ring_kernel_2d,
)

F64 = torch.float64


def _radial_mean(k: torch.Tensor, lo: float, hi: float) -> float:
    r = k.shape[0] // 2
    off = torch.arange(-r, r + 1, dtype=F64)
    rho = torch.sqrt(off[:, None] ** 2 + off[None, :] ** 2)
    m = (rho >= lo) & (rho < hi)
    return float(k[m].mean())


@pytest.mark.parametrize("kernel", [ring_kernel_2d, core_kernel_2d])
@pytest.mark.parametrize("r", [0.0, 0.4, 1.0, 2.5, 7.0])
def test_normalised_symmetric_and_sized(kernel, r):
    k = kernel(r)
    half = get_psf("ring").kernel_radius(r)
    assert k.shape == (2 * half + 1, 2 * half + 1) and k.dtype == F64
    assert float(k.sum()) == pytest.approx(1.0, abs=1e-12)
    torch.testing.assert_close(k, k.flip(0))
    torch.testing.assert_close(k, k.flip(1))
    torch.testing.assert_close(k, k.T)


def test_zero_radius_is_the_identity_and_small_radii_blend():
    for kernel in (ring_kernel_2d, core_kernel_2d):
        k = kernel(0.0)
        c = k.shape[0] // 2
        assert float(k[c, c]) == 1.0 and float(k.sum()) == 1.0
        # below one pixel: (1 − r²)·δ + r²·K(1), so the centre weight falls like r² (no dead zone)
        k1 = kernel(1.0, half_width=c)
        r = 0.5
        expected = (1 - r * r) + r * r * float(k1[c, c])
        assert float(kernel(r, half_width=c)[c, c]) == pytest.approx(expected, rel=1e-9)


def test_ring_is_bright_at_its_rim_and_core_at_its_centre():
    r = 8.0
    ring, core = ring_kernel_2d(r), core_kernel_2d(r)
    assert _radial_mean(ring, 6.5, 7.5) > 2.5 * _radial_mean(ring, 0, 2)
    assert _radial_mean(core, 0, 2) > 3.0 * _radial_mean(core, 6.5, 7.5)
    # the documented profiles, relative to the value at the centre: ring 0.4 + 1.2 u², core 0.2 + 1.6 (1 − u²)
    c = ring.shape[0] // 2
    u = 4.0 / r
    assert float(ring[c, c + 4] / ring[c, c]) == pytest.approx((0.4 + 1.2 * u * u) / 0.4, rel=1e-9)
    assert float(core[c, c + 4] / core[c, c]) == pytest.approx((0.2 + 1.6 * (1 - u * u)) / 1.8, rel=1e-9)
    # both reach the disk's radius and no farther (plus its one-pixel ramp)
    assert float(ring[c, c + 9]) == 0.0 and float(ring[c, c + 8]) > 0.0


@pytest.mark.parametrize("name", ["ring", "core"])
def test_wide_window_matches_the_full_kernel(name):
    # just above the full-kernel limit: the integral normalisation agrees with the pixel sum to a small fraction
    r = float(FULL_KERNEL_MAX_HALF_WIDTH) / 1.0
    half = get_psf(name).kernel_radius(r)
    assert half > FULL_KERNEL_MAX_HALF_WIDTH
    win = psf_kernel_window(r, name, half, 3, 3)
    full_centre = get_psf(name).kernel_2d(r, half)[half, half]
    assert float(win[3, 3]) == pytest.approx(float(full_centre), rel=2e-3)


@pytest.mark.parametrize("kernel", [ring_kernel_2d, core_kernel_2d])
def test_gradcheck_in_the_radius(kernel):
    for r0 in (0.6, 2.3):
        r = torch.tensor(r0, dtype=F64, requires_grad=True)
        assert torch.autograd.gradcheck(lambda x: kernel(x, half_width=4), (r,))


def test_errors_name_the_choices():
    with pytest.raises(Exception, match="ring"):
        ForwardModel(psf="rings")


@pytest.mark.parametrize("name", ["ring", "core"])
@pytest.mark.parametrize("method", ["layered", "occlusion"])
def test_renderers_render_them_between_sharp_and_the_disk_blur(name, method):
    torch.manual_seed(0)
    aif = torch.rand(1, 3, 32, 32)
    depth = torch.full((1, 1, 32, 32), 3.0)
    fd = torch.tensor([[1.0]])
    from defocus.optics.camera import get_preset

    cam = get_preset("nyuv2").camera
    out = ForwardModel(cam, psf=name, method=method)(aif, depth, fd)
    disk = ForwardModel(cam, psf="disk", method=method)(aif, depth, fd)
    assert out.shape == (1, 1, 3, 32, 32) and torch.isfinite(out).all()
    # a flat-depth scene: the same blur extent as the disk, another shape: close to it, but not equal
    assert 0 < float((out - disk).abs().mean()) < 0.5 * float((aif[:, None] - disk).abs().mean())
    assert math.isclose(float(out.mean()), float(aif.mean()), rel_tol=0.02)
