"""The Celery application shared by workers, the API and Python clients (torch-free)."""

from __future__ import annotations

import threading

from celery import Celery
from click import Option

app = Celery("inference")
app.config_from_object("celeryconfig")

# `celery -A inference worker --model resnet18`: pins the worker to one model's queues.
app.user_options["worker"].add(
    Option(["--model"], default=None, help="Model this worker serves; it consumes only <model>.high, .normal, .low.")
)


_shared_backend = None
_making_the_backend = threading.Lock()


def shared_backend():
    """The result backend, one for the whole process, for what clients ask of it (a result's key,
    decoding a record, storing one). Celery's `app.backend` is one per thread, each built on the
    thread's first use by scanning every installed package's entry points for backend names:
    ~12 ms of CPU here, paid by every new API thread on its first request (granian ends idle
    threads after API_THREAD_IDLE_SECONDS), which doubled the API's CPU per request over a burst
    of 256 at 64 in flight. Its Redis client is thread-safe, and none of these keeps per-thread
    state (Celery's per-thread instance is for AsyncResult's result consumer, not used here)."""
    global _shared_backend
    if _shared_backend is None:
        with _making_the_backend:  # a burst's first requests all come at once: one builds it
            if _shared_backend is None:
                _shared_backend = app.backend
    return _shared_backend
