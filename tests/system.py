"""Start the real system for tests: embedded Valkey, one worker per model, the API (gunicorn).

Everything runs as separate processes, the way `make run` starts them, on free ports.
"""

from __future__ import annotations

import os
import secrets
import signal
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import requests

ROOT = Path(__file__).resolve().parent.parent
TESTDATA = ROOT / "tests" / "data"
# In the checkout (var/ is ignored by git): two checkouts' runs at once keep their logs apart
# (a run clears its folder as it starts).
LOG_DIR = Path(os.environ.get("TEST_LOG_DIR", ROOT / "var")) / "test-logs"


def process_stats():
    """(pid, fields of /proc/<pid>/stat after the command name) of every process: fields[1] is
    the parent, fields[3] the session, fields[11] and [12] user and system CPU in clock ticks."""
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            yield int(stat.parent.name), stat.read_text().rsplit(")", 1)[1].split()
        except OSError:  # gone meanwhile
            continue


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_until(predicate, timeout: float, interval: float = 0.2, what: str = "condition"):
    deadline = time.monotonic() + timeout
    last_error = None
    while time.monotonic() < deadline:
        try:
            value = predicate()
            if value:
                return value
        except Exception as exc:  # not up yet
            last_error = exc
        time.sleep(interval)
    raise TimeoutError(f"timed out after {timeout} s waiting for {what} (last error: {last_error})")


@dataclass
class Processes:
    procs: dict[str, subprocess.Popen] = field(default_factory=dict)
    data_dirs: dict[str, str] = field(default_factory=dict)

    def start(self, name: str, cmd: list[str], env: dict) -> subprocess.Popen:
        LOG_DIR.mkdir(parents=True, exist_ok=True)
        log = open(LOG_DIR / f"{name}.log", "ab")  # noqa: SIM115  (the child writes to it; a restart appends)
        # A session of its own, so stopping it reaches the pool processes too.
        proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        self.procs[name] = proc
        return proc

    def stop(self, name: str, sig: int = signal.SIGTERM, timeout: float = 15) -> None:
        proc = self.procs.pop(name, None)
        if proc is None or proc.poll() is not None:
            return
        try:
            os.killpg(proc.pid, sig)
            proc.wait(timeout=timeout)
        except (ProcessLookupError, subprocess.TimeoutExpired):
            try:
                os.killpg(proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            proc.wait(timeout=5)

    def stop_all(self) -> None:
        for name in list(self.procs):
            self.stop(name)


def start_redis(procs: Processes, env: dict, name: str = "redis", url: str | None = None,
                data_dir: str | None = None, also_bind: tuple[str, ...] = ()) -> str:
    """A real Valkey with an append-only file; pass url and data_dir again to restart it."""
    import redis

    from inference.cli.redis_embedded import server_command

    # With a password, as in production: every part (API, workers, Flower, tests) must pass it on.
    url = url or f"redis://:{secrets.token_hex(8)}@127.0.0.1:{free_port()}/0"
    data_dir = data_dir or tempfile.mkdtemp(prefix="inference-test-redis-")
    procs.start(name, server_command(url, data_dir, also_bind), env)
    procs.data_dirs[name] = data_dir
    wait_until(lambda: redis.Redis.from_url(url).ping(), 15, what="embedded Valkey")
    return url


def start_worker(procs: Processes, model: str, env: dict, name: str | None = None, prefix: tuple[str, ...] = (),
                 args: tuple[str, ...] = ()) -> str:
    """`prefix` runs the worker through another command, e.g. `ip netns exec NS`."""
    name = name or f"{model}-test-{os.getpid()}@%h"
    procs.start(f"worker-{name}", [*prefix, sys.executable, "-m", "inference.cli.launch", model, "--name", name, *args], env)
    return name


def start_api(procs: Processes, env: dict, name: str = "api") -> str:
    port = free_port()
    api_env = {"API_WORKERS": "2", **env, "API_PORT": str(port), "API_HOST": "127.0.0.1"}
    procs.start(name, [sys.executable, "-m", "gunicorn", "-c", "api/gunicorn_conf.py", "api.wsgi:app"], api_env)
    base = f"http://127.0.0.1:{port}"
    wait_until(lambda: requests.get(f"{base}/health/live", timeout=2).ok, 30, what="the API")
    return base


def wait_for_ready_workers(base_url: str, count: int, timeout: float = 180) -> list[dict]:
    def ready():
        # Every API process keeps its own view of the workers: twelve answers in a row, spread over
        # the processes by the kernel (one listening socket each), all see them.
        answers = [requests.get(f"{base_url}/workers/status", timeout=5).json() for _ in range(12)]
        return answers[-1]["workers"] if all(body["ready"] >= count for body in answers) else None

    return wait_until(ready, timeout, interval=0.5, what=f"{count} ready workers in every API process")
