"""Start and stop the system's processes, each with a log file: the tests, the benchmarks and
`make cluster` run the real servers this way."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


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


def api_command() -> list[str]:
    """The API as `make run` starts it (api/serve.py; API_HOST and API_PORT in its environment)."""
    return [sys.executable, "-m", "api.serve"]


def worker_command(model: str, name: str, *args: str) -> list[str]:
    """One worker config's worker, as the Procfile starts it, with Celery node name `name`."""
    return [sys.executable, "-m", "inference.cli.launch", model, "--name", name, *args]


def wait_for_api(base_url: str, timeout: float = 30) -> str:
    import requests

    wait_until(lambda: requests.get(f"{base_url}/health/live", timeout=2).ok, timeout, what=f"the API at {base_url}")
    return base_url


@dataclass
class Processes:
    log_dir: Path = ROOT / "var" / "log"
    procs: dict[str, subprocess.Popen] = field(default_factory=dict)
    data_dirs: dict[str, str] = field(default_factory=dict)

    def start(self, name: str, cmd: list[str], env: dict) -> subprocess.Popen:
        self.log_dir.mkdir(parents=True, exist_ok=True)
        log = open(self.log_dir / f"{name}.log", "ab")  # noqa: SIM115  (the child writes to it; a restart appends)
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
        """Last started first: the clients, then the servers they need to stop cleanly (Redis)."""
        for name in reversed(list(self.procs)):
            self.stop(name)
