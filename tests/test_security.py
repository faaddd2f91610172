"""OpenAPI contract and docs, API keys, Redis password, Flower login."""

from __future__ import annotations

import os
import re
import stat
import sys
import time
from urllib.parse import urlparse

import pytest
import redis
import requests
from openapi_spec_validator import validate

from api.auth import key_is_valid
from tests.helpers import image_b64
from tests.system import Processes, free_port, wait_until

pytestmark = pytest.mark.e2e


def test_openapi_is_valid_and_covers_every_route(api):
    spec = api.get(f"{api.base_url}/openapi.json", timeout=10).json()
    validate(spec)
    for path in ("/v1/inference", "/v1/inference/{request_id}", "/v1/batch_inference", "/v1/batch/{batch_id}", "/inference",
                 "/batch_inference", "/health", "/health/live", "/health/ready", "/workers/status", "/queue/status", "/metrics"):
        assert path in spec["paths"], path
    request = spec["components"]["schemas"]["InferenceRequest"]
    assert {"data", "model_type", "priority", "top_k", "timeout_ms", "request_id"} <= set(request["properties"])


def test_swagger_ui_is_served_locally(api):
    page = api.get(f"{api.base_url}/docs", timeout=10)
    assert page.status_code == 200
    assets = re.findall(r'(?:src|href)="([^"]+)"', page.text)
    assert assets and all(a.startswith("/docs/assets/") for a in assets)
    for asset in assets:
        assert api.get(api.base_url + asset, timeout=10).status_code == 200


def test_api_keys(api_with):
    secured = api_with(api_keys="alpha-key, beta-key")
    body = {"data": image_b64(), "model_type": "squeezenet"}
    refused = secured.post("/v1/inference", json=body)
    assert refused.status_code == 401 and refused.json["error"]["code"] == "unauthorized"
    assert refused.headers["WWW-Authenticate"].startswith("Bearer")
    assert secured.post("/v1/inference", json=body, headers={"X-API-Key": "wrong"}).status_code == 401
    for path in ("/health", "/metrics", "/workers/status", "/v1/stats", "/queue/status", "/openapi.json", "/v1/models"):
        assert secured.get(path).status_code == 401, path
    assert secured.get("/health/live").status_code == 200
    assert secured.get("/openapi.json", headers={"X-API-Key": "beta-key"}).status_code == 200

    ok = secured.post("/v1/inference", query_string={"wait": 30}, json=body, headers={"Authorization": "Bearer alpha-key"})
    assert ok.status_code == 200 and ok.json["status"] == "success"
    assert secured.get("/health", headers={"X-API-Key": "beta-key"}).status_code == 200


def test_key_comparison():
    assert key_is_valid("b", ["a", "b"]) and not key_is_valid("", ["a"]) and not key_is_valid("ab", ["a", "b"])


def test_per_key_rate_limit(api_with):
    limited = api_with(api_keys="one,two", rate_limit_per_minute=3)
    one, two = {"X-API-Key": "one"}, {"X-API-Key": "two"}
    if 60 - time.time() % 60 < 5:
        time.sleep(6)  # keep the four requests inside one minute window
    assert [limited.get("/queue/status", headers=one).status_code for _ in range(3)] == [200, 200, 200]
    refused = limited.get("/queue/status", headers=one)
    assert refused.status_code == 429 and refused.json["error"]["code"] == "rate_limited"
    assert 1 <= int(refused.headers["Retry-After"]) <= 60
    assert limited.get("/queue/status", headers=two).status_code == 200  # another key is unaffected
    assert limited.get("/health/live").status_code == 200


def test_redis_refuses_clients_without_the_password(redis_url):
    """The suite's Redis has a password (tests/system.py), so every test that passes proves the API
    and the workers send it; here, that it is really required."""
    parsed = urlparse(redis_url)
    assert parsed.password
    with pytest.raises(redis.AuthenticationError):
        redis.Redis(host=parsed.hostname, port=parsed.port).ping()


def test_flower_asks_for_a_login_reaches_redis_and_turns_task_events_on(system, api, tmp_path):
    """Told to (FLOWER_ENABLE_EVENTS), Flower turns the workers' task events on and lists their
    tasks, the newest FLOWER_MAX_TASKS of them."""
    procs, port = Processes(), free_port()
    env = {**os.environ, "FLOWER_PORT": str(port), "FLOWER_DB": str(tmp_path / "flower.db"), "FLOWER_ENABLE_EVENTS": "true",
           "FLOWER_MAX_TASKS": "3"}
    env.pop("FLOWER_BASIC_AUTH", None)
    procs.start("flower", [sys.executable, "-m", "inference.cli.flower"], env)
    try:
        url = f"http://127.0.0.1:{port}"
        wait_until(lambda: requests.get(url, timeout=2).status_code, 30, what="Flower")
        assert requests.get(url, timeout=5).status_code == 401
        assert requests.get(f"{url}/api/workers", timeout=5).status_code == 401
        credentials = tmp_path / "flower-credentials"
        assert stat.S_IMODE(credentials.stat().st_mode) == 0o600
        user, password = credentials.read_text().strip().split(":", 1)
        assert len(password) >= 16
        assert requests.get(url, auth=(user, "wrong"), timeout=5).status_code == 401
        # Flower asks the workers over the password-protected broker.
        workers = requests.get(f"{url}/api/workers", params={"refresh": 1}, auth=(user, password), timeout=30).json()
        assert {name.split("-test-")[0] for name in workers} >= {"mobilenet", "resnet18", "efficientnet", "squeezenet"}
        # Workers start without task events (WORKER_TASK_EVENTS); Flower, told to (FLOWER_ENABLE_EVENTS),
        # turns them on, then lists tasks.
        sent: list[str] = []

        def listed() -> bool:
            body = {"data": image_b64(), "model_type": "squeezenet"}
            sent.append(api.post(f"{api.base_url}/v1/inference?wait=20", json=body, timeout=30).json()["request_id"])
            tasks = requests.get(f"{url}/api/tasks", auth=(user, password), timeout=10).json()
            return any(request_id in tasks for request_id in sent)

        wait_until(listed, 60, interval=1.0, what="Flower to list a task once it turned the workers' events on")

        def keeps_the_newest() -> bool:  # FLOWER_MAX_TASKS: the newest 3 of the requests it saw
            body = {"data": image_b64("chelsea.jpg"), "model_type": "squeezenet"}
            sent.append(api.post(f"{api.base_url}/v1/inference?wait=10", json=body, timeout=30).json()["request_id"])
            kept = requests.get(f"{url}/api/tasks", auth=(user, password), timeout=10).json()
            assert len(kept) <= 3, len(kept)
            return len(kept) == 3 and sent[-1] in {task_id.split("~")[-1] for task_id in kept}

        wait_until(keeps_the_newest, 60, interval=0.5, what="Flower to keep the newest 3 tasks")
    finally:
        procs.stop_all()
