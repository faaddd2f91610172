"""Request metrics kept in Redis, so every worker and every API process adds to one set.

Workers record outcomes and timings (queue wait, compute, end to end, batch size) when a
request finishes, through a `Recorder`: sent by a thread of their own, what is recorded within
SEND_EVERY summed into one write. The API records rejected requests, one pipelined round trip each. The API's
/metrics renders them for Prometheus (prometheus-client) and /v1/stats summarises them; nothing
here imports torch.
"""

from __future__ import annotations

import bisect
import logging
import threading
import time
from collections import Counter, defaultdict
from collections.abc import Callable

import redis as redis_lib

log = logging.getLogger(__name__)

PREFIX = "inference:metrics:"
REQUESTS_KEY = PREFIX + "requests"  # field "model|priority|outcome" -> count
RECENT_LATENCIES_KEY = PREFIX + "recent_latencies"  # "finished_at latency", newest first, for percentiles
RECENT_LIMIT = 5000
WORKER_FAILURES_KEY = PREFIX + "worker_failed"  # worker hostname -> failed requests
WORKER_TIME_KEY = PREFIX + "worker_time"  # "hostname|sum" (seconds) and "hostname|count" of the requests it served
RETRIES_KEY = PREFIX + "retries"  # model -> retries of transiently failed requests
IMAGES_KEY = PREFIX + "images"  # model -> images classified (a request may carry many)
SEND_EVERY = 0.25  # seconds a worker's metrics may wait to be sent together (metrics.Recorder)
OUTCOMES = ("success", "failed", "expired", "cancelled", "rejected")

LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 10.0, 30.0)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128)
HISTOGRAMS = {  # name -> (buckets, help)
    "queue_wait_seconds": (LATENCY_BUCKETS, "Time from submission until a worker started the request."),
    "compute_seconds": (LATENCY_BUCKETS, "Model time (preprocess + forward + top-k) of a request's batch."),
    "latency_seconds": (LATENCY_BUCKETS, "End to end: submission until the result was ready."),
    "batch_size": (BATCH_BUCKETS, "Requests in each forward pass."),
}


def histogram_key(name: str) -> str:
    return f"{PREFIX}hist:{name}"


def observe(pipe, name: str, model: str, value: float) -> None:
    buckets = HISTOGRAMS[name][0]
    index = bisect.bisect_left(buckets, value)  # len(buckets) means +Inf
    key = histogram_key(name)
    pipe.hincrby(key, f"{model}|{index}", 1)
    pipe.hincrbyfloat(key, f"{model}|sum", value)


def record_outcome(pipe, model: str, priority: str | None, outcome: str) -> None:
    pipe.hincrby(REQUESTS_KEY, f"{model}|{priority or 'normal'}|{outcome}", 1)


def record_success(pipe, result: dict, batch_size: int = 1) -> None:
    model = result["model"]
    record_outcome(pipe, model, result.get("priority"), "success")
    pipe.hincrby(IMAGES_KEY, model, result["images"] - result["failed_images"] if "results" in result else 1)
    if result.get("queue_time") is not None:
        observe(pipe, "queue_wait_seconds", model, result["queue_time"])
        latency = result["finished_at"] - result["submitted_at"]
        observe(pipe, "latency_seconds", model, latency)
        pipe.lpush(RECENT_LATENCIES_KEY, f"{result['finished_at']:.3f} {latency:.6f}")
        pipe.ltrim(RECENT_LATENCIES_KEY, 0, RECENT_LIMIT - 1)
    if result.get("worker_id") and result.get("processing_time") is not None:
        hostname = result["worker_id"].rsplit(":", 1)[0]  # "node@host:pid"
        pipe.hincrbyfloat(WORKER_TIME_KEY, f"{hostname}|sum", result["processing_time"])
        pipe.hincrby(WORKER_TIME_KEY, f"{hostname}|count", 1)
    observe(pipe, "compute_seconds", model, result["compute_time"])
    observe(pipe, "batch_size", model, batch_size)


def record(redis: redis_lib.Redis, model: str, priority: str | None, outcome: str) -> None:
    """One outcome, written at once (the API's rejections and cancellations)."""
    pipe = redis.pipeline(transaction=False)
    record_outcome(pipe, model, priority, outcome)
    pipe.execute()


class Tally:
    """Metric writes summed until they are sent: the increments of one field add up, and the
    values pushed onto one list go in one LPUSH (in the same order). Takes what `record_outcome`,
    `observe` and `record_success` write, as a pipeline would."""

    def __init__(self) -> None:
        self.increments: Counter = Counter()
        self.float_increments: defaultdict = defaultdict(float)
        self.pushed: defaultdict = defaultdict(list)
        self.trims: dict[str, tuple[int, int]] = {}

    def hincrby(self, key: str, field: str, amount: int = 1) -> None:
        self.increments[key, field] += amount

    def hincrbyfloat(self, key: str, field: str, amount: float) -> None:
        self.float_increments[key, field] += amount

    def incr(self, key: str) -> None:
        self.increments[key, None] += 1

    def lpush(self, key: str, *values: str) -> None:
        self.pushed[key].extend(values)

    def ltrim(self, key: str, start: int, end: int) -> None:
        self.trims[key] = (start, end)

    def send(self, redis: redis_lib.Redis) -> None:
        pipe = redis.pipeline(transaction=False)
        for (key, field), amount in self.increments.items():
            pipe.incrby(key, amount) if field is None else pipe.hincrby(key, field, amount)
        for (key, field), amount in self.float_increments.items():
            pipe.hincrbyfloat(key, field, amount)
        for key, values in self.pushed.items():
            if key in self.trims:  # only the newest values would stay: send no more than those
                start, end = self.trims[key]
                pipe.lpush(key, *values[-(end + 1):] if start == 0 and end >= 0 else values)
                pipe.ltrim(key, start, end)
            else:
                pipe.lpush(key, *values)
        pipe.execute()


