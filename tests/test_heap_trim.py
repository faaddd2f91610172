"""HEAP_TRIM_SECONDS: a process hands the memory it freed back to the system."""

from __future__ import annotations

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
