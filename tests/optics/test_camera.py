"""Tests for defocus.optics.camera: thin-lens CoC against hand-worked numbers, presets, validation, conversions."""

from __future__ import annotations

import math

import pytest
import torch

from defocus.errors import DefocusError
from defocus.optics.camera import PRESETS, CameraPreset, ThinLensCamera, blur_px_from_inverse_depth, get_preset

NYU = PRESETS["nyuv2"].camera
DFN = PRESETS["defocusnet"].camera


# ----------------------------------------------------------------------------------------- CoC by hand, nyuv2
# nyuv2: f = 50 mm, N = 8, p = 12 µm.
#   A = f / N = 50 / 8 = 6.25 mm
#   focus fd = 1 m:  s = fd·f / (fd − f) = 1000·50 / 950 mm = 50/0.95 mm = 52.631578947 mm
#   point at d = 2 m: |1/fd − 1/d| = |1 − 0.5| = 0.5 dioptre
#   c = A·s·0.5 = 6.25e-3 · 52.631578947e-3 · 0.5 m = 1.644736842e-4 m (164.47 µm)
#   in pixels: 164.4736842 µm / 12 µm = 13.70614035 px
#   K = A·s/p = 6.25e-3 · 52.631578947e-3 / 12e-6 = 27.41228070 px per dioptre
#   Gaussian σ = c/(4p) = 3.42653509 px; disk radius = c/(2p) = 6.85307018 px
#
#   focus fd = 6 m:  s = 6000·50 / 5950 mm = 50.420168067 mm
#   point at d = 1 m: |1/6 − 1| = 5/6 dioptre
#   c = 6.25e-3 · 50.420168067e-3 · 5/6 = 2.626050420e-4 m → 21.88375350 px
NYU_CASES = [
    # (focus m, depth m, c in metres, c in px, K px/dioptre)
    (1.0, 2.0, 1.644736842e-4, 13.70614035, 27.41228070),
    (6.0, 1.0, 2.626050420e-4, 21.88375350, 26.26050420),
]

# ------------------------------------------------------------------------------------ CoC by hand, defocusnet
# defocusnet: f = 7.2 mm, N = 1.2, p = 5.6 µm.
#   A = 7.2 / 1.2 = 6 mm
#   focus fd = 0.3 m: s = 300·7.2 / 292.8 mm = 7.377049180 mm
#   point at d = 0.6 m: |1/0.3 − 1/0.6| = 3.333… − 1.666… = 1.666666667 dioptre
#   c = 6e-3 · 7.377049180e-3 · 1.666666667 = 7.377049180e-5 m (73.77 µm) → 73.77049180 / 5.6 = 13.17330211 px
#   K = 6e-3 · 7.377049180e-3 / 5.6e-6 = 7.903981265 px per dioptre
#
#   focus fd = 1.8 m: s = 1800·7.2 / 1792.8 mm = 7.228915663 mm
#   point at d = 3 m: |1/1.8 − 1/3| = 0.555… − 0.333… = 0.222222222 dioptre
#   c = 6e-3 · 7.228915663e-3 · 0.222222222 = 9.638554217e-6 m → 1.721170396 px
DFN_CASES = [
    (0.3, 0.6, 7.377049180e-5, 13.17330211, 7.903981265),
    (1.8, 3.0, 9.638554217e-6, 1.721170396, 7.745266781),
]


@pytest.mark.parametrize(
    "camera,case",
    [(NYU, c) for c in NYU_CASES] + [(DFN, c) for c in DFN_CASES],
    ids=["nyu-1m-2m", "nyu-6m-1m", "dfn-0.3m-0.6m", "dfn-1.8m-3m"],
)
def test_coc_matches_hand_computation(camera: ThinLensCamera, case):
    fd, d, c_m, c_px, k = case
    d64, fd64 = torch.tensor(d, dtype=torch.float64), torch.tensor(fd, dtype=torch.float64)
    assert float(camera.coc_m(d64, fd64)) == pytest.approx(c_m, rel=1e-8)
    assert float(camera.coc_px(d64, fd64)) == pytest.approx(c_px, rel=1e-8)
    assert float(camera.blur_per_dioptre_px(fd64)) == pytest.approx(k, rel=1e-8)
    # plain Python floats work too (float32 precision)
    assert float(camera.coc_px(d, fd)) == pytest.approx(c_px, rel=1e-5)
    # c/p = K·|1/fd − 1/d|
    assert c_px == pytest.approx(k * abs(1 / fd - 1 / d), rel=1e-8)


