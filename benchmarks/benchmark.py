"""`make benchmark` (`python -m benchmarks`): the system against a plain script doing the same work, in one run.

(a) plain script: one process decodes, preprocesses and classifies the test images with the
    same model and threads, at its best batch size;
(b) forward only: the model on ready tensors at that batch size;
(c) the system end to end (own Valkey, one resnet18 worker, the API as `make run` serves it): through
    the REST API and through Celery's apply_async, at saturation and at low load (one request
    at a time, `?wait`); and the API's submission rate on its own;
(d) requests of many images (`--images-per-request`) through both, against the plain script.

On a CUDA machine the plain script decodes with nvJPEG like the worker (`make benchmark-gpu`).

Each round runs the plain script before, between and after the system's saturation runs
(plain, REST, plain, apply_async, plain); each ratio is taken against the plain runs on either
side of the system's, and the table shows medians over rounds. One request at a time
alternates in blocks of LOW_LOAD_BLOCK requests with blocks of the plain script's one-image
pass. Prints a table of ratios, latencies and CPU per request by process, writes
benchmark-results/benchmark.json and PNG charts. Everything runs here, now, on this
machine: the ratios are what to compare, not the absolutes.
"""

from __future__ import annotations

import argparse
import base64
import functools
import http.client
import json
import os
import platform
import statistics
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

import requests
from rich.console import Console
from rich.progress import track
from rich.table import Table

from inference.core.metrics import percentile
from tests.system import Processes, cpu_seconds, process_stats, start_api, start_redis, start_worker, wait_until

ROOT = Path(__file__).resolve().parent.parent

if TYPE_CHECKING:
    import torch

IMAGES = [ROOT / "tests" / "data" / name for name in ("chelsea.jpg", "astronaut.jpg")]
# One request at a time, the system's and the plain script's alternate in blocks this long: the
# machine's speed drifts within seconds here (in one run, the worker's median pass through the
# model 33 ms in REST's block of 30 requests and 42 ms in apply_async's right after), and a
# block a second long compared with one timed seconds earlier measured the drift, not the system.
LOW_LOAD_BLOCK = 5
OUT = ROOT / "benchmark-results"
console = Console()


class PlainScript:
    """(a) and (b), in this process: what a user would write around the same model, with the
    worker's model options (runtime and precision, device, MODEL_OPTIMIZE, WORKER_CHANNELS_LAST,
    WORKER_FP16, IMAGE_DECODER: JPEGs decoded on a CUDA device, and GOMP_SPINCOUNT) so that only
    the system differs; or with PyTorch's eager fp32 model (`runtime="torch", optimize="none"`)."""

    def __init__(self, model_name: str, threads: int, optimize: str | None = None, runtime: str | None = None,
                 pictures: list[bytes] | None = None, draft: bool = False):
        from inference.worker.sizing import openmp_wait_policy

        openmp_wait_policy()  # as a worker's, before torch loads (it made no difference to the plain script alone)
        from inference.core.imaging import load_rgb, model_input
        from inference.core.registry import get_spec
        from inference.core.settings import get_settings
        from inference.worker import model_runtime, tensor_decode

        settings = get_settings()
        self.loaded = model_runtime.load(get_spec(model_name), "random", 0, threads=threads,
                                         optimize=optimize or settings.model_optimize, device=settings.worker_device,
                                         channels_last=settings.worker_channels_last, fp16=settings.worker_fp16,
                                         runtime=runtime or settings.worker_runtime, precision=settings.worker_precision,
                                         cache_dir=settings.model_cache_dir)
        self.tensor_decode = tensor_decode
        # The whole picture decoded (what a script does), or with `draft` as the workers decode it
        # (a large JPEG at a reduced scale: inference/core/imaging.py).
        self.decode = (lambda raw: model_input(raw, 10**8, self.loaded.resize_to)) if draft else (lambda raw: load_rgb(raw, 10**8))
        self.raw = pictures or [p.read_bytes() for p in IMAGES]
        self.passes = 0  # single passes so far: which picture is next

    def raws(self, count: int) -> list[bytes]:
        return [self.raw[i % len(self.raw)] for i in range(count)]

    def inputs(self, count: int) -> torch.Tensor:
        return self.prepared(self.raws(count))

    def prepared(self, raws: list[bytes]) -> torch.Tensor:
        """The pictures decoded and preprocessed, as one batch on the model's device."""
        if self.tensor_decode.used_for(self.loaded.device):
            pictures = self.tensor_decode.decode(raws, self.loaded.device)
            return self.loaded.batch_of(self.tensor_decode.preprocess(pictures, self.loaded.transforms))
        return self.loaded.preprocess([self.decode(raw) for raw in raws])

    def rps(self, batch_size: int, seconds: float) -> float:
        """Decode + preprocess + forward + top-k, batch after batch."""
        done, started = 0, time.perf_counter()
        while time.perf_counter() - started < seconds:
            self.loaded.postprocess(self.loaded.scores(self.inputs(batch_size)), 5)
            done += batch_size
        return done / (time.perf_counter() - started)

    def forward_rps(self, batch_size: int, seconds: float) -> float:
        batch = self.inputs(batch_size)
        done, started = 0, time.perf_counter()
        while time.perf_counter() - started < seconds:
            self.loaded.forward(batch)
            done += batch_size
        return done / (time.perf_counter() - started)

    def single_passes_ms(self, count: int) -> list[float]:
        """The plain script's time for one request, `count` times back to back: decode +
        preprocess + forward + top-k of one picture, the same work as its batches (and as the
        worker's `compute_time`). The pictures take turns over all the calls, as the requests'
        do: the first alone, always, had made the plain pass ~0.3 ms quicker than the requests'
        mix on Zen 5 (chelsea.jpg 5.5 ms, astronaut.jpg 6.2)."""
        times = []
        for _ in range(count):
            raw = self.raw[self.passes % len(self.raw)]
            self.passes += 1
            started = time.perf_counter()
            self.loaded.postprocess(self.loaded.scores(self.prepared([raw])), 5)
            times.append((time.perf_counter() - started) * 1000)
        return times


