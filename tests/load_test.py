"""Load test against a running API: `python tests/load_test.py --requests 200 --concurrent 16`.

Each request is `POST /v1/inference?wait=TIMEOUT` with a real image; latency is measured end to
end at the client. Meanwhile /health is probed, so its latency under load is reported too.
Shows a progress bar, then a summary table (throughput, success rate, latency percentiles,
counts per model and per worker); `--report out.html|out.png|out.json` writes a report.
"""

from __future__ import annotations

import argparse
import base64
import json
import statistics
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path

import requests
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # run as a script from anywhere

from inference.core.metrics import percentile  # noqa: E402

DEFAULT_IMAGE = Path(__file__).resolve().parent / "data" / "chelsea.jpg"


@dataclass
class Sample:
    started: float  # seconds since the run began
    latency: float
    status: str  # success, failed, expired, rejected_<code>, timeout, error
    model: str | None = None
    worker: str | None = None


@dataclass
class Results:
    samples: list[Sample] = field(default_factory=list)
    health_latencies: list[float] = field(default_factory=list)
    wall_seconds: float = 0.0


def one_request(session: requests.Session, args, payload: str, t0: float) -> Sample:
    started = time.perf_counter()
    try:
        response = session.post(f"{args.url}/v1/inference", params={"wait": args.timeout}, data=payload,
                                headers={"Content-Type": "application/json"}, timeout=args.timeout + 10)
        body = response.json()
        latency = time.perf_counter() - started
        if response.status_code == 200 and body.get("status") == "success":
            result = body["result"]
            return Sample(started - t0, latency, "success", result["model"], result["worker_id"].rsplit(":", 1)[0])
        if response.status_code in (200, 202):
            return Sample(started - t0, latency, body.get("status", "timeout") if response.status_code == 200 else "timeout")
        return Sample(started - t0, latency, f"rejected_{response.status_code}")
    except (requests.RequestException, ValueError):
        return Sample(started - t0, time.perf_counter() - started, "error")


def probe_health(args, stop: threading.Event, results: Results) -> None:
    session = requests.Session()
    while not stop.is_set():
        started = time.perf_counter()
        try:
            session.get(f"{args.url}/health", timeout=5)
            results.health_latencies.append(time.perf_counter() - started)
        except requests.RequestException:
            pass
        stop.wait(0.1)


def run(args, console: Console) -> Results:
    image = Path(args.image).read_bytes()
    encoded = base64.b64encode(image).decode()
    pictures = {"images": [encoded] * args.images_per_request} if args.images_per_request > 1 else {"data": encoded}
    payload = json.dumps({**pictures, "model_type": args.model, "priority": args.priority})
    results, stop = Results(), threading.Event()
    prober = threading.Thread(target=probe_health, args=(args, stop, results), daemon=True)
    prober.start()
    local = threading.local()

    def task(t0):
        if not hasattr(local, "session"):
            local.session = requests.Session()
        return one_request(local.session, args, payload, t0)

    columns = [TextColumn("[bold]load test"), BarColumn(), MofNCompleteColumn(), TextColumn("{task.fields[ok]} ok"), TimeElapsedColumn()]
    with Progress(*columns, console=console, transient=not args.verbose) as progress, ThreadPoolExecutor(args.concurrent) as pool:
        bar = progress.add_task("requests", total=args.requests, ok=0)
        t0 = time.perf_counter()
        futures = []
        if args.burst_mode:
            for start in range(0, args.requests, args.burst_size):
                futures += [pool.submit(task, t0) for _ in range(min(args.burst_size, args.requests - start))]
                if start + args.burst_size < args.requests:
                    time.sleep(args.burst_interval)
        else:
            futures = [pool.submit(task, t0) for _ in range(args.requests)]
        for future in futures:
            sample = future.result()
            results.samples.append(sample)
            progress.update(bar, advance=1, ok=sum(s.status == "success" for s in results.samples))
            if args.verbose and sample.status != "success":
                console.print(f"[yellow]{sample.status}[/] after {sample.latency * 1000:.0f} ms")
        results.wall_seconds = time.perf_counter() - t0
    stop.set()
    prober.join(timeout=2)
    return results


def summary(args, results: Results) -> dict:
    ok = [s for s in results.samples if s.status == "success"]
    latencies = [s.latency for s in ok]

    def ms(value):
        return None if value is None else round(value * 1000, 1)

    counts: dict[str, int] = {}
    for s in results.samples:
        counts[s.status] = counts.get(s.status, 0) + 1
    return {
        "requests": len(results.samples),
        "concurrency": args.concurrent,
        "mode": f"burst {args.burst_size} every {args.burst_interval} s" if args.burst_mode else "closed loop",
        "model": args.model,
        "priority": args.priority,
        "wall_seconds": round(results.wall_seconds, 3),
        "throughput_rps": round(len(ok) / results.wall_seconds, 2) if results.wall_seconds else 0.0,
        "images_per_request": args.images_per_request,
        "images_per_s": round(len(ok) * args.images_per_request / results.wall_seconds, 2) if results.wall_seconds else 0.0,
        "success_rate": round(len(ok) / len(results.samples), 4) if results.samples else 0.0,
        "outcomes": counts,
        "latency_ms": {"p50": ms(percentile(latencies, 50)), "p95": ms(percentile(latencies, 95)),
                       "p99": ms(percentile(latencies, 99)), "mean": ms(statistics.fmean(latencies)) if latencies else None,
                       "max": ms(max(latencies)) if latencies else None},
        "health_ms": {"p50": ms(percentile(results.health_latencies, 50)), "p95": ms(percentile(results.health_latencies, 95)),
                      "probes": len(results.health_latencies)},
        "per_model": _count(s.model for s in ok),
        "per_worker": _count(s.worker for s in ok),
    }


