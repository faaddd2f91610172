"""Beyond one machine, measured: Sentinel failovers under load, a worker host lost, and throughput
with 1, 2 and 4 worker hosts, each host a network namespace (inference/cluster/).

`make scale-out` runs the full scenarios and prints their tables (`python -m tests.scale_out
--help`); tests/test_scale_out.py runs a short version of each in `make test`.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import threading
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import requests
from rich.console import Console
from rich.progress import Progress
from rich.table import Table

from inference.cluster import topology
from inference.cluster.network import can_make_namespaces
from inference.cluster.processes import wait_until
from inference.cluster.topology import Cluster
from tests import loadgen
from tests.helpers import image_b64, settled

PRIORITIES = ("high", "normal", "low")
# Workers whose cost is latency, not CPU, for the scaling table: this 2-core machine must not be
# what limits 4 hosts. Each host: 4 task threads, each request taking `latency_ms`.
THREADS_PER_HOST = 4


def latency_worker(latency_ms: int) -> dict[str, str]:
    return {"CHAOS_LATENCY_MS": str(latency_ms), "MAX_BATCH_SIZE": "1", "WORKER_POOL": "threads",
            "WORKER_CONCURRENCY": str(THREADS_PER_HOST), "MODEL_INSTANCES": "1"}


def host_capacity(latency_ms: int) -> float:
    """Requests/s one latency-bound host can serve at most."""
    return THREADS_PER_HOST * 1000 / latency_ms


def payloads(models: tuple[str, ...]) -> list[dict]:
    """One request per model and priority, sent in turn."""
    picture = image_b64("chelsea.jpg")
    return [{"data": picture, "model_type": model, "priority": priority} for model in models for priority in PRIORITIES]


def duplicate_runs(cluster: Cluster) -> int:
    # Once the workers have sent their counts (metrics.SEND_EVERY after their last request).
    return settled(lambda: requests.get(f"{cluster.api}/v1/stats", timeout=10).json()["duplicate_runs"])


def worker_processes(cluster: Cluster) -> dict[str, set[int]]:
    """Each worker's model processes (pids): the same after a failover means nothing restarted."""
    workers = requests.get(f"{cluster.api}/workers/status", timeout=10).json()["workers"]
    return {w["worker_id"]: {p["pid"] for p in w["processes"]} for w in workers}


@dataclass
class FailoverRow:
    run: int
    how: str  # "SIGKILL" (the primary dies) or "COORDINATED" (SENTINEL FAILOVER ... COORDINATED: it hands over)
    accepted: int
    finished: int
    lost: int
    duplicates: int
    refused: int  # 503 with Retry-After, after the client's retries: allowed
    errors: int  # anything else (a 500, a hang): not allowed
    restarted: int  # workers whose model processes changed (none should)
    promoted_s: float  # the kill to every Sentinel naming the new primary
    first_success_s: float | None  # the kill to the first request submitted after it succeeding
    throughput_back_s: float | None  # the kill to the first second with 80 % of the offered rate finished


def failover(cluster: Cluster, run: int, *, seconds: float, rate: float, models: tuple[str, ...], kill: bool = True) -> FailoverRow:
    """`rate` requests/s for `seconds` across models and priorities; a third of the way in, the
    primary SIGKILLed (`kill`) or handed over by `SENTINEL FAILOVER`."""
    report = loadgen.LoadReport()
    duplicates_before, processes_before = duplicate_runs(cluster), worker_processes(cluster)
    count = int(seconds * rate)
    sender = threading.Thread(target=loadgen.send, args=(cluster.api, payloads(models), count),
                              kwargs={"interval": 1 / rate, "concurrency": 32, "report": report})
    sender.start()
    time.sleep(seconds / 3)
    old = cluster.kill_primary() if kill else cluster.hand_over_primary()
    killed_at = time.time()
    cluster.wait_for_new_primary(old)
    promoted_s = time.time() - killed_at
    sender.join()
    loadgen.collect(cluster.api, report, timeout=120)
    processes_after = worker_processes(cluster)
    restarted = sum(processes_after.get(worker) != pids for worker, pids in processes_before.items())
    if kill:
        cluster.rejoin(old)  # ready for the next run: three nodes again
    else:
        cluster.wait_for_replicas()
    results = list(report.results.values())
    after = sorted(r["finished_at"] - killed_at for r in results if r["submitted_at"] > killed_at)
    finished_after = [r["finished_at"] - killed_at for r in results if r["finished_at"] > killed_at]
    back = next((second for second in range(int(seconds))
                 if sum(second <= t < second + 1 for t in finished_after) >= 0.8 * rate), None)
    return FailoverRow(run, "SIGKILL" if kill else "COORDINATED", len(report.accepted), report.succeeded, report.lost, duplicate_runs(cluster) - duplicates_before,
                       report.refused - len(report.errors), len(report.errors), restarted, round(promoted_s, 1),
                       round(after[0], 1) if after else None, back)


