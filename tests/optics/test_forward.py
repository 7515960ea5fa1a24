"""Tests of the ForwardModel and its ForwardSpec: module equals the renderer functions, light models, named
families, synthesis and loss constructors, the spec's dictionary round trip (old ``linear_light`` key included),
one blur scale for depth and K rendering, re-rendering from inverse depth and K, errors, float64 gradcheck."""

from __future__ import annotations

import pytest
import torch

from defocus.color import linear_to_srgb, srgb_to_linear
from defocus.data.synthesis import synthesis_forward_model, synthesize_stack
from defocus.errors import DefocusError, InputError
from defocus.losses.selfsup import LossConfig
from defocus.optics.camera import PRESETS, ThinLensCamera
from defocus.optics.forward import FAMILIES, ForwardModel, ForwardSpec
from defocus.optics.render import RENDER_METHODS, render_layered, render_layered_from_blur, render_occlusion

from conftest import render_stack  # noqa: E402 - the renderer of a method, called directly

NYU = PRESETS["nyuv2"].camera


def _inputs(b=2, h=8, w=9, seed=0, dtype=torch.float32):
    g = torch.Generator().manual_seed(seed)
    aif = (0.1 + 0.8 * torch.rand(b, 3, h, w, generator=g)).to(dtype)
    depth = (0.8 + 2 * torch.rand(b, 1, h, w, generator=g)).to(dtype)
    focus = torch.tensor([[1.0, 2.0], [1.5, 3.0]], dtype=dtype)[:b]
    return aif, depth, focus


@pytest.mark.parametrize("method", RENDER_METHODS)
@pytest.mark.parametrize("psf", ("gaussian", "disk"))
def test_srgb_module_equals_render_stack(method, psf):
    aif, depth, focus = _inputs()
    fm = ForwardModel(NYU, psf=psf, light="srgb", method=method)
    assert isinstance(fm, torch.nn.Module) and list(fm.parameters()) == []
    ref = render_stack(aif, depth, focus, NYU, psf, method, **({"linear_light": False} if method == "occlusion" else {}))
    torch.testing.assert_close(fm(aif, depth, focus), ref)
    assert method in repr(fm) and psf in repr(fm)


def test_linear_light_decodes_blurs_encodes():
    aif, depth, focus = _inputs()
    fm = ForwardModel(NYU, psf="disk", light="linear", method="layered", level_ratio=1.25)
    ref = linear_to_srgb(render_layered(srgb_to_linear(aif), depth, focus, NYU, "disk", level_ratio=1.25))
    torch.testing.assert_close(fm(aif, depth, focus), ref)
    # different from blurring the encoded values
    assert (fm(aif, depth, focus) - fm.replace(light="srgb")(aif, depth, focus)).abs().max() > 1e-3
    occ = ForwardModel(NYU, psf="disk", light="linear", method="occlusion")
    torch.testing.assert_close(occ(aif, depth, focus), render_occlusion(aif, depth, focus, NYU, "disk", True))


def test_camera_can_be_replaced_per_call_and_is_required():
    aif, depth, focus = _inputs()
    fm = ForwardModel(None, method="layered")
    with pytest.raises(DefocusError, match="no camera"):
        fm(aif, depth, focus)
    other = NYU.resized(0.5)
    torch.testing.assert_close(fm(aif, depth, focus, camera=other), render_layered(aif, depth, focus, other))


def test_families_and_constructors():
    assert FAMILIES == {"gaussian": ("gaussian", "srgb"), "disk": ("disk", "linear")}
    g = ForwardModel.from_family("gaussian")
    assert (g.psf, g.light, g.linear_light) == ("gaussian", "srgb", False)
    d = ForwardModel.from_preset("nyuv2", "disk")
    assert (d.psf, d.light, d.linear_light, d.camera) == ("disk", "linear", True, NYU)
    assert synthesis_forward_model("paper", NYU).method == "layered"
    assert synthesis_forward_model("realistic", NYU).method == "occlusion"
    cfg = LossConfig(forward=ForwardSpec("disk", "linear", level_ratio=1.3, multires=True, blur_scale=1.1))
    fm = cfg.forward_model()
    assert (fm.psf, fm.light, fm.spec.level_ratio, fm.spec.multires) == ("disk", "linear", 1.3, True)
    assert fm.spec == cfg.forward and fm.spec.blur_scale == 1.1
    assert cfg.forward_model(psf="gaussian", linear_light=False).describe()["light"] == "srgb"
    assert cfg.forward_model(psf="gaussian", light="srgb").spec == cfg.forward.replace(psf="gaussian", light="srgb")
    assert cfg.forward_model(psf=None).psf == "disk"  # None keeps the config's value
    desc = d.describe()
    assert desc["camera"]["focal_length_mm"] == pytest.approx(50.0) and desc["psf"] == "disk"


