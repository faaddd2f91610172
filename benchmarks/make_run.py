"""`python -m benchmarks.make_run`: the system as `make run` starts it, against plain scripts, and its memory.

Honcho runs the Procfile unchanged (an embedded Valkey, the API, one worker per model with
HOST_WORKERS=4, Flower) with nothing set but free ports, a data folder and Flower's login: the
defaults users get. Each round, with the plain scripts (resnet18 on all cores, at `--plain-batch`:
PyTorch eager fp32, then the workers' own runtime and precision) run around the system's runs:
- resnet18 only: single-picture requests through the REST API (`?wait`) at saturation
  (`--concurrency` in flight: by default four times the workers' MAX_BATCH_SIZE, as `python -m
  benchmarks` loads its worker), while the other three models sit idle; and the same with only
  `--low-concurrency` in flight;
- mixed: the same spread over the four models;
- 12-MP photos to resnet18 (`--low-concurrency` in flight), against plain PyTorch decoding them
  whole and the plain script of the workers' runtime decoding them as the workers do.
Then memory: the PSS of each Procfile entry's processes (and honcho's) after `--mixed-requests`
mixed requests in all. With `--baseline REV`, `make run` at that revision (a git worktree)
takes the same 12-MP photos afterwards. Prints a table; writes make-run.json beside benchmark.json.
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import json
import os
import re
import secrets
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import requests
from rich.console import Console
from rich.progress import track
from rich.table import Table

from benchmarks.benchmark import IMAGES, OUT, ROOT, PlainScript, _client_threads, rest_load
from inference.core.settings import get_settings
from tests.helpers import large_photo
from tests.system import command_line, cpu_seconds, free_port, process_stats, wait_until

MODELS = ("mobilenet", "resnet18", "efficientnet", "squeezenet")
console = Console()


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=3, help="rounds of (plain scripts, resnet18 only, plain, mixed)")
    parser.add_argument("--requests", type=int, default=480, help="requests per system run")
    # With 8 in flight (one batch's worth) the cores were only ~94 % busy: half the requests were
    # on their way to or from the worker while its batch of 4 ran, and resnet18 only took 5-10 %
    # fewer requests/s than with 32 or 64 in flight (where it levels off; docs/performance.md).
    parser.add_argument("--concurrency", type=int, default=4 * get_settings().max_batch_size,
                        help="requests in flight at saturation (default: 4 x MAX_BATCH_SIZE)")
    parser.add_argument("--low-concurrency", type=int, default=8, help="requests in flight in the resnet18-only run below saturation, and for the 12-MP photos")
    parser.add_argument("--photo-requests", type=int, default=60, help="requests of a 12-MP photo per round")
    parser.add_argument("--mixed-requests", type=int, default=1000, help="mixed requests sent in all before memory is read")
    parser.add_argument("--seconds", type=float, default=4.0, help="duration of each plain-script measurement")
    parser.add_argument("--idle-seconds", type=float, default=10.0, help="how long the idle system's CPU is read, after the memory")
    parser.add_argument("--plain-batch", type=int, default=8, help="the plain scripts' batch size")
    parser.add_argument("--baseline", help="a git revision whose `make run` also takes the 12-MP photos (`make benchmark`: the "
                                           "code before issue #20, 6edc619)")
    parser.add_argument("--out", type=Path, default=OUT)
    return parser.parse_args(argv)


def procfile_commands() -> dict[str, str]:
    """Procfile entry -> the program it runs (its command without leading VAR=value assignments)."""
    entries = (line.split(":", 1) for line in (ROOT / "Procfile").read_text().splitlines() if ":" in line)
    return {name.strip(): re.sub(r"^(\S+=\S+\s+)*", "", command.strip()) for name, command in entries}


def command_lines() -> dict[int, str]:
    """Each process's command line, from /proc ("" for one gone meanwhile)."""
    return {pid: command_line(pid).strip() for pid, _ in process_stats()}


def pss_mb(pid: int) -> float:
    try:
        rollup = Path(f"/proc/{pid}/smaps_rollup").read_text()
    except OSError:
        return 0.0
    match = re.search(r"^Pss:\s+(\d+) kB", rollup, re.M)
    return int(match[1]) / 1024 if match else 0.0


