"""Submitting requests and reading their state: shared by the API and Python clients.

Celery reports every unknown id as PENDING forever, so each accepted request also gets a
job record (`inference:job:<id>`, kept as long as results), written in the same script that
queues the task: an id without one was never submitted (404). The script writes the record only
where there is none, so a request id submitted twice yields the first request and never a
second task. With API keys, ids are scoped to the key's tenant (`scoped_id`): the task id, and
every key in Redis, is `<tenant>~<id>`, and the job record keeps the client's id.

Cancellation and start race for one claim key (`inference:claim:<id>`, SET NX): the worker
claims "started" before it runs a request, a DELETE claims "cancelled". Whoever comes first
wins, so a cancelled request never runs and a started one cannot be cancelled. A redelivered
request finds its own "started" claim and runs again (results are idempotent per id).
"""

from __future__ import annotations

import json
import logging
import threading
import time
import uuid
from dataclasses import dataclass

import redis as redis_lib
from celery import states
from redis.client import PubSub

from inference import metrics
from inference.celery_app import app
from inference.enqueue import InFlight, enqueue, task_message
from inference.errors import Timeout, code_of, vocabulary
from inference.queues import PRIORITIES, queue_name
from inference.settings import get_settings

log = logging.getLogger(__name__)
JOB_PREFIX = "inference:job:"
CLAIM_PREFIX = "inference:claim:"
STARTS_PREFIX = "inference:starts:"  # how often a request was started (poison messages: see tasks.py)
BATCH_PREFIX = "inference:batch:"
IMAGE_PREFIX = "inference:image:"  # pictures stored by reference: <request id>:<submission>:<n> (see submit)
STARTED, CANCELLED_CLAIM, REDELIVERED = "started", "cancelled", "redelivered"
DUPLICATES_KEY = "inference:stats:duplicate_runs"  # requests run more than once (redelivery)

# Custom Celery states written by the task (or by DELETE) for requests that never ran.
EXPIRED = "EXPIRED"
CANCELLED = "CANCELLED"

# Celery state -> the API's status
STATUS_OF_STATE = {
    states.PENDING: "queued",
    states.RECEIVED: "queued",
    states.RETRY: "queued",
    states.STARTED: "running",
    states.SUCCESS: "success",
    states.FAILURE: "failed",
    states.REVOKED: "cancelled",
    CANCELLED: "cancelled",
    EXPIRED: "expired",
}
FINAL_STATUSES = {"success", "failed", "cancelled", "expired"}
FINAL_STATES = {state for state, status in STATUS_OF_STATE.items() if status in FINAL_STATUSES}


@dataclass
class Submitted:
    job: dict
    created: bool  # False: the request id existed already, nothing was sent

    @property
    def task_id(self) -> str:
        """The id of its task, result and keys in Redis (the request id, scoped to its tenant)."""
        return self.job.get("task_id") or self.job["request_id"]


TENANT_SEPARATOR = "~"  # not allowed in request ids (api/schemas.py): a scoped id is no client's id
IN_FLIGHT_PREFIX = "inference:inflight:"  # a tenant's requests in flight (inference/enqueue.py)


def scoped_id(tenant: str, request_id: str) -> str:
    """The task id of a tenant's request id: each API key's ids are its own, so another key
    can neither read, cancel nor pre-claim them. Without a tenant (no API keys), the id itself."""
    return f"{tenant}{TENANT_SEPARATOR}{request_id}" if tenant else request_id


def tenant_of(task_id: str) -> str:
    return task_id.split(TENANT_SEPARATOR, 1)[0] if TENANT_SEPARATOR in task_id else ""


def in_flight_key(tenant: str) -> str:
    return IN_FLIGHT_PREFIX + tenant


def in_flight(redis: redis_lib.Redis, tenant: str) -> int:
    """A tenant's requests in flight (queued or running)."""
    return redis.zcard(in_flight_key(tenant))


def job_key(request_id: str) -> str:
    return JOB_PREFIX + request_id


def new_request_id() -> str:
    return uuid.uuid4().hex


def claim_key(request_id: str) -> str:
    return CLAIM_PREFIX + request_id


class QueueFull(Exception):
    """The model's queues hold `queued` requests, QUEUE_SIZE or more: nothing was written."""

    def __init__(self, model: str, queued: int):
        super().__init__(f"{model} has {queued} requests queued")
        self.model, self.queued = model, queued