def test_synthesis_forward_model_is_what_synthesize_stack_renders():
    aif, depth, focus = _inputs(b=1, h=16, w=16)
    fm = synthesis_forward_model("paper", NYU)
    out = synthesize_stack(aif, depth, focus, NYU, "paper", quantize=False)
    torch.testing.assert_close(out, fm(aif, depth, focus).clamp(0, 1))


@pytest.mark.parametrize("family", ("gaussian", "disk"))
def test_rerender_matches_depth_rendering(family):
    aif, depth, focus = _inputs()
    fm = ForwardModel.from_family(family, NYU)
    k = NYU.blur_per_dioptre(focus)
    out = fm.rerender(aif, 1.0 / depth, focus, k)
    assert out.stack.shape == (2, 2, 3, 8, 9) and out.blur.shape == (2, 2, 1, 8, 9)
    torch.testing.assert_close(out.stack, fm(aif, depth, focus), rtol=1e-4, atol=1e-4)
    img = srgb_to_linear(aif) if fm.linear_light else aif
    ref = render_layered_from_blur(img, out.blur, fm.psf)
    torch.testing.assert_close(out.stack, linear_to_srgb(ref) if fm.linear_light else ref)


def test_rerender_needs_layered_and_right_shapes():
    aif, depth, focus = _inputs()
    k = NYU.blur_per_dioptre(focus)
    with pytest.raises(DefocusError, match="layered"):
        ForwardModel(NYU, method="exact").rerender(aif, 1 / depth, focus, k)
    with pytest.raises(DefocusError, match="blur_per_dioptre"):
        ForwardModel(NYU).rerender(aif, 1 / depth, focus, k[:, :1])
    with pytest.raises(DefocusError, match="inverse depth"):
        ForwardModel(NYU).rerender(aif, (1 / depth)[:, 0], focus, k)


def test_bad_settings_are_defocus_errors():
    with pytest.raises(DefocusError, match="airy"):
        ForwardModel(NYU, psf="airy")
    with pytest.raises(DefocusError, match="light model"):
        ForwardModel(NYU, light="log")
    with pytest.raises(DefocusError, match="render method"):
        ForwardModel(NYU, method="fft")
    with pytest.raises(DefocusError, match="level_ratio"):
        ForwardModel(NYU, level_ratio=1.0)
    with pytest.raises(DefocusError, match="family"):
        ForwardModel.from_family("airy")
    with pytest.raises(InputError, match="protocol"):
        synthesis_forward_model("cinematic", NYU)
    for bad, field in [({"psf": "airy"}, "psf"), ({"psf": 3}, "psf"), ({"light": "log"}, "light"),
                       ({"method": "fft"}, "method"), ({"level_ratio": 1.0}, "level_ratio"),
                       ({"level_ratio": "x"}, "level_ratio"), ({"multires": 1}, "multires"),
                       ({"blur_scale": 0.0}, "blur_scale"), ({"blur_scale": float("nan")}, "blur_scale"),
                       ({"blur_scale": True}, "blur_scale"), ({"blur_scale": 1e30}, "blur_scale"),
                       ({"colour": 1}, "colour"),
                       ({"linear_light": "yes"}, "linear_light"), ({"light": "srgb", "linear_light": True}, "light")]:
        with pytest.raises(InputError) as exc:
            ForwardSpec.from_dict(bad)
        assert exc.value.field == field and "\n" not in str(exc.value) and "--" not in str(exc.value)


@pytest.mark.parametrize("family", ("gaussian", "disk"))
def test_gradcheck_rerender_float64(family):
    g = torch.Generator().manual_seed(3)
    aif = (0.2 + 0.6 * torch.rand(1, 3, 5, 6, generator=g, dtype=torch.float64)).requires_grad_()
    inv = (0.3 + 0.5 * torch.rand(1, 1, 5, 6, generator=g, dtype=torch.float64)).requires_grad_()
    focus = torch.tensor([[1.2, 2.5]], dtype=torch.float64)
    k = NYU.blur_per_dioptre_px(focus)
    fm = ForwardModel.from_family(family, level_ratio=1.5)
    assert torch.autograd.gradcheck(lambda a, i: fm.rerender(a, i, focus, k).stack, (aif, inv), eps=1e-6, atol=1e-5)