def test_aperture_and_sensor_distance_by_hand():
    assert NYU.aperture_m == pytest.approx(6.25e-3)
    assert DFN.aperture_m == pytest.approx(6.0e-3)
    # s = fd·f/(fd − f) = 1·0.05/0.95
    assert float(NYU.sensor_distance_m(torch.tensor(1.0, dtype=torch.float64))) == pytest.approx(0.05 / 0.95)
    # far focus: s → f
    assert float(NYU.sensor_distance_m(torch.tensor(1e9, dtype=torch.float64))) == pytest.approx(0.05, rel=1e-9)


def test_coc_zero_at_focus_and_symmetric_in_dioptres():
    fd = 2.0
    assert float(NYU.coc_px(fd, fd)) == 0.0
    # same dioptre offset on either side of the focal plane → same CoC
    near = 1.0 / (1.0 / fd + 0.3)
    far = 1.0 / (1.0 / fd - 0.3)
    assert float(NYU.coc_px(near, fd)) == pytest.approx(float(NYU.coc_px(far, fd)), rel=1e-6)


def test_coc_broadcasts_depth_against_focus():
    depth = torch.rand(2, 1, 1, 4, 5, dtype=torch.float64) + 0.5
    focus = torch.tensor([[1.0, 2.0, 3.0], [1.5, 2.5, 4.0]], dtype=torch.float64)[:, :, None, None, None]
    c = NYU.coc_px(depth, focus)
    assert c.shape == (2, 3, 1, 4, 5)
    i, n, y, x = 1, 2, 3, 4
    expected = NYU.aperture_m * 4.0 * NYU.focal_length_m / (4.0 - NYU.focal_length_m)
    expected *= abs(1 / 4.0 - 1 / float(depth[i, 0, 0, y, x])) / NYU.pixel_size_m
    assert float(c[i, n, 0, y, x]) == pytest.approx(expected, rel=1e-9)


# ---------------------------------------------------------------------------------------------------- presets
def test_coc_from_inverse_depth_is_the_same_law():
    # The hand-worked case above: d = 2 m (0.5 dioptre) seen focused at 1 m.
    half, one = torch.tensor(0.5, dtype=torch.float64), torch.tensor(1.0, dtype=torch.float64)
    assert NYU.coc_px_from_inverse_depth(half, one).item() == pytest.approx(13.70614035, rel=1e-8)
    layers = torch.tensor([0.1, 0.5, 1.0, 2.0], dtype=torch.float64)[:, None]  # (L, 1) dioptres
    focus = torch.tensor([1.0, 2.5, 6.0], dtype=torch.float64)[None, :]  # (1, N) metres
    coc = NYU.coc_px_from_inverse_depth(layers, focus)
    assert coc.shape == (4, 3)
    torch.testing.assert_close(coc, NYU.coc_px(1.0 / layers, focus))
    torch.testing.assert_close(NYU.coc_m_from_inverse_depth(layers, focus), coc * NYU.pixel_size_m)


def test_blur_px_from_inverse_depth_is_the_k_form():
    b, n, h, w = 2, 3, 4, 5
    g = torch.Generator().manual_seed(0)
    inv = 0.1 + 2.0 * torch.rand(b, 1, h, w, generator=g)
    focus = 0.5 + 5.0 * torch.rand(b, n, generator=g, dtype=torch.float64)
    k = NYU.blur_per_dioptre(focus)  # float32 (B, N)
    c = blur_px_from_inverse_depth(inv, focus, k)
    assert c.shape == (b, n, 1, h, w) and c.dtype == inv.dtype
    want = NYU.coc_px(1.0 / inv.double()[:, None], focus[:, :, None, None, None])
    torch.testing.assert_close(c.double(), want, rtol=1e-5, atol=1e-5)
    signed = blur_px_from_inverse_depth(inv, focus, k, signed=True)
    torch.testing.assert_close(signed.abs(), c, rtol=0, atol=0)
    beyond = (1.0 / inv[:, None]) > focus[:, :, None, None, None]
    assert ((signed > 0) == beyond).all()  # positive beyond the focus distance
    assert blur_px_from_inverse_depth(torch.full((1, 1, 2, 2), 0.5), torch.tensor([[2.0]]), torch.tensor([[9.0]])
                                      ).abs().max() == 0  # in focus: no blur