def process_cpu_seconds(pid: int) -> float:
    """CPU time of a process and every process in its session (a worker's pool, the API server's processes)."""
    # Session id: the test helpers start each server in its own session.
    return sum(cpu_seconds(member) for member, fields in process_stats() if int(fields[3]) == pid)


def cpu_per_request(pids: dict[str, int], run) -> tuple[dict, dict[str, float]]:
    """`run()`'s result, and the CPU each part (its processes; this client) spent per request of it."""
    def now() -> dict[str, float]:
        return {name: process_cpu_seconds(pid) for name, pid in pids.items()} | {"client": time.process_time()}

    before = now()
    result = run()
    after = now()
    return result, {name: 1000 * (after[name] - before[name]) / result["count"] for name in after}


def rest_request(base: str, payloads: list[str]):
    """One request through the REST API (`?wait`), timed: (seconds, ok, result, answered at)."""
    def one(i):
        t = time.perf_counter()
        status, body = post_json(base, "/v1/inference?wait=60", payloads[i % len(payloads)], timeout=90)
        ok = status == 200 and body.get("status") == "success"
        return time.perf_counter() - t, ok, body.get("result") if ok else None, time.time()

    return one


def rest_load(base: str, payloads: list[str], count: int, concurrency: int) -> dict:
    return timed_pool(rest_request(base, payloads), count, concurrency)


_connections = threading.local()


def post_json(base: str, path: str, body: str, timeout: float) -> tuple[int, dict]:
    """POST a JSON body on this thread's keep-alive connection to `base`. http.client, not
    requests: the load generator shares the machine with what it measures, and requests cost
    0.66 ms of CPU per request here against 0.17 ms. A kept connection the API closed while it
    sat idle (API_KEEPALIVE: a thread unused for a phase of the run) is opened again once, as
    HTTP clients' pools do."""
    connections = _connections.__dict__.setdefault("by_base", {})
    for attempt in range(2):
        reused = base in connections
        if not reused:
            url = urlsplit(base)
            connections[base] = http.client.HTTPConnection(url.hostname, url.port, timeout=timeout)
        connection = connections[base]
        try:
            connection.request("POST", path, body=body, headers={"Content-Type": "application/json"})
            response = connection.getresponse()
            return response.status, json.loads(response.read())
        except (OSError, http.client.HTTPException) as exc:
            connections.pop(base).close()  # the next request opens a fresh one
            closed_while_idle = isinstance(exc, (BrokenPipeError, ConnectionResetError, http.client.RemoteDisconnected))
            if not (closed_while_idle and reused and not attempt):
                raise
    raise AssertionError("unreachable")


@functools.cache
def celery_client(redis_url: str):
    """The README's client (a plain Celery app), one for the whole benchmark as a service keeps one."""
    from celery import Celery

    client = Celery(broker=redis_url, backend=redis_url)
    client.conf.broker_transport_options = {"body_encoding": None}  # as celeryconfig.py: no base64 layer on message bodies
    return client


def celery_request(redis_url: str, requests_kwargs: list[dict]):
    """One request through Celery (send_task, then get), timed as `rest_request`'s."""
    client = celery_client(redis_url)

    def one(i):
        t = time.perf_counter()
        result = client.send_task("inference.classify", queue="resnet18.normal",
                                  kwargs={**requests_kwargs[i % len(requests_kwargs)], "model": "resnet18", "submitted_at": time.time()})
        body = result.get(timeout=90)
        result.backend.remove_pending_result(result)
        return time.perf_counter() - t, body["status"] == "success", body, time.time()

    return one


