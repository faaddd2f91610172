"""The API's view of live workers: who serves which model, cached briefly.

One `model_info` broadcast answers everything (each worker's main process replies even while
its pool processes are busy); the answer is cached WORKER_CACHE_SECONDS so that health checks
and routing never wait on the control channel more than once a period.
"""

from __future__ import annotations

import threading
import time

from inference.celery_app import app
from inference.registry import model_names
from inference.settings import get_settings

REPLY_TIMEOUT = 0.5


class WorkerDirectory:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._workers: list[dict] = []
        self._fetched_at = 0.0

    def _fetch(self) -> list[dict]:
        replies = app.control.broadcast("model_info", reply=True, timeout=REPLY_TIMEOUT) or []
        workers = []
        for reply in replies:
            for hostname, info in reply.items():
                if isinstance(info, dict) and "model" in info:
                    workers.append({"worker_id": hostname, **info})
        return sorted(workers, key=lambda w: w["worker_id"])

    def workers(self) -> list[dict]:
        with self._lock:
            if time.monotonic() - self._fetched_at > get_settings().worker_cache_seconds:
                self._workers = self._fetch()
                self._fetched_at = time.monotonic()
            return self._workers

    def ready_workers_by_model(self) -> dict[str, list[dict]]:
        by_model: dict[str, list[dict]] = {name: [] for name in model_names()}
        for worker in self.workers():
            if worker.get("ready_processes") and worker["model"] in by_model:
                by_model[worker["model"]].append(worker)
        return by_model
