"""The C allocator: once told, it serves large buffers from mappings of their own, even after a larger one was
freed (which, left to itself, makes glibc serve every smaller one from its heap)."""

from __future__ import annotations

import ctypes.util
import subprocess
import sys

import pytest

from revpulse.agents import heap

# In a fresh interpreter (its heap has little free space): free an 8 MiB buffer, then allocate one of 2 MiB and
# print how many bytes glibc's mappings grew by.
_SCRIPT = """
import ctypes, sys
from revpulse.agents import heap

class MallInfo2(ctypes.Structure):
    _fields_ = [(name, ctypes.c_size_t) for name in (
        "arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks", "fsmblks", "uordblks", "fordblks", "keepcost"
    )]

mallinfo2 = ctypes.CDLL(None).mallinfo2
mallinfo2.restype = MallInfo2
if sys.argv[1] == "apart":
    assert heap.keep_large_buffers_apart()
del bytearray(8 * 2**20)[:]
before = mallinfo2().hblkhd
buffer = bytearray(2 * 2**20)
print(mallinfo2().hblkhd - before)
"""


def _mapped_growth(mode: str) -> int:
    out = subprocess.run([sys.executable, "-c", _SCRIPT, mode], capture_output=True, text=True, check=True).stdout
    return int(out)


@pytest.mark.skipif(heap._MALLOPT is None or "libc" not in (ctypes.util.find_library("c") or ""), reason="glibc")
def test_a_buffer_past_the_threshold_is_mapped_even_after_a_larger_one_was_freed() -> None:
    assert _mapped_growth("default") == 0  # glibc's moving threshold: from the heap
    assert _mapped_growth("apart") >= 2 * 2**20
