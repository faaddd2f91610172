"""`make benchmark`: the system against a plain script doing the same work, in one run.

(a) plain script: one process decodes, preprocesses and classifies the test images with the
    same model and threads, at its best batch size;
(b) forward only: the model on ready tensors at that batch size;
(c) the system end to end (own Valkey, one resnet18 worker, the API under gunicorn): through
    the REST API and through Celery's apply_async, at saturation and at low load (one request
    at a time, `?wait`); and the API's submission rate on its own.

Prints a table of ratios and latencies, writes benchmark-results/benchmark.json and PNG charts.
Everything runs here, now, on this machine: the ratios are what to compare, not the absolutes.
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import statistics
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import requests
from rich.console import Console
from rich.progress import track
from rich.table import Table

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.system import Processes, start_api, start_redis, start_worker, wait_until  # noqa: E402

IMAGES = [ROOT / "tests" / "data" / name for name in ("chelsea.jpg", "astronaut.jpg")]
OUT = ROOT / "benchmark-results"
console = Console()


def pct(values, q):
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(q / 100 * (len(ordered) - 1))))] if ordered else None


def plain_script(model_name: str, threads: int, batch_sizes: list[int], seconds: float) -> dict:
    """(a) and (b), in this process: decode + preprocess + forward + top-k, then forward alone."""
    import torch

    from inference import model_runtime
    from inference.imaging import load_rgb
    from inference.registry import get_spec

    loaded = model_runtime.load(get_spec(model_name), "random", 0, threads=threads)
    raw = [p.read_bytes() for p in IMAGES]
    by_batch = {}
    for size in track(batch_sizes, description="plain script, per batch size", console=console):
        done, started = 0, time.perf_counter()
        while time.perf_counter() - started < seconds:
            pictures = [load_rgb(raw[i % len(raw)], 10**8) for i in range(size)]
            loaded.classify(pictures, 5)
            done += size
        by_batch[size] = done / (time.perf_counter() - started)
    best = max(by_batch, key=by_batch.get)
    batch = loaded.preprocess([load_rgb(raw[i % len(raw)], 10**8) for i in range(best)])
    done, started = 0, time.perf_counter()
    while time.perf_counter() - started < seconds:
        loaded.forward(batch)
        done += best
    forward_rps = done / (time.perf_counter() - started)
    single = [load_rgb(raw[0], 10**8)]
    compute = []
    for _ in range(30):
        t = time.perf_counter()
        loaded.classify(single, 5)
        compute.append(time.perf_counter() - t)
    del torch
    return {"by_batch_size": by_batch, "best_batch_size": best, "plain_rps": by_batch[best],
            "forward_rps": forward_rps, "compute_single_ms": statistics.median(compute) * 1000}


def rest_load(base: str, payloads: list[str], count: int, concurrency: int) -> dict:
    def one(i):
        t = time.perf_counter()
        r = session_for().post(f"{base}/v1/inference", params={"wait": 60}, data=payloads[i % len(payloads)],
                               headers={"Content-Type": "application/json"}, timeout=90)
        ok = r.status_code == 200 and r.json().get("status") == "success"
        return time.perf_counter() - t, ok

    return timed_pool(one, count, concurrency)


_sessions = {}


def session_for():
    import threading

    key = threading.get_ident()
    if key not in _sessions:
        _sessions[key] = requests.Session()
    return _sessions[key]


def celery_load(redis_url: str, images_b64: list[str], count: int, concurrency: int) -> dict:
    from celery import Celery

    client = Celery(broker=redis_url, backend=redis_url)

    def one(i):
        t = time.perf_counter()
        result = client.send_task("inference.classify", queue="resnet18.normal",
                                  kwargs={"image": images_b64[i % len(images_b64)], "model": "resnet18", "submitted_at": time.time()})
        body = result.get(timeout=90)
        result.backend.remove_pending_result(result)
        return time.perf_counter() - t, body["status"] == "success"

    return timed_pool(one, count, concurrency)


def timed_pool(fn, count, concurrency) -> dict:
    started = time.perf_counter()
    with ThreadPoolExecutor(concurrency) as pool:
        results = list(pool.map(fn, range(count)))
    wall = time.perf_counter() - started
    latencies = [r[0] for r in results if r[1]]
    return {"count": count, "concurrency": concurrency, "ok": len(latencies), "rps": len(latencies) / wall,
            "p50_ms": pct(latencies, 50) * 1000, "p95_ms": pct(latencies, 95) * 1000, "p99_ms": pct(latencies, 99) * 1000,
            "latencies_ms": [x * 1000 for x in latencies]}


def submission_rate(base: str, payload: str, count: int, concurrency: int) -> float:
    def one(_):
        r = session_for().post(f"{base}/v1/inference", data=payload, headers={"Content-Type": "application/json"}, timeout=30)
        return 0.0, r.status_code == 202

    return timed_pool(one, count, concurrency)["rps"]


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=4.0, help="duration of each plain-script measurement")
    parser.add_argument("--requests", type=int, default=200, help="requests per saturation run")
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0 = all cores)")
    args = parser.parse_args(argv)
    from inference.settings import cpu_count

    threads = args.threads or cpu_count()
    OUT.mkdir(exist_ok=True)
    console.rule("plain script and forward only (resnet18, random weights)")
    plain = plain_script("resnet18", threads, [1, 4, 8, 16], args.seconds)
    best = plain["best_batch_size"]

    console.rule("the system: Valkey, one resnet18 worker, the API")
    procs = Processes()
    env = {**os.environ, "MODEL_WEIGHTS": "random", "TORCH_THREADS": str(threads), "QUEUE_SIZE": "100000",
           "NO_WORKER_POLICY": "queue", "LOG_LEVEL": "WARNING", "MAX_BATCH_SIZE": str(best), "MAX_BATCH_DELAY_MS": "10"}
    try:
        env["REDIS_URL"] = start_redis(procs, env, name="bench-redis")
        start_worker(procs, "resnet18", env, name="bench@%h")
        api = start_api(procs, {**env, "API_WORKERS": "2"}, name="bench-api")
        wait_until(lambda: requests.get(f"{api}/workers/status", timeout=5).json()["ready"] >= 1, 120, what="worker")
        time.sleep(3)
        raw = [p.read_bytes() for p in IMAGES]
        images_b64 = [base64.b64encode(r).decode() for r in raw]
        payloads = [json.dumps({"data": b, "model_type": "resnet18"}) for b in images_b64]
        rest_load(api, payloads, 10, 2)  # warm-up
        runs = {}
        runs["rest_low_load"] = rest_load(api, payloads, 40, 1)
        runs["celery_low_load"] = celery_load(env["REDIS_URL"], images_b64, 40, 1)
        concurrency_sweep = {}
        for c in track([1, 4, best * 2, best * 4], description="REST, by concurrency", console=console):
            concurrency_sweep[c] = rest_load(api, payloads, max(args.requests // 2, 4 * c), c)
        runs["rest_saturation"] = rest_load(api, payloads, args.requests, best * 4)
        runs["celery_saturation"] = celery_load(env["REDIS_URL"], images_b64, args.requests, best * 4)
        no_worker_payload = json.dumps({"data": images_b64[0], "model_type": "squeezenet"})  # queued, never run
        submissions = submission_rate(api, no_worker_payload, 600, 16)
    finally:
        import gc

        gc.collect()  # drop Celery's pending results while their Redis still answers
        procs.stop_all()

    report = {
        "machine": {"cores": cpu_count(), "torch_threads": threads},
        "plain": plain,
        "runs": {k: {kk: vv for kk, vv in v.items() if kk != "latencies_ms"} for k, v in runs.items()},
        "concurrency_sweep": {c: {k: v for k, v in r.items() if k != "latencies_ms"} for c, r in concurrency_sweep.items()},
        "api_submissions_per_s": submissions,
        "ratios": {
            "rest_saturation_vs_plain": runs["rest_saturation"]["rps"] / plain["plain_rps"],
            "celery_saturation_vs_plain": runs["celery_saturation"]["rps"] / plain["plain_rps"],
            "rest_saturation_vs_forward": runs["rest_saturation"]["rps"] / plain["forward_rps"],
            "low_load_overhead_ms": runs["rest_low_load"]["p50_ms"] - plain["compute_single_ms"],
        },
    }
    (OUT / "benchmark.json").write_text(json.dumps(report, indent=2))
    print_table(report)
    draw(runs, concurrency_sweep, plain)
    return 0


def print_table(report: dict) -> None:
    plain, runs, ratios = report["plain"], report["runs"], report["ratios"]
    table = Table(title=f"resnet18 on {report['machine']['cores']} cores, {report['machine']['torch_threads']} torch threads")
    for column in ("what", "images/s", "vs plain", "vs forward", "p50 ms", "p95 ms", "p99 ms"):
        table.add_column(column, justify="right" if column != "what" else "left")
    table.add_row(f"plain script (batch {plain['best_batch_size']})", f"{plain['plain_rps']:.1f}", "1.00",
                  f"{plain['plain_rps'] / plain['forward_rps']:.2f}", f"{plain['compute_single_ms']:.1f} (1 image)", "", "")
    table.add_row("forward only", f"{plain['forward_rps']:.1f}", f"{plain['forward_rps'] / plain['plain_rps']:.2f}", "1.00", "", "", "")
    for name, run in runs.items():
        table.add_row(f"{name} (x{run['concurrency']})", f"{run['rps']:.1f}", f"{run['rps'] / plain['plain_rps']:.2f}",
                      f"{run['rps'] / plain['forward_rps']:.2f}", f"{run['p50_ms']:.1f}", f"{run['p95_ms']:.1f}", f"{run['p99_ms']:.1f}")
    console.print(table)
    console.print(f"low load: median {runs['rest_low_load']['p50_ms']:.1f} ms vs model compute {plain['compute_single_ms']:.1f} ms "
                  f"(overhead {ratios['low_load_overhead_ms']:.1f} ms; goal <= 10)")
    console.print(f"saturation: REST {ratios['rest_saturation_vs_plain']:.2f}x plain script (goal >= 0.9); "
                  f"API submissions: {report['api_submissions_per_s']:.0f}/s (goal >= 500)")
    console.print(f"written: {OUT / 'benchmark.json'}, {OUT / 'latency.png'}, {OUT / 'throughput.png'}")


def draw(runs: dict, sweep: dict, plain: dict) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 4.5))
    for name in ("rest_low_load", "celery_low_load", "rest_saturation", "celery_saturation"):
        ax.hist(runs[name]["latencies_ms"], bins=40, alpha=0.5, label=name)
    ax.axvline(plain["compute_single_ms"], color="black", linestyle="--", label="model compute (1 image)")
    ax.set(title="Latency distribution", xlabel="ms", ylabel="requests")
    ax.legend()
    fig.tight_layout()
    fig.savefig(OUT / "latency.png", dpi=110)

    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4.2))
    xs = sorted(sweep)
    left.plot(xs, [sweep[c]["rps"] for c in xs], marker="o", label="system (REST)")
    left.axhline(plain["plain_rps"], color="gray", linestyle="--", label="plain script")
    left.set(title="Throughput against concurrency", xlabel="requests in flight", ylabel="images/s")
    left.legend()
    sizes = sorted(plain["by_batch_size"])
    right.plot(sizes, [plain["by_batch_size"][s] for s in sizes], marker="o", color="#3a9d5d")
    right.set(title="Plain script throughput against batch size", xlabel="batch size", ylabel="images/s")
    fig.tight_layout()
    fig.savefig(OUT / "throughput.png", dpi=110)


if __name__ == "__main__":
    raise SystemExit(main())
