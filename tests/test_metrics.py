"""The workers' metrics recorder against a real Redis: what it sums and sends together is what
one pipeline per request used to write; Redis refusing a write costs only that write."""

from __future__ import annotations

import threading

import pytest
import redis as redis_lib

from inference.core import keys, metrics
from tests.system import wait_until


@pytest.fixture
def two_databases(redis_url):
    """Two empty databases of the suite's server: one written request by request, one through a Recorder."""
    server = redis_url.rsplit("/", 1)[0]  # the URL's own database would win over a db= argument
    direct, recorded = (redis_lib.Redis.from_url(f"{server}/{db}") for db in (6, 7))
    for db in (direct, recorded):
        db.flushdb()
    yield direct, recorded
    for db in (direct, recorded):
        db.flushdb()


def finished(number: int) -> dict:
    """A result as a worker stores it (of one picture, or of several with one failed)."""
    result = {"model": ("resnet18", "squeezenet")[number % 2], "priority": ("high", "normal", "low")[number % 3],
              "submitted_at": 1000.0 + number, "finished_at": 1000.25 + number * 1.01, "queue_time": 0.001 * number,
              "worker_id": f"worker{number % 2}@host:1", "processing_time": 0.01 + number / 1000,
              "compute_time": 0.005 * (number % 7), "images": 1}
    if number % 4 == 0:
        result.update(results=[{}, {}, {}], images=3, failed_images=1)
    return result


def contents(db: redis_lib.Redis) -> dict:
    out = {}
    for key in db.scan_iter():
        kind = db.type(key)
        if kind == b"hash":
            out[key] = {field: round(float(value), 6) for field, value in db.hgetall(key).items()}
        elif kind == b"list":
            out[key] = db.lrange(key, 0, -1)
        else:
            out[key] = db.get(key)
    return out


def test_the_recorder_writes_what_a_pipeline_per_request_wrote(two_databases):
    direct, recorded = two_databases
    sends = []
    first_send_may_go = threading.Event()

    def connect():  # a first send waits: everything recorded meanwhile goes in the next
        sends.append(1)
        first_send_may_go.wait(10)
        return recorded

    recorder = metrics.Recorder(connect)
    writes = [(metrics.record_success, finished(n), n % 8 + 1) for n in range(40)]
    writes += [(lambda pipe, n: (pipe.lpush("capped", str(n)), pipe.ltrim("capped", 0, 9)), n) for n in range(25)]
    writes += [(metrics.record_outcome, "resnet18", None, "expired"), (lambda pipe: pipe.incr(keys.DUPLICATES_KEY),),
               (lambda pipe: pipe.hincrby(metrics.RETRIES_KEY, "squeezenet", 1),)] * 2
    for write, *args in writes:
        pipe = direct.pipeline(transaction=False)
        write(pipe, *args)
        pipe.execute()
        recorder.add(write, *args)
    first_send_may_go.set()
    assert recorder.flush(10)
    assert contents(recorded) == contents(direct)
    assert len(contents(direct)[metrics.RECENT_LATENCIES_KEY.encode()]) == 40  # newest first, in both
    assert recorded.lrange("capped", 0, -1) == [str(n).encode() for n in range(24, 14, -1)]  # the newest 10
    assert len(sends) <= 2  # 71 writes, one round trip each before


def test_a_refused_write_is_dropped_and_the_next_ones_still_go(two_databases, caplog):
    _, recorded = two_databases
    attempts = []

    def connect():
        attempts.append(1)
        if len(attempts) == 1:
            raise redis_lib.ConnectionError("Redis is restarting")
        return recorded

    recorder = metrics.Recorder(connect)
    recorder.add(metrics.record_outcome, "resnet18", "high", "success")
    assert recorder.flush(10)
    recorder.add(lambda pipe: pipe.hincrby(metrics.RETRIES_KEY, "resnet18", None + 1))  # a bug in a write: logged, not raised
    recorder.add(metrics.record_outcome, "resnet18", "low", "failed")
    assert recorder.flush(10)
    assert metrics.read_requests(recorded) == {("resnet18", "low", "failed"): 1}
    assert "could not record metrics: Redis is restarting" in caplog.text
    assert "could not record metrics: unsupported operand" in caplog.text


def test_the_recorder_sends_by_itself_after_each_quiet_spell(two_databases):
    """No flush: writes go out within SEND_EVERY, and after a send the sender waits for the next
    first write and is woken by it (the writes in between no longer wake it)."""
    _, recorded = two_databases
    recorder = metrics.Recorder(lambda: recorded)
    for spell in (1, 2, 3):
        for _ in range(10):
            recorder.add(metrics.record_outcome, "resnet18", "high", "success")
        wait_until(lambda spell=spell: metrics.read_requests(recorded).get(("resnet18", "high", "success")) == 10 * spell,
                   5, interval=0.02, what=f"spell {spell}'s writes sent")
        wait_until(lambda: recorder.sent == recorder.recorded, 5, interval=0.02, what="the sender idle again")
