"""The seed's users keep working: its response shapes, field by field against the examples in its
README, and its own Streamlit dashboard (tests/seed/dashboard.py, unchanged) run headless
against this API with every panel filled."""

from __future__ import annotations

import re
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.helpers import MODELS, PROMETHEUS_ACCEPT, image_b64, paused, repo_root
from tests.system import wait_until

pytestmark = pytest.mark.e2e
SEED_DASHBOARD = Path(__file__).parent / "seed" / "dashboard.py"


def iso_utc(text: str) -> datetime:
    """A timestamp as the seed's README shows them ("2024-01-01T10:00:00Z"): ISO-8601, in UTC."""
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?Z", text), text
    return datetime.fromisoformat(text)


def get(api, path, **kw):
    response = api.get(api.base_url + path, timeout=30, **kw)
    assert response.status_code == 200, response.text
    return response.json()


@pytest.fixture(scope="module")
def served(api) -> int:
    """A few finished requests (the seed's synchronous POST /inference), so that counts are not 0."""
    for model in ("resnet18", "squeezenet", "mobilenet"):
        response = api.post(f"{api.base_url}/inference", json={"data": image_b64(), "model_type": model, "priority": "high"}, timeout=60)
        assert response.status_code == 200, response.text
        body = response.json()
        assert {"request_id", "status", "predictions", "worker_id", "processing_time", "timestamp"} <= set(body)
        assert body["status"] == "success" and {"class", "confidence"} <= set(body["predictions"][0])
        assert abs(iso_utc(body["timestamp"]).timestamp() - datetime.now(UTC).timestamp()) < 60
    return 3


def test_health_in_the_seeds_shape(api, served):
    body = get(api, "/health")
    assert body["status"] in ("healthy", "degraded", "unhealthy")
    assert abs(iso_utc(body["timestamp"]).timestamp() - datetime.now(UTC).timestamp()) < 5
    stats = body["stats"]
    assert stats["workers_active"] == len(MODELS)
    assert stats["requests_total"] >= served and stats["requests_success"] >= served
    assert stats["requests_total"] >= stats["requests_success"] + stats["requests_failed"]
    assert isinstance(stats["avg_latency"], float) and 0 < stats["avg_latency"] < 30  # seconds, as the seed's 0.15


def test_workers_status_in_the_seeds_shape(api, served):
    def counted():  # each API process refreshes its view of the workers every WORKER_CACHE_SECONDS
        body = get(api, "/workers/status")
        processed = {model: sum(w["processed"] for w in body["workers"] if w["model"] == model) for model in MODELS}
        # Each model `served` sent a request to counts it (another test's requests may have filled the others' counts).
        return body if all(processed[model] >= 1 for model in ("resnet18", "squeezenet", "mobilenet")) else None

    body = wait_until(counted, 15, interval=0.5, what="the requests in the workers' counts")
    assert body["total_active"] == len(MODELS) and body["total_requests"] >= served
    assert {w["model"] for w in body["workers"]} == set(MODELS)
    for worker in body["workers"]:
        assert worker["id"] == worker["worker_id"] and worker["status"] == "healthy"
        assert isinstance(worker["load"], float | int) and 0 <= worker["load"] <= 1
        heartbeat = iso_utc(worker["last_heartbeat"]).timestamp()
        assert abs(heartbeat - datetime.now(UTC).timestamp()) < 30  # the worker's own clock, at its last answer
        assert re.fullmatch(rf"http://[\w.-]+:\d+/worker/{re.escape(worker['id'])}", worker["url"]), worker["url"]  # Flower's page
        assert worker["errors"] == worker["failed"] and isinstance(worker["avg_latency"], float)
    resnet = max((w for w in body["workers"] if w["model"] == "resnet18"), key=lambda w: w["processed"])
    assert resnet["processed"] >= 1 and 0 < resnet["avg_latency"] < 30_000  # ms, as the seed's dashboard shows it


def test_queue_status_in_the_seeds_shape(api, worker_ids):
    queues = [f"efficientnet.{p}" for p in ("high", "normal", "low")]
    with paused(worker_ids["efficientnet"], *queues):
        for priority, count in (("high", 1), ("normal", 2), ("low", 3)):
            for _ in range(count):
                response = api.post(f"{api.base_url}/v1/inference", json={"data": image_b64(), "model_type": "efficientnet",
                                                                          "priority": priority}, timeout=30)
                assert response.status_code == 202
        body = get(api, "/queue/status")
        assert (body["high_priority"], body["normal_priority"], body["low_priority"]) == (1, 2, 3)
        assert body["size"] == 6 and body["max_size"] == 1000
    wait_until(lambda: get(api, "/queue/status")["size"] == 0, 60, what="the queue drained")


