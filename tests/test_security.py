"""OpenAPI contract and docs, API keys."""

from __future__ import annotations

import re
import time

import pytest
from openapi_spec_validator import validate

from api.auth import key_is_valid
from tests.conftest import image_b64

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


def test_api_keys(start_extra_api):
    secured = start_extra_api(API_KEYS="alpha-key, beta-key")
    url = secured.base_url
    body = {"data": image_b64(), "model_type": "squeezenet"}
    refused = secured.post(f"{url}/v1/inference", json=body, timeout=10)
    assert refused.status_code == 401 and refused.json()["error"]["code"] == "unauthorized"
    assert refused.headers["WWW-Authenticate"].startswith("Bearer")
    assert secured.post(f"{url}/v1/inference", json=body, headers={"X-API-Key": "wrong"}, timeout=10).status_code == 401
    for path in ("/health", "/metrics", "/workers/status", "/v1/stats", "/queue/status"):
        assert secured.get(url + path, timeout=10).status_code == 401, path
    assert secured.get(f"{url}/health/live", timeout=10).status_code == 200

    ok = secured.post(f"{url}/v1/inference", params={"wait": 30}, json=body, headers={"Authorization": "Bearer alpha-key"}, timeout=60)
    assert ok.status_code == 200 and ok.json()["status"] == "success"
    assert secured.get(f"{url}/health", headers={"X-API-Key": "beta-key"}, timeout=10).status_code == 200


def test_key_comparison():
    assert key_is_valid("b", ["a", "b"]) and not key_is_valid("", ["a"]) and not key_is_valid("ab", ["a", "b"])


def test_per_key_rate_limit(start_extra_api):
    limited = start_extra_api(API_KEYS="one,two", RATE_LIMIT_PER_MINUTE=3)
    url, one, two = limited.base_url, {"X-API-Key": "one"}, {"X-API-Key": "two"}
    if 60 - time.time() % 60 < 5:
        time.sleep(6)  # keep the four requests inside one minute window
    assert [limited.get(f"{url}/queue/status", headers=one, timeout=10).status_code for _ in range(3)] == [200, 200, 200]
    refused = limited.get(f"{url}/queue/status", headers=one, timeout=10)
    assert refused.status_code == 429 and refused.json()["error"]["code"] == "rate_limited"
    assert 1 <= int(refused.headers["Retry-After"]) <= 60
    assert limited.get(f"{url}/queue/status", headers=two, timeout=10).status_code == 200  # another key is unaffected
    assert limited.get(f"{url}/health/live", timeout=10).status_code == 200
