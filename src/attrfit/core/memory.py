"""Keep freed memory in the process, so the next training step reuses it instead of faulting it back in.

glibc's malloc hands every block above a threshold to the kernel (``mmap``) and gives freed
memory at the top of the heap back (``trim``). A training step frees and re-allocates the
same multi-MiB tensors every time (augmented batches, activations), so by default each step
maps fresh pages and takes a page fault on every 4 KiB of them; kept, they are reused (the
gain is measured in docs/experiments/throughput.md). PyTorch's CPU tuning guides get the
same by swapping in jemalloc or tcmalloc; ``mallopt`` needs no extra library.

The price is that memory freed after the peak stays with the process until it ends (its
resident size stays at its peak), which is what a training or prediction process wants.
A user who chose an allocator or set glibc's own variables keeps that choice.

Example:
    >>> keep_freed_memory() in {"kept", "user's setting", "not glibc", "refused"}
    True
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging
import os
import platform

log = logging.getLogger(__name__)

M_TRIM_THRESHOLD = -1  # glibc's mallopt parameters (malloc.h)
M_MMAP_THRESHOLD = -3
# glibc refuses an mmap threshold above half its heap's maximum size: 32 MiB on 64-bit Linux.
# Blocks above it (the image cache, a batch of thousands of images) still come from mmap.
MMAP_THRESHOLD = 32 * 2**20
TRIM_THRESHOLD = 2**31 - 1  # an int for mallopt: never give the heap's top back while the process runs
USER_SETTINGS = ("MALLOC_TRIM_THRESHOLD_", "MALLOC_MMAP_THRESHOLD_", "MALLOC_TOP_PAD_", "GLIBC_TUNABLES")
OTHER_ALLOCATORS = ("jemalloc", "tcmalloc", "mimalloc")


def keep_freed_memory() -> str:
    """Tell glibc's malloc to keep freed blocks up to 32 MiB for reuse; say what was done.

    Returns ``"kept"``, ``"user's setting"`` (glibc variables or another allocator preloaded:
    left alone), ``"not glibc"`` (macOS, Windows, musl: nothing to do) or ``"refused"`` (a glibc
    that rejects the values: nothing changed). Idempotent.
    """
    if any(os.environ.get(name) for name in USER_SETTINGS) or any(
            a in os.environ.get("LD_PRELOAD", "") for a in OTHER_ALLOCATORS):
        return "user's setting"
    if platform.system() != "Linux" or platform.libc_ver()[0] != "glibc":
        return "not glibc"
    libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
    # Both at once: setting either one switches off glibc's own adjustment of the other.
    ok = libc.mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD) == 1 and libc.mallopt(M_TRIM_THRESHOLD, TRIM_THRESHOLD) == 1
    if not ok:
        log.debug("mallopt refused the thresholds; freed memory goes back to the system as before")
        return "refused"
    return "kept"


def is_out_of_memory(e: BaseException) -> bool:
    """Whether ``e`` is torch running out of memory (a GPU's OutOfMemoryError, or the CPU allocator's RuntimeError)."""
    import torch

    return isinstance(e, torch.OutOfMemoryError) or "can't allocate memory" in str(e) or "out of memory" in str(e)
