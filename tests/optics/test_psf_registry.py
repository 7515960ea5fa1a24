"""Tests of the PSF registry (defocus.optics.psf.PSF_REGISTRY): the built-in families, lookups and their errors, and
the proof that adding a PSF family is one registry entry plus its kernel function — a toy box PSF registered here
renders with every method, through ForwardModel and in the self-calibration, then is removed again."""

from __future__ import annotations

import dataclasses
import math

import pytest
import torch

from defocus import calibrate
from defocus.data.procedural import make_scene
from defocus.errors import DefocusError, InputError
from defocus.models.prediction import Prediction
from defocus.optics import psf as psf_module
from defocus.optics.camera import PRESETS
from defocus.optics.forward import ForwardModel
from defocus.optics.psf import (
    PSF_REGISTRY,
    PointwiseExactWeights,
    PsfFamily,
    SeparableExactWeights,
    check_psf,
    get_psf,
    kernel_radius,
    psf_kernel_2d,
    psf_kernel_window,
    psf_names,
    psf_size_from_coc,
    register_psf,
    unregister_psf,
)
from defocus.optics.render import default_levels, render_exact, render_layered, render_occlusion

NYU = PRESETS["nyuv2"].camera
F64 = torch.float64


# ------------------------------------------------------------------------------------------------- built-ins
def test_registry_lists_the_five_families():
    names = ("gaussian", "gennorm", "disk", "ring", "core")
    assert list(PSF_REGISTRY) == list(names)
    assert psf_module.PSF_NAMES == names == psf_names()
    assert psf_names(calibrate=True) == names
    for name, family in PSF_REGISTRY.items():
        assert isinstance(family, PsfFamily) and family.name == name and get_psf(name) is family
        assert check_psf(name) == name
    # What each renderer supports: exact needs per-pixel weights, which the generalised Gaussian has not.
    assert {n for n, f in PSF_REGISTRY.items() if f.supports("exact")} == {"gaussian", "disk"}
    assert all(f.supports("layered") and f.supports("occlusion") for f in PSF_REGISTRY.values())


def test_family_rules_are_the_documented_ones():
    c = torch.tensor([0.0, 1.0, 6.0])
    torch.testing.assert_close(get_psf("gaussian").size_from_coc(c), c / 4)
    torch.testing.assert_close(get_psf("gennorm").size_from_coc(c), c / 4)
    torch.testing.assert_close(get_psf("disk").size_from_coc(c), c / 2)
    torch.testing.assert_close(get_psf("ring").size_from_coc(c), c / 2)
    torch.testing.assert_close(get_psf("core").size_from_coc(c), c / 2)
    for name, family in PSF_REGISTRY.items():
        torch.testing.assert_close(psf_size_from_coc(c, name), family.size_from_coc(c))
        for s in (0.0, 0.7, 3.2):
            assert family.kernel_radius(s) == kernel_radius(s, name)
            torch.testing.assert_close(family.kernel_2d(s, 5), psf_kernel_2d(s, name, 5))
    assert [get_psf(n).first_level for n in ("gaussian", "gennorm", "disk")] == [0.5, 0.5, 1.0]
    assert default_levels(0.0, "disk") == [0.0, 1.0] and default_levels(0.0, "gennorm") == [0.0, 0.5]


def test_get_psf_unknown_name_is_an_input_error_naming_the_choices():
    with pytest.raises(InputError, match="unknown PSF 'airy'; choose one of gaussian, gennorm, disk") as exc:
        get_psf("airy")
    assert exc.value.field == "psf" and isinstance(exc.value, DefocusError)
    with pytest.raises(InputError, match="unknown PSF"):
        get_psf(None)  # type: ignore[arg-type]
    with pytest.raises(InputError, match="gaussian, gennorm, disk"):
        ForwardModel(NYU, psf="airy")


def test_a_renderer_a_family_lacks_is_an_input_error():
    aif, depth = torch.rand(1, 3, 6, 6), torch.full((1, 1, 6, 6), 2.0)
    with pytest.raises(InputError, match="exact renderer knows the gaussian, disk") as exc:
        render_exact(aif, depth, torch.tensor([[1.0]]), NYU, "gennorm")
    assert exc.value.field == "psf"


