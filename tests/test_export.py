"""`defocus export` / `defocus predict --onnx`: ONNX Runtime against PyTorch at other batch, stack and image sizes
than the export traced, the metadata, the CLI, and the errors.

Exporting takes a minute or more on two cores, so the fast tests use a committed export of a tiny checkpoint
(tests/fixtures/onnx, made by its make_fixture.py; same features as the shipped model: noise-adaptive prior and cue
fill); the export itself is tested under ``-m slow``. Tolerances: both runtimes run the same float32 graph and sum in
other orders; measured differences are about 1e-6 relative (depth within 3e-5 m on 0.1-10 m ranges), so depth is
compared at rtol 1e-4 (atol 1e-5 m), the [0, 1] outputs at atol 1e-5, in all but 0.1 % of the pixels (see
_assert_parity).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

ort = pytest.importorskip("onnxruntime")

from defocus.cli import main  # noqa: E402
from defocus.errors import DefocusError  # noqa: E402
from defocus.models.factory import create_model  # noqa: E402
from defocus.models.onnx import INPUT_NAMES, MIN_SIZE, OUTPUT_NAMES, OnnxModel, require_onnx  # noqa: E402
from defocus.optics.camera import get_preset  # noqa: E402

FIXTURES = Path(__file__).parent / "fixtures" / "onnx"
ONNX = FIXTURES / "daifnet_tiny.onnx"
CKPT = FIXTURES / "daifnet_tiny.safetensors"
NYU = get_preset("nyuv2")


def _inputs(b, n, h, w, seed=0, noise=0.0):
    g = torch.Generator().manual_seed(seed)
    base = torch.rand(b, 1, 3, h, w, generator=g)
    frames = [torch.nn.functional.avg_pool2d(base[:, 0], 2 * i + 1, 1, i, count_include_pad=False) for i in range(n)]
    stack = torch.stack(frames, 1)
    if noise:
        stack = (stack + noise * torch.randn(stack.shape, generator=g)).clamp(0, 1)
    focus = 0.8 + 5.0 * torch.rand(b, n, generator=g)
    return stack, focus, NYU.camera.blur_per_dioptre(focus).float(), torch.tensor([[0.3, 10.0]]).expand(b, 2)


@pytest.fixture(scope="module")
def models():
    model = create_model(checkpoint=CKPT)
    return model, OnnxModel(ONNX, threads=1)


def _assert_parity(ref, got, max_fraction=1e-3):
    """Every output agrees to float32 rounding (depth rtol 1e-4, the [0, 1] outputs atol 1e-5) except in at most
    ``max_fraction`` of the elements: where the model decides at a threshold a rounding-sized change flips the
    decision (PyTorch does the same against itself on an input moved by 1e-7; BENCHMARKS.md, "ONNX export")."""
    for name, rtol, atol in (("depth", 1e-4, 1e-5), ("inv_depth", 1e-4, 1e-5), ("aif", 0, 1e-5),
                             ("confidence", 0, 1e-5), ("attention", 0, 1e-5)):
        a, b = getattr(ref, name), getattr(got, name)
        assert a.shape == b.shape and torch.equal(torch.isnan(a), torch.isnan(b)), name
        off = (b - a).abs() > atol + rtol * a.abs()
        assert float(off.float().mean()) <= max_fraction, f"{name}: {int(off.sum())} of {off.numel()} differ"


# The fixture was traced at B=2, N=3, 40x52; these are other sizes, odd ones, N = 1 and 2 (no 3-point fit), a batch
# mixing a clean and a noisy stack (two pre-filters of the prior in one graph), the smallest size.
@pytest.mark.parametrize("b,n,h,w,noise", [(1, 5, 48, 64, 0.0), (3, 2, 37, 29, 0.0), (1, 1, 33, 47, 0.0),
                                           (2, 7, 20, 90, 0.01), (1, 3, MIN_SIZE, MIN_SIZE, 0.0)])
def test_onnx_matches_pytorch_at_other_sizes(models, b, n, h, w, noise):
    model, runner = models
    x = _inputs(b, n, h, w, seed=b * 100 + n, noise=noise)
    if b == 2 and noise:
        x[0][0] = _inputs(1, n, h, w, seed=5)[0][0]  # the first stack clean, the second noisy
    with torch.inference_mode():
        _assert_parity(model(*x), runner(*x))


def test_texture_less_regions_stay_finite(models):
    """A flat (saturated) region has a focus measure of exactly 0 in every frame: log(0 + eps) must keep its eps in
    the graph (onnxscript's optimiser used to drop it: NaN depth over a real RGB-D frame's sky)."""
    model, runner = models
    x = _inputs(1, 5, 40, 56, seed=3)
    x[0][..., 5:30, 8:40] = 1.0
    with torch.inference_mode():
        got = runner(*x)
        _assert_parity(model(*x), got)
    assert torch.isfinite(got.depth).all() and torch.isfinite(got.attention).all()


def test_fixture_matches_the_current_model_code(models):
    """The committed export against today's model code on a realistic stack: regenerate the fixture
    (tests/fixtures/onnx/make_fixture.py) if the model's computation changed."""
    from defocus.data.procedural import make_scene
    from defocus.data.synthesis import stack_from_scene

    model, runner = models
    focus = list(NYU.focus_distances_m)
    rgb, depth = make_scene(3, 60, 80, (0.5, 8.0))
    st = stack_from_scene(rgb, depth, focus, NYU.camera, "realistic", seed=1)
    fd = torch.tensor(focus, dtype=torch.float32)[None]
    x = (st.images[None].float(), fd, NYU.camera.blur_per_dioptre(fd).float(), torch.tensor([[0.3, 10.0]]))
    with torch.inference_mode():
        _assert_parity(model(*x), runner(*x))


