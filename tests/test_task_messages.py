"""Messages put straight on a model's queue, bypassing the API: a worker accepts JSON task
messages only, rejects and logs anything else, and keeps serving."""

from __future__ import annotations

import json
import pickle
import uuid

import pytest
from kombu import Connection, Exchange

from inference.core import metrics
from tests.helpers import image_b64, pool_pids, settled
from tests.system import LOG_DIR, wait_until

pytestmark = pytest.mark.e2e

QUEUE = "squeezenet.normal"


def task_headers(task: str = "inference.classify") -> dict:
    task_id = uuid.uuid4().hex
    return {"lang": "py", "task": task, "id": task_id, "root_id": task_id, "parent_id": None, "group": None,
            "retries": 0, "eta": None, "expires": None, "timelimit": [None, None], "argsrepr": "", "kwargsrepr": ""}


def json_body(kwargs: dict) -> bytes:
    return json.dumps([[], kwargs, {"callbacks": None, "errbacks": None, "chain": None, "chord": None}]).encode()


# name -> (body, content type, headers), each one malformed in its own way.
MALFORMED = {
    "pickle": (pickle.dumps(([], {"image": "x", "model": "squeezenet"}, {})), "application/x-python-serialize", task_headers()),
    "broken json": (b'[[], {"image": ', "application/json", task_headers()),
    "unknown task": (json_body({}), "application/json", task_headers("os.system")),
    "not a task": (b'{"hello": "world"}', "application/json", {}),
}
# What the worker logs for each (Celery's own wording).
LOGGED = {
    "pickle": "Refusing to deserialize untrusted content of type pickle",
    "broken json": "Can't decode message body",
    "unknown task": "Received unregistered task of type 'os.system'",
    "not a task": "Received and deleted unknown message",
}


def worker_log() -> str:
    return "".join(path.read_text(errors="replace") for path in LOG_DIR.glob("worker-squeezenet-test-*.log"))


def publish(redis_url: str, body: bytes, content_type: str, headers: dict) -> None:
    with Connection(redis_url) as conn:
        conn.Producer().publish(body, exchange=Exchange(QUEUE, type="direct"), routing_key=QUEUE,
                                content_type=content_type, content_encoding="utf-8", headers=headers)


def test_malformed_messages_are_rejected_logged_and_the_worker_keeps_serving(api, redis_url, redis_client):
    pids_before = pool_pids(api, "squeezenet")
    assert pids_before
    for body, content_type, headers in MALFORMED.values():
        publish(redis_url, body, content_type, headers)
    for name, line in LOGGED.items():
        wait_until(lambda line=line: line in worker_log(), 30, what=f"the worker to log the {name} message")

    # Nothing left behind: the queue is drained and no message waits unacknowledged.
    assert redis_client.llen(QUEUE) == 0
    wait_until(lambda: redis_client.hlen("unacked") == 0, 10, what="no unacknowledged messages")
    # Same worker processes, still answering.
    result = api.post(f"{api.base_url}/v1/inference", params={"wait": 30},
                      json={"data": image_b64(), "model_type": "squeezenet"}, timeout=60).json()
    assert result["status"] == "success"
    assert pool_pids(api, "squeezenet") == pids_before


@pytest.mark.parametrize("kwargs, error", [
    ({"image": 12345, "model": "squeezenet"}, "InvalidBase64"),
    ({"image": "%%% not base64", "model": "squeezenet"}, "InvalidBase64"),
    ({"image": "aGVsbG8gd29ybGQ=", "model": "squeezenet"}, "InvalidImage"),
    ({"image": image_b64(), "model": "squeezenet", "top_k": "all"}, "InvalidRequest"),
    ({"image": image_b64(), "model": "resnet18"}, "WrongWorker"),
    ({"image": image_b64(), "model": "squeezenet", "shell": "rm -rf /"}, "TypeError"),
    ({"image_refs": ["some:other:key"], "model": "squeezenet"}, "InvalidRequest"),  # only keys submission.submit wrote
    ({"image_ref": "some:other:key", "model": "squeezenet"}, "InvalidRequest"),
    ({"image_ref": ["inference:image:x:y:0"], "model": "squeezenet"}, "InvalidRequest"),  # one key, not a list
    ({"image_ref": "inference:image:x:y:0", "image": "aGVsbG8=", "model": "squeezenet"}, "InvalidRequest"),  # two pictures
    ({"image": image_b64(), "images": [image_b64()], "model": "squeezenet"}, "InvalidRequest"),
])
def test_bad_arguments_fail_the_task_at_once(api, celery_client, redis_client, kwargs, error):
    """Straight to a worker, without the API's checks: the task fails at once (no retry), with
    an error that names the problem, and the worker goes on."""
    retries_before = metrics.read_retries(redis_client).get("squeezenet", 0)
    result = celery_client.send_task("inference.classify", kwargs=kwargs, queue=QUEUE)
    result.get(timeout=30, propagate=False)
    assert result.state == "FAILURE"
    assert type(result.result).__name__ == error, repr(result.result)
    assert settled(lambda: metrics.read_retries(redis_client).get("squeezenet", 0)) == retries_before