class MemoryFull(Exception):
    """Redis would hold more than the memory limit with this request's pictures: nothing was written."""

    def __init__(self, used: int):
        super().__init__(f"Redis uses {used} bytes")
        self.used = used


class TooManyInFlight(Exception):
    """The tenant has `in_flight` requests queued or running, its limit or more: nothing was written."""

    def __init__(self, in_flight: int):
        super().__init__(f"{in_flight} requests in flight")
        self.in_flight = in_flight


def submit(redis: redis_lib.Redis, *, model: str, priority: str, top_k: int | None = None, request_id: str | None = None,
           timeout_ms: int | None = None, image_b64: str | None = None, image: bytes | None = None,
           images: list[bytes] | None = None, queue_limit: int | None = None, tenant: str = "",
           in_flight_limit: int = 0, memory_limit: int = 0) -> Submitted:
    """Record and enqueue one request, of one picture (`image`, raw bytes) or several (`images`),
    both by reference, or of one picture in the message (`image_b64`). `timeout_ms` is a
    deadline for it to *start*. With `queue_limit`, raises QueueFull instead when the model's
    queues hold that many requests already. A `tenant`'s request ids are its own (`scoped_id`),
    and its requests in flight are counted: with `in_flight_limit`, TooManyInFlight when it has
    that many. With `memory_limit`, MemoryFull when Redis would use more bytes than that. One
    Redis round trip (inference/enqueue.py).

    By reference, each picture is stored in Redis as it is (no base64, no JSON) beside the job
    record, and the task carries only the keys; the worker reads them with one MGET and deletes
    them once done. In the message, every picture crosses kombu's JSON envelope, Celery's two
    payload decodings and the unacked copy: passes over its base64 that held a GPU worker
    under 1,000 images/s and cost a CPU worker's consumer ~1 ms per request. (Other services
    may still send `image`/`images` in the message.)"""
    request_id = request_id or new_request_id()
    task_id = scoped_id(tenant, request_id)
    submitted_at = time.time()
    queue = queue_name(model, priority)
    job = {
        "request_id": request_id,
        **({"task_id": task_id} if tenant else {}),
        "model": model,
        "priority": priority,
        "queue": queue,
        "top_k": top_k,
        "submitted_at": submitted_at,
        "deadline": submitted_at + timeout_ms / 1000 if timeout_ms else None,
    }
    stored = [image] if image is not None else images or []
    # Keys of this submission alone: a second submission of the id must not touch the first's pictures.
    refs = [f"{IMAGE_PREFIX}{task_id}:{uuid.uuid4().hex[:12]}:{n}" for n in range(len(stored))]
    pictures = {"image_ref": refs[0]} if image is not None else {"image_refs": refs} if images is not None else {"image": image_b64}
    kwargs = {**pictures, "model": model, "top_k": top_k, "request_id": request_id, "priority": priority,
              "submitted_at": submitted_at, "deadline": job["deadline"]}
    outcome = enqueue(redis, job_key=job_key(task_id), job=json.dumps(job), queue=queue,
                      message=task_message(task_id, kwargs, queue), expires=get_settings().result_expires,
                      pictures=dict(zip(refs, stored)), counted_queues=[queue_name(model, p) for p in PRIORITIES],
                      limit=queue_limit, in_flight=InFlight(in_flight_key(tenant), in_flight_limit, task_id) if tenant else None,
                      memory_limit=memory_limit)
    if outcome.status == "full":
        raise QueueFull(model, outcome.depth)
    if outcome.status == "busy":
        raise TooManyInFlight(outcome.depth)
    if outcome.status == "memory":
        raise MemoryFull(outcome.depth)
    if outcome.status == "exists":
        return Submitted(json.loads(outcome.existing) if outcome.existing else job, created=False)
    log.info("request %s queued on %s", task_id, queue, extra={"request_id": task_id})
    return Submitted(job, created=True)


def is_stored_image(ref: object) -> bool:
    """A key that submit writes: the only keys a task's `image_ref(s)` may read or delete."""
    return isinstance(ref, str) and ref.startswith(IMAGE_PREFIX)


def named_pictures(image_ref: object, image_refs: object) -> list:
    """The Redis keys a task names (`image_ref` or `image_refs`), whatever shape a message gave them."""
    return ([image_ref] if image_ref is not None else []) + (image_refs if isinstance(image_refs, list) else [])


