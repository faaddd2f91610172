"""Shared fixtures. The whole suite talks to its own real Valkey server on a free port.

The server is started in `pytest_configure`, before any test module imports `inference`,
because the Celery configuration reads REDIS_URL at import time.
"""

from __future__ import annotations

import gc
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import requests

from tests.helpers import MODELS, image_b64, suite_processes
from tests.system import LOG_DIR, start_api, start_redis, start_worker, wait_for_ready_workers


def pytest_configure(config):
    shutil.rmtree(LOG_DIR, ignore_errors=True)  # logs of this run only
    os.environ["MODEL_WEIGHTS"] = "random"  # no weights can be downloaded on the build machines
    os.environ.setdefault("TORCH_THREADS", "1")  # four workers share two cores
    os.environ.setdefault("LOG_LEVEL", "INFO")
    os.environ["CALLBACK_ALLOWED_HOSTS"] = "127.0.0.1"  # the callback tests' receivers (tests/test_callbacks.py)
    os.environ["REDIS_URL"] = start_redis(suite_processes, dict(os.environ))
    # A suite stopped with SIGTERM (`kill`, a CI timeout) stops its servers and workers as Ctrl-C
    # does: pytest unwinds on KeyboardInterrupt and calls pytest_unconfigure. Killed outright, a
    # suite had left its Valkey, workers and API running for an hour, beside the next benchmark.
    signal.signal(signal.SIGTERM, _interrupt)


def _interrupt(signum, frame):
    raise KeyboardInterrupt(f"signal {signal.Signals(signum).name}")


def pytest_unconfigure(config):
    gc.collect()  # Celery clients' pending results unsubscribe while Redis still answers
    suite_processes.stop_all()


@pytest.fixture(scope="session")
def redis_url() -> str:
    return os.environ["REDIS_URL"]


@pytest.fixture(scope="session")
def model_cache() -> Path:
    """The workers' MODEL_CACHE_DIR, for tests that load a model in this process: converted there
    once, by the suite's system or by the first such test (a test of the conversion itself takes
    a folder of its own)."""
    from inference.core.settings import get_settings

    return Path(get_settings().model_cache_dir).resolve()


@pytest.fixture(scope="session")
def redis_client(redis_url):
    import redis

    return redis.Redis.from_url(redis_url)


@pytest.fixture(scope="session")
def celery_client(redis_url):
    """A plain Celery client, as another service would hold one: sends tasks by name."""
    from celery import Celery

    return Celery(broker=redis_url, backend=redis_url)


@pytest.fixture(scope="session")
def system():
    """The running system: one worker per model and the API. Yields the API's base URL."""
    env = dict(os.environ)
    # The models converted to OpenVINO first, in one process: in a fresh checkout each worker
    # would convert its own in a child, four imports of torch at once on two cores (42 s to ready
    # against 28; two processes of two models each took 33).
    converted = subprocess.run([sys.executable, "-m", "inference.worker.convert", *MODELS], env=env, capture_output=True, text=True, timeout=600)
    assert converted.returncode == 0, converted.stderr[-3000:]
    for model in MODELS:
        start_worker(suite_processes, model, env)
    base_url = start_api(suite_processes, env)
    wait_for_ready_workers(base_url, len(MODELS))
    return base_url


@pytest.fixture(scope="session")
def api(system):
    session = requests.Session()
    session.base_url = system
    return session


@pytest.fixture
def start_extra_api(system):
    """Start another API process with some settings changed; stopped after the test."""
    names = []

    def start(**overrides) -> requests.Session:
        name = f"api-extra-{len(suite_processes.procs)}"
        env = {**os.environ, "API_WORKERS": "1", **{k: str(v) for k, v in overrides.items()}}
        session = requests.Session()
        session.base_url = start_api(suite_processes, env, name=name)
        session.server_process = suite_processes.procs[name]  # the server's main process
        names.append(name)
        return session

    yield start
    for name in names:
        # Quick shutdown: SIGKILL ends every process of the server at once, where a graceful stop
        # lets each finish what it serves. (SIGQUIT did too when these tests ran alone, but in
        # the whole suite two of these servers outlived it until the 15 s stop timeout.)
        suite_processes.stop(name, signal.SIGKILL)


@pytest.fixture
def api_with(system):
    """Flask's test client for an API built in this process with some settings changed
    (`create_app(Settings(...))`), served by the suite's Valkey and workers: no server to start."""

    apps = []

    def build(**overrides):
        from api import create_app
        from inference.core.settings import Settings

        apps.append(create_app(Settings(**overrides)))
        return apps[-1].test_client()

    yield build
    for app in apps:
        app.extensions["workers"].close()


@pytest.fixture(scope="session")
def worker_ids(system) -> dict[str, str]:
    """model -> the Celery node name of its test worker."""
    body = requests.get(f"{system}/workers/status", timeout=10).json()
    return {w["model"]: w["worker_id"] for w in body["workers"]}


@pytest.fixture
def chelsea_b64() -> str:
    return image_b64("chelsea.jpg")
