"""Breaking things for real: killed pool processes, killed workers, a Redis restart, a model
losing all its workers, a worker that keeps failing, a network partition. Each scenario runs under load from a
client and prints requests sent, succeeded, lost, duplicated and the recovery time.

`make test` runs the short version; `make resilience` sets RESILIENCE_SCALE=5 for more load;
`python tests/test_resilience.py [--scale N]` (the seed's command) runs them as a script.
The cluster here is separate from the rest of the suite: its own Valkey (append-only file),
API and workers, with short timeouts so that redelivery takes seconds.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import redis
import requests

if __name__ == "__main__":  # run as a script (`python tests/test_resilience.py`): the project's imports need its root
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from inference.core import metrics
from inference.core.keys import DUPLICATES_KEY
from inference.submit.client import InferenceClient
from tests import loadgen
from tests.helpers import PROMETHEUS_ACCEPT, image_b64, settled
from tests.system import LOG_DIR, TESTDATA, Processes, free_port, start_api, start_redis, start_worker, wait_until

pytestmark = pytest.mark.e2e
SCALE = int(os.environ.get("RESILIENCE_SCALE", "1"))

CLUSTER_ENV = {
    # Above 5 s + a task: the pool can take up to 5 s to notice a SIGKILLed child (its exit is
    # sometimes not yet reapable when the pipe closes; billiard looks again every 5 s), and a hard
    # time limit that fires first fails the task instead of requeueing it.
    "WORKER_TIMEOUT": "8",
    "RETRY_BACKOFF_MAX": "2",
    "RETRY_DELAY": "1",
    "MAX_RETRIES": "2",
    "VISIBILITY_TIMEOUT": "11",
    "RESTORE_INTERVAL": "1",
    "CHAOS_ENABLED": "true",
    "WORKER_CACHE_SECONDS": "1",
    "LOAD_BALANCE_STRATEGY": "least_loaded",
}
SLOW = {"CHAOS_LATENCY_MS": "400"}  # tasks last long enough to be killed mid-inference


class Cluster:
    def __init__(self):
        self.procs = Processes()
        self.env = {**os.environ, **CLUSTER_ENV}
        self.redis_url = start_redis(self.procs, self.env, name="chaos-redis")
        self.env["REDIS_URL"] = self.redis_url
        self.redis = redis.Redis.from_url(self.redis_url)
        self.workers = {}
        self.start_worker("resnet18", "res-a@%h", SLOW)
        self.start_worker("squeezenet", "sq-a@%h")
        self.api = start_api(self.procs, self.env, name="chaos-api")
        self.wait_ready({"resnet18", "squeezenet"})

    def start_worker(self, model, name, extra=None):
        start_worker(self.procs, model, {**self.env, **(extra or {})}, name=name)
        self.workers[model] = name

    def process_name(self, model):
        return f"worker-{self.workers[model]}"

    def status(self):
        return requests.get(f"{self.api}/workers/status", timeout=5).json()["workers"]

    def wait_ready(self, models, timeout=120):
        wait_until(lambda: models <= {w["model"] for w in self.status() if w.get("ready_processes")},
                   timeout, interval=0.5, what=f"ready workers for {models}")

    def wait_running(self, report):
        """Until one of the load's requests runs (a worker claimed it): a kill then hits one mid-inference."""
        wait_until(lambda: any(requests.get(f"{self.api}/v1/inference/{rid}", timeout=5).json()["status"] == "running"
                               for rid in list(report.accepted)), 30, interval=0.05, what="a request running")

    def worker_of(self, model, timeout=60):
        """A ready worker of `model`. Each API process keeps its own view of the workers, so one
        may still show a worker as loading (no processes yet) that another shows ready: ask again."""
        return wait_until(lambda: next((w for w in self.status() if w["model"] == model and w.get("ready_processes")), None),
                          timeout, interval=0.5, what=f"a ready {model} worker")

    def pool_pid(self, model):
        """The first pool process of a ready worker of `model`, or None while none is ready."""
        worker = next((w for w in self.status() if w["model"] == model and w.get("ready_processes")), None)
        return worker["processes"][0]["pid"] if worker else None

    def duplicates(self):
        return settled(lambda: int(self.redis.get(DUPLICATES_KEY) or 0))  # a worker sends its counts a moment later

    def log_tail(self, model, lines=60):
        """The end of `model`'s worker log, for a failure's message (CI keeps only what pytest prints)."""
        path = LOG_DIR / f"{self.process_name(model)}.log"
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:]) if path.exists() else f"{path}: missing"


