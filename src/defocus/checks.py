"""Shape checks with readable errors, in the style of kornia's ``KORNIA_CHECK_SHAPE``.

``check_shape(x, "B N 3 H W", "stack")`` checks a tensor against a pattern of dimension names and returns the sizes
it bound. A name binds the size it first meets and must match it wherever it appears again, also across calls that
share one ``sizes`` dict; a number must match exactly; ``*`` matches one dimension of any size. A failure is a
:class:`~defocus.errors.ShapeError` such as ``depth must have shape (B, 1, H, W) = (2, 1, 64, 64), got (2, 64, 64)``.
"""

from __future__ import annotations

from typing import Any

import torch

from defocus.errors import ShapeError


def _fmt(dims: list[str], sizes: dict[str, int]) -> str:
    names = "(" + ", ".join(dims) + ")"
    if all(d.isdigit() or d in sizes for d in dims):
        return f"{names} = ({', '.join(d if d.isdigit() else str(sizes[d]) for d in dims)})"
    return names


def check_shape(x: Any, pattern: str, name: str, sizes: dict[str, int] | None = None) -> dict[str, int]:
    """Checks that ``x`` is a tensor whose shape matches ``pattern``; returns the name → size bindings.

    Args:
        x: the tensor to check.
        pattern: space-separated dimension names, numbers or ``*``, e.g. ``"B N 3 H W"``.
        name: what ``x`` is, for the error message.
        sizes: bindings from earlier checks (updated in place), so that e.g. ``B`` must agree across tensors.
    Raises:
        ShapeError: ``x`` is not a tensor, or has another number of dimensions or a size that does not match.
    """
    dims = pattern.split()
    sizes = {} if sizes is None else sizes
    if not isinstance(x, torch.Tensor):
        raise ShapeError(f"{name} must be a tensor of shape ({', '.join(dims)}), got {type(x).__name__}")
    shape = tuple(x.shape)
    bound = dict(sizes)
    ok = len(shape) == len(dims)
    if ok:
        for d, s in zip(dims, shape):
            if d == "*":
                continue
            if d.isdigit():
                ok = int(d) == s
            elif d in bound:
                ok = bound[d] == s
            else:
                bound[d] = s
            if not ok:
                break
    if not ok:
        raise ShapeError(f"{name} must have shape {_fmt(dims, sizes)}, got {shape}")
    sizes.update(bound)
    return sizes


def check_depth_range(value: Any, name: str = "depth range", allow_zero_near: bool = False) -> tuple[float, float]:
    """(near, far) in metres as floats, checked: two finite numbers with 0 < near < far (0 <= near <= far with
    ``allow_zero_near``, as metrics take). One place for the rule; the message names ``name``.

    Raises:
        InputError (field ``depth_range``): not two numbers, or out of order.
    """
    import math

    from defocus.errors import InputError

    try:
        near, far = (float(v) for v in value)
    except (TypeError, ValueError):
        raise InputError(f"{name} must be two numbers (near, far) in metres, got {value!r}",
                         field="depth_range") from None
    ok = (0 <= near <= far if allow_zero_near else 0 < near < far) and math.isfinite(far)
    if not ok:
        order = "0 <= near <= far" if allow_zero_near else "0 < near < far"
        raise InputError(f"{name} must satisfy {order} < infinity (metres), got {value!r}", field="depth_range")
    return near, far
