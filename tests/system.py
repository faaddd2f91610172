"""Start the real system for tests: embedded Valkey, one worker per model, the API (granian).

Everything runs as separate processes, the way `make run` starts them, on free ports.
"""

from __future__ import annotations

import os
import secrets
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from inference.cluster import processes
from inference.cluster.processes import ROOT, api_command, free_port, wait_for_api, wait_until, worker_command
from inference.cluster.topology import wait_for_ready_workers as wait_for_ready_workers  # the tests' name for it

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


def children_of(pid: int) -> list[int]:
    """The live child processes of `pid` (one that ended and is not yet reaped is not)."""
    return [child for child, fields in process_stats() if int(fields[1]) == pid and fields[0] != "Z"]


def command_line(pid: int) -> str:
    """A process's command line, its arguments joined by spaces ("" for one gone)."""
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""


def still_running(pid: int, cmdline: str) -> bool:
    """Whether `pid` is still the process whose command line began with `cmdline` (pids are reused:
    pid_max may be 32768)."""
    return command_line(pid).startswith(cmdline.strip())


def cpu_seconds(pid: int) -> float:
    """CPU time of a process (all its threads, exited ones too), in nanoseconds' precision: the
    kernel's process CPU clock (clock_getcpuclockid), not /proc's clock ticks, which are 10 ms
    samples and charge a short burst to whoever held the CPU at the tick. 0 for a process gone."""
    process_clock = ((~pid) << 3) | 2  # MAKE_PROCESS_CPUCLOCK(pid, CPUCLOCK_SCHED), as glibc builds it
    try:
        return time.clock_gettime(process_clock)
    except OSError:
        return 0.0


@dataclass
class Processes(processes.Processes):
    log_dir: Path = LOG_DIR


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
    procs.start(f"worker-{name}", [*prefix, *worker_command(model, name, *args)], env)
    return name


def start_api(procs: Processes, env: dict, name: str = "api") -> str:
    port = free_port()
    api_env = {"API_WORKERS": "2", **env, "API_PORT": str(port), "API_HOST": "127.0.0.1"}
    procs.start(name, api_command(), api_env)
    return wait_for_api(f"http://127.0.0.1:{port}")
