"""Strict priority within a model's queues: a high request overtakes earlier lows, those still
queued in Redis (the worker consumes high first) and those its batcher already holds (it takes
waiting requests by priority)."""

from __future__ import annotations

import time

import pytest

from tests.helpers import image_b64
from tests.system import wait_until

pytestmark = pytest.mark.e2e

LOWS = 40  # more than a batching worker holds at once: some wait in Redis, the others in the worker
# s: a batch that started this soon after the urgent request was claimed may have closed before it
# reached the batcher. Between the two its task thread decodes and checks the picture, and waits
# for the GIL while the threads of the batch that just ended store their results: Python hands
# the GIL over every 5 ms (sys.getswitchinterval), and a 2-core Xeon once took more than one turn
# (5 ms was too short there once in three runs).
SLACK = 0.025


def overtaken(model: str, priority: str, redis_client) -> tuple[list[dict], list[dict], dict]:
    """Submit LOWS lows, then one request of `priority`. Returns the lows the worker held, not yet
    running, when it claimed the urgent one, split into those that ran after it and those that
    ran before it, and its result."""
    from inference.core.settings import get_settings
    from inference.submit import submission, tracking, waiting

    data = image_b64("astronaut.jpg")
    lows = [submission.submit(redis_client, image_b64=data, model=model, priority="low").job["request_id"] for _ in range(LOWS)]
    # Until the worker holds more lows than two batches take (one batch runs at a time): then, in
    # order of arrival, a whole batch of them would run before the urgent request.
    wait_until(lambda: sum(tracking.job_status(redis_client, r)["status"] == "running" for r in lows) > 2 * get_settings().max_batch_size,
               30, interval=0.001, what="the worker holding lows")
    urgent = submission.submit(redis_client, image_b64=data, model=model, priority=priority).job["request_id"]
    deadline = time.monotonic() + 120
    results = {}
    for request_id in [urgent, *lows]:
        status = waiting.wait_for(redis_client, request_id, deadline - time.monotonic())
        assert status["status"] == "success", status
        results[request_id] = status["result"]

    def batch_start(result: dict) -> float:
        return result["finished_at"] - result["compute_time"]

    arrived, urgent_batch = results[urgent]["started_at"], batch_start(results[urgent])
    held = [results[r] for r in lows if results[r]["started_at"] < arrived and batch_start(results[r]) > arrived + SLACK]
    return [r for r in held if r["finished_at"] > urgent_batch], [r for r in held if r["finished_at"] <= urgent_batch], results[urgent]


def test_high_overtakes_lows_queued_and_held(api, redis_client):
    after, before, high = overtaken("resnet18", "high", redis_client)
    assert after, "no low was waiting in the worker when the high request came: nothing tested"
    assert not before, f"{len(before)} lows the worker held waiting ran before the high request"
    assert high["batch_size"] >= 1


def test_normal_before_low(api, redis_client):
    after, before, _ = overtaken("squeezenet", "normal", redis_client)
    assert after, "no low was waiting in the worker when the normal request came: nothing tested"
    assert not before, f"{len(before)} lows the worker held waiting ran before the normal request"
