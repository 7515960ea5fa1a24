"""``defocus export``: DAIF-Net to ONNX; and :class:`OnnxModel`, the ONNX Runtime runner of ``defocus predict --onnx``.

What is exported: the network's whole tensor path, :meth:`DAIFNet.forward_unchecked` — the classical prior (with
its per-stack noise-adaptive pre-filter), the network, and the eval-mode cue fill of texture-less regions — through
a thin wrapper (:class:`ExportWrapper`) that returns the fields of the :class:`~defocus.models.prediction.Prediction`
as a tuple. The same model code runs in PyTorch and in the exported graph; nothing is re-implemented here. The input
checks of :meth:`DAIFNet.check_inputs` (Python branches on input values) stay outside the graph:
:class:`OnnxModel` makes them before it runs it.

Exporter: ``torch.onnx.export(..., dynamo=True)`` (``torch.export`` then onnxscript). Chosen over the legacy
TorchScript tracer (``dynamo=False``) because the model computes Python numbers from the input sizes — the padding
to a multiple of 2^levels, the crop back, log N of the confidence, the radii of the cue fill capped at half the
image — and the tracer records Python numbers as constants of the example it traced (not tried here: that is its
documented behaviour), so that a graph with "dynamic" axes would silently give wrong results at other sizes;
``torch.export`` keeps them symbolic, and it rejects a branch on a tensor value with an error instead of freezing it
with a warning. What it could not take was rewritten in the model code itself, in equivalent form (the commit before
this module's, with the proof that outputs did not change): the per-stack choice of the prior's pre-filter
(``unique``/``nonzero``/Python floats → a selection by ``torch.where``), branches on N (N = 1 and 2 fall out of the
general code), the batch-wide "nothing confident" early return of ``filters.confidence_fill`` (now selected per
stack), padding only when needed (padding by zero is the identity), the float64 ``conv2d`` and ``avg_pool2d`` of the
noise estimate (ONNX Runtime's CPU provider has no float64 kernels for them; slices and a mean).

The exporter's own graph optimisation (onnxscript's, ``optimize=True``) is switched off: onnxscript 0.7 removes an
``Add`` of a constant it deems zero, and so turned ``log(sml + 1e-12)`` of the classical prior into ``log(sml)``,
which is -inf on texture-less pixels (NaN depth over most of a sky on a real RGB-D frame); it also fused two clamps
into a ``Clip`` with an input it never defined. ONNX Runtime optimises the graph itself when it loads it.

Dynamic axes: batch B ≥ 1, stack length N ≥ 1, height H and width W ≥ :data:`MIN_SIZE` — all four; the network pads
H and W to a multiple of 2^levels inside the graph, so any size from :data:`MIN_SIZE` on works. Below it the noise
estimate of the prior takes 8 × 8 blocks (fewer pixels than a block would need another block size, a shape branch
the graph cannot hold): :class:`OnnxModel` refuses such images with a :class:`DefocusError`.

Inputs and outputs (also in the model's metadata, key ``defocus.inputs`` / ``defocus.outputs``, as JSON, and in the
doc strings of the graph's inputs and outputs): see :data:`INPUTS` and :data:`OUTPUTS`.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from defocus.errors import DefocusError
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
    """A DefocusError naming the extra to install when the ONNX packages are missing."""
    import importlib.util

    needed = ["onnxruntime"] if runtime_only else ["onnx", "onnxruntime", "onnxscript"]
    missing = [m for m in needed if importlib.util.find_spec(m) is None]
    if missing:
        raise DefocusError(f"{', '.join(missing)} not found: {INSTALL_HINT}")


class ExportWrapper(nn.Module):
    """DAIF-Net's tensor path with tensor outputs: (stack, focus, K, depth_range) → (depth, aif, confidence,
    inv_depth, attention), the model's own :meth:`DAIFNet.forward_unchecked` in eval mode."""

    def __init__(self, model: DAIFNet) -> None:
        super().__init__()
        if not isinstance(model, DAIFNet):
            raise DefocusError(f"only DAIF-Net models export to ONNX, got {type(model).__name__}")
        self.model = model

    def forward(self, stack: torch.Tensor, focus: torch.Tensor, blur_per_dioptre: torch.Tensor,
                depth_range: torch.Tensor) -> tuple[torch.Tensor, ...]:
        p = self.model.forward_unchecked(stack, focus, blur_per_dioptre, depth_range)
        return p.depth, p.aif, p.confidence, p.inv_depth, p.attention


