"""Submit-then-poll: POST /v1/inference (202 + id), GET /v1/inference/<id> (optional ?wait=S)."""

from __future__ import annotations

from flask import Blueprint, jsonify, request, url_for

from api.errors import ApiError
from api.service import parse_single, redis_client, submit, wait_seconds
from inference import jobs

bp = Blueprint("v1", __name__, url_prefix="/v1")


def status_response(status: dict):
    code = 200 if status["status"] in jobs.FINAL_STATUSES else 202
    response = jsonify(status)
    response.status_code = code
    if code == 202:
        response.headers["Location"] = url_for("v1.get_inference", request_id=status["request_id"])
    return response


@bp.post("/inference")
def post_inference():
    wait = wait_seconds(request)
    submitted = submit(parse_single(request))
    request_id = submitted.job["request_id"]
    status = jobs.wait_for(redis_client(), request_id, wait) if wait else jobs.job_status(redis_client(), request_id)
    status = status or {**submitted.job, "status": "queued"}
    status["duplicate"] = not submitted.created
    response = status_response(status)
    response.headers["Location"] = url_for("v1.get_inference", request_id=request_id)
    return response


@bp.get("/inference/<request_id>")
def get_inference(request_id: str):
    status = jobs.wait_for(redis_client(), request_id, wait_seconds(request))
    if status is None:
        raise ApiError(404, "not_found", f"no request with id {request_id!r} (never submitted, or expired)")
    return status_response(status)
