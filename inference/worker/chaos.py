"""Failure injection for resilience tests and demos (all off by default).

CHAOS_LATENCY_MS adds latency to every task, CHAOS_FAILURE_RATE fails a share of tasks with a
transient (retried) error (both in the task, before its pictures reach the batcher);
CHAOS_CRASH_AFTER kills the process that runs the model during its Nth batch, CHAOS_CRASH_MARKER
during a batch holding a picture with those bytes in it (a poison message among others).
"""

from __future__ import annotations

import logging
import os
import random
import signal
import time

from inference.core.errors import TransientInferenceError
from inference.core.settings import get_settings

log = logging.getLogger(__name__)
_batches_seen = 0  # per process


def before_inference() -> None:
    settings = get_settings()
    if settings.chaos_latency_ms:
        time.sleep(settings.chaos_latency_ms / 1000)
    if settings.chaos_failure_rate and random.random() < settings.chaos_failure_rate:
        raise TransientInferenceError("chaos: injected transient failure")


def in_batch(pictures: list[bytes]) -> None:
    """Called as a batch starts, where a real crash (a decoder's, the model's) would happen."""
    global _batches_seen
    settings = get_settings()
    _batches_seen += 1
    marker = settings.chaos_crash_marker.encode()
    if (settings.chaos_crash_after and _batches_seen >= settings.chaos_crash_after) or \
            (marker and any(marker in picture for picture in pictures)):
        log.error("chaos: crashing process %s during batch %s", os.getpid(), _batches_seen)
        os.kill(os.getpid(), signal.SIGKILL)


def crash_worker(pool_pids: list[int], delay: float = 0.2) -> None:
    """Kill a whole worker, pool processes first, the way an OOM kill or power loss would."""

    def _kill():
        time.sleep(delay)  # let the control reply leave first
        for pid in pool_pids:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        os.kill(os.getpid(), signal.SIGKILL)

    import threading

    threading.Thread(target=_kill, daemon=True).start()
