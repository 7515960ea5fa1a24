"""Large batches of `defocus predict` / `evaluate` (issue 9): one stack at a time, a corrupt stack among many, and
``--shard I/N``.

Runs ``defocus.cli.main([...])`` in-process with the shipped weights on tiny rendered stacks (24 x 32 px).
"""

from __future__ import annotations

import argparse
import gc
import json
import shutil
import weakref
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from defocus import cli
from defocus.cli import _select_shard, _shard_spec, main
from defocus.outputs import OUTPUT_FILES

H, W = 24, 32


@pytest.fixture(scope="module")
def template(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("batch_template") / "proc3"
    assert main(["render", "--procedural", "3", "--preset", "nyuv2", "--size", str(H), str(W), "-o", str(folder)]) == 0
    return folder


def _batch(root: Path, template: Path, count: int, corrupt: tuple[int, ...] = ()) -> list[Path]:
    """``count`` copies of the template stack under ``root`` (s00, s01, ...); those in ``corrupt`` get a truncated
    image."""
    folders = []
    for i in range(count):
        folder = root / f"s{i:02d}"
        shutil.copytree(template, folder)
        if i in corrupt:
            data = (folder / "focus_2.png").read_bytes()
            (folder / "focus_2.png").write_bytes(data[: len(data) // 3])
        folders.append(folder)
    return folders


def _cli(args: list, capsys) -> tuple[int, str, str]:
    rc = main([str(a) for a in args])
    cap = capsys.readouterr()
    return rc, cap.out, cap.err


def _lines(err: str, kind: str) -> list[str]:
    """Lines of stderr (progress bars removed) that contain ``kind`` ("error:", "failed")."""
    lines = [seg.strip() for ln in err.splitlines() for seg in ln.split("\r")]
    return [ln for ln in lines if ln.startswith("defocus ") and kind in ln]


def _complete(folder: Path) -> bool:
    return sorted(p.name for p in folder.iterdir()) == sorted(OUTPUT_FILES)


# ------------------------------------------------------------------------------------------------ --shard
@settings(max_examples=60, deadline=None)
@given(st.lists(st.text(alphabet="abc/_01", min_size=1, max_size=6), max_size=30, unique=True),
       st.integers(1, 12))
def test_shards_partition_the_sorted_list(names, n):
    folders = [Path(x) for x in names]
    shards = [_select_shard(folders, (i, n)) for i in range(1, n + 1)]
    together = sorted(k for s in shards for k in s)
    assert together == list(range(len(folders)))  # every folder once, in exactly one shard
    assert max(len(s) for s in shards) - min(len(s) for s in shards) <= 1  # balanced
    # The same folders given in another order give the same shards (by path, not by argument order).
    rev = folders[::-1]
    for i, s in enumerate(shards, start=1):
        assert sorted(str(folders[k]) for k in s) == sorted(str(rev[k]) for k in _select_shard(rev, (i, n)))
    assert _select_shard(folders, None) == list(range(len(folders)))


@pytest.mark.parametrize("text", ["0/3", "4/3", "1/0", "-1/2", "a/b", "1", "1/2/3", "", "1.5/2"])
def test_bad_shard_specs_are_refused(text, template, tmp_path, capsys):
    with pytest.raises(argparse.ArgumentTypeError):
        _shard_spec(text)
    with pytest.raises(SystemExit) as exc:
        main(["predict", str(template), "-o", str(tmp_path / "o"), "--shard", text])
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert "--shard" in err and "Traceback" not in err
    assert not (tmp_path / "o").exists()


def test_shards_cover_every_stack_once_with_the_names_of_a_full_run(template, tmp_path, capsys):
    root = tmp_path / "stacks"
    _batch(root, template, 5)
    (root / "s01" / "deeper").mkdir()  # a parent folder's stack folders are found whatever else they hold
    out = tmp_path / "out"  # one output folder for every shard, as on a shared disk
    seen: set[str] = set()
    new_per_shard = []
    for i in (1, 2, 3):
        rc, stdout, err = _cli(["predict", root, "-o", out, "--no-align", "--shard", f"{i}/3"], capsys)
        assert rc == 0, err
        assert f"shard {i}/3:" in stdout
        now = {p.name for p in out.iterdir()}
        new_per_shard.append(now - seen)
        assert len(now) == len(seen) + len(new_per_shard[-1])
        seen = now
    assert [len(o) for o in new_per_shard] == [2, 2, 1]  # disjoint, balanced
    assert seen == {f"s{i:02d}" for i in range(5)}  # together: every stack, with the names of a full run
    assert all(_complete(p) for p in (tmp_path / "out").iterdir())
    # A shard with nothing to do is not an error.
    rc, stdout, err = _cli(["evaluate", root / "s00", "--shard", "2/2"], capsys)
    assert rc == 0 and "no stacks" in stdout


# ----------------------------------------------------------------------------------------- failures in a batch
def test_predict_goes_on_past_a_corrupt_stack_and_exits_1_with_a_summary(template, tmp_path, capsys):
    folders = _batch(tmp_path / "stacks", template, 4, corrupt=(1,))
    before = {p: p.read_bytes() for f in folders for p in f.iterdir()}
    out = tmp_path / "out"
    rc, stdout, err = _cli(["predict", tmp_path / "stacks", "-o", out, "--no-align"], capsys)
    assert rc == cli.EXIT_SOME_FAILED == 1
    assert "Traceback" not in err
    errors = _lines(err, "error:")
    assert len(errors) == 1 and "s01" in errors[0] and "focus_2.png" in errors[0], err
    summary = _lines(err, "stacks failed")
    assert summary == [f"defocus predict: 1 of 4 stacks failed: {folders[1]}"]
    assert err.rstrip().endswith(summary[0])  # the summary is the last line
    assert sorted(p.name for p in out.iterdir()) == ["s00", "s02", "s03"]  # nothing at all for the failed stack
    assert all(_complete(p) for p in out.iterdir())
    assert {p: p.read_bytes() for f in folders for p in f.iterdir()} == before

    # --fail-fast stops at the failing stack; stacks before it are written.
    rc, stdout, err = _cli(["predict", tmp_path / "stacks", "-o", tmp_path / "ff", "--no-align", "--fail-fast"],
                           capsys)
    assert rc == 1
    assert sorted(p.name for p in (tmp_path / "ff").iterdir()) == ["s00"]
    assert _lines(err, "stacks failed") == [
        f"defocus predict: 1 of 4 stacks failed (stopped by --fail-fast, 2 not attempted): {folders[1]}"]


def test_every_stack_failing_is_exit_2_and_no_output(template, tmp_path, capsys):
    _batch(tmp_path / "stacks", template, 3, corrupt=(0, 1, 2))
    out = tmp_path / "out"
    rc, stdout, err = _cli(["predict", tmp_path / "stacks", "-o", out, "--no-align"], capsys)
    assert rc == 2 and len(_lines(err, "error:")) == 3 and "3 of 3 stacks failed" in err
    assert not out.exists()
    rc, stdout, err = _cli(["evaluate", tmp_path / "stacks", "--json", tmp_path / "r.json"], capsys)
    assert rc == 2 and len(_lines(err, "error:")) == 3 and not (tmp_path / "r.json").exists()
    # One stack alone fails as before: one line, exit 2.
    rc, stdout, err = _cli(["predict", tmp_path / "stacks" / "s00", "-o", out, "--no-align"], capsys)
    assert rc == 2 and len([ln for ln in err.splitlines() if "error" in ln]) == 1 and not out.exists()


def test_evaluate_goes_on_past_a_corrupt_stack(template, tmp_path, capsys):
    folders = _batch(tmp_path / "stacks", template, 3, corrupt=(2,))
    (folders[0] / "gt_depth.tiff").unlink()  # another kind of failure: no ground truth
    rc, stdout, err = _cli(["evaluate", *folders, "--json", tmp_path / "r.json"], capsys)
    assert rc == 1, err
    assert [("s00" in e, "s02" in e) for e in _lines(err, "error:")] == [(True, False), (False, True)]
    assert "gt_depth" in _lines(err, "error:")[0]
    assert "2 of 3 stacks failed" in err
    assert "mean (1)" in stdout
    data = json.loads((tmp_path / "r.json").read_text())
    assert [s["name"] for s in data["stacks"]] == ["s01"]
    assert [f["stack"] for f in data["failed"]] == [str(folders[0]), str(folders[2])]


# ------------------------------------------------------------------------------------------------ streaming
@pytest.mark.parametrize("command", ["predict", "evaluate"])
def test_one_stack_at_a_time(command, template, tmp_path, capsys, monkeypatch):
    """No stack read earlier is alive when the next one is read (memory does not grow with the batch)."""
    import defocus.data.folders as folders_mod

    real = folders_mod.read_stack
    alive: list[weakref.ref] = []
    peak = []

    def tracking_read_stack(*args, **kwargs):
        gc.collect()
        peak.append(sum(r() is not None for r in alive))
        stack = real(*args, **kwargs)
        alive.append(weakref.ref(stack))
        return stack

    monkeypatch.setattr(folders_mod, "read_stack", tracking_read_stack)
    _batch(tmp_path / "stacks", template, 4)
    extra = ["-o", tmp_path / "out", "--no-align"] if command == "predict" else []
    rc, _, err = _cli([command, tmp_path / "stacks", *extra], capsys)
    assert rc == 0, err
    assert len(peak) == 4 and max(peak) == 0


def test_freed_memory_is_released_after_every_stack_of_a_batch(template, tmp_path, capsys, monkeypatch):
    """The kept heap is handed back between stacks (defocus.allocator.release_freed_memory), failed ones included."""
    import defocus.allocator as allocator

    calls = []
    monkeypatch.setattr(allocator, "release_freed_memory", lambda: calls.append(1) or True)
    _batch(tmp_path / "stacks", template, 3, corrupt=(1,))
    rc, _, err = _cli(["predict", tmp_path / "stacks", "-o", tmp_path / "out", "--no-align"], capsys)
    assert rc == cli.EXIT_SOME_FAILED, err
    assert len(calls) == 3