def test_metadata_describes_inputs_outputs_and_checkpoint(models):
    import onnx

    _, runner = models
    meta = runner.metadata
    assert meta["defocus.model_name"] == "daifnet_tiny"
    assert json.loads(meta["defocus.model_config"])["prior_presmooth"] == "auto"
    assert json.loads(meta["defocus.train_config"]) == {"name": "onnx-test-fixture"}
    assert int(meta["defocus.opset"]) >= 18 and meta["defocus.version"]
    inputs = json.loads(meta["defocus.inputs"])
    assert [i["name"] for i in inputs] == list(INPUT_NAMES)
    assert {i["name"]: i["unit"] for i in inputs}["focus"] == "metres"
    assert [o["name"] for o in json.loads(meta["defocus.outputs"])] == list(OUTPUT_NAMES)
    assert json.loads(meta["defocus.dynamic_axes"]) == {"B": ">= 1", "N": ">= 1", "H": f">= {MIN_SIZE}",
                                                        "W": f">= {MIN_SIZE}"}
    proto = onnx.load(str(ONNX), load_external_data=False)
    shapes = {v.name: [d.dim_param or d.dim_value for d in v.type.tensor_type.shape.dim] for v in proto.graph.input}
    assert shapes["stack"] == ["B", "N", 3, "H", "W"] and shapes["depth_range"] == ["B", 2]
    assert all(v.doc_string for v in list(proto.graph.input) + list(proto.graph.output))


def test_runner_checks_its_inputs(models):
    _, runner = models
    x = _inputs(1, 3, 32, 32)
    with pytest.raises(DefocusError, match="near < far"):
        runner(x[0], x[1], x[2], torch.tensor([[2.0, 1.0]]))
    with pytest.raises(DefocusError, match="at least"):
        runner(*_inputs(1, 3, MIN_SIZE - 1, 32))
    with pytest.raises(DefocusError, match="stack must have shape"):
        runner(x[0][0], x[1], x[2], x[3])
    with pytest.raises(DefocusError, match="CPU"):
        runner.to("cuda")


def test_runner_errors_on_bad_files(tmp_path):
    with pytest.raises(DefocusError, match="does not exist"):
        OnnxModel(tmp_path / "missing.onnx")
    junk = tmp_path / "junk.onnx"
    junk.write_bytes(b"not a protobuf at all")
    with pytest.raises(DefocusError, match="cannot read ONNX model"):
        OnnxModel(junk)
    # a valid ONNX model that `defocus export` did not write
    import onnx
    from onnx import TensorProto, helper

    graph = helper.make_graph([helper.make_node("Identity", ["x"], ["y"])], "g",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1])])
    other = tmp_path / "other.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)]), str(other))
    with pytest.raises(DefocusError, match="not one of `defocus export`"):
        OnnxModel(other)


