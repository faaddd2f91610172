"""Start a worker from its declarative config: `python -m inference.cli.launch resnet18`.

Reads worker_configs/<name>.toml and execs
`celery -A inference worker --model <model> --concurrency N --pool P --hostname <model>@%h`.
Environment variables (WORKER_CONCURRENCY, TORCH_THREADS, ...) win over the file.
With `--restart` it stays as a supervisor and starts the worker again whenever it dies (the
Procfile uses this: honcho would otherwise stop the whole system when one worker crashes).

`worker_replicas = N` (WORKER_REPLICAS) runs N such Celery workers for the config, nodes
`<name>-1@host` ... `<name>-N@host`, each with its own GIL, model copy and batcher, all on the
config's device, supervised as one: a signal goes to all of them, and without `--restart` one
that dies takes the others down with it. One process's GIL cannot keep a GPU busy with requests
of many pictures (see docs/performance.md); on a CPU, instances in one process
share the cores better.
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import subprocess
import sys
import time

from inference.core.settings import Settings, worker_config_path

log = logging.getLogger("launch")


def celery_argv(settings: Settings, name: str | None = None, replica: int | None = None) -> list[str]:
    """The `celery worker` command for a worker's settings; `replica` n names its node <name>-n@host."""
    hostname = name or f"{settings.worker_model}@%h"
    pool, concurrency = settings.worker_pool, settings.worker_concurrency
    if settings.max_batch_size > 1 and pool == "prefork":
        pool = "threads"  # a batch gathers requests that run at once: threads in one process holding one model
    if pool == "threads":
        # Twice what the model instances hold, so the next batches are ready when one ends
        # (auto, 0, picks at most 2); at batch size 1 too, where the instances run side by side.
        instances = settings.model_instances or 2
        concurrency = max(concurrency, 2 * settings.max_batch_size * instances)
    return [
        sys.executable, "-m", "celery", "-A", "inference", "worker",
        "--model", settings.worker_model,
        "--concurrency", str(concurrency),
        "--pool", pool,
        "--loglevel", settings.log_level,
        "--hostname", replica_name(hostname, replica) if replica else hostname,
    ]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("config", help="worker config name (worker_configs/<name>.toml) or path")
    parser.add_argument("--name", help="Celery node name (default <model>@%%h); unique per worker")
    parser.add_argument("--restart", action="store_true", help="supervise: start the worker again when it dies")
    args = parser.parse_args(argv)
    settings = Settings(worker_config=args.config)  # the environment, then the file, then the defaults
    if not settings.worker_model:
        raise SystemExit(f"{worker_config_path(args.config)} names no worker_model")
    # The worker reads the same file; its replicas' torch threads share the cores as that many workers' would.
    env = {**os.environ, "WORKER_CONFIG": args.config, "HOST_WORKERS": str(settings.host_workers * settings.worker_replicas)}
    if settings.worker_replicas > 1:
        cmds = [celery_argv(settings, args.name, replica=n) for n in range(1, settings.worker_replicas + 1)]
        raise SystemExit(supervise(cmds, args.restart, env))
    cmd = celery_argv(settings, args.name)
    if args.restart:
        raise SystemExit(supervise([cmd], True, env))
    os.execve(cmd[0], cmd, env)


def replica_name(name: str, n: int) -> str:
    """The node name of a config's nth replica: resnet18@%h -> resnet18-2@%h."""
    node, at, host = name.partition("@")
    return f"{node}-{n}{at}{host}"


def supervise(cmds: list[list[str]], restart: bool, env: dict[str, str], pause: float = 2.0) -> int:
    """Run one worker per command, as one unit: SIGTERM/SIGINT go to all of them, and this
    returns once they are gone. One that dies on its own is started again (`restart`), or
    stops the others (its exit code is returned)."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    stopping = False
    running: dict[int, tuple[list[str], subprocess.Popen]] = {}

    def start(cmd: list[str]) -> None:
        child = subprocess.Popen(cmd, env=env)
        running[child.pid] = (cmd, child)  # held: a dropped Popen of a live child is reaped by the next Popen()

    def stop(signum, _frame):
        nonlocal stopping
        stopping = True
        for pid in list(running):
            try:
                os.kill(pid, signum)  # not Popen.send_signal: its poll() could reap a child os.wait() waits for
            except ProcessLookupError:
                pass

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    for cmd in cmds:
        start(cmd)
    code = 0
    while running:
        pid, status = os.wait()
        if pid not in running:
            continue
        cmd, child = running.pop(pid)
        child.returncode = os.waitstatus_to_exitcode(status)  # reaped here, not by Popen
        if stopping:
            code = code or child.returncode
        elif restart:
            log.warning("worker %s exited with %s; starting it again in %.0f s", cmd[-1], child.returncode, pause)
            time.sleep(pause)
            if not stopping:
                start(cmd)
        else:
            log.warning("worker %s exited with %s; stopping the others", cmd[-1], child.returncode)
            code = child.returncode
            stop(signal.SIGTERM, None)
    return code


if __name__ == "__main__":
    main()
