"""Submit-then-poll: POST /v1/inference (202 + id), GET /v1/inference/<id> (optional ?wait=S),
DELETE to cancel; batches at POST /v1/batch_inference and GET /v1/batch/<id>."""

from __future__ import annotations

import time

from flask import Blueprint, jsonify, request, url_for

from api.auth import tenant
from api.extensions import redis_client
from api.service import parse_batch, parse_single, scoped, submit, submit_all, submit_and_wait, wait_seconds
from inference.callbacks import signing
from inference.core import keys
from inference.core.errors import AlreadyStarted, NotFound
from inference.submit import submission, tracking, waiting

bp = Blueprint("v1", __name__, url_prefix="/v1")


def status_response(status: dict, location: bool = False):
    """200 once final, else 202 with the URL to poll (`location`: that URL either way)."""
    final = status["status"] in keys.FINAL_STATUSES
    response = jsonify(status)
    response.status_code = 200 if final else 202
    if location or not final:
        response.headers["Location"] = url_for("v1.get_inference", request_id=status["request_id"])
    return response


@bp.post("/inference")
def post_inference():
    wait = wait_seconds(request)
    item = parse_single(request)
    if wait:
        submitted, status = submit_and_wait(item, wait)
    else:
        submitted = submit(item)
        # A new request is queued: its status is known without a read.
        status = tracking.queued_status(submitted.job) if submitted.created else tracking.job_status(redis_client(), submitted.task_id)
    status = status or tracking.queued_status(submitted.job)
    status["duplicate"] = not submitted.created
    return status_response(status, location=True)


@bp.get("/inference/<request_id>")
def get_inference(request_id: str):
    status = waiting.wait_for(redis_client(), scoped(request_id), wait_seconds(request))
    if status is None:
        raise NotFound(f"no request with id {request_id!r} (never submitted, or expired)")
    return status_response(status)


@bp.delete("/inference/<request_id>")
def cancel_inference(request_id: str):
    outcome = submission.cancel(redis_client(), scoped(request_id))
    if outcome is None:
        raise NotFound(f"no request with id {request_id!r}")
    if outcome == "started":
        raise AlreadyStarted("the request has started (or finished) and can no longer be cancelled")
    return jsonify(tracking.job_status(redis_client(), scoped(request_id)))


@bp.post("/batch_inference")
def post_batch():
    submitted = submit_all(parse_batch(request))
    batch_id = submission.new_request_id()
    request_ids = [s.job["request_id"] for s in submitted]
    submission.save_batch(redis_client(), scoped(batch_id), [s.task_id for s in submitted])
    response = jsonify({"batch_id": batch_id, "request_ids": request_ids, "status": "queued"})
    response.status_code = 202
    response.headers["Location"] = url_for("v1.get_batch", batch_id=batch_id)
    return response


@bp.get("/callbacks/secret")
def callback_secret():
    """The caller's callback secret (its API key's own): what its receivers verify signatures with."""
    return jsonify({"secret": signing.secret_for(redis_client(), tenant()), "header": signing.SIGNATURE_HEADER,
                    "scheme": "t=<unix time>,v1=<hex HMAC-SHA256 of '<t>.<body>'>"})


@bp.get("/batch/<batch_id>")
def get_batch(batch_id: str):
    task_ids = submission.load_batch(redis_client(), scoped(batch_id))
    if task_ids is None:
        raise NotFound(f"no batch with id {batch_id!r}")
    deadline = time.monotonic() + wait_seconds(request)
    items = [waiting.wait_for(redis_client(), task_id, max(0.0, deadline - time.monotonic())) for task_id in task_ids]
    counts = {status: sum(1 for item in items if item and item["status"] == status)
              for status in ("queued", "running", "success", "failed", "expired", "cancelled")}
    done = all(item and item["status"] in keys.FINAL_STATUSES for item in items)
    return jsonify({"batch_id": batch_id, "status": "done" if done else "running", "total": len(items),
                    "counts": counts, "items": items}), 200 if done else 202
