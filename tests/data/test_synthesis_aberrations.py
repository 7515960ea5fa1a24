"""Signed spherical aberration and longitudinal chromatic aberration in synthesis, and the widened random variants
(issue 17)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from defocus.data.synthesis import SynthesisVariant, synthesize, synthesize_variant
from defocus.errors import InputError
from defocus.optics.camera import get_preset
from defocus.optics.forward import ForwardSpec
from defocus.optics.psf import PSF_NAMES
from defocus.optics.sensor import SensorModel

CAM = get_preset("nyuv2").camera
RAW = SensorModel(bits=None)


def _scene():
    g = torch.Generator().manual_seed(0)
    aif = torch.rand(1, 3, 40, 40, generator=g)
    depth = torch.full((1, 1, 40, 40), 4.0)
    depth[..., :, :20] = 1.2  # left half in front of a 2 m focus, right half behind it
    return aif, depth


def test_near_psf_renders_each_side_of_focus_with_its_own_family():
    aif, depth = _scene()
    fd = torch.tensor([2.0])
    spec = ForwardSpec("ring")
    signed = synthesize(aif, depth, fd, CAM, spec, RAW, near_psf="core")
    ring = synthesize(aif, depth, fd, CAM, spec, RAW)
    core = synthesize(aif, depth, fd, CAM, spec.replace(psf="core"), RAW)
    torch.testing.assert_close(signed[..., :, :20], core[..., :, :20])
    torch.testing.assert_close(signed[..., :, 20:], ring[..., :, 20:])
    assert not torch.allclose(ring, core)
    # the same family on both sides is the plain rendering
    torch.testing.assert_close(synthesize(aif, depth, fd, CAM, spec, RAW, near_psf="ring"), ring)


def test_chromatic_aberration_focuses_red_nearer_and_blue_farther():
    aif, depth = _scene()
    fd = torch.tensor([2.0, 3.0])
    spec = ForwardSpec("gaussian")
    shift = 0.2
    lca = synthesize(aif, depth, fd, CAM, spec, RAW, chromatic_dioptres=shift)
    for c, s in ((0, shift), (1, 0.0), (2, -shift)):
        ref = synthesize(aif, depth, 1.0 / (1.0 / fd + s), CAM, spec, RAW)
        torch.testing.assert_close(lca[:, :, c], ref[:, :, c])
    assert not torch.allclose(lca, synthesize(aif, depth, fd, CAM, spec, RAW))
    # Far focus (0.05 D) with a larger shift: the blue channel would focus beyond infinity; it is focused at 1 km.
    far = synthesize(aif, depth, torch.tensor([20.0, 2.0]), CAM, spec, RAW, chromatic_dioptres=0.2)
    ref = synthesize(aif, depth, torch.tensor([1000.0, 1.0 / 0.3]), CAM, spec, RAW)
    torch.testing.assert_close(far[:, :, 2], ref[:, :, 2])


def test_variant_checks_and_dictionaries():
    with pytest.raises(InputError, match="unknown PSF"):
        SynthesisVariant(near_psf="nope")
    with pytest.raises(InputError) as err:
        SynthesisVariant(chromatic_dioptres=-0.1)
    assert err.value.field == "chromatic_dioptres"
    v = SynthesisVariant(ForwardSpec("ring"), SensorModel(vignetting=0.2), near_psf="core", chromatic_dioptres=0.1)
    d = v.to_dict()
    assert d["near_psf"] == "core" and d["chromatic_dioptres"] == 0.1 and d["sensor"]["vignetting"] == 0.2
    # the loss re-renders the variant's lens, its signed aberration included, on the default renderer
    assert v.loss == ForwardSpec("ring", near_psf="core") and v.loss.method == ForwardSpec().method
    assert SynthesisVariant(ForwardSpec("disk", "linear", "occlusion")).loss == ForwardSpec("disk", "linear")


def test_random_variants_cover_the_widened_pipeline_reproducibly():
    draws = [SynthesisVariant.random(np.random.default_rng(i)) for i in range(200)]
    again = [SynthesisVariant.random(np.random.default_rng(i)) for i in range(200)]
    assert draws == again
    assert {v.forward.psf for v in draws} == set(PSF_NAMES)
    signed = [v for v in draws if v.near_psf is not None]
    assert 0.15 < len(signed) / 200 < 0.35 and all({v.forward.psf, v.near_psf} == {"ring", "core"} for v in signed)
    for attr, lo, hi in (("vignetting", 0, 0.5), ("exposure_jitter", 0, 0.15), ("shot_noise", 0, 0.002)):
        vals = [getattr(v.sensor, attr) for v in draws]
        assert 0.25 < np.mean([x > 0 for x in vals]) < 0.55 and min(vals) >= lo and max(vals) <= hi, attr
    assert 0.2 < np.mean([v.chromatic_dioptres > 0 for v in draws]) < 0.4
    assert 0.2 < np.mean([v.sensor.tone_gamma is not None for v in draws]) < 0.4


def test_random_variants_render():
    aif, depth = _scene()
    fd = torch.tensor([1.0, 2.0, 4.0])
    for i in range(6):
        v = SynthesisVariant.random(np.random.default_rng(100 + i))
        out = synthesize_variant(aif, depth, fd, CAM, v, seed=i)
        assert out.shape == (1, 3, 3, 40, 40) and torch.isfinite(out).all()
        assert float(out.min()) >= 0 and float(out.max()) <= 1
