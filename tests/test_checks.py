"""Tests of the ground-floor helpers: shape checks, atomic writing, colour rules."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from defocus.checks import check_shape
from defocus.color import LUMA_WEIGHTS, linear_to_srgb, quantize_8bit, srgb_to_linear, to_grey, to_uint8
from defocus.errors import DefocusError
from defocus.files import atomic_folder, atomic_write


# --------------------------------------------------------------------------------------------- check_shape
def test_check_shape_binds_names_across_calls():
    sizes = check_shape(torch.zeros(2, 5, 3, 4, 6), "B N 3 H W", "stack")
    assert sizes == {"B": 2, "N": 5, "H": 4, "W": 6}
    check_shape(torch.zeros(2, 5), "B N", "focus", sizes)
    check_shape(torch.zeros(7, 2), "* 2", "anything")
    with pytest.raises(DefocusError, match=r"focus must have shape \(B, N\) = \(2, 5\), got \(2, 4\)"):
        check_shape(torch.zeros(2, 4), "B N", "focus", sizes)
    assert sizes == {"B": 2, "N": 5, "H": 4, "W": 6}  # a failed check binds nothing


@pytest.mark.parametrize(
    "x, pattern, needle",
    [
        (torch.zeros(2, 4, 4), "B 1 H W", "got (2, 4, 4)"),
        (torch.zeros(2, 2, 4, 4), "B 1 H W", "(B, 1, H, W)"),
        (torch.zeros(1, 1, 4, 5), "B 1 H H", "got (1, 1, 4, 5)"),
        (np.zeros((1, 1)), "B N", "must be a tensor"),
    ],
)
def test_check_shape_errors(x, pattern, needle):
    with pytest.raises(DefocusError) as exc:
        check_shape(x, pattern, "thing")
    assert needle in str(exc.value) and str(exc.value).startswith("thing must")


# ---------------------------------------------------------------------------------------------- atomic I/O
def test_atomic_write_replaces_and_cleans_up(tmp_path):
    p = tmp_path / "sub" / "a.txt"
    atomic_write(p, lambda tmp: tmp.write_text("one"))
    atomic_write(p, lambda tmp: tmp.write_text("two"))
    assert p.read_text() == "two"

    def fail(tmp):
        tmp.write_text("half")
        raise RuntimeError("boom")

    with pytest.raises(RuntimeError):
        atomic_write(p, fail)
    assert p.read_text() == "two" and sorted(x.name for x in p.parent.iterdir()) == ["a.txt"]

    def os_fail(tmp):
        raise PermissionError(13, "denied")

    with pytest.raises(DefocusError, match=r"cannot write thing .*a.txt: permission denied"):
        atomic_write(p, os_fail, "thing")


def test_atomic_folder_replaces_whole_or_not_at_all(tmp_path):
    dest = tmp_path / "out"
    atomic_folder(dest, lambda d: (d / "x").write_text("1"))
    atomic_folder(dest, lambda d: (d / "y").write_text("2"))
    assert sorted(p.name for p in dest.iterdir()) == ["y"]

    def fail(d):
        (d / "z").write_text("3")
        raise OSError("disk full")

    with pytest.raises(DefocusError, match="disk full"):
        atomic_folder(dest, fail, "results to")
    assert sorted(p.name for p in dest.iterdir()) == ["y"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]


# -------------------------------------------------------------------------------------------------- colour
def test_to_grey_is_rec601_luma_for_torch_and_numpy():
    x = torch.rand(2, 3, 3, 4, 5, dtype=torch.float64)
    want = sum(w * x[..., c, :, :] for c, w in enumerate(LUMA_WEIGHTS))
    torch.testing.assert_close(to_grey(x), want)
    np.testing.assert_allclose(to_grey(x.numpy()), want.numpy())
    assert to_grey(torch.ones(1, 3, 2, 2)).allclose(torch.ones(1, 2, 2))  # weights sum to 1
    torch.testing.assert_close(to_grey(x[:, :, :1]), x[:, :, 0])
    with pytest.raises(DefocusError, match="1 or 3 channels"):
        to_grey(torch.zeros(2, 4, 3, 3))


def test_srgb_curves_reference_values_and_roundtrip():
    # IEC 61966-2-1 reference points.
    x = torch.tensor([0.0, 0.04045, 0.5, 1.0], dtype=torch.float64)
    lin = srgb_to_linear(x)
    torch.testing.assert_close(lin, torch.tensor([0.0, 0.04045 / 12.92, ((0.5 + 0.055) / 1.055) ** 2.4, 1.0],
                                                 dtype=torch.float64))
    y = torch.linspace(0, 1, 101, dtype=torch.float64)
    torch.testing.assert_close(linear_to_srgb(srgb_to_linear(y)), y, atol=1e-12, rtol=0)
    np.testing.assert_allclose(srgb_to_linear(y.numpy()), srgb_to_linear(y).numpy(), rtol=1e-13, atol=0)
    np.testing.assert_allclose(linear_to_srgb(y.numpy()), linear_to_srgb(y).numpy(), rtol=1e-13, atol=0)
    assert float(srgb_to_linear(torch.tensor(1.5))) == 1.0  # clipped


def test_linear_to_srgb_gradcheck_and_finite_at_zero():
    x = torch.tensor([0.0005, 0.002, 0.2, 0.7], dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(linear_to_srgb, (x,))
    z = torch.zeros(3, requires_grad=True)
    linear_to_srgb(z).sum().backward()
    assert torch.isfinite(z.grad).all()


def test_uint8_rounds_half_up_for_torch_and_numpy():
    x = torch.tensor([0.0, 0.5 / 255, 1.5 / 255, 254.5 / 255, 1.2, -0.1])
    want = [0, 1, 2, 255, 255, 0]
    assert to_uint8(x).tolist() == want
    assert to_uint8(x.numpy()).tolist() == want
    torch.testing.assert_close(quantize_8bit(x), torch.tensor(want, dtype=torch.float32) / 255)
