"""Fault injection for the crash tests: ``DEFOCUS_FAULT`` makes a training process fail at a chosen point.

The crash-exact resume and distributed-failure tests need a process to die at a known place (in the middle of an
epoch, in the middle of writing a checkpoint, on one rank only). Killing from outside at a wall-clock time would make
them flaky, so training calls :func:`check` at those points and the environment decides. Unset (always, outside the
tests), :func:`check` does nothing.

Format: ``ACTION@POINT=STEP[,rank=R]``, e.g. ``kill@step=5``, ``kill@checkpoint=4``, ``raise@step=2,rank=1``.
``kill`` sends SIGKILL to the process itself (no clean-up runs: a real crash); ``raise`` raises an error;
``POINT`` is ``step`` (after optimiser step STEP) or ``checkpoint`` (half-way through writing the resume checkpoint of
step STEP).
"""

from __future__ import annotations

import os
import signal

from defocus.errors import DefocusError

ENV = "DEFOCUS_FAULT"


def _parse(text: str) -> tuple[str, str, int, int | None]:
    try:
        head, *opts = text.split(",")
        action, rest = head.split("@")
        point, step = rest.split("=")
        rank = None
        for opt in opts:
            key, value = opt.split("=")
            if key.strip() != "rank":
                raise ValueError(key)
            rank = int(value)
        action, point = action.strip(), point.strip()
        if action not in ("kill", "raise") or point not in ("step", "checkpoint"):
            raise ValueError(text)
        return action, point, int(step), rank
    except ValueError:
        raise DefocusError(f"{ENV}={text!r} is not ACTION@POINT=STEP[,rank=R] (kill|raise, step|checkpoint)") from None


def check(point: str, step: int, rank: int = 0) -> None:
    """Fails here if ``DEFOCUS_FAULT`` names this point, step and rank."""
    text = os.environ.get(ENV)
    if not text:
        return
    action, want_point, want_step, want_rank = _parse(text)
    if want_point != point or want_step != step or (want_rank is not None and want_rank != rank):
        return
    if action == "kill":
        os.kill(os.getpid(), signal.SIGKILL)
    raise DefocusError(f"injected fault at {point} {step} ({ENV})")
