"""Redis keys and request states that submitters and workers share.

Each accepted request has a job record (`inference:job:<id>`, written with its task, kept as
long as results): an id without one was never submitted. Cancellation and start race for one
claim key (`inference:claim:<id>`, SET NX): the worker claims "started" before it runs a
request, a DELETE claims "cancelled"; whoever comes first wins. With API keys, ids are scoped
to the key's tenant (`scoped_id`): the task id, and every key in Redis, is `<tenant>~<id>`.
"""

from __future__ import annotations

import redis as redis_lib
from celery import states

JOB_PREFIX = "inference:job:"
CLAIM_PREFIX = "inference:claim:"
STARTS_PREFIX = "inference:starts:"  # how often a request was started (poison messages: see tasks.py)
BATCH_PREFIX = "inference:batch:"
MESSAGE_PREFIX = "inference:message:"  # a copy of a request's message until it ends (inference/worker/lost_messages.py)
CALLBACK_PREFIX = "inference:callback:"  # a request's callback delivery message, queued with its final state
CALLBACK_QUEUE = "callbacks"  # where deliveries wait for the callbacks worker (inference/callbacks/)
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


def job_key(request_id: str) -> str:
    return JOB_PREFIX + request_id


def claim_key(request_id: str) -> str:
    return CLAIM_PREFIX + request_id


def starts_key(request_id: str) -> str:
    return STARTS_PREFIX + request_id


def batch_key(batch_id: str) -> str:
    return BATCH_PREFIX + batch_id


def is_stored_image(ref: object) -> bool:
    """A key that submit writes: the only keys a task's `image_ref(s)` may read or delete."""
    return isinstance(ref, str) and ref.startswith(IMAGE_PREFIX)


def named_pictures(image_ref: object, image_refs: object) -> list:
    """The Redis keys a task names (`image_ref` or `image_refs`), whatever shape a message gave them."""
    return ([image_ref] if image_ref is not None else []) + (image_refs if isinstance(image_refs, list) else [])


def temporary_keys(request_id: str, kwargs: object) -> list[str]:
    """The keys a request's final outcome deletes: its count of starts, the copy of its message,
    and those among the pictures its task names that submit wrote (whatever a message names)."""
    named = named_pictures(kwargs.get("image_ref"), kwargs.get("image_refs")) if isinstance(kwargs, dict) else []
    return [starts_key(request_id), message_key(request_id), *(ref for ref in named if is_stored_image(ref))]


def callback_key(request_id: str) -> str:
    return CALLBACK_PREFIX + request_id


def message_key(request_id: str) -> str:
    return MESSAGE_PREFIX + request_id


def claimed_as_cancelled(redis: redis_lib.Redis, request_id: str) -> bool:
    return redis.get(claim_key(request_id)) == CANCELLED_CLAIM.encode()
