"""Keep freed memory in the process instead of handing it back to the kernel (glibc's allocator).

By default glibc serves every allocation over a few MB (a network's activation map, a Winograd
tile buffer) with a fresh ``mmap`` and unmaps it on free, so the next batch of the same size
faults in and zeroes every page again. On the 2-core Zen 3 EPYC the benchmark's shipped-size case
(32 slices × 2 folds) took 5.0–5.6 million page faults and 13.6–16.2 s of system time per call,
17.0–20.3 s in all (8.3–9.6 s with freed memory kept), and large batches looked slow: eight
shipped-size slices of 448 × 384 took 2.46 s in one batch of 8 and 1.2 s with freed memory kept,
whatever the batch (docs/speed.md). Turning off ``mmap`` for allocations and raising the trim
threshold keeps that memory in the heap for the next call. It does not change a result, and the
process's resident memory then stays at its high-water mark, which the container has anyway.

``mallopt`` is glibc's; elsewhere (musl, macOS) this does nothing and says so. Hand-written because
neither PyTorch nor the standard library exposes it (jemalloc or tcmalloc via ``LD_PRELOAD`` would
need a system package and an environment set before the interpreter starts).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools

_M_TRIM_THRESHOLD = -1
_M_MMAP_MAX = -4
_DEFAULT_TRIM = 128 * 1024  # glibc's defaults
_DEFAULT_MMAP_MAX = 65536
_KEEP_TRIM = 2**31 - 1  # mallopt takes an int: up to 2 GB free at the heap's top is kept


@functools.cache
def _libc() -> ctypes.CDLL | None:
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
    except OSError:
        return None
    return libc if hasattr(libc, "mallopt") else None


def keep_freed_memory(keep: bool = True) -> bool:
    """Keep freed memory in the heap (``keep``), or go back to glibc's defaults for what is allocated
    from now on. True where it applied."""
    libc = _libc()
    if libc is None:
        return False
    applied = libc.mallopt(_M_MMAP_MAX, 0 if keep else _DEFAULT_MMAP_MAX) == 1
    applied &= libc.mallopt(_M_TRIM_THRESHOLD, _KEEP_TRIM if keep else _DEFAULT_TRIM) == 1
    return bool(applied)