def test_missing_onnx_packages_name_the_extra(monkeypatch, capsys, tmp_path):
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: None if name.startswith("onnx") else real(name, *a))
    with pytest.raises(DefocusError, match=r"install defocus\[onnx\]"):
        require_onnx()
    assert main(["export", "-o", str(tmp_path / "m.onnx")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "install defocus[onnx]" in err[0]
    assert not (tmp_path / "m.onnx").exists()


@pytest.fixture(scope="module")
def stack_folder(tmp_path_factory):
    folder = tmp_path_factory.mktemp("stacks") / "scene"
    assert main(["render", "--procedural", "2", "--preset", "nyuv2", "--size", "60", "80", "-o", str(folder)]) == 0
    return folder


def test_predict_onnx_writes_what_the_pytorch_path_writes(stack_folder, tmp_path):
    from defocus.data.codecs import read_depth
    from defocus.outputs import OUTPUT_FILES

    common = [str(stack_folder), "--no-align", "--threads", "1"]
    assert main(["predict", *common, "-o", str(tmp_path / "torch"), "--checkpoint", str(CKPT)]) == 0
    assert main(["predict", *common, "-o", str(tmp_path / "onnx"), "--onnx", str(ONNX)]) == 0
    a, b = tmp_path / "torch" / "scene", tmp_path / "onnx" / "scene"
    assert sorted(p.name for p in b.iterdir()) == sorted(p.name for p in a.iterdir())
    assert set(OUTPUT_FILES) <= {p.name for p in b.iterdir()}
    da, db = torch.from_numpy(read_depth(a / "depth.tiff")), torch.from_numpy(read_depth(b / "depth.tiff"))
    assert float(((db - da).abs() > 1e-5 + 1e-4 * da).float().mean()) <= 1e-3
    ca, cb = (torch.from_numpy(read_depth(p / "confidence.tiff")) for p in (a, b))
    assert float(((cb - ca).abs() > 1e-5).float().mean()) <= 1e-3
    info = json.loads((b / "prediction.json").read_text())
    assert info["runtime"] == "onnxruntime" and info["checkpoint"] == str(ONNX)


@pytest.mark.parametrize("extra,match", [
    (["--refine"], "autograd"),
    (["--refine-steps", "3"], "autograd"),
    (["--checkpoint", str(CKPT)], "not both"),
    (["--device", "cuda"], None),
])
def test_predict_onnx_errors(stack_folder, tmp_path, capsys, extra, match):
    if extra[0] == "--device" and torch.cuda.is_available():
        pytest.skip("CUDA present: the error is about the ONNX runner then")
    code = main(["predict", str(stack_folder), "-o", str(tmp_path / "out"), "--onnx", str(ONNX), *extra])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and err[0].startswith("defocus predict: error:")
    if match:
        assert match in err[0]
    assert not (tmp_path / "out" / "scene").exists()


@pytest.mark.parametrize("kind", ["missing", "not_onnx"])
def test_predict_onnx_bad_model_file(stack_folder, tmp_path, capsys, kind):
    path = tmp_path / "m.onnx"
    if kind == "not_onnx":
        path.write_text("{}")
    code = main(["predict", str(stack_folder), "-o", str(tmp_path / "out"), "--onnx", str(path)])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and str(path) in err[0]


def test_predict_onnx_runs_without_autograd(monkeypatch, models, stack_folder):
    """The network part of `predict --onnx` never records an autograd graph: a forward of the PyTorch model is
    never called, and what the runner returns holds no grad_fn."""
    from defocus.data.folders import read_stack
    from defocus.models.daifnet import DAIFNet
    from defocus.predict import predict_stack

    _, runner = models
    monkeypatch.setattr(DAIFNet, "forward_unchecked", lambda *a, **k: pytest.fail("PyTorch network called"))
    result = predict_stack(runner, read_stack(stack_folder), align=False)
    assert result.full.depth.grad_fn is None and torch.isfinite(result.full.depth).all()


# ------------------------------------------------------------------------------------------------ slow: export
def test_export_of_a_tiny_model_matches_pytorch(tmp_path):
    """The export itself (about 25 s on 2 idle cores; in the default suite so that CI exercises the exporter of the
    installed torch): a fresh tiny model, then ONNX Runtime at other sizes."""
    from defocus.export import export_onnx
    from defocus.models.factory import create_model

    torch.manual_seed(1)
    model = create_model("daifnet_tiny", prior_presmooth="auto", cue_fill_threshold=0.5).eval()
    path = export_onnx(model, tmp_path / "t.onnx", {"model_name": "daifnet_tiny"})
    runner = OnnxModel(path, threads=1)
    for b, n, h, w in ((1, 4, 45, 31), (2, 1, 16, 16)):
        x = _inputs(b, n, h, w, seed=n)
        with torch.inference_mode():
            _assert_parity(model(*x), runner(*x))


@pytest.mark.slow
def test_cli_export_of_the_shipped_weights(tmp_path):
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).parents[1] / "src")}
    out = subprocess.run([sys.executable, "-c", "import sys; from defocus.cli import main; sys.exit(main())",
                          "export", "-o", str(tmp_path / "m.onnx")], capture_output=True, text=True, env=env)
    assert out.returncode == 0, out.stderr
    assert "parity B=1 N=5 320x240" in out.stdout
    assert OnnxModel(tmp_path / "m.onnx").metadata["defocus.model_name"] == "daifnet_small"
