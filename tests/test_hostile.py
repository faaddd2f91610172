"""Hostile clients against the running system: no request may hurt other users.

Each attack goes through the real API (or straight onto a queue, as another service could send
it) to real workers on a real Redis; after each, an ordinary request to the same model must
answer within its normal time and, where no crash is intended, the worker's pool processes must
be the same processes as before.
"""

from __future__ import annotations

import base64
import io
import json
import os
import socket
import statistics
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import redis
import requests
from celery import Celery
from PIL import Image

from inference.core.errors import vocabulary
from tests import hostile
from tests.helpers import MODELS, encoded, image_b64, image_bytes, pool_pids, queued_job
from tests.system import LOG_DIR, Processes, free_port, start_api, start_redis, start_worker, wait_until

pytestmark = pytest.mark.e2e
VOCABULARY = set(vocabulary())


def b64(raw: bytes) -> str:
    return base64.b64encode(raw).decode()


def classify(api, raw: bytes, model: str = "resnet18", wait: float = 30, **fields) -> requests.Response:
    return api.post(f"{api.base_url}/v1/inference", params={"wait": wait}, timeout=wait + 30,
                    json={"data": b64(raw), "model_type": model, **fields})


def ordinary_seconds(api, model: str = "resnet18", times: int = 3) -> float:
    """Median wall time of an ordinary request (the cat) to `model`, one at a time."""
    took = []
    for _ in range(times):
        started = time.perf_counter()
        response = classify(api, image_bytes("chelsea.jpg"), model)
        assert response.status_code == 200 and response.json()["status"] == "success", response.text
        took.append(time.perf_counter() - started)
    return statistics.median(took)


@pytest.fixture(scope="module")
def normal(api) -> dict:
    """Each model's ordinary request time and pool processes before any attack."""
    ordinary_seconds(api, "resnet18", 2)  # warm
    return {"seconds": ordinary_seconds(api, "resnet18", 5), "pids": pool_pids(api, "resnet18")}


def assert_unharmed(api, normal: dict) -> None:
    """The next ordinary requests answer in their normal time, from the same pool processes."""
    took = ordinary_seconds(api)
    assert took <= 3 * normal["seconds"] + 0.3, f"an ordinary request took {took:.3f} s after the attack (normal {normal['seconds']:.3f} s)"
    assert pool_pids(api, "resnet18") == normal["pids"], "a pool process of resnet18 died"


def leftovers(redis_client, task_id: str) -> list[bytes]:
    """What a request may leave in Redis besides its record, claim and result: none once it ended."""
    return (redis_client.keys(f"inference:image:{task_id}:*") + redis_client.keys(f"inference:starts:{task_id}")
            + [b"in flight"] * sum(redis_client.zscore(key, task_id) is not None for key in redis_client.keys("inference:inflight:*")))


def error_code(response: requests.Response) -> str:
    body = response.json()
    return (body.get("error") or {}).get("code", "")


# -- bounded work per picture -------------------------------------------------------------------

@pytest.mark.parametrize("wide", [True, False], ids=["wide", "tall"])
@pytest.mark.parametrize("fmt", list(hostile.LONGEST_SIDE))
def test_a_sliver_of_a_picture_is_classified_in_bounded_time(api, normal, fmt, wide):
    raw = hostile.sliver(fmt, wide)
    started = time.perf_counter()
    response = classify(api, raw)
    took = time.perf_counter() - started
    assert response.status_code == 200 and response.json()["status"] == "success", response.text
    assert took < 3, f"{fmt} {'wide' if wide else 'tall'}: {took:.2f} s"
    assert_unharmed(api, normal)


def test_a_jpeg_of_many_scans_is_refused_by_the_api_and_by_the_worker(api, normal, redis_client):
    from inference.submit import submission, waiting

    raw = hostile.many_scans(2000, 1000)  # 38 KB, ~4 s to decode
    response = classify(api, raw)
    assert response.status_code == 400 and error_code(response) == "image_too_complex", response.text
    # Straight onto the queue (as another service may send it): the worker refuses it as fast.
    submitted = submission.submit(redis_client, model="resnet18", priority="normal", image=raw)
    started = time.perf_counter()
    status = waiting.wait_for(redis_client, submitted.task_id, 30)
    assert status["status"] == "failed" and status["error"]["code"] == "image_too_complex", status
    assert time.perf_counter() - started < 2
    wait_until(lambda: not leftovers(redis_client, submitted.task_id), 5, what="the request's keys gone")
    assert_unharmed(api, normal)