def celery_load(redis_url: str, requests_kwargs: list[dict], count: int, concurrency: int) -> dict:
    return timed_pool(celery_request(redis_url, requests_kwargs), count, concurrency)


_client_threads: dict[int, ThreadPoolExecutor] = {}


def client_threads(concurrency: int) -> ThreadPoolExecutor:
    """The same client threads run after run, as a service's would: their keep-alive connections
    and Celery's per-thread result backends (an entry-point scan and a connection pool each,
    ~20 ms of CPU) are set up in the warm-up, not in a measurement. New threads per run had
    put 32 of those into each 160-request saturation run (client CPU 3.9 ms per request)."""
    if concurrency not in _client_threads:
        _client_threads[concurrency] = ThreadPoolExecutor(concurrency, thread_name_prefix=f"client-x{concurrency}")
    return _client_threads[concurrency]


def timed_pool(fn, count, concurrency) -> dict:
    pool = client_threads(concurrency)
    finished_at: list[float] = []  # the client's clock when each successful request came back

    def timed(i):
        result = fn(i)
        if result[1]:
            finished_at.append(time.perf_counter())
        return result

    started = time.perf_counter()
    results = list(pool.map(timed, range(count)))
    wall = time.perf_counter() - started
    return run_summary(results, concurrency, wall, sustained_rps(finished_at, concurrency))


def run_summary(results: list, concurrency: int, wall: float, rps: float | None = None) -> dict:
    """A run's figures from its timed requests (see `rest_request`), `wall` seconds in all."""
    latencies = [r[0] for r in results if r[1]]
    whole_run = len(latencies) / wall
    return {"count": len(results), "concurrency": concurrency, "ok": len(latencies), "rps_whole_run": whole_run,
            "rps": rps or whole_run,
            "p50_ms": percentile(latencies, 50) * 1000, "p95_ms": percentile(latencies, 95) * 1000,
            "p99_ms": percentile(latencies, 99) * 1000,
            "latencies_ms": [x * 1000 for x in latencies],
            "breakdown_ms": breakdown([r for r in results if r[1] and len(r) > 2])}


def one_at_a_time(plain: PlainScript, senders: dict, count: int) -> tuple[dict[str, dict], list[float]]:
    """`count` requests one at a time through each of `senders` (name -> `rest_request`-like),
    in blocks of LOW_LOAD_BLOCK with a block of the plain script's one-image pass before, between
    and after them: plain, REST, plain, apply_async, plain, REST, ... Returns each sender's run
    and every plain pass (ms), taken over the same seconds as the system's requests. The
    requests go from the one client thread the warm-up used (its connection, its Celery
    backend); the plain passes run here, on the thread that set up the plain script's torch."""
    client = client_threads(1)
    timed: dict[str, list] = {name: [] for name in senders}
    walls = dict.fromkeys(senders, 0.0)
    passes = plain.single_passes_ms(LOW_LOAD_BLOCK)
    for first in range(0, count, LOW_LOAD_BLOCK):
        for name, send in senders.items():
            started = time.perf_counter()
            timed[name] += [client.submit(send, i).result() for i in range(first, min(count, first + LOW_LOAD_BLOCK))]
            walls[name] += time.perf_counter() - started
            passes += plain.single_passes_ms(LOW_LOAD_BLOCK)
    return {name: run_summary(results, 1, walls[name]) for name, results in timed.items()}, passes


IDLE_GAP_S = 0.015  # about how long Redis and the API sit idle while a lone request's model runs


def round_trip_us(redis_url: str, count: int = 60) -> dict[str, float]:
    """A Redis PING's round trip, median us: back to back, and after IDLE_GAP_S with nothing to
    do, as each process a lone request waits on has had. On a KVM guest whose idle CPUs halt it
    read 133 against 343 us (a probe with a Valkey of its own: 39 against 389): what one such
    wait costs there, more than the work done in it."""
    import redis

    client = redis.Redis.from_url(redis_url)

    def median_us(gap: float) -> float:
        took = []
        for _ in range(count):
            time.sleep(gap)
            started = time.perf_counter()
            client.ping()
            took.append(time.perf_counter() - started)
        return 1e6 * statistics.median(took)

    median_us(0)  # the connection made, the paths warm
    try:
        return {"back_to_back": median_us(0), "after_idle": median_us(IDLE_GAP_S)}
    finally:
        client.close()


