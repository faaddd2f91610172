"""Shared fixtures. The whole suite talks to its own real Valkey server on a free port.

The server is started in `pytest_configure`, before any test module imports `inference`,
because the Celery configuration reads REDIS_URL at import time.
"""

from __future__ import annotations

import base64
import gc
import io
import os
import shutil
import signal
from pathlib import Path

import pytest
import requests
from PIL import Image

from tests.system import LOG_DIR, TESTDATA, Processes, start_api, start_redis, start_worker, wait_for_ready_workers, wait_until

MODELS = ("mobilenet", "resnet18", "efficientnet", "squeezenet")
_processes = Processes()


def pytest_configure(config):
    shutil.rmtree(LOG_DIR, ignore_errors=True)  # logs of this run only
    os.environ["MODEL_WEIGHTS"] = "random"  # no weights can be downloaded on the build machines
    os.environ.setdefault("TORCH_THREADS", "1")  # four workers share two cores
    os.environ.setdefault("LOG_LEVEL", "INFO")
    os.environ["REDIS_URL"] = start_redis(_processes, dict(os.environ))


def pytest_unconfigure(config):
    gc.collect()  # Celery clients' pending results unsubscribe while Redis still answers
    _processes.stop_all()


@pytest.fixture(scope="session")
def redis_url() -> str:
    return os.environ["REDIS_URL"]


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


@pytest.fixture
def start_extra_api(system):
    """Start another API process with some settings changed; stopped after the test."""
    names = []

    def start(**overrides) -> requests.Session:
        name = f"api-extra-{len(_processes.procs)}"
        env = {**os.environ, "API_WORKERS": "1", **{k: str(v) for k, v in overrides.items()}}
        session = requests.Session()
        session.base_url = start_api(_processes, env, name=name)
        names.append(name)
        return session

    yield start
    for name in names:
        # Quick shutdown (gunicorn's SIGQUIT): a graceful one waits GRACEFUL_TIMEOUT for the idle
        # keep-alive connections the test's sessions still hold.
        _processes.stop(name, signal.SIGQUIT)


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


def pool_pids(api: requests.Session, model: str) -> list[int]:
    """The pool processes of `model`'s workers: unchanged pids mean no process crashed."""
    workers = api.get(f"{api.base_url}/workers/status", timeout=10).json()["workers"]
    return [p["pid"] for w in workers if w["model"] == model for p in w["processes"]]


def wait_for_pictures_deleted(redis_client, request_id: str) -> None:
    """A request's pictures stored by reference are deleted a moment after its result is stored."""
    wait_until(lambda: not redis_client.keys(f"inference:image:{request_id}:*"), 10, what=f"the pictures of {request_id} deleted")


def queued_job(redis_client) -> str:
    """A job record with no task behind it: it stays queued."""
    import json
    import time

    from inference.core import keys
    from inference.submit import submission

    request_id = submission.new_request_id()
    job = {"request_id": request_id, "model": "resnet18", "priority": "normal", "submitted_at": time.time()}
    redis_client.set(keys.job_key(request_id), json.dumps(job), ex=60)
    return request_id


def image_bytes(name: str) -> bytes:
    return (TESTDATA / name).read_bytes()


def image_b64(name: str = "chelsea.jpg") -> str:
    return base64.b64encode(image_bytes(name)).decode()


def encoded(img: Image.Image, fmt: str = "JPEG", **save) -> bytes:
    out = io.BytesIO()
    img.save(out, fmt, **save)
    return out.getvalue()


def rotated_jpeg() -> bytes:
    from inference.core.jpeg_headers import ORIENTATION_TAG  # not at import: `inference` reads REDIS_URL (see above)

    exif = Image.Exif()
    exif[ORIENTATION_TAG] = 6  # "rotate 90 degrees to display"
    return encoded(Image.open(io.BytesIO(image_bytes("chelsea.jpg"))), exif=exif)


def header_variants() -> dict[str, bytes]:
    """JPEGs (and not) whose headers differ in every way the fast reader looks at."""
    from inference.core.jpeg_headers import ORIENTATION_TAG

    cat = Image.open(io.BytesIO(image_bytes("chelsea.jpg")))
    variants = {"cat": image_bytes("chelsea.jpg"), "astronaut": image_bytes("astronaut.jpg"),
                "grey": encoded(cat.convert("L")), "cmyk": encoded(cat.convert("CMYK")), "png": encoded(cat, "PNG"),
                "progressive": encoded(cat, progressive=True), "comment": encoded(cat, comment=b"a cat"),
                "restarts": encoded(cat, restart_marker_blocks=4), "icc": encoded(cat, icc_profile=b"\0" * 300),
                "xmp_rotated": encoded(cat, xmp=b'<x:xmpmeta><rdf:Description tiff:Orientation="6"/></x:xmpmeta>'),
                "tiny": encoded(cat.resize((1, 1))), "truncated": image_bytes("chelsea.jpg")[:300], "empty": b""}
    for orientation in range(1, 9):
        exif = Image.Exif()
        exif[ORIENTATION_TAG] = orientation
        exif[0x010F] = "a camera"  # Make: the orientation is not the only entry
        variants[f"exif_{orientation}"] = encoded(cat, exif=exif)
    exif = Image.Exif()
    exif[0x010F] = "a camera"
    variants["exif_without_orientation"] = encoded(cat, exif=exif)
    return variants


@pytest.fixture
def chelsea_b64() -> str:
    return image_b64("chelsea.jpg")


def repo_root() -> Path:
    return Path(__file__).resolve().parent.parent