@pytest.fixture(scope="module")
def cluster():
    c = Cluster()
    yield c
    c.procs.stop_all()


def payload(model="resnet18", image="chelsea.jpg"):
    return {"data": image_b64(image), "model_type": model}


def report_line(report, scenario):
    line = report.summary(scenario)
    print(line, file=sys.stderr)
    return line


def test_kill_model_process_mid_inference(cluster):
    """The model's own process (a batching worker's model host) killed under load: its batch runs
    again in a new one; nothing lost, and nothing delivered twice (the Celery process lived on)."""
    duplicates_before = cluster.duplicates()
    report = loadgen.send(cluster.api, payload(), 6 * SCALE, concurrency=2)
    cluster.wait_running(report)
    worker = cluster.worker_of("resnet18")
    victim, = [p["pid"] for p in worker["processes"]]
    assert worker["processes"][0]["model_process"] == "host"
    killed_at = time.monotonic()
    os.kill(victim, signal.SIGKILL)
    loadgen.collect(cluster.api, report, timeout=60 * SCALE)
    report.recovery_seconds = time.monotonic() - killed_at
    report.duplicated = cluster.duplicates() - duplicates_before
    report_line(report, "model process SIGKILLed")
    assert len(report.accepted) == 6 * SCALE
    assert report.lost == 0, report.not_succeeded(cluster.api)
    assert report.duplicated == 0, "a model process's death needs no redelivery"
    wait_until(lambda: cluster.pool_pid("resnet18") not in (None, victim), 60, interval=0.5, what="a new model process")
    assert cluster.worker_of("resnet18")["worker_id"] == worker["worker_id"]


def test_kill_whole_worker_and_restart(cluster):
    report = loadgen.send(cluster.api, payload(), 6 * SCALE, concurrency=2)
    cluster.wait_running(report)
    # The worker's consumer recorded the messages it holds (without waiting: inference/worker/unacked_records.py):
    # what brings them back once it is gone.
    records, indexed = cluster.redis.pipeline().hlen("unacked").zcard("unacked_index").execute()  # one moment (MULTI)
    assert records >= 1 and indexed == records
    worker_id = cluster.worker_of("resnet18")["worker_id"]
    crash = requests.post(f"{cluster.api}/simulate/crash", json={"worker": worker_id}, timeout=10)
    assert crash.status_code == 200 and crash.json()["crashed"] == [worker_id]
    killed_at = time.monotonic()
    wait_until(lambda: cluster.procs.procs[cluster.process_name("resnet18")].poll() is not None, 10, what="worker death")
    cluster.procs.stop(cluster.process_name("resnet18"))
    cluster.start_worker("resnet18", "res-a@%h", SLOW)
    loadgen.collect(cluster.api, report, timeout=90 * SCALE)
    report.recovery_seconds = time.monotonic() - killed_at
    report_line(report, "whole worker SIGKILLed and restarted")
    assert report.lost == 0, report.not_succeeded(cluster.api)
    # The unacked request returns after VISIBILITY_TIMEOUT (11 s) plus a 1 s sweep, not ~100 s.
    assert report.recovery_seconds < 45


