"""The result backend: Celery's own records, stored in one round trip, a SUCCESS never overwritten."""

from __future__ import annotations

import json
import time
import uuid

from celery import Celery, states


def published_statuses(subscriber, seconds: float = 1.0) -> list[str]:
    statuses, deadline = [], time.monotonic() + seconds
    while time.monotonic() < deadline:
        message = subscriber.get_message(timeout=0.1)
        if message and message["type"] == "message":
            statuses.append(json.loads(message["data"])["status"])
    return statuses


def test_a_success_stands_and_every_write_is_published(redis_client, redis_url):
    from inference.core.celery_app import app
    from inference.core.result_backend import OneTripRedisBackend

    backend = app.backend
    assert isinstance(backend, OneTripRedisBackend)
    task_id = uuid.uuid4().hex
    key = backend.get_key_for_task(task_id)
    subscriber = redis_client.pubsub()
    subscriber.subscribe(key)
    try:
        backend.store_result(task_id, None, states.RETRY)
        backend.store_result(task_id, {"predictions": []}, states.SUCCESS)
        backend.store_result(task_id, {"exc_type": "RuntimeError", "exc_message": ["late"]}, states.FAILURE)  # a late duplicate
        assert published_statuses(subscriber) == ["RETRY", "SUCCESS"]
    finally:
        subscriber.close()
    assert 0 < redis_client.ttl(key) <= backend.expires
    # Any Celery client with a plain redis:// backend reads the record.
    plain = Celery(broker=redis_url, backend=redis_url)
    assert plain.AsyncResult(task_id).state == states.SUCCESS
    assert plain.AsyncResult(task_id).result == {"predictions": []}
