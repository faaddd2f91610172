"""Give the heap's free pages back to the system every few seconds (glibc's `malloc_trim`).

glibc keeps what a process frees for its next allocations. A 12-megapixel photo's buffers make
it raise its mmap threshold, so later picture-sized buffers come from the threads' heaps and
stay there, and each of a worker's many threads grows an arena of its own: `make run`'s processes
held ~100 MB more after photos and 32-in-flight loads than before them, though Python had freed
it. A fixed mmap threshold (`mallopt`) kept them flat but made every picture-sized buffer fresh
pages (~30 % more CPU per request in a worker); trimming every few seconds costs a walk of the
heap (0.1-0.5 ms with little to free, 11 ms to hand back 250 MB) and, under load, the page
faults of what is reused after it (docs/performance.md).
HEAP_TRIM_SECONDS sets the period (0: never). Not glibc (musl, macOS): nothing to do.

Trimming hands back free pages, not the free space between live blocks, and each thread that
allocates gets an arena of its own (up to 8 per core): MALLOC_ARENA_MAX, glibc's own variable
(2 by default here, set with `mallopt` at start), bounds them.
"""

from __future__ import annotations

import ctypes
import threading
import time

M_ARENA_MAX = -8  # mallopt's parameter (malloc.h)
_started: threading.Thread | None = None


def _glibc(name: str, argtypes: list, restype):
    """glibc's function `name`, or None where the C library has none (musl, macOS)."""
    try:
        function = getattr(ctypes.CDLL(None), name)
    except (OSError, AttributeError):
        return None
    function.argtypes, function.restype = argtypes, restype
    return function


def limit_arenas(arenas: int) -> bool:
    """At most `arenas` malloc arenas from now on (0: glibc's default); call it before threads
    allocate. Whether it was applied."""
    mallopt = _glibc("mallopt", [ctypes.c_int, ctypes.c_int], ctypes.c_int) if arenas > 0 else None
    return mallopt is not None and mallopt(M_ARENA_MAX, arenas) == 1


def start(seconds: float) -> bool:
    """Trim this process's heap every `seconds`, from a daemon thread (one per process: call it
    after a fork, as threads do not survive one). Whether it runs."""
    global _started
    if _started is not None and _started.is_alive():
        return True
    trim = _glibc("malloc_trim", [ctypes.c_size_t], ctypes.c_int) if seconds > 0 else None
    if trim is None:
        return False

    def every_period() -> None:
        while True:
            time.sleep(seconds)
            trim(0)

    _started = threading.Thread(target=every_period, name="heap-trim", daemon=True)
    _started.start()
    return True


def bound_and_trim(arenas: int, seconds: float) -> None:
    """`limit_arenas`, then `start`: for a process whose threads have not allocated yet (the API's
    processes, a model's process)."""
    limit_arenas(arenas)
    start(seconds)