def test_redis_restart_mid_load(cluster):
    report = loadgen.LoadReport()
    loadgen.send(cluster.api, payload("squeezenet"), 8 * SCALE, concurrency=2, report=report)
    cluster.procs.stop("chaos-redis", signal.SIGTERM)  # a clean shutdown flushes the append-only file
    stopped_at = time.monotonic()

    started = time.monotonic()
    down = requests.post(f"{cluster.api}/v1/inference", json=payload("squeezenet"), timeout=10)
    assert down.status_code == 503 and down.json()["error"]["code"] in ("broker_unavailable", "no_worker")
    assert "Retry-After" in down.headers
    assert time.monotonic() - started < 2.0
    assert requests.get(f"{cluster.api}/health", timeout=5).status_code == 503

    time.sleep(2)  # the outage lasts 2 s
    start_redis(cluster.procs, cluster.env, name="chaos-redis", url=cluster.redis_url,
                data_dir=cluster.procs.data_dirs["chaos-redis"])
    # The API and the workers reconnect by themselves.
    wait_until(lambda: requests.get(f"{cluster.api}/health", timeout=5).json()["models"]["squeezenet"]["workers"], 60,
               what="squeezenet worker back")
    loadgen.send(cluster.api, payload("squeezenet"), 4 * SCALE, concurrency=2, report=report)
    loadgen.collect(cluster.api, report, timeout=90 * SCALE)
    report.recovery_seconds = time.monotonic() - stopped_at
    report_line(report, "Redis restarted")
    assert len(report.accepted) == 12 * SCALE, report.refusals
    # Seen once on a slow machine: after the restart the worker answered control messages but took
    # no task (Celery's "stops consuming after reconnection" class); its log says what it did.
    assert report.lost == 0, f"{report.not_succeeded(cluster.api)}\n--- squeezenet worker log ---\n{cluster.log_tail('squeezenet')}"


def test_worker_that_keeps_failing_backs_off_then_fails(cluster):
    cluster.start_worker("mobilenet", "mob-flaky@%h", {"CHAOS_FAILURE_RATE": "1.0"})
    try:
        cluster.wait_ready({"mobilenet"})
        # The client retries the 503 an API process answers until its worker view includes the new worker.
        client = InferenceClient(cluster.api, retries=10, backoff=0.2)
        retries_before = metrics.read_retries(cluster.redis).get("mobilenet", 0)
        request_id = client.submit(TESTDATA / "chelsea.jpg", model="mobilenet")
        started = time.monotonic()
        body = client.wait(request_id, timeout=20)
        elapsed = time.monotonic() - started
        assert body["status"] == "failed"
        assert body["error"]["code"] == "transient_error" and "chaos" in body["error"]["message"]
        # MAX_RETRIES, no more: no retry storm (the same count /metrics shows)
        assert settled(lambda: metrics.read_retries(cluster.redis).get("mobilenet", 0)) - retries_before == 2
        exported = requests.get(f"{cluster.api}/metrics", headers=PROMETHEUS_ACCEPT, timeout=10).text
        assert f'inference_task_retries_total{{model="mobilenet"}} {float(retries_before + 2)}' in exported
        assert elapsed < 2 * 2 + 5  # two countdowns of at most RETRY_BACKOFF_MAX, plus three short runs
        print(f"[keeps failing] failed after 2 retries in {elapsed:.1f} s", file=sys.stderr)
    finally:
        cluster.procs.stop(cluster.process_name("mobilenet"))


def test_supervised_worker_comes_back_by_itself(cluster):
    """`python -m inference.cli.launch MODEL --restart` (the Procfile's way) restarts a crashed worker."""
    start_worker(cluster.procs, "efficientnet", cluster.env, name="eff-sup@%h", args=("--restart",))
    try:
        cluster.wait_ready({"efficientnet"})
        before = cluster.worker_of("efficientnet")["processes"][0]["pid"]
        # An API process whose worker view is a second old answers 404 (and sends nothing): ask again.
        wait_until(lambda: requests.post(f"{cluster.api}/simulate/crash", json={"model": "efficientnet"}, timeout=10).ok,
                   10, what="the crash command accepted")
        crashed_at = time.monotonic()
        wait_until(lambda: cluster.pool_pid("efficientnet") not in (None, before), 90, interval=0.5,
                   what="the supervised worker back")
        # Every API process may need a moment to see it again: the client retries 503s.
        result = InferenceClient(cluster.api, retries=10, backoff=0.2).classify(TESTDATA / "chelsea.jpg", model="efficientnet")
        assert result["model"] == "efficientnet" and result["worker_id"].startswith("eff-sup")
        print(f"[supervised worker crashed] back and serving after {time.monotonic() - crashed_at:.1f} s", file=sys.stderr)
    finally:
        cluster.procs.stop("worker-eff-sup@%h")


