"""A request's status and result, and the depth of the queues: read by the API and clients."""

from __future__ import annotations

import json

import redis as redis_lib
from celery import states

from inference.core.celery_app import shared_backend
from inference.core.errors import Timeout, code_of, vocabulary
from inference.core.keys import STARTED, STATUS_OF_STATE, claim_key, job_key
from inference.core.queues import queue_name
from inference.core.settings import get_settings


def _error_of(exc) -> dict:
    """The error a failed request reports: a code from the vocabulary (inference/errors.py), never
    a Python class name (a time limit is `timeout`, whatever Celery raised)."""
    code = getattr(exc, "code", None)
    code = code if isinstance(code, str) and code in vocabulary() else code_of(exc)
    message = getattr(exc, "message", None) or str(exc) or type(exc).__name__
    if code == Timeout.code and not isinstance(exc, Timeout):
        message = Timeout.at_worker_limit(get_settings().worker_timeout).message
    return {"code": code, "message": message}


def queued_status(job: dict) -> dict:
    """job_status of a request just accepted, without asking Redis again."""
    return {"request_id": job["request_id"], "status": "queued", "model": job["model"], "priority": job["priority"],
            "submitted_at": job["submitted_at"]}


def job_status(redis: redis_lib.Redis, request_id: str) -> dict | None:
    """The request's status and, once done, its result or error; None for an unknown id.

    One round trip: the job record, the claim and the result backend's record together. A
    request is `running` from its claim (task_track_started is off: one write less per task)."""
    raw, claim, raw_meta = redis.mget(job_key(request_id), claim_key(request_id), shared_backend().get_key_for_task(request_id))
    if raw is None:
        return None
    return status_of(json.loads(raw), claim, raw_meta)


def status_of(job: dict, claim: bytes | str | None, raw_meta: bytes | str | None) -> dict:
    """The status body from a job record, its claim and the backend's (encoded) result record."""
    # The backend's own decoding, not AsyncResult: no pending-result bookkeeping per status read.
    meta = shared_backend().decode_result(raw_meta) if raw_meta else {"status": states.PENDING, "result": None}
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


def total_queued(depths: dict[str, dict[str, int]]) -> int:
    return sum(sum(by_priority.values()) for by_priority in depths.values())


def queued_by_model(redis: redis_lib.Redis, depths: dict[str, dict[str, int]]) -> dict[str, int]:
    """Every message waiting for each model: its priority queues' `depths` (queue_depths) and the
    sub-lists that kombu's Redis transport keeps for per-message priorities (`<queue>\x06\x16<step>`;
    this system sends none, but a client's `apply_async(priority=...)` would land there)."""
    from kombu.transport.redis import PRIORITY_STEPS, Channel

    sub_lists = {model: [f"{queue_name(model, p)}{Channel.sep}{step}" for p in by_priority for step in PRIORITY_STEPS if step]
                 for model, by_priority in depths.items()}
    pipe = redis.pipeline(transaction=False)
    for names in sub_lists.values():
        for name in names:
            pipe.llen(name)
    counts = iter(pipe.execute())
    return {model: sum(depths[model].values()) + sum(next(counts) for _ in names) for model, names in sub_lists.items()}


def queue_depths(redis: redis_lib.Redis, models: list[str], priorities: tuple[str, ...]) -> dict[str, dict[str, int]]:
    pipe = redis.pipeline(transaction=False)  # counts for back-pressure: no MULTI/EXEC needed
    for model in models:
        for priority in priorities:
            pipe.llen(queue_name(model, priority))
    counts = iter(pipe.execute())
    return {model: {priority: next(counts) for priority in priorities} for model in models}