def example_inputs(b: int = 2, n: int = 3, h: int = 40, w: int = 52, seed: int = 0) -> tuple[torch.Tensor, ...]:
    """Inputs to trace the graph with (sizes other than 0 and 1, which torch.export would specialise on)."""
    g = torch.Generator().manual_seed(seed)
    stack = torch.rand(b, n, 3, h, w, generator=g)
    focus = torch.linspace(0.6, 4.0, n).expand(b, n).contiguous()
    k = torch.full((b, n), 16.0)
    dr = torch.tensor([[0.3, 10.0]]).expand(b, 2).contiguous()
    return stack, focus, k, dr


def _shape_doc(spec: tuple[str, str, str, str]) -> str:
    shape, dtype, unit, meaning = spec
    return f"({', '.join(shape.split())}) {dtype}, {unit}: {meaning}"


def build_metadata(model: DAIFNet, meta: dict, opset: int, source: str) -> dict[str, str]:
    """The model's metadata_props: what the inputs and outputs are, and where the weights come from."""
    from defocus import __version__

    def table(specs: dict) -> str:
        return json.dumps([{"name": k, "shape": list(v[0].split()), "dtype": v[1], "unit": v[2], "meaning": v[3]}
                           for k, v in specs.items()])

    return {
        "defocus.format": FORMAT,
        "defocus.version": __version__,
        "defocus.model_name": str(meta.get("model_name", "daifnet")),
        "defocus.model_config": json.dumps(model.config.to_dict()),
        "defocus.train_config": json.dumps(meta.get("train_config", {})),
        "defocus.checkpoint_extra": json.dumps(meta.get("extra", {})),
        "defocus.checkpoint": source,
        "defocus.inputs": table(INPUTS),
        "defocus.outputs": table(OUTPUTS),
        "defocus.dynamic_axes": json.dumps({"B": ">= 1", "N": ">= 1", "H": f">= {MIN_SIZE}", "W": f">= {MIN_SIZE}"}),
        "defocus.opset": str(opset),
        "defocus.exporter": f"torch.onnx.export(dynamo=True), torch {torch.__version__}",
    }


def export_onnx(model: DAIFNet, path: str | os.PathLike, meta: dict | None = None, opset: int | None = None,
                source: str = "shipped", verbose: bool = False) -> Path:
    """Exports ``model`` (eval mode) to a single ONNX file at ``path`` with dynamic B, N, H, W and the metadata of
    :func:`build_metadata`; written atomically. Returns the path."""
    require_onnx()
    import contextlib
    import io
    import logging
    import warnings

    import onnx

    from defocus.files import atomic_write

    if opset is not None and opset < 18:
        raise DefocusError(f"--opset {opset}: the exporter writes opset 18 or newer")
    meta = meta or {}
    wrapper = ExportWrapper(model).eval()
    dims = (torch.export.Dim("B", min=1), torch.export.Dim("N", min=1), torch.export.Dim("H", min=MIN_SIZE),
            torch.export.Dim("W", min=MIN_SIZE))
    b, n, h, w = dims
    dynamic = ({0: b, 1: n, 3: h, 4: w}, {0: b, 1: n}, {0: b, 1: n}, {0: b})
    quiet = contextlib.nullcontext() if verbose else contextlib.redirect_stdout(io.StringIO())
    logger = logging.getLogger("torch.onnx")
    level = logger.level
    try:
        if not verbose:
            logger.setLevel(logging.ERROR)
        with quiet, warnings.catch_warnings():
            if not verbose:
                warnings.simplefilter("ignore")
            program = torch.onnx.export(
                wrapper, example_inputs(), dynamo=True, input_names=list(INPUT_NAMES),
                output_names=list(OUTPUT_NAMES), dynamic_shapes=dynamic, opset_version=opset, external_data=False,
                verbose=verbose, optimize=False,  # see the module docstring: onnxscript's optimizer drops our eps
            )
    except Exception as exc:  # noqa: BLE001 - the exporter raises many kinds; one line for the user
        raise DefocusError(f"ONNX export failed: {type(exc).__name__}: {str(exc).splitlines()[0]}") from exc
    finally:
        logger.setLevel(level)
    proto = program.model_proto
    for node in proto.graph.node:  # the exporter's debug records (stack traces with this machine's paths): 85 % of
        del node.metadata_props[:]  # the file
    used_opset = next((o.version for o in proto.opset_import if o.domain in ("", "ai.onnx")), opset or 0)
    for value in list(proto.graph.input) + list(proto.graph.output):
        spec = INPUTS.get(value.name) or OUTPUTS.get(value.name)
        if spec:
            value.doc_string = _shape_doc(spec)
    proto.doc_string = ("DAIF-Net (defocus): metric depth and all-in-focus image from a focal stack. Inputs "
                        + "; ".join(f"{k} {_shape_doc(v)}" for k, v in INPUTS.items()))
    del proto.metadata_props[:]
    for key, value in build_metadata(model, meta, used_opset, source).items():
        proto.metadata_props.add(key=key, value=value)
    onnx.checker.check_model(proto)
    return atomic_write(Path(path), lambda tmp: onnx.save_model(proto, str(tmp)), "ONNX model")


