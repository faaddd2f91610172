"""The task `inference.deliver_callback` and the Celery app of the callbacks worker.

The app is the project's configuration without the model workers' parts (no `--model`, no
model loading): `celery -A inference.callbacks.delivery worker -Q callbacks`, which
`python -m inference.callbacks` runs. Each delivery POSTs the request's status as
`GET /v1/inference/<id>` shows it, signed, with the request's id as `Idempotency-Key`: it is
delivered at least once (a receiver that answered but whose answer was lost gets it again), so a
receiver drops what it has seen.
"""

from __future__ import annotations

import http.client
import json
import random
import socket
import threading
import time
from urllib.parse import urlsplit

import redis as redis_lib
from celery import Celery
from celery.utils.log import get_task_logger
from celery.worker.control import inspect_command

from inference.callbacks import signing, targets
from inference.core import control_conf, redis_connection  # noqa: F401  (control_conf: `inspect conf` masks every password)
from inference.core.errors import CallbackNotAllowed
from inference.core.keys import CALLBACK_QUEUE, tenant_of
from inference.core.queues import CALLBACK_TASK
from inference.core.settings import get_settings
from inference.submit import tracking

app = Celery("callbacks")
app.config_from_object("celeryconfig")
app.conf.update(imports=("inference.callbacks.delivery",), task_routes=None, task_default_queue=CALLBACK_QUEUE)
log = get_task_logger(__name__)
_redis: redis_lib.Redis | None = None


def redis_client() -> redis_lib.Redis:
    global _redis
    if _redis is None:
        _redis = redis_connection.connect(get_settings(), socket_connect_timeout=5, socket_timeout=10)
    return _redis


@inspect_command()
def model_info(state):
    """No model here: the API's worker directory, which asks every worker, passes this one by."""
    return {}


def countdown(retries: int) -> float:
    """Exponential backoff with full jitter, capped below the visibility timeout (a message that
    waits out its countdown unacknowledged must not be delivered again meanwhile)."""
    settings = get_settings()
    cap = min(settings.callback_retry_backoff_max, settings.visibility_timeout - settings.callback_timeout - 1)
    return max(0.1, random.uniform(0.5, 1.0) * min(cap, settings.callback_retry_delay * 2 ** retries))


def post(url: str, address: str, body: bytes, headers: dict, seconds: float) -> int:
    """POST to `url` at `address` (the one checked: the name is not looked up again; TLS still
    checks the certificate against the name) and return the answer's status, all within
    `seconds` however the receiver trickles (a socket timeout bounds each read, not the whole:
    at the deadline the socket is shut). No redirects are followed (a listed receiver must not
    send the delivery where it may not go), and the answer's body is never read."""
    parts = urlsplit(url)
    kind = http.client.HTTPSConnection if parts.scheme == "https" else http.client.HTTPConnection
    connection = kind(parts.hostname or "", parts.port, timeout=seconds)
    # http.client opens its socket through this attribute: to the checked address, whatever DNS says now.
    connection._create_connection = lambda where, *args, **kwargs: socket.create_connection((address, where[1]), *args, **kwargs)  # type: ignore[attr-defined]

    def cut() -> None:
        try:
            if connection.sock is not None:
                connection.sock.shutdown(socket.SHUT_RDWR)
        except OSError:  # closed meanwhile
            pass

    deadline = threading.Timer(seconds, cut)
    deadline.start()
    try:
        connection.request("POST", (parts.path or "/") + (f"?{parts.query}" if parts.query else ""), body=body, headers=headers)
        return connection.getresponse().status
    finally:
        deadline.cancel()
        connection.close()


def final_status(request_id: str) -> dict | None:
    """The status as GET /v1/inference/<id> shows it; for a request sent with send_task (no job
    record), what the result backend holds of it."""
    status = tracking.job_status(redis_client(), request_id)
    if status is None:
        raw = redis_client().get(app.backend.get_key_for_task(request_id))
        if raw is not None:
            status = tracking.status_of({"request_id": request_id, "model": None, "priority": None, "submitted_at": None}, None, raw)
    return status


@app.task(name=CALLBACK_TASK, bind=True, ignore_result=True, acks_late=True, max_retries=None)
def deliver_callback(self, request_id: str, url: str) -> None:
    settings = get_settings()
    allowed = targets.allowed_hosts(settings.callback_allowed_hosts)
    try:
        host = targets.check_url(url, allowed)  # the list may have changed since the submission
        parts = urlsplit(url)
        address = targets.checked_address(host, parts.port or (443 if parts.scheme == "https" else 80), allowed)
    except CallbackNotAllowed as exc:
        log.warning("callback of %s not delivered: %s", request_id, exc.message)
        return
    status = final_status(request_id)
    if status is None:
        log.warning("callback of %s not delivered: its record expired", request_id)
        return
    body = json.dumps(status, separators=(",", ":")).encode()
    now = int(time.time())
    headers = {
        "Content-Type": "application/json",
        "User-Agent": "celery-inference-callbacks/1",
        "Idempotency-Key": status["request_id"],
        "X-Inference-Attempt": str(self.request.retries + 1),
        signing.SIGNATURE_HEADER: signing.signature(signing.secret_for(redis_client(), tenant_of(request_id)), now, body),
    }
    try:
        code = post(url, address, body, headers, settings.callback_timeout)
        failure = None if 200 <= code < 300 else f"answered {code}"
    except (OSError, http.client.HTTPException) as exc:
        failure = f"{type(exc).__name__}: {exc}"
    if failure is None:
        log.info("callback of %s delivered to %s (attempt %d)", request_id, host, self.request.retries + 1)
        return
    if self.request.retries >= settings.callback_max_retries:
        log.error("callback of %s to %s given up after %d attempts: %s", request_id, host, self.request.retries + 1, failure)
        return
    wait = countdown(self.request.retries)
    log.warning("callback of %s to %s failed (%s); again in %.1f s", request_id, host, failure, wait)
    raise self.retry(countdown=wait, queue=CALLBACK_QUEUE)