class Recorder:
    """A process's metric writes, sent to Redis by a thread of their own: a request never waits
    for its metrics, and everything recorded within SEND_EVERY of the first write waiting goes in
    one pipeline, summed (~14 commands a request before, one pipeline each). Metrics never fail a
    request: a write Redis refuses is logged and dropped. `flush` sends what is recorded at once
    and waits until it is sent (at a process's exit)."""

    def __init__(self, connect: Callable[[], redis_lib.Redis]):
        self.connect = connect
        self.pending = Tally()
        self.recorded = self.sent = 0
        self.flushing = False  # flush: send what is recorded without waiting for more
        self.changed = threading.Condition()
        self.thread: threading.Thread | None = None

    def add(self, write: Callable[..., None], *args) -> None:
        """`write(pipe, *args)` with the metrics' pipeline (`record_success`, `record_outcome`, ...)."""
        with self.changed:
            try:
                write(self.pending, *args)
            except Exception as exc:
                log.warning("could not record metrics: %s", exc)
                return
            if self.thread is None:
                self.thread = threading.Thread(target=self._send_forever, name="metrics", daemon=True)
                self.thread.start()
            if self.recorded == self.sent:  # the sender may be waiting for a first write: wake it
                self.changed.notify_all()  # (woken for every write, it took the GIL ~75 times a second for nothing)
            self.recorded += 1

    def flush(self, timeout: float = 5.0) -> bool:
        with self.changed:
            target = self.recorded
            if self.sent >= target:
                return True
            self.flushing = True
            self.changed.notify_all()
            return self.changed.wait_for(lambda: self.sent >= target, timeout)

    def _send_forever(self) -> None:
        while True:
            with self.changed:
                self.changed.wait_for(lambda: self.recorded > self.sent)
                self.changed.wait_for(lambda: self.flushing, SEND_EVERY)  # what is recorded meanwhile joins this write
                self.flushing = False
                tally, self.pending, recorded = self.pending, Tally(), self.recorded
            try:
                tally.send(self.connect())
            except Exception as exc:
                log.warning("could not record metrics: %s", exc)
            with self.changed:
                self.sent = recorded
                self.changed.notify_all()


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


def read_requests(redis: redis_lib.Redis) -> dict[tuple[str, ...], int]:
    """(model, priority, outcome) -> count"""
    return {tuple(_text(k).split("|")): int(v) for k, v in redis.hgetall(REQUESTS_KEY).items()}


def read_histogram(redis: redis_lib.Redis, name: str) -> dict[str, dict]:
    """model -> {"buckets": [(upper bound, cumulative count), ..., (inf, n)], "sum": s, "count": n}"""
    buckets = HISTOGRAMS[name][0]
    raw: dict[str, dict] = {}
    for field, value in redis.hgetall(histogram_key(name)).items():
        model, slot = _text(field).rsplit("|", 1)
        entry = raw.setdefault(model, {"counts": [0] * (len(buckets) + 1), "sum": 0.0})
        if slot == "sum":
            entry["sum"] = float(value)
        else:
            entry["counts"][int(slot)] += int(value)
    out = {}
    for model, entry in raw.items():
        cumulative, running = [], 0
        for bound, count in zip([*map(float, buckets), float("inf")], entry["counts"]):
            running += count
            cumulative.append((bound, running))
        out[model] = {"buckets": cumulative, "sum": entry["sum"], "count": running}
    return out


def recent_latencies(redis: redis_lib.Redis, window: float | None = None) -> list[float]:
    """End-to-end latencies of the last RECENT_LIMIT requests, or of those that finished in the
    last `window` seconds among them."""
    since = time.time() - window if window else 0.0
    latencies = []
    for entry in redis.lrange(RECENT_LATENCIES_KEY, 0, -1):
        finished_at, _, latency = _text(entry).partition(" ")
        if latency and float(finished_at) >= since:
            latencies.append(float(latency))
    return latencies


def worker_average_seconds(redis: redis_lib.Redis) -> dict[str, float]:
    """Each worker's (hostname's) average time per request, start to result."""
    totals = _read_counts(redis, WORKER_TIME_KEY, float)
    return {name.removesuffix("|sum"): total / totals[name.removesuffix("|sum") + "|count"]
            for name, total in totals.items() if name.endswith("|sum") and totals.get(name.removesuffix("|sum") + "|count")}


def percentile(values: list[float], q: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(q / 100 * (len(ordered) - 1))))]


def read_retries(redis: redis_lib.Redis) -> dict[str, int]:
    return _read_counts(redis, RETRIES_KEY)


def read_images(redis: redis_lib.Redis) -> dict[str, int]:
    return _read_counts(redis, IMAGES_KEY)


def read_worker_failures(redis: redis_lib.Redis) -> dict[str, int]:
    return _read_counts(redis, WORKER_FAILURES_KEY)


def _read_counts(redis: redis_lib.Redis, key: str, kind=int) -> dict:
    return {_text(name): kind(count) for name, count in redis.hgetall(key).items()}
