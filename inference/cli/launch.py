"""Start a worker from its declarative config: `python -m inference.cli.launch resnet18`.

Reads worker_configs/<name>.toml and execs
`celery -A inference worker --model <model> --concurrency N --pool P --hostname <model>@%h`.
Environment variables (WORKER_CONCURRENCY, TORCH_THREADS, ...) win over the file.
With `--restart` it becomes a supervisor (inference/cli/supervise.py, same process) that starts
the worker again whenever it dies (the Procfile uses this: honcho would otherwise stop the
whole system when one worker crashes).

`worker_replicas = N` (WORKER_REPLICAS) runs N such Celery workers for the config, nodes
`<name>-1@host` ... `<name>-N@host`, each with its own GIL, model copy and batcher, all on the
config's device, supervised as one: a signal goes to all of them, and without `--restart` one
that dies takes the others down with it. One process's GIL cannot keep a GPU busy with requests
of many pictures (see docs/performance.md); on a CPU, instances in one process
share the cores better.
"""

from __future__ import annotations

import argparse
import json
import os
import sys

from inference.core.settings import Settings, worker_config_path


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
    replicas = range(1, settings.worker_replicas + 1) if settings.worker_replicas > 1 else [None]
    cmds = [celery_argv(settings, args.name, replica=n) for n in replicas]
    if len(cmds) > 1 or args.restart:
        # The supervisor in a fresh interpreter without the settings' imports: ~7 MB instead of
        # 21 (PSS), for as long as the worker runs (inference/cli/supervise.py).
        supervisor = [sys.executable, "-m", "inference.cli.supervise", *(["--restart"] if args.restart else []), json.dumps(cmds)]
        os.execve(supervisor[0], supervisor, env)
    os.execve(cmds[0][0], cmds[0], env)


def replica_name(name: str, n: int) -> str:
    """The node name of a config's nth replica: resnet18@%h -> resnet18-2@%h."""
    node, at, host = name.partition("@")
    return f"{node}-{n}{at}{host}"


if __name__ == "__main__":
    main()
