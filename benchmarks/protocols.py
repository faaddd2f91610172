"""`python -m benchmarks.protocols`: what each way in costs, one picture at a time: /v1 (submit
and wait), the seed's synchronous POST /inference, and the Open Inference Protocol through
Triton's own client (classification extension, and every class's probability), each in
interleaved rounds against one squeezenet worker and the API started here.

    python -m benchmarks.protocols [--rounds 5] [--requests 40] [--json reports/protocols.json]
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import statistics
import time
from pathlib import Path

from rich.console import Console
from rich.progress import track
from rich.table import Table

PICTURE = Path(__file__).resolve().parents[1] / "tests" / "data" / "chelsea.jpg"


def callers(api: str) -> dict:
    import numpy as np
    import requests
    import tritonclient.http as httpclient

    raw = PICTURE.read_bytes()
    body = {"data": base64.b64encode(raw).decode(), "model_type": "squeezenet"}
    session = requests.Session()
    triton = httpclient.InferenceServerClient(api.removeprefix("http://"))

    def rest(path: str, **params):
        def call():
            answer = session.post(f"{api}{path}", params=params, json=body, timeout=30)
            assert answer.status_code == 200, answer.text
        return call

    def oip(**output):
        def call():
            pictures = httpclient.InferInput("image", [1], "BYTES")
            pictures.set_data_from_numpy(np.array([raw], dtype=np.object_))
            triton.infer("squeezenet", [pictures], outputs=[httpclient.InferRequestedOutput("probabilities", **output)])
        return call

    return {
        "POST /v1/inference?wait": rest("/v1/inference", wait=10),
        "POST /inference (synchronous)": rest("/inference"),
        "/v2 infer, class_count=5": oip(class_count=5),
        "/v2 infer, probabilities [1, 1000]": oip(),
    }


def measure(api: str, rounds: int, requests_per_round: int) -> dict[str, list[float]]:
    calls = callers(api)
    for call in calls.values():  # warm: connections, the worker's first batches
        for _ in range(5):
            call()
    times: dict[str, list[float]] = {name: [] for name in calls}
    for _ in track(range(rounds), description="rounds"):
        for name, call in calls.items():
            for _ in range(requests_per_round):
                started = time.perf_counter()
                call()
                times[name].append(1000 * (time.perf_counter() - started))
    return times


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--requests", type=int, default=40, help="requests per way in, per round")
    parser.add_argument("--json", type=Path, help="write the figures here")
    args = parser.parse_args(argv)
    from tests.system import Processes, start_api, start_redis, start_worker, wait_for_ready_workers

    procs = Processes()
    try:
        env = {**os.environ, "MODEL_WEIGHTS": os.environ.get("MODEL_WEIGHTS", "random")}
        env["REDIS_URL"] = start_redis(procs, env)
        start_worker(procs, "squeezenet", env, name=f"squeezenet-protocols-{os.getpid()}@%h")
        api = start_api(procs, env)
        wait_for_ready_workers(api, 1)
        times = measure(api, args.rounds, args.requests)
    finally:
        procs.stop_all()
    report = {name: {"median_ms": round(statistics.median(v), 2), "p90_ms": round(sorted(v)[int(0.9 * (len(v) - 1))], 2), "n": len(v)}
              for name, v in times.items()}
    table = Table(title="One picture at a time, squeezenet, by way in (interleaved rounds)")
    for column in ("way in", "median ms", "p90 ms", "requests"):
        table.add_column(column, justify="left" if column == "way in" else "right")
    for name, figures in report.items():
        table.add_row(name, f"{figures['median_ms']:.2f}", f"{figures['p90_ms']:.2f}", str(figures["n"]))
    Console().print(table)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