def processes_by_entry(honcho_pid: int, cmdlines: dict[int, str]) -> dict[str, list[int]]:
    """The processes of each Procfile entry (honcho's fork that supervises it included)."""
    children: dict[int, list[int]] = {}
    for pid, fields in process_stats():
        children.setdefault(int(fields[1]), []).append(pid)

    def subtree(pid: int) -> list[int]:
        return [pid] + [p for child in children.get(pid, []) for p in subtree(child)]

    programs = procfile_commands()
    entries = {"honcho": [honcho_pid]}
    for child in children.get(honcho_pid, []):
        pids = subtree(child)
        text = " ".join(cmdlines.get(pid, "") for pid in pids)
        entries[next((name for name, program in programs.items() if program.split(" --")[0] in text), f"pid {child}")] = pids
    return entries


def memory_by_entry(honcho_pid: int) -> dict[str, dict]:
    """PSS (MB) of each Procfile entry's processes, honcho's own beside them."""
    cmdlines = command_lines()
    report: dict[str, dict] = {}
    for name, pids in processes_by_entry(honcho_pid, cmdlines).items():
        by_process = [[pid, cmdlines.get(pid, "")[:100], round(pss_mb(pid), 1)] for pid in pids]
        report[name] = {"pss_mb": round(sum(mb for _, _, mb in by_process), 1), "processes": len(pids), "by_process": by_process}
    report["total"] = {"pss_mb": round(sum(part["pss_mb"] for part in report.values()), 1),
                       "processes": sum(part["processes"] for part in report.values())}
    return report


MODEL_PROCESS = " model process"  # a worker's model host, counted apart from the worker's Celery process


def cpu_clocks(honcho_pid: int):
    """A reading of the CPU seconds each Procfile entry (and this client) has spent; each
    worker's model process (inference/worker/model_host.py) apart from the rest of it."""
    cmdlines = command_lines()
    entries = processes_by_entry(honcho_pid, cmdlines)
    for name in [name for name in entries if name.startswith("worker_")]:
        model = [pid for pid in entries[name] if "inference.worker.model_host" in cmdlines.get(pid, "")]
        entries[name] = [pid for pid in entries[name] if pid not in model]
        entries[name + MODEL_PROCESS] = model

    def now() -> dict[str, float]:
        seconds = {name: sum(cpu_seconds(pid) for pid in pids) for name, pids in entries.items()}
        return seconds | {"client": time.process_time()}

    return now


def cpu_ms_per_request(honcho_pid: int, run) -> tuple[dict, dict[str, float]]:
    """`run()`'s result, and the CPU each Procfile entry (and this client) spent per request of it."""
    now = cpu_clocks(honcho_pid)
    before = now()
    result = run()
    after = now()
    return result, {name: round(1000 * (after[name] - before[name]) / result["count"], 2) for name in after}


def idle_cpu_ms_per_second(honcho_pid: int, seconds: float) -> dict[str, float]:
    """The CPU each Procfile entry spends a second with no request anywhere (its timers,
    heartbeats, polls and broadcasts): what `make run` costs the machine while nobody uses it."""
    now = cpu_clocks(honcho_pid)
    before, started = now(), time.monotonic()
    time.sleep(seconds)
    after, elapsed = now(), time.monotonic() - started
    return {name: round(1000 * (after[name] - before[name]) / elapsed, 2) for name in after if name != "client"}