def sustained_rps(finished_at: list[float], concurrency: int) -> float | None:
    """Requests per second while `concurrency` were in flight the whole time: from the
    concurrency-th answer to the concurrency-th from last. The first answers come from requests
    sent into an idle system, the last ones while it drains (in the end one model instance
    finishes its batch while the other has nothing left): 3-5 % of a 160-request run at 32 in
    flight here, which the plain script, batch after batch, never pays. None for runs too short
    to leave a middle of at least `concurrency` answers."""
    done = sorted(finished_at)
    if len(done) < 3 * concurrency:
        return None
    first, last = done[concurrency - 1], done[-concurrency - 1]
    return (len(done) - 2 * concurrency) / (last - first)


def breakdown(results: list) -> dict:
    """Where a request's time went (medians): from the client until it was submitted (HTTP and
    the API's checks), queued (until a worker started it), in the worker besides the model, the model (decode + preprocess + forward + top-k, shared by
    its batch), and after the worker finished until the client had the answer."""
    rows = [(total - body["queue_time"] - body["processing_time"] - (received - body["finished_at"]), body["queue_time"],
             body["processing_time"] - body["compute_time"], body["compute_time"], received - body["finished_at"])
            for total, _, body, received in results if body and body.get("queue_time") is not None]
    if not rows:
        return {}
    return {name: 1000 * statistics.median(column)
            for name, column in zip(("to_submission", "queued", "worker_other", "model", "to_client"), zip(*rows))}


def submission_rate(base: str, payload: str, count: int, concurrency: int) -> float:
    def one(_):
        return 0.0, post_json(base, "/v1/inference", payload, timeout=30)[0] == 202

    return timed_pool(one, count, concurrency)["rps"]


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=3.0, help="duration of each plain-script measurement")
    parser.add_argument("--requests", type=int, default=256,
                        help="requests per saturation run; throughput is taken over all but the first and last `in flight` answers")
    parser.add_argument("--rounds", type=int, default=5, help="rounds of (plain script, system, plain script), each compared within itself")
    parser.add_argument("--threads", type=int, default=0, help="torch threads in all (0 = all cores)")
    parser.add_argument("--instances", type=int, default=0, help="the worker's MODEL_INSTANCES (0 = what the worker picks on its own)")
    parser.add_argument("--workers", type=int, default=1,
                        help="the worker's replicas (WORKER_REPLICAS): worker processes for the model, each with its own GIL "
                             "(on a GPU, all on the one device)")
    parser.add_argument("--low-load", type=int, default=30, help="requests per low-load run (one at a time)")
    parser.add_argument("--submissions", type=int, default=600, help="requests per run of the API's submission rate")
    parser.add_argument("--batch-sizes", default="1,4,8,16", help="the plain script's batch sizes to try (the largest within 5 %% of the best is the worker's MAX_BATCH_SIZE)")
    parser.add_argument("--images-per-request", type=int, default=16,
                        help="batched submissions: images in one request (`images`) for the last runs; 0 = skip them")
    parser.add_argument("--many-requests", type=int, default=20, help="requests per run of batched submissions")
    parser.add_argument("--many-concurrency", type=int, default=4, help="batched submissions in flight")
    parser.add_argument("--api-workers", type=int, default=2, help="processes of the API's server (API_WORKERS)")
    parser.add_argument("--out", type=Path, default=OUT, help="where the JSON and the charts go")
    return parser.parse_args(argv)


def best_batch(plain: PlainScript, args: argparse.Namespace) -> tuple[dict[int, float], int]:
    """The plain script's images/s by batch size, and the best size. Each size twice, in one
    order and then the other: a drifting machine favours none of them."""
    sizes = [int(size) for size in args.batch_sizes.split(",")]
    timed_sizes = [(size, plain.rps(size, args.seconds / 2)) for size in track(sizes + sizes[::-1], description="by batch size", console=console)]
    by_batch = {size: statistics.mean(rps for timed, rps in timed_sizes if timed == size) for size in sizes}
    return by_batch, max(by_batch, key=by_batch.__getitem__)


# The worker batches at the largest size the plain script runs within this fraction of its best.
# Where batching gains the forward pass little (AMX), noise made batch 1 the plain script's best
# (86.1 images/s, the others within a few %), and a worker run at batch 1 lost what batching saves
# it per request (0.69x, against 0.85-0.89x at 16). The plain script still runs at its own best.
NEAR_BEST = 0.05


def worker_batch(by_batch: dict[int, float]) -> int:
    """The worker's MAX_BATCH_SIZE: the largest size within NEAR_BEST of the plain script's best."""
    best = max(by_batch.values())
    return max(size for size, rps in by_batch.items() if rps >= (1 - NEAR_BEST) * best)


