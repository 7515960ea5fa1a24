"""Tests of the training loop, checkpoints and the focal-sweep sampler (exact resume)."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file, save_file

from defocus.data.sweeps import DataConfig, FocalSweepSampler, SweepGroup
from defocus.errors import DefocusError
from defocus.models.factory import create_model
from defocus.models.checkpoint import read_metadata, save_checkpoint
from defocus.train.config import config_from_dict, load_config
from defocus.train.trainer import train

BATCH_KEYS = {"stack", "focus", "blur_per_dioptre", "depth_range", "protocol", "physics"}

TINY_RUN = [
    "model.name=daifnet_tiny",
    "data.presets=[nyuv2]",
    "data.protocols=[paper]",
    "data.scenes_per_group=2",
    "data.size=[24, 24]",
    "data.sweep=5",
    "optim.steps_per_epoch=3",
    "optim.batch_size=2",
    "optim.warmup_steps=1",
    "val_scenes=0",
]


def _cfg(tmp_path: Path, name: str, *extra: str):
    return load_config(None, [f"out_dir={tmp_path}", f"name={name}", *TINY_RUN, *extra])


def _rows(run_dir: Path) -> list[dict]:
    with (run_dir / "metrics.csv").open() as f:
        return list(csv.DictReader(f))


# --------------------------------------------------------------------------------------------- loss falls
def test_loss_falls_when_overfitting_two_scenes(tmp_path):
    cfg = load_config(
        None,
        [
            f"out_dir={tmp_path}", "name=overfit", "seed=0",
            "model.name=daifnet_small",
            "data.presets=[nyuv2]", "data.protocols=[paper]", "data.scenes_per_group=2",
            "data.size=[32, 32]", "data.sweep=6", "data.n_min=5", "data.n_max=5",
            "optim.epochs=10", "optim.steps_per_epoch=5", "optim.batch_size=2",
            "optim.warmup_steps=2", "optim.lr=2e-3", "val_scenes=0",
        ],
    )
    run = train(cfg, progress=False)
    rows = _rows(run)
    assert [int(r["epoch"]) for r in rows] == list(range(1, 11))
    losses = [float(r["loss"]) for r in rows]
    assert all(np.isfinite(losses))
    first, last = np.mean(losses[:2]), np.mean(losses[-2:])
    assert last < 0.9 * first, losses
    recon = [float(r["reconstruction"]) for r in rows]
    assert np.mean(recon[-2:]) < np.mean(recon[:2]), recon


# ---------------------------------------------------------------------------------- repeatability / resume
def _weights(path: Path) -> dict[str, torch.Tensor]:
    return load_file(str(path))


def _assert_same_weights(a: Path, b: Path) -> None:
    wa, wb = _weights(a), _weights(b)
    assert wa.keys() == wb.keys()
    for k in wa:
        assert torch.equal(wa[k], wb[k]), k


def test_same_seed_gives_identical_weights(tmp_path):
    a = train(_cfg(tmp_path, "a", "optim.epochs=1", "seed=5"), progress=False)
    b = train(_cfg(tmp_path, "b", "optim.epochs=1", "seed=5"), progress=False)
    c = train(_cfg(tmp_path, "c", "optim.epochs=1", "seed=6"), progress=False)
    _assert_same_weights(a / "last.safetensors", b / "last.safetensors")
    wa, wc = _weights(a / "last.safetensors"), _weights(c / "last.safetensors")
    assert any(not torch.equal(wa[k], wc[k]) for k in wa)


def test_exact_resume_after_a_crash_mid_epoch(tmp_path, monkeypatch):
    epochs, steps = 2, 3
    whole = train(_cfg(tmp_path, "whole", f"optim.epochs={epochs}"), progress=False)

    # Same run, failing at step 5 (in the second epoch, after the first epoch's checkpoint and the step-4 one).
    cfg = _cfg(tmp_path, "resumed", f"optim.epochs={epochs}", "save_every_steps=2")
    monkeypatch.setenv("DEFOCUS_FAULT", "raise@step=5")
    with pytest.raises(DefocusError, match="injected fault"):
        train(cfg, progress=False)
    run = tmp_path / "resumed"
    assert len(_rows(run)) == 1
    assert read_metadata(run / "last.safetensors")["extra"]["epoch"] == 1
    assert sorted(p.name for p in (run / "resume").iterdir()) == ["step-00000003.ckpt", "step-00000004.ckpt"]
    monkeypatch.delenv("DEFOCUS_FAULT")

    with pytest.raises(DefocusError, match="resume"):
        train(cfg, progress=False)  # an existing run is never silently overwritten
    resumed = train(cfg, resume=True, progress=False)
    assert resumed == run
    _assert_same_weights(whole / "last.safetensors", run / "last.safetensors")

    rows_whole, rows_resumed = _rows(whole), _rows(run)
    assert [int(r["epoch"]) for r in rows_resumed] == [1, 2]
    assert [int(r["step"]) for r in rows_resumed] == [steps, 2 * steps]
    for rw, rr in zip(rows_whole, rows_resumed):
        for key in ("loss", "reconstruction", "lr"):
            assert float(rw[key]) == float(rr[key]), key
    assert (run / "config.yaml").is_file()


def test_resume_without_state_is_an_error(tmp_path):
    with pytest.raises(DefocusError, match="nothing to resume"):
        train(_cfg(tmp_path, "fresh", "optim.epochs=1"), resume=True, progress=False)


def test_run_files_and_validation_columns(tmp_path):
    run = train(_cfg(tmp_path, "val", "optim.epochs=1", "val_scenes=1", "optim.steps_per_epoch=1"), progress=False)
    assert {"config.yaml", "metrics.csv", "last.safetensors", "resume", "best.safetensors"} <= {
        p.name for p in run.iterdir()
    }
    rows = _rows(run)
    assert len(rows) == 1
    for key in ("val_abs_rel", "val_rmse", "val_delta1"):
        assert np.isfinite(float(rows[0][key]))
    assert 0.0 <= float(rows[0]["val_delta1"]) <= 1.0
    cfg_back = config_from_dict(read_metadata(run / "last.safetensors")["train_config"])
    assert cfg_back.name == "val" and cfg_back.model.name == "daifnet_tiny" and cfg_back.val_scenes == 1


def test_epoch_weights_are_kept_only_when_asked(tmp_path):
    """save_epoch_weights keeps one weights file per epoch (the last equals last.safetensors; the epochs differ);
    off (the default) there is no epochs folder."""
    run = train(_cfg(tmp_path, "ep", "optim.epochs=2", "save_epoch_weights=true", "save_every_epochs=2"),
                progress=False)
    files = sorted(p.name for p in (run / "epochs").iterdir())
    assert files == ["epoch-001.safetensors", "epoch-002.safetensors"]
    assert read_metadata(run / "epochs" / "epoch-001.safetensors")["extra"]["epoch"] == 1
    last, second = _weights(run / "last.safetensors"), _weights(run / "epochs" / "epoch-002.safetensors")
    assert all(torch.equal(last[k], second[k]) for k in last)
    first = _weights(run / "epochs" / "epoch-001.safetensors")
    assert any(not torch.equal(first[k], second[k]) for k in first)
    plain = train(_cfg(tmp_path, "plain", "optim.epochs=1"), progress=False)
    assert not (plain / "epochs").exists()


# --------------------------------------------------------------------------------------------- checkpoint
def test_checkpoint_round_trip(tmp_path):
    torch.manual_seed(3)
    model = create_model("daifnet_tiny", widths=[6, 10], bottleneck=12)
    cfg = load_config(None, ["name=ckpt", "optim.epochs=3", "data.size=[20, 28]"])
    path = tmp_path / "m.safetensors"
    save_checkpoint(path, model, "daifnet_tiny", cfg.to_dict(), {"epoch": 3, "val_abs_rel": 0.25})
    assert not list(tmp_path.glob("*.tmp"))
    loaded = create_model(checkpoint=path)  # the factory owns loading
    meta = loaded.checkpoint_metadata
    assert not loaded.training
    assert loaded.config.widths == (6, 10) and loaded.config.bottleneck == 12
    sa, sb = model.state_dict(), loaded.state_dict()
    assert sa.keys() == sb.keys()
    for k in sa:
        assert torch.equal(sa[k], sb[k]), k
    assert meta["model_name"] == "daifnet_tiny"
    assert meta["extra"] == {"epoch": 3, "val_abs_rel": 0.25}
    back = config_from_dict(meta["train_config"])
    assert back.to_dict() == cfg.to_dict()
    # The loaded model computes the same thing.
    g = torch.Generator().manual_seed(0)
    x = torch.rand(1, 3, 3, 16, 16, generator=g)
    fd = torch.tensor([[1.0, 2.0, 4.0]])
    k = torch.tensor([[20.0, 21.0, 22.0]])
    dr = torch.tensor([[0.1, 10.0]])
    model.eval()
    with torch.no_grad():
        torch.testing.assert_close(model(x, fd, k, dr).depth, loaded(x, fd, k, dr).depth, rtol=0, atol=0)


def test_checkpoint_and_name_must_agree(tmp_path):
    path = tmp_path / "m.safetensors"
    save_checkpoint(path, create_model("daifnet_tiny"), "daifnet_tiny", {})
    assert create_model("daifnet_tiny", checkpoint=path).config == create_model("daifnet_tiny").config
    with pytest.raises(DefocusError, match="holds model daifnet_tiny, not daifnet_small"):
        create_model("daifnet_small", checkpoint=path)
    with pytest.raises(DefocusError, match="not both"):
        create_model(pretrained=True, checkpoint=path)
    with pytest.raises(DefocusError, match="no config overrides"):
        create_model(checkpoint=path, widths=[4])


def test_corrupt_or_missing_checkpoint_is_defocus_error(tmp_path):
    with pytest.raises(DefocusError, match="does not exist"):
        create_model(checkpoint=tmp_path / "missing.safetensors")
    garbage = tmp_path / "garbage.safetensors"
    garbage.write_bytes(b"this is not a safetensors file at all" * 10)
    with pytest.raises(DefocusError):
        create_model(checkpoint=garbage)
    # A truncated real checkpoint.
    good = tmp_path / "good.safetensors"
    save_checkpoint(good, create_model("daifnet_tiny"), "daifnet_tiny", {})
    truncated = tmp_path / "truncated.safetensors"
    truncated.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    with pytest.raises(DefocusError):
        create_model(checkpoint=truncated)
    # Weights that do not fit the model described by the metadata.
    tiny_cfg = json.dumps(create_model("daifnet_tiny").config.to_dict())
    small_state = {k: v.contiguous() for k, v in create_model("daifnet_small").state_dict().items()}
    mismatched = tmp_path / "mismatched.safetensors"
    save_file(small_state, str(mismatched), metadata={"model_name": "daifnet_tiny", "model_config": tiny_cfg})
    with pytest.raises(DefocusError, match="does not match"):
        create_model(checkpoint=mismatched)
    # Metadata that is not JSON.
    bad_meta = tmp_path / "bad_meta.safetensors"
    save_file(small_state, str(bad_meta), metadata={"model_name": "daifnet_small", "model_config": "{not json"})
    with pytest.raises(DefocusError):
        create_model(checkpoint=bad_meta)


# --------------------------------------------------------------------------------------------- sampler
def _index_group(s: int = 3, m: int = 12, h: int = 40, w: int = 44, protocol: str = "paper") -> SweepGroup:
    """A group whose pixel values encode (scene, sweep index): value = 20·i + m_index."""
    stacks = torch.empty(s, m, 3, h, w, dtype=torch.uint8)
    for i in range(s):
        for j in range(m):
            stacks[i, j] = 20 * i + j
    focus = torch.stack([torch.linspace(8.0, 0.9, m) + 0.001 * i for i in range(s)])
    k = 30.0 + focus  # anything that identifies the image
    return SweepGroup(stacks, focus, k, (0.1, 10.0), protocol)


def _decode(batch: dict) -> torch.Tensor:
    """(B, N) encoded values of each image of the batch."""
    vals = (batch["stack"] * 255).round().to(torch.int64)
    flat = vals.flatten(2)
    assert (flat == flat[..., :1]).all()  # constant images stay constant through crops and flips
    return flat[..., 0]


def test_batch_has_exactly_the_documented_keys_and_shapes():
    cfg = DataConfig(size=[16, 20], n_min=2, n_max=6, p_typical=0.5, n_typical=5)
    sampler = FocalSweepSampler([_index_group()], cfg, seed=0)
    for _ in range(10):
        batch = sampler.sample(3)
        assert set(batch) == BATCH_KEYS
        b, n = batch["focus"].shape
        assert b == 3 and 2 <= n <= 6
        assert batch["stack"].shape == (3, n, 3, 16, 20)
        assert batch["stack"].dtype == torch.float32
        assert float(batch["stack"].min()) >= 0 and float(batch["stack"].max()) <= 1
        assert batch["blur_per_dioptre"].shape == (3, n)
        assert batch["depth_range"].shape == (3, 2)
        torch.testing.assert_close(batch["depth_range"], torch.tensor([[0.1, 10.0]] * 3))
        assert batch["protocol"] == "paper"


def test_stratified_sampling_one_image_per_bin_and_focus_follows_images():
    m = 12
    group = _index_group(m=m)
    cfg = DataConfig(size=[8, 8], n_min=4, n_max=4, p_typical=0.0)
    sampler = FocalSweepSampler([group], cfg, seed=1)
    seen = set()
    orders_sorted = 0
    for _ in range(60):
        batch = sampler.sample(2)
        codes = _decode(batch)
        scene, idx = codes // 20, codes % 20
        for bi in range(2):
            assert (scene[bi] == scene[bi, 0]).all()  # one scene per stack
            bins = sorted(int(j) * 4 // m for j in idx[bi])
            assert bins == [0, 1, 2, 3]  # exactly one image from each quarter of the sweep
            s = int(scene[bi, 0])
            torch.testing.assert_close(batch["focus"][bi], group.focus[s, idx[bi]])
            torch.testing.assert_close(batch["blur_per_dioptre"][bi], group.blur_per_dioptre[s, idx[bi]])
            seen.update(int(j) for j in idx[bi])
            orders_sorted += int(torch.equal(idx[bi], idx[bi].sort().values))
    assert seen == set(range(m))  # every position of every bin gets drawn
    assert orders_sorted < 30  # the order is shuffled


def test_n_range_respected_and_clamped_to_sweep():
    cfg = DataConfig(size=[8, 8], n_min=2, n_max=4, p_typical=0.0)
    sampler = FocalSweepSampler([_index_group(m=12)], cfg, seed=2)
    ns = {sampler.sample(1)["focus"].shape[1] for _ in range(80)}
    assert ns == {2, 3, 4}
    typical = FocalSweepSampler([_index_group(m=12)], DataConfig(size=[8, 8], p_typical=1.0, n_typical=5), seed=0)
    assert {typical.sample(1)["focus"].shape[1] for _ in range(10)} == {5}
    # N larger than the sweep: every image once.
    big = FocalSweepSampler([_index_group(m=3)], DataConfig(size=[8, 8], n_min=7, n_max=9, p_typical=0.0), seed=0)
    for _ in range(5):
        batch = big.sample(1)
        assert sorted(_decode(batch)[0] % 20) == [0, 1, 2]


def test_sampler_determinism_and_state():
    cfg = DataConfig(size=[8, 8], n_min=2, n_max=6)
    groups = [_index_group(), _index_group(protocol="realistic")]
    a = FocalSweepSampler(groups, cfg, seed=9)
    b = FocalSweepSampler(groups, cfg, seed=9)
    for _ in range(5):
        x, y = a.sample(2), b.sample(2)
        assert torch.equal(x["stack"], y["stack"]) and torch.equal(x["focus"], y["focus"])
    state = a.state()
    nxt = a.sample(2)
    a.set_state(state)
    again = a.sample(2)
    assert torch.equal(nxt["stack"], again["stack"]) and nxt["protocol"] == again["protocol"]
    protocols = {a.sample(1)["protocol"] for _ in range(30)}
    assert protocols == {"paper", "realistic"}


def test_sampler_without_groups_is_an_error():
    with pytest.raises(DefocusError):
        FocalSweepSampler([], DataConfig())
