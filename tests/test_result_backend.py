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


def test_a_late_retry_never_hides_a_final_state(redis_client):
    """Celery stores a retry's RETRY after queuing the next attempt: with a countdown of 0 that
    attempt can fail for good first. The late RETRY (or any state that is not final) must not
    replace the FAILURE, or the request reads as queued for ever."""
    from inference.core.celery_app import app
    from inference.core.keys import FINAL_STATES

    backend = app.backend
    for final in sorted(FINAL_STATES - {states.SUCCESS}):
        task_id = uuid.uuid4().hex
        subscriber = redis_client.pubsub()
        subscriber.subscribe(backend.get_key_for_task(task_id))
        try:
            backend.store_result(task_id, None, states.RETRY)
            backend.store_result(task_id, {"exc_type": "TransientInferenceError", "exc_message": ["chaos"]}, final)
            for late in (states.RETRY, states.STARTED, states.PENDING):
                backend.store_result(task_id, None, late)
            assert published_statuses(subscriber) == ["RETRY", final]
        finally:
            subscriber.close()
        assert backend.get_task_meta(task_id)["status"] == final, final
    # A final state after a final state is written as before (a late duplicate's outcome).
    task_id = uuid.uuid4().hex
    backend.store_result(task_id, {"exc_type": "RuntimeError", "exc_message": ["x"]}, states.FAILURE)
    backend.store_result(task_id, {"predictions": []}, states.SUCCESS)
    assert backend.get_task_meta(task_id)["status"] == states.SUCCESS


def test_a_new_thread_reads_and_waits_without_building_a_backend_of_its_own(redis_client):
    """Celery builds `app.backend` once per thread, scanning every installed package's entry
    points (~12 ms of CPU); the API's request threads come and go (API_THREAD_IDLE_SECONDS), and
    each paid that on its first request. The client side shares one (celery_app.shared_backend)."""
    import threading

    from inference.core.celery_app import app
    from inference.submit import submission, tracking, waiting

    built = []
    build = app._get_backend
    app._get_backend = lambda: built.append(threading.current_thread().name) or build()  # type: ignore[method-assign]
    try:
        def first_request(n: int) -> None:
            request_id = f"no-such-request-{uuid.uuid4().hex}"
            assert tracking.job_status(redis_client, request_id) is None
            with waiting.ResultListener(redis_client, request_id) as listener:
                assert listener.wait(0.01) is None
            assert submission.cancel(redis_client, request_id) is None

        threads = [threading.Thread(target=first_request, args=(n,), name=f"request-{n}") for n in range(4)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    finally:
        del app._get_backend
    assert len(built) <= 1, built  # one for the process at most (none if another test made it first)
