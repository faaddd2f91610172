"""`replicas = N` (WORKER_REPLICAS): one worker config, N Celery workers supervised as one."""

from __future__ import annotations

import os
import signal
from pathlib import Path

import pytest

from tests.helpers import image_b64, paused, suite_processes
from tests.system import children_of, start_worker, wait_until


def test_replicas_are_named_after_the_config_node():
    from inference.cli.launch import replica_name

    assert replica_name("resnet18@%h", 2) == "resnet18-2@%h"
    assert replica_name("gpu-a@host.example", 1) == "gpu-a-1@host.example"
    assert replica_name("plain", 3) == "plain-3"


@pytest.mark.e2e
def test_two_replicas_serve_the_model_and_fall_together(api, redis_client, worker_ids):
    """Both replicas come up as nodes of their own and serve the model's queues; one that dies
    (no --restart) takes the other down, and the launcher exits with a failure."""
    from inference.submit import submission, waiting

    env = {**os.environ, "WORKER_REPLICAS": "2"}
    name = start_worker(suite_processes, "squeezenet", env, name=f"sq-replicas-{os.getpid()}@%h")
    launcher = suite_processes.procs[f"worker-{name}"]
    try:
        prefix = f"sq-replicas-{os.getpid()}"

        def ready_replicas() -> list[str]:
            workers = api.get(f"{api.base_url}/workers/status", timeout=5).json()["workers"]
            return sorted(w["worker_id"] for w in workers if w["worker_id"].startswith(prefix) and w.get("ready_processes"))

        nodes = wait_until(lambda: len(ready_replicas()) == 2 and ready_replicas(), 120, interval=0.5, what="two replicas ready")
        assert [n.split("@")[0] for n in nodes] == [f"{prefix}-1", f"{prefix}-2"]

        with paused(worker_ids["squeezenet"], "squeezenet.high", "squeezenet.normal", "squeezenet.low"):
            ids = [submission.submit(redis_client, image_b64=image_b64("chelsea.jpg"), model="squeezenet", priority="normal").job["request_id"]
                   for _ in range(6)]
            statuses = [waiting.wait_for(redis_client, rid, 60) for rid in ids]
        assert all(s["status"] == "success" for s in statuses), statuses
        assert {s["result"]["worker_id"].split(":")[0] for s in statuses} <= set(nodes)

        replicas = children_of(launcher.pid)
        assert len(replicas) == 2
        os.kill(replicas[0], signal.SIGKILL)
        assert launcher.wait(timeout=60) != 0
        wait_until(lambda: not Path(f"/proc/{replicas[1]}").exists(), 30, what="the other replica stopped")
    finally:
        suite_processes.stop(f"worker-{name}")