# ================================================================================================= the runner
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
            raise DefocusError(f"ONNX model {p} does not exist")
        opts = ort.SessionOptions()
        if threads > 0:
            opts.intra_op_num_threads = threads
            opts.inter_op_num_threads = 1
        opts.log_severity_level = 3
        try:
            self.session = ort.InferenceSession(str(p), opts, providers=["CPUExecutionProvider"])
        except Exception as exc:  # noqa: BLE001 - onnxruntime raises its own exception types
            first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
            raise DefocusError(f"cannot read ONNX model {p}: {first}") from None
        props = self.session.get_modelmeta().custom_metadata_map
        if props.get("defocus.format") != FORMAT:
            raise DefocusError(f"{p} is an ONNX model but not one of `defocus export` (no {FORMAT} metadata)")
        names = [i.name for i in self.session.get_inputs()]
        if names != list(INPUT_NAMES):
            raise DefocusError(f"{p}: inputs {names}, expected {list(INPUT_NAMES)}")
        self.path = p
        self.metadata = dict(props)
        self.meta = {"model_name": props.get("defocus.model_name"),
                     "model_config": json.loads(props.get("defocus.model_config", "{}"))}
        self.output_names = [o.name for o in self.session.get_outputs()]

    # nn.Module-like surface used by the predict path
    def eval(self) -> "OnnxModel":
        return self

    def to(self, device: Any) -> "OnnxModel":
        if torch.device(device).type != "cpu":
            raise DefocusError("--onnx runs on the CPU (onnxruntime's CPU provider): drop --device or use cpu")
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
            raise DefocusError(f"the ONNX model takes images of at least {MIN_SIZE} x {MIN_SIZE} px, got {w}x{h}: "
                               "run this one without --onnx")
        with torch.inference_mode():
            out = self.run_arrays(*(self._array(t) for t in (stack, focus, blur_per_dioptre, depth_range)))
        t = {k: torch.from_numpy(v).to(stack.dtype) for k, v in out.items()}
        return Prediction(depth=t["depth"], aif=t["aif"], confidence=t["confidence"], inv_depth=t["inv_depth"],
                          attention=t["attention"])


def load_model_for_predict(onnx_path: str | os.PathLike | None, checkpoint: str | os.PathLike | None,
                           threads: int = 0, refine_steps: int = 0):
    """(model, metadata) for ``defocus predict``: the ONNX runner when ``onnx_path`` is given (refinement, which
    needs PyTorch autograd, and a checkpoint are errors then), else the PyTorch checkpoint or the shipped weights."""
    if onnx_path is None:
        from defocus.models.checkpoint import load_checkpoint, load_default_model

        return load_checkpoint(checkpoint) if checkpoint else load_default_model()
    if checkpoint is not None:
        raise DefocusError("pass either --onnx (an exported model) or --checkpoint (PyTorch weights), not both")
    if refine_steps > 0:
        raise DefocusError("refinement needs PyTorch autograd, which --onnx runs without: drop --refine / "
                           "--refine-steps, or --onnx")
    model = OnnxModel(onnx_path, threads)
    return model, model.meta


