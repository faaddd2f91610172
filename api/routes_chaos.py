"""POST /simulate/crash: kill a worker on purpose (404 unless CHAOS_ENABLED=true)."""

from __future__ import annotations

from flask import Blueprint, jsonify, request

from api.extensions import api_settings, worker_directory
from api.service import json_body
from inference.core.celery_app import app
from inference.core.errors import InvalidRequest, NoSuchWorker, NotFound

bp = Blueprint("chaos", __name__)


@bp.post("/simulate/crash")
def simulate_crash():
    if not api_settings().chaos_enabled:
        raise NotFound("chaos endpoints are disabled (CHAOS_ENABLED=false)")
    body = json_body(request)
    workers = worker_directory().workers()
    if body.get("worker"):
        targets = [w["worker_id"] for w in workers if w["worker_id"] == body["worker"]]
    elif body.get("model"):
        targets = [w["worker_id"] for w in workers if w["model"] == body["model"]][:1 if not body.get("all") else None]
    else:
        raise InvalidRequest("name a `worker` or a `model` (and `all: true` for every worker of it)")
    if not targets:
        raise NoSuchWorker("no live worker matches")
    replies = app.control.broadcast("simulate_crash", destination=targets, reply=True, timeout=2) or []
    return jsonify({"crashed": targets, "replies": replies})
