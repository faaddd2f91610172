"""Failure injection for resilience tests and demos (all off by default).

CHAOS_LATENCY_MS adds latency to every task, CHAOS_FAILURE_RATE fails a share of tasks with a
transient (retried) error, CHAOS_CRASH_AFTER kills the pool process during its Nth task.
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
_tasks_seen = 0  # per pool process


def before_inference() -> None:
    global _tasks_seen
    settings = get_settings()
    _tasks_seen += 1
    if settings.chaos_latency_ms:
        time.sleep(settings.chaos_latency_ms / 1000)
    if settings.chaos_crash_after and _tasks_seen >= settings.chaos_crash_after:
        log.error("chaos: crashing process %s during task %s", os.getpid(), _tasks_seen)
        os.kill(os.getpid(), signal.SIGKILL)
    if settings.chaos_failure_rate and random.random() < settings.chaos_failure_rate:
        raise TransientInferenceError("chaos: injected transient failure")


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
