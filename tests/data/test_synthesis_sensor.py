"""Tests of the sensor model (defocus.optics.sensor.SensorModel): noise statistics, quantisation levels, clamping,
exposure, JPEG, determinism per seed, and that synthesis records every stack through it."""

from __future__ import annotations

import math

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


# ------------------------------------------------------------------------ the linear-light stage (issue 17)
def test_linear_stage_is_off_by_default_and_on_with_any_of_its_settings():
    assert not SensorModel().linear_stage
    for kw in ({"vignetting": 0.2}, {"exposure_jitter": 0.1}, {"shot_noise": 1e-3}, {"tone_gamma": 2.2}):
        assert SensorModel(**kw).linear_stage


def test_vignetting_darkens_the_corners_by_the_given_fraction_in_linear_light():
    from defocus.color import srgb_to_linear

    x = _flat(0.6, (1, 1, 3, 33, 33))
    out = SensorModel(vignetting=0.4, bits=None).apply(x)
    lin_in, lin_out = srgb_to_linear(x), srgb_to_linear(out)
    centre = float(lin_out[..., 16, 16].mean() / lin_in[..., 16, 16].mean())
    corner = float(lin_out[..., 0, 0].mean() / lin_in[..., 0, 0].mean())
    assert centre == pytest.approx(1.0, abs=1e-6) and corner == pytest.approx(0.6, abs=1e-4)


def test_exposure_jitter_changes_whole_frames_reproducibly():
    from defocus.color import srgb_to_linear

    s = SensorModel(exposure_jitter=0.2, bits=None)
    x = _flat(0.5, (1, 6, 3, 8, 8))
    a, b, c = s.apply(x, seed=1), s.apply(x, seed=1), s.apply(x, seed=2)
    assert torch.equal(a, b) and not torch.equal(a, c)
    gain = srgb_to_linear(a) / srgb_to_linear(x)
    per_frame = gain.reshape(6, -1)
    assert float((per_frame.max(1).values - per_frame.min(1).values).max()) < 1e-5  # one gain per frame
    g = per_frame[:, 0]
    assert float(g.max() / g.min()) > 1.02 and bool((g.log().abs() <= 0.2 + 1e-6).all())


def test_shot_noise_grows_with_the_signal():
    from defocus.color import srgb_to_linear

    s = SensorModel(shot_noise=2e-3, bits=None)
    dark, bright = _flat(0.2, (1, 1, 3, 96, 96)), _flat(0.8, (1, 1, 3, 96, 96))
    std = {}
    for name, x in (("dark", dark), ("bright", bright)):
        lin = srgb_to_linear(s.apply(x, seed=4))
        mean = float(srgb_to_linear(x).mean())
        std[name] = (float(lin.std()), mean)
    for name, (sd, mean) in std.items():
        assert sd == pytest.approx(math.sqrt(2e-3 * mean), rel=0.08), name
    assert std["bright"][0] > 2 * std["dark"][0]


def test_tone_gamma_stores_the_power_law():
    from defocus.color import srgb_to_linear

    x = torch.linspace(0.05, 0.95, 30).reshape(1, 1, 3, 1, 10)
    out = SensorModel(tone_gamma=2.0, bits=None).apply(x)
    torch.testing.assert_close(out, srgb_to_linear(x) ** 0.5, atol=1e-6, rtol=0)


@pytest.mark.parametrize("field, value", [("vignetting", 1.0), ("vignetting", -0.1), ("exposure_jitter", 2.0),
                                          ("shot_noise", -1.0), ("tone_gamma", 0.5), ("tone_gamma", float("nan"))])
def test_linear_stage_settings_are_checked(field, value):
    with pytest.raises(InputError) as err:
        SensorModel(**{field: value})
    assert err.value.field == field


def test_sensor_dictionaries_round_trip_the_new_fields():
    s = SensorModel(vignetting=0.3, exposure_jitter=0.1, shot_noise=1e-3, tone_gamma=2.4, jpeg_quality=80)
    assert SensorModel.from_dict(s.to_dict()) == s


