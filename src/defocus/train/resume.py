"""Resume checkpoints: everything an interrupted run needs to finish bit-identical to an uninterrupted one.

A resume checkpoint (``<run>/resume/step-<STEP>.ckpt``) holds the model weights, the optimiser, scheduler and
sampler states of every data shard, the random generators, the partial sums of the epoch in progress and the rows of
``metrics.csv``, in one file: ``MAGIC`` + a ``torch.save`` payload + the payload's SHA-256. It is written atomically
(temporary file, fsync, rename, fsync of the folder), so a crash at any moment leaves either the new file or none;
the last ``keep`` files stay. On load the digest is checked: a truncated or corrupt file is reported in one line and
the previous good checkpoint is used instead.
"""

from __future__ import annotations

import hashlib
import io
import os
import re
from pathlib import Path
from typing import Callable

import torch

from defocus.errors import DefocusError
from defocus.files import atomic_write
from defocus.train import faults

MAGIC = b"DEFOCUS-RESUME-1"
_DIGEST = 32
_NAME = re.compile(r"^step-(\d+)\.ckpt$")


def resume_dir(run_dir: Path) -> Path:
    return Path(run_dir) / "resume"


def checkpoint_path(run_dir: Path, step: int) -> Path:
    return resume_dir(run_dir) / f"step-{step:08d}.ckpt"


def list_checkpoints(run_dir: Path) -> list[tuple[int, Path]]:
    """(step, path) of the resume checkpoints of a run, newest first."""
    folder = resume_dir(run_dir)
    if not folder.is_dir():
        return []
    found = []
    for p in folder.iterdir():
        m = _NAME.match(p.name)
        if m and p.is_file():
            found.append((int(m.group(1)), p))
    return sorted(found, reverse=True)


def write_durably(path: Path, data: bytes, halfway: Callable[[], None] | None = None) -> None:
    """Writes ``data`` to ``path`` atomically and durably: temporary sibling, fsync, rename, fsync of the folder.
    ``halfway`` runs after the first half is on disk (the fault-injection point of the tests)."""

    def write(tmp: Path) -> None:
        with open(tmp, "wb") as f:
            mid = len(data) // 2
            f.write(data[:mid])
            if halfway is not None:
                f.flush()
                os.fsync(f.fileno())
                halfway()
            f.write(data[mid:])
            f.flush()
            os.fsync(f.fileno())

    atomic_write(path, write, "checkpoint", durable=True)


def save_resume_checkpoint(run_dir: Path, step: int, payload: dict, keep: int = 2) -> Path:
    """Writes the resume checkpoint of ``step`` and removes all but the newest ``keep``."""
    buf = io.BytesIO()
    torch.save(payload, buf)
    body = buf.getvalue()
    data = MAGIC + body + hashlib.sha256(body).digest()
    path = checkpoint_path(run_dir, step)
    write_durably(path, data, halfway=lambda: faults.check("checkpoint", step))
    for _, old in list_checkpoints(run_dir)[max(1, keep):]:
        old.unlink(missing_ok=True)
    return path


def read_resume_checkpoint(path: Path) -> dict:
    """The payload of one resume checkpoint; a DefocusError if it is truncated, corrupt or not one."""
    try:
        data = Path(path).read_bytes()
    except OSError as exc:
        raise DefocusError(f"cannot read checkpoint {path}: {exc.strerror or exc}") from None
    if not data.startswith(MAGIC):
        raise DefocusError(f"checkpoint {path} is not a defocus resume checkpoint (or its start is corrupt)")
    if len(data) < len(MAGIC) + _DIGEST:
        raise DefocusError(f"checkpoint {path} is truncated ({len(data)} bytes)")
    body, digest = data[len(MAGIC):-_DIGEST], data[-_DIGEST:]
    if hashlib.sha256(body).digest() != digest:
        raise DefocusError(f"checkpoint {path} is truncated or corrupt (checksum mismatch)")
    try:
        return torch.load(io.BytesIO(body), map_location="cpu", weights_only=False)
    except Exception as exc:  # a payload that passed the checksum but does not unpickle: a foreign file
        raise DefocusError(f"checkpoint {path} cannot be read: {str(exc).strip().splitlines()[0]}") from None


def load_latest(run_dir: Path, warn: Callable[[str], None] = print) -> tuple[dict, Path]:
    """The newest good resume checkpoint of a run; each bad newer one is reported through ``warn`` and skipped.

    Raises:
        DefocusError: no checkpoint at all, or none readable.
    """
    found = list_checkpoints(run_dir)
    if not found:
        raise DefocusError(f"nothing to resume in {run_dir}: no checkpoint in {resume_dir(run_dir)}")
    errors = []
    for _, path in found:
        try:
            payload = read_resume_checkpoint(path)
        except DefocusError as exc:
            errors.append(str(exc))
            warn(f"warning: {exc}; trying the previous checkpoint")
            continue
        return payload, path
    raise DefocusError(f"nothing to resume in {run_dir}: all {len(found)} checkpoints are bad ({errors[0]})")


def remove_stale_temporaries(run_dir: Path) -> None:
    """Temporary files of a write that a crash interrupted."""
    folder = resume_dir(run_dir)
    if folder.is_dir():
        for p in folder.glob(".*.tmp"):
            p.unlink(missing_ok=True)
