"""Start a worker from its declarative config: `python -m inference.launch resnet18`.

Reads worker_configs/<name>.toml and execs
`celery -A inference worker --model <model> --concurrency N --pool P --hostname <model>@%h`.
Environment variables (WORKER_CONCURRENCY, TORCH_THREADS, ...) win over the file.
With `--restart` it stays as a supervisor and starts the worker again whenever it dies (the
Procfile uses this: honcho would otherwise stop the whole system when one worker crashes).
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

CONFIG_DIR = Path(__file__).resolve().parent.parent / "worker_configs"

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
}


def read_config(name_or_path: str) -> dict:
    path = Path(name_or_path)
    if not path.suffix:
        path = CONFIG_DIR / f"{name_or_path}.toml"
    with path.open("rb") as fh:
        return tomllib.load(fh)


def celery_argv(config: dict, name: str | None = None) -> list[str]:
    model = os.environ.get("WORKER_MODEL") or config["model"]
    concurrency = int(os.environ.get("WORKER_CONCURRENCY") or config.get("concurrency", 1))
    pool = os.environ.get("WORKER_POOL") or config.get("pool", "prefork")
    batch_size = int(os.environ.get("MAX_BATCH_SIZE") or config.get("batch_size", 1))
    if batch_size > 1:
        # A batch gathers requests that run at once: threads in one process holding one model.
        # Twice what the model instances hold, so the next batches are ready when one ends
        # (auto, 0, picks at most 2).
        instances = int(os.environ.get("MODEL_INSTANCES") or config.get("instances", 0)) or 2
        pool, concurrency = "threads", max(concurrency, 2 * batch_size * instances)
    return [
        sys.executable, "-m", "celery", "-A", "inference", "worker",
        "--model", model,
        "--concurrency", str(concurrency),
        "--pool", pool,
        "--loglevel", os.environ.get("LOG_LEVEL") or config.get("loglevel", "INFO"),
        "--hostname", name or f"{model}@%h",
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
    cmd = celery_argv(config, args.name)
    if args.restart:
        raise SystemExit(supervise(cmd))
    os.execv(cmd[0], cmd)


def supervise(cmd: list[str], pause: float = 2.0) -> int:
    """Run the worker; start it again after it dies; pass SIGTERM/SIGINT on and stop."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    stopping = False
    child: subprocess.Popen | None = None

    def stop(signum, _frame):
        nonlocal stopping
        stopping = True
        if child and child.poll() is None:
            child.send_signal(signum)

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    while True:
        child = subprocess.Popen(cmd)
        code = child.wait()
        if stopping:
            return code
        log.warning("worker exited with %s; starting it again in %.0f s", code, pause)
        time.sleep(pause)


if __name__ == "__main__":
    main()
