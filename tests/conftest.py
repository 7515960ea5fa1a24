"""Shared test settings.

Tests run with one intra-op thread: on a 2-core machine shared with other work, PyTorch's default thread pool makes
small convolutions orders of magnitude slower through contention, and single-threaded runs are repeatable.
"""

from pathlib import Path

import numpy as np
import pytest
import torch
from numpy.lib.stride_tricks import sliding_window_view

SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"


@pytest.fixture(autouse=True)
def _single_thread():
    old = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(old)


@pytest.fixture
def shared_data() -> Path:
    """The third-party data folder ../shared/data; tests that need it are skipped where it is absent."""
    if not SHARED_DATA.is_dir():
        pytest.skip(f"real data not available: {SHARED_DATA} is absent (it lives beside the repository)")
    return SHARED_DATA


def np_ssim_map(x: np.ndarray, y: np.ndarray, ws: int = 11, sigma: float = 1.5, pad: str | None = None):
    """Independent SSIM reference for the tests: SSIM map of (C, H, W) float64 arrays with a full 2-D Gaussian window
    applied by direct windowed sums (11 x 11, σ 1.5, C1 = 0.01², C2 = 0.03²)."""
    r = ws // 2
    if pad == "reflect":
        x = np.pad(x, ((0, 0), (r, r), (r, r)), mode="reflect")
        y = np.pad(y, ((0, 0), (r, r), (r, r)), mode="reflect")
    t = np.arange(ws) - r
    g = np.exp(-(t**2) / (2.0 * sigma**2))
    w2 = np.outer(g, g)
    w2 /= w2.sum()

    def filt(a):
        return np.einsum("chwij,ij->chw", sliding_window_view(a, (ws, ws), axis=(1, 2)), w2)

    mx, my = filt(x), filt(y)
    vx, vy, cxy = filt(x * x) - mx**2, filt(y * y) - my**2, filt(x * y) - mx * my
    c1, c2 = 0.01**2, 0.03**2
    return (2 * mx * my + c1) * (2 * cxy + c2) / ((mx**2 + my**2 + c1) * (vx + vy + c2))


def render_stack(aif, depth, focus, camera, psf: str = "gaussian", method: str = "layered", **kwargs):
    """The renderer of ``method`` called directly (exact / layered / occlusion), for the renderer tests; the
    package's own interface is ``ForwardModel``."""
    from defocus.optics import render

    return {"exact": render.render_exact, "layered": render.render_layered,
            "occlusion": render.render_occlusion}[method](aif, depth, focus, camera, psf, **kwargs)
