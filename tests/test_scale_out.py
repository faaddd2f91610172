"""A short version of `make scale-out` (tests/scale_out.py): hosts in network namespaces, Redis
with two replicas and three Sentinels; worker hosts added (throughput), seen by the API, Flower
and `celery inspect`; the primary SIGKILLed under load; a worker host lost under load. Needs
root (network namespaces): skipped with the reason elsewhere."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
import requests

from inference.cluster import topology
from inference.cluster.network import can_make_namespaces
from tests import scale_out
from tests.system import LOG_DIR, ROOT

pytestmark = [pytest.mark.e2e]
if reason := can_make_namespaces():
    pytestmark.append(pytest.mark.skip(reason=f"the scale-out scenarios need network namespaces: {reason}"))


@pytest.fixture(scope="module")
def cluster():
    # The requests of a host lost come back after VISIBILITY_TIMEOUT (> WORKER_TIMEOUT + RETRY_BACKOFF_MAX).
    started = topology.start(worker_hosts=0, flower=True, callbacks=True, log_dir=LOG_DIR / "cluster",
                             env={"WORKER_TIMEOUT": "5", "VISIBILITY_TIMEOUT": "12"})
    yield started
    started.close()


def flower_workers(cluster) -> set[str]:
    """The workers Flower lists after asking them afresh."""
    flower = requests.get(f"{cluster.flower}/api/workers", params={"refresh": "true"}, timeout=30,
                          auth=(topology.FLOWER_USER, cluster.password))
    flower.raise_for_status()
    return set(flower.json())


def test_two_worker_hosts_serve_about_twice_one(cluster):
    rows = scale_out.scaling(cluster, (1, 2), seconds_each=3, latency_ms=250)
    print(f"[scale-out] {[(row.hosts, row.requests_per_s) for row in rows]}")
    assert rows[1].ratio >= 1.6, rows


def test_workers_on_every_host_show_everywhere(cluster):
    names = {"squeezenet@worker-1", "squeezenet@worker-2"}
    status = requests.get(f"{cluster.api}/workers/status", timeout=10).json()
    assert {w["worker_id"] for w in status["workers"]} == names
    assert names <= flower_workers(cluster)
    inspect = subprocess.run([sys.executable, "-m", "celery", "-A", "inference", "inspect", "ping", "--timeout", "5"],
                             cwd=ROOT, env={**os.environ, **cluster.env}, capture_output=True, text=True, timeout=60)
    assert all(name in inspect.stdout for name in names | {"callbacks@api"}), inspect.stdout + inspect.stderr  # the callbacks worker too


def test_a_failover_under_load_loses_nothing(cluster):
    row = scale_out.failover(cluster, 1, seconds=9, rate=12, models=("squeezenet",))
    print(f"[scale-out] {row}")
    assert row.lost == 0 and row.errors == 0 and row.restarted == 0, row
    assert row.accepted >= 100 and row.first_success_s is not None, row
    assert {"squeezenet@worker-1", "squeezenet@worker-2"} <= flower_workers(cluster)  # Flower goes on too


def test_a_worker_host_lost_under_load_loses_nothing(cluster):
    row = scale_out.lose_a_host(cluster, requests_count=60, models=("squeezenet",))
    print(f"[scale-out] {row}")
    assert row.held_by_lost_host >= 1 and row.lost == 0, row