@dataclass
class LatencyRow:
    wait_replicas: int
    median_ms: float
    p99_ms: float


def submission_latency(cluster: Cluster, apis: dict[int, str], count: int) -> list[LatencyRow]:
    """One submission at a time, alternating between an API that WAITs for a replica and one that does not."""
    body = payloads(("squeezenet",))[2]  # low priority: queued behind any real work
    times: dict[int, list[float]] = {replicas: [] for replicas in apis}
    with requests.Session() as session:
        for _ in range(count):
            for replicas, base in apis.items():
                started = time.perf_counter()
                response = session.post(f"{base}/v1/inference", json=body, timeout=10)
                times[replicas].append(time.perf_counter() - started)
                assert response.status_code == 202, response.text
    return [LatencyRow(replicas, round(statistics.median(t) * 1000, 2), round(statistics.quantiles(t, n=100)[98] * 1000, 2))
            for replicas, t in times.items()]


@dataclass
class HostLossRow:
    accepted: int
    finished: int
    lost: int
    held_by_lost_host: int  # requests its workers had taken when it went
    all_done_s: float  # the loss to the last request finished elsewhere


def lose_a_host(cluster: Cluster, *, requests_count: int, models: tuple[str, ...]) -> HostLossRow:
    """Load on every worker host; one host's link cut and its processes killed while it holds requests."""
    report = loadgen.LoadReport()
    victim = cluster.worker_hosts[-1]
    sender = threading.Thread(target=loadgen.send, args=(cluster.api, payloads(models), requests_count),
                              kwargs={"interval": 0.02, "concurrency": 8, "report": report})
    sender.start()

    def held_by_victim() -> int:
        workers = requests.get(f"{cluster.api}/workers/status", timeout=5).json()["workers"]
        return sum(w.get("held", 0) for w in workers if w["worker_id"].endswith(f"@{victim.name}"))

    held = wait_until(held_by_victim, 60, interval=0.1, what=f"{victim.name} holding requests")
    cluster.remove_worker_host(victim)
    lost_at = time.time()
    sender.join()
    loadgen.collect(cluster.api, report, timeout=180)
    finished = [r["finished_at"] for r in report.results.values()]
    return HostLossRow(len(report.accepted), report.succeeded, report.lost, held, round(max(finished) - lost_at, 1))


@dataclass
class ScalingRow:
    hosts: int
    requests: int
    seconds: float
    requests_per_s: float
    ratio: float  # against 1 host


def throughput(cluster: Cluster, requests_count: int) -> tuple[float, float]:
    """A backlog of `requests_count` sent at once; (seconds from the first start to the last finish, requests/s)."""
    report = loadgen.send(cluster.api, payloads(("squeezenet",)), requests_count, concurrency=16)
    loadgen.collect(cluster.api, report, timeout=300)
    assert report.lost == 0 and not report.refused, report.summary("scaling")
    results = report.results.values()
    seconds = max(r["finished_at"] for r in results) - min(r["started_at"] for r in results)
    return seconds, requests_count / seconds


def scaling(cluster: Cluster, host_counts: tuple[int, ...], seconds_each: float, latency_ms: int) -> list[ScalingRow]:
    """Add latency-bound worker hosts up to each count in turn; throughput at each."""
    rows: list[ScalingRow] = []
    for hosts in host_counts:
        while len(cluster.worker_hosts) < hosts:
            cluster.add_worker_host(("squeezenet",), **latency_worker(latency_ms))
        cluster.wait_for_workers(hosts)
        count = int(seconds_each * host_capacity(latency_ms) * hosts)
        took, rate = throughput(cluster, count)
        rows.append(ScalingRow(hosts, count, round(took, 1), round(rate, 1), round(rate / rows[0].requests_per_s, 2) if rows else 1.0))
    return rows


