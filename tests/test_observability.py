"""Health probes, worker status, Prometheus metrics, the seed's JSON stats, request-id logging."""

from __future__ import annotations

import json
import logging
import time
import uuid
from datetime import datetime

import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.helpers import MODELS, PROMETHEUS_ACCEPT, image_b64, paused, settled
from tests.system import LOG_DIR, wait_until

pytestmark = pytest.mark.e2e


def get(api, path, **kw):
    return api.get(api.base_url + path, timeout=30, **kw)


def scrape(api) -> dict[tuple, float]:
    """(sample name, sorted labels) -> value"""
    response = get(api, "/metrics", headers=PROMETHEUS_ACCEPT)
    assert response.status_code == 200 and response.headers["Content-Type"].startswith("text/plain")
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(response.text)
        for sample in family.samples
    }


def classify(api, model, **fields):
    response = api.post(f"{api.base_url}/v1/inference", params={"wait": 30}, timeout=60,
                        json={"data": image_b64(), "model_type": model, **fields})
    assert response.status_code == 200
    return response.json()


def test_liveness_and_readiness(api):
    assert get(api, "/health/live").json() == {"status": "alive"}
    ready = get(api, "/health/ready")
    assert ready.status_code == 200 and set(ready.json()["models_served"]) == set(MODELS)


def test_metrics_count_outcomes_and_timings(api):
    success_key = ("inference_requests_total", (("model", "squeezenet"), ("outcome", "success"), ("priority", "low")))
    latency_key = ("inference_latency_seconds_count", (("model", "squeezenet"),))
    rejected_key = ("inference_requests_total", (("model", "squeezenet"), ("outcome", "rejected"), ("priority", "low")))
    before = settled(lambda: {key: value for key, value in scrape(api).items() if key in (success_key, latency_key, rejected_key)})
    for _ in range(3):
        classify(api, "squeezenet", priority="low")
    bad = api.post(f"{api.base_url}/v1/inference", json={"data": "%%", "model_type": "squeezenet", "priority": "low"}, timeout=10)
    assert bad.status_code == 400

    def three_counted():  # workers record metrics just after the result is stored: a moment after the answer
        now = scrape(api)
        done = now[success_key] - before.get(success_key, 0) >= 3 and now[latency_key] - before.get(latency_key, 0) >= 3
        return now if done else None

    after = wait_until(three_counted, 10, what="metrics of the three requests")
    assert after[success_key] - before.get(success_key, 0) == 3
    assert after[rejected_key] - before.get(rejected_key, 0) == 1
    assert after[latency_key] - before.get(latency_key, 0) == 3
    for histogram in ("queue_wait_seconds", "compute_seconds", "batch_size"):
        assert after[(f"inference_{histogram}_count", (("model", "squeezenet"),))] >= 3
    assert after[("inference_batch_size_bucket", (("le", "1.0"), ("model", "squeezenet")))] >= 3
    for model in MODELS:
        assert after[("inference_workers_live", (("model", model),))] == 1
        for priority in ("high", "normal", "low"):
            assert ("inference_queue_depth", (("model", model), ("priority", priority))) in after


def test_autoscaling_gauges_count_every_queued_and_held_request_per_ready_process(redis_client):
    """The signal deploy/'s ScaledObjects target. Held requests count (a worker holds up to its
    concurrency out of the queue); with no ready process the whole backlog stands, so a model
    scaled to zero comes back. kombu's per-message priority sub-lists count as queued."""
    from api.prometheus import autoscaling_gauges
    from inference.core.queues import PRIORITIES
    from inference.submit import tracking

    workers = {"m1": [{"held": 4, "ready_processes": 1}, {"held": 6, "ready_processes": 1}], "m2": []}
    values = {(family.name, sample.labels["model"]): sample.value
              for family in autoscaling_gauges({"m1": 10, "m2": 5}, workers) for sample in family.samples}
    assert values[("inference_model_backlog_per_ready_process", "m1")] == (10 + 4 + 6) / 2
    assert values[("inference_model_backlog_per_ready_process", "m2")] == 5
    assert (values[("inference_model_running", "m1")], values[("inference_model_ready_processes", "m2")]) == (10, 0)

    lists = ["gauge-test.high", "gauge-test.low", "gauge-test.normal\x06\x163", "gauge-test.low\x06\x169"]
    try:
        for n, name in enumerate(lists, start=1):
            redis_client.rpush(name, *[b"m"] * n)
        depths = tracking.queue_depths(redis_client, ["gauge-test"], PRIORITIES)
        assert tracking.queued_by_model(redis_client, depths) == {"gauge-test": 1 + 2 + 3 + 4}
    finally:
        redis_client.delete(*lists)