def test_a_worker_stopped_with_its_process_group_finishes_its_requests(cluster):
    """SIGTERM to the whole group (Ctrl-C, honcho, a container's stop) reaches the model process
    too: it ignores it and serves until the worker, finishing its requests, is gone."""
    start_worker(cluster.procs, "efficientnet", {**cluster.env, "CHAOS_LATENCY_MS": "1500"}, name="eff-stop@%h")
    cluster.wait_ready({"efficientnet"})
    model_pid = cluster.pool_pid("efficientnet")
    report = loadgen.send(cluster.api, payload("efficientnet"), 2, concurrency=2)
    wait_until(lambda: len(report.accepted) == 2 and all(
        requests.get(f"{cluster.api}/v1/inference/{rid}", timeout=5).json()["status"] == "running" for rid in list(report.accepted)),
        30, interval=0.05, what="both requests running")
    cluster.procs.stop("worker-eff-stop@%h", signal.SIGTERM)
    statuses = [requests.get(f"{cluster.api}/v1/inference/{rid}", timeout=5).json()["status"] for rid in report.accepted]
    assert statuses == ["success", "success"]
    log = (LOG_DIR / "worker-eff-stop@%h.log").read_text()
    assert "starting a new one" not in log  # the model process did not die under the requests
    wait_until(lambda: not Path(f"/proc/{model_pid}").exists(), 10, interval=0.2, what="the model process gone with its worker")


def test_all_workers_of_a_model_die(cluster):
    cluster.procs.stop(cluster.process_name("squeezenet"), signal.SIGKILL)
    killed_at = time.monotonic()
    wait_until(lambda: "squeezenet" not in {w["model"] for w in cluster.status()}, 10, what="squeezenet gone")
    # Every API process keeps its own view of the workers: twelve answers in a row all see it.
    wait_until(lambda: all(requests.get(f"{cluster.api}/health", timeout=5).json()["models"]["squeezenet"]["workers"] == 0
                           for _ in range(12)), 15, what="every API process to see squeezenet gone")
    health = requests.get(f"{cluster.api}/health", timeout=5).json()
    assert health["status"] == "degraded" and health["models"]["squeezenet"]["workers"] == 0
    report = loadgen.send(cluster.api, payload("any"), 4 * SCALE, concurrency=2)
    loadgen.collect(cluster.api, report, timeout=60 * SCALE)
    models = {requests.get(f"{cluster.api}/v1/inference/{rid}", timeout=5).json()["result"]["model"] for rid in report.accepted}
    assert models == {"resnet18"}
    refused = requests.post(f"{cluster.api}/v1/inference", json=payload("squeezenet"), timeout=10)
    assert refused.status_code == 503 and refused.json()["error"]["code"] == "no_worker"
    report.recovery_seconds = time.monotonic() - killed_at
    report_line(report, "all squeezenet workers dead")
    assert report.lost == 0, report.not_succeeded(cluster.api)


def test_chaos_endpoint_is_off_by_default(api):
    response = api.post(f"{api.base_url}/simulate/crash", json={"model": "resnet18"}, timeout=10)
    assert response.status_code == 404


# Network partition: a worker in its own network namespace loses its link to Redis for 10 s.
# The worker runs in a namespace made here (`ip netns`, a veth pair on 10.231.N.0/24); Redis
# listens on loopback (for the API) and on the host end of the veth (for the worker). Cutting the
# link leaves the worker's TCP connections hanging, not closed: when the link returns the worker
# must carry on by itself, and every request accepted meanwhile must complete.

PARTITION_SECONDS = 10


def sh(*args: str) -> None:
    subprocess.run(args, check=True, capture_output=True, timeout=10)


