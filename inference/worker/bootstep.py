"""Celery integration of a worker: `--model` pins it to one model's queues, and control commands.

- `--model` (or WORKER_MODEL) selects the model; the worker then consumes only that model's
  queues, high before normal before low (inference/worker/process.py loads it).
- `celery -A inference inspect model_info` reports model, weights, device, load and warm-up
  time of every process; `control simulate_crash` kills a worker started for chaos.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import tempfile
import threading
import time
from pathlib import Path

from celery import bootsteps
from celery.signals import after_setup_logger, after_setup_task_logger, worker_process_init
from celery.worker import state as worker_state
from celery.worker.control import control_command, inspect_command

from inference.core import control_conf, heap_trim, tracing  # noqa: F401  (control_conf: `inspect conf` masks every password)
from inference.core.celery_app import app
from inference.core.logging_setup import formatter
from inference.core.queues import PRIORITIES, queue_name
from inference.core.registry import get_spec
from inference.core.settings import get_settings, use_settings
from inference.worker import lost_messages, process, unacked_records
from inference.worker.sizing import openmp_wait_policy

log = logging.getLogger(__name__)

# The consumer records the messages it holds without waiting for Redis (inference/worker/unacked_records.py).
unacked_records.use_write_behind()


class PinToModel(bootsteps.StartStopStep):
    """Applies `--model`: selects the model's queues and tells pool processes what to load."""

    def __init__(self, worker, model=None, **options):
        openmp_wait_policy()  # before torch loads, here or in the pool processes
        if tracing.setup("worker"):  # off unless OTEL_* variables ask for traces; pool processes inherit it
            tracing.instrument_celery()
        settings = get_settings()
        heap_trim.limit_arenas(settings.malloc_arena_max)  # before the model host's and the tasks' threads allocate
        model = model or settings.worker_model
        if not model:
            raise SystemExit("a worker serves one model: pass --model NAME or set WORKER_MODEL")
        get_spec(model)  # fail fast on an unknown name
        # The settings as this worker runs them (the command line's model, pool and concurrency):
        # its pool processes, forked after this, inherit them, and the model-info directory.
        use_settings(settings.model_copy(update={"worker_model": model, "worker_pool": pool_kind(worker.pool_cls),
                                                 "worker_concurrency": worker.concurrency}))
        process.report_dir = tempfile.mkdtemp(prefix=f"inference-{model}-")
        queues = worker_queues(model)
        worker.setup_queues(queues)
        log.info("worker pinned to model %s, queues %s", model, ", ".join(queues))
        if get_settings().worker_pool != "prefork":
            # The model in a child process of its own (inference/worker/model_host.py), started
            # and warm before any task arrives.
            process.start_model_host()
        self.sweeping: threading.Event | None = None

    def start(self, worker):
        heap_trim.start(get_settings().heap_trim_seconds)
        self.sweeping = lost_messages.start()  # with every worker: a host lost takes no sweeper with it

    def stop(self, worker):
        if self.sweeping:
            self.sweeping.set()
        # A model host's process ends with this one (it reads end of file), after the last batch.
        if process.report_dir:
            shutil.rmtree(process.report_dir, ignore_errors=True)

    terminate = stop


app.steps["worker"].add(PinToModel)


@worker_process_init.connect
def load_model_in_pool_process(**_):
    """Each prefork pool process loads its own model (the solo pool sends this in the main
    process, whose model runs in a model host instead)."""
    if get_settings().worker_pool == "prefork":
        process.load_model_in_process()


# Celery's own line per task received and per task succeeded (with the whole result): the
# worker's line per request says as much (tasks.py), and at hundreds of requests a second these
# cost CPU to format and relay. Shown at LOG_LEVEL=DEBUG; failures and retries are logged anyway.
PER_TASK_LOGGERS = ("celery.worker.strategy", "celery.app.trace")


@after_setup_logger.connect
def _worker_format(logger=None, **_):
    for handler in logger.handlers:
        handler.setFormatter(formatter())
    if logger.getEffectiveLevel() > logging.DEBUG:
        for name in PER_TASK_LOGGERS:
            logging.getLogger(name).setLevel(logging.WARNING)


@after_setup_task_logger.connect
def _task_format(logger=None, **_):
    for handler in logger.handlers:
        handler.setFormatter(formatter(for_tasks=True))


def worker_queues(model: str) -> list[str]:
    """The model's queues this worker consumes (WORKER_PRIORITIES), high before normal before low."""
    wanted = {p.strip() for p in get_settings().worker_priorities.split(",") if p.strip()}
    unknown = wanted - set(PRIORITIES)
    if unknown or not wanted:
        raise SystemExit(f"WORKER_PRIORITIES must name some of {', '.join(PRIORITIES)}; got {sorted(unknown) or 'nothing'}")
    return [queue_name(model, p) for p in PRIORITIES if p in wanted]


def pool_kind(pool_cls) -> str:
    module = getattr(pool_cls, "__module__", str(pool_cls))
    return "prefork" if "prefork" in module else ("threads" if "thread" in module else "solo")


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
        return True
    except OSError:
        return False


def process_infos() -> list[dict]:
    if not process.report_dir or not os.path.isdir(process.report_dir):
        return []
    infos = []
    for path in sorted(Path(process.report_dir).glob("*.json")):
        info = json.loads(path.read_text())
        if _alive(info["pid"]):
            infos.append(info)
    return infos


@inspect_command()
def model_info(state):
    """Model, weights, device, load and warm-up time of each pool process of this worker."""
    settings = get_settings()
    processes = process_infos()
    weights = sorted({p["weights"] for p in processes})
    return {
        "model": settings.worker_model,
        "queues": worker_queues(settings.worker_model) if settings.worker_model else [],
        "weights": weights[0] if len(weights) == 1 else (weights or None),
        "weights_warning": next((p["weights_warning"] for p in processes if p["weights_warning"]), None),
        "device": processes[0]["device"] if processes else None,
        "concurrency": getattr(state.consumer.controller, "concurrency", None),
        "ready_processes": len(processes),
        "active": len(worker_state.active_requests),
        "held": len(worker_state.reserved_requests),  # received and not yet done: active, or waiting for a thread
        "processed": sum(worker_state.total_count.values()),
        "processes": processes,
        "answered_at": time.time(),  # this worker's own clock: its heartbeat as the API sees it
    }


@control_command(args=[("delay", float)], signature="[delay=0.2]")
def simulate_crash(state, delay=0.2):
    """Chaos: SIGKILL this whole worker (pool processes, then the main process) after replying,
    if CHAOS_ENABLED is set on the worker: anyone who can write to Redis can send a control
    command, and no such command may take a worker down that was not started for chaos.

    `celery -A inference control simulate_crash --destination resnet18@host`
    """
    from inference.worker.chaos import crash_worker

    if not get_settings().chaos_enabled:
        log.warning("chaos: simulate_crash received and ignored (CHAOS_ENABLED is off on this worker)")
        return {"error": "chaos is disabled on this worker (CHAOS_ENABLED=false)"}

    pool = state.consumer.pool
    pids = list(pool.info.get("processes", [])) if pool is not None else []
    pids += [pid for pid in [process.model_host_pid()] if pid]
    log.error("chaos: simulate_crash received; killing processes %s and %s", pids, os.getpid())
    crash_worker(pids, delay)
    return {"ok": f"crashing in {delay} s", "pids": pids + [os.getpid()]}
