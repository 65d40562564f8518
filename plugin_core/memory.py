"""Give freed host memory back to the operating system between the pipeline's stages.

glibc keeps the heap memory that freed tensors leave behind for later allocations, but a
few live blocks among many freed ones pin the whole region: after the forward pass over
thousands of batches the process can hold hundreds of megabytes it no longer uses, and the
next stage (the VLM's batches) adds its own peak on top. ``malloc_trim`` hands the free
pages back, so each stage's peak is its own.
"""

from __future__ import annotations

import ctypes
import functools
import sys
from collections.abc import Callable


@functools.cache
def _malloc_trim() -> Callable[[int], int] | None:
    if not sys.platform.startswith("linux"):
        return None
    try:
        trim = ctypes.CDLL(None).malloc_trim  # glibc only; musl and others lack it
    except (OSError, AttributeError):
        return None
    trim.argtypes = [ctypes.c_size_t]
    trim.restype = ctypes.c_int
    return trim


def release_freed_memory() -> bool:
    """Return the host memory freed so far to the operating system, where the C library
    can (glibc's ``malloc_trim``); elsewhere nothing happens.

    Cheap (milliseconds) and safe at any time: only pages no live object uses are released.

    Returns:
        True when the C library supports trimming (whether or not anything was released).

    Examples:
        >>> import torch
        >>> blocks = [torch.ones(64 * 1024) for _ in range(100)]
        >>> del blocks
        >>> release_freed_memory() in (True, False)
        True
    """
    trim = _malloc_trim()
    if trim is None:
        return False
    trim(0)
    return True