def _count(values) -> dict[str, int]:
    out: dict[str, int] = {}
    for value in values:
        out[value] = out.get(value, 0) + 1
    return dict(sorted(out.items()))


def print_summary(console: Console, report: dict) -> None:
    table = Table(title=f"Load test: {report['requests']} requests, {report['mode']}, concurrency {report['concurrency']}")
    table.add_column("metric")
    table.add_column("value", justify="right")
    table.add_row("throughput", f"{report['throughput_rps']} req/s")
    if report["images_per_request"] > 1:
        table.add_row(f"images ({report['images_per_request']} per request)", f"{report['images_per_s']} images/s")
    table.add_row("success rate", f"{report['success_rate'] * 100:.1f} %")
    for name, value in report["latency_ms"].items():
        table.add_row(f"latency {name}", f"{value} ms")
    table.add_row("/health p50 / p95 under load", f"{report['health_ms']['p50']} / {report['health_ms']['p95']} ms")
    for name, value in report["outcomes"].items():
        table.add_row(f"outcome {name}", str(value))
    for name, value in report["per_model"].items():
        table.add_row(f"model {name}", str(value))
    for name, value in report["per_worker"].items():
        table.add_row(f"worker {name}", str(value))
    console.print(table)


def write_report(path: Path, report: dict, results: Results) -> None:
    if path.suffix == ".json":
        path.write_text(json.dumps({**report, "samples": [asdict(s) for s in results.samples]}, indent=2))
        return
    import io

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (left, right) = plt.subplots(1, 2, figsize=(12, 4.5))
    latencies = [s.latency * 1000 for s in results.samples if s.status == "success"]
    left.hist(latencies, bins=40, color="#4f8fd6")
    for q, color in ((50, "green"), (95, "orange"), (99, "red")):
        value = report["latency_ms"][f"p{q}"]
        if value is not None:
            left.axvline(value, color=color, linestyle="--", label=f"p{q} {value} ms")
    left.set(title="Latency distribution", xlabel="ms", ylabel="requests")
    left.legend()
    finished = sorted(s.started + s.latency for s in results.samples if s.status == "success")
    if finished:
        seconds = int(finished[-1]) + 1
        per_second = [sum(1 for f in finished if int(f) == t) for t in range(seconds)]
        right.plot(range(seconds), per_second, marker="o", color="#3a9d5d")
    right.set(title="Completed requests per second", xlabel="s since start", ylabel="requests/s")
    fig.tight_layout()
    if path.suffix == ".png":
        fig.savefig(path, dpi=110)
        return
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=110)
    rows = "".join(f"<tr><td>{k}</td><td>{v}</td></tr>" for k, v in report.items())
    path.write_text(f"<!doctype html><meta charset='utf-8'><title>Load test report</title>"
                    f"<h1>Load test report</h1><table border=1 cellpadding=4>{rows}</table>"
                    f"<img src='data:image/png;base64,{base64.b64encode(buffer.getvalue()).decode()}'>")


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--url", default="http://127.0.0.1:8000", help="API base URL")
    parser.add_argument("--requests", type=int, default=100, help="total requests")
    parser.add_argument("--concurrent", type=int, default=10, help="requests in flight at once")
    parser.add_argument("--burst-mode", action="store_true", help="send bursts instead of a closed loop")
    parser.add_argument("--burst-size", type=int, default=20, help="requests per burst")
    parser.add_argument("--burst-interval", type=float, default=1.0, help="seconds between bursts")
    parser.add_argument("--timeout", type=float, default=30.0, help="seconds to wait for each result")
    parser.add_argument("--model", default="any", help="model_type of every request")
    parser.add_argument("--priority", default="normal", choices=["high", "normal", "low"])
    parser.add_argument("--image", default=str(DEFAULT_IMAGE), help="image file to send")
    parser.add_argument("--images-per-request", type=int, default=1, help="send the image this many times per request (`images`)")
    parser.add_argument("--report", type=Path, help="write a report: .html, .png or .json")
    parser.add_argument("--verbose", action="store_true", help="print every failure")
    return parser.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    console = Console()
    results = run(args, console)
    report = summary(args, results)
    print_summary(console, report)
    if args.report:
        write_report(args.report, report, results)
        console.print(f"report written to {args.report}")
    return 0 if report["success_rate"] == 1.0 else 1


if __name__ == "__main__":
    raise SystemExit(main())