def test_the_scan_limit_is_the_apps_own(api_with):
    """MAX_JPEG_SCANS as create_app(Settings(...)) sets it, as every other API limit: a progressive
    JPEG of ~10 scans is refused under a limit of 3, and still admitted by the default app."""
    progressive = encoded(Image.new("RGB", (64, 64), (10, 200, 30)), "JPEG", progressive=True)
    body = {"data": base64.b64encode(progressive).decode(), "model_type": "resnet18", "priority": "low"}
    strict = api_with(max_jpeg_scans=3).post("/v1/inference", json=body)
    assert strict.status_code == 400 and strict.get_json()["error"]["code"] == "image_too_complex", strict.get_json()
    assert "more than 3 scans" in strict.get_json()["error"]["message"]
    admitted = api_with().post("/v1/inference", json=body)
    assert admitted.status_code == 202, admitted.get_json()


def test_the_scan_limit_counts_every_scan():
    """The marker search stops at the first scan past the limit, and agrees with a plain count of
    the markers at every limit around it (and for pictures that are not JPEGs)."""
    from inference.core.imaging import START_OF_SCAN, within_scan_limit

    for raw in (hostile.many_scans(64, 1), hostile.many_scans(64, 40)):
        scans = raw.count(START_OF_SCAN)
        for limit in (1, scans - 1, scans, scans + 1, 10 * scans):
            assert within_scan_limit(raw, limit) == (scans <= limit), (scans, limit)
    assert within_scan_limit(encoded(Image.new("RGB", (8, 8)), "PNG") + START_OF_SCAN * 50, 3)


@pytest.mark.parametrize("chunk", [b"zTXt", b"iTXt", b"iCCP"])
def test_a_png_with_a_huge_compressed_chunk_is_refused_at_once(api, chunk):
    raw = hostile.png_with_text_bomb(chunk)  # ~200 KB inflating to 200 MB
    started = time.perf_counter()
    response = classify(api, raw)
    assert response.status_code == 400 and error_code(response) == "invalid_image", response.text
    assert time.perf_counter() - started < 2