def test_registration_is_checked():
    gaussian = get_psf("gaussian")
    with pytest.raises(InputError, match="already registered"):
        register_psf(gaussian)
    assert register_psf(gaussian, replace=True) is gaussian and list(PSF_REGISTRY)[0] == "gaussian"
    with pytest.raises(InputError, match="PsfFamily"):
        register_psf("box")  # type: ignore[arg-type]
    with pytest.raises(InputError, match="exact_weights"):
        PsfFamily("x", _box_kernel_2d, 2.0, 1.0, renderers=("exact", "layered"))
    with pytest.raises(InputError, match="unknown render method"):
        PsfFamily("x", _box_kernel_2d, 2.0, 1.0, renderers=("layered", "splat"))
    with pytest.raises(InputError, match="half_resolution"):
        PsfFamily("x", _box_kernel_2d, 2.0, 1.0, half_resolution=True)
    with pytest.raises(InputError, match="coc_per_size"):
        PsfFamily("x", _box_kernel_2d, 0.0, 1.0)
    with pytest.raises(InputError, match="unknown PSF"):
        unregister_psf("x")


def test_calibration_candidates_come_from_the_registry():
    assert calibrate.FAMILIES == calibrate.calibration_families() == (
        ("gaussian", "srgb"), ("gaussian", "linear"), ("gennorm", "srgb"), ("gennorm", "linear"), ("disk", "srgb"),
        ("disk", "linear"), ("ring", "srgb"), ("ring", "linear"), ("core", "srgb"), ("core", "linear"),
        # then the signed spherical aberrations (far-side PSF, light, near-side PSF)
        ("ring", "srgb", "core"), ("ring", "linear", "core"), ("core", "srgb", "ring"), ("core", "linear", "ring"))


# ----------------------------------------------------------------------------------- a new family: the box
# Everything a new PSF needs: a kernel function (normalised, tending to the identity at size 0) and its entry.
# The box of half-side a pixels has a one-pixel linear ramp on each side: per-axis coverage clamp(a + 1 − |d|, 0, 1).
def _box_1d(size: torch.Tensor, radius: int) -> torch.Tensor:
    off = torch.arange(-radius, radius + 1, dtype=size.dtype)
    c = (size.clamp_min(0.0)[..., None] + 1.0 - off.abs()).clamp(0.0, 1.0)
    return c / c.sum(dim=-1, keepdim=True)


def _box_kernel_2d(size: float | torch.Tensor, half_width: int | None = None) -> torch.Tensor:
    a = torch.as_tensor(size, dtype=F64).reshape(())
    if half_width is None:
        half_width = max(1, math.ceil(float(a) + 1.0))
    c = _box_1d(a, half_width)
    return c[:, None] * c[None, :]


def _box_weights(size: torch.Tensor, dy: float, dx: float) -> torch.Tensor:
    a = size.clamp_min(0.0)
    return (a + 1.0 - abs(dy)).clamp(0.0, 1.0) * (a + 1.0 - abs(dx)).clamp(0.0, 1.0)


def _box_family(name: str, separable: bool) -> PsfFamily:
    if separable:  # the layered renderer then blurs by banded matrix products, the exact one by a 1-D kernel
        return PsfFamily(name, _box_kernel_2d, coc_per_size=2.0, support_per_size=1.0, calibrate=True,
                         renderers=("exact", "layered", "occlusion"), kernel_1d=_box_1d,
                         exact_weights=SeparableExactWeights(_box_1d))
    return PsfFamily(name, _box_kernel_2d, coc_per_size=2.0, support_per_size=1.0, calibrate=True,
                     renderers=("exact", "layered", "occlusion"), exact_weights=PointwiseExactWeights(_box_weights))


@pytest.fixture(params=["pointwise", "separable"])
def box(request):
    name = f"toybox_{request.param}"
    family = register_psf(_box_family(name, request.param == "separable"))
    try:
        yield family
    finally:
        unregister_psf(name)
    assert name not in PSF_REGISTRY and name not in psf_module.PSF_NAMES


def _scene(h=24, w=28, seed=5):
    rgb, depth = make_scene(seed, h, w, (0.5, 8.0))
    return rgb[None].to(F64), depth[None].to(F64), torch.tensor([[0.8, 1.5, 4.0]], dtype=F64)


