"""A guided tour of a running system (`make run` in another terminal first).

    python demo.py            # interactive: pauses between steps
    python demo.py --quick    # unattended

Steps: health, a real classification with every model, load spread over the workers, a
worker crash survived (needs CHAOS_ENABLED=true on the API), and a short benchmark.
"""

from __future__ import annotations

import argparse
import statistics
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import requests
from rich.console import Console
from rich.progress import track
from rich.table import Table

from inference.submit.client import InferenceClient, InferenceError

IMAGE = Path(__file__).resolve().parent / "tests" / "data" / "chelsea.jpg"
console = Console()


def step(title: str, quick: bool) -> None:
    console.rule(f"[bold]{title}")
    if not quick:
        console.input("[dim]press Enter to run this step[/] ")


def health(client: InferenceClient) -> dict:
    body = client.health()
    table = Table(title=f"system is {body['status']}")
    for column in ("model", "workers", "weights"):
        table.add_column(column)
    for model, info in body["models"].items():
        table.add_row(model, str(info["workers"]), ", ".join(info["weights"]) or "-")
    console.print(table)
    for warning in body.get("warnings", []):
        console.print(f"[yellow]warning:[/] {warning}")
    return body


def classify_everywhere(client: InferenceClient, models: list[str]) -> None:
    table = Table(title=f"{IMAGE.name} through the API")
    for column in ("model", "top class", "confidence", "weights", "worker", "ms"):
        table.add_column(column)
    for model in models:
        started = time.perf_counter()
        result = client.classify(IMAGE, model=model, top_k=5)
        top = result["predictions"][0]
        table.add_row(model, top["class"], f"{top['confidence']:.4f}", result["weights"], result["worker_id"],
                      f"{(time.perf_counter() - started) * 1000:.0f}")
    console.print(table)


def spread(client: InferenceClient, count: int = 24) -> None:
    with ThreadPoolExecutor(8) as pool:
        results = list(track(pool.map(lambda _: client.classify(IMAGE, model="any"), range(count)), total=count,
                             description="24 requests with model_type any", console=console))
    counts: dict[str, int] = {}
    for result in results:
        counts[result["worker_id"].rsplit(":", 1)[0]] = counts.get(result["worker_id"].rsplit(":", 1)[0], 0) + 1
    table = Table(title="served by")
    table.add_column("worker")
    table.add_column("requests", justify="right")
    for worker, n in sorted(counts.items()):
        table.add_row(worker, str(n))
    console.print(table)


def crash(client: InferenceClient, model: str = "resnet18") -> None:
    crashed = requests.post(f"{client.base_url}/simulate/crash", json={"model": model}, timeout=10)
    if crashed.status_code == 404:
        console.print("[yellow]skipped:[/] start the system with CHAOS_ENABLED=true to let the demo crash a worker")
        return
    ids = [client.submit(IMAGE, model=model) for _ in range(6)]
    console.print(f"crashed {crashed.json().get('crashed')}; 6 requests sent to {model}; waiting for the worker to return…")
    started = time.monotonic()
    statuses = [client.wait(i, timeout=90)["status"] for i in ids]
    console.print(f"{statuses.count('success')}/6 succeeded, {time.monotonic() - started:.1f} s after the crash")


def mini_benchmark(client: InferenceClient, count: int = 40) -> None:
    def timed(_):
        started = time.perf_counter()
        client.classify(IMAGE, model="any")
        return time.perf_counter() - started

    started = time.perf_counter()
    with ThreadPoolExecutor(4) as pool:
        latencies = sorted(track(pool.map(timed, range(count)), total=count, description="benchmark", console=console))
    wall = time.perf_counter() - started
    console.print(f"{count / wall:.1f} requests/s; latency p50 {statistics.median(latencies) * 1000:.0f} ms, "
                  f"p95 {latencies[int(0.95 * (count - 1))] * 1000:.0f} ms (4 in flight)")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--url", default="http://127.0.0.1:8000")
    parser.add_argument("--quick", action="store_true", help="run every step without pausing")
    args = parser.parse_args(argv)
    client = InferenceClient(args.url, timeout=60)
    try:
        step("1. health", args.quick)
        body = health(client)
        served = [m for m, info in body["models"].items() if info["workers"]]
        step("2. one real image, every model", args.quick)
        classify_everywhere(client, served)
        step("3. load spread across workers", args.quick)
        spread(client)
        step("4. a worker crash, survived", args.quick)
        crash(client, "resnet18" if "resnet18" in served else served[0])
        step("5. a short benchmark", args.quick)
        mini_benchmark(client)
    except (requests.ConnectionError, InferenceError) as exc:
        console.print(f"[red]the demo needs a running system (`make run`): {exc}[/]")
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