@contextlib.contextmanager
def make_run_system(root: Path, data_dir: Path, concurrency: int, packages: Path | None = None):
    """`make run`'s processes (honcho and the Procfile of `root`) on free ports, its four workers
    ready and warmed up with `concurrency` requests in flight: (honcho, the API's address).
    Stopped as Ctrl-C stops `make run`. `packages`: a folder of packages (and their commands in
    its bin/) that come before the venv's (`baseline_packages`)."""
    api_port = free_port()
    path = f"{Path(sys.executable).parent}:{os.environ['PATH']}"  # the venv's commands, as `make run`'s
    python_path = os.environ.get("PYTHONPATH")
    if packages is not None:
        path, python_path = f"{packages / 'bin'}:{path}", ":".join(filter(None, [str(packages), python_path]))
    env = {**os.environ, "PATH": path, **({"PYTHONPATH": python_path} if python_path else {}),
           "REDIS_URL": f"redis://127.0.0.1:{free_port()}/0", "REDIS_DATA_DIR": str(data_dir / "redis"),
           "API_PORT": str(api_port), "FLOWER_PORT": str(free_port()), "FLOWER_BASIC_AUTH": f"bench:{secrets.token_hex(8)}",
           "MODEL_CACHE_DIR": str(ROOT / get_settings().model_cache_dir)}  # a worktree's workers find the converted models too
    log = (data_dir / "system.log").open("w")
    honcho = subprocess.Popen([sys.executable, "-m", "honcho", "start"], cwd=root, env=env, stdout=log, stderr=subprocess.STDOUT,
                              start_new_session=True)
    api = f"http://127.0.0.1:{api_port}"
    try:
        wait_until(lambda: honcho.poll() is not None or ready_workers(api) == len(MODELS), 600, what="make run's four workers")
        if honcho.poll() is not None:
            raise RuntimeError(f"honcho stopped: {(data_dir / 'system.log').read_text()[-3000:]}")
        rest_load(api, payloads_for(MODELS * 4), 4 * concurrency, concurrency)  # warm-up
        yield honcho, api
    finally:
        with contextlib.suppress(ProcessLookupError):  # honcho stopped by itself (a process that would not start)
            os.killpg(honcho.pid, signal.SIGINT)
        try:
            honcho.wait(60)
        except subprocess.TimeoutExpired:
            os.killpg(honcho.pid, signal.SIGKILL)


@contextlib.contextmanager
def checkout(revision: str):
    """The repository at `revision`, in a temporary git worktree."""
    folder = Path(tempfile.mkdtemp(prefix="make-run-baseline-"))
    try:
        subprocess.run(["git", "worktree", "add", "--detach", str(folder), revision], cwd=ROOT, check=True, capture_output=True)
    except subprocess.CalledProcessError:
        folder.rmdir()
        raise
    try:
        yield folder
    finally:
        subprocess.run(["git", "worktree", "remove", "--force", str(folder)], cwd=ROOT, capture_output=True)


def pins_missing_here(requirements: str) -> list[str]:
    """The lines of a requirements file that this environment does not satisfy: a package that is
    not installed, or not in a version the line allows."""
    from importlib.metadata import PackageNotFoundError, version

    from packaging.requirements import Requirement

    missing = []
    for line in requirements.splitlines():
        line = line.split("#", 1)[0].strip()
        if not line or line.startswith("-"):
            continue
        wanted = Requirement(line)
        try:
            satisfied = wanted.specifier.contains(version(wanted.name), prereleases=True)
        except PackageNotFoundError:
            satisfied = False
        if not satisfied:
            missing.append(line)
    return missing


def baseline_packages(root: Path, folder: Path) -> Path | None:
    """What the checkout at `root` pins and this venv lacks (the code before issue #20 served its
    API with gunicorn, which the venv no longer has), installed into `folder`, which its
    processes then put first: this venv stays as requirements.txt says. None if nothing lacks."""
    missing = pins_missing_here((root / "requirements.txt").read_text())
    if not missing:
        return None
    console.print(f"the baseline's own packages, beside the venv: {', '.join(missing)}")
    # --no-deps: its requirements.txt pins everything it needs; the rest is in the venv already.
    subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "--disable-pip-version-check", "--no-deps",
                    "--target", str(folder), *missing], check=True)
    return folder


