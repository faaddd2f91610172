"""Operations endpoints: health (and liveness, readiness), workers, queues, models, metrics."""

from __future__ import annotations

import time

import redis
from flask import Blueprint, Response, current_app, jsonify
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from api.extensions import api_settings, redis_client, worker_directory
from inference.core import keys, metrics
from inference.core.queues import PRIORITIES, model_queues
from inference.core.registry import MODELS, model_names
from inference.submit import tracking

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
    depth = tracking.total_queued(tracking.queue_depths(redis_client(), model_names(), PRIORITIES)) if redis_ok else None
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


@bp.get("/health/live")
def live():
    """Liveness: the process answers (never touches Redis, so a Redis outage restarts nothing)."""
    return jsonify({"status": "alive"})


@bp.get("/health/ready")
def ready():
    """Readiness: Redis answers and at least one model has a ready worker."""
    redis_ok = _redis_ok()
    served = list(worker_directory().live_models()) if redis_ok else []
    ok = redis_ok and bool(served)
    return jsonify({"status": "ready" if ok else "not_ready", "redis": redis_ok, "models_served": served}), 200 if ok else 503


@bp.get("/workers/status")
def workers_status():
    directory = worker_directory()
    failed = metrics.read_worker_failures(redis_client())
    seen_at = time.time() - directory.age
    workers = [
        {
            **worker,
            "host": worker["worker_id"].split("@", 1)[-1],
            "status": "ready" if worker.get("ready_processes") else "loading",
            "load": {"running": worker.get("active", 0), "concurrency": worker.get("concurrency")},
            "failed": failed.get(worker["worker_id"], 0),
            "last_heartbeat": round(seen_at, 3),
        }
        for worker in directory.workers()
    ]
    return jsonify({"workers": workers, "total": len(workers),
                    "ready": sum(1 for w in workers if w["status"] == "ready")})


@bp.get("/dashboard")
def dashboard():
    """Live charts, a classify form and a burst control; self-contained (no CDN)."""
    return current_app.send_static_file("dashboard.html")


@bp.get("/metrics")
def prometheus_metrics():
    return Response(generate_latest(current_app.extensions["prometheus"]), mimetype=CONTENT_TYPE_LATEST)


@bp.get("/v1/stats")
def stats():
    """The seed's JSON metrics, from the same counters as /metrics."""
    from inference.submit import tracking
    redis = redis_client()
    by_outcome: dict[str, int] = {}
    for (_, _, outcome), count in metrics.read_requests(redis).items():
        by_outcome[outcome] = by_outcome.get(outcome, 0) + count
    latency = metrics.read_histogram(redis, "latency_seconds")
    total_latency = sum(h["sum"] for h in latency.values())
    count_latency = sum(h["count"] for h in latency.values())
    recent = metrics.recent_latencies(redis)
    depths = tracking.queue_depths(redis, model_names(), PRIORITIES)
    return jsonify({
        "requests_total": sum(by_outcome.values()),
        "requests_success": by_outcome.get("success", 0),
        "requests_failed": by_outcome.get("failed", 0),
        "requests_by_outcome": by_outcome,
        "workers_active": sum(len(ws) for ws in worker_directory().ready_workers_by_model().values()),
        "avg_latency": round(total_latency / count_latency, 6) if count_latency else None,
        "p50_latency": metrics.percentile(recent, 50),
        "p95_latency": metrics.percentile(recent, 95),
        "p99_latency": metrics.percentile(recent, 99),
        "queue_size": tracking.total_queued(depths),
        "uptime": round(time.time() - current_app.config["STARTED_AT"], 3),
        "duplicate_runs": int(redis.get(keys.DUPLICATES_KEY) or 0),
    })


@bp.get("/queue/status")
def queue_status():
    depths = tracking.queue_depths(redis_client(), model_names(), PRIORITIES)
    max_size = api_settings().queue_limit
    return jsonify({
        "queue_size": tracking.total_queued(depths),
        "max_size": max_size,  # per model
        "queues": {m: {**d, "total": sum(d.values()), "max_size": max_size} for m, d in depths.items()},
        # Admission by memory (api/memory.py): new pictures are refused above `admit_below`.
        "redis_memory": {"used": redis_client().info("memory")["used_memory"],
                         "admit_below": current_app.extensions["memory"].limit() or None},
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
