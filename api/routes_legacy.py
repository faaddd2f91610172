"""The seed's synchronous endpoints, kept in their original shapes.

POST /inference waits for the result; POST /batch_inference waits for every item.
"""

from __future__ import annotations

import time
import uuid

from flask import Blueprint, jsonify, request
from pydantic import ValidationError

from api.errors import ApiError, error_response, validation_error
from api.schemas import BatchRequest
from api.service import parse_single, redis_client, submit, validate_item
from inference import jobs
from inference.errors import http_status_of
from inference.settings import get_settings

bp = Blueprint("legacy", __name__)


def seed_shape(status: dict) -> dict:
    """The seed's answer: request_id, status, predictions, worker_id, processing_time, timestamp (+ extras)."""
    body = {"request_id": status["request_id"], "status": status["status"], "model": status["model"]}
    result = status.get("result")
    if result:
        body.update({k: result[k] for k in ("predictions", "worker_id", "processing_time", "timestamp",
                                            "weights", "weights_warning", "queue_time")})
    if "error" in status:
        body["error"] = status["error"]
    return body


@bp.post("/inference")
def sync_inference():
    submitted = submit(parse_single(request))
    request_id = submitted.job["request_id"]
    status = jobs.wait_for(redis_client(), request_id, get_settings().sync_timeout)
    if status["status"] == "success":
        return jsonify(seed_shape(status))
    if status["status"] == "failed":
        error = status["error"]
        return error_response(http_status_of(error["code"]), error["code"], error["message"], request_id=request_id)
    return error_response(504, "timeout", f"no result within {get_settings().sync_timeout} s; poll /v1/inference/{request_id}",
                          request_id=request_id)


@bp.post("/batch_inference")
def sync_batch_inference():
    started = time.time()
    body = request.get_json(silent=True)
    if not isinstance(body, dict):
        raise ApiError(400, "invalid_json", "send a JSON object with `requests` or `images`")
    try:
        items = BatchRequest.model_validate(body).items()
    except ValidationError as exc:
        raise validation_error(exc) from None
    limit = get_settings().batch_size
    if not items:
        raise ApiError(400, "empty_batch", "the batch holds no requests")
    if len(items) > limit:
        raise ApiError(413, "batch_too_large", f"a batch holds at most {limit} requests (BATCH_SIZE)")
    # Validate every item before enqueueing any: a rejected batch leaves nothing behind.
    validated = [validate_item(item, prefix=f"requests[{i}]: ") for i, item in enumerate(items)]
    ids = [submit(item).job["request_id"] for item in validated]
    deadline = time.monotonic() + get_settings().sync_timeout
    results = [seed_shape(jobs.wait_for(redis_client(), rid, max(0.0, deadline - time.monotonic()))) for rid in ids]
    return jsonify({
        "batch_id": uuid.uuid4().hex,
        "total": len(results),
        "successful": sum(r["status"] == "success" for r in results),
        "failed": sum(r["status"] == "failed" for r in results),
        "processing_time": round(time.time() - started, 6),
        "results": results,
    })
