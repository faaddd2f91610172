"""The seed's synchronous endpoints, kept in their original shapes.

POST /inference waits for the result; POST /batch_inference waits for every item.
"""

from __future__ import annotations

import time
import uuid

from flask import Blueprint, jsonify, request

from api.errors import error_response
from api.extensions import api_settings, redis_client
from api.service import failure_of, parse_batch, parse_single, submit_all, submit_and_wait
from api.stats import iso_utc
from inference.submit import waiting

bp = Blueprint("legacy", __name__)


def seed_shape(status: dict) -> dict:
    """The seed's answer: request_id, status, predictions, worker_id, processing_time, timestamp (+ extras)."""
    body = {"request_id": status["request_id"], "status": status["status"], "model": status["model"]}
    result = status.get("result")
    if result:
        body.update({k: result[k] for k in ("predictions", "results", "worker_id", "processing_time", "timestamp",
                                            "weights", "weights_warning", "queue_time") if k in result})
    for key in ("error", "reason"):
        if key in status:
            body[key] = status[key]
    if isinstance(body.get("timestamp"), (int, float)):
        body["timestamp"] = iso_utc(body["timestamp"])  # the seed shows an ISO-8601 string
    return body


@bp.post("/inference")
def sync_inference():
    submitted, status = submit_and_wait(parse_single(request), api_settings().sync_timeout)
    failure = failure_of(status, api_settings().sync_timeout)
    if failure is not None:
        return error_response(failure, request_id=submitted.job["request_id"])
    return jsonify(seed_shape(status))


@bp.post("/batch_inference")
def sync_batch_inference():
    started = time.time()
    ids = [s.task_id for s in submit_all(parse_batch(request))]
    deadline = time.monotonic() + api_settings().sync_timeout
    results = [seed_shape(waiting.wait_for(redis_client(), task_id, max(0.0, deadline - time.monotonic()))) for task_id in ids]
    return jsonify({
        "batch_id": uuid.uuid4().hex,
        "total": len(results),
        "successful": sum(r["status"] == "success" for r in results),
        "failed": sum(r["status"] == "failed" for r in results),
        "processing_time": round(time.time() - started, 6),
        "results": results,
    })