def temporary_keys(request_id: str, kwargs: object) -> list[str]:
    """The keys a request's final outcome deletes: its count of starts, and those among the
    pictures its task names that submit wrote (whatever a message names)."""
    named = named_pictures(kwargs.get("image_ref"), kwargs.get("image_refs")) if isinstance(kwargs, dict) else []
    return [STARTS_PREFIX + request_id, *(ref for ref in named if is_stored_image(ref))]


@dataclass
class Claim:
    outcome: str  # STARTED (first run), REDELIVERED (run before) or CANCELLED_CLAIM (cancelled first: do not run)
    pictures: list  # the values of the keys asked for (the request's stored pictures)
    starts: int  # how often the request has been started, this time included (retries and redeliveries)


def claim_and_read(redis: redis_lib.Redis, request_id: str, keys: list[str]) -> Claim:
    """Called by the worker before running, in one round trip: claims the request, counts this
    start, and reads the `keys` (the request's stored pictures)."""
    expires = get_settings().result_expires
    pipe = redis.pipeline(transaction=False)
    pipe.set(claim_key(request_id), STARTED, nx=True, ex=expires)
    pipe.incr(STARTS_PREFIX + request_id)
    pipe.expire(STARTS_PREFIX + request_id, expires)
    if keys:
        pipe.mget(keys)
    claimed, starts, _, *read = pipe.execute()
    values = read[0] if keys else []
    if claimed:
        return Claim(STARTED, values, starts)
    return Claim(CANCELLED_CLAIM if _claimed_as_cancelled(redis, request_id) else REDELIVERED, values, starts)


def cancel(redis: redis_lib.Redis, request_id: str) -> str | None:
    """Cancel a request that has not started: "cancelled", "started" (too late), None (unknown id)."""
    raw = redis.get(job_key(request_id))
    if raw is None:
        return None
    if redis.set(claim_key(request_id), CANCELLED_CLAIM, nx=True, ex=get_settings().result_expires):
        app.backend.store_result(request_id, {"reason": "cancelled by the client"}, CANCELLED)
        job = json.loads(raw)
        metrics.record(redis, job["model"], job["priority"], "cancelled")
        return "cancelled"
    return "cancelled" if _claimed_as_cancelled(redis, request_id) else "started"


def _claimed_as_cancelled(redis: redis_lib.Redis, request_id: str) -> bool:
    return redis.get(claim_key(request_id)) == CANCELLED_CLAIM.encode()


def save_batch(redis: redis_lib.Redis, batch_id: str, request_ids: list[str]) -> None:
    redis.set(BATCH_PREFIX + batch_id, json.dumps(request_ids), ex=get_settings().result_expires)


def load_batch(redis: redis_lib.Redis, batch_id: str) -> list[str] | None:
    raw = redis.get(BATCH_PREFIX + batch_id)
    return json.loads(raw) if raw is not None else None


def _error_of(exc) -> dict:
    """The error a failed request reports: a code from the vocabulary (inference/errors.py), never
    a Python class name (a time limit is `timeout`, whatever Celery raised)."""
    code = getattr(exc, "code", None)
    code = code if isinstance(code, str) and code in vocabulary() else code_of(exc)
    message = getattr(exc, "message", None) or str(exc) or type(exc).__name__
    if code == Timeout.code and not isinstance(exc, Timeout):
        message = f"the request ran past the worker's time limit (WORKER_TIMEOUT {get_settings().worker_timeout} s)"
    return {"code": code, "message": message}


def queued_status(job: dict) -> dict:
    """job_status of a request just accepted, without asking Redis again."""
    return {"request_id": job["request_id"], "status": "queued", "model": job["model"], "priority": job["priority"],
            "submitted_at": job["submitted_at"]}


def job_status(redis: redis_lib.Redis, request_id: str) -> dict | None:
    """The request's status and, once done, its result or error; None for an unknown id.

    One round trip: the job record, the claim and the result backend's record together. A
    request is `running` from its claim (task_track_started is off: one write less per task)."""
    raw, claim, raw_meta = redis.mget(job_key(request_id), claim_key(request_id), app.backend.get_key_for_task(request_id))
    if raw is None:
        return None
    return status_of(json.loads(raw), claim, raw_meta)


