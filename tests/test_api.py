"""The README's Python API example runs as written, and the package root exports what it documents."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import torch

import defocus

README = Path(__file__).resolve().parents[1] / "README.md"


def _example() -> str:
    text = README.read_text(encoding="utf-8")
    m = re.search(r"<!-- api-example -->\s*```python\n(.*?)```", text, re.S)
    assert m, "README lost its api-example block"
    return m.group(1)


def test_readme_api_example_runs(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    namespace: dict = {}
    exec(compile(_example(), "README.md", "exec"), namespace)  # noqa: S102 - our own README
    pred = namespace["pred"]
    assert isinstance(pred, defocus.StackPrediction) and pred.depth_map.shape == (48, 64)
    assert isinstance(pred.full, defocus.Prediction)
    assert torch.isfinite(pred.depth_map).all()
    assert {p.name for p in (tmp_path / "out" / "my_stack").iterdir()} >= {"depth.tiff", "depth.png", "aif.png"}
    assert namespace["rerendered"].shape == (1, 5, 3, 48, 64)
    assert isinstance(namespace["baseline"], defocus.StackPrediction)


def test_api_names_survive_submodule_imports():
    import defocus.predict  # noqa: F401 - a submodule import must not shadow a public name

    assert callable(defocus.estimate) and callable(defocus.write_prediction)
    assert all(not isinstance(getattr(defocus, n), type(defocus)) for n in defocus.__all__ if n != "__version__")


def test_package_root_exports_resolve_lazily():
    for name in defocus.__all__:
        assert getattr(defocus, name) is not None
    with pytest.raises(AttributeError):
        defocus.no_such_name  # noqa: B018


def test_notebook_conveniences():
    """print(stack) summarises instead of dumping tensors; a prediction hands out numpy arrays."""
    import numpy as np

    camera = defocus.get_preset("nyuv2").camera
    images = [np.full((48, 64, 3), 40 * i, np.uint8) for i in range(3)]
    stack = defocus.FocalStack.from_arrays(images, [1.0, 2.0, 4.0], camera)
    text = repr(stack)
    assert "3 images of 64x48" in text and "[1, 2, 4] m" in text and "tensor" not in text and len(text) < 300
    arrays = defocus.estimate(stack, model=defocus.create_model("classical")).to_numpy()
    assert arrays["depth"].shape == (48, 64) and arrays["aif"].shape == (48, 64, 3)
    assert arrays["confidence"].shape == (48, 64) and all(a.dtype == np.float32 for a in arrays.values())
