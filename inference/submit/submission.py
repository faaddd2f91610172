"""Submitting requests: a job record and a task in one Redis round trip (inference/submit/enqueue.py).

The script writes the record only where there is none, so a request id submitted twice yields
the first request and never a second task. Batches are lists of request ids; cancelling claims
a request before a worker does (inference/core/keys.py).
"""

from __future__ import annotations

import json
import logging
import time
import uuid
from dataclasses import dataclass

import redis as redis_lib

from inference.core import metrics
from inference.core.celery_app import shared_backend
from inference.core.errors import MemoryFull, NotReplicated, QueueFull, TooManyInFlight
from inference.core.keys import (
    CALLBACK_QUEUE,
    CANCELLED,
    CANCELLED_CLAIM,
    IMAGE_PREFIX,
    batch_key,
    claim_key,
    claimed_as_cancelled,
    in_flight_key,
    job_key,
    scoped_id,
)
from inference.core.queues import CALLBACK_TASK, PRIORITIES, queue_name
from inference.core.settings import get_settings
from inference.submit.enqueue import InFlight, enqueue, task_message

log = logging.getLogger(__name__)


@dataclass
class Submitted:
    job: dict
    created: bool  # False: the request id existed already, nothing was sent

    @property
    def task_id(self) -> str:
        """The id of its task, result and keys in Redis (the request id, scoped to its tenant)."""
        return self.job.get("task_id") or self.job["request_id"]


def in_flight(redis: redis_lib.Redis, tenant: str) -> int:
    """A tenant's requests in flight (queued or running)."""
    return redis.zcard(in_flight_key(tenant))


def new_request_id() -> str:
    return uuid.uuid4().hex


def submit(redis: redis_lib.Redis, *, model: str, priority: str, top_k: int | None = None, request_id: str | None = None,
           timeout_ms: int | None = None, image_b64: str | None = None, image: bytes | None = None,
           images: list[bytes] | None = None, queue_limit: int | None = None, tenant: str = "",
           in_flight_limit: int = 0, memory_limit: int = 0, probabilities: bool = False,
           callback_url: str | None = None) -> Submitted:
    """Record and enqueue one request, of one picture (`image`, raw bytes) or several (`images`),
    both by reference, or of one picture in the message (`image_b64`). `timeout_ms` is a
    deadline for it to *start*. With `queue_limit`, raises QueueFull instead when the model's
    queues hold that many requests already. A `tenant`'s request ids are its own (`scoped_id`),
    and its requests in flight are counted: with `in_flight_limit`, TooManyInFlight when it has
    that many. With `memory_limit`, MemoryFull when Redis would use more bytes than that. With
    `probabilities`, the result holds every class's probability as well. With `callback_url`
    (checked against CALLBACK_ALLOWED_HOSTS by the caller), its final status is POSTed there
    (inference/callbacks/). One
    Redis round trip (inference/submit/enqueue.py). With REDIS_WAIT_REPLICAS, NotReplicated (and
    the request cancelled) when fewer replicas than that hold it within REDIS_WAIT_TIMEOUT_MS.

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
    settings = get_settings()
    wait_for = settings.redis_wait_replicas or 0
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
              "submitted_at": submitted_at, "deadline": job["deadline"], **({"probabilities": True} if probabilities else {})}
    outcome = enqueue(redis, job_key=job_key(task_id), job=json.dumps(job), queue=queue,
                      message=task_message(task_id, kwargs, queue), expires=settings.result_expires,
                      pictures=dict(zip(refs, stored)), counted_queues=[queue_name(model, p) for p in PRIORITIES],
                      limit=queue_limit, in_flight=InFlight(in_flight_key(tenant), in_flight_limit, task_id),
                      memory_limit=memory_limit, replicas=wait_for,
                      replica_timeout_ms=settings.redis_wait_timeout_ms, callback=delivery_message(task_id, callback_url))
    if outcome.status == "full":
        raise QueueFull.at(model, outcome.depth, queue_limit or 0)
    if outcome.status == "busy":
        raise TooManyInFlight.at(outcome.depth, in_flight_limit)
    if outcome.status == "memory":
        raise MemoryFull.at(outcome.depth, memory_limit)
    if outcome.status == "exists":
        return Submitted(json.loads(outcome.existing) if outcome.existing else job, created=False)
    if outcome.replicas is not None and outcome.replicas < wait_for:
        # Not accepted: a failover now could lose it. Cancelled, so that it does not run beside the
        # client's retry (unless a worker started it already, or a failover loses the cancellation).
        cancel(redis, task_id)
        log.warning("request %s reached %s of %s replicas: cancelled", task_id, outcome.replicas, wait_for)
        raise NotReplicated.at(outcome.replicas, wait_for)
    # DEBUG: the access log line already says a request was taken, and each line costs every
    # request CPU here and in whatever relays the log (honcho under `make run`).
    log.debug("request %s queued on %s", task_id, queue, extra={"request_id": task_id})
    return Submitted(job, created=True)


def delivery_message(task_id: str, callback_url: str | None) -> str:
    """The callbacks worker's message for a request's callback ("" for none), made now and queued
    by its final state (inference/core/result_backend.py)."""
    if not callback_url:
        return ""
    return task_message(uuid.uuid4().hex, {"request_id": task_id, "url": callback_url}, CALLBACK_QUEUE, task_name=CALLBACK_TASK)


def cancel(redis: redis_lib.Redis, request_id: str) -> str | None:
    """Cancel a request that has not started: "cancelled", "started" (too late), None (unknown id)."""
    raw = redis.get(job_key(request_id))
    if raw is None:
        return None
    if redis.set(claim_key(request_id), CANCELLED_CLAIM, nx=True, ex=get_settings().result_expires):
        shared_backend().store_result(request_id, {"reason": "cancelled by the client"}, CANCELLED)
        job = json.loads(raw)
        metrics.record(redis, job["model"], job["priority"], "cancelled")
        return "cancelled"
    return "cancelled" if claimed_as_cancelled(redis, request_id) else "started"


def save_batch(redis: redis_lib.Redis, batch_id: str, request_ids: list[str]) -> None:
    redis.set(batch_key(batch_id), json.dumps(request_ids), ex=get_settings().result_expires)


def load_batch(redis: redis_lib.Redis, batch_id: str) -> list[str] | None:
    raw = redis.get(batch_key(batch_id))
    return json.loads(raw) if raw is not None else None
