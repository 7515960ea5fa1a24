"""keep_freed_memory: freed large blocks are reused without new page faults (glibc only), and it can be turned off."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

import defocus

# A small convolutional network run on the same 64 MB input eight times (as the tiles of a stack are); prints the
# minor page faults of the last seven runs.
_PROBE = """
import resource, sys, torch
import defocus
on = defocus.keep_freed_memory()
assert defocus.keep_freed_memory() == on  # idempotent
torch.manual_seed(0)
net = torch.nn.Sequential(torch.nn.Conv2d(16, 32, 3, padding=1), torch.nn.ReLU(), torch.nn.Conv2d(32, 16, 3, padding=1))
x = torch.rand(2, 16, 512, 512)
with torch.inference_mode():
    net(x)
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    for _ in range(7):
        y = net(x)
print(on, resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
"""


def _probe(env_value: str | None) -> tuple[bool, int]:
    env = {k: v for k, v in os.environ.items() if k != "DEFOCUS_KEEP_FREED_MEMORY"}
    if env_value is not None:
        env["DEFOCUS_KEEP_FREED_MEMORY"] = env_value
    out = subprocess.run([sys.executable, "-c", _PROBE], capture_output=True, text=True, env=env, check=True)
    on, faults = out.stdout.split()
    return on == "True", int(faults)


def _glibc() -> bool:
    import platform

    return sys.platform.startswith("linux") and platform.libc_ver()[0] == "glibc"


def test_public_name():
    assert "keep_freed_memory" in defocus.__all__


@pytest.mark.skipif(not _glibc(), reason="mallopt is glibc's: elsewhere keep_freed_memory does nothing")
def test_freed_blocks_are_reused_without_page_faults():
    on, faults = _probe(None)
    off, faults_off = _probe("0")
    assert on and not off
    # Each run maps 64-128 MB blocks (above glibc's 32 MB mmap limit): faulted in again every time unless kept.
    assert faults_off > 50_000, faults_off
    assert faults < 0.1 * faults_off, (faults, faults_off)


@pytest.mark.skipif(_glibc(), reason="only off glibc")
def test_does_nothing_off_glibc():
    assert _probe(None)[0] is False


def test_release_freed_memory_is_a_no_op_unless_memory_is_kept():
    import defocus.allocator as allocator

    probe = ("import defocus.allocator as a; before = a.release_freed_memory(); on = a.keep_freed_memory(); "
             "print(before, on, a.release_freed_memory())")
    env = {k: v for k, v in os.environ.items() if k != "DEFOCUS_KEEP_FREED_MEMORY"}
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, env=env, check=True)
    before, on, after = out.stdout.split()
    assert before == "False" and after == on  # trims only where keep_freed_memory is in effect
    assert callable(allocator.release_freed_memory)