def test_a_registered_family_is_known_everywhere(box):
    assert box.name in psf_module.PSF_NAMES and check_psf(box.name) == box.name and get_psf(box.name) is box
    assert (box.name, "srgb") in calibrate.FAMILIES and (box.name, "linear") in calibrate.calibration_families()
    k = psf_kernel_2d(2.3, box.name)
    assert k.shape == (2 * kernel_radius(2.3, box.name) + 1,) * 2 and k.sum().item() == pytest.approx(1.0)
    torch.testing.assert_close(psf_kernel_window(2.3, box.name, 4, 1, 2), k[3:6, 2:7])
    assert psf_kernel_2d(0.0, box.name)[1, 1] == 1.0  # the identity at zero blur


def test_a_registered_family_renders_with_every_method(box):
    aif, depth, focus = _scene()
    layered = render_layered(aif, depth, focus, NYU, box.name, level_ratio=1.15)
    exact = render_exact(aif, depth, focus, NYU, box.name)
    occl = render_occlusion(aif, depth, focus, NYU, box.name)
    for s in (layered, exact, occl):
        assert s.shape == (1, 3, 3, 24, 28) and torch.isfinite(s).all()
    # The layered blend of fixed box levels approximates the per-pixel box of the exact renderer.
    assert (layered - exact).abs().mean() < 2e-3
    # A blur that differs from the Gaussian's, and normalised semantics: a constant image stays constant.
    assert (layered - render_layered(aif, depth, focus, NYU, "gaussian")).abs().max() > 1e-2
    flat = torch.full_like(aif, 0.4)
    torch.testing.assert_close(render_layered(flat, depth, focus, NYU, box.name), torch.full_like(layered, 0.4))
    # In focus everywhere: the identity.
    torch.testing.assert_close(render_layered(aif, torch.full_like(depth, 1.5), focus[:, 1:2], NYU, box.name)[:, 0],
                               aif)


def test_both_box_variants_agree():
    # The same kernel through the generic paths (2-D kernel convolution, pointwise exact weights) and the separable
    # ones (banded matrices, 1-D exact weights).
    aif, depth, focus = _scene(18, 20)
    register_psf(_box_family("toybox_a", separable=False))
    register_psf(_box_family("toybox_b", separable=True))
    try:
        for render in (render_layered, render_exact):
            torch.testing.assert_close(render(aif, depth, focus, NYU, "toybox_a"),
                                       render(aif, depth, focus, NYU, "toybox_b"), atol=1e-9, rtol=0)
    finally:
        unregister_psf("toybox_a")
        unregister_psf("toybox_b")


def test_a_registered_family_through_the_forward_model(box):
    aif, depth, focus = _scene()
    for method in ("exact", "layered", "occlusion"):
        fm = ForwardModel(NYU, psf=box.name, light="linear", method=method)
        assert fm(aif, depth, focus).shape == (1, 3, 3, 24, 28)
    fm = ForwardModel(psf=box.name)
    inv = (1.0 / depth).requires_grad_(True)
    k = NYU.blur_per_dioptre(focus).to(F64)
    out = fm.rerender(aif, inv, focus, k)
    torch.testing.assert_close(out.blur, k[:, :, None, None, None] * (1.0 / focus[:, :, None, None, None]
                                                                       - 1.0 / depth[:, None]).abs() / 2.0)
    out.stack.square().sum().backward()
    assert torch.isfinite(inv.grad).all() and inv.grad.abs().sum() > 0  # differentiable in depth


@pytest.mark.parametrize("box", ["pointwise"], indirect=True)
def test_a_registered_family_is_a_calibration_candidate(box):
    aif, depth, focus = _scene(32, 32)
    stack = ForwardModel(NYU, psf=box.name).forward(aif, depth, focus).float()
    init = Prediction(depth=torch.full((1, 1, 32, 32), 2.0), aif=stack[:, 1].clone(),
                      confidence=torch.ones(1, 1, 32, 32))
    cal = calibrate.calibrate_forward_model(stack, focus.float(), NYU.blur_per_dioptre(focus), (0.5, 8.0), init,
                                            blur_scales=(1.0,), steps=1, max_size=32)
    tried = [(c["psf"], c["light"], *([c["near_psf"]] if "near_psf" in c else [])) for c in cal.scores]
    symmetric = [t for t in tried if len(t) == 2]  # the signed aberrations come after them
    assert tried == list(calibrate.FAMILIES) and symmetric[-2:] == [(box.name, "srgb"), (box.name, "linear")]
    # Unmarked, it stays out of the search.
    register_psf(dataclasses.replace(box, calibrate=False), replace=True)
    assert box.name not in {f[0] for f in calibrate.FAMILIES}