# ------------------------------------------------------------------------------------------------ ForwardSpec
def test_spec_round_trips_through_dicts_and_json_and_is_a_key():
    import json

    spec = ForwardSpec("gennorm", "linear", "occlusion", level_ratio=1.3, multires=True, blur_scale=1.25)
    d = spec.to_dict()
    assert d == {"psf": "gennorm", "light": "linear", "method": "occlusion", "level_ratio": 1.3, "multires": True,
                 "blur_scale": 1.25}
    assert ForwardSpec.from_dict(d) == spec
    assert ForwardSpec.from_dict(json.loads(json.dumps(d))) == spec
    assert ForwardSpec.from_dict({}) == ForwardSpec()
    assert ForwardSpec.from_dict({"blur_scale": 2}).blur_scale == 2.0  # an integer is a number too
    # hashable: equal specs are one dictionary key (1 and 1.0 included)
    assert len({spec: 1, ForwardSpec.from_dict(d): 2, ForwardSpec(blur_scale=1): 3, ForwardSpec(): 4}) == 2
    # describe() is the spec plus the camera, and reads back
    fm = ForwardModel(NYU, spec=spec)
    assert fm.describe()["camera"] == NYU.to_dict()
    assert ForwardSpec.from_dict({k: v for k, v in fm.describe().items() if k != "camera"}) == spec
    assert spec.lens() == {"psf": "gennorm", "light": "linear", "blur_scale": 1.25}
    assert ForwardSpec().with_lens_of(spec) == ForwardSpec("gennorm", "linear", blur_scale=1.25)


def test_old_linear_light_key_is_read_as_light():
    assert ForwardSpec.from_dict({"psf": "disk", "linear_light": True}) == ForwardSpec("disk", "linear")
    assert ForwardSpec.from_dict({"linear_light": False}).light == "srgb"
    assert ForwardSpec.from_dict({"light": "linear", "linear_light": True}).light == "linear"  # agreeing: fine
    assert ForwardSpec().replace(linear_light=True).light == "linear"
    assert ForwardModel(NYU).replace(linear_light=True).light == "linear"


def test_from_config_keeps_every_field_blur_scale_included():
    values = {"psf": "disk", "linear_light": True, "level_ratio": 1.2, "multires": True, "blur_scale": 0.8}
    fm = ForwardModel.from_config(values, NYU)
    assert fm.spec == ForwardSpec("disk", "linear", "layered", 1.2, True, 0.8) and fm.camera == NYU
    assert ForwardModel.from_config(LossConfig(forward=fm.spec)).spec == fm.spec
    assert ForwardModel.from_config(fm.spec).spec == fm.spec
    assert ForwardModel.from_spec(fm.spec, NYU).describe() == fm.describe()


def test_spec_and_keyword_constructors_agree():
    spec = ForwardSpec("disk", "linear", "layered", blur_scale=1.2)
    a = ForwardModel(NYU, spec=spec)
    b = ForwardModel(NYU, psf="disk", light="linear", method="layered", blur_scale=1.2)
    c = ForwardModel.from_spec(spec, NYU)
    assert a.spec == b.spec == c.spec == spec
    assert ForwardModel(NYU, spec=spec, blur_scale=0.9).spec == spec.replace(blur_scale=0.9)  # keywords win
    assert a.replace(blur_scale=1.0).spec == ForwardSpec("disk", "linear")
    assert a.replace(camera=None).camera is None and a.replace(camera=None).spec == spec


@pytest.mark.parametrize("psf,light", [("gaussian", "srgb"), ("disk", "linear"), ("gennorm", "srgb")])
def test_blur_scale_has_one_effect_for_depth_and_k_rendering(psf, light):
    """blur_scale is an effective aperture: forward() (camera, metres) renders like the camera of aperture
    blur_scale·A, rerender() (K) like K·blur_scale, and the two agree."""
    aif, depth, focus = _inputs(h=12, w=13)
    scale = 1.3
    fm = ForwardModel(NYU, psf=psf, light=light, method="layered", blur_scale=scale)
    k = NYU.blur_per_dioptre(focus)
    by_depth = fm(aif, depth, focus)
    by_k = fm.rerender(aif, 1.0 / depth, focus, k).stack
    torch.testing.assert_close(by_k, by_depth, rtol=1e-4, atol=1e-4)
    wider = ThinLensCamera(NYU.focal_length_m, NYU.f_number / scale, NYU.pixel_size_m)
    assert fm.spec.effective_camera(NYU) == wider
    torch.testing.assert_close(by_depth, fm.replace(blur_scale=1.0)(aif, depth, focus, camera=wider))
    plain = fm.replace(blur_scale=1.0)
    torch.testing.assert_close(by_k, plain.rerender(aif, 1.0 / depth, focus, k * scale).stack)
    torch.testing.assert_close(fm.blur_size(1.0 / depth, focus, k), scale * plain.blur_size(1.0 / depth, focus, k))
    assert float((by_depth - plain(aif, depth, focus)).abs().max()) > 1e-3  # it does blur more


