"""``defocus export``: DAIF-Net to ONNX, checked against PyTorch (the runner, :class:`~defocus.models.onnx.OnnxModel`,
and the graph's interface live in :mod:`defocus.models.onnx`).

What is exported: the network's whole tensor path, :meth:`DAIFNet.forward_unchecked` — the classical prior (with
its per-stack noise-adaptive pre-filter), the network, and the eval-mode cue fill of texture-less regions — through
a thin wrapper (:class:`ExportWrapper`) that returns the fields of the :class:`~defocus.models.prediction.Prediction`
as a tuple. The same model code runs in PyTorch and in the exported graph; nothing is re-implemented here. The input
checks of :meth:`DAIFNet.check_inputs` (Python branches on input values) stay outside the graph:
:class:`~defocus.models.onnx.OnnxModel` makes them before it runs it.

Exporter: ``torch.onnx.export(..., dynamo=True)`` (``torch.export`` then onnxscript). Chosen over the legacy
TorchScript tracer (``dynamo=False``) because the model computes Python numbers from the input sizes — the padding
to a multiple of 2^levels, the crop back, log N of the confidence, the radii of the cue fill capped at half the
image — and the tracer records Python numbers as constants of the example it traced (not tried here: that is its
documented behaviour), so that a graph with "dynamic" axes would silently give wrong results at other sizes;
``torch.export`` keeps them symbolic, and it rejects a branch on a tensor value with an error instead of freezing it
with a warning. The model code is written so that the exporter takes it (equivalent forms, outputs unchanged):
the per-stack choice of the prior's pre-filter
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
the graph cannot hold): the runner refuses such images.

Inputs and outputs (also in the model's metadata, key ``defocus.inputs`` / ``defocus.outputs``, as JSON, and in the
doc strings of the graph's inputs and outputs): see :data:`defocus.models.onnx.INPUTS` and ``OUTPUTS``.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import torch
from torch import nn

from defocus.errors import InputError
from defocus.models.daifnet import DAIFNet
from defocus.models.onnx import FORMAT, INPUT_NAMES, INPUTS, MIN_SIZE, OUTPUT_NAMES, OUTPUTS, OnnxModel, require_onnx

class ExportWrapper(nn.Module):
    """DAIF-Net's tensor path with tensor outputs: (stack, focus, K, depth_range) → (depth, aif, confidence,
    inv_depth, attention), the model's own :meth:`DAIFNet.forward_unchecked` in eval mode."""

    def __init__(self, model: DAIFNet) -> None:
        super().__init__()
        if not isinstance(model, DAIFNet):
            raise InputError(f"only DAIF-Net models export to ONNX, got {type(model).__name__}")
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
        raise InputError(f"opset {opset}: the exporter writes opset 18 or newer", field="opset")
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
        raise InputError(f"ONNX export failed: {type(exc).__name__}: {str(exc).splitlines()[0]}") from exc
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
#: flips the decision (PyTorch against itself with the input moved by 1e-7 does the same: BENCHMARKS.md, "ONNX
#: export"), so a maximum alone would fail good files. A wrong graph is off
#: almost everywhere.
PARITY_RTOL = 1e-3
PARITY_MAX_FRACTION = 1e-3


def export_and_check(checkpoint: str | os.PathLike | None, output: str | os.PathLike, opset: int | None = None,
                     check: bool = True, verbose: bool = False, threads: int = 0) -> list[str]:
    """``defocus export``: loads the checkpoint (default: the shipped weights), exports it to ``output`` and checks
    ONNX Runtime against PyTorch on :func:`parity_stacks`. Returns the lines to print; a failed check is a
    InputError (the file stays, for inspection)."""
    require_onnx()
    from defocus.models.factory import create_model

    model = create_model(checkpoint=checkpoint) if checkpoint else create_model(pretrained=True)
    meta = model.checkpoint_metadata
    if not isinstance(model, DAIFNet):
        raise InputError(f"only DAIF-Net checkpoints export to ONNX, got {meta.get('model_name')}")
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
            raise InputError(f"ONNX Runtime and PyTorch disagree on a {w}x{h} stack ({100 * off:.2f} % of the "
                               f"pixels, {nan_mismatch} NaN in one only): {path} is not trustworthy")
    return lines
