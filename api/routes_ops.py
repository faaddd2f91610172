"""Operations endpoints: /health, /workers/status, /queue/status, /v1/models."""

from __future__ import annotations

import time

import redis
from flask import Blueprint, current_app, jsonify

from api.service import redis_client, worker_directory
from inference import jobs
from inference.queues import PRIORITIES, model_queues
from inference.registry import MODELS, model_names
from inference.settings import get_settings

bp = Blueprint("ops", __name__)


def _redis_ok() -> bool:
    try:
        return bool(redis_client().ping())
    except redis.RedisError:
        return False


@bp.get("/health")
def health():
    redis_ok = _redis_ok()
    by_model = worker_directory().ready_workers_by_model() if redis_ok else {m: [] for m in model_names()}
    served = [m for m, ws in by_model.items() if ws]
    if not redis_ok or not served:
        status = "unhealthy"
    elif len(served) < len(by_model):
        status = "degraded"
    else:
        status = "healthy"
    random_weights = sorted({m for m, ws in by_model.items() for w in ws if w.get("weights") == "random"})
    depth = sum(sum(d.values()) for d in jobs.queue_depths(redis_client(), model_names(), PRIORITIES).values()) if redis_ok else None
    body = {
        "status": status,
        "redis": "ok" if redis_ok else "unreachable",
        "models": {m: {"workers": len(ws), "weights": sorted({w.get("weights") or "loading" for w in ws})} for m, ws in by_model.items()},
        "warnings": [f"{m} serves RANDOM weights, not pretrained" for m in random_weights],
        "stats": {
            "workers_active": sum(len(ws) for ws in by_model.values()),
            "models_served": served,
            "queue_size": depth,
            "uptime": round(time.time() - current_app.config["STARTED_AT"], 3),
        },
    }
    return jsonify(body), 200 if status != "unhealthy" else 503


@bp.get("/workers/status")
def workers_status():
    workers = worker_directory().workers()
    return jsonify({"workers": workers, "total": len(workers),
                    "ready": sum(1 for w in workers if w.get("ready_processes"))})


@bp.get("/queue/status")
def queue_status():
    depths = jobs.queue_depths(redis_client(), model_names(), PRIORITIES)
    max_size = get_settings().queue_size
    return jsonify({
        "queue_size": sum(sum(d.values()) for d in depths.values()),
        "max_size": max_size,  # per model
        "queues": {m: {**d, "total": sum(d.values()), "max_size": max_size} for m, d in depths.items()},
    })


@bp.get("/v1/models")
def models():
    by_model = worker_directory().ready_workers_by_model()
    return jsonify({"models": [
        {"name": spec.name, "architecture": spec.builder, "queues": model_queues(spec.name),
         "workers": len(by_model[spec.name]),
         "weights": sorted({w.get("weights") for w in by_model[spec.name] if w.get("weights")})}
        for spec in MODELS.values()
    ]})
