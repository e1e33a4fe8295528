"""Handing freed memory back to the operating system between a run's large steps, and within them.

glibc keeps freed blocks smaller than its (adaptive, up to 32 MiB) mmap threshold
in the process heap. A bias analysis or an evaluator's scoring frees hundreds of
MiB of such blocks (per-prompt tables, per-batch activations and logits); kept
in the heap, they stay in the resident set, and the next step's peak comes on
top of them. ``release_memory`` asks glibc to return them (``malloc_trim``);
elsewhere (macOS, musl, Windows) it does nothing.

Within one forward/backward pass the heap fragments: the graph's saved
activations stay while the temporaries between them are freed, and a later
block that does not fit a hole extends the heap. ``large_blocks_mapped`` gives
every block of at least 1 MiB a mapping of its own for the duration of a step
(glibc's ``mallopt(M_MMAP_THRESHOLD)``), returned to the system when freed, so
the resident set follows the live tensors (measured at the Llama-3.2-1B shape:
``benchmarks/RESULTS.md``).
"""

from __future__ import annotations

import ctypes
import functools
import logging
from collections.abc import Callable, Iterator
from contextlib import contextmanager

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


#: glibc's ``mallopt`` parameter number of the mmap threshold (``M_MMAP_THRESHOLD`` in malloc.h)
M_MMAP_THRESHOLD = -3
#: inside ``large_blocks_mapped``, blocks of at least this many bytes get a mapping of their own
MAPPED_BLOCK_BYTES = 1 << 20
#: the threshold ``large_blocks_mapped`` leaves: the ceiling of glibc's adaptive threshold on 64-bit systems
#: (``DEFAULT_MMAP_THRESHOLD_MAX``); glibc has no way back to adapting once the threshold was set
ADAPTIVE_CEILING_BYTES = 32 << 20
#: selection maps large blocks only for models whose weights take at least this many bytes: below it the peak is
#: far from any machine's memory, and the 7-10% of CPU time the mapped blocks cost is not worth paying
MAPPED_MIN_MODEL_BYTES = 1 << 30

_mapped_depth = 0  # nesting of large_blocks_mapped blocks: only the outermost sets and leaves the threshold
_mapped_ok = False  # whether the outermost block's mallopt took effect


@functools.lru_cache(maxsize=1)
def _mallopt() -> Callable[[int, int], int] | None:
    """glibc's ``mallopt``, or None where the C library has none."""
    try:
        return ctypes.CDLL("libc.so.6").mallopt
    except (OSError, AttributeError):
        return None


def mapped_threshold() -> int | None:
    """The mmap threshold (bytes) ``large_blocks_mapped`` holds in force now, or None outside such a block (or
    without glibc)."""
    return MAPPED_BLOCK_BYTES if _mapped_depth and _mapped_ok else None


@contextmanager
def large_blocks_mapped(enabled: bool = True) -> Iterator[bool]:
    """For the block, glibc serves every allocation of at least ``MAPPED_BLOCK_BYTES`` (1 MiB) from a mapping
    of its own, unmapped when freed, so freed activations leave the resident set at once instead of fragmenting
    the heap. A request that a free chunk already in the heap can hold is still served from it (glibc
    looks in its bins before it maps), so a long-lived, fragmented heap keeps part of its margin. Yields True where it took effect (glibc), False elsewhere (a no-op).

    The heap is trimmed (``release_memory``) on entry and on exit. Blocks nest; the outermost one ends by
    setting the threshold to ``ADAPTIVE_CEILING_BYTES`` (32 MiB), the value glibc's adaptive threshold climbs
    to at most, since glibc cannot return to adapting. Numbers computed inside are unchanged: only where freed
    memory goes changes. The cost is CPU time: every large block is page-faulted in afresh (at the
    Llama-3.2-1B shape, a run's minor page faults went from 2.3 to 5.3-5.4 million and it took 7-10% more CPU
    time; ``benchmarks/RESULTS.md``). ``enabled=False`` makes the block a no-op (yields False).
    """
    global _mapped_depth, _mapped_ok
    set_option = _mallopt() if enabled else None
    if set_option is None:
        yield False
        return
    if _mapped_depth == 0:
        release_memory()
        _mapped_ok = bool(set_option(M_MMAP_THRESHOLD, MAPPED_BLOCK_BYTES))  # mallopt returns 1 on success
    _mapped_depth += 1
    try:
        yield _mapped_ok
    finally:
        _mapped_depth -= 1
        if _mapped_depth == 0:
            if _mapped_ok:
                set_option(M_MMAP_THRESHOLD, ADAPTIVE_CEILING_BYTES)
            _mapped_ok = False
            release_memory()


def free_device_bytes(device: object) -> int | None:
    """Bytes free on ``device`` (a ``torch.device``) for a batch: CUDA's free memory; None on the CPU, where
    memory is shared with everything else and larger batches do not run faster."""
    import torch

    device = torch.device(device)  # type: ignore[arg-type]
    if device.type == "cuda" and torch.cuda.is_available():
        return int(torch.cuda.mem_get_info(device)[0])
    return None


def weight_bytes(model: object) -> int:
    """Bytes of a model's parameters (offloaded ones included: their shapes and dtypes are known)."""
    return sum(p.numel() * p.element_size() for p in model.parameters())  # type: ignore[attr-defined]


def batch_for_memory(free: int | None, per_item: int, n_items: int, default: int, fraction: float = 0.5) -> int:
    """How many items (each needing ``per_item`` bytes) a batch takes: as many as fill ``fraction`` of
    ``free`` bytes, at least 1 and at most ``n_items``; ``default`` (at most ``n_items``) when ``free`` is None."""
    if n_items < 1:
        return 1
    if free is None:
        return max(1, min(default, n_items))
    return max(1, min(n_items, int(fraction * free) // max(per_item, 1)))
