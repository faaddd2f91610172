"""Scheduling under load: routing of `any`, back-pressure, deadlines, cancellation, batches.

To hold requests in a queue without a slow model, a test stops the worker consuming one queue
(`celery control cancel_consumer`) and starts it again afterwards.
"""

from __future__ import annotations

import time
import uuid
from collections import Counter

import pytest

from tests.helpers import MODELS, image_b64, paused, queued_job, wait_for_pictures_deleted
from tests.system import wait_until

pytestmark = pytest.mark.e2e


def post(api, path, **kw):
    return api.post(api.base_url + path, timeout=60, **kw)


def get(api, path, **kw):
    return api.get(api.base_url + path, timeout=60, **kw)


def served_model(client, data) -> str:
    response = client.post("/v1/inference", query_string={"wait": 30}, json={"data": data, "model_type": "any"})
    assert response.status_code == 200, response.text
    return response.json["result"]["model"]


def test_round_robin_spreads_any_over_live_models(api_with):
    client = api_with(load_balance_strategy="round_robin")
    data = image_b64()
    counts = Counter(served_model(client, data) for _ in range(2 * len(MODELS)))
    assert counts == {model: 2 for model in MODELS}


def test_random_strategy_uses_several_models(api_with):
    client = api_with(load_balance_strategy="random")
    data = image_b64()
    counts = Counter(served_model(client, data) for _ in range(16))
    assert len(counts) >= 2 and set(counts) <= set(MODELS)


def test_least_loaded_avoids_a_backlogged_model(api_with, redis_client, worker_ids):
    from inference.submit import submission, waiting

    client = api_with()  # LOAD_BALANCE_STRATEGY's default
    data = image_b64()
    with paused(worker_ids["resnet18"], "resnet18.low"):
        backlog = [submission.submit(redis_client, image_b64=data, model="resnet18", priority="low").job["request_id"] for _ in range(4)]
        client.application.extensions["workers"].refresh(max_age=0)  # the workers' load as it is now
        models = [served_model(client, data) for _ in range(6)]
    assert "resnet18" not in models
    for request_id in backlog:
        assert waiting.wait_for(redis_client, request_id, 30)["status"] == "success"


def test_queue_full_answers_429_and_enqueues_nothing(api_with, redis_client, worker_ids):
    client = api_with(queue_limit=3, retry_after=7)
    data = image_b64()
    with paused(worker_ids["squeezenet"], "squeezenet.low"):
        accepted = [client.post("/v1/inference", json={"data": data, "model_type": "squeezenet", "priority": "low"}) for _ in range(3)]
        assert [r.status_code for r in accepted] == [202, 202, 202]
        request_id = f"over-{uuid.uuid4().hex}"
        refused = client.post("/v1/inference", json={"data": data, "model_type": "squeezenet", "priority": "high", "request_id": request_id})
        assert refused.status_code == 429
        assert refused.headers["Retry-After"] == "7"
        assert refused.json["error"]["code"] == "queue_full"
        assert redis_client.llen("squeezenet.low") == 3 and redis_client.llen("squeezenet.high") == 0
        assert not redis_client.exists(f"inference:job:{request_id}")
        assert not redis_client.keys(f"inference:image:{request_id}:*")  # its picture was not left behind
        batch = client.post("/v1/batch_inference", json={"images": [data, data], "model_type": "squeezenet"})
        assert batch.status_code == 429
        status = client.get("/queue/status").json
        assert status["queues"]["squeezenet"]["low"] == 3 and status["queues"]["squeezenet"]["max_size"] == 3
    for response in accepted:
        assert client.get(f"/v1/inference/{response.json['request_id']}", query_string={"wait": 30}).json["status"] == "success"


