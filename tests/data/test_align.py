"""Tests of frame registration: known hand-held transforms recovered, registered stacks left untouched (the decision),
focus-order check, warping, errors."""

from __future__ import annotations

import json
import math

import pytest
import torch
import torch.nn.functional as F

from defocus.data.align import (
    MIN_DISPLACEMENT_PX,
    Alignment,
    _grid,
    _similarity,
    breathing_correlation,
    check_focus_order,
    focus_order_votes,
    estimate_alignment,
    thin_lens_magnification_ratio,
    warp_to_reference,
)
from defocus.data.procedural import make_scene
from defocus.data.stack import FocalStack
from defocus.data.synthesis import synthesize_stack
from defocus.errors import DefocusError, InputError
from defocus.metrics import depth_metrics
from defocus.models.factory import create_model
from defocus.optics.camera import get_preset
from defocus.predict import predict_stack

NYU = get_preset("nyuv2")
FOCUS = torch.tensor([1.0, 1.5, 2.5, 4.0, 6.0])
H, W, PAD = 240, 320, 20


@pytest.fixture(scope="module")
def scene():
    """A procedural scene rendered as a focal stack with a margin, and its depth."""
    rgb, depth = make_scene(1_000_123, H + 2 * PAD, W + 2 * PAD, (0.7, 8.0))
    return synthesize_stack(rgb, depth, FOCUS, NYU.camera, "paper"), depth


def _hand_held(stack: torch.Tensor, seed: int = 0, reference: int = 2):
    """Frames as a hand-held camera would record them: per frame a similarity transform (scale up to 3 %, rotation
    up to 0.5°, shift up to 20 px) about the image centre; the reference frame is untouched."""
    g = torch.Generator().manual_seed(seed)
    n = stack.shape[0]
    params = torch.zeros(n, 4, dtype=torch.float64)
    params[:, 0] = torch.log(1 + 0.03 * (2 * torch.rand(n, generator=g, dtype=torch.float64) - 1))
    params[:, 1] = torch.deg2rad(0.5 * (2 * torch.rand(n, generator=g, dtype=torch.float64) - 1))
    params[:, 2:] = 20 * (2 * torch.rand(n, 2, generator=g, dtype=torch.float64) - 1)
    params[reference] = 0.0
    return _moved(stack, params)


def _moved(stack: torch.Tensor, params: torch.Tensor):
    """The frames (N, 3, H, W) of the padded rendering ``stack`` moved by the similarities ``params`` (N, 4: log
    scale, angle, tx, ty) about the image centre, and the true matrices (reference pixel -> frame pixel)."""
    n = stack.shape[0]
    m = _similarity(params, (W / 2, H / 2))  # reference pixel -> frame pixel
    shift = torch.tensor([[1, 0, PAD], [0, 1, PAD], [0, 0, 1.0]], dtype=torch.float64)
    frames = torch.empty(n, 3, H, W)
    for i in range(n):
        # Frame pixel q shows the reference point m⁻¹ q; the reference grid sits PAD pixels into the rendering.
        grid = _grid((shift @ torch.linalg.inv(m[i]))[None], H, W, (H + 2 * PAD, W + 2 * PAD)).float()
        frames[i] = F.grid_sample(stack[i : i + 1], grid, mode="bilinear", padding_mode="border",
                                  align_corners=False)[0]
    return frames, m


def _corner_rms(a: torch.Tensor, b: torch.Tensor) -> float:
    corners = torch.tensor([[0, 0, 1.0], [W, 0, 1], [0, H, 1], [W, H, 1]], dtype=torch.float64).T
    return float(((a @ corners)[:2] - (b @ corners)[:2]).pow(2).sum(0).mean().sqrt())


def test_thin_lens_magnification_grows_as_focus_comes_nearer():
    r = thin_lens_magnification_ratio(0.05, FOCUS, 2)
    assert float(r[2]) == 1.0 and (r[:-1] > r[1:]).all()
    s = lambda fd: fd * 0.05 / (fd - 0.05)  # noqa: E731
    assert float(r[0]) == pytest.approx(s(1.0) / s(2.5))
    with pytest.raises(DefocusError, match="focal length"):
        thin_lens_magnification_ratio(0.05, torch.tensor([0.04, 1.0]), 1)


