"""The C allocator under the worker: free pages handed back, and large buffers kept out of its heap.

glibc serves a request of at least its mmap threshold from a mapping of its own, unmapped when freed; smaller ones
come from the heap, whose free pages stay with the process until a trim. The threshold moves by itself: once a
mapped buffer is freed it rises to that buffer's size (up to 32 MiB). After the first Kafka fetch, the ~1 MiB
fetch and batch buffers a worker allocates and frees many times a second then come from the heap, between the
state's long-lived allocations, and leave holes there: the resident size climbs to the high-water mark of what
was in flight. A fixed threshold keeps them mapped (and stops the moving).

Elsewhere than glibc (musl, macOS) every call here does nothing.
"""

from __future__ import annotations

import ctypes
from collections.abc import Callable
from typing import Any

M_MMAP_THRESHOLD = -3  # glibc's mallopt parameter
LARGE_BUFFER = 128 * 1024  # bytes: what is at least this large gets a mapping of its own


def _libc_function(name: str) -> Callable[..., Any] | None:
    try:
        return getattr(ctypes.CDLL(None), name)  # type: ignore[no-any-return]
    except (OSError, AttributeError):
        return None


_TRIM = _libc_function("malloc_trim")
_MALLOPT = _libc_function("mallopt")


def release_free_memory() -> bool:
    """Hand the heap's free pages back to the system; False where that is not possible."""
    if _TRIM is None:
        return False
    _TRIM(0)
    return True


def keep_large_buffers_apart(threshold: int = LARGE_BUFFER) -> bool:
    """Serve every allocation of at least `threshold` bytes from a mapping of its own, from now on; False where
    that is not possible."""
    if _MALLOPT is None:
        return False
    return bool(_MALLOPT(M_MMAP_THRESHOLD, threshold))
