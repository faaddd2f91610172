"""Admission by Redis memory: refuse new pictures before Redis is full, never after.

Redis runs with a `maxmemory` and `noeviction` (REDIS_MAXMEMORY for the embedded server and
Compose): a queue must never lose a message to eviction, so a full Redis refuses writes instead,
and the workers could then no longer store results. The API keeps that from happening: a
request is admitted only while Redis, with the request's pictures written, uses at most
REDIS_MEMORY_HIGH_WATER of `maxmemory`; above it, 503 `memory_full` with Retry-After, and the
pictures are deleted again. The rest of `maxmemory` is room for what accepted requests still
write (results, claims, metrics), and for the pictures of submissions under way.

The memory in use is read inside the submission's own script (inference/submit/enqueue.py), after its
pictures are written, so concurrent submissions from every API process count at once; only
`maxmemory` is read here, once a second. A batch is checked whole first. A Redis without
`maxmemory` is not bounded here.
"""

from __future__ import annotations

import threading
import time

import redis as redis_lib

from inference.core.errors import MemoryFull

READ_EVERY = 1.0  # seconds between readings of maxmemory


class MemoryGauge:
    def __init__(self, redis: redis_lib.Redis, high_water: float):
        self.redis, self.high_water = redis, high_water
        self._lock = threading.Lock()
        self._read_at = -READ_EVERY
        self._limit = 0

    def limit(self) -> int:
        """The most bytes Redis may use with a new request's pictures in; 0: no bound."""
        with self._lock:
            if time.monotonic() - self._read_at > READ_EVERY:
                maxmemory = int(self.redis.info("memory").get("maxmemory") or 0)
                self._limit, self._read_at = int(self.high_water * maxmemory), time.monotonic()
            return self._limit

    def admit_batch(self, size: int) -> None:
        """A batch's pictures (`size` bytes) fit, all of them, or 503 `memory_full`."""
        limit = self.limit()
        if limit:
            used = int(self.redis.info("memory")["used_memory"])
            if used + size > limit:
                raise MemoryFull.at(used, limit)