# ----------------------------------------------------------------------------------- the camera's image processing
def _step_image() -> torch.Tensor:
    """(1, 3, 32, 40): a flat dark half and a flat bright half with faint texture, a sharp edge between them."""
    g = torch.Generator().manual_seed(5)
    x = 0.3 + 0.01 * torch.rand(1, 3, 32, 40, generator=g)
    x[..., 20:] += 0.4
    return x


def test_guided_denoise_flattens_weak_structure_and_keeps_the_edge():
    from defocus.optics.sensor import guided_denoise

    x = _step_image()
    y = guided_denoise(x, 0.02)
    assert y.shape == x.shape
    assert float(y[..., 4:28, 3:16].std()) < 0.5 * float(x[..., 4:28, 3:16].std())  # flat side flattened
    # The 0.4 step (local std ~0.2 >> 0.02) is kept sharp: the jump across the edge is almost all still there.
    jump_x = float((x[..., 19:20] - x[..., 20:21]).abs().mean())
    jump_y = float((y[..., 19:20] - y[..., 20:21]).abs().mean())
    assert jump_y > 0.9 * jump_x, (jump_y, jump_x)
    assert torch.equal(guided_denoise(x, 0.0), x)
    # Against a direct computation of the guided filter at one interior pixel (radius 2, edges far away).
    r, eps, (i, j) = 2, 0.02**2, (12, 8)
    c = x[0, 0]

    def stats(u, v):
        w = c[u - r:u + r + 1, v - r:v + r + 1]
        m, var = w.mean(), w.var(unbiased=False)
        a = var / (var + eps)
        return a, m - a * m

    ab = [stats(u, v) for u in range(i - r, i + r + 1) for v in range(j - r, j + r + 1)]
    expected = sum(a for a, _ in ab) / len(ab) * c[i, j] + sum(b for _, b in ab) / len(ab)
    assert float(y[0, 0, i, j]) == pytest.approx(float(expected), abs=1e-6)


def test_unsharp_mask_raises_contrast_across_an_edge_and_leaves_flats():
    from defocus.optics.sensor import unsharp_mask

    x = torch.full((1, 1, 16, 16), 0.3)
    x[..., 8:] = 0.6
    y = unsharp_mask(x, 1.0)
    assert float(y[0, 0, 5, 7]) < 0.3 - 0.01 and float(y[0, 0, 5, 8]) > 0.6 + 0.01  # over- and undershoot
    assert float(y[0, 0, 5, 1]) == pytest.approx(0.3, abs=1e-6) and float(y[0, 0, 5, 14]) == pytest.approx(0.6, abs=1e-6)
    assert torch.equal(unsharp_mask(x, 0.0), x)


def test_sensor_isp_stage_runs_after_the_noise_and_is_recorded_only_when_set():
    x = _step_image()
    noisy = SensorModel(noise_std=0.01, bits=None, clamp=False).apply(x, seed=3)
    processed = SensorModel(noise_std=0.01, bits=None, clamp=False, denoise=0.03).apply(x, seed=3)
    from defocus.optics.sensor import guided_denoise

    assert torch.allclose(processed, guided_denoise(noisy, 0.03), atol=1e-6)  # same noise, then denoised
    assert "denoise" not in SensorModel().to_dict() and "sharpen" not in SensorModel().to_dict()
    s = SensorModel(noise_std=0.01, denoise=0.02, sharpen=0.8)
    assert SensorModel.from_dict(s.to_dict()) == s


@pytest.mark.parametrize("field, value", [("denoise", -0.1), ("denoise", 0.9), ("sharpen", -1.0),
                                          ("sharpen", float("inf"))])
def test_isp_settings_are_checked(field, value):
    with pytest.raises(InputError) as err:
        SensorModel(**{field: value})
    assert err.value.field == field
