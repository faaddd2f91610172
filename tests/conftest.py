"""Shared fixtures. The whole suite talks to its own real Valkey server on a free port.

The server is started in `pytest_configure`, before any test module imports `inference`,
because the Celery configuration reads REDIS_URL at import time.
"""

from __future__ import annotations

import base64
import os
from pathlib import Path

import pytest
import requests

from tests.system import TESTDATA, Processes, start_api, start_redis, start_worker, wait_for_ready_workers

MODELS = ("mobilenet", "resnet18", "efficientnet", "squeezenet")
_processes = Processes()


def pytest_configure(config):
    os.environ["MODEL_WEIGHTS"] = "random"  # no weights can be downloaded on the build machines
    os.environ.setdefault("TORCH_THREADS", "1")  # four workers share two cores
    os.environ.setdefault("LOG_LEVEL", "INFO")
    os.environ["REDIS_URL"] = start_redis(_processes, dict(os.environ))


def pytest_unconfigure(config):
    _processes.stop_all()


@pytest.fixture(scope="session")
def redis_url() -> str:
    return os.environ["REDIS_URL"]


@pytest.fixture(scope="session")
def redis_client(redis_url):
    import redis

    return redis.Redis.from_url(redis_url)


@pytest.fixture(scope="session")
def system():
    """The running system: one worker per model and the API. Yields the API's base URL."""
    env = dict(os.environ)
    for model in MODELS:
        start_worker(_processes, model, env)
    base_url = start_api(_processes, env)
    wait_for_ready_workers(base_url, len(MODELS))
    return base_url


@pytest.fixture(scope="session")
def api(system):
    session = requests.Session()
    session.base_url = system
    return session


def image_bytes(name: str) -> bytes:
    return (TESTDATA / name).read_bytes()


def image_b64(name: str = "chelsea.jpg") -> str:
    return base64.b64encode(image_bytes(name)).decode()


@pytest.fixture
def chelsea_b64() -> str:
    return image_b64("chelsea.jpg")


def repo_root() -> Path:
    return Path(__file__).resolve().parent.parent
