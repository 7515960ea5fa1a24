"""The ONNX interface of DAIF-Net and its runner: :class:`OnnxModel` runs a file of ``defocus export`` in ONNX
Runtime and is called like the PyTorch model (``create_model(checkpoint="model.onnx")`` builds one).

The graph's inputs and outputs (:data:`INPUTS`, :data:`OUTPUTS`) are written into the file's metadata by
:mod:`defocus.export` and checked here when a file is opened. Images smaller than :data:`MIN_SIZE` are refused
(the exported noise estimate of the classical prior takes 8 x 8 blocks; see :mod:`defocus.export`).
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import numpy as np
import torch

from defocus.errors import InputError
from defocus.models.daifnet import DAIFNet
from defocus.models.prediction import Prediction

#: Smallest height and width the exported graph takes (pixels).
MIN_SIZE = 10
#: Format tag written into the metadata; the runner refuses ONNX files without it.
FORMAT = "defocus-daifnet-onnx/1"
INSTALL_HINT = "install defocus[onnx] (pip install 'defocus[onnx]': onnx, onnxruntime, onnxscript)"

#: name -> (shape, dtype, unit, meaning) of the graph's inputs.
INPUTS: dict[str, tuple[str, str, str, str]] = {
    "stack": ("B N 3 H W", "float32", "sRGB-encoded values in [0, 1]",
              "focal stack: N images of each of B stacks, any order; N >= 1, H and W >= %d" % MIN_SIZE),
    "focus": ("B N", "float32", "metres", "focus distance of each image"),
    "blur_per_dioptre": ("B N", "float32", "pixels per dioptre",
                         "K = A*s/p of each image: circle-of-confusion diameter in pixels per dioptre of defocus, "
                         "c/p = K*|1/focus - 1/depth| (ThinLensCamera.blur_per_dioptre)"),
    "depth_range": ("B 2", "float32", "metres", "(near, far) of the bounded depth output, 0 < near < far"),
}
#: name -> (shape, dtype, unit, meaning) of the graph's outputs.
OUTPUTS: dict[str, tuple[str, str, str, str]] = {
    "depth": ("B 1 H W", "float32", "metres", "depth, 1 / inv_depth, inside depth_range"),
    "aif": ("B 3 H W", "float32", "sRGB-encoded values in [0, 1]", "all-in-focus image"),
    "confidence": ("B 1 H W", "float32", "[0, 1]",
                   "how clearly one image of the stack is the sharpest (1 - entropy of the focus attention / log N; "
                   "0 with N = 1)"),
    "inv_depth": ("B 1 H W", "float32", "dioptres (1/m)", "inverse depth as computed"),
    "attention": ("B N 1 H W", "float32", "weights summing to 1 over N", "per-image focus weights behind the depth"),
}
INPUT_NAMES = tuple(INPUTS)
OUTPUT_NAMES = tuple(OUTPUTS)


def require_onnx(runtime_only: bool = False) -> None:
    """A InputError naming the extra to install when the ONNX packages are missing."""
    import importlib.util

    needed = ["onnxruntime"] if runtime_only else ["onnx", "onnxruntime", "onnxscript"]
    missing = [m for m in needed if importlib.util.find_spec(m) is None]
    if missing:
        raise InputError(f"{', '.join(missing)} not found: {INSTALL_HINT}")


class OnnxModel:
    """An exported DAIF-Net run by ONNX Runtime on the CPU, called like the PyTorch model:
    ``model(stack, focus, blur_per_dioptre, depth_range) → Prediction`` (torch tensors in and out; no autograd — the
    graph runs in ONNX Runtime, torch only converts). ``.eval()`` and ``.to("cpu")`` exist so that the predict path
    can take either kind of model.

    Args:
        path: the ``.onnx`` file of ``defocus export``.
        threads: intra-op threads of ONNX Runtime (0: its default).
    """

    def __init__(self, path: str | os.PathLike, threads: int = 0) -> None:
        require_onnx(runtime_only=True)
        import onnxruntime as ort

        p = Path(path)
        if not p.is_file():
            raise InputError(f"ONNX model {p} does not exist")
        opts = ort.SessionOptions()
        if threads > 0:
            opts.intra_op_num_threads = threads
            opts.inter_op_num_threads = 1
        opts.log_severity_level = 3
        try:
            self.session = ort.InferenceSession(str(p), opts, providers=["CPUExecutionProvider"])
        except Exception as exc:  # noqa: BLE001 - onnxruntime raises its own exception types
            first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
            raise InputError(f"cannot read ONNX model {p}: {first}") from None
        props = self.session.get_modelmeta().custom_metadata_map
        if props.get("defocus.format") != FORMAT:
            raise InputError(f"{p} is an ONNX model but not one of `defocus export` (no {FORMAT} metadata)")
        names = [i.name for i in self.session.get_inputs()]
        if names != list(INPUT_NAMES):
            raise InputError(f"{p}: inputs {names}, expected {list(INPUT_NAMES)}")
        self.path = p
        self.metadata = dict(props)
        self.checkpoint_metadata = {"model_name": props.get("defocus.model_name"),
                     "model_config": json.loads(props.get("defocus.model_config", "{}"))}
        self.output_names = [o.name for o in self.session.get_outputs()]

    # nn.Module-like surface used by the predict path
    def eval(self) -> "OnnxModel":
        return self

    def to(self, device: Any) -> "OnnxModel":
        if torch.device(device).type != "cpu":
            raise InputError("an ONNX model runs on the CPU (onnxruntime's CPU provider), not on " + str(device),
                             field="device")
        return self

    @staticmethod
    def _array(x: torch.Tensor) -> np.ndarray:
        return np.ascontiguousarray(x.detach().to("cpu", torch.float32).numpy())

    def run_arrays(self, stack: np.ndarray, focus: np.ndarray, blur_per_dioptre: np.ndarray,
                   depth_range: np.ndarray) -> dict[str, np.ndarray]:
        """The graph on float32 arrays (unchecked): {output name: array}."""
        outs = self.session.run(None, dict(zip(INPUT_NAMES, (stack, focus, blur_per_dioptre, depth_range))))
        return dict(zip(self.output_names, outs))

    def __call__(self, stack: torch.Tensor, focus: torch.Tensor, blur_per_dioptre: torch.Tensor,
                 depth_range: torch.Tensor) -> Prediction:
        DAIFNet.check_inputs(stack, focus, blur_per_dioptre, depth_range)
        h, w = stack.shape[-2:]
        if min(h, w) < MIN_SIZE:
            raise InputError(f"the ONNX model takes images of at least {MIN_SIZE} x {MIN_SIZE} px, got {w}x{h}: "
                             "run the PyTorch model on this one")
        with torch.inference_mode():
            out = self.run_arrays(*(self._array(t) for t in (stack, focus, blur_per_dioptre, depth_range)))
        t = {k: torch.from_numpy(v).to(stack.dtype) for k, v in out.items()}
        return Prediction(depth=t["depth"], aif=t["aif"], confidence=t["confidence"], inv_depth=t["inv_depth"],
                          attention=t["attention"])