@pytest.fixture
def namespace():
    net = 100 + os.getpid() % 150
    name, host_if, ns_if = f"inf{os.getpid()}", f"vinf{os.getpid() % 100000}a", f"vinf{os.getpid() % 100000}b"
    host_ip, ns_ip = f"10.231.{net}.1", f"10.231.{net}.2"
    try:
        sh("ip", "netns", "add", name)
    except (OSError, subprocess.CalledProcessError) as exc:
        pytest.skip(f"cannot make a network namespace here ({exc}); the partition scenario needs root and iproute2")
    try:
        sh("ip", "link", "add", host_if, "type", "veth", "peer", "name", ns_if)
        sh("ip", "link", "set", ns_if, "netns", name)
        sh("ip", "addr", "add", f"{host_ip}/24", "dev", host_if)
        sh("ip", "link", "set", host_if, "up")
        sh("ip", "netns", "exec", name, "ip", "addr", "add", f"{ns_ip}/24", "dev", ns_if)
        sh("ip", "netns", "exec", name, "ip", "link", "set", ns_if, "up")
        sh("ip", "netns", "exec", name, "ip", "link", "set", "lo", "up")
        yield {"name": name, "host_ip": host_ip, "ns_if": ns_if}
    finally:
        subprocess.run(["ip", "netns", "del", name], capture_output=True)
        subprocess.run(["ip", "link", "del", host_if], capture_output=True)


def test_worker_survives_a_network_partition(namespace):
    procs = Processes()
    password = "partition-test"
    try:
        # A request caught storing its result when the link goes waits for the link: the time
        # limit, which covers that write too, must outlast the cut (see README, Fault tolerance).
        env = {**os.environ, "NO_WORKER_POLICY": "queue", "WORKER_CACHE_SECONDS": "1",
               "WORKER_TIMEOUT": str(2 * PARTITION_SECONDS), "VISIBILITY_TIMEOUT": str(3 * PARTITION_SECONDS + 10)}
        port = free_port()
        url = f"redis://:{password}@127.0.0.1:{port}/0"  # a password: it listens beyond loopback
        start_redis(procs, env, name="partition-redis", url=url, also_bind=(namespace["host_ip"],))
        env["REDIS_URL"] = url
        worker_env = {**env, "REDIS_URL": f"redis://:{password}@{namespace['host_ip']}:{port}/0"}
        start_worker(procs, "squeezenet", worker_env, name="sq-netns@%h", prefix=("ip", "netns", "exec", namespace["name"]))
        api = start_api(procs, env, name="partition-api")
        wait_until(lambda: requests.get(f"{api}/workers/status", timeout=5).json()["ready"] >= 1, 120, what="worker in netns")

        payload = {"data": image_b64(), "model_type": "squeezenet"}
        report = loadgen.send(api, payload, 4, concurrency=2)
        sh("ip", "netns", "exec", namespace["name"], "ip", "link", "set", namespace["ns_if"], "down")
        cut_at = time.monotonic()
        loadgen.send(api, payload, 6, interval=0.5, concurrency=2, report=report)  # accepted and queued meanwhile
        time.sleep(max(0.0, PARTITION_SECONDS - (time.monotonic() - cut_at)))
        sh("ip", "netns", "exec", namespace["name"], "ip", "link", "set", namespace["ns_if"], "up")
        healed_at = time.monotonic()
        loadgen.collect(api, report, timeout=120)
        report.recovery_seconds = time.monotonic() - healed_at
        print(report.summary(f"network partition {PARTITION_SECONDS} s"), file=sys.stderr)
        assert len(report.accepted) == 10, report.refusals
        assert report.lost == 0, report.not_succeeded(api)
    finally:
        procs.stop_all()


if __name__ == "__main__":
    import argparse

    parser = argparse.ArgumentParser(description="The resilience scenarios (killed workers and pool processes, a Redis "
                                     "restart, a model losing its workers, a network partition) on a cluster of their own.")
    parser.add_argument("--scale", type=int, default=SCALE, help="load multiplier (RESILIENCE_SCALE; make resilience uses 5)")
    options, rest = parser.parse_known_args()
    os.environ["RESILIENCE_SCALE"] = str(options.scale)
    os.chdir(Path(__file__).resolve().parents[1])
    # A fresh process: this one imported the project before the suite's conftest set its Redis.
    os.execv(sys.executable, [sys.executable, "-m", "pytest", "tests/test_resilience.py", "-s", "-p", "no:cacheprovider", *rest])
