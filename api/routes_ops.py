"""Operations endpoints: health (and liveness, readiness), workers, queues, models, metrics."""

from __future__ import annotations

import time

import redis
from flask import Blueprint, Response, current_app, jsonify, request
from prometheus_client.exposition import choose_encoder

from api import stats
from api.extensions import api_settings, redis_client, worker_directory
from inference.core import keys, metrics
from inference.core.errors import InvalidRequest
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
    requests = stats.request_counts(redis_client()) if redis_ok else {}
    body = {
        "status": status,
        "timestamp": stats.iso_utc(time.time()),
        "redis": "ok" if redis_ok else "unreachable",
        "models": {m: {"workers": len(ws), "weights": sorted({w.get("weights") or "loading" for w in ws})} for m, ws in by_model.items()},
        "warnings": [f"{m} serves RANDOM weights, not pretrained" for m in random_weights],
        "stats": {
            "workers_active": sum(len(ws) for ws in by_model.values()),
            **{key: requests.get(key) for key in ("requests_total", "requests_success", "requests_failed", "avg_latency")},
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
    """Each worker, in the seed's fields (`id`, `url`, `model`, `status` healthy|unhealthy, `load`
    0..1, `last_heartbeat`, `processed`, `errors`, `avg_latency` in ms) and ours."""
    directory = worker_directory()
    redis = redis_client()
    failed = metrics.read_worker_failures(redis)
    average = metrics.worker_average_seconds(redis)
    fetched_at = time.time() - directory.age
    flower = f"{request.scheme}://{request.host.rsplit(':', 1)[0]}:{api_settings().flower_port}/worker/"
    workers = []
    for worker in directory.workers():
        ready, name = bool(worker.get("ready_processes")), worker["worker_id"]
        running, concurrency = worker.get("active", 0), worker.get("concurrency") or 1
        workers.append({
            "id": name,
            "url": flower + name,  # its page in Flower: health, pool, queues, tasks
            **worker,
            "host": name.split("@", 1)[-1],
            "status": "healthy" if ready else "unhealthy",
            "state": "ready" if ready else "loading",
            "load": round(min(1.0, running / concurrency), 3),
            "running": running,
            "failed": failed.get(name, 0),
            "errors": failed.get(name, 0),
            "avg_latency": round(1000 * average[name], 3) if name in average else 0.0,
            "last_heartbeat": stats.iso_utc(worker.get("answered_at") or fetched_at),
        })
    healthy = sum(1 for w in workers if w["status"] == "healthy")
    return jsonify({"workers": workers, "total": len(workers), "ready": healthy, "total_active": healthy,
                    "total_requests": stats.request_counts(redis)["requests_total"]})


@bp.get("/dashboard")
def dashboard():
    """Live charts, a classify form and a burst control; self-contained (no CDN)."""
    return current_app.send_static_file("dashboard.html")


PROMETHEUS_TYPES = ("text/plain", "application/openmetrics-text")


def asks_for_prometheus() -> bool:
    """Accept names a Prometheus format (by name, not by */*), at least as wanted as JSON."""
    named = {value.split(";")[0].strip(): quality for value, quality in request.accept_mimetypes}
    prometheus = max((named.get(kind, 0) for kind in PROMETHEUS_TYPES), default=0)
    return prometheus > 0 and prometheus >= named.get("application/json", 0)


@bp.get("/metrics")
def metrics_endpoint():
    """Prometheus' text format for whoever asks for it (every Prometheus scraper names
    text/plain or OpenMetrics in Accept), JSON for everyone else (the seed's clients send
    `Accept: */*`); `?format=prometheus|json` decides outright."""
    wanted = request.args.get("format") or ("prometheus" if asks_for_prometheus() else "json")
    if wanted == "json":
        return json_stats()
    if wanted != "prometheus":
        raise InvalidRequest("format is prometheus or json")
    encode, content_type = choose_encoder(request.headers.get("Accept", ""))
    return Response(encode(current_app.extensions["prometheus"]), content_type=content_type)


@bp.get("/v1/stats")
def json_stats():
    """The seed's JSON metrics, from the same counters as Prometheus' /metrics."""
    redis = redis_client()
    depths = tracking.queue_depths(redis, model_names(), PRIORITIES)
    return jsonify({
        **stats.request_stats(redis, api_settings().metrics_window),
        "workers_active": sum(len(ws) for ws in worker_directory().ready_workers_by_model().values()),
        "queue_size": tracking.total_queued(depths),
        "uptime": round(time.time() - current_app.config["STARTED_AT"], 3),
        "duplicate_runs": int(redis.get(keys.DUPLICATES_KEY) or 0),
    })


@bp.get("/queue/status")
def queue_status():
    depths = tracking.queue_depths(redis_client(), model_names(), PRIORITIES)
    max_size = api_settings().queue_limit
    by_priority = {p: sum(d[p] for d in depths.values()) for p in PRIORITIES}
    return jsonify({
        "size": tracking.total_queued(depths),  # the seed's names: all models together
        **{f"{p}_priority": n for p, n in by_priority.items()},
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
