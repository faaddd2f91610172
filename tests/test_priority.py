"""Strict priority within a model's queues: a queued high request overtakes earlier lows."""

from __future__ import annotations

import time

import pytest

from tests.helpers import image_b64

pytestmark = pytest.mark.e2e


def test_high_overtakes_queued_lows(api, redis_client):
    from inference.submit import submission, waiting

    data = image_b64("astronaut.jpg")
    lows = [submission.submit(redis_client, image_b64=data, model="resnet18", priority="low").job["request_id"] for _ in range(15)]
    high = submission.submit(redis_client, image_b64=data, model="resnet18", priority="high").job["request_id"]

    results = {}
    for request_id in [high, *lows]:
        status = waiting.wait_for(redis_client, request_id, 60)
        assert status["status"] == "success", status
        results[request_id] = status["result"]

    high_started = results[high]["started_at"]
    lows_before_high = sum(results[r]["started_at"] < high_started for r in lows)
    # At most the low already running and the one reserved with it may go first.
    assert lows_before_high <= 2, f"{lows_before_high} of 15 lows ran before the high request"
    assert results[high]["queue_time"] < max(results[r]["queue_time"] for r in lows)


def test_normal_before_low(api, redis_client):
    from inference.submit import submission, waiting

    data = image_b64("chelsea.jpg")
    lows = [submission.submit(redis_client, image_b64=data, model="squeezenet", priority="low").job["request_id"] for _ in range(12)]
    normal = submission.submit(redis_client, image_b64=data, model="squeezenet", priority="normal").job["request_id"]
    deadline = time.monotonic() + 60
    started = {r: waiting.wait_for(redis_client, r, deadline - time.monotonic())["result"]["started_at"] for r in [normal, *lows]}
    assert sum(started[r] < started[normal] for r in lows) <= 2