def test_metrics_json_for_json_clients_and_prometheus_for_scrapers(api, served):
    body = get(api, "/metrics")  # requests' Accept: */*, as the seed's dashboard sends it
    for field in ("requests_total", "requests_success", "requests_failed", "workers_active", "queue_size"):
        assert isinstance(body[field], int), field
    assert body["requests_total"] >= served and 0 < body["success_rate"] <= 1
    assert 0 < body["latency_p50"] <= body["latency_p99"] and body["latency_avg"] > 0  # ms
    assert abs(body["latency_p50"] - 1000 * body["p50_latency"]) < 1e-3
    assert body["avg_latency"] > 0 and body["uptime"] > 0
    assert get(api, "/metrics", headers={"Accept": "application/json"}).keys() == body.keys()
    # Prometheus, in its text format and in OpenMetrics, by what it names in Accept.
    text = api.get(f"{api.base_url}/metrics", headers=PROMETHEUS_ACCEPT, timeout=30)
    assert text.headers["Content-Type"].startswith("text/plain")
    names = {family.name for family in text_string_to_metric_families(text.text)}
    assert "inference_requests" in names
    open_metrics = api.get(f"{api.base_url}/metrics", timeout=30, headers={
        "Accept": "application/openmetrics-text;version=1.0.0;q=0.5,text/plain;version=0.0.4;q=0.3,*/*;q=0.2"})
    assert open_metrics.headers["Content-Type"].startswith("application/openmetrics-text") and open_metrics.text.endswith("# EOF\n")
    assert api.get(f"{api.base_url}/metrics?format=prometheus", timeout=30).headers["Content-Type"].startswith("text/plain")
    assert api.get(f"{api.base_url}/metrics?format=xml", timeout=30).status_code == 400


def test_the_seeds_dashboard_shows_every_panel(api, worker_ids, served):
    """tests/seed/dashboard.py as the seed ships it, pointed at this API, its Auto Refresh off
    (in its code the refresh loop reruns before the main panels are drawn), with requests waiting
    in the queue: no exception, and every panel shows this system's numbers."""
    from streamlit.testing.v1 import AppTest

    source = SEED_DASHBOARD.read_text()
    assert source.count('"http://localhost:8000"') == 1 and source.count('st.checkbox("Auto Refresh", value=True)') == 1
    source = source.replace('"http://localhost:8000"', repr(api.base_url)).replace(
        'st.checkbox("Auto Refresh", value=True)', 'st.checkbox("Auto Refresh", value=False)')
    queues = [f"squeezenet.{p}" for p in ("high", "normal", "low")]
    with paused(worker_ids["squeezenet"], *queues):
        for priority in ("high", "low", "low"):
            response = api.post(f"{api.base_url}/v1/inference", json={"data": image_b64(), "model_type": "squeezenet",
                                                                      "priority": priority}, timeout=30)
            assert response.status_code == 202
        app = AppTest.from_string(source, default_timeout=60)
        app.run()
    wait_until(lambda: get(api, "/queue/status")["size"] == 0, 60, what="the queue drained")

    assert not app.exception, [e.message for e in app.exception]
    shown = {metric.label: metric.value for metric in app.metric}
    assert shown["System Status"] == "🟢 HEALTHY"
    assert shown["Active Workers"] == str(len(MODELS))
    assert int(shown["Total Requests"]) >= served
    assert 0 < float(shown["Success Rate"].rstrip("%")) <= 100
    assert (shown["Total Queued"], shown["High Priority"], shown["Normal Priority"], shown["Low Priority"]) == ("3", "1", "0", "2")
    assert shown["Queue Size"] == "3"
    # The latency bars, the success/failure pie, the worker charts and the queue bars: all drawn.
    assert len(app.get("plotly_chart")) == 4
    assert not [i.value for i in app.info if "No " in i.value] and not app.warning  # no "No latency data", "No workers"
    cards = [m.value for m in app.markdown if "Processed:" in m.value]
    assert len(cards) == len(MODELS)
    for model, worker_id in worker_ids.items():
        card = next(c for c in cards if worker_id in c)
        assert f"<strong>Model:</strong> {model}" in card and "🟢" in card
        assert re.search(r"<strong>Load:</strong> \d+\.\d%", card) and re.search(r"<strong>Avg Latency:</strong> \d+\.\dms", card)


def test_the_seeds_commands_are_here():
    """make install, make reset, make docker-up/-down and ./start_all.sh exist and say what they do;
    the MIT license as the seed's; the resilience scenarios run as a script."""
    root = repo_root()
    listed = subprocess.run(["make", "-n", "install", "reset", "docker-up", "docker-down"], cwd=root, capture_output=True, text=True)
    assert listed.returncode == 0, listed.stderr
    assert "docker compose up" in listed.stdout and "docker compose down" in listed.stdout
    assert (root / "start_all.sh").stat().st_mode & 0o111
    assert subprocess.run(["bash", "-n", str(root / "start_all.sh")]).returncode == 0
    assert (root / "LICENSE").read_text().startswith("MIT License")
    usage = subprocess.run([sys.executable, "tests/test_resilience.py", "--help"], cwd=root, capture_output=True, text=True, timeout=60)
    assert usage.returncode == 0 and "resilience" in usage.stdout.lower()


def test_seed_configuration_names():
    """The seed's WORKER_TIMEOUT=30 works alone (VISIBILITY_TIMEOUT follows it); its other names map."""
    env = {"WORKER_TIMEOUT": "30", "HEALTH_CHECK_INTERVAL": "5", "METRICS_WINDOW": "120", "BATCH_TIMEOUT": "0.02"}
    code = ("from inference.core.settings import Settings; s = Settings(); "
            "print(s.worker_timeout, s.visibility_timeout, s.worker_cache_seconds, s.metrics_window, s.max_batch_delay_ms)")
    out = subprocess.run([sys.executable, "-c", code], cwd=repo_root(), capture_output=True, text=True, timeout=60,
                         env={"PATH": "/usr/bin:/bin", **env})
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["30", "40", "5.0", "120.0", "20.0"]
    refused = subprocess.run([sys.executable, "-c", code], cwd=repo_root(), capture_output=True, text=True, timeout=60,
                             env={"PATH": "/usr/bin:/bin", **env, "VISIBILITY_TIMEOUT": "20"})
    assert refused.returncode != 0 and "VISIBILITY_TIMEOUT (20) must exceed" in refused.stderr
