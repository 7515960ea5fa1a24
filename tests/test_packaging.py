"""The wheel carries what an installed package needs: the shipped weights and the packaged configs."""

from __future__ import annotations

import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def test_wheel_ships_weights_and_configs(tmp_path):
    pytest.importorskip("setuptools", reason="building a wheel without network needs setuptools in this environment")
    src = tmp_path / "src_copy"
    shutil.copytree(REPO / "src", src / "src", ignore=shutil.ignore_patterns("*.egg-info", "__pycache__"))
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(REPO / name, src / name)
    proc = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", str(tmp_path / "w"),
         str(src)],
        capture_output=True, text=True, timeout=300,
    )
    assert proc.returncode == 0, proc.stderr
    (wheel,) = (tmp_path / "w").glob("defocus-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    assert {"defocus/configs/release.yaml", "defocus/configs/tiny.yaml", "defocus/configs/finetune.yaml",
            "defocus/models/weights/confidence.json",
            "defocus/models/weights/daifnet_release.safetensors"} <= names
    assert "defocus/optics/forward.py" in names and "defocus/models/factory.py" in names
