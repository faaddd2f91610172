"""HEAP_TRIM_SECONDS: a process hands the memory it freed back to the system; MALLOC_ARENA_MAX bounds its arenas."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

# 250 MB of heap blocks (64 KB: below glibc's mmap threshold), then all but every 50th freed:
# the kept ones pin the heap, so glibc keeps the freed pages until something trims them.
PROBE = """
import sys, time
from inference.core import heap_trim
def rss_mb():
    return int(open('/proc/self/statm').read().split()[1]) * 4096 // 2**20
blocks = [bytearray(64 * 1024) for _ in range(4000)]
blocks = blocks[::50]
freed = rss_mb()
started = heap_trim.start(float(sys.argv[1]))
deadline = time.monotonic() + 3
while time.monotonic() < deadline and rss_mb() > freed - 150:
    time.sleep(0.05)
print(started, freed, rss_mb())
"""


@pytest.mark.parametrize("seconds", [0.2, 0])
def test_a_process_hands_back_what_it_freed(seconds):
    probe = subprocess.run([sys.executable, "-c", PROBE, str(seconds)], capture_output=True, text=True, timeout=60)
    started, freed_mb, after_mb = probe.stdout.split()
    assert int(freed_mb) >= 240  # glibc kept the freed blocks' pages
    if seconds:
        assert started == "True" and int(after_mb) < int(freed_mb) - 150, probe.stdout
    else:  # 0: never trimmed
        assert started == "False" and int(after_mb) >= int(freed_mb) - 10, probe.stdout


# Eight threads that each allocate (and hold) a block: glibc gives each thread an arena of its
# own until MALLOC_ARENA_MAX; malloc_info lists one <heap> per arena.
ARENAS_PROBE = """
import ctypes, sys, tempfile, threading
from inference.core import heap_trim
applied = heap_trim.limit_arenas(int(sys.argv[1]))
ready, held = threading.Barrier(9), []
def allocate():
    held.append(bytearray(256 * 1024))
    ready.wait()
    ready.wait()
threads = [threading.Thread(target=allocate) for _ in range(8)]
[t.start() for t in threads]
ready.wait()
libc = ctypes.CDLL(None)
libc.fopen.restype, libc.fopen.argtypes = ctypes.c_void_p, [ctypes.c_char_p, ctypes.c_char_p]
libc.malloc_info.argtypes, libc.fclose.argtypes = [ctypes.c_int, ctypes.c_void_p], [ctypes.c_void_p]
with tempfile.NamedTemporaryFile(suffix=".xml") as out:
    stream = libc.fopen(out.name.encode(), b"w")
    libc.malloc_info(0, stream)
    libc.fclose(stream)
    heaps = open(out.name).read().count("<heap nr=")
ready.wait()
[t.join() for t in threads]
print(applied, heaps)
"""


@pytest.mark.parametrize("arenas", [2, 0])
def test_malloc_arenas_are_bounded(arenas):
    """MALLOC_ARENA_MAX (2 by default): eight threads share two arenas; 0 leaves glibc's own bound."""
    probe = subprocess.run([sys.executable, "-c", ARENAS_PROBE, str(arenas)], capture_output=True, text=True, timeout=60,
                           env={k: v for k, v in os.environ.items() if k != "MALLOC_ARENA_MAX"})
    applied, heaps = probe.stdout.split()
    if arenas:
        assert applied == "True" and int(heaps) <= arenas, probe.stdout + probe.stderr
    else:
        assert applied == "False" and int(heaps) > 2, probe.stdout + probe.stderr
