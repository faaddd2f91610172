"""Helpers the tests share (fixtures are in conftest.py; the processes of the system under test in system.py)."""

from __future__ import annotations

import base64
import io
import time
from contextlib import contextmanager
from functools import cache
from pathlib import Path

import requests
from PIL import Image

from tests.system import TESTDATA, Processes, wait_until

MODELS = ("mobilenet", "resnet18", "efficientnet", "squeezenet")
# What Prometheus sends when it scrapes in its text format (/metrics answers JSON to anyone
# who names neither that nor OpenMetrics).
PROMETHEUS_ACCEPT = {"Accept": "text/plain;version=0.0.4;q=0.3,*/*;q=0.2"}
suite_processes = Processes()  # the suite's own Valkey, workers and APIs (started in conftest.py)


def repo_root() -> Path:
    return Path(__file__).resolve().parent.parent


def pool_pids(api: requests.Session, model: str) -> list[int]:
    """The pool processes of `model`'s workers: unchanged pids mean no process crashed."""
    workers = api.get(f"{api.base_url}/workers/status", timeout=10).json()["workers"]
    return [p["pid"] for w in workers if w["model"] == model for p in w["processes"]]


def wait_for_pictures_deleted(redis_client, request_id: str) -> None:
    """A request's pictures stored by reference are deleted a moment after its result is stored."""
    wait_until(lambda: not redis_client.keys(f"inference:image:{request_id}:*"), 10, what=f"the pictures of {request_id} deleted")


def settled(read, timeout: float = 10.0):
    """What `read()` (metrics) gives once it stays the same for longer than a worker may hold
    metrics back: they are sent up to metrics.SEND_EVERY s after a request's result."""
    from inference.core.metrics import SEND_EVERY

    deadline, last = time.monotonic() + timeout, read()
    while time.monotonic() < deadline:
        time.sleep(SEND_EVERY + 0.1)
        now = read()
        if now == last:
            return now
        last = now
    raise AssertionError(f"metrics still changing after {timeout} s: {last}")


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
    from inference.core.jpeg_headers import ORIENTATION_TAG  # not at import: the Celery app reads REDIS_URL (see conftest.py)

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


@contextmanager
def paused(worker_id: str, *queues: str):
    """The worker stops consuming these queues; they are added back, in the same order, after."""
    from inference.core.celery_app import app

    for queue in queues:
        app.control.cancel_consumer(queue, destination=[worker_id], reply=True, timeout=5)
    try:
        yield
    finally:
        for queue in queues:
            app.control.add_consumer(queue, destination=[worker_id], reply=True, timeout=5)


@cache
def large_photo(width: int = 4000, height: int = 3000, orientation: int = 1) -> bytes:
    """A 12-megapixel JPEG, as a phone takes them (the test picture enlarged); `orientation`
    in its EXIF."""
    from inference.core.jpeg_headers import ORIENTATION_TAG  # not at import (see conftest.py)

    exif = Image.Exif()
    exif[ORIENTATION_TAG] = orientation
    photo = Image.open(io.BytesIO(image_bytes("astronaut.jpg"))).convert("RGB").resize((width, height), Image.Resampling.BICUBIC)
    return encoded(photo, quality=92, exif=exif)
