"""The callback delivery task's contract (`inference.deliver_callback`: request id and URL in, at
most CALLBACK_MAX_RETRIES + 1 attempts out, nothing sent where it may not go), run by
pytest-celery's in-process worker: a thread of this process consuming the suite's real Redis,
with settings changed for one test. The real-process tests (tests/test_callbacks.py and the
rest) run the workers as the Procfile does."""

from __future__ import annotations

import logging
import uuid

import pytest
from celery.contrib.pytest import celery_worker  # noqa: F401  (the in-process worker; pytest-celery's own of that name needs Docker)

from inference.core.keys import CALLBACK_QUEUE
from inference.core.settings import get_settings, use_settings
from tests.helpers import image_b64
from tests.receiver import Receiver
from tests.system import wait_until

pytestmark = pytest.mark.e2e


@pytest.fixture
def celery_app():
    """The callbacks worker's app, as `python -m inference.callbacks` runs it."""
    from inference.callbacks.delivery import app

    return app


@pytest.fixture
def celery_worker_pool():
    return "threads"


@pytest.fixture
def celery_worker_parameters():
    return {"queues": [CALLBACK_QUEUE], "perform_ping_check": False, "concurrency": 2, "loglevel": "INFO"}  # its logs are what we read


@pytest.fixture
def receiver():
    receiver = Receiver()
    yield receiver
    receiver.close()


@pytest.fixture
def few_retries():
    before = get_settings()
    use_settings(before.model_copy(update={"callback_max_retries": 2, "callback_retry_delay": 0.1}))
    yield
    use_settings(before)


@pytest.fixture
def delivery_log():
    """What the delivery task logs (Celery's task loggers do not propagate to pytest's capture)."""
    lines: list[str] = []

    class Collect(logging.Handler):
        def emit(self, record):
            lines.append(record.getMessage())

    handler, logger = Collect(logging.INFO), logging.getLogger("inference.callbacks.delivery")
    logger.addHandler(handler)
    yield lines
    logger.removeHandler(handler)


def submit_with_callback(api, url: str) -> str:
    response = api.post(f"{api.base_url}/v1/inference", params={"wait": 30}, timeout=60,
                        json={"data": image_b64(), "model_type": "squeezenet", "callback_url": url})
    assert response.status_code == 200 and response.json()["status"] == "success"
    return response.json()["request_id"]


def test_a_receiver_that_always_fails_is_given_up(api, receiver, few_retries, celery_worker, delivery_log):  # noqa: F811
    url = receiver.url("fail")
    request_id = submit_with_callback(api, url)
    wait_until(lambda: any("given up after 3 attempts" in line and request_id in line for line in delivery_log), 30,
               what="the delivery given up")
    assert [d["headers"]["X-Inference-Attempt"] for d in receiver.at(url)] == ["1", "2", "3"]


def test_deliveries_that_may_not_go_are_dropped_without_a_call(receiver, celery_worker, delivery_log):  # noqa: F811
    from inference.callbacks.delivery import deliver_callback

    url = receiver.url("fail")
    deliver_callback.apply_async(kwargs={"request_id": "no-such-request", "url": url}, queue=CALLBACK_QUEUE)
    deliver_callback.apply_async(kwargs={"request_id": uuid.uuid4().hex, "url": "http://10.0.0.9/hook"}, queue=CALLBACK_QUEUE)
    wait_until(lambda: sum("not delivered" in line for line in delivery_log) >= 2, 30, what="both refused")
    messages = [line for line in delivery_log if "not delivered" in line]
    assert any("no-such-request" in m and "record expired" in m for m in messages)
    assert any("'10.0.0.9' is not on CALLBACK_ALLOWED_HOSTS" in m for m in messages)
    assert receiver.deliveries == []


def test_a_delivery_goes_to_the_address_it_checked(api, receiver, celery_worker, delivery_log, monkeypatch):  # noqa: F811
    """DNS rebinding: a name on the list (by wildcard) answers a public address when checked and
    this machine's own the next time. The delivery connects to the address it checked (there is
    no way to the internet here: it fails), never to a second lookup's (the receiver here)."""
    import socket

    from inference.callbacks.delivery import deliver_callback

    request_id = submit_with_callback(api, receiver.url("ok"))  # a finished request to report on
    port = receiver.server.server_address[1]
    lookups = []
    original = socket.getaddrinfo

    def rebinding(host, *args, **kwargs):
        if host != "hooks.rebind.test":
            return original(host, *args, **kwargs)
        lookups.append(host)
        address = "93.184.216.34" if len(lookups) == 1 else "127.0.0.1"
        return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", (address, port))]

    monkeypatch.setattr(socket, "getaddrinfo", rebinding)
    before = get_settings()
    use_settings(before.model_copy(update={"callback_allowed_hosts": "*.rebind.test", "callback_max_retries": 0, "callback_timeout": 1.0}))
    try:
        url = f"http://hooks.rebind.test:{port}/ok/{uuid.uuid4().hex}"
        deliver_callback.apply_async(kwargs={"request_id": request_id, "url": url}, queue=CALLBACK_QUEUE)
        wait_until(lambda: any("given up after 1 attempts" in line and request_id in line for line in delivery_log), 30,
                   what="the delivery to the checked address failing")
    finally:
        use_settings(before)
    assert lookups == ["hooks.rebind.test"] and receiver.at(url) == []