def test_model_without_live_worker(start_extra_api, redis_url, redis_client):
    other_db = redis_url.rsplit("/", 1)[0] + "/5"  # a Redis database no worker listens to
    data = image_b64()
    rejecting = start_extra_api(REDIS_URL=other_db, RETRY_AFTER=3)
    response = post(rejecting, "/v1/inference", json={"data": data, "model_type": "mobilenet"})
    assert response.status_code == 503 and response.headers["Retry-After"] == "3"
    assert response.json()["error"]["code"] == "no_worker"
    assert post(rejecting, "/v1/inference", json={"data": data, "model_type": "any"}).status_code == 503

    queueing = start_extra_api(REDIS_URL=other_db, NO_WORKER_POLICY="queue")
    accepted = post(queueing, "/v1/inference", json={"data": data, "model_type": "mobilenet"})
    assert accepted.status_code == 202
    assert get(queueing, "/queue/status").json()["queues"]["mobilenet"]["normal"] == 1


def test_expired_request_never_runs(api, redis_client, worker_ids):
    data = image_b64()
    with paused(worker_ids["mobilenet"], "mobilenet.low"):
        late = post(api, "/v1/inference", json={"images": [data, data], "model_type": "mobilenet", "priority": "low", "timeout_ms": 300})
        roomy = post(api, "/v1/inference", json={"data": data, "model_type": "mobilenet", "priority": "low", "timeout_ms": 60_000})
        time.sleep(0.8)
    late_status = get(api, f"/v1/inference/{late.json()['request_id']}", params={"wait": 30}).json()
    assert late_status["status"] == "expired"
    assert "result" not in late_status
    assert redis_client.get(f"inference:claim:{late.json()['request_id']}") is None  # no worker claimed it
    wait_for_pictures_deleted(redis_client, late.json()["request_id"])  # its pictures, stored by reference, go with it
    assert get(api, f"/v1/inference/{roomy.json()['request_id']}", params={"wait": 30}).json()["status"] == "success"


def test_cancelled_request_never_runs(api, redis_client, worker_ids):
    data = image_b64()
    with paused(worker_ids["efficientnet"], "efficientnet.low"):
        queued = post(api, "/v1/inference", json={"data": data, "model_type": "efficientnet", "priority": "low"})
        request_id = queued.json()["request_id"]
        cancelled = api.delete(f"{api.base_url}/v1/inference/{request_id}", timeout=10)
        assert cancelled.status_code == 200 and cancelled.json()["status"] == "cancelled"
        assert api.delete(f"{api.base_url}/v1/inference/{request_id}", timeout=10).status_code == 200  # idempotent
        follower = post(api, "/v1/inference", json={"data": data, "model_type": "efficientnet", "priority": "low"})
    # The worker reaches the cancelled message first, drops it, then serves the next one.
    assert get(api, f"/v1/inference/{follower.json()['request_id']}", params={"wait": 30}).json()["status"] == "success"
    assert redis_client.llen("efficientnet.low") == 0
    final = get(api, f"/v1/inference/{request_id}").json()
    assert final["status"] == "cancelled" and "result" not in final
    assert redis_client.get(f"inference:claim:{request_id}") == b"cancelled"
    # Dropping it acknowledged the message: nothing waits for redelivery.
    wait_until(lambda: redis_client.hlen("unacked") == 0, 10, what="no unacked messages")


def test_started_or_finished_request_cannot_be_cancelled(api):
    done = post(api, "/v1/inference", params={"wait": 30}, json={"data": image_b64(), "model_type": "squeezenet"})
    response = api.delete(f"{api.base_url}/v1/inference/{done.json()['request_id']}", timeout=10)
    assert response.status_code == 409 and response.json()["error"]["code"] == "already_started"
    assert api.delete(f"{api.base_url}/v1/inference/{uuid.uuid4().hex}", timeout=10).status_code == 404


def test_batch_submit_then_poll(api):
    items = [{"data": image_b64("chelsea.jpg"), "model_type": m, "priority": p}
             for m, p in zip(MODELS, ("high", "normal", "low", "normal"))]
    response = post(api, "/v1/batch_inference", json={"requests": items})
    assert response.status_code == 202
    body = response.json()
    assert len(body["request_ids"]) == 4
    batch = get(api, response.headers["Location"], params={"wait": 30})
    assert batch.status_code == 200
    report = batch.json()
    assert report["status"] == "done" and report["counts"]["success"] == 4
    assert [item["result"]["model"] for item in report["items"]] == list(MODELS)
    assert [item["priority"] for item in report["items"]] == ["high", "normal", "low", "normal"]
    assert get(api, f"/v1/batch/{uuid.uuid4().hex}").status_code == 404