def test_presets_match_spec_table():
    nyu, dfn = get_preset("nyuv2"), get_preset("defocusnet")
    assert isinstance(nyu, CameraPreset)
    assert nyu.camera.to_dict() == {"focal_length_mm": 50.0, "f_number": 8.0, "pixel_size_um": 12.0}
    assert nyu.image_size == (240, 320)
    assert nyu.focus_distances_m == (1.0, 1.5, 2.5, 4.0, 6.0)
    assert nyu.depth_range_m == (0.1, 10.0)
    assert dfn.camera.to_dict() == {"focal_length_mm": 7.2, "f_number": 1.2, "pixel_size_um": 5.6}
    assert dfn.image_size == (256, 256)
    assert dfn.focus_distances_m == (0.3, 0.45, 0.75, 1.2, 1.8)
    assert dfn.depth_range_m == (0.1, 3.0)


def test_get_preset_unknown_name_lists_known():
    with pytest.raises(DefocusError, match="unknown preset") as exc:
        get_preset("iphone")
    assert "nyuv2" in str(exc.value) and "defocusnet" in str(exc.value)
    assert "\n" not in str(exc.value)


# ------------------------------------------------------------------------------------------------- resizing
def test_resized_scales_pitch_and_blur():
    half = NYU.resized(0.5)
    assert half.pixel_size_m == pytest.approx(24e-6)
    assert half.focal_length_m == NYU.focal_length_m and half.f_number == NYU.f_number
    assert NYU.resized(0.125).pixel_size_m == pytest.approx(96e-6)
    assert NYU.resized(2.0).pixel_size_m == pytest.approx(6e-6)
    # the blur in pixels scales with the image
    assert float(half.coc_px(2.0, 1.0)) == pytest.approx(0.5 * float(NYU.coc_px(2.0, 1.0)), rel=1e-6)
    assert float(half.blur_per_dioptre_px(1.0)) == pytest.approx(27.41228070 / 2, rel=1e-6)
    for bad in (0.0, -1.0, math.nan, math.inf):
        with pytest.raises(DefocusError):
            NYU.resized(bad)


# ----------------------------------------------------------------------------------------------- validation
@pytest.mark.parametrize("f_number", [0.0, -2.0, math.nan, math.inf, "eight", None])
def test_bad_f_number(f_number):
    with pytest.raises(DefocusError, match="f-number"):
        ThinLensCamera(50e-3, f_number, 12e-6)
    with pytest.raises(DefocusError):
        ThinLensCamera.from_mm_um(50.0, f_number, 12.0)


@pytest.mark.parametrize("value", [0.0, -1.0, math.nan, math.inf, -math.inf])
def test_non_finite_or_non_positive_lengths(value):
    with pytest.raises(DefocusError, match="focal length"):
        ThinLensCamera(value, 8.0, 12e-6)
    with pytest.raises(DefocusError, match="pixel size"):
        ThinLensCamera(50e-3, 8.0, value)
    with pytest.raises(DefocusError, match="focal length") as info:
        ThinLensCamera.from_mm_um(value, 8.0, 12.0)
    assert info.value.field == "camera.focal_length_mm"  # the command line names its flag from this
    with pytest.raises(DefocusError, match="pixel size") as info:
        ThinLensCamera.from_mm_um(50.0, 8.0, value)
    assert info.value.field == "camera.pixel_size_um"


def test_pixel_size_in_wrong_units():
    # 12 "metres" meant as µm, or 12 mm given as µm: both over 1 mm → a hint to use --pixel-size-um
    with pytest.raises(DefocusError, match="µm"):
        ThinLensCamera(50e-3, 8.0, 12.0)
    with pytest.raises(DefocusError, match="pixel size"):
        ThinLensCamera.from_mm_um(50.0, 8.0, 12000.0)
    # focal length in mm given as metres
    with pytest.raises(DefocusError, match="mm"):
        ThinLensCamera(50.0, 8.0, 12e-6)


@pytest.mark.parametrize("focus", [[0.05], [0.01], [1.0, 0.03], [-1.0], [0.0], [math.nan], [1.0, math.inf], []])
def test_validate_focus_rejects(focus):
    with pytest.raises(DefocusError):
        NYU.validate_focus(focus)


def test_validate_focus_accepts_beyond_focal_length():
    NYU.validate_focus([0.0501, 1.0, 1e6])
    NYU.validate_focus(torch.tensor([[1.0, 2.0], [3.0, 4.0]]))
    DFN.validate_focus(list(get_preset("defocusnet").focus_distances_m))


