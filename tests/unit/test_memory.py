"""The C allocator's settings (backend.memory), in fresh processes: large freed blocks are given back to the system,
and a trim gives back what the heap freed. glibc only (elsewhere both do nothing)."""

from __future__ import annotations

import subprocess
import sys

import pytest

from pix2pix.backend.memory import glibc

# After a 16 MB block is freed, glibc would serve the next 8 MB one from the heap; a small block allocated after it
# keeps the heap's top, so when the 8 MB block is freed it stays in the process unless it had a mapping of its own.
FREED_BLOCK = """
import sys, numpy as np
from pix2pix.backend import memory
def anon_mb():
    return int(next(l for l in open('/proc/self/status') if l.startswith('RssAnon')).split()[1]) / 1024
if sys.argv[1] == "tuned":
    memory.tune_allocator()
first = np.ones(2 << 20); del first  # 16 MB: its own mapping, and glibc's threshold rises to it
block = np.ones(1 << 20)  # 8 MB, touched
pin = [bytearray(64) for _ in range(1000)]
before = anon_mb()
del block
print(before - anon_mb())
"""

# Small blocks (from the heap) freed under a pinned top: kept, unless trimmed.
TRIMMED_HEAP = """
import sys
from pix2pix.backend import memory
def anon_mb():
    return int(next(l for l in open('/proc/self/status') if l.startswith('RssAnon')).split()[1]) / 1024
blocks = [bytearray(4000) for _ in range(10000)]  # 40 MB of small blocks
pin = bytearray(4000)
before = anon_mb()
del blocks
if sys.argv[1] == "trimmed":
    memory.release_free_memory()
print(before - anon_mb())
"""


def given_back_mb(code: str, mode: str) -> float:
    done = subprocess.run([sys.executable, "-c", code, mode], capture_output=True, text=True, check=True)
    return float(done.stdout.strip())


@pytest.mark.skipif(glibc() is None, reason="the allocator settings are glibc's")
def test_a_large_freed_block_is_given_back_to_the_system():
    assert given_back_mb(FREED_BLOCK, "default") < 2  # glibc's own habit: kept in the heap
    assert given_back_mb(FREED_BLOCK, "tuned") > 7


@pytest.mark.skipif(glibc() is None, reason="the allocator settings are glibc's")
def test_a_trim_gives_back_what_the_heap_freed():
    assert given_back_mb(TRIMMED_HEAP, "kept") < 10
    assert given_back_mb(TRIMMED_HEAP, "trimmed") > 30