def test_the_autoscaling_gauges_see_a_paused_workers_queue(api, redis_client, worker_ids):
    from inference.submit import submission, waiting

    def successes() -> float:
        return sum(value for (name, labels), value in scrape(api).items()
                   if name == "inference_requests_total" and ("model", "efficientnet") in labels and ("outcome", "success") in labels)

    counted_before = successes()
    with paused(worker_ids["efficientnet"], "efficientnet.high", "efficientnet.normal", "efficientnet.low"):
        ids = [submission.submit(redis_client, image_b64=image_b64("chelsea.jpg"), model="efficientnet", priority=p).job["request_id"]
               for p in ("high", "low", "low")]
        metrics = scrape(api)
        assert metrics[("inference_model_queued", (("model", "efficientnet"),))] == 3
        ready = metrics[("inference_model_ready_processes", (("model", "efficientnet"),))]
        held = metrics[("inference_model_running", (("model", "efficientnet"),))]
        assert ready >= 1
        assert metrics[("inference_model_backlog_per_ready_process", (("model", "efficientnet"),))] == (3 + held) / ready
    for request_id in ids:
        assert waiting.wait_for(redis_client, request_id, 60)["status"] == "success"
    # Counted a moment after their results: wait, so that no later test sees them counted in its own
    # window (test_seed_stats once read two requests where it had sent one).
    wait_until(lambda: successes() - counted_before >= 3, 10, what="the three requests counted")


def test_seed_stats(api):
    settled(lambda: get(api, "/v1/stats").json()["requests_total"])  # earlier tests' requests all counted
    before = get(api, "/v1/stats").json()
    classify(api, "resnet18")
    def counted():  # a moment after the answer: the worker records metrics once the result is stored
        now = get(api, "/v1/stats").json()
        return now if now["requests_total"] > before["requests_total"] else None

    after = wait_until(counted, 10, what="the request counted")
    assert after["requests_total"] == before["requests_total"] + 1
    assert after["requests_success"] == before["requests_success"] + 1
    assert after["workers_active"] == len(MODELS)
    assert 0 < after["p50_latency"] <= after["p95_latency"] <= after["p99_latency"]
    assert after["avg_latency"] > 0 and after["uptime"] > 0 and after["queue_size"] >= 0


def test_workers_status_reports_load_and_counts(api):
    classify(api, "mobilenet")

    def counted():  # each API process refreshes its worker view every WORKER_CACHE_SECONDS
        workers = {w["model"]: w for w in get(api, "/workers/status").json()["workers"]}
        # Counted from its start; still `running` for a moment after its result is out (ack, metrics).
        done = workers["mobilenet"]["processed"] >= 1 and workers["mobilenet"]["running"] == 0
        return workers if done else None

    mobilenet = wait_until(counted, 15, interval=0.5, what="the request in the worker's counts, and done")["mobilenet"]
    assert mobilenet["status"] == "healthy" and mobilenet["state"] == "ready"
    from inference.cli.launch import celery_argv
    from inference.core.settings import Settings

    argv = celery_argv(Settings(worker_config="mobilenet"))  # the worker's task threads (or pool processes)
    assert mobilenet["load"] == 0 and mobilenet["concurrency"] == int(argv[argv.index("--concurrency") + 1])
    assert mobilenet["processed"] >= 1 and mobilenet["failed"] >= 0
    assert mobilenet["host"] and time.time() - datetime.fromisoformat(mobilenet["last_heartbeat"]).timestamp() < 10
    assert mobilenet["weights"] == "random" and mobilenet["device"] == "cpu"


def test_workers_do_not_consume_each_others_heartbeats(api, redis_client):
    """No gossip (inference/worker/consumer.py): a worker event reaches no worker. With it, each
    of the suite's four workers took every heartbeat any of them sent."""
    from inference.core.celery_app import app

    assert get(api, "/workers/status").json()["ready"] == len(MODELS)  # they run, and hear broadcasts
    db = redis_client.connection_pool.connection_kwargs.get("db", 0)
    listeners = redis_client.publish(f"/{db}.{app.conf.event_exchange}/worker.heartbeat", b"{}")
    assert listeners == 0


def test_request_id_reaches_the_worker_log(api):
    """The worker's line per request, written once the result is out (tasks.count_success), still
    in the task's context: it carries the request id."""
    request_id = classify(api, "efficientnet")["request_id"]
    logs = LOG_DIR.glob("worker-efficientnet-test-*.log")

    def logged():
        return any(f"request_id={request_id}" in line and f"request {request_id} (1 image(s)) classified by efficientnet in" in line
                   for path in logs for line in path.read_text(errors="replace").splitlines())

    logs = list(logs)
    wait_until(logged, 5, what="the request id in the worker log")


def test_an_answer_that_is_not_a_success_leaves_a_line_without_the_access_log(api):
    """API_ACCESS_LOG is off by default: a success leaves the worker's line, a refusal the API's own."""
    unknown = uuid.uuid4().hex
    assert get(api, f"/v1/inference/{unknown}").status_code == 404
    log = LOG_DIR / "api.log"
    wait_until(lambda: f"GET /v1/inference/{unknown} answered 404 not_found" in log.read_text(errors="replace"), 5,
               what="the refusal in the API's log")
    assert "granian.access" not in log.read_text(errors="replace")


def test_json_log_lines_carry_the_request_id():
    from inference.core.logging_setup import JsonFormatter

    record = logging.LogRecord("inference", logging.INFO, __file__, 1, "queued %s", ("x",), None)
    record.request_id = "req-1"
    entry = json.loads(JsonFormatter().format(record))
    assert entry["message"] == "queued x" and entry["request_id"] == "req-1" and entry["level"] == "INFO"