def system_env(args: argparse.Namespace, batch: int, instances: int, threads: int, device: str) -> dict[str, str]:
    """The system's settings: one resnet18 worker batching at `batch` (`worker_batch`)."""
    return {**os.environ, "MODEL_WEIGHTS": "random", "QUEUE_LIMIT": "100000", "NO_WORKER_POLICY": "queue",
            "LOG_LEVEL": "WARNING", "WORKER_POOL": "threads", "MAX_BATCH_SIZE": str(batch), "MAX_BATCH_DELAY_MS": "10",
            "MODEL_INSTANCES": str(instances), "WORKER_REPLICAS": str(args.workers),
            # On a CPU, the plain script's threads shared among the workers' instances; on a GPU the worker's own choice (1).
            **({"TORCH_THREADS": str(max(1, threads // (instances * args.workers)))} if device == "cpu" else {}),
            "MAX_ITEMS_PER_REQUEST": str(max(32, args.images_per_request)), "MAX_CONTENT_LENGTH": str(64 * 1024 * 1024)}


def one_round(plain: PlainScript, args: argparse.Namespace, best: int, pids: dict, api: str, redis_url: str,
              payloads: list[str], singles: list[dict], in_flight: int) -> dict:
    """Plain, REST, plain, apply_async, plain; then one request at a time against the plain
    script's one-image passes. Each saturation run sits between two of the plain script's, whose
    mean it is compared with: the machine's drift over the seconds of a run (5-10 % here) cancels out."""
    one: dict = {"plain_rps_around": [plain.rps(best, args.seconds)]}
    one["rest_saturation"], rest_cpu = cpu_per_request(pids, lambda: rest_load(api, payloads, args.requests, in_flight))
    one["plain_rps_around"].append(plain.rps(best, args.seconds))
    one["celery_saturation"], celery_cpu = cpu_per_request(pids, lambda: celery_load(redis_url, singles, args.requests, in_flight))
    one["plain_rps_around"].append(plain.rps(best, args.seconds))
    one["cpu_ms_per_request"] = {"rest_saturation": rest_cpu, "celery_saturation": celery_cpu}
    before_rest, between, after_celery = one["plain_rps_around"]
    one["plain_rps_for"] = {"rest_saturation": (before_rest + between) / 2, "celery_saturation": (between + after_celery) / 2}
    one["plain_rps"] = statistics.mean(one["plain_rps_around"])
    low_load, passes = one_at_a_time(plain, {"rest_low_load": rest_request(api, payloads),
                                             "celery_low_load": celery_request(redis_url, singles)}, args.low_load)
    one.update(low_load)
    one["plain_passes_ms"] = passes
    one["compute_single_ms"] = statistics.median(passes)
    one["forward_rps"] = plain.forward_rps(best, args.seconds)
    return one


def main(argv=None) -> int:
    args = parse_args(argv)
    from inference.core.settings import cpu_count, get_settings
    from inference.worker.sizing import auto_instances

    threads = args.threads or cpu_count()
    out = args.out
    out.mkdir(parents=True, exist_ok=True)
    console.rule(f"plain script (resnet18, random weights, {threads} torch threads)")
    plain = PlainScript("resnet18", threads)
    by_batch, best = best_batch(plain, args)
    eager_rps = PlainScript("resnet18", threads, optimize="none", runtime="torch").rps(best, args.seconds)
    # As the worker picks them on the threads pool (batch size 1 included: its instances run side by side).
    # OpenVINO runs one batch at a time on all the worker's threads (inference/worker/sizing.py).
    instances = args.instances or get_settings().model_instances or (
        1 if plain.loaded.info["runtime"] == "openvino" else auto_instances(plain.loaded.device, threads // args.workers))

    batch = worker_batch(by_batch)
    console.rule(f"the system: Valkey, {args.workers} resnet18 worker(s) (batch {batch}, {instances} instance(s) each), the API")
    procs = Processes()
    env = system_env(args, batch, instances, threads, plain.loaded.device)
    in_flight = min(4 * max(batch, instances), 64)  # single-image saturation: enough to fill a batch (or every instance) and the next
    rounds, sweep, many = [], {}, {}
    try:
        env["REDIS_URL"] = start_redis(procs, env, name="bench-redis")
        worker = start_worker(procs, "resnet18", env, name="bench@%h")
        api = start_api(procs, {**env, "API_WORKERS": str(args.api_workers)}, name="bench-api")
        wait_until(lambda: requests.get(f"{api}/workers/status", timeout=5).json()["ready"] >= args.workers, 120, what="workers")
        pids = {"worker": procs.procs[f"worker-{worker}"].pid, "api": procs.procs["bench-api"].pid,
                "redis": procs.procs["bench-redis"].pid}
        images_b64 = [base64.b64encode(p.read_bytes()).decode() for p in IMAGES]
        payloads = [json.dumps({"data": b, "model_type": "resnet18"}) for b in images_b64]
        singles = [{"image": b} for b in images_b64]
        rest_load(api, payloads, 2 * in_flight, in_flight)  # warm-up (and the client threads' connections)
        celery_load(env["REDIS_URL"], singles, 2 * in_flight, in_flight)
        waking = round_trip_us(env["REDIS_URL"])
        for _ in track(range(args.rounds), description="rounds: plain, REST, plain, apply_async, plain; one at a time", console=console):
            rounds.append(one_round(plain, args, best, pids, api, env["REDIS_URL"], payloads, singles, in_flight))
        if args.images_per_request > 1:
            many = batched_submissions(plain, api, env["REDIS_URL"], images_b64, best, args)
        for c in track(sorted({1, max(1, in_flight // 4), in_flight // 2, in_flight}), description="REST, by concurrency", console=console):
            sweep[c] = rest_load(api, payloads, max(args.requests // 4, 3 * c), c)
        no_worker_payload = json.dumps({"data": images_b64[0], "model_type": "squeezenet"})  # queued, never run
        submissions = statistics.median(submission_rate(api, no_worker_payload, args.submissions, 16) for _ in range(3))
    finally:
        import gc

        gc.collect()  # drop Celery's pending results while their Redis still answers
        for pool in _client_threads.values():
            pool.shutdown()
        _client_threads.clear()
        procs.stop_all()

    report = summarise(rounds, by_batch, best, eager_rps, sweep, submissions, threads, instances)
    report["machine"].update(device=device_name(plain.loaded.device), api_workers=args.api_workers, workers=args.workers, max_batch_size=batch,
                             runtime=plain.loaded.info["runtime"], precision=plain.loaded.info["precision"])
    report["batched_submissions"] = many
    report["redis_round_trip_us"] = waking
    (out / "benchmark.json").write_text(json.dumps(report, indent=2))
    print_table(report, out)
    draw(rounds, sweep, by_batch, report, out)
    return 0


def device_name(device: str) -> str:
    import torch

    return torch.cuda.get_device_name(device) if device.startswith("cuda") else f"CPU ({platform.processor() or platform.machine()})"


def batched_submissions(plain: PlainScript, api: str, redis_url: str, images_b64: list[str], best: int, args) -> dict:
    """Many images per request (`images`): one task each, so the per-request costs (HTTP,
    Celery, Redis) are shared by all its images. Each run compared with the plain script's runs
    on either side of it, as in the rounds."""
    n = args.images_per_request
    pictures = [images_b64[i % len(images_b64)] for i in range(n)]
    payload = [json.dumps({"images": pictures, "model_type": "resnet18"})]
    # A warm-up wave each, as the one-image runs have: the first requests of this size meet
    # cold paths (batch shapes, buffers) that a service running for a while has left behind.
    celery_load(redis_url, [{"images": pictures}], args.many_concurrency, args.many_concurrency)
    rest_load(api, payload, args.many_concurrency, args.many_concurrency)
    plain_runs = [plain.rps(best, args.seconds)]
    runs = {}
    for name, run in (("apply_async", lambda: celery_load(redis_url, [{"images": pictures}], args.many_requests, args.many_concurrency)),
                      ("rest", lambda: rest_load(api, payload, args.many_requests, args.many_concurrency))):
        runs[name] = run()
        plain_runs.append(plain.rps(best, args.seconds))
        runs[name]["plain_rps"] = statistics.mean(plain_runs[-2:])
    return {"images_per_request": n, "concurrency": args.many_concurrency, "plain_rps": statistics.mean(plain_runs),
            **{name: {"images_per_s": run["rps"] * n, "vs_plain": run["rps"] * n / run["plain_rps"], "ok": run["ok"],
                      "requests": run["count"], "p50_ms": run["p50_ms"], "p95_ms": run["p95_ms"]} for name, run in runs.items()}}


SATURATION = ("rest_saturation", "celery_saturation")
RUNS = (*SATURATION, "rest_low_load", "celery_low_load")


def summarise(rounds, by_batch, best, eager_rps, sweep, submissions, threads, instances) -> dict:
    """Each ratio is taken within its round (plain script and system seconds apart), then the
    median over rounds: this machine's speed drifts more between minutes than within one."""
    from inference.core.settings import cpu_count

    def median_of(fn):
        return statistics.median(fn(r) for r in rounds)

    runs = {name: {key: median_of(lambda r, name=name, key=key: r[name][key]) for key in ("rps", "rps_whole_run", "p50_ms", "p95_ms", "p99_ms")}
            | {"concurrency": rounds[0][name]["concurrency"],
               "breakdown_ms": {part: median_of(lambda r, name=name, part=part: r[name]["breakdown_ms"][part])
                                for part in rounds[0][name]["breakdown_ms"]}}
            for name in RUNS}
    plain_rps = median_of(lambda r: r["plain_rps"])
    return {
        "machine": {"cores": cpu_count(), "torch_threads": threads,
                    "model_instances": instances, "rounds": len(rounds)},
        "plain": {"by_batch_size": by_batch, "best_batch_size": best, "plain_rps": plain_rps, "eager_rps": eager_rps,
                  "forward_rps": median_of(lambda r: r["forward_rps"]),
                  "compute_single_ms": median_of(lambda r: r["compute_single_ms"])},
        "runs": runs,
        "cpu_ms_per_request": {run: {name: median_of(lambda r, run=run, name=name: r["cpu_ms_per_request"][run][name])
                                     for name in rounds[0]["cpu_ms_per_request"][run]}
                               for run in rounds[0]["cpu_ms_per_request"]},
        "concurrency_sweep": {c: {k: v for k, v in r.items() if k != "latencies_ms"} for c, r in sweep.items()},
        "api_submissions_per_s": submissions,
        "ratios": {
            **{f"{name}_vs_plain": median_of(lambda r, name=name: r[name]["rps"] / r["plain_rps_for"][name]) for name in SATURATION},
            # Whole runs, ramp-up and drain included (see sustained_rps).
            **{f"{name}_whole_run_vs_plain": median_of(lambda r, name=name: r[name]["rps_whole_run"] / r["plain_rps_for"][name])
               for name in SATURATION},
            "rest_saturation_vs_forward": median_of(lambda r: r["rest_saturation"]["rps"] / r["forward_rps"]),
            # Against plain PyTorch fp32 (eager), measured once before the rounds.
            "rest_saturation_vs_pytorch_eager": median_of(lambda r: r["rest_saturation"]["rps"]) / eager_rps,
            # Over the plain script's one-image pass, timed in blocks between the requests' blocks.
            "low_load_overhead_ms": median_of(lambda r: r["rest_low_load"]["p50_ms"] - r["compute_single_ms"]),
            "celery_low_load_overhead_ms": median_of(lambda r: r["celery_low_load"]["p50_ms"] - r["compute_single_ms"]),
        },
        "per_round": [{"plain_rps_around": r["plain_rps_around"],
                       **{f"{name}{suffix}": r[name][f"rps{suffix}"] for name in RUNS if "saturation" in name for suffix in ("", "_whole_run")}}
                      for r in rounds],
    }


def print_table(report: dict, out: Path) -> None:
    plain, runs, ratios, machine = report["plain"], report["runs"], report["ratios"], report["machine"]
    table = Table(title=f"resnet18 on {machine['device']} ({machine['runtime']}, {machine['precision']}), {machine['cores']} cores, "
                        f"{machine['torch_threads']} threads, "
                        f"{machine['workers']} worker(s) of {machine['model_instances']} instance(s); medians of {machine['rounds']} rounds")
    for column in ("what", "images/s", "vs plain", "vs forward", "p50 ms", "p95 ms", "p99 ms"):
        table.add_column(column, justify="right" if column != "what" else "left")
    table.add_row(f"plain script (batch {plain['best_batch_size']})", f"{plain['plain_rps']:.1f}", "1.00",
                  f"{plain['plain_rps'] / plain['forward_rps']:.2f}", f"{plain['compute_single_ms']:.1f} (1 image)", "", "")
    table.add_row("plain PyTorch fp32, eager", f"{plain['eager_rps']:.1f}", f"{plain['eager_rps'] / plain['plain_rps']:.2f}",
                  "", "", "", "")
    table.add_row("forward only", f"{plain['forward_rps']:.1f}", f"{plain['forward_rps'] / plain['plain_rps']:.2f}", "1.00", "", "", "")
    within_rounds = {"rest_saturation": ratios["rest_saturation_vs_plain"], "celery_saturation": ratios["celery_saturation_vs_plain"]}
    for name, run in runs.items():
        vs_plain = within_rounds.get(name, run["rps"] / plain["plain_rps"])  # the median of the rounds' own ratios where there is one
        table.add_row(f"{name} (x{run['concurrency']})", f"{run['rps']:.1f}", f"{vs_plain:.2f}",
                      f"{run['rps'] / plain['forward_rps']:.2f}", f"{run['p50_ms']:.1f}", f"{run['p95_ms']:.1f}", f"{run['p99_ms']:.1f}")
    many = report.get("batched_submissions") or {}
    for name in ("apply_async", "rest"):
        if name in many:
            run = many[name]
            table.add_row(f"{name}, {many['images_per_request']} images per request (x{many['concurrency']})", f"{run['images_per_s']:.1f}",
                          f"{run['vs_plain']:.2f}", "", f"{run['p50_ms']:.1f} (request)", f"{run['p95_ms']:.1f}", "")
    console.print(table)
    cpu = Table(title="CPU per request at saturation (ms)")
    cpu.add_column("run")
    for name in report["cpu_ms_per_request"]["rest_saturation"]:
        cpu.add_column(name, justify="right")
    for run, by_process in report["cpu_ms_per_request"].items():
        cpu.add_row(run, *(f"{value:.1f}" for value in by_process.values()))
    console.print(cpu)
    for name in ("rest_low_load", "celery_low_load"):
        breakdown = runs[name]["breakdown_ms"]
        parts = ", ".join(f"{part} {ms:.1f}" for part, ms in breakdown.items())
        system = sum(ms for part, ms in breakdown.items() if part != "model")
        console.print(f"{name}, where the time goes (ms, medians): {parts}" + (f"; all but the model {system:.1f}" if breakdown else ""))
    console.print(f"low load: REST median {runs['rest_low_load']['p50_ms']:.1f} ms vs model compute {plain['compute_single_ms']:.1f} ms "
                  f"(the plain script's pass, timed between the requests; overhead {ratios['low_load_overhead_ms']:.1f} ms, "
                  f"apply_async {ratios['celery_low_load_overhead_ms']:.1f} ms; goal <= 4)")
    waking = report["redis_round_trip_us"]
    console.print(f"a Redis round trip on this machine: {waking['back_to_back']:.0f} us back to back, {waking['after_idle']:.0f} us "
                  f"after {1000 * IDLE_GAP_S:.0f} ms idle (about what each of a lone request's waits on a process that sat idle costs)")
    console.print(f"saturation: REST {ratios['rest_saturation_vs_plain']:.2f}x, apply_async {ratios['celery_saturation_vs_plain']:.2f}x "
                  f"plain script of the same runtime (goal >= 0.8), sustained while {runs['rest_saturation']['concurrency']} requests were in flight; "
                  f"whole runs with ramp-up and drain: {ratios['rest_saturation_whole_run_vs_plain']:.2f}x, "
                  f"{ratios['celery_saturation_whole_run_vs_plain']:.2f}x; API submissions: {report['api_submissions_per_s']:.0f}/s (goal >= 500); "
                  f"REST against plain PyTorch fp32 (eager): {ratios['rest_saturation_vs_pytorch_eager']:.2f}x")
    console.print(f"written: {out / 'benchmark.json'}, {out / 'latency.png'}, {out / 'throughput.png'}")


def draw(rounds: list, sweep: dict, by_batch: dict, report: dict, out: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (low, busy) = plt.subplots(1, 2, figsize=(12, 4.5))
    # One request at a time against the plain script's one-image passes of the same round (the
    # machine's speed differs between rounds more than the system adds), and the passes' own spread.
    def over_compute(times_of) -> list[float]:
        return [x - r["compute_single_ms"] for r in rounds for x in times_of(r)]

    series = {"plain script, 1 image": over_compute(lambda r: r["plain_passes_ms"]),
              **{name: over_compute(lambda r, name=name: r[name]["latencies_ms"]) for name in ("rest_low_load", "celery_low_load")}}
    values = [x for xs in series.values() for x in xs]
    bins = [min(values) + (max(values) - min(values)) * n / 50 for n in range(51)]  # the same bins for all three
    for (label, xs), color in zip(series.items(), ("gray", "C0", "C1")):
        low.hist(xs, bins=bins, alpha=0.5, color=color, label=label)
    low.axvline(0, color="black", linestyle="--", label="model compute (the round's median pass)")
    low.axvline(4, color="red", linestyle=":", label="goal: compute + 4 ms")
    low.set(title="One request at a time (all rounds)", xlabel="ms over the model's compute in the same round", ylabel="requests")
    low.legend()
    for name in SATURATION:
        busy.hist([x for r in rounds for x in r[name]["latencies_ms"]], bins=40, alpha=0.5, label=name)
    busy.set(title="At saturation (all rounds)", xlabel="ms", ylabel="requests")
    busy.legend()
    fig.tight_layout()
    fig.savefig(out / "latency.png", dpi=110)

    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4.2))
    xs = sorted(sweep)
    left.plot(xs, [sweep[c]["rps"] for c in xs], marker="o", label="system (REST)")
    left.axhline(report["plain"]["plain_rps"], color="gray", linestyle="--", label="plain script")
    left.set(title="Throughput against concurrency", xlabel="requests in flight", ylabel="images/s")
    left.legend()
    sizes = sorted(by_batch)
    right.plot(sizes, [by_batch[size] for size in sizes], marker="o", color="#3a9d5d")
    right.set(title="Plain script throughput against batch size", xlabel="batch size", ylabel="images/s")
    fig.tight_layout()
    fig.savefig(out / "throughput.png", dpi=110)
