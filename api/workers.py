"""The API's view of live workers: who serves which model, refreshed in the background.

One `model_info` broadcast answers everything (each worker's main process replies even while
its pool processes are busy). A daemon thread repeats it every WORKER_CACHE_SECONDS, so health
checks and routing read a snapshot and never wait on the control channel themselves.
"""

from __future__ import annotations

import logging
import threading
import time

from inference.core.celery_app import app
from inference.core.registry import model_names

log = logging.getLogger(__name__)
REPLY_TIMEOUT = 0.5


def fetch_workers() -> list[dict]:
    replies = app.control.broadcast("model_info", reply=True, timeout=REPLY_TIMEOUT) or []
    workers = [
        {"worker_id": hostname, **info}
        for reply in replies
        for hostname, info in reply.items()
        if isinstance(info, dict) and "model" in info
    ]
    return sorted(workers, key=lambda w: w["worker_id"])


class WorkerDirectory:
    def __init__(self, cache_seconds: float) -> None:
        self.cache_seconds = cache_seconds
        self._workers: list[dict] | None = None
        self._fetched_at = 0.0
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._closed = threading.Event()

    def _refresh(self) -> None:
        try:
            workers = fetch_workers()
        except Exception as exc:  # Redis down: no live workers until it is back
            log.warning("cannot list workers: %s", exc)
            workers = []
        self._workers, self._fetched_at = workers, time.time()

    def _loop(self) -> None:
        while not self._closed.wait(self.cache_seconds):
            self._refresh()

    def close(self) -> None:
        """Stop refreshing (an app built in a test, dropped before its process ends)."""
        self._closed.set()

    def workers(self) -> list[dict]:
        if self._workers is None:
            with self._lock:  # the first caller fetches; later ones read the snapshot
                if self._workers is None:
                    self._refresh()
                    self._thread = threading.Thread(target=self._loop, name="worker-directory", daemon=True)
                    self._thread.start()
        return self._workers or []

    def refresh(self, max_age: float) -> None:
        """Fetch now if the snapshot is older than `max_age` (one caller at a time)."""
        with self._lock:
            if self.age > max_age:
                self._refresh()

    @property
    def age(self) -> float:
        return time.time() - self._fetched_at

    def live_models(self) -> dict[str, list[dict]]:
        """Only the models that have at least one ready worker."""
        return {model: workers for model, workers in self.ready_workers_by_model().items() if workers}

    def ready_workers_by_model(self) -> dict[str, list[dict]]:
        by_model: dict[str, list[dict]] = {name: [] for name in model_names()}
        for worker in self.workers():
            if worker.get("ready_processes") and worker["model"] in by_model:
                by_model[worker["model"]].append(worker)
        return by_model