def test_batch_longer_than_batch_size_is_refused(api, redis_client):
    jobs_before = len(redis_client.keys("inference:job:*"))
    response = post(api, "/v1/batch_inference", json={"images": [image_b64()] * 33})
    assert response.status_code == 413 and response.json()["error"]["code"] == "batch_too_large"
    assert len(redis_client.keys("inference:job:*")) == jobs_before


def test_a_claimed_request_reads_as_running(redis_client):
    """No STARTED state is written (task_track_started is off): the worker's claim says it."""
    from inference.core import keys
    from inference.submit import submission, tracking
    from inference.worker.claim import Claim, claim_and_read

    request_id = queued_job(redis_client)
    assert tracking.job_status(redis_client, request_id)["status"] == "queued"
    assert claim_and_read(redis_client, request_id, []).outcome == keys.STARTED
    assert tracking.job_status(redis_client, request_id)["status"] == "running"
    # A second delivery reads the pictures in the same round trip; a missing one reads as None.
    picture = f"{keys.IMAGE_PREFIX}{request_id}:test:0"
    redis_client.set(picture, b"picture", ex=60)
    assert claim_and_read(redis_client, request_id, [picture, picture[:-1] + "1"]) == Claim(keys.REDELIVERED, [b"picture", None], 2)
    assert submission.cancel(redis_client, request_id) == "started"  # too late to cancel
    redis_client.delete(picture)  # later tests check that no picture is left behind


def test_waits_keep_one_subscriber_and_ignore_earlier_requests_news(redis_client):
    """A thread's waits share one subscriber connection; a notification for a request it waited
    on before (one that came just as that wait ended) does not answer the next wait."""
    import json

    from inference.core.celery_app import app
    from inference.submit import waiting

    earlier, later = queued_job(redis_client), queued_job(redis_client)
    assert waiting.wait_for(redis_client, earlier, 0.2)["status"] == "queued"
    subscriber = waiting.thread_subscriber(redis_client)
    connection = subscriber.connection
    earlier_channel = app.backend.get_key_for_task(earlier)
    subscriber.subscribe(earlier_channel)  # as if its unsubscribe had not gone through yet
    try:
        redis_client.publish(earlier_channel, json.dumps({"status": "SUCCESS", "result": {"predictions": []}, "task_id": earlier}))
        assert waiting.wait_for(redis_client, later, 0.5)["status"] == "queued"
        assert waiting.thread_subscriber(redis_client).connection is connection
    finally:
        subscriber.unsubscribe(earlier_channel)


def test_a_wait_reads_the_status_only_when_told_or_after_a_quiet_second(redis_client, monkeypatch):
    """Listening before the request is queued, a wait needs no status read: the published
    result answers it. The confirmation of an earlier wait's unsubscribe, waiting on the kept
    connection, is no reason for a read either."""
    import json
    import threading

    from inference.core import keys
    from inference.core.celery_app import app
    from inference.submit import tracking, waiting

    assert waiting.wait_for(redis_client, queued_job(redis_client), 0.1)["status"] == "queued"  # leaves its unsubscribe's reply
    request_id = queued_job(redis_client)
    reads = []
    real_read = tracking.job_status
    monkeypatch.setattr(waiting, "job_status", lambda *args: reads.append(args) or real_read(*args))
    result = json.dumps({"status": "SUCCESS", "result": {"predictions": []}, "task_id": request_id})
    with waiting.ResultListener(redis_client, request_id) as listener:
        threading.Timer(0.3, redis_client.publish, (app.backend.get_key_for_task(request_id), result)).start()
        status = listener.wait(5, known=tracking.queued_status(json.loads(redis_client.get(keys.job_key(request_id)))))
    assert status["status"] == "success" and reads == []
    with waiting.ResultListener(redis_client, queued_job(redis_client)) as listener:
        assert listener.wait(0.5)["status"] == "queued"  # nothing published: a read at the start, one after the quiet wait
    assert len(reads) <= 3  # 2, one of slack; each confirmation read as news would make it 4 or more