def baseline_photos(revision: str, full_decode: PlainScript, args: argparse.Namespace) -> list[dict]:
    """12-MP photos through `make run` at `revision` (the code before this issue's work), each run
    between two runs of the plain script that decodes them whole, as the system's own."""
    runs = []
    with checkout(revision) as root, tempfile.TemporaryDirectory(prefix="make-run-") as data_dir, \
            make_run_system(root, Path(data_dir), args.concurrency, baseline_packages(root, Path(data_dir) / "packages")) as (_, api):
        for _ in track(range(args.rounds), description=f"12-MP photos at {revision}", console=console):
            run: dict = {"photo_eager_rps": [full_decode.rps(1, args.seconds)]}
            run["photos"] = rest_load(api, payloads_for(["resnet18"], full_decode.raw), args.photo_requests, args.low_concurrency)
            run["photo_eager_rps"].append(full_decode.rps(1, args.seconds))
            run["photos"].pop("latencies_ms")
            runs.append(run)
    return runs


def ready_workers(api: str) -> int:
    """Ready workers as every API process sees them (each keeps its own view: 12 answers)."""
    try:
        return min(requests.get(f"{api}/workers/status", timeout=5).json()["ready"] for _ in range(12))
    except (requests.RequestException, ValueError, KeyError):
        return 0


def payloads_for(models, pictures: list[bytes] | None = None) -> list[str]:
    encoded = [base64.b64encode(picture).decode() for picture in pictures or [path.read_bytes() for path in IMAGES]]
    return [json.dumps({"data": encoded[n % len(encoded)], "model_type": model}) for n, model in enumerate(models)]


def one_round(number: int, eager: PlainScript, plain: PlainScript, full_decode: PlainScript, photo_plain: PlainScript, api: str,
              honcho_pid: int, args: argparse.Namespace) -> dict:
    """Plain eager, plain runtime, resnet18 only (at and below saturation), plain runtime, mixed,
    plain eager: each system run against the mean of the plain runs on either side of it. Then 12-MP photos: the system
    against plain PyTorch eager fp32 decoding them whole (what the workers did before draft
    decoding and OpenVINO), and against the plain script of the workers' runtime decoding them as
    the workers do (the most the system could reach), before and after."""
    batch, seconds = args.plain_batch, args.seconds
    round_: dict = {"eager_rps": [eager.rps(batch, seconds)], "plain_rps": [plain.rps(batch, seconds)]}
    singles = payloads_for(["resnet18"] * 2)

    def saturation() -> None:  # with each process's CPU
        round_["resnet18_only"], round_["cpu_ms_per_request"] = cpu_ms_per_request(
            honcho_pid, lambda: rest_load(api, singles, args.requests, args.concurrency))

    def below_saturation() -> None:
        round_["resnet18_low"] = rest_load(api, singles, args.requests, args.low_concurrency)

    # Each first in turn: the first run after the plain script's meets a colder system.
    for run in (below_saturation, saturation) if number % 2 else (saturation, below_saturation):
        run()
    round_["plain_rps"].append(plain.rps(batch, seconds))
    round_["mixed"] = rest_load(api, payloads_for(MODELS), args.requests, args.concurrency)
    round_["eager_rps"].append(eager.rps(batch, seconds))
    round_["photo_eager_rps"], round_["photo_plain_rps"] = [full_decode.rps(1, seconds)], [photo_plain.rps(batch, seconds)]
    round_["photos"] = rest_load(api, payloads_for(["resnet18"], full_decode.raw), args.photo_requests, args.low_concurrency)
    round_["photo_plain_rps"].append(photo_plain.rps(batch, seconds))
    round_["photo_eager_rps"].append(full_decode.rps(1, seconds))
    for run in ("resnet18_only", "resnet18_low", "mixed", "photos"):
        round_[run].pop("latencies_ms")
    return round_


