"""Tests of test-time refinement: it lowers the re-rendering error, stops early when that stops falling, and
improves depth under the matched forward model."""

from __future__ import annotations

import torch

from defocus.data.procedural import SCENE_DEPTH_RANGE_M, make_scene
from defocus.data.synthesis import synthesize_stack
from defocus.metrics import depth_metrics
from defocus.models.classical import ClassicalEstimator
from defocus.optics.camera import get_preset
from defocus.optics.forward import ForwardModel
from defocus.refine import refine

NYU = get_preset("nyuv2")


def _case():
    rgb, depth = make_scene(1_000_654, 64, 80, SCENE_DEPTH_RANGE_M["nyuv2"])
    fd = torch.tensor([NYU.focus_distances_m])
    stack = synthesize_stack(rgb, depth, fd[0], NYU.camera, "paper")[None]
    k = NYU.camera.blur_per_dioptre(fd)
    init = ClassicalEstimator()(stack, fd, k, NYU.depth_range_m)
    return stack, fd, k, init, depth


def test_refinement_lowers_the_loss_and_improves_depth_under_the_matched_model():
    stack, fd, k, init, depth = _case()
    report: dict = {}
    out = refine(stack, fd, k, NYU.depth_range_m, init, 40, ForwardModel.from_family("gaussian"), patience=0,
                 report=report)
    assert report["steps_run"] == 40 and report["losses"][-1] < 0.8 * report["losses"][0]
    before = depth_metrics(init.depth_map, depth[0])["abs_rel"]
    after = depth_metrics(out.depth_map, depth[0])["abs_rel"]
    assert after < before
    assert torch.equal(out.confidence, init.confidence)


def test_refinement_stops_early_when_the_error_stops_falling():
    stack, fd, k, init, _ = _case()
    report: dict = {}
    refine(stack, fd, k, NYU.depth_range_m, init, 400, ForwardModel.from_family("gaussian"), lr=1e-6, aif_lr=1e-6,
           patience=5, report=report)
    assert report["steps_run"] < 20  # a learning rate this small cannot lower the loss: it gives up quickly


def test_snapshots_equal_shorter_runs():
    stack, fd, k, init, _ = _case()
    physics = ForwardModel.from_family("gaussian")
    report: dict = {}
    full = refine(stack, fd, k, NYU.depth_range_m, init, 6, physics, patience=0, report=report, snapshots=(0, 3, 6))
    short = refine(stack, fd, k, NYU.depth_range_m, init, 3, physics, patience=0)
    snap = report["snapshots"]
    assert set(snap) == {0, 3, 6} and set(report["snapshot_seconds"]) == {0, 3, 6}
    torch.testing.assert_close(snap[3].inv_depth, short.inv_depth)
    torch.testing.assert_close(snap[3].aif, short.aif)
    torch.testing.assert_close(snap[6].inv_depth, full.inv_depth)
    torch.testing.assert_close(snap[0].inv_depth, init.inv_depth, atol=1e-4, rtol=1e-4)  # through the logit
    assert report["snapshot_seconds"][0] <= report["snapshot_seconds"][3] <= report["snapshot_seconds"][6]
    assert not torch.allclose(snap[3].inv_depth, snap[6].inv_depth)


def test_refinement_does_not_degrade_the_aif():
    # The AIF-sharpness term of the training loss is left out of refinement: optimising one stack's AIF with it
    # sharpens past the truth. Under the matched model the refined AIF is closer to the true sharp image.
    from defocus.metrics import psnr
    from defocus.refine import refinement_loss_config

    assert refinement_loss_config().weights["aif_sharpness"] == 0.0
    rgb, depth = make_scene(1_000_655, 64, 80, SCENE_DEPTH_RANGE_M["nyuv2"])
    fd = torch.tensor([NYU.focus_distances_m])
    stack = synthesize_stack(rgb, depth, fd[0], NYU.camera, "paper")[None]
    k = NYU.camera.blur_per_dioptre(fd)
    init = ClassicalEstimator()(stack, fd, k, NYU.depth_range_m)
    out = refine(stack, fd, k, NYU.depth_range_m, init, 30, ForwardModel.from_family("gaussian"), patience=0)
    assert psnr(out.aif_image, rgb) > psnr(init.aif_image, rgb)


