"""defocus: metric depth and all-in-focus images from focal stacks (see README.md).

The public API, what a notebook user types::

    import defocus

    stack = defocus.read_stack("my_stack/")                     # a folder (stack.json, or images + EXIF)
    stack = defocus.FocalStack.from_arrays(images, focus_m, defocus.ThinLensCamera.from_mm_um(50, 8, 12))
    pred = defocus.estimate(stack)                              # what `defocus predict` computes; refine_steps=K
    defocus.write_prediction("out/my_stack", pred)              # the files of `defocus predict`
    pred.depth_map                                              # (H, W) metres

Names are imported lazily, so ``import defocus`` (and the command line) stays fast.
"""

from __future__ import annotations

from importlib import import_module
from typing import Any

__version__ = "0.1.0"

_PUBLIC: dict[str, str] = {
    "DefocusError": "defocus.errors",
    "InputError": "defocus.errors",
    "FocalStack": "defocus.data.stack",
    "read_stack": "defocus.data.folders",
    "write_stack": "defocus.data.folders",
    "load_image": "defocus.data.codecs",
    "ThinLensCamera": "defocus.optics.camera",
    "get_preset": "defocus.optics.camera",
    "ForwardModel": "defocus.optics.forward",
    "ForwardSpec": "defocus.optics.forward",
    "SensorModel": "defocus.optics.sensor",
    "Prediction": "defocus.models.prediction",
    "create_model": "defocus.models.factory",
    "list_models": "defocus.models.factory",
    "estimate": "defocus.predict",
    "predict_stack": "defocus.predict",
    "PredictOptions": "defocus.predict",
    "StackPrediction": "defocus.predict",
    "write_prediction": "defocus.outputs",
    "evaluate_stack": "defocus.evaluate",
    "depth_metrics": "defocus.metrics",
    "keep_freed_memory": "defocus.allocator",
}

__all__ = ["__version__", *_PUBLIC]


def __getattr__(name: str) -> Any:
    if name in _PUBLIC:
        value = getattr(import_module(_PUBLIC[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'defocus' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(__all__)
