"""Start a worker from its declarative config: `python -m inference.cli.launch resnet18`.

Reads worker_configs/<name>.toml and execs
`celery -A inference worker --model <model> --concurrency N --pool P --hostname <model>@%h`.
Environment variables (WORKER_CONCURRENCY, TORCH_THREADS, ...) win over the file.
With `--restart` it stays as a supervisor and starts the worker again whenever it dies (the
Procfile uses this: honcho would otherwise stop the whole system when one worker crashes).

`replicas = N` (WORKER_REPLICAS) runs N such Celery workers for the config, nodes
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
import tomllib
from pathlib import Path

log = logging.getLogger("launch")

CONFIG_DIR = Path(__file__).resolve().parents[2] / "worker_configs"

# config key -> environment variable that the worker reads
ENV_OF_KEY = {
    "model": "WORKER_MODEL",
    "concurrency": "WORKER_CONCURRENCY",
    "torch_threads": "TORCH_THREADS",
    "pool": "WORKER_POOL",
    "priorities": "WORKER_PRIORITIES",
    "device": "WORKER_DEVICE",
    "batch_size": "MAX_BATCH_SIZE",
    "batch_delay_ms": "MAX_BATCH_DELAY_MS",
    "instances": "MODEL_INSTANCES",
    "optimize": "MODEL_OPTIMIZE",
    "channels_last": "WORKER_CHANNELS_LAST",
    "fp16": "WORKER_FP16",
    "replicas": "WORKER_REPLICAS",
}


def read_config(name_or_path: str) -> dict:
    path = Path(name_or_path)
    if not path.suffix:
        path = CONFIG_DIR / f"{name_or_path}.toml"
    with path.open("rb") as fh:
        return tomllib.load(fh)


def celery_argv(config: dict, name: str | None = None, replica: int | None = None) -> list[str]:
    """The `celery worker` command for a config; `replica` n names its node <name>-n@host."""
    model = os.environ.get("WORKER_MODEL") or config["model"]
    hostname = name or f"{model}@%h"
    concurrency = int(os.environ.get("WORKER_CONCURRENCY") or config.get("concurrency", 1))
    pool = os.environ.get("WORKER_POOL") or config.get("pool", "prefork")
    batch_size = int(os.environ.get("MAX_BATCH_SIZE") or config.get("batch_size", 1))
    if batch_size > 1 or pool == "threads":
        # A batch gathers requests that run at once: threads in one process holding one model.
        # Twice what the model instances hold, so the next batches are ready when one ends
        # (auto, 0, picks at most 2); at batch size 1 too, where the instances run side by side.
        instances = int(os.environ.get("MODEL_INSTANCES") or config.get("instances", 0)) or 2
        pool, concurrency = "threads", max(concurrency, 2 * batch_size * instances)
    return [
        sys.executable, "-m", "celery", "-A", "inference", "worker",
        "--model", model,
        "--concurrency", str(concurrency),
        "--pool", pool,
        "--loglevel", os.environ.get("LOG_LEVEL") or config.get("loglevel", "INFO"),
        "--hostname", replica_name(hostname, replica) if replica else hostname,
    ]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("config", help="worker config name (worker_configs/<name>.toml) or path")
    parser.add_argument("--name", help="Celery node name (default <model>@%%h); unique per worker")
    parser.add_argument("--restart", action="store_true", help="supervise: start the worker again when it dies")
    args = parser.parse_args(argv)
    config = read_config(args.config)
    for key, env in ENV_OF_KEY.items():
        if key in config:
            value = config[key]
            os.environ.setdefault(env, ",".join(value) if isinstance(value, list) else str(value))
    for key, value in config.get("chaos", {}).items():
        os.environ.setdefault(f"CHAOS_{key.upper()}", str(value))
    replicas = int(os.environ.get("WORKER_REPLICAS") or 1)
    if replicas > 1:
        # Their torch threads share the cores as those of as many workers would.
        os.environ["HOST_WORKERS"] = str(int(os.environ.get("HOST_WORKERS") or 1) * replicas)
        raise SystemExit(supervise([celery_argv(config, args.name, replica=n) for n in range(1, replicas + 1)], args.restart))
    cmd = celery_argv(config, args.name)
    if args.restart:
        raise SystemExit(supervise([cmd], restart=True))
    os.execv(cmd[0], cmd)


def replica_name(name: str, n: int) -> str:
    """The node name of a config's nth replica: resnet18@%h -> resnet18-2@%h."""
    node, at, host = name.partition("@")
    return f"{node}-{n}{at}{host}"


def supervise(cmds: list[list[str]], restart: bool, pause: float = 2.0) -> int:
    """Run one worker per command, as one unit: SIGTERM/SIGINT go to all of them, and this
    returns once they are gone. One that dies on its own is started again (`restart`), or
    stops the others (its exit code is returned)."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    stopping = False
    running: dict[int, tuple[list[str], subprocess.Popen]] = {}

    def start(cmd: list[str]) -> None:
        child = subprocess.Popen(cmd)
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