def summarise(rounds: list[dict], memory: dict, plain: PlainScript) -> dict:
    def median(fn) -> float:
        return statistics.median(fn(r) for r in rounds)

    return {
        "rounds": rounds, "memory": memory, "runtime": plain.loaded.info["runtime"], "precision": plain.loaded.info["precision"],
        "resnet18_only_rps": median(lambda r: r["resnet18_only"]["rps"]),
        "mixed_rps": median(lambda r: r["mixed"]["rps"]),
        "plain_rps": median(lambda r: statistics.mean(r["plain_rps"])),
        "eager_rps": median(lambda r: statistics.mean(r["eager_rps"])),
        "resnet18_only_vs_plain": median(lambda r: r["resnet18_only"]["rps"] / statistics.mean(r["plain_rps"])),
        "resnet18_low_rps": median(lambda r: r["resnet18_low"]["rps"]),
        "resnet18_low_vs_plain": median(lambda r: r["resnet18_low"]["rps"] / statistics.mean(r["plain_rps"])),
        "resnet18_only_vs_pytorch_eager": median(lambda r: r["resnet18_only"]["rps"] / statistics.mean(r["eager_rps"])),
        "mixed_vs_pytorch_eager": median(lambda r: r["mixed"]["rps"] / statistics.mean(r["eager_rps"])),
        "cpu_ms_per_request": {name: median(lambda r, name=name: r["cpu_ms_per_request"][name]) for name in rounds[0]["cpu_ms_per_request"]},
        "photos_rps": median(lambda r: r["photos"]["rps"]),
        "photo_eager_rps": median(lambda r: statistics.mean(r["photo_eager_rps"])),
        "photos_vs_pytorch_full_decode": median(lambda r: r["photos"]["rps"] / statistics.mean(r["photo_eager_rps"])),
        "photo_plain_rps": median(lambda r: statistics.mean(r["photo_plain_rps"])),
        "photos_vs_plain_draft": median(lambda r: r["photos"]["rps"] / statistics.mean(r["photo_plain_rps"])),
    }


def baseline_summary(revision: str | None, baseline: list[dict], rounds: list[dict]) -> dict:
    """The photos' throughput at `revision`, and the system's over it: each as a share of the plain
    script that ran beside it (the two systems ran minutes apart on a drifting machine)."""
    if not baseline:
        return {}

    def share(run: dict) -> float:
        return run["photos"]["rps"] / statistics.mean(run["photo_eager_rps"])

    return {"baseline": {"revision": revision, "rounds": baseline, "photos_rps": statistics.median(r["photos"]["rps"] for r in baseline)},
            "photos_vs_baseline": statistics.median(map(share, rounds)) / statistics.median(map(share, baseline))}


def outside_the_model(cpu_ms: dict[str, float]) -> float:
    """The system's CPU per request besides the models' processes (the load's client is not the system)."""
    return sum(ms for name, ms in cpu_ms.items() if not name.endswith(MODEL_PROCESS) and name != "client")


def print_report(report: dict) -> None:
    table = Table(title=f"make run's defaults: four workers ({report['runtime']}, {report['precision']}), the API, Flower, Valkey")
    for column in ("measure", "median", "goal (issue #20)"):
        table.add_column(column)
    saturation, low = report["concurrency"], report["low_concurrency"]
    table.add_row(f"resnet18 only, {saturation} in flight (saturation), requests/s", f"{report['resnet18_only_rps']:.1f}", "")
    table.add_row(f"mixed (four models), {saturation} in flight, requests/s", f"{report['mixed_rps']:.1f}", "")
    table.add_row(f"plain {report['runtime']} script, images/s", f"{report['plain_rps']:.1f}", "")
    table.add_row("plain PyTorch eager fp32 script, images/s", f"{report['eager_rps']:.1f}", "")
    table.add_row("resnet18 only / plain script of the same runtime", f"{report['resnet18_only_vs_plain']:.2f}x", ">= 0.8x")
    table.add_row("resnet18 only / plain PyTorch eager", f"{report['resnet18_only_vs_pytorch_eager']:.2f}x", ">= 5x")
    table.add_row(f"resnet18 only, {low} in flight, requests/s (/ plain script)",
                  f"{report['resnet18_low_rps']:.1f} ({report['resnet18_low_vs_plain']:.2f}x)", "")
    table.add_row(f"12-MP photos, resnet18, {low} in flight, requests/s", f"{report['photos_rps']:.1f}", "")
    table.add_row("12-MP photos, plain PyTorch eager, whole decode, images/s", f"{report['photo_eager_rps']:.1f}", "")
    table.add_row("12-MP photos: system / that script", f"{report['photos_vs_pytorch_full_decode']:.2f}x", "")
    table.add_row(f"12-MP photos, plain {report['runtime']} script decoding as the workers do, images/s",
                  f"{report['photo_plain_rps']:.1f}", "")
    table.add_row("12-MP photos: system / that script", f"{report['photos_vs_plain_draft']:.2f}x", "")
    if "baseline" in report:
        table.add_row(f"12-MP photos at {report['baseline']['revision']}, requests/s", f"{report['baseline']['photos_rps']:.1f}", "")
        table.add_row("12-MP photos: system / that code (each against the plain script beside it)",
                      f"{report['photos_vs_baseline']:.2f}x", ">= 5x")
    cpu = report["cpu_ms_per_request"]
    table.add_row("CPU per resnet18 request outside the models' processes (ms): API, Redis, the workers' Celery processes, ...",
                  f"{outside_the_model(cpu):.1f}", "< 2.5 ms")
    for name, ms in cpu.items():
        if ms >= 0.05:
            table.add_row(f"  {name}", f"{ms:.2f}", "")
    idle = report["idle_cpu_ms_per_second"]
    table.add_row("CPU of the whole system while idle, ms a second", f"{sum(idle.values()):.0f}", "")
    for name, ms in idle.items():
        if ms >= 0.5:
            table.add_row(f"  {name}", f"{ms:.1f}", "")
    table.add_row("memory, whole system (PSS)", f"{report['memory']['total']['pss_mb']:.0f} MB", "<= 1,500 MB")
    for name, part in report["memory"].items():
        if name != "total":
            table.add_row(f"  {name} ({part['processes']} processes)", f"{part['pss_mb']:.0f} MB", "")
    console.print(table)


