"""`make benchmark`, in miniature: checks the tool runs end to end and reports what it promises
(a plain script against the real system, ratios, latency breakdown, CPU per process, charts),
not speed."""

from __future__ import annotations

import json
import os
import select
import socket
import subprocess
import sys
import time

import pytest

from tests.helpers import image_b64, repo_root
from tests.system import still_running

pytestmark = pytest.mark.e2e


def test_benchmark_runs_and_reports(tmp_path):
    out = subprocess.run([sys.executable, "-m", "benchmarks", "--rounds", "1", "--requests", "16", "--seconds", "0.3",
                          "--low-load", "5", "--submissions", "40", "--images-per-request", "4", "--many-requests", "3",
                          "--many-concurrency", "2", "--workers", "2", "--batch-sizes", "1,4", "--out", str(tmp_path)],
                         cwd=repo_root(), capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    report = json.loads((tmp_path / "benchmark.json").read_text())
    # Batch sizes 1 and 4 only: the saturation runs hold 4 x the worker's batch in flight (64 at 16).
    assert report["plain"]["best_batch_size"] in (1, 4) and report["plain"]["plain_rps"] > 0
    assert report["machine"]["max_batch_size"] >= report["plain"]["best_batch_size"]
    assert report["machine"]["workers"] == 2  # both started and ready, or the run would have timed out
    # The plain script runs what the worker runs (OpenVINO on a CPU by default); plain PyTorch fp32 beside it.
    assert (report["machine"]["runtime"], report["machine"]["precision"]) in (("openvino", "bf16"), ("openvino", "fp32"), ("torch", "fp32"))
    assert report["plain"]["eager_rps"] > 0 and report["ratios"]["rest_saturation_vs_pytorch_eager"] > 0
    for name in ("rest_saturation", "celery_saturation", "rest_low_load", "celery_low_load"):
        assert report["runs"][name]["rps"] > 0
        assert set(report["runs"][name]["breakdown_ms"]) >= {"queued", "model", "to_client"}
    assert report["runs"]["rest_low_load"]["breakdown_ms"]["model"] > 0
    for run in ("rest_saturation", "celery_saturation"):
        assert set(report["cpu_ms_per_request"][run]) == {"worker", "api", "redis", "client"}
        assert report["cpu_ms_per_request"][run]["worker"] > 0  # the worker's pool is counted with it
    assert report["cpu_ms_per_request"]["rest_saturation"]["api"] > report["cpu_ms_per_request"]["celery_saturation"]["api"]
    assert set(report["ratios"]) >= {"rest_saturation_vs_plain", "celery_saturation_vs_plain", "low_load_overhead_ms",
                                     "celery_low_load_overhead_ms"}
    assert report["plain"]["compute_single_ms"] > 0
    assert len(report["per_round"][0]["plain_rps_around"]) == 3  # plain, REST, plain, apply_async, plain
    assert report["api_submissions_per_s"] > 0
    many = report["batched_submissions"]
    assert many["images_per_request"] == 4
    for name in ("apply_async", "rest"):
        assert many[name]["ok"] == many[name]["requests"] == 3 and many[name]["images_per_s"] > 0
    assert (tmp_path / "latency.png").stat().st_size > 0 and (tmp_path / "throughput.png").stat().st_size > 0
    assert "saturation: REST" in out.stdout and "all but the model" in out.stdout
    waking = report["redis_round_trip_us"]  # what a wait on an idle process costs here, beside the lone request's overhead
    assert 0 < waking["back_to_back"] < 100_000 and 0 < waking["after_idle"] < 100_000 and "a Redis round trip on this machine" in out.stdout


def test_the_baseline_gets_the_packages_it_pins_that_this_venv_lacks():
    """`make benchmark` runs `make run` at 6edc619, whose API ran on gunicorn, which the venv no
    longer has: what a revision pins and the venv does not satisfy goes into a folder of its own."""
    from importlib.metadata import version

    from benchmarks.make_run import pins_missing_here

    celery = version("celery")
    requirements = (f"# pinned\ncelery=={celery}  # here\n\ncelery==0.0.1\nno-such-package-here==1.0\n"
                    f"tritonclient[http]=={version('tritonclient')}\n-r other.txt\nkombu>=5\n")
    assert pins_missing_here(requirements) == ["celery==0.0.1", "no-such-package-here==1.0"]


def test_the_make_run_benchmark_runs_and_reports(tmp_path):
    """`make benchmark`'s second part: honcho runs the Procfile as `make run` does, and the report
    has both plain scripts, both loads, and the memory of every Procfile entry."""
    from benchmarks.make_run import parse_args

    # Saturation by default: four times the batch make run's workers form (MAX_BATCH_SIZE, 8); 8 below it.
    defaults = parse_args([])
    assert (defaults.concurrency, defaults.low_concurrency) == (32, 8)
    # Fewer in flight here: the warm-ups send 4 x --concurrency requests to each of the two systems.
    out = subprocess.run([sys.executable, "-m", "benchmarks.make_run", "--rounds", "1", "--requests", "16", "--mixed-requests", "40", "--photo-requests", "4", "--baseline", "HEAD",
                          "--seconds", "0.3", "--idle-seconds", "1", "--concurrency", "8", "--low-concurrency", "4", "--out", str(tmp_path)],
                         cwd=repo_root(), capture_output=True, text=True, timeout=400, env={**os.environ, "HEAP_TRIM_SECONDS": "1"})
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    report = json.loads((tmp_path / "make-run.json").read_text())
    assert report["resnet18_only_rps"] > 0 and report["mixed_rps"] > 0 and report["plain_rps"] > 0 and report["eager_rps"] > 0
    for run in ("resnet18_only", "resnet18_low", "mixed"):
        assert report["rounds"][0][run]["ok"] == 16
    assert (report["concurrency"], report["low_concurrency"]) == (8, 4)
    assert report["rounds"][0]["resnet18_only"]["concurrency"] == 8 and report["rounds"][0]["resnet18_low"]["concurrency"] == 4
    assert report["resnet18_low_vs_plain"] > 0 and "4 in flight" in out.stdout
    assert report["rounds"][0]["photos"]["ok"] == 4 and report["photos_vs_pytorch_full_decode"] > 0 and report["photos_vs_plain_draft"] > 0
    # The baseline revision's own `make run` took the photos too (here the same code: the worktree is HEAD).
    assert report["baseline"]["rounds"][0]["photos"]["ok"] == 4 and report["photos_vs_baseline"] > 0
    procfile = {line.split(":", 1)[0] for line in (repo_root() / "Procfile").read_text().splitlines() if ":" in line}
    assert set(report["memory"]) == procfile | {"honcho", "total"}
    assert all(report["memory"][name]["pss_mb"] > 0 for name in procfile)
    assert report["memory"]["total"]["pss_mb"] == pytest.approx(sum(p["pss_mb"] for n, p in report["memory"].items() if n != "total"), abs=1)
    assert "memory, whole system" in out.stdout
    cpu = report["rounds"][0]["cpu_ms_per_request"]  # the worker's Celery process and its model process apart
    assert cpu["worker_resnet18 model process"] > cpu["worker_resnet18"] > 0 and cpu["api"] > 0 and cpu["redis"] > 0
    # Nobody using it, the system still ticks over; one entry alone may spend less than a clock tick
    # (10 ms) in the test's one second (an API process that is not the one broadcasting: CI read 0.0).
    idle = report["idle_cpu_ms_per_second"]
    assert set(idle) >= procfile and all(idle[name] >= 0 for name in procfile) and "client" not in idle
    assert sum(idle.values()) > 0
    assert "CPU of the whole system while idle" in out.stdout

    processes = [(pid, cmdline) for part in report["memory"].values() for pid, cmdline, _ in part.get("by_process", [])]
    assert len(processes) >= 15 and not [p for p in processes if still_running(*p)]  # honcho stopped them all


def test_the_client_reopens_a_connection_the_api_closed_while_idle():
    from benchmarks.benchmark import _connections, post_json
    from tests.system import Processes, start_api, start_redis, wait_until

    procs = Processes()
    env = {**os.environ, "API_KEEPALIVE": "1", "NO_WORKER_POLICY": "queue", "API_WORKERS": "1"}
    try:
        env["REDIS_URL"] = start_redis(procs, env, name="keepalive-redis")
        base = start_api(procs, env, name="keepalive-api")
        body = json.dumps({"data": image_b64(), "model_type": "squeezenet"})
        assert post_json(base, "/v1/inference", body, timeout=10)[0] == 202
        kept = _connections.by_base[base].sock  # this thread's

        def closed_by_the_api() -> bool:  # after API_KEEPALIVE s idle: readable, and nothing to read
            return bool(select.select([kept], [], [], 0)[0]) and kept.recv(1, socket.MSG_PEEK) == b""

        wait_until(closed_by_the_api, 10, interval=0.1, what="the API closing the idle connection")
        assert post_json(base, "/v1/inference", body, timeout=10)[0] == 202
    finally:
        procs.stop_all()


def test_the_plain_scripts_single_passes_take_the_pictures_in_turn_as_the_requests_do():
    from benchmarks.benchmark import PlainScript

    seen: list[bytes] = []

    class Loaded:
        def scores(self, batch):
            return batch

        def postprocess(self, scores, top_k):
            return scores

    plain = PlainScript.__new__(PlainScript)  # no model: only which picture each pass takes
    plain.raw, plain.passes, plain.loaded = [b"chelsea", b"astronaut"], 0, Loaded()
    plain.prepared = lambda raws: seen.extend(raws)
    assert len(plain.single_passes_ms(5)) == 5
    plain.single_passes_ms(5)  # the next block goes on where the last one stopped
    assert seen == [b"chelsea", b"astronaut"] * 5


def test_one_request_at_a_time_alternates_with_the_plain_script_in_blocks():
    from benchmarks.benchmark import LOW_LOAD_BLOCK, one_at_a_time

    order: list[str] = []

    class Plain:
        def single_passes_ms(self, count):
            order.extend(["plain"] * count)
            return [10.0] * count

    def sender(name):
        def one(i):
            order.append(name)
            return 0.012, True, None, time.time()
        return one

    count = 2 * LOW_LOAD_BLOCK + 1  # the last block is short
    runs, passes = one_at_a_time(Plain(), {"rest": sender("rest"), "celery": sender("celery")}, count)
    blocks = [name for n, name in enumerate(order) if n == 0 or order[n - 1] != name]
    assert blocks == ["plain"] + ["rest", "plain", "celery", "plain"] * 3
    assert order.count("rest") == order.count("celery") == count and len(passes) == order.count("plain")
    assert runs["rest"]["ok"] == count and runs["rest"]["p50_ms"] == 12.0


def test_the_protocols_benchmark_runs_and_reports(tmp_path):
    """`make benchmark`'s third part: each way in, one picture at a time, through its own client."""
    out = subprocess.run([sys.executable, "-m", "benchmarks.protocols", "--rounds", "1", "--requests", "3", "--json", str(tmp_path / "p.json")],
                         cwd=repo_root(), capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    report = json.loads((tmp_path / "p.json").read_text())
    assert len(report) == 4 and all(r["n"] == 3 and 0 < r["median_ms"] <= r["p90_ms"] for r in report.values())
    assert "/v2 infer, class_count=5" in report and "One picture at a time" in out.stdout


def test_the_worker_batches_at_the_largest_size_near_the_plain_scripts_best():
    """Where batching gains the plain script nothing, noise must not run the worker at batch 1."""
    from benchmarks.benchmark import worker_batch

    assert worker_batch({1: 86.1, 4: 84.0, 8: 83.2, 16: 85.0}) == 16
    assert worker_batch({1: 100.0, 4: 90.0, 8: 94.0, 16: 80.0}) == 1
    assert worker_batch({1: 50.0, 4: 80.0, 8: 79.0, 16: 70.0}) == 8
