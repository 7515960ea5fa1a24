"""Keep freed memory in the process, so that large tensors are not handed back to the kernel and faulted in again.

glibc's malloc serves every request above its mmap threshold (at most 32 MB) with a fresh ``mmap`` and returns it
with ``munmap`` when freed. A network tile's feature maps are larger than that, so each of the network's layers on
each tile mapped new pages and the kernel zeroed them on first touch: on the 4080 x 3072 phone stack
``defocus predict`` took 14.6 million page faults and 51 s of CPU time in the kernel, beside 63 s of actual work
(``perf stat``; BENCHMARKS.md, "Issue 17, fifth round"). With mmap off and the heap not trimmed, freed blocks are
reused as they are: 0.6 million page faults, 4.6 s in the kernel, the same output bit for bit, wall time 66.1 -> 35.6 s,
peak resident memory 2.46 -> 2.61 GB (the heap keeps its high-water mark instead of shrinking between layers).

The command line calls :func:`keep_freed_memory` once at start-up; API users who run large stacks may call it too.
Between the stacks of a batch it calls :func:`release_freed_memory`: kept memory is reused within a stack, where the
same tile shapes recur, but across stacks of other sizes the heap fragments and its high-water mark grew stack after
stack (six 12 MP stacks in one call peaked at 3.64 GB against 2.61 GB for one).
``DEFOCUS_KEEP_FREED_MEMORY=0`` turns it off. Elsewhere than glibc (macOS, Windows, musl) it does nothing.
"""

from __future__ import annotations

import ctypes
import os
import sys

#: mallopt parameters (glibc's malloc.h).
_M_TRIM_THRESHOLD, _M_MMAP_MAX = -1, -4
#: Free memory at the top of the heap kept rather than trimmed (bytes; the largest value mallopt takes).
_TRIM_THRESHOLD = 2**31 - 1

_applied: bool | None = None
_malloc_trim = None


def keep_freed_memory() -> bool:
    """Makes glibc's malloc serve large blocks from its heap and keep freed memory (``mallopt``); idempotent.

    Returns whether the setting is in effect: False off Linux/glibc or with ``DEFOCUS_KEEP_FREED_MEMORY=0``.
    Only the speed and the resident memory change, never a result.
    """
    global _applied
    if _applied is not None:
        return _applied
    _applied = False
    if os.environ.get("DEFOCUS_KEEP_FREED_MEMORY", "").strip() == "0" or not sys.platform.startswith("linux"):
        return False
    try:
        mallopt = ctypes.CDLL("libc.so.6").mallopt
    except (OSError, AttributeError):  # not glibc
        return False
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    _applied = mallopt(_M_MMAP_MAX, 0) == 1 and mallopt(_M_TRIM_THRESHOLD, _TRIM_THRESHOLD) == 1
    return _applied



def release_freed_memory() -> bool:
    """Hands the heap's free pages back to the kernel (glibc ``malloc_trim(0)``), where :func:`keep_freed_memory`
    is in effect; a no-op otherwise. Called between the stacks of a batch (the next stack faults in its pages once,
    not once per layer). Returns whether anything was called."""
    global _malloc_trim
    if not _applied:
        return False
    if _malloc_trim is None:
        _malloc_trim = ctypes.CDLL("libc.so.6").malloc_trim
        _malloc_trim.argtypes, _malloc_trim.restype = [ctypes.c_size_t], ctypes.c_int
    _malloc_trim(0)
    return True