def main(argv=None) -> int:
    args = parse_args(argv)
    from inference.core.settings import cpu_count

    args.out.mkdir(parents=True, exist_ok=True)
    console.rule(f"plain scripts (resnet18, random weights, {cpu_count()} threads, batch {args.plain_batch})")
    plain, eager = PlainScript("resnet18", cpu_count()), PlainScript("resnet18", cpu_count(), optimize="none", runtime="torch")
    photo = large_photo()
    full_decode = PlainScript("resnet18", cpu_count(), optimize="none", runtime="torch", pictures=[photo])
    photo_plain = PlainScript("resnet18", cpu_count(), pictures=[photo], draft=True)
    try:
        with tempfile.TemporaryDirectory(prefix="make-run-") as data_dir, make_run_system(ROOT, Path(data_dir), args.concurrency) as (honcho, api):
            rounds = [one_round(number, eager, plain, full_decode, photo_plain, api, honcho.pid, args)
                      for number in track(range(args.rounds), description="rounds", console=console)]
            left = args.mixed_requests - args.rounds * args.requests
            if left > 0:
                rest_load(api, payloads_for(MODELS), left, args.concurrency)
            time.sleep(get_settings().heap_trim_seconds + 1)  # the load over: what the processes keep once they have trimmed
            memory = memory_by_entry(honcho.pid)
            idle = idle_cpu_ms_per_second(honcho.pid, args.idle_seconds)
        baseline = []
        if args.baseline:
            try:
                baseline = baseline_photos(args.baseline, full_decode, args)
            except subprocess.CalledProcessError as exc:  # a shallow clone, a revision that is not there, no registry
                console.print(f"[yellow]no baseline: {' '.join(map(str, exc.cmd[:4]))} failed: {(exc.stderr or b'').decode().strip()}")
            except RuntimeError as exc:  # its `make run` did not start: the rounds above are reported all the same
                console.print(f"[yellow]no baseline: {args.baseline}'s make run did not start: {exc}")
    finally:
        for pool in _client_threads.values():
            pool.shutdown()
        _client_threads.clear()
    report = summarise(rounds, memory, plain) | baseline_summary(args.baseline, baseline, rounds)
    report |= {"concurrency": args.concurrency, "low_concurrency": args.low_concurrency, "idle_cpu_ms_per_second": idle}
    (args.out / "make-run.json").write_text(json.dumps(report, indent=2))
    print_report(report)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