def test_the_pixels_of_one_request_are_bounded_together(api, normal, redis_client):
    from inference.core.settings import get_settings
    from inference.submit import submission, waiting

    settings = get_settings()
    at_limit = hostile.flat_jpeg(10_000, settings.max_image_pixels // 10_000)  # one picture at the pixel limit
    count = settings.max_request_pixels // settings.max_image_pixels + 1
    response = api.post(f"{api.base_url}/v1/inference", timeout=30, json={"images": [b64(at_limit)] * count, "model_type": "resnet18"})
    assert response.status_code == 413 and error_code(response) == "too_many_pixels", response.text
    # Straight onto the queue: the worker counts them before it decodes any.
    submitted = submission.submit(redis_client, model="resnet18", priority="normal", images=[at_limit] * count)
    status = waiting.wait_for(redis_client, submitted.task_id, 30)
    assert status["status"] == "failed" and status["error"]["code"] == "too_many_pixels", status
    wait_until(lambda: not leftovers(redis_client, submitted.task_id), 5, what="the request's keys gone")
    # One picture at the limit is decoded, in a bounded time, and the next requests do not suffer.
    started = time.perf_counter()
    response = classify(api, at_limit)
    assert response.status_code == 200 and response.json()["status"] == "success", response.text
    assert time.perf_counter() - started < settings.worker_timeout
    assert_unharmed(api, normal)


# -- malformed JSON -------------------------------------------------------------------------------

def _nested(depth: int) -> bytes:
    return b'{"data": ' + b"[" * depth + b"]" * depth + b"}"


MALFORMED = {
    "nested 100,000 deep": (_nested(100_000), "application/json"),
    "nested objects": (b'{"a":' * 50_000 + b"1" + b"}" * 50_000, "application/json"),
    "a number of 100,000 digits": (b'{"top_k": ' + b"9" * 100_000 + b', "data": "x"}', "application/json"),
    "a float over the range": (b'{"top_k": 1e999, "data": "x"}', "application/json"),
    "NaN": (b'{"top_k": NaN, "data": "x"}', "application/json"),
    "duplicate keys": (b'{"model_type": "resnet18", "model_type": "squeezenet", "data": "x"}', "application/json"),
    "invalid UTF-8": (b'{"data": "\xff\xfe\xfd"}', "application/json"),
    "JSON sent as a form": (b'{"data": "x"}', "application/x-www-form-urlencoded"),
    "JSON sent as text": (b'{"data": "x"}', "text/plain"),
    "JSON sent as multipart": (b'{"data": "x"}', "multipart/form-data; boundary=xyz"),
    "a form sent as JSON": (b"--xyz\r\nContent-Disposition: form-data; name=\"image\"\r\n\r\nabc\r\n--xyz--\r\n", "application/json"),
    "no Content-Type": (b'{"data": "x"}', None),
    "a JSON array": (b"[1, 2, 3]", "application/json"),
}


@pytest.mark.parametrize("case", MALFORMED, ids=list(MALFORMED))
def test_malformed_bodies_are_a_4xx_with_a_code(api, redis_client, case):
    body, content_type = MALFORMED[case]
    jobs_before = len(redis_client.keys("inference:job:*"))
    for path in ("/v1/inference", "/inference", "/v1/batch_inference"):
        response = api.post(api.base_url + path, data=body, timeout=30,
                            headers={"Content-Type": content_type} if content_type else {"Content-Type": ""})
        assert 400 <= response.status_code < 500, (path, response.status_code, response.text[:300])
        assert error_code(response) in VOCABULARY, (path, response.text[:300])
    assert len(redis_client.keys("inference:job:*")) == jobs_before


# -- Redis memory ------------------------------------------------------------------------------------

def test_a_flood_of_large_pictures_is_refused_before_redis_is_full(api, redis_client):
    """Redis bounded to a little more than it holds now: the flood is refused with 503
    `memory_full` and Retry-After before Redis reaches maxmemory, and every request it
    accepted completes."""
    picture = hostile.noise_png(600, 600)
    body = {"images": [b64(picture)] * 4, "model_type": "efficientnet", "priority": "low"}
    limit = int(redis_client.info("memory")["used_memory"]) + 96 * 1024 * 1024
    redis_client.config_set("maxmemory", limit)
    admit_below = int(0.8 * limit)  # REDIS_MEMORY_HIGH_WATER
    # Every API process reads maxmemory once a second: wait until answers from both show it.
    wait_until(lambda: all(api.get(f"{api.base_url}/queue/status", timeout=5).json()["redis_memory"]["admit_below"] == admit_below
                           for _ in range(8)), 10, what="the API's new memory bound")
    peak, stop = [0], threading.Event()

    def watch():
        while not stop.is_set():
            peak[0] = max(peak[0], int(redis_client.info("memory")["used_memory"]))
            time.sleep(0.01)

    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    try:
        # 4 at a time: pictures being written before their submission's check (at most 4 x 3.6 MB)
        # fit in the 20 % of maxmemory above the admission bound.
        with ThreadPoolExecutor(4) as pool:
            answers = list(pool.map(lambda _: api.post(f"{api.base_url}/v1/inference", json=body, timeout=60), range(60)))
    finally:
        stop.set()
        watcher.join()
        redis_client.config_set("maxmemory", "1gb")
    accepted = [a.json()["request_id"] for a in answers if a.status_code == 202]
    refused = [a for a in answers if a.status_code != 202]
    assert refused and accepted, f"{len(accepted)} accepted, {len(refused)} refused"
    for answer in refused:
        assert answer.status_code == 503 and error_code(answer) == "memory_full", answer.text
        assert int(answer.headers["Retry-After"]) >= 1
    assert peak[0] < limit, f"Redis reached {peak[0]} bytes of its {limit}"
    for request_id in accepted:
        status = api.get(f"{api.base_url}/v1/inference/{request_id}", params={"wait": 30}, timeout=60).json()
        assert status["status"] == "success", status
    # The refused submissions deleted the pictures they had written; the accepted ones' went with their results.
    wait_until(lambda: not redis_client.keys("inference:image:*"), 10, what="no picture left in Redis")


# -- a cluster of its own: time limits, retries, crashes, cancellation, revocation -------------------

CLUSTER_ENV = {
    "WORKER_TIMEOUT": "3",  # mobilenet's chaos latency (4 s) outlasts it
    "RETRY_BACKOFF_MAX": "1",
    "RETRY_DELAY": "1",
    "MAX_RETRIES": "1",
    "VISIBILITY_TIMEOUT": "10",
    "RESTORE_INTERVAL": "1",
    "MAX_DELIVERIES": "2",
    "WORKER_CACHE_SECONDS": "1",
}


POISON_MARKER = "chaos-poison-4f1d"


class Cluster:
    """Its own Redis and API, and a worker for each way a request can end badly."""

    def __init__(self):
        self.procs = Processes()
        self.env = {**os.environ, **CLUSTER_ENV}
        self.env["REDIS_URL"] = start_redis(self.procs, self.env, name="hostile-redis")
        self.redis = redis.Redis.from_url(self.env["REDIS_URL"])
        self.celery = Celery(broker=self.env["REDIS_URL"], backend=self.env["REDIS_URL"])
        # mobilenet: every request runs past its time limit (the threads pool's, which is the
        # task's own), two at a time (its task threads), so others queue behind them.
        # squeezenet (the threads pool, batching): a picture holding POISON_MARKER kills the model's
        # process; the time limit leaves room for a few new ones (each well under a second here).
        # efficientnet: every request fails, transiently.
        for model, extra in (("mobilenet", {"CHAOS_LATENCY_MS": "4000", "WORKER_POOL": "threads", "MAX_BATCH_SIZE": "1",
                                            "MODEL_INSTANCES": "1", "WORKER_CONCURRENCY": "2"}),
                             ("squeezenet", {"CHAOS_CRASH_MARKER": POISON_MARKER, "MAX_BATCH_SIZE": "8",
                                             "WORKER_TIMEOUT": "15", "VISIBILITY_TIMEOUT": "30"}),
                             ("efficientnet", {"CHAOS_FAILURE_RATE": "1.0"})):
            start_worker(self.procs, model, {**self.env, **extra}, name=f"{model}-hostile@%h")
        self.api = requests.Session()
        self.api.base_url = start_api(self.procs, self.env, name="hostile-api")  # type: ignore[attr-defined]
        wait_until(lambda: requests.get(f"{self.api.base_url}/workers/status", timeout=5).json()["ready"] >= 3, 180,
                   interval=1, what="the hostile cluster's workers")

    def submit(self, model: str, picture: str | None = None, **fields) -> str:
        response = self.api.post(f"{self.api.base_url}/v1/inference", timeout=30,
                                 json={"data": picture or image_b64(), "model_type": model, **fields})
        assert response.status_code == 202, response.text
        return response.json()["request_id"]

    def final(self, request_id: str, timeout: float = 60) -> dict:
        def done():
            status = self.api.get(f"{self.api.base_url}/v1/inference/{request_id}", params={"wait": 5}, timeout=30).json()
            return status if status["status"] in ("success", "failed", "expired", "cancelled") else None

        return wait_until(done, timeout, interval=0.1, what=f"{request_id} to end")

    def worker_pid(self, model: str) -> int:
        """The pid of a worker's Celery process (pool processes and model processes change)."""
        replies = self.celery.control.inspect(destination=[f"{model}-hostile@{socket.gethostname()}"], timeout=5).stats() or {}
        (stats,) = replies.values()
        return stats["pid"]

    def assert_nothing_left(self, request_id: str) -> None:
        wait_until(lambda: not leftovers(self.redis, request_id), 10, what=f"the keys of {request_id} gone")


@pytest.fixture(scope="module")
def cluster():
    c = Cluster()
    yield c
    c.procs.stop_all()


def test_a_time_limit_fails_the_request_as_timeout_and_leaves_nothing(cluster):
    request_id = cluster.submit("mobilenet")
    status = cluster.final(request_id)
    assert status["status"] == "failed" and status["error"]["code"] == "timeout", status
    assert "WORKER_TIMEOUT" in status["error"]["message"]
    cluster.assert_nothing_left(request_id)


def test_expired_cancelled_and_revoked_requests_leave_nothing(cluster):
    """Behind requests that hold the worker (mobilenet's two task threads, each request running
    to its time limit), one expires, one is cancelled by DELETE and one is revoked through
    Celery's control channel."""
    blockers = [cluster.submit("mobilenet") for _ in range(2)]
    expired = cluster.submit("mobilenet", timeout_ms=500)
    cancelled = cluster.submit("mobilenet")
    revoked = cluster.submit("mobilenet")
    assert cluster.api.delete(f"{cluster.api.base_url}/v1/inference/{cancelled}", timeout=10).status_code == 200
    cluster.celery.control.revoke(revoked)
    assert cluster.final(expired)["status"] == "expired"
    assert cluster.final(cancelled)["status"] == "cancelled"
    assert cluster.final(revoked)["status"] == "cancelled"  # Celery's REVOKED
    for blocker in blockers:
        assert cluster.final(blocker)["error"]["code"] == "timeout"
    for request_id in (*blockers, expired, cancelled, revoked):
        cluster.assert_nothing_left(request_id)
    # The worker took each message off its queue (the cancelled one too: its pictures went then).
    wait_until(lambda: sum(cluster.redis.llen(f"mobilenet.{p}") for p in ("high", "normal", "low")) == 0, 30,
               what="mobilenet's queues empty")


def test_retries_exhausted_fail_with_their_code_and_leave_nothing(cluster):
    request_id = cluster.submit("efficientnet")
    status = cluster.final(request_id)
    assert status["status"] == "failed" and status["error"]["code"] == "transient_error", status
    cluster.assert_nothing_left(request_id)


def poisoned_picture() -> str:
    """A good JPEG whose comment holds the marker that kills the hostile squeezenet worker."""
    out = io.BytesIO()
    Image.open(io.BytesIO(image_bytes("chelsea.jpg"))).save(out, "JPEG", comment=POISON_MARKER.encode())
    return b64(out.getvalue())


def test_a_picture_that_kills_the_model_each_time_fails_alone_as_poison(cluster):
    """A batching worker runs many requests at once: the poison's crashes are held against it
    alone (it runs again by itself), the requests batched with it succeed, and the worker's
    Celery process never stops consuming (no redelivery, nothing lost)."""
    worker_pid = cluster.worker_pid("squeezenet")
    with ThreadPoolExecutor(7) as pool:
        requests_ = list(pool.map(lambda n: cluster.submit("squeezenet", picture=poisoned_picture() if n == 3 else None), range(7)))
    poison, innocent = requests_[3], requests_[:3] + requests_[4:]
    status = cluster.final(poison, timeout=60)
    assert status["status"] == "failed" and status["error"]["code"] == "poison_message", status
    assert [cluster.final(request_id, timeout=60)["status"] for request_id in innocent] == ["success"] * 6
    for request_id in (poison, *innocent):
        cluster.assert_nothing_left(request_id)
    assert cluster.worker_pid("squeezenet") == worker_pid
    assert cluster.redis.get(b"inference:duplicates") in (None, b"0")  # nothing ran twice by redelivery
    # Its worker is serving again (a fresh pool process, waiting for its next request).
    wait_until(lambda: any(w["model"] == "squeezenet" and w.get("ready_processes")
                           for w in requests.get(f"{cluster.api.base_url}/workers/status", timeout=5).json()["workers"]),
               60, what="squeezenet's worker ready again")


def test_success_and_failure_in_the_worker_leave_nothing(api, redis_client):
    ok = classify(api, image_bytes("chelsea.jpg")).json()
    broken = classify(api, image_bytes("chelsea.jpg")[:2000]).json()  # headers fine, pixels cut off
    assert (ok["status"], broken["status"], broken["error"]["code"]) == ("success", "failed", "invalid_image")
    for status in (ok, broken):
        wait_until(lambda s=status: not leftovers(redis_client, s["request_id"]), 5, what="the request's keys gone")


# -- tenants -----------------------------------------------------------------------------------------

def test_each_key_has_its_own_request_ids_and_batches(api_with):
    secured = api_with(api_keys="tenant-a-key,tenant-b-key")
    a, b = {"X-API-Key": "tenant-a-key"}, {"X-API-Key": "tenant-b-key"}
    body = {"data": image_b64(), "model_type": "squeezenet", "request_id": "order-1"}
    first = secured.post("/v1/inference", query_string={"wait": 30}, json=body, headers=a).json
    assert first["status"] == "success" and first["request_id"] == "order-1" and not first["duplicate"]
    # Another key cannot read or cancel it, and its own "order-1" is a request of its own.
    assert secured.get("/v1/inference/order-1", headers=b).status_code == 404
    assert secured.delete("/v1/inference/order-1", headers=b).status_code == 404
    second = secured.post("/v1/inference", query_string={"wait": 30}, json={**body, "model_type": "mobilenet"}, headers=b).json
    assert second["status"] == "success" and not second["duplicate"] and second["result"]["model"] == "mobilenet"
    again = secured.get("/v1/inference/order-1", headers=a).json
    assert again["result"]["model"] == "squeezenet"  # the first key's request, untouched
    batch = secured.post("/v1/batch_inference", json={"requests": [{"data": image_b64(), "model_type": "squeezenet"}]}, headers=a).json
    assert secured.get(f"/v1/batch/{batch['batch_id']}", headers=b).status_code == 404
    assert secured.get(f"/v1/batch/{batch['batch_id']}", query_string={"wait": 30}, headers=a).status_code == 200


def test_one_key_cannot_fill_the_queue_for_everyone(api_with, redis_client):
    from inference.core import keys

    secured = api_with(api_keys="greedy-key,polite-key", max_in_flight_per_key=3)
    greedy, polite = {"X-API-Key": "greedy-key"}, {"X-API-Key": "polite-key"}
    many = {"images": [image_b64()] * 8, "model_type": "efficientnet", "priority": "low"}
    with ThreadPoolExecutor(12) as pool:
        answers = list(pool.map(lambda _: secured.post("/v1/inference", json=many, headers=greedy), range(24)))
    refused = [a for a in answers if a.status_code == 429]
    accepted = [a.json["request_id"] for a in answers if a.status_code == 202]
    assert refused and accepted, [a.status_code for a in answers]
    assert all(a.json["error"]["code"] == "too_many_in_flight" and int(a.headers["Retry-After"]) >= 1 for a in refused)
    # Meanwhile another key is admitted; a batch over the limit is refused whole.
    assert secured.post("/v1/inference", json={"data": image_b64(), "model_type": "squeezenet"}, headers=polite).status_code == 202
    whole = secured.post("/v1/batch_inference", json={"images": [image_b64()] * 4, "model_type": "squeezenet"}, headers=polite)
    assert whole.status_code == 429 and whole.json["error"]["code"] == "too_many_in_flight"
    for request_id in accepted:
        assert secured.get(f"/v1/inference/{request_id}", query_string={"wait": 30}, headers=greedy).json["status"] == "success"
    # Every request that ended left its tenant's count of requests in flight; the refused left no picture.
    wait_until(lambda: all(redis_client.zcard(k) == 0 for k in redis_client.keys(f"{keys.IN_FLIGHT_PREFIX}*")), 30,
               what="no request in flight")
    wait_until(lambda: not redis_client.keys("inference:image:*"), 10, what="no picture left in Redis")


def from_address(client, address: str):
    """Another client of the same in-process app, as if it connected from `address`."""
    other = client.application.test_client()
    other.environ_base["REMOTE_ADDR"] = address
    return other


def test_rate_limits_without_keys_and_on_failed_authentications(api_with):
    if 60 - time.time() % 60 < 8:
        time.sleep(9)  # keep each address's requests inside one minute window
    client = from_address(api_with(rate_limit_per_minute=3), "127.0.0.23")
    assert [client.get("/queue/status").status_code for _ in range(3)] == [200, 200, 200]
    refused = client.get("/queue/status")
    assert refused.status_code == 429 and refused.json["error"]["code"] == "rate_limited"
    assert from_address(client, "127.0.0.24").get("/queue/status").status_code == 200  # another address is unaffected

    guesser = from_address(api_with(api_keys="the-key", auth_failures_per_minute=3), "127.0.0.25")
    for guess in ("a", "b", "c"):
        assert guesser.get("/queue/status", headers={"X-API-Key": guess}).status_code == 401
    locked = guesser.get("/queue/status", headers={"X-API-Key": "the-key"})
    assert locked.status_code == 429 and locked.json["error"]["code"] == "too_many_auth_failures" and int(locked.headers["Retry-After"]) >= 1
    owner = from_address(guesser, "127.0.0.26")
    assert owner.get("/queue/status", headers={"X-API-Key": "the-key"}).status_code == 200


# -- operations endpoints and secrets -----------------------------------------------------------------

def test_chaos_needs_a_key_and_workers_ignore_crash_commands_unless_enabled(api_with, api, worker_ids):
    secured = api_with(api_keys="ops-key", chaos_enabled=True)
    crash = {"model": "squeezenet"}
    assert secured.post("/simulate/crash", json=crash).status_code == 401
    pids = pool_pids(api, "squeezenet")
    # The suite's workers run without CHAOS_ENABLED: the control command does nothing to them.
    replies = Celery(broker=os.environ["REDIS_URL"]).control.broadcast(
        "simulate_crash", destination=[worker_ids["squeezenet"]], reply=True, timeout=3)
    assert replies and "disabled" in json.dumps(replies)
    time.sleep(1)  # the command would kill after 0.2 s
    assert pool_pids(api, "squeezenet") == pids
    assert classify(api, image_bytes("chelsea.jpg"), "squeezenet").json()["status"] == "success"


def test_no_secret_on_any_command_line_or_in_any_log(start_extra_api, tmp_path):
    """The Redis password, API keys and Flower's login of the running system appear in no
    process's command line (readable by every user) and in no log."""
    from urllib.parse import urlparse

    secrets = {"redis password": urlparse(os.environ["REDIS_URL"]).password, "API key": "sEcReT-api-key-7",
               "Flower login": "sEcReT-flower-pw-9"}
    secured = start_extra_api(API_KEYS=secrets["API key"])
    procs, port = Processes(), free_port()
    procs.start("flower-secrets", [sys.executable, "-m", "inference.cli.flower"],
                {**os.environ, "FLOWER_PORT": str(port), "FLOWER_DB": str(tmp_path / "flower.db"),
                 "FLOWER_BASIC_AUTH": f"admin:{secrets['Flower login']}"})
    try:
        wait_until(lambda: requests.get(f"http://127.0.0.1:{port}", timeout=2).status_code == 401, 30, what="Flower")
        assert requests.get(f"http://127.0.0.1:{port}", auth=("admin", secrets["Flower login"]), timeout=10).status_code == 200
        assert secured.get(f"{secured.base_url}/health", headers={"X-API-Key": secrets["API key"]}, timeout=10).status_code == 200
        cmdlines = {path.parent.name: path.read_bytes().replace(b"\0", b" ") for path in Path("/proc").glob("[0-9]*/cmdline")
                    if path.exists()}
        ours = {pid: cmd for pid, cmd in cmdlines.items() if b"inference" in cmd or b"valkey" in cmd or b"api.serve" in cmd}
        assert len(ours) >= 6, "the running system's processes"
        for what, secret in secrets.items():
            assert secret
            assert not [pid for pid, cmd in cmdlines.items() if secret.encode() in cmd], f"the {what} is on a command line"
            for log in LOG_DIR.glob("*.log"):
                assert secret not in log.read_text(errors="replace"), f"the {what} is in {log.name}"
    finally:
        procs.stop_all()


# -- the Python client -------------------------------------------------------------------------------

class DropFirstAnswer:
    """A proxy in front of the API that forwards the first request and drops the connection
    instead of passing its answer back: the server accepted the request, the client never
    heard. Later requests pass both ways."""

    def __init__(self, target: str):
        host, port = target.removeprefix("http://").split(":")
        self.target = (host, int(port))
        self.server = socket.create_server(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self.server.getsockname()[1]}"
        self.dropped = 0
        threading.Thread(target=self.serve, daemon=True).start()

    def serve(self):
        while True:
            try:
                client, _ = self.server.accept()
            except OSError:
                return
            threading.Thread(target=self.relay, args=(client,), daemon=True).start()

    @staticmethod
    def read_message(sock: socket.socket) -> bytes:
        data = b""
        while b"\r\n\r\n" not in data:
            chunk = sock.recv(65536)
            if not chunk:
                return data
            data += chunk
        head, _, body = data.partition(b"\r\n\r\n")
        length = next((int(line.split(b":")[1]) for line in head.split(b"\r\n") if line.lower().startswith(b"content-length:")), 0)
        while len(body) < length:
            body += sock.recv(65536)
        return head + b"\r\n\r\n" + body

    def relay(self, client: socket.socket):
        with client:
            while request := self.read_message(client):
                with socket.create_connection(self.target) as upstream:
                    upstream.sendall(request)
                    answer = self.read_message(upstream)
                if self.dropped == 0:
                    self.dropped += 1
                    return  # closed without an answer
                client.sendall(answer)

    def close(self):
        self.server.close()


def test_the_client_never_submits_twice(api, redis_client):
    from inference.submit.client import InferenceClient

    proxy = DropFirstAnswer(api.base_url)
    try:
        jobs_before = set(redis_client.keys("inference:job:*"))
        client = InferenceClient(proxy.url, backoff=0.05)
        request_id = client.submit(image_bytes("chelsea.jpg"), model="squeezenet")
        assert proxy.dropped == 1 and client.attempts == 2
        created = set(redis_client.keys("inference:job:*")) - jobs_before
        assert created == {f"inference:job:{request_id}".encode()}, created  # one request, not two
        assert client.wait(request_id, timeout=30)["status"] == "success"
    finally:
        proxy.close()


def test_every_model_still_serves(api):
    for model in MODELS:
        assert classify(api, image_bytes("chelsea.jpg"), model).json()["status"] == "success"


# -- slow and idle clients ---------------------------------------------------------------------------

def test_slow_and_idle_clients_and_long_polls_cannot_starve_the_api(start_extra_api, redis_client):
    """200 connections that send nothing or a byte at a time, and 150 long polls, all open at
    once: liveness still answers within 100 ms (nine times of ten, all within a second), and a new
    submission is accepted and served."""
    from inference.core.celery_app import app

    server = start_extra_api(API_WORKERS=2)  # make run's API
    host, port = server.base_url.removeprefix("http://").split(":")
    idle = [socket.create_connection((host, int(port))) for _ in range(100)]
    trickling = [socket.create_connection((host, int(port))) for _ in range(100)]
    head = f"POST /v1/inference HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/json\r\nContent-Length: 100000\r\n\r\n".encode()
    stop = threading.Event()

    sent = [0]

    def trickle():  # the headers, then the body, a byte per connection every 0.05 s
        while not stop.is_set():
            for sock in trickling:
                try:
                    sock.send(head[sent[0]:sent[0] + 1] if sent[0] < len(head) else b"{")
                except OSError:
                    pass
            sent[0] += 1
            stop.wait(0.05)

    never_done = [queued_job(redis_client) for _ in range(150)]  # job records with no task: they stay queued
    polls = ThreadPoolExecutor(150)
    threading.Thread(target=trickle, daemon=True).start()
    try:
        waiting = [polls.submit(requests.get, f"{server.base_url}/v1/inference/{rid}", params={"wait": 30}, timeout=60)
                   for rid in never_done]
        # Every poll waits on its request's channel, and every trickle has sent its headers.
        channels = [app.backend.get_key_for_task(rid) for rid in never_done]
        wait_until(lambda: all(n for _, n in redis_client.pubsub_numsub(*channels)), 30, what="150 long polls waiting")
        wait_until(lambda: sent[0] > len(head) + 5, 30, what="the trickles' headers sent")
        assert not any(w.done() for w in waiting), "a long poll ended early"
        took = []
        for _ in range(10):
            started = time.perf_counter()
            assert requests.get(f"{server.base_url}/health/live", timeout=10).status_code == 200
            took.append(time.perf_counter() - started)
        print(f"/health/live with 200 slow connections and 150 long polls open: {[round(t * 1000, 1) for t in took]} ms", file=sys.stderr)
        # Starved, every answer would be slow; on 2 virtual cores one of ten may meet a scheduling
        # hiccup (104 and 110 ms once each on a Zen 3, the other nine 3-11 ms).
        assert sorted(took)[-2] < 0.1 and max(took) < 1.0, f"/health/live took {[round(t * 1000) for t in took]} ms"
        answer = requests.post(f"{server.base_url}/v1/inference", params={"wait": 20}, timeout=30,
                               json={"data": image_b64(), "model_type": "squeezenet"})
        assert answer.status_code == 200 and answer.json()["status"] == "success", answer.text
        ended = [w.exception() or w.result().text[:200] for w in waiting if w.done()]
        assert not ended, f"{len(ended)} long polls ended early: {ended[:3]}"
    finally:
        stop.set()
        for sock in idle + trickling:
            sock.close()
        polls.shutdown(wait=False, cancel_futures=True)
        redis_client.delete(*[f"inference:job:{rid}" for rid in never_done])
