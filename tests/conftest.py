"""Shared test settings.

Tests run with one intra-op thread: on a 2-core machine shared with other work, PyTorch's default thread pool makes
small convolutions orders of magnitude slower through contention, and single-threaded runs are repeatable.
"""

from pathlib import Path

import pytest
import torch

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
