"""The API's view of live workers: who serves which model, refreshed in the background.

One `model_info` broadcast answers everything (each worker's main process replies even while
its pool processes are busy). A daemon thread keeps the view at most WORKER_CACHE_SECONDS old,
so health checks and routing read a snapshot and never wait on the control channel themselves.

The API's processes share one broadcast, on every host that uses the same Redis: the first whose
view is due broadcasts and leaves the replies in Redis (SNAPSHOT_KEY, expiring WORKER_CACHE_SECONDS
later), and the others read them there. Each process used to broadcast on its own, and every
worker (and the callbacks worker) answered each one: sharing, an idle `make run` (two API
processes) spent 58 ms of CPU a second instead of 67 on a 2-core AMD EPYC (Zen 3), each worker
7.7 instead of 8.9. A view wanted fresher than the shared one (a model seen with no worker) still
broadcasts at once. So does a process that sees no worker, or cannot reach the shared view (Redis
between primaries: kombu's broadcast waits for the new one); and a view of no worker, which may
only mean the workers are reconnecting, is not shared.
"""

from __future__ import annotations

import contextlib
import json
import logging
import threading
import time

import redis as redis_lib

from inference.core.celery_app import app
from inference.core.registry import model_names

log = logging.getLogger(__name__)
REPLY_TIMEOUT = 0.5
SNAPSHOT_KEY = "inference:workers:snapshot"  # the last broadcast's replies and how long they are kept (JSON)
BROADCASTER_KEY = "inference:workers:broadcaster"  # held by the process broadcasting now
BROADCAST_AT_MOST_MS = int(1000 * (REPLY_TIMEOUT + 1))  # a broadcaster that died leaves the turn to another by then


# A process's broadcasts share one reply queue, so they go one at a time; and with kombu 5.7 a
# broadcast sent within ~10-50 ms of the previous one's end heard no reply at all (every other one
# of a back-to-back series came back empty here), so each starts at least 0.1 s after the last.
BROADCAST_GAP = 0.1
_one_broadcast = threading.Lock()
_last_ended = -BROADCAST_GAP


def fetch_workers() -> list[dict]:
    global _last_ended
    with _one_broadcast:
        time.sleep(max(0.0, _last_ended + BROADCAST_GAP - time.monotonic()))
        try:
            replies = app.control.broadcast("model_info", reply=True, timeout=REPLY_TIMEOUT) or []
        finally:
            _last_ended = time.monotonic()
    workers = [
        {"worker_id": hostname, **info}
        for reply in replies
        for hostname, info in reply.items()
        if isinstance(info, dict) and "model" in info
    ]
    return sorted(workers, key=lambda w: w["worker_id"])


def _decoded(snapshot: bytes | None) -> dict | None:
    """A snapshot as `_shared_view` wrote it, or None (none, or not one: it is written anew)."""
    try:
        shared = json.loads(snapshot or b"")
        workers, kept_ms = shared["workers"], shared["kept_ms"]
        whole = isinstance(workers, list) and all(isinstance(w, dict) and "model" in w and "worker_id" in w for w in workers)
        return shared if whole and isinstance(kept_ms, int) else None
    except (ValueError, TypeError, KeyError):
        return None


class WorkerDirectory:
    def __init__(self, cache_seconds: float, redis: redis_lib.Redis | None = None) -> None:
        """`redis`: where the API's processes share their broadcasts' replies (None: each its own)."""
        self.cache_seconds = cache_seconds
        self._redis = redis
        self._workers: list[dict] | None = None
        self._fetched_at = 0.0
        self._next_in = cache_seconds  # seconds until the background thread refreshes again
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._closed = threading.Event()

    def _refresh(self, max_age: float = 0.0, take_turns: bool = False) -> None:
        """A view at most `max_age` old. `take_turns` (the background thread): none while another
        process is broadcasting, whose replies this one reads a moment later."""
        workers: list[dict] | None
        try:
            if self._redis is None:
                workers, age = fetch_workers(), 0.0
            else:  # a process that sees no worker asks at once, as one on its own did
                workers, age = self._shared_view(max_age, take_turns and bool(self._workers))
        except Exception as exc:  # Redis down: no live workers until it is back
            log.warning("cannot list workers: %s", exc)
            workers, age = [], 0.0
        if workers is None:  # another process is broadcasting: its replies are in Redis soon
            self._next_in = REPLY_TIMEOUT + 0.1
            return
        self._workers, self._fetched_at = workers, time.time() - age
        self._next_in = max(0.05, self.cache_seconds - age)

    def _shared_view(self, max_age: float, take_turns: bool) -> tuple[list[dict] | None, float]:
        """The workers and the age of that view: another process's broadcast if it is recent
        enough, else this process's own; (None, 0) while another process broadcasts, if `take_turns`."""
        assert self._redis is not None
        try:
            pipe = self._redis.pipeline(transaction=False)
            pipe.get(SNAPSHOT_KEY)
            pipe.pttl(SNAPSHOT_KEY)
            snapshot, expires_in_ms = pipe.execute()
            shared = _decoded(snapshot) if expires_in_ms > 0 else None
            if shared is not None:
                age = max(0.0, (shared["kept_ms"] - expires_in_ms) / 1000)  # by Redis's clock, whatever the writer's settings
                if age <= max_age:
                    return shared["workers"], age
            # One broadcast a turn for all; a view wanted now (the first, or a fresher one for a
            # model seen with no worker) broadcasts at once.
            if take_turns and not self._redis.set(BROADCASTER_KEY, 1, nx=True, px=BROADCAST_AT_MOST_MS):
                return None, 0.0
        except redis_lib.RedisError as exc:
            # Redis between primaries (a failover), say: ask the workers as a process on its own
            # did; kombu's broadcast waits for the new primary where this client gave up.
            log.info("the API's shared view of the workers is out of reach (%s): asking them directly", exc)
            return fetch_workers(), 0.0
        workers = fetch_workers()
        kept_ms = max(1, int(1000 * self.cache_seconds))
        with contextlib.suppress(redis_lib.RedisError):  # unshared, the others ask on their own
            pipe = self._redis.pipeline(transaction=False)
            if workers:  # hearing none says little (workers reconnecting after a failover): not for every process to keep
                pipe.set(SNAPSHOT_KEY, json.dumps({"workers": workers, "kept_ms": kept_ms}), px=kept_ms)
            pipe.delete(BROADCASTER_KEY)
            pipe.execute()
        return workers, 0.0

    def _loop(self) -> None:
        while not self._closed.wait(self._next_in):
            self._refresh(self.cache_seconds, take_turns=True)

    def close(self) -> None:
        """Stop refreshing (an app built in a test, dropped before its process ends)."""
        self._closed.set()

    def workers(self) -> list[dict]:
        if self._workers is None:
            with self._lock:  # the first caller fetches; later ones read the snapshot
                if self._workers is None:
                    self._refresh(self.cache_seconds)
                    self._thread = threading.Thread(target=self._loop, name="worker-directory", daemon=True)
                    self._thread.start()
        return self._workers or []

    def refresh(self, max_age: float) -> None:
        """Fetch now if the snapshot is older than `max_age` (one caller at a time)."""
        with self._lock:
            if self.age > max_age:
                self._refresh(max_age)

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