# ============================================================================================ parity check
def parity_stacks(seed: int = 0) -> list[tuple[torch.Tensor, ...]]:
    """Procedural test stacks for the parity check of ``defocus export``, at sizes and stack lengths other than the
    traced example: (1, 5, 240, 320) `paper` nyuv2, (2, 3, 61, 83) `realistic` (noisy: the other pre-filter)."""
    from defocus.data.procedural import make_scene, scene_depth_range
    from defocus.data.synthesis import stack_from_scene
    from defocus.optics.camera import get_preset

    preset = get_preset("nyuv2")
    cam = preset.camera
    out = []
    for (b, n, h, w, protocol) in ((1, 5, 240, 320, "paper"), (2, 3, 61, 83, "realistic")):
        focus = list(preset.focus_distances_m)[:: max(1, len(preset.focus_distances_m) // n)][:n]
        stacks = []
        for i in range(b):
            rgb, depth = make_scene(seed + i, h, w, scene_depth_range(preset.name, focus, cam.focal_length_m))
            stacks.append(stack_from_scene(rgb, depth, focus, cam, protocol, seed=seed + i).images.float())
        fd = torch.tensor(focus, dtype=torch.float32).expand(b, n).contiguous()
        out.append((torch.stack(stacks), fd, cam.blur_per_dioptre(fd).float(),
                    torch.tensor([[0.1, 10.0]]).expand(b, 2).contiguous()))
    return out


#: The check of ``defocus export``: a pixel agrees when |Δdepth| / depth <= PARITY_RTOL, and the file passes when no
#: more than PARITY_MAX_FRACTION of the pixels disagree (and none is NaN in one runtime only). Both runtimes run the
#: same float32 graph and sum in other orders, which moves depths by about 1e-6 relative; but in a few pixels the model
#: decides at a threshold (the cue fill's support, the prior's sharpest frame), and there a rounding-sized change
#: flips the decision — PyTorch against itself with the input moved by 1e-7 differs by up to 8 cm in 25 of 76,800
#: pixels of a real RGB-D stack (BENCHMARKS.md) — so a maximum alone would fail good files. A wrong graph is off
#: almost everywhere.
PARITY_RTOL = 1e-3
PARITY_MAX_FRACTION = 1e-3


def export_and_check(checkpoint: str | os.PathLike | None, output: str | os.PathLike, opset: int | None = None,
                     check: bool = True, verbose: bool = False, threads: int = 0) -> list[str]:
    """``defocus export``: loads the checkpoint (default: the shipped weights), exports it to ``output`` and checks
    ONNX Runtime against PyTorch on :func:`parity_stacks`. Returns the lines to print; a failed check is a
    DefocusError (the file stays, for inspection)."""
    require_onnx()
    from defocus.models.checkpoint import load_checkpoint, load_default_model

    model, meta = load_checkpoint(checkpoint) if checkpoint else load_default_model()
    if not isinstance(model, DAIFNet):
        raise DefocusError(f"only DAIF-Net checkpoints export to ONNX, got {meta.get('model_name')}")
    t0 = time.perf_counter()
    path = export_onnx(model, output, meta, opset, source=str(checkpoint or "shipped"), verbose=verbose)
    runner = OnnxModel(path, threads)
    lines = [f"exported {meta.get('model_name')} ({checkpoint or 'shipped weights'}) to {path} "
             f"({path.stat().st_size / 1e6:.1f} MB, opset {runner.metadata.get('defocus.opset')}, "
             f"{time.perf_counter() - t0:.0f} s); dynamic: batch, stack length, height and width >= {MIN_SIZE} px"]
    if not check:
        return lines
    for stack, focus, k, dr in parity_stacks():
        with torch.inference_mode():
            ref, got = model(stack, focus, k, dr).depth.double(), runner(stack, focus, k, dr).depth.double()
        diff = (got - ref).abs()
        nan_mismatch = int((torch.isnan(got) != torch.isnan(ref)).sum())
        off = float((diff / ref > PARITY_RTOL).double().mean())
        b, n, _, h, w = stack.shape
        lines.append(f"parity B={b} N={n} {w}x{h}: max |depth onnx - torch| {float(diff.nan_to_num(0).max()):.2e} m, "
                     f"median {float(diff.nan_to_num(0).median()):.1e} m, {100 * off:.3f} % of pixels over "
                     f"{PARITY_RTOL:g} relative")
        if nan_mismatch or off > PARITY_MAX_FRACTION:
            raise DefocusError(f"ONNX Runtime and PyTorch disagree on a {w}x{h} stack ({100 * off:.2f} % of the "
                               f"pixels, {nan_mismatch} NaN in one only): {path} is not trustworthy")
    return lines