def table(title: str, rows: list) -> Table:
    out = Table(title=title)
    names = list(asdict(rows[0]))
    for name in names:
        out.add_column(name.replace("_", " "), justify="right")
    for row in rows:
        out.add_row(*("-" if v is None else str(v) for v in asdict(row).values()))
    return out


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--failovers", type=int, default=3, help="failover runs in a row")
    parser.add_argument("--seconds", type=float, default=60, help="load per failover run")
    parser.add_argument("--rate", type=float, default=20, help="requests/s during a failover run")
    parser.add_argument("--hosts", default="1,2,4", help="worker host counts of the scaling table")
    parser.add_argument("--scaling-seconds", type=float, default=15, help="backlog per scaling step, in seconds of work")
    parser.add_argument("--latency-ms", type=int, default=1000,
                        help="what each request costs a scaling worker (chaos latency): long enough that the machine's cores are not the limit")
    parser.add_argument("--latency-samples", type=int, default=300, help="submissions per API in the latency comparison")
    parser.add_argument("--parts", default="latency,failover,host_loss,scaling", help="which scenarios, comma-separated")
    parser.add_argument("--json", type=Path, default=Path("reports/scale-out.json"))
    args = parser.parse_args(argv)
    if reason := can_make_namespaces():
        sys.exit(f"scale-out: {reason}")
    console = Console(width=None if sys.stdout.isatty() else 160)  # a log file gets whole tables
    models = ("squeezenet", "mobilenet")
    report: dict[str, list] = {}
    titles = {"latency": "Submission latency (one at a time): REDIS_WAIT_REPLICAS 1 vs 0",
              "failover": f"Failovers under {args.rate:g} requests/s ({', '.join(models)}; all priorities)",
              "host_loss": "A worker host lost (link down, then its processes killed)",
              "scaling": f"Throughput by worker hosts ({args.latency_ms} ms per request, {THREADS_PER_HOST} at a time: "
                         f"{host_capacity(args.latency_ms):g} requests/s per host at most)"}
    parts = set(args.parts.split(","))

    with Progress(console=console, transient=True) as progress:
        task = progress.add_task("starting: 3 Redis, 3 Sentinels, the API, 2 worker hosts", total=None)
        if parts & {"latency", "failover", "host_loss"}:
            cluster = topology.start(worker_hosts=2, models=models)
            try:
                cluster.wait_for_workers(2 * len(models))
                if "latency" in parts:
                    no_wait = cluster.start_api(name="api-no-wait", port=topology.API_PORT + 1, REDIS_WAIT_REPLICAS="0")
                    progress.update(task, description="submission latency with and without WAIT")
                    report["latency"] = submission_latency(cluster, {1: cluster.api, 0: no_wait}, args.latency_samples)
                for run in range(1, args.failovers + 1 if "failover" in parts else 1):
                    progress.update(task, description=f"failover {run} of {args.failovers}: {args.rate:g} requests/s for {args.seconds:g} s")
                    report.setdefault("failover", []).append(failover(cluster, run, seconds=args.seconds, rate=args.rate, models=models))
                if "failover" in parts:  # and once more as a planned switch: the old primary lives on, a replica
                    progress.update(task, description="SENTINEL FAILOVER COORDINATED: the primary handed over under load")
                    report["failover"].append(failover(cluster, args.failovers + 1, seconds=args.seconds, rate=args.rate,
                                                       models=models, kill=False))
                if "host_loss" in parts:
                    progress.update(task, description="a worker host lost under load")
                    report["host_loss"] = [lose_a_host(cluster, requests_count=int(args.rate * 10), models=models)]
            finally:
                cluster.close()
        if "scaling" in parts:
            hosts = tuple(int(n) for n in args.hosts.split(","))
            progress.update(task, description=f"scaling: {', '.join(map(str, hosts))} latency-bound worker hosts")
            cluster = topology.start(worker_hosts=0)
            try:
                report["scaling"] = scaling(cluster, hosts, args.scaling_seconds, args.latency_ms)
            finally:
                cluster.close()

    for name, rows in report.items():
        console.print(table(titles[name], rows))
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps({name: [asdict(row) for row in rows] for name, rows in report.items()}, indent=2))
    console.print(f"JSON: {args.json}")


if __name__ == "__main__":
    main()