def test_hand_held_transforms_are_recovered_to_a_third_of_a_pixel(scene):
    stack, _ = scene
    frames, truth = _hand_held(stack)
    al = estimate_alignment(frames, FOCUS, NYU.camera.focal_length_m)
    assert al.reference == 2
    for i in range(5):
        assert _corner_rms(al.matrices[i], truth[i]) <= 0.3, i
    assert (al.residual_after <= al.residual_before + 1e-9).all()
    assert float(al.residual_after.max()) < 0.5 * float(al.residual_before[al.residual_before > 0].min())
    x0, y0, x1, y1 = al.valid_box
    assert 0 < x0 < x1 < W and 0 < y0 < y1 < H and (x1 - x0) > 0.7 * W
    d = al.to_dict()
    assert d["reference"] == 2 and len(d["matrices_ref_to_frame"]) == 5


def test_warping_undoes_the_transforms_inside_the_common_area(scene):
    stack, _ = scene
    frames, _ = _hand_held(stack, seed=1)
    al = estimate_alignment(frames, FOCUS, NYU.camera.focal_length_m)
    warped, coverage = warp_to_reference(frames, al)
    x0, y0, x1, y1 = al.valid_box
    ideal = stack[..., PAD : PAD + H, PAD : PAD + W]
    err = (warped - ideal)[..., y0:y1, x0:x1].abs().mean()
    err_before = (frames - ideal)[..., y0:y1, x0:x1].abs().mean()
    assert float(err) < 0.2 * float(err_before)
    assert float(coverage[..., y0:y1, x0:x1].min()) > 0.99
    # In place: same result, written into the input tensor.
    copy = frames.clone()
    out, _ = warp_to_reference(copy, al, out=copy)
    assert out.data_ptr() == copy.data_ptr() and torch.allclose(out, warped)


