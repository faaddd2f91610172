"""Redis Sentinel (REDIS_SENTINELS): every part finds the primary through the Sentinels, and
goes on after a failover without a restart. A primary, a replica and a Sentinel (real Valkey
servers on free ports), a worker and the API; REDIS_URL names a host where nothing listens, so
only the Sentinel can lead them to Redis."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from contextlib import contextmanager
from pathlib import Path
from urllib.parse import urlparse

import pytest
import redis
import requests

from inference.cluster.topology import MASTER, replica_command, sentinel_command
from inference.core import redis_connection
from inference.core.settings import Settings
from inference.submit.client import InferenceClient
from tests.helpers import PROMETHEUS_ACCEPT, image_b64
from tests.system import TESTDATA, Processes, free_port, start_api, start_redis, start_worker, wait_for_ready_workers, wait_until

pytestmark = pytest.mark.e2e


def start_replica(procs: Processes, env: dict, password: str, primary_port: int) -> int:
    port = free_port()
    url, folder = f"redis://:{password}@127.0.0.1:{port}/0", Path(tempfile.mkdtemp(prefix="inference-test-replica-"))
    procs.start("sentinel-replica", replica_command(url, folder, "127.0.0.1", primary_port), env)
    replica = redis.Redis(port=port, password=password)
    wait_until(lambda: replica.info("replication")["master_link_status"] == "up", 30, what="the replica in sync")
    return port


def start_sentinel(procs: Processes, env: dict, password: str, primary_port: int) -> int:
    port, folder = free_port(), Path(tempfile.mkdtemp(prefix="inference-test-sentinel-"))
    procs.start("sentinel", sentinel_command(folder, "127.0.0.1", port, ("127.0.0.1", primary_port), password, quorum=1), env)
    wait_until(lambda: redis.Redis(port=port).sentinel_master(MASTER)["num-slaves"] >= 1, 30, what="the Sentinel seeing the replica")
    return port


@contextmanager
def sentinel_topology():
    """A primary, a replica, a Sentinel; a squeezenet worker and the API that know only the Sentinel."""
    procs = Processes()
    env = dict(os.environ)
    try:
        primary_url = urlparse(start_redis(procs, env, name="sentinel-primary"))
        password, primary = primary_url.password, primary_url.port
        replica = start_replica(procs, env, password, primary)
        sentinel = start_sentinel(procs, env, password, primary)
        # Nothing listens on port 1: only the Sentinel leads anyone to Redis.
        env.update(REDIS_URL=f"redis://:{password}@127.0.0.1:1/0", REDIS_SENTINELS=f"127.0.0.1:{sentinel}", REDIS_MASTER_NAME=MASTER,
                   WORKER_CACHE_SECONDS="1", REDIS_WAIT_TIMEOUT_MS="300")  # REDIS_WAIT_REPLICAS: 1 by default here
        start_worker(procs, "squeezenet", env, name="sq-sentinel@%h")
        api = start_api(procs, env, name="sentinel-api")
        wait_for_ready_workers(api, 1)
        yield {"procs": procs, "api": api, "primary": primary, "replica": replica, "sentinel": sentinel, "password": password}
    finally:
        procs.stop_all()


@pytest.fixture(scope="module")
def topology():
    with sentinel_topology() as started:
        yield started


def payload() -> dict:
    return {"data": image_b64("chelsea.jpg"), "model_type": "squeezenet"}


def classify(api: str) -> dict:
    return InferenceClient(api, retries=30, backoff=0.5).classify(TESTDATA / "chelsea.jpg", model="squeezenet")


def test_every_part_finds_redis_through_the_sentinel(topology):
    result = classify(topology["api"])
    assert result["model"] == "squeezenet" and result["worker_id"].startswith("sq-sentinel")
    metrics = requests.get(f"{topology['api']}/metrics", headers=PROMETHEUS_ACCEPT, timeout=10).text
    assert 'inference_model_ready_processes{model="squeezenet"} 1.0' in metrics


def test_a_dropped_connection_reconnects_to_the_primary_the_sentinel_names(topology):
    """redis-py 8.1 reconnects a dropped Sentinel connection, when a command is sent on it, to the
    address it had (after a failover: the old primary); ours asks the Sentinel first."""
    client = sentinel_client(topology)
    connection = client.connection_pool.get_connection()
    try:
        connection.disconnect()
        connection.host, connection.port = "127.0.0.1", free_port()  # where the primary was, say: nothing there now
        connection.send_command("PING")
        assert connection.read_response() in (b"PONG", "PONG", True)
        assert connection.port == topology["primary"]
    finally:
        client.connection_pool.release(connection)


def test_a_worker_whose_brpop_is_unblocked_goes_on(topology):
    """A primary that turns replica (a coordinated switch) answers the workers' blocked BRPOP with
    `UNBLOCKED`; `CLIENT UNBLOCK ... ERROR` sends the same error on demand. redis-py raised it as a
    plain ResponseError and the worker shut down ("Unrecoverable error", celery#7946); as a lost
    connection (inference/core/redis_connection.py), the worker reconnects and serves on."""
    before = worker_pids(topology["api"])
    assert before
    primary = redis.Redis(port=topology["primary"], password=topology["password"], decode_responses=True)
    blocked = wait_until(lambda: [c["id"] for c in primary.client_list() if c["cmd"] == "brpop"], 30, what="the worker's BRPOP")
    for client_id in blocked:
        primary.execute_command("CLIENT", "UNBLOCK", client_id, "ERROR")
    assert classify(topology["api"])["model"] == "squeezenet"
    wait_for_ready_workers(topology["api"], 1)  # by every API process again
    assert worker_pids(topology["api"]) == before  # the same worker processes: it did not shut down


def worker_pids(api: str) -> list[int]:
    workers = requests.get(f"{api}/workers/status", timeout=10).json()["workers"]
    return [process["pid"] for worker in workers for process in worker["processes"]]


def sentinel_client(topology) -> redis.Redis:
    return redis_connection.connect(Settings(redis_url=f"redis://:{topology['password']}@127.0.0.1:1/0",
                                             redis_sentinels=f"127.0.0.1:{topology['sentinel']}", redis_master_name=MASTER))


def test_a_submission_no_replica_holds_is_refused_and_cancelled(topology):
    """REDIS_WAIT_REPLICAS (1 with Sentinels): the API answers 202 once the replica holds it; with the
    replica stopped, 503 `not_replicated` (with Retry-After) and the request is cancelled, so it
    cannot run beside the client's retry (unless a worker started it meanwhile: the worker is
    stopped too here). (Failovers under load: tests/test_scale_out.py.)"""
    api, procs = topology["api"], topology["procs"].procs
    assert requests.post(f"{api}/v1/inference", json=payload(), timeout=10).status_code == 202
    stopped = [procs["sentinel-replica"].pid, procs["worker-sq-sentinel@%h"].pid]
    for pid in stopped:
        os.killpg(pid, signal.SIGSTOP)
    try:
        started = time.monotonic()
        refused = requests.post(f"{api}/v1/inference", json={**payload(), "request_id": "unreplicated-1"}, timeout=10)
        waited = time.monotonic() - started
    finally:
        for pid in stopped:
            os.killpg(pid, signal.SIGCONT)
    assert refused.status_code == 503 and refused.json()["error"]["code"] == "not_replicated", refused.text
    assert refused.headers["Retry-After"] and 0.2 <= waited < 5  # REDIS_WAIT_TIMEOUT_MS (300), then the answer
    status = requests.get(f"{api}/v1/inference/unreplicated-1", timeout=10).json()
    assert status["status"] == "cancelled", status
    assert classify(api)["model"] == "squeezenet"  # the replica back: accepted again


def test_inspect_conf_answers_without_a_password(topology):
    """`celery inspect conf` (Flower's Config tab) answers, the password nowhere in it: Celery's
    "module:Class+redis://" result backend made kombu fail to mask it, on every worker."""
    env = {**os.environ, "REDIS_URL": f"redis://:{topology['password']}@127.0.0.1:1/0",
           "REDIS_SENTINELS": f"127.0.0.1:{topology['sentinel']}", "REDIS_MASTER_NAME": MASTER}
    out = subprocess.run([sys.executable, "-m", "celery", "-A", "inference", "inspect", "conf", "--json", "--timeout", "5"],
                         capture_output=True, text=True, timeout=60, env=env)
    assert out.returncode == 0, out.stderr
    conf = next(iter(json.loads(out.stdout).values()))
    assert conf["result_backend"].startswith("onetripsentinel+sentinel://:********@") and conf["broker_url"].startswith("sentinel://:********@")
    assert topology["password"] not in out.stdout


def test_no_sentinel_urls_password_is_in_inspect_conf():
    """With several Sentinels each URL holds the password (kombu moves to the next when one is
    down); what `inspect conf` shows keeps none of them (Celery's own showed all but the first)."""
    from celery import Celery

    from inference.core.control_conf import conf

    urls = "sentinel://:s3cret@10.0.0.1:26379/0;sentinel://:s3cret@10.0.0.2:26379/0;sentinel://:s3cret@10.0.0.3:26379/0"
    app = Celery(broker=urls, backend="onetripsentinel+" + urls, set_as_current=False)
    shown = conf(type("State", (), {"app": app})())
    assert shown["broker_url"].startswith("sentinel://:********@10.0.0.1") and shown["result_backend"].startswith("onetripsentinel+sentinel://:********@")
    assert "s3cret" not in json.dumps(shown)
