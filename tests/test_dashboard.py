"""The pages a person opens, in a real browser (Debian's headless Chromium), fed by the running system:
the dashboard, /docs and Flower."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys

import pytest
import requests

from tests.helpers import MODELS, image_b64
from tests.system import LOG_DIR, Processes, free_port, wait_until

pytestmark = pytest.mark.e2e
CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync",
                  "--hide-scrollbars", "--virtual-time-budget=9000"]


@pytest.fixture(scope="module")
def chromium(tmp_path_factory) -> list[str]:
    """The browser, installed from Debian's packages when missing (the test's own setup)."""
    if not shutil.which("chromium"):
        install = ["apt-get", "install", "-y", "-q", "chromium"]
        if subprocess.run(install, capture_output=True, timeout=600).returncode != 0:
            subprocess.run(["apt-get", "update", "-q"], capture_output=True, timeout=600)
            subprocess.run(install, capture_output=True, timeout=600, check=True)
    profile = tmp_path_factory.mktemp("chromium-profile")
    return [shutil.which("chromium"), *CHROMIUM_FLAGS, f"--user-data-dir={profile}"]


@pytest.fixture(scope="module")
def traffic(api):
    """Some finished requests, so that the charts have data to draw."""
    for model in ("resnet18", "squeezenet", "any"):
        response = api.post(f"{api.base_url}/v1/inference", params={"wait": 30}, timeout=60,
                            json={"data": image_b64(), "model_type": model})
        assert response.status_code == 200


def test_dashboard_renders_live_data(api, chromium, traffic):
    page = api.get(f"{api.base_url}/dashboard", timeout=10)
    assert page.status_code == 200 and "<canvas" in page.text
    assert not re.search(r"""(src|href)=["']https?://""", page.text), "the dashboard must not load anything from a CDN"

    # Keep the workers busy while the page polls, so throughput and queue charts move.
    api.post(f"{api.base_url}/v1/batch_inference", json={"images": [image_b64()] * 12, "model_type": "squeezenet"}, timeout=30)
    dom = subprocess.run([*chromium, "--dump-dom", f"{api.base_url}/dashboard"], capture_output=True, text=True, timeout=120).stdout
    polls = int(re.search(r'<body[^>]*data-polls="(\d+)"', dom).group(1))
    assert polls >= 2, "the page polled the API at least twice"
    for chart in ("throughput", "latency", "queues"):
        points = int(re.search(rf'id="{chart}" data-points="(\d+)"', dom).group(1))
        assert points > 0, f"{chart} chart drew no data"
    assert len(re.findall(r'<tr class="worker-row"><td>\w', dom)) == 4
    assert re.search(r'id="health" class="badge (healthy|degraded)"', dom)
    assert "RANDOM weights" in dom  # the random-weights warning is shown

    LOG_DIR.mkdir(parents=True, exist_ok=True)
    screenshot = LOG_DIR / "dashboard.png"
    subprocess.run([*chromium, f"--screenshot={screenshot}", "--window-size=1400,1100", f"{api.base_url}/dashboard"],
                   capture_output=True, timeout=120)
    assert screenshot.exists() and screenshot.stat().st_size > 20_000


def test_docs_page_renders_the_api(api, chromium):
    """/docs in a real browser: Swagger UI draws every operation of /openapi.json (Swagger UI 4
    answered 200 here while it showed only "Unable to render this definition" for OpenAPI 3.1)."""
    dom = subprocess.run([*chromium, "--dump-dom", f"{api.base_url}/docs"], capture_output=True, text=True, timeout=120).stdout
    assert "Unable to render" not in dom
    drawn = set(re.findall(r'data-path="([^"]+)"', dom))
    spec = api.get(f"{api.base_url}/openapi.json", timeout=10).json()
    assert drawn and drawn == set(spec["paths"]), set(spec["paths"]) ^ drawn
    assert re.search(r'class="version"[^>]*>\s*OAS 3\.1', dom)
    LOG_DIR.mkdir(parents=True, exist_ok=True)
    screenshot = LOG_DIR / "docs.png"
    subprocess.run([*chromium, f"--screenshot={screenshot}", "--window-size=1400,1100", f"{api.base_url}/docs"],
                   capture_output=True, timeout=120)
    assert screenshot.exists() and screenshot.stat().st_size > 20_000


def test_flower_page_shows_the_workers_after_its_login(system, api, chromium, tmp_path):
    """Flower (`make run`'s, behind its login, task events left off) in a real browser: its
    workers page lists every model's worker as online, from their heartbeats. Without the login
    it shows nothing of them. (Its task list, with FLOWER_ENABLE_EVENTS: tests/test_security.py.)"""
    procs, port = Processes(), free_port()
    env = {**os.environ, "FLOWER_PORT": str(port), "FLOWER_DB": str(tmp_path / "flower.db"), "FLOWER_BASIC_AUTH": "ops:flower-pw-123"}
    env.pop("FLOWER_ENABLE_EVENTS", None)
    procs.start("flower-browser", [sys.executable, "-m", "inference.cli.flower"], env)
    try:
        url = f"http://127.0.0.1:{port}"
        wait_until(lambda: requests.get(f"{url}/api/workers", params={"refresh": 1}, auth=("ops", "flower-pw-123"),
                                        timeout=10).json(), 60, what="Flower to see the workers")
        refused = subprocess.run([*chromium, "--dump-dom", f"{url}/workers"], capture_output=True, text=True, timeout=120).stdout
        assert "resnet18" not in refused
        dom = subprocess.run([*chromium, "--dump-dom", f"http://ops:flower-pw-123@127.0.0.1:{port}/workers"],
                             capture_output=True, text=True, timeout=120).stdout
        for model in MODELS:
            assert re.search(rf"{model}-test-[^<]*@", dom), f"Flower's page lists no {model} worker"
        assert dom.count("Online") >= len(MODELS)
        LOG_DIR.mkdir(parents=True, exist_ok=True)
        screenshot = LOG_DIR / "flower.png"
        subprocess.run([*chromium, f"--screenshot={screenshot}", "--window-size=1400,900", f"http://ops:flower-pw-123@127.0.0.1:{port}/workers"],
                       capture_output=True, timeout=120)
        assert screenshot.exists() and screenshot.stat().st_size > 20_000
    finally:
        procs.stop_all()
