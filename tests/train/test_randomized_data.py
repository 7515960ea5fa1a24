"""Tests of the randomised training data (issue 8, item 5): forward-model variants, JPEG, real RGB-D training
frames from an INDEX.csv, and the loss re-rendering every group with its own forward model."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from defocus.data.procedural import SCENE_DEPTH_RANGE_M, make_scene
from defocus.data.sweeps import DataConfig, FocalSweepSampler, build_training_groups, render_rgbd_index_group
from defocus.data.synthesis import SynthesisVariant, jpeg_round_trip, synthesize_stack, synthesize_variant
from defocus.errors import DefocusError
from defocus.losses.selfsup import SelfSupervisedLoss
from defocus.optics.camera import get_preset
from defocus.optics.forward import ForwardSpec
from defocus.optics.psf import PSF_NAMES
from defocus.optics.sensor import SensorModel
from defocus.train.config import load_config
from defocus.train.trainer import train

NYU = get_preset("nyuv2")


@pytest.fixture(scope="module")
def scene():
    rgb, depth = make_scene(5, 40, 48, SCENE_DEPTH_RANGE_M["nyuv2"])
    return rgb[None], depth[None], torch.tensor(NYU.focus_distances_m)


# ------------------------------------------------------------------------------------------------ variants
@pytest.mark.parametrize("protocol", ["paper", "realistic"])
def test_protocol_variants_render_exactly_the_protocols(scene, protocol):
    rgb, depth, fd = scene
    a = synthesize_variant(rgb, depth, fd, NYU.camera, SynthesisVariant.for_protocol(protocol), seed=3)
    b = synthesize_stack(rgb, depth, fd, NYU.camera, protocol, seed=3)
    assert torch.equal(a, b)
    with pytest.raises(DefocusError, match="unknown protocol"):
        SynthesisVariant.for_protocol("studio")


def test_random_variants_cover_the_family_and_are_repeatable():
    draws = [SynthesisVariant.random(np.random.default_rng([7, i])) for i in range(200)]
    assert draws[3] == SynthesisVariant.random(np.random.default_rng([7, 3]))
    fwd, sen = [v.forward for v in draws], [v.sensor for v in draws]
    assert {f.psf for f in fwd} == set(PSF_NAMES) == {"gaussian", "gennorm", "disk", "ring", "core"}  # the PSF registry's
    assert {f.light for f in fwd} == {"srgb", "linear"} and {f.method for f in fwd} == {"layered", "occlusion"}
    assert all(0.8 <= f.blur_scale <= 1.25 for f in fwd) and all(0 <= s.noise_std <= 0.01 for s in sen)
    assert {s.jpeg_quality is None for s in sen} == {True, False}
    assert all(70 <= s.jpeg_quality <= 95 for s in sen if s.jpeg_quality is not None)
    assert any(s.noise_std == 0 for s in sen) and any(s.noise_std > 0.005 for s in sen)
    assert all(s.bits == 8 for s in sen)
    # the loss's forward model of a variant: its lens (a signed aberration included) on the default renderer
    assert all(v.loss == ForwardSpec(v.forward.psf, v.forward.light, blur_scale=v.forward.blur_scale,
                                     near_psf=v.near_psf) for v in draws)
    assert any(v.loss.signed for v in draws) and any(not v.loss.signed for v in draws)
    assert len(set(draws)) == len(draws)  # hashable, and every draw differs


def test_random_variants_are_repeatable_per_seed():
    """The same generator seed gives the same variant (issue 17 widened the draw: the shipped stage-1 weights were
    trained with the narrower one of before, recorded in their checkpoint's config)."""
    a = [SynthesisVariant.random(np.random.default_rng([5, i])) for i in range(6)]
    b = [SynthesisVariant.random(np.random.default_rng([5, i])) for i in range(6)]
    assert a == b and len(set(map(repr, a))) > 1


def test_variant_is_a_forward_spec_and_a_sensor():
    v = SynthesisVariant.of("disk", "linear", "occlusion", blur_scale=1.1, noise_std=0.003, jpeg_quality=90)
    assert v.forward == ForwardSpec("disk", "linear", "occlusion", blur_scale=1.1)
    assert v.sensor == SensorModel(noise_std=0.003, jpeg_quality=90)
    assert SynthesisVariant(v.forward, v.sensor) == v
    assert SynthesisVariant.of("gaussian").forward.level_ratio == 1.15  # layered variants: the synthesis levels
    assert SynthesisVariant() == SynthesisVariant.of()
    assert v.to_dict() == {"forward": v.forward.to_dict(), "sensor": v.sensor.to_dict(), "near_psf": None,
                           "chromatic_dioptres": 0.0}
    for name in ("paper", "realistic"):
        from defocus.data.synthesis import get_protocol

        p = get_protocol(name)
        assert SynthesisVariant.for_protocol(name) == SynthesisVariant(p.synthesis, p.sensor)


def test_variant_forward_model_and_effects(scene):
    rgb, depth, fd = scene
    clean = SynthesisVariant.of("gennorm", "linear", "layered", blur_scale=1.2)
    physics = clean.forward_model(NYU.camera)
    assert (physics.psf, physics.light, physics.spec.blur_scale) == ("gennorm", "linear", 1.2)
    base = synthesize_variant(rgb, depth, fd, NYU.camera, clean)
    assert base.shape == (1, 5, 3, 40, 48)
    assert torch.equal(base, (base * 255).round() / 255)  # 8-bit
    noisy = synthesize_variant(rgb, depth, fd, NYU.camera, SynthesisVariant.of("gennorm", "linear", noise_std=0.01,
                                                                                blur_scale=1.2), seed=1)
    assert 0.004 < float((noisy - base).std()) < 0.015
    wider = synthesize_variant(rgb, depth, fd, NYU.camera, SynthesisVariant.of("gennorm", "linear", blur_scale=1.25))
    narrower = synthesize_variant(rgb, depth, fd, NYU.camera, SynthesisVariant.of("gennorm", "linear", blur_scale=0.8))
    sharp = lambda s: float((s[..., 1:] - s[..., :-1]).abs().mean())  # noqa: E731
    assert sharp(wider) < sharp(base) < sharp(narrower)


def test_jpeg_round_trip():
    g = torch.Generator().manual_seed(0)
    x = torch.nn.functional.interpolate(torch.rand(2, 3, 8, 8, generator=g), size=(32, 40), mode="bilinear")
    y = jpeg_round_trip(x, 75)
    assert y.shape == x.shape and not torch.equal(y, x)
    assert float((y - x).abs().mean()) < 0.03  # a compression artefact, not another image
    assert float((jpeg_round_trip(x, 95) - x).abs().mean()) < float((y - x).abs().mean())


# -------------------------------------------------------------------------------------------------- groups
def test_variant_groups_carry_their_forward_model():
    cfg = DataConfig(presets=["nyuv2"], protocols=["paper"], scenes_per_group=1, size=[24, 24], sweep=4,
                     forward_variants=2, variant_scenes=1)
    groups = build_training_groups(cfg, progress=False)
    assert [g.protocol for g in groups] == ["paper", "variant", "variant"]
    assert groups[0].physics is None
    for g in groups[1:]:
        assert isinstance(g.physics, ForwardSpec) and g.physics.method == "layered" and g.stacks.dtype == torch.uint8
        hash(g.physics)
    again = build_training_groups(cfg, progress=False)
    assert all(torch.equal(a.stacks, b.stacks) and a.physics == b.physics for a, b in zip(groups, again))
    batch = FocalSweepSampler(groups[1:2], cfg, seed=0).sample(2)
    assert batch["physics"] == groups[1].physics


def _write_rgbd_index(folder, group="tum", kind="indoor", frames=2):
    rng = np.random.default_rng(0)
    lines = ["id,rgb,depth,depth_format,metres_per_unit,scene_group,kind,notes"]
    for i in range(frames):
        Image.fromarray(rng.integers(0, 256, (48, 64, 3), dtype=np.uint8)).save(folder / f"rgb{i}.png")
        depth = rng.uniform(1.0, 5.0, (48, 64)).astype(np.float32)
        depth[0, :4] = 0.0  # holes are filled for rendering
        np.save(folder / f"d{i}.npy", depth)
        lines.append(f"f{i},rgb{i}.png,d{i}.npy,npy_float32,1.0,{group},{kind},fixture")
    (folder / "INDEX.csv").write_text("\n".join(lines) + "\n")
    return folder / "INDEX.csv"


def test_rgbd_index_group_renders_only_the_chosen_split(tmp_path):
    index = _write_rgbd_index(tmp_path)
    cfg = DataConfig(rgbd_index=str(index), rgbd_split="train", sweep=4, size=[24, 24])
    g = render_rgbd_index_group(cfg, "paper", progress=False)
    h, w = NYU.image_size
    assert g.stacks.shape == (2, 4, 3, h, w) and g.stacks.dtype == torch.uint8
    assert g.depth_range == (0.1, 20.0) and g.protocol == "paper" and g.physics is None
    assert (g.focus[:, :-1] > g.focus[:, 1:]).all()  # a sweep, far to near
    assert not hasattr(g, "depth")
    v = render_rgbd_index_group(cfg, SynthesisVariant.of("disk", "srgb", blur_scale=0.9), progress=False)
    assert v.protocol == "variant" and v.physics == ForwardSpec("disk", "srgb", blur_scale=0.9)
    with pytest.raises(DefocusError, match="no frames of split 'test'"):
        render_rgbd_index_group(DataConfig(rgbd_index=str(index), rgbd_split="test"), "paper", progress=False)
    with pytest.raises(DefocusError, match="unknown RGB-D split"):
        render_rgbd_index_group(DataConfig(rgbd_index=str(index), rgbd_split="holdout"), "paper", progress=False)
    with pytest.raises(DefocusError, match="does not exist"):
        render_rgbd_index_group(DataConfig(rgbd_index=str(tmp_path / "no.csv")), "paper", progress=False)


def test_training_rerenders_each_group_with_its_own_forward_model(tmp_path, monkeypatch):
    seen = []
    original = SelfSupervisedLoss.forward

    def spy(self, observed, pred, physics, focus, k):
        seen.append((physics.psf, physics.light, physics.spec.blur_scale))
        return original(self, observed, pred, physics, focus, k)

    monkeypatch.setattr(SelfSupervisedLoss, "forward", spy)
    index = _write_rgbd_index(tmp_path)
    cfg = load_config(None, [
        f"out_dir={tmp_path}", "name=variants", "model.name=daifnet_tiny", "model.config={prior_presmooth: auto}",
        "data.presets=[nyuv2]", "data.protocols=[paper]", "data.scenes_per_group=1", "data.size=[24, 24]",
        "data.sweep=4", "data.forward_variants=1", "data.variant_scenes=1", f"data.rgbd_index={index}",
        "optim.epochs=1", "optim.steps_per_epoch=12", "optim.batch_size=1", "optim.warmup_steps=1", "val_scenes=0",
    ])
    run = train(cfg, progress=False)
    groups = build_training_groups(cfg.data, progress=False)
    variant = groups[1].physics
    assert ("gaussian", "srgb", 1.0) in seen  # the paper groups: the protocol's own model
    assert (variant.psf, variant.light, variant.blur_scale) in seen
    from defocus.models.checkpoint import read_metadata

    assert read_metadata(run / "last.safetensors")["model_config"]["prior_presmooth"] == "auto"
