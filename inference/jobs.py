"""Submitting requests and reading their state: shared by the API and Python clients.

Celery reports every unknown id as PENDING forever, so each accepted request also gets a
job record (`inference:job:<id>`, kept as long as results) written *before* the task is sent:
an id without one was never submitted (404). The record is written with SET NX, so a
request id submitted twice yields the first request and never a second task.
"""

from __future__ import annotations

import json
import time
import uuid
from dataclasses import dataclass

import redis as redis_lib
from celery import states

from inference.celery_app import app
from inference.queues import TASK_NAME, queue_name
from inference.settings import get_settings

JOB_PREFIX = "inference:job:"

# Celery state -> the API's status
STATUS_OF_STATE = {
    states.PENDING: "queued",
    states.RECEIVED: "queued",
    states.RETRY: "queued",
    states.STARTED: "running",
    states.SUCCESS: "success",
    states.FAILURE: "failed",
    states.REVOKED: "cancelled",
}
FINAL_STATUSES = {"success", "failed", "cancelled"}


@dataclass
class Submitted:
    job: dict
    created: bool  # False: the request id existed already, nothing was sent


def job_key(request_id: str) -> str:
    return JOB_PREFIX + request_id


def new_request_id() -> str:
    return uuid.uuid4().hex


def submit(redis: redis_lib.Redis, *, image_b64: str, model: str, priority: str, top_k: int | None = None,
           request_id: str | None = None) -> Submitted:
    request_id = request_id or new_request_id()
    job = {
        "request_id": request_id,
        "model": model,
        "priority": priority,
        "queue": queue_name(model, priority),
        "top_k": top_k,
        "submitted_at": time.time(),
    }
    if not redis.set(job_key(request_id), json.dumps(job), nx=True, ex=get_settings().result_expires):
        existing = redis.get(job_key(request_id))
        return Submitted(json.loads(existing) if existing else job, created=False)
    try:
        app.send_task(
            TASK_NAME,
            task_id=request_id,
            queue=job["queue"],
            kwargs={
                "image": image_b64,
                "model": model,
                "top_k": top_k,
                "request_id": request_id,
                "priority": priority,
                "submitted_at": job["submitted_at"],
            },
        )
    except Exception:
        redis.delete(job_key(request_id))  # leave nothing half-done behind
        raise
    return Submitted(job, created=True)


def _error_of(exc) -> dict:
    code = getattr(exc, "code", None) or type(exc).__name__
    message = getattr(exc, "message", None) or str(exc) or type(exc).__name__
    return {"code": code, "message": message}


def job_status(redis: redis_lib.Redis, request_id: str) -> dict | None:
    """The request's status and, once done, its result or error; None for an unknown id."""
    raw = redis.get(job_key(request_id))
    if raw is None:
        return None
    job = json.loads(raw)
    # The backend's meta, not AsyncResult: no pending-result bookkeeping per status read.
    meta = app.backend.get_task_meta(request_id)
    status = STATUS_OF_STATE.get(meta["status"], "queued")
    body = {
        "request_id": request_id,
        "status": status,
        "model": job["model"],
        "priority": job["priority"],
        "submitted_at": job["submitted_at"],
    }
    if status == "success":
        body["result"] = meta["result"]
    elif status == "failed":
        body["error"] = _error_of(meta["result"])
    return body


def wait_for(redis: redis_lib.Redis, request_id: str, timeout: float) -> dict | None:
    """job_status, after waiting up to `timeout` s for the request to finish.

    Listens on the result backend's own notification channel rather than polling.
    """
    status = job_status(redis, request_id)
    if status is None or status["status"] in FINAL_STATUSES or timeout <= 0:
        return status
    deadline = time.monotonic() + timeout
    pubsub = redis.pubsub(ignore_subscribe_messages=True)
    try:
        pubsub.subscribe(app.backend.get_key_for_task(request_id))
        status = job_status(redis, request_id)  # it may have finished before we subscribed
        while status["status"] not in FINAL_STATUSES:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                break
            # A notification or, at worst, a one-second tick triggers a fresh read.
            pubsub.get_message(timeout=min(remaining, 1.0))
            status = job_status(redis, request_id)
    finally:
        pubsub.close()
    return status


def queue_depths(redis: redis_lib.Redis, models: list[str], priorities: tuple[str, ...]) -> dict[str, dict[str, int]]:
    pipe = redis.pipeline()
    for model in models:
        for priority in priorities:
            pipe.llen(queue_name(model, priority))
    counts = iter(pipe.execute())
    return {model: {priority: next(counts) for priority in priorities} for model in models}