def test_rescaled_alignment_is_the_same_geometry(scene):
    stack, _ = scene
    frames, _ = _hand_held(stack, seed=2)
    al = estimate_alignment(frames, FOCUS, NYU.camera.focal_length_m)
    half = al.rescaled(0.5)
    p = torch.tensor([100.0, 60.0, 1.0], dtype=torch.float64)
    q = al.matrices[0] @ p
    q_half = half.matrices[0] @ torch.tensor([50.0, 30.0, 1.0], dtype=torch.float64)
    torch.testing.assert_close(q_half[:2], q[:2] / 2)
    assert half.size == (H // 2, W // 2)
    with pytest.raises(DefocusError, match="rescaled"):
        warp_to_reference(frames[:, :, ::2, ::2], al)


def test_focus_order_check(scene):
    stack, _ = scene
    # Breathing as the thin lens predicts it (exaggerated 30x so that it is well above the noise).
    ratio = thin_lens_magnification_ratio(NYU.camera.focal_length_m, FOCUS, 2)
    frames = torch.empty(5, 3, H, W)
    for i in range(5):
        scale = 1 + 30 * (float(ratio[i]) - 1)
        m = _similarity(torch.tensor([[math.log(scale), 0, 0, 0]], dtype=torch.float64), (W / 2, H / 2))
        shift = torch.tensor([[1, 0, PAD], [0, 1, PAD], [0, 0, 1.0]], dtype=torch.float64)
        grid = _grid((shift @ torch.linalg.inv(m[0]))[None], H, W, (H + 2 * PAD, W + 2 * PAD)).float()
        frames[i] = F.grid_sample(stack[i : i + 1], grid, align_corners=False, padding_mode="border")[0]
    al = estimate_alignment(frames, FOCUS, NYU.camera.focal_length_m)
    assert check_focus_order(al, FOCUS) is None
    warning = check_focus_order(al, FOCUS.flip(0))  # the distances given in the opposite order
    assert warning is not None and "opposite" in warning and "\n" not in warning
    # Through the pipeline: every measurable pair contradicts the reversed order, so it is refused (one line naming
    # the option), unless the order is trusted — then it is the warning.
    agree, disagree = focus_order_votes(al, FOCUS.flip(0))
    assert disagree >= 3 and agree == 0
    assert breathing_correlation(al, FOCUS, NYU.camera.focal_length_m) > 0.9
    assert breathing_correlation(al, FOCUS.flip(0), NYU.camera.focal_length_m) < -0.9
    reversed_stack = FocalStack(images=frames, focus_distances_m=FOCUS.flip(0), camera=NYU.camera, name="rev")
    model = create_model("classical")
    with pytest.raises(InputError, match="refusing") as info:
        predict_stack(model, reversed_stack, max_size=160, solve=False)
    assert info.value.field == "trust_focus_order" and "\n" not in str(info.value)
    res = predict_stack(model, reversed_stack, max_size=160, solve=False, trust_focus_order=True)
    assert any("opposite" in w for w in res.warnings)
    assert predict_stack(model, FocalStack(images=frames, focus_distances_m=FOCUS, camera=NYU.camera), max_size=160,
                         solve=False).warnings == []  # the right order: no word


@pytest.mark.parametrize("seed", [0, 1, 3, 4, 7])
def test_hand_held_jitter_is_never_refused_as_a_reversed_order(scene, seed):
    """Random scale jitter (3 %, above this lens's breathing) can make most frame pairs look reversed; the pipeline
    then warns at most, it never refuses a stack in the right order."""
    stack, _ = scene
    frames, _ = _hand_held(stack, seed=seed)
    res = predict_stack(create_model("classical"), FocalStack(images=frames, focus_distances_m=FOCUS,
                                                              camera=NYU.camera), max_size=160, solve=False)
    assert res.alignment.applied


def test_aligned_depth_is_as_good_as_a_tripod_stack(scene):
    stack, depth = scene
    frames, _ = _hand_held(stack, seed=3)
    model = create_model("classical")
    tripod = FocalStack(images=stack[..., PAD : PAD + H, PAD : PAD + W], focus_distances_m=FOCUS, camera=NYU.camera)
    hand = FocalStack(images=frames, focus_distances_m=FOCUS, camera=NYU.camera)
    # The solve off: this measures the alignment (the solve acts on the cropped and uncropped images alike).
    res = predict_stack(model, hand, max_size=320, solve=False)
    x0, y0, x1, y1 = res.crop_box
    gt = depth[0, PAD : PAD + H, PAD : PAD + W][y0:y1, x0:x1]
    ref = predict_stack(model, tripod, max_size=320, align=False, solve=False)
    m_hand = depth_metrics(res.full.depth_map, gt)
    m_tripod = depth_metrics(ref.full.depth_map[y0:y1, x0:x1], gt)
    assert m_hand["abs_rel"] <= 1.1 * m_tripod["abs_rel"]
    unaligned = predict_stack(model, hand, max_size=320, align=False, solve=False)
    m_unaligned = depth_metrics(unaligned.full.depth_map[y0:y1, x0:x1], gt)
    assert m_unaligned["abs_rel"] > m_hand["abs_rel"]  # the alignment is what makes the difference


def _registered(scene_seed: int, protocol: str) -> torch.Tensor:
    """A tripod stack: every frame of the same rendering (the central H x W of a padded one, like the fixture)."""
    rgb, depth = make_scene(scene_seed, H + 2 * PAD, W + 2 * PAD, (0.7, 8.0))
    return synthesize_stack(rgb, depth, FOCUS, NYU.camera, protocol)[..., PAD : PAD + H, PAD : PAD + W].contiguous()


@pytest.mark.parametrize("scene_seed, protocol, why", [
    (1_000_123, "paper", "nothing to correct"),  # the fitted motion stays under MIN_DISPLACEMENT_PX
    (1_000_124, "realistic", "no camera motion"),  # a pixel of "motion", fitted to the blur: residual barely lower
])
def test_a_registered_stack_is_left_untouched(scene_seed, protocol, why):
    frames = _registered(scene_seed, protocol)
    threads = torch.get_num_threads()
    al = estimate_alignment(frames, FOCUS, NYU.camera.focal_length_m)
    assert torch.get_num_threads() == threads  # the registration's single thread is given back
    assert not al.applied and al.applied_frames == () and why in al.reason
    assert torch.equal(al.matrices, torch.eye(3, dtype=torch.float64).repeat(5, 1, 1))
    assert al.valid_box == (0, 0, W, H) and al.size == (H, W)
    assert torch.equal(al.scales, torch.ones(5, dtype=torch.float64))
    assert torch.equal(al.residual_after, al.residual_before)
    # The focus-order check has nothing to go on, whichever order the distances come in.
    assert check_focus_order(al, FOCUS) is None and check_focus_order(al, FOCUS.flip(0)) is None
    # The frames come back as they are: no resampling, full coverage.
    warped, coverage = warp_to_reference(frames, al)
    assert torch.equal(warped, frames) and bool((coverage == 1).all())
    d = json.loads(json.dumps(al.to_dict()))
    assert d["applied"] is False and d["reason"] == al.reason and d["valid_box_xyxy"] == [0, 0, W, H]
    assert len(d["estimated_displacement_px"]) == 5


def test_known_shifts_and_scales_are_detected_and_recovered(scene):
    stack, _ = scene
    shifts = torch.zeros(5, 4, dtype=torch.float64)  # 1 to 3.4 px per frame
    shifts[:, 2] = torch.tensor([1.0, -2.0, 0.0, 1.5, -3.0])
    shifts[:, 3] = torch.tensor([2.0, 1.0, 0.0, -1.0, 1.5])
    breathing = torch.zeros(5, 4, dtype=torch.float64)  # 1 % per frame, nearer focus magnified
    breathing[:, 0] = math.log(1.01) * (2 - torch.arange(5)).double()
    for params in (shifts, breathing):
        frames, truth = _moved(stack, params)
        al = estimate_alignment(frames, FOCUS, NYU.camera.focal_length_m)
        assert al.applied and al.applied_frames == (0, 1, 3, 4), al.reason
        for i in range(5):
            assert _corner_rms(al.matrices[i], truth[i]) <= 0.3, i
        assert check_focus_order(al, FOCUS) is None
        d = al.to_dict()
        assert d["applied"] is True and d["reason"].startswith("applied to frames 0, 1, 3, 4")
        x0, y0, x1, y1 = al.valid_box
        assert (x0, y0, x1, y1) != (0, 0, W, H) and x1 - x0 > 0.9 * W


def test_a_single_frame_knocked_out_of_place_is_the_only_one_moved(scene):
    stack, _ = scene
    params = torch.zeros(5, 4, dtype=torch.float64)
    params[0, 2:] = torch.tensor([4.0, -3.0])
    frames, truth = _moved(stack, params)
    al = estimate_alignment(frames, FOCUS, NYU.camera.focal_length_m)
    assert al.applied and al.applied_frames == (0,), al.reason
    assert _corner_rms(al.matrices[0], truth[0]) <= 0.3
    assert torch.equal(al.matrices[1:], torch.eye(3, dtype=torch.float64).repeat(4, 1, 1))
    assert float(al.displacement_px[0]) > 4.0 and float(al.displacement_px[1:].max()) < 2.0
    warped, _ = warp_to_reference(frames, al)
    assert torch.equal(warped[1:], frames[1:])  # the frames left as taken are not resampled


def test_identity_alignment():
    al = Alignment.identity(3, (40, 60), 1, "nothing to correct", residual=torch.tensor([0.1, 0.0, 0.2]))
    assert not al.applied and al.valid_box == (0, 0, 60, 40) and al.reference == 1
    assert torch.equal(al.matrices, torch.eye(3, dtype=torch.float64).repeat(3, 1, 1))
    assert torch.equal(al.residual_before, al.residual_after)
    half = al.rescaled(0.5)
    assert not half.applied and half.size == (20, 30) and half.valid_box == (0, 0, 30, 20)
    assert half.reason == "nothing to correct"
    assert MIN_DISPLACEMENT_PX < 1.0  # "a fraction of a pixel"


def test_bad_inputs():
    with pytest.raises(DefocusError, match="images"):
        estimate_alignment(torch.rand(3, 4, 32, 32))
    with pytest.raises(DefocusError, match="focus distances"):
        estimate_alignment(torch.rand(3, 3, 32, 32), focus_m=torch.tensor([1.0, 2.0]))
    with pytest.raises(DefocusError, match="reference"):
        estimate_alignment(torch.rand(3, 3, 32, 32), reference=5)
