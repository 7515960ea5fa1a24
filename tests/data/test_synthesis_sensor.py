"""Tests of the sensor model (defocus.optics.sensor.SensorModel): noise statistics, quantisation levels, clamping,
exposure, JPEG, determinism per seed, and that synthesis records every stack through it."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from defocus.color import quantize_8bit
from defocus.data.procedural import SCENE_DEPTH_RANGE_M, make_scene
from defocus.data.synthesis import SynthesisVariant, get_protocol, synthesize_stack, synthesize_variant
from defocus.errors import InputError
from defocus.optics.camera import get_preset
from defocus.optics.sensor import SensorModel, jpeg_round_trip

NYU = get_preset("nyuv2")


def _flat(value=0.5, shape=(2, 3, 3, 64, 64)):
    return torch.full(shape, value)


def test_defaults_quantise_to_8_bits_without_noise():
    s = SensorModel()
    assert (s.noise_std, s.bits, s.jpeg_quality, s.exposure, s.clamp, s.levels) == (0.0, 8, None, 1.0, True, 255)
    g = torch.Generator().manual_seed(0)
    x = torch.rand(2, 4, 3, 9, 11, generator=g) * 1.4 - 0.2
    assert torch.equal(s.apply(x), quantize_8bit(x.clamp(0, 1)))  # round half up, as stored images
    assert torch.equal(s(x), s.apply(x))
    assert torch.equal(SensorModel(bits=None).apply(x), x.clamp(0, 1))
    assert torch.equal(SensorModel(bits=None, clamp=False).apply(x), x)


def test_noise_statistics():
    s = SensorModel(noise_std=0.01, bits=None)
    x = _flat()
    noise = s.apply(x, seed=3) - x
    assert float(noise.mean()) == pytest.approx(0.0, abs=5e-4)
    assert float(noise.std()) == pytest.approx(0.01, rel=0.03)
    # independent draws for different seeds: their difference has std √2·σ
    other = s.apply(x, seed=4) - x
    assert float((noise - other).std()) == pytest.approx(0.01 * 2**0.5, rel=0.03)
    assert abs(float(np.corrcoef(noise.flatten(), other.flatten())[0, 1])) < 0.02


def test_determinism_per_seed_and_generator():
    s = SensorModel(noise_std=0.02)
    x = _flat(0.3, (1, 2, 3, 16, 16))
    assert torch.equal(s.apply(x, seed=7), s.apply(x, seed=7))
    assert not torch.equal(s.apply(x, seed=7), s.apply(x, seed=8))
    assert torch.equal(s.apply(x, generator=torch.Generator().manual_seed(7)), s.apply(x, seed=7))
    assert torch.equal(s.apply(x), s.apply(x, seed=0))
    # no noise: the seed does not matter
    assert torch.equal(SensorModel().apply(x, seed=1), SensorModel().apply(x, seed=2))


@pytest.mark.parametrize("bits", [1, 4, 8, 12])
def test_quantisation_levels(bits):
    x = torch.linspace(0, 1, 5001).reshape(1, 1, 1, 1, -1).expand(1, 1, 3, 1, -1)
    out = SensorModel(bits=bits).apply(x)
    levels = 2**bits - 1
    v = out * levels
    assert torch.allclose(v, v.round(), atol=1e-3)
    assert len(torch.unique(v.round())) == min(levels + 1, 5001)
    assert float((out - x).abs().max()) <= 0.5 / levels + 1e-6
    # round half up: exactly half a step goes up
    half = torch.full((1, 1, 3, 1, 1), 0.5 / levels)
    assert float(SensorModel(bits=bits).apply(half).max()) == pytest.approx(1 / levels)


def test_clamp_and_exposure():
    x = torch.tensor([-0.3, 0.2, 0.6, 1.4]).reshape(1, 1, 1, 1, 4).expand(1, 1, 3, 1, 4)
    assert SensorModel(bits=None).apply(x)[0, 0, 0, 0].tolist() == pytest.approx([0.0, 0.2, 0.6, 1.0])
    assert SensorModel(bits=None, clamp=False).apply(x)[0, 0, 0, 0].tolist() == pytest.approx([-0.3, 0.2, 0.6, 1.4])
    bright = SensorModel(bits=None, exposure=2.0).apply(x)[0, 0, 0, 0].tolist()
    assert bright == pytest.approx([0.0, 0.4, 1.0, 1.0])  # gain before the clamp: highlights saturate


def test_jpeg_step_is_the_round_trip_after_8_bits():
    g = torch.Generator().manual_seed(1)
    x = torch.nn.functional.interpolate(torch.rand(2, 3, 8, 8, generator=g), size=(32, 40), mode="bilinear")[None]
    s = SensorModel(jpeg_quality=80)
    assert torch.equal(s.apply(x), jpeg_round_trip(quantize_8bit(x), 80))
    assert not torch.equal(s.apply(x), SensorModel().apply(x))


def test_bad_settings_are_input_errors_naming_the_field():
    for kwargs, field in [({"noise_std": -1.0}, "noise_std"), ({"noise_std": float("nan")}, "noise_std"),
                          ({"bits": 0}, "bits"), ({"bits": 17}, "bits"), ({"bits": 8.0}, "bits"),
                          ({"jpeg_quality": 0}, "jpeg_quality"), ({"jpeg_quality": 101}, "jpeg_quality"),
                          ({"jpeg_quality": 90, "bits": None}, "bits"), ({"exposure": 0.0}, "exposure"),
                          ({"clamp": 1}, "clamp")]:
        with pytest.raises(InputError) as exc:
            SensorModel(**kwargs)
        assert exc.value.field == field and "--" not in str(exc.value)
    with pytest.raises(InputError, match="gain"):
        SensorModel.from_dict({"gain": 2})
    s = SensorModel(noise_std=0.01, jpeg_quality=90)
    assert SensorModel.from_dict(s.to_dict()) == s and s.replace(noise_std=0.0).noise_std == 0.0
    assert len({s, SensorModel.from_dict(s.to_dict())}) == 1  # hashable


def test_synthesis_records_through_the_protocols_sensor():
    rgb, depth = make_scene(2, 32, 40, SCENE_DEPTH_RANGE_M["nyuv2"])
    fd = torch.tensor(NYU.focus_distances_m)
    for name in ("paper", "realistic"):
        p = get_protocol(name)
        clean = p.forward_model(NYU.camera)(rgb[None], depth[None], fd[None])
        assert torch.equal(synthesize_stack(rgb[None], depth[None], fd, NYU.camera, name, seed=9),
                           p.sensor.apply(clean, seed=9))
    v = SynthesisVariant.of("disk", "srgb", "occlusion", blur_scale=1.1, noise_std=0.004, jpeg_quality=85)
    clean = v.forward_model(NYU.camera)(rgb[None], depth[None], fd[None])
    recorded = synthesize_variant(rgb[None], depth[None], fd, NYU.camera, v, seed=2)
    assert torch.equal(recorded, v.sensor.apply(clean, seed=2))