# ----------------------------------------------------------------------------------------- signed aberration
def test_signed_spec_round_trips_normalises_and_checks_its_near_psf():
    import json

    signed = ForwardSpec("ring", "linear", near_psf="core", blur_scale=1.2)
    assert signed.signed and signed.describe_lens() == "ring/core"
    assert signed.to_dict()["near_psf"] == "core"
    assert ForwardSpec.from_dict(json.loads(json.dumps(signed.to_dict()))) == signed
    # one PSF on both sides has one spelling, and symmetric specs write no near_psf at all (old files unchanged)
    assert ForwardSpec("ring", near_psf="ring") == ForwardSpec("ring") and not ForwardSpec("ring").signed
    assert "near_psf" not in ForwardSpec().to_dict() and "near_psf" not in ForwardSpec().lens()
    assert signed.lens() == {"psf": "ring", "light": "linear", "blur_scale": 1.2, "near_psf": "core"}
    assert ForwardSpec().with_lens_of(signed) == ForwardSpec("ring", "linear", blur_scale=1.2, near_psf="core")
    assert signed.with_lens_of(ForwardSpec("disk")).near_psf is None  # a symmetric lens clears the near side
    for bad in ("airy", 3):
        with pytest.raises(InputError) as exc:
            ForwardSpec.from_dict({"psf": "ring", "near_psf": bad})
        assert exc.value.field == "near_psf" and "\n" not in str(exc.value)
    assert "near_psf='core'" in repr(ForwardModel(NYU, spec=signed))


@pytest.mark.parametrize("method", RENDER_METHODS)
def test_a_signed_model_renders_each_side_of_focus_with_its_own_psf(method):
    aif, depth, focus = _inputs(h=12, w=13)
    far_psf, near_psf = ("disk", "gaussian") if method == "exact" else ("ring", "core")  # what "exact" renders
    signed = ForwardModel(NYU, psf=far_psf, near_psf=near_psf, method=method)
    far, near = ForwardModel(NYU, psf=far_psf, method=method), ForwardModel(NYU, psf=near_psf, method=method)
    out = signed(aif, depth, focus)
    in_front = depth[:, None] < focus[:, :, None, None, None]
    assert bool(in_front.any()) and bool((~in_front).any())  # both sides are present
    torch.testing.assert_close(out, torch.where(in_front, near(aif, depth, focus), far(aif, depth, focus)))
    # and it differs from either symmetric model where the other side is
    assert float((out - far(aif, depth, focus)).abs().max()) > 1e-3
    assert float((out - near(aif, depth, focus)).abs().max()) > 1e-3


def test_signed_rerendering_matches_depth_rendering_and_its_blur_is_each_sides():
    aif, depth, focus = _inputs(h=12, w=13)
    fm = ForwardModel(NYU, psf="core", near_psf="gaussian")  # two size rules: σ = c/4 in front, radius c/2 behind
    k = NYU.blur_per_dioptre(focus)
    out = fm.rerender(aif, 1.0 / depth, focus, k)
    torch.testing.assert_close(out.stack, fm(aif, depth, focus), rtol=1e-4, atol=1e-4)
    in_front = depth[:, None] < focus[:, :, None, None, None]
    sym = {p: ForwardModel(NYU, psf=p).blur_size(1.0 / depth, focus, k) for p in ("core", "gaussian")}
    torch.testing.assert_close(out.blur, torch.where(in_front, sym["gaussian"], sym["core"]))
    torch.testing.assert_close(fm.blur_size(1.0 / depth, focus, k), out.blur)


def test_gradcheck_signed_rerender_float64():
    g = torch.Generator().manual_seed(5)
    aif = (0.2 + 0.6 * torch.rand(1, 3, 5, 6, generator=g, dtype=torch.float64)).requires_grad_()
    # inverse depths on both sides of both frames' focus (1/1.2 = 0.83 D and 1/2.5 = 0.4 D), none on a boundary
    inv = torch.tensor([0.25, 0.6, 1.1], dtype=torch.float64).repeat(10)[:30].reshape(1, 1, 5, 6)
    inv = (inv + 0.02 * torch.rand(1, 1, 5, 6, generator=g, dtype=torch.float64)).requires_grad_()
    focus = torch.tensor([[1.2, 2.5]], dtype=torch.float64)
    k = NYU.blur_per_dioptre_px(focus)
    fm = ForwardModel(psf="ring", near_psf="core", light="linear")
    assert torch.autograd.gradcheck(lambda a, i: fm.rerender(a, i, focus, k).stack, (aif, inv), eps=1e-6, atol=1e-5)
