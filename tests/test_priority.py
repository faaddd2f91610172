"""Strict priority within a model's queues: a high request overtakes earlier lows, those still
queued in Redis (the worker consumes high first) and those its batcher already holds (it takes
waiting requests by priority)."""

from __future__ import annotations

import time

import pytest

from tests.helpers import image_b64

pytestmark = pytest.mark.e2e

LOWS = 40  # more than a batching worker holds at once: some wait in Redis, the others in the worker


def lows_run_before(model: str, priority: str, redis_client) -> tuple[int, dict, list[dict]]:
    """Submit LOWS lows, then one request of `priority`: how many lows ran in batches that ended
    before its batch started, and the results."""
    from inference.submit import submission, waiting

    data = image_b64("astronaut.jpg")
    lows = [submission.submit(redis_client, image_b64=data, model=model, priority="low").job["request_id"] for _ in range(LOWS)]
    urgent = submission.submit(redis_client, image_b64=data, model=model, priority=priority).job["request_id"]
    deadline = time.monotonic() + 120
    results = {}
    for request_id in [urgent, *lows]:
        status = waiting.wait_for(redis_client, request_id, deadline - time.monotonic())
        assert status["status"] == "success", status
        results[request_id] = status["result"]
    urgent_started = results[urgent]["finished_at"] - results[urgent]["compute_time"]  # its batch's start
    before = sum(results[r]["finished_at"] <= urgent_started for r in lows)
    return before, results[urgent], [results[r] for r in lows]


def test_high_overtakes_queued_lows(api, redis_client):
    from inference.core.settings import get_settings

    before, high, lows = lows_run_before("resnet18", "high", redis_client)
    # The lows of the batch running when it arrived, at most: 2 here; 9-10 in arrival order (the
    # batcher's queue without priorities), behind the lows the worker held.
    assert before <= get_settings().max_batch_size // 2, f"{before} of {LOWS} lows ran before the high request"
    assert high["queue_time"] < max(low["queue_time"] for low in lows)


def test_normal_before_low(api, redis_client):
    from inference.core.settings import get_settings

    before, _, _ = lows_run_before("squeezenet", "normal", redis_client)
    assert before <= get_settings().max_batch_size // 2, f"{before} of {LOWS} lows ran before the normal request"