def test_validation_messages_are_one_line():
    for make in (
        lambda: ThinLensCamera(50e-3, -1.0, 12e-6),
        lambda: ThinLensCamera(50e-3, 8.0, 12.0),
        lambda: NYU.validate_focus([0.01]),
        lambda: ThinLensCamera.from_dict({"f_number": 8}),
    ):
        with pytest.raises(DefocusError) as exc:
            make()
        assert "\n" not in str(exc.value)


# ---------------------------------------------------------------------------------------------- conversions
@pytest.mark.parametrize("name", sorted(PRESETS))
def test_dict_round_trip_presets(name):
    cam = PRESETS[name].camera
    d = cam.to_dict()
    assert set(d) == {"focal_length_mm", "f_number", "pixel_size_um"}
    back = ThinLensCamera.from_dict(d)
    assert back.focal_length_m == pytest.approx(cam.focal_length_m, rel=1e-12)
    assert back.f_number == cam.f_number
    assert back.pixel_size_m == pytest.approx(cam.pixel_size_m, rel=1e-12)
    assert back.to_dict() == d


def test_dict_round_trip_odd_values_and_resized():
    cam = ThinLensCamera.from_mm_um(6.81, 1.85, 2.4).resized(1280 / 4080)
    d = cam.to_dict()
    back = ThinLensCamera.from_dict(d)
    assert back.pixel_size_m == pytest.approx(cam.pixel_size_m, rel=1e-8)
    assert back.focal_length_m == pytest.approx(6.81e-3, rel=1e-12)
    assert back.to_dict() == d


@pytest.mark.parametrize(
    "bad",
    [
        {"focal_length_mm": 50.0, "f_number": 8.0},
        {"f_number": 8.0, "pixel_size_um": 12.0},
        {"focal_length_mm": 50.0, "f_number": -8.0, "pixel_size_um": 12.0},
        {"focal_length_mm": "fifty", "f_number": 8.0, "pixel_size_um": 12.0},
        [50.0, 8.0, 12.0],
        None,
    ],
)
def test_from_dict_errors(bad):
    with pytest.raises(DefocusError):
        ThinLensCamera.from_dict(bad)


def test_from_mm_um_units():
    cam = ThinLensCamera.from_mm_um(50.0, 8.0, 12.0)
    assert cam.focal_length_m == pytest.approx(0.05)
    assert cam.pixel_size_m == pytest.approx(12e-6)
    assert cam.to_dict() == NYU.to_dict()


def test_an_f_number_faster_than_any_lens_in_air_is_refused():
    from defocus.errors import InputError
    from defocus.optics.camera import MIN_F_NUMBER, ThinLensCamera

    assert ThinLensCamera(0.05, MIN_F_NUMBER, 5e-6).f_number == 0.5  # the limit itself is a (theoretical) lens
    for bad in (0.49, 0.01, 6.9e-227):
        with pytest.raises(InputError, match="f-number .* impossible") as exc:
            ThinLensCamera(0.05, bad, 5e-6)
        assert exc.value.field == "camera.f_number" and "\n" not in str(exc.value)


def test_a_pixel_pitch_under_a_tenth_of_a_micrometre_is_refused():
    from defocus.errors import InputError
    from defocus.optics.camera import MIN_PIXEL_SIZE_M, ThinLensCamera

    assert ThinLensCamera(0.005, 1.8, MIN_PIXEL_SIZE_M).pixel_size_m == 1e-7
    for bad in (0.9e-7, 6.9e-233):
        with pytest.raises(InputError, match="pixel size .* impossible") as exc:
            ThinLensCamera(0.005, 1.8, bad)
        assert exc.value.field == "camera.pixel_size_um" and "\n" not in str(exc.value)


def test_a_focal_length_under_a_tenth_of_a_millimetre_is_refused():
    from defocus.errors import InputError
    from defocus.optics.camera import MIN_FOCAL_LENGTH_M, ThinLensCamera

    assert ThinLensCamera(MIN_FOCAL_LENGTH_M, 1.8, 1e-6).focal_length_m == 1e-4
    for bad in (0.9e-4, 1e-33):
        with pytest.raises(InputError, match="focal length .* impossible") as exc:
            ThinLensCamera(bad, 1.8, 1e-6)
        assert exc.value.field == "camera.focal_length_mm" and "\n" not in str(exc.value)