def status_of(job: dict, claim: bytes | str | None, raw_meta: bytes | str | None) -> dict:
    """The status body from a job record, its claim and the backend's (encoded) result record."""
    # The backend's own decoding, not AsyncResult: no pending-result bookkeeping per status read.
    meta = app.backend.decode_result(raw_meta) if raw_meta else {"status": states.PENDING, "result": None}
    status = STATUS_OF_STATE.get(meta["status"], "queued")
    if meta["status"] == states.PENDING and claim in (STARTED, STARTED.encode()):
        status = "running"
    body = {
        "request_id": job["request_id"],
        "status": status,
        "model": job["model"],
        "priority": job["priority"],
        "submitted_at": job["submitted_at"],
    }
    if status == "success":
        body["result"] = meta["result"]
    elif status == "failed":
        body["error"] = _error_of(meta["result"])
    elif status in ("expired", "cancelled"):
        body["reason"] = (meta["result"] or {}).get("reason") if isinstance(meta["result"], dict) else None
    return body


def wait_for(redis: redis_lib.Redis, request_id: str, timeout: float) -> dict | None:
    """job_status, after waiting up to `timeout` s for the request to finish."""
    status = job_status(redis, request_id)
    if status is None or status["status"] in FINAL_STATUSES or timeout <= 0:
        return status
    with ResultListener(redis, request_id) as listener:
        return listener.wait(timeout)  # it may have finished before we subscribed: read once more


class ResultListener:
    """A request's result, awaited on the result backend's own notification channel, which
    carries the result record itself: a final one is answered without reading Redis again.

    Subscribed on this thread's kept connection (`thread_subscriber`). Subscribe before
    submitting, and the status of the request just submitted is known without a read:

        with ResultListener(redis, request_id) as listener:
            submitted = submit(...)
            status = listener.wait(timeout, known=queued_status(submitted.job))
    """

    def __init__(self, redis: redis_lib.Redis, request_id: str):
        self.redis, self.request_id = redis, request_id
        self.channel = app.backend.get_key_for_task(request_id)
        self.pubsub = thread_subscriber(redis)

    def __enter__(self) -> ResultListener:
        try:
            self.pubsub.subscribe(self.channel)
        except redis_lib.RedisError:
            release_subscriber(self.pubsub, self.channel)  # closes a broken connection
            raise
        return self

    def __exit__(self, *exc) -> None:
        release_subscriber(self.pubsub, self.channel)

    def wait(self, timeout: float, known: dict | None = None) -> dict | None:
        """The status once final, or as it stands after `timeout` s. `known`: the status as it
        stood once subscribed (else it is read)."""
        deadline = time.monotonic() + timeout
        status = known or job_status(self.redis, self.request_id)
        while status is not None and status["status"] not in FINAL_STATUSES:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                break
            message = self.pubsub.get_message(timeout=min(remaining, 1.0))
            if message is None:  # a quiet second: look again, in case a notification was lost
                status = job_status(self.redis, self.request_id)
            elif message["type"] == "message" and message["channel"] == self.channel:
                published = status_of(status, None, message["data"])
                status = published if published["status"] in FINAL_STATUSES else job_status(self.redis, self.request_id)
            # Anything else is a (un)subscribe confirmation, or a late message for an earlier
            # wait on this kept connection: no reason to read the status again.
        return status


_subscribers = threading.local()


def thread_subscriber(redis: redis_lib.Redis) -> PubSub:
    """This thread's subscriber connection, kept from one wait to the next: a new one for each
    wait cost a TCP connect and handshake in the API and in Redis for every `?wait` request
    (0.8 vs 0.3 ms of CPU, 1.0 vs 0.3 ms of wall time here). It hands over (un)subscribe
    confirmations too, so that they are not mistaken for a quiet second."""
    pubsub = getattr(_subscribers, "pubsub", None)
    if pubsub is None or pubsub.connection_pool is not redis.connection_pool:
        pubsub = _subscribers.pubsub = redis.pubsub()
    return pubsub


def release_subscriber(pubsub: PubSub, channel: bytes) -> None:
    try:
        pubsub.unsubscribe(channel)
    except redis_lib.RedisError:
        pubsub.close()  # a broken connection is not kept: the next wait opens a fresh one
        _subscribers.pubsub = None


def total_queued(depths: dict[str, dict[str, int]]) -> int:
    return sum(sum(by_priority.values()) for by_priority in depths.values())


def queue_depths(redis: redis_lib.Redis, models: list[str], priorities: tuple[str, ...]) -> dict[str, dict[str, int]]:
    pipe = redis.pipeline(transaction=False)  # counts for back-pressure: no MULTI/EXEC needed
    for model in models:
        for priority in priorities:
            pipe.llen(queue_name(model, priority))
    counts = iter(pipe.execute())
    return {model: {priority: next(counts) for priority in priorities} for model in models}
