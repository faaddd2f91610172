"""What each hostile request costs a running system: `make attack-report` (against `make start`).

For each attack: its answer and how long it took, then the time of the next ordinary request to
the same model (the cat), the worker's pool processes' peak memory (VmHWM, read from /proc: the
system must run on this machine) and Redis's memory. A table at the end, and JSON with --json.

    python -m tests.attack_report --url http://127.0.0.1:8000 [--model resnet18] [--json out.json]
"""

from __future__ import annotations

import argparse
import base64
import json
import sys
import time
from pathlib import Path

import redis
import requests
from rich.console import Console
from rich.progress import Progress
from rich.table import Table

from tests import hostile

CAT = (Path(__file__).resolve().parent / "data" / "chelsea.jpg").read_bytes()


def attacks() -> dict[str, dict]:
    """name -> JSON body (without model_type)."""
    b64 = lambda raw: base64.b64encode(raw).decode()  # noqa: E731
    cases = {f"{fmt} {'wide' if wide else 'tall'} sliver": {"data": b64(hostile.sliver(fmt, wide))}
             for fmt in ("JPEG", "PNG", "WEBP") for wide in (True, False)}
    cases["JPEG of 1,000 scans (2000x2000)"] = {"data": b64(hostile.many_scans(2000, 1000))}
    cases["PNG zTXt inflating to 200 MB"] = {"data": b64(hostile.png_with_text_bomb())}
    at_limit = b64(hostile.flat_jpeg(10_000, 4_000))
    cases["one picture of 40 MP"] = {"data": at_limit}
    cases["3 pictures of 40 MP"] = {"images": [at_limit] * 3}
    cases["JSON nested 100,000 deep"] = "[" * 100_000 + "]" * 100_000
    return cases


def peak_rss_kb(pids: list[int]) -> int:
    """The most memory any of these processes has held since it started (VmHWM), in KiB."""
    peak = 0
    for pid in pids:
        try:
            status = Path(f"/proc/{pid}/status").read_text()
        except OSError:
            continue
        peak = max(peak, next(int(line.split()[1]) for line in status.splitlines() if line.startswith("VmHWM:")))
    return peak


def pool_pids(url: str, model: str) -> list[int]:
    workers = requests.get(f"{url}/workers/status", timeout=10).json()["workers"]
    return [p["pid"] for w in workers if w["model"] == model for p in w.get("processes", [])]


def ordinary(url: str, model: str) -> tuple[float, str]:
    started = time.perf_counter()
    response = requests.post(f"{url}/v1/inference", params={"wait": 120}, timeout=180,
                             json={"data": base64.b64encode(CAT).decode(), "model_type": model})
    return time.perf_counter() - started, response.json().get("status", str(response.status_code))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--url", default="http://127.0.0.1:8000")
    parser.add_argument("--model", default="resnet18")
    parser.add_argument("--redis-url", default=None, help="default: REDIS_URL from the settings")
    parser.add_argument("--json", type=Path)
    parser.add_argument("--only", default="", help="only the attacks whose name contains one of these (comma-separated)")
    args = parser.parse_args(argv)
    if args.redis_url is None:
        from inference.core.settings import get_settings

        args.redis_url = get_settings().redis_url
    store = redis.Redis.from_url(args.redis_url)
    console, rows = Console(width=None if sys.stdout.isatty() else 150), []
    baseline = sorted(ordinary(args.url, args.model)[0] for _ in range(5))[2]
    console.print(f"ordinary request to {args.model}: {baseline * 1000:.0f} ms (median of 5)")
    wanted = args.only.split(",")
    cases = {name: body for name, body in attacks().items() if any(part in name for part in wanted)}
    with Progress(console=console, transient=True) as progress:
        task = progress.add_task("attacking", total=len(cases))
        for name, body in cases.items():
            pids = pool_pids(args.url, args.model)
            started = time.perf_counter()
            if isinstance(body, str):
                response = requests.post(f"{args.url}/v1/inference", data=body, headers={"Content-Type": "application/json"}, timeout=300)
            else:
                response = requests.post(f"{args.url}/v1/inference", params={"wait": 120}, timeout=300,
                                         json={**body, "model_type": args.model})
            took = time.perf_counter() - started
            answer = response.json()
            code = (answer.get("error") or {}).get("code") or answer.get("status")
            memory_peak = peak_rss_kb(pids)
            after, after_status = ordinary(args.url, args.model)
            rows.append({"attack": name, "http": response.status_code, "answer": code, "seconds": round(took, 3),
                         "next_ordinary_seconds": round(after, 3), "next_ordinary": after_status,
                         "worker_peak_rss_mb": round(memory_peak / 1024, 1), "same_pool_processes": pool_pids(args.url, args.model) == pids,
                         "redis_used_mb": round(int(store.info("memory")["used_memory"]) / 2**20, 1)})
            progress.advance(task)
    table = Table(title=f"hostile requests to {args.model} (ordinary request alone: {baseline * 1000:.0f} ms)")
    for column in ("attack", "answer", "took", "next ordinary", "worker peak RSS", "same processes", "Redis"):
        table.add_column(column)
    for row in rows:
        table.add_row(row["attack"], f"{row['http']} {row['answer']}", f"{row['seconds']:.2f} s",
                      f"{row['next_ordinary_seconds'] * 1000:.0f} ms ({row['next_ordinary']})", f"{row['worker_peak_rss_mb']} MB",
                      "yes" if row["same_pool_processes"] else "NO", f"{row['redis_used_mb']} MB")
    console.print(table)
    if args.json:
        args.json.write_text(json.dumps({"baseline_seconds": baseline, "attacks": rows}, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
