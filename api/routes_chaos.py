"""POST /simulate/crash: kill a worker on purpose (404 unless CHAOS_ENABLED=true)."""

from __future__ import annotations

from flask import Blueprint, jsonify, request

from api.errors import ApiError
from api.extensions import api_settings, worker_directory
from api.service import json_body
from inference.core.celery_app import app

bp = Blueprint("chaos", __name__)


@bp.post("/simulate/crash")
def simulate_crash():
    if not api_settings().chaos_enabled:
        raise ApiError(404, "not_found", "chaos endpoints are disabled (CHAOS_ENABLED=false)")
    body = json_body(request)
    workers = worker_directory().workers()
    if body.get("worker"):
        targets = [w["worker_id"] for w in workers if w["worker_id"] == body["worker"]]
    elif body.get("model"):
        targets = [w["worker_id"] for w in workers if w["model"] == body["model"]][:1 if not body.get("all") else None]
    else:
        raise ApiError(400, "invalid_request", "name a `worker` or a `model` (and `all: true` for every worker of it)")
    if not targets:
        raise ApiError(404, "no_such_worker", "no live worker matches")
    replies = app.control.broadcast("simulate_crash", destination=targets, reply=True, timeout=2) or []
    return jsonify({"crashed": targets, "replies": replies})