def test_pyramid_levels_follow_the_image_size():
    from defocus.refine import PYRAMID_MIN_CELLS, pyramid_levels_for

    assert PYRAMID_MIN_CELLS == 30
    assert pyramid_levels_for(240, 320) == 3  # coarsest grid 30 x 40
    assert pyramid_levels_for(1224, 1632) == 5  # 38 x 51
    assert pyramid_levels_for(60, 80) == 1
    assert pyramid_levels_for(59, 80) == 0 and pyramid_levels_for(29, 500) == 0 and pyramid_levels_for(1, 1) == 0


def test_negative_pyramid_levels_are_refused():
    import pytest

    stack, fd, k, init, _ = _case()
    with pytest.raises(ValueError, match="pyramid_levels"):
        refine(stack, fd, k, NYU.depth_range_m, init, 1, ForwardModel.from_family("gaussian"), pyramid_levels=-1)


def test_coarse_grids_carry_a_correction_into_a_textureless_area():
    # A plane at 2 m, textured only around a flat grey window: inside the window no image constrains depth. From a
    # wrong start (3 m everywhere) the per-pixel optimisation fixes the textured frame but leaves the window's inside
    # where it was (only the smoothness term reaches it); the correction pyramid moves the window with its frame.
    from defocus.models.prediction import Prediction

    h, w = 64, 80
    rgb, _ = make_scene(1_000_656, h, w, SCENE_DEPTH_RANGE_M["nyuv2"])
    inside = torch.zeros(h, w, dtype=torch.bool)
    inside[16:48, 20:60] = True
    rgb = torch.where(inside, torch.full_like(rgb, 0.5), rgb)
    depth = torch.full((1, h, w), 2.0)
    fd = torch.tensor([NYU.focus_distances_m])
    stack = synthesize_stack(rgb, depth, fd[0], NYU.camera, "paper")[None]
    k = NYU.camera.blur_per_dioptre(fd)
    init = Prediction(depth=torch.full((1, 1, h, w), 3.0), aif=rgb[None].clone(), confidence=torch.zeros(1, 1, h, w))
    physics = ForwardModel.from_family("gaussian")
    core = inside.clone()
    core[:24, :] = core[40:, :] = False  # the middle of the window, well away from its textured frame
    core[:, :30] = core[:, 50:] = False
    errors = {}
    for levels in (0, 2):
        out = refine(stack, fd, k, NYU.depth_range_m, init, 30, physics, patience=0, pyramid_levels=levels)
        errors[levels] = float((1.0 / out.depth_map[core] - 0.5).abs().mean())
    start = 1.0 / 3.0 - 0.5
    assert errors[2] < 0.5 * errors[0], errors
    assert errors[0] > 0.5 * abs(start)  # the per-pixel inside has barely moved: the check can tell them apart


def test_early_stopping_waits_out_a_transient_rise_of_the_loss(monkeypatch):
    # A loss that first rises (as the first Adam steps on the coarse grids often make it) and then falls far below
    # its start: counting patience from step 0 would stop inside the bump; the count starts once the loss is below
    # its starting value, so the run goes on to the fall.
    import defocus.refine as refine_module

    bump = [5.0, 9.0, 9.5, 9.0, 8.0, 7.0, 6.0, 5.5, 4.9, 4.0, 3.0, 2.0, 1.5, 1.2, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0]

    class ScriptedLoss(torch.nn.Module):
        def __init__(self, *_):
            super().__init__()
            self.calls = 0

        def forward(self, stack, pred, *_):
            value = bump[min(self.calls, len(bump) - 1)]
            self.calls += 1
            return pred.inv_depth.sum() * 0.0 + value, {}

    monkeypatch.setattr(refine_module, "SelfSupervisedLoss", ScriptedLoss)
    stack, fd, k, init, _ = _case()
    report: dict = {}
    refine(stack, fd, k, NYU.depth_range_m, init, 100, ForwardModel.from_family("gaussian"), patience=4,
           report=report)
    # Through the bump (steps 1-7 above the start), down to the plateau, then 4 steps without improvement.
    assert report["steps_run"] == 19, report["losses"]
