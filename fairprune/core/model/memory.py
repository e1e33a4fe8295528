"""Handing freed memory back to the operating system between a run's large steps.

glibc keeps freed blocks smaller than its (adaptive, up to 32 MiB) mmap threshold
in the process heap. A bias analysis or an evaluator's scoring frees hundreds of
MiB of such blocks (per-prompt tables, per-batch activations and logits); kept
in the heap, they stay in the resident set, and the next step's peak comes on
top of them. ``release_memory`` asks glibc to return them (``malloc_trim``);
elsewhere (macOS, musl, Windows) it does nothing.
"""

from __future__ import annotations

import ctypes
import functools
import logging
from collections.abc import Callable

logger = logging.getLogger(__name__)


@functools.lru_cache(maxsize=1)
def _malloc_trim() -> Callable[[int], int] | None:
    """glibc's ``malloc_trim``, or None where the C library has none."""
    try:
        return ctypes.CDLL("libc.so.6").malloc_trim
    except (OSError, AttributeError):  # not glibc: no libc.so.6, or no malloc_trim in it
        return None


def release_memory() -> bool:
    """Return the heap's free memory to the operating system; True when glibc's ``malloc_trim`` ran.

    A no-op returning False where it is unavailable. Freed tensors are freed by
    reference counting, so no garbage collection is forced here.
    """
    trim = _malloc_trim()
    if trim is None:
        return False
    trim(0)
    return True
