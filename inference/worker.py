"""Worker start-up: pin a worker to one model, load the model once per process, report it.

- `--model` (or WORKER_MODEL) selects the model; the worker then consumes only that model's
  queues, high before normal before low.
- Each pool process loads and warms up the model in `worker_process_init` (the solo pool sends
  it in the main process; for the threads pool, which sends none, the main process loads it
  at start-up), so a process takes tasks only once its model is ready.
- `celery -A inference inspect model_info` reports model, weights, device, load and warm-up
  time of every process.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from celery import bootsteps
from celery.signals import worker_process_init
from celery.worker import state as worker_state
from celery.worker.control import control_command, inspect_command

from inference import logging_setup  # noqa: F401  (log format signals)
from inference.batching import MicroBatcher
from inference.celery_app import app
from inference.errors import InvalidRequest
from inference.imaging import model_input
from inference.queues import PRIORITIES, queue_name
from inference.registry import get_spec
from inference.settings import cpu_count, get_settings

log = logging.getLogger(__name__)

STATE_DIR_ENV = "INFERENCE_STATE_DIR"  # where pool processes leave their model info for the inspect command
_loaded = None  # this process's LoadedModel
_batcher: MicroBatcher | None = None  # and the batcher in front of it
_decoders: ThreadPoolExecutor | None = None  # decode a batch's pictures in parallel (PIL releases the GIL)


class PinToModel(bootsteps.StartStopStep):
    """Applies `--model`: selects the model's queues and tells pool processes what to load."""

    def __init__(self, worker, model=None, **options):
        openmp_wait_policy()  # before torch loads, here or in the pool processes
        model = model or get_settings().worker_model
        if not model:
            raise SystemExit("a worker serves one model: pass --model NAME or set WORKER_MODEL")
        get_spec(model)  # fail fast on an unknown name
        os.environ["WORKER_MODEL"] = model  # inherited by the forked pool processes
        os.environ[STATE_DIR_ENV] = tempfile.mkdtemp(prefix=f"inference-{model}-")
        os.environ["WORKER_POOL"] = pool_kind(worker.pool_cls)
        os.environ["WORKER_CONCURRENCY"] = str(worker.concurrency)
        get_settings.cache_clear()
        queues = worker_queues(model)
        worker.setup_queues(queues)
        log.info("worker pinned to model %s, queues %s", model, ", ".join(queues))
        if os.environ["WORKER_POOL"] == "threads":
            # The threads pool sends no worker_process_init: load here, before any task arrives.
            load_model_in_process()


    def stop(self, worker):
        shutil.rmtree(os.environ.get(STATE_DIR_ENV, ""), ignore_errors=True)

    terminate = stop


app.steps["worker"].add(PinToModel)


def openmp_wait_policy() -> None:
    """GOMP_SPINCOUNT for this process's torch (its OpenMP runtime reads it once, as it loads),
    unless the environment already says how idle torch threads wait."""
    if "OMP_WAIT_POLICY" not in os.environ:
        os.environ.setdefault("GOMP_SPINCOUNT", str(get_settings().gomp_spincount))


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


def torch_threads(device: str = "cpu") -> int:
    """Share the machine's cores among every copy of a model on it: HOST_WORKERS workers, each
    with its prefork children or model instances. More torch threads than cores made every
    forward pass wait on preempted threads (4 workers x 2 threads on 2 cores: p50 1 s). A model
    on a GPU gets one: its CPU work is a few small ops per batch, and a team of threads
    spinning after each of them took the cores the Celery consumer needed (on a 16-core
    H100 host, 8 threads per instance: ~100 requests/s)."""
    settings = get_settings()
    if settings.torch_threads:
        return settings.torch_threads
    if device.startswith("cuda"):
        return 1
    copies = settings.worker_concurrency if settings.worker_pool == "prefork" else model_instances(device)
    return max(1, cpu_count() // max(1, copies * settings.host_workers))


def model_instances(device: str = "cpu") -> int:
    """MODEL_INSTANCES, or when 0 (auto) what suits the device; one where TORCH_THREADS pins each
    copy's threads (two would double them). The prefork pool runs one per process."""
    settings = get_settings()
    if settings.worker_pool == "prefork":
        return 1
    if settings.model_instances:
        return settings.model_instances
    return 1 if settings.torch_threads else auto_instances(device, cpu_count() // settings.host_workers)


def auto_instances(device: str, cores: int) -> int:
    """On a CPU with cores to share, two instances with adaptive threads (see `adaptive_threads`;
    what they gained is in docs/performance.md). Elsewhere one."""
    return 2 if device == "cpu" and cores >= 2 else 1


@worker_process_init.connect
def load_model_in_process(**_):
    global _loaded, _batcher, _decoders
    settings = get_settings()
    if not settings.worker_model:
        return
    from inference import model_runtime  # torch is imported in pool processes only

    device = model_runtime.pick_device(settings.worker_device)

    def load_here() -> None:
        # Building the model (random weights are calibrated with forward passes) and warming it
        # up run in the batcher's thread, the one that will run every batch: a second OpenMP team,
        # left behind by torch work in this main thread, made each forward pass ~50% slower.
        global _loaded
        _loaded = model_runtime.load(
            get_spec(settings.worker_model),
            settings.model_weights,
            settings.random_weights_seed,
            allow_download=settings.weights_download,
            device=device,
            threads=torch_threads(device),
            optimize=settings.model_optimize,
            channels_last=settings.worker_channels_last,
            fp16=settings.worker_fp16,
        )

    if settings.max_batch_size > 1 and torch_threads() > 1:  # PIL decoding: CPU cores, whatever the device
        _decoders = ThreadPoolExecutor(torch_threads(), thread_name_prefix="decode", initializer=one_torch_thread)
    instances = model_instances(device)
    share_cores = adaptive_threads(lone_batch_threads(instances)) if instances > 1 and device == "cpu" else None
    _batcher = MicroBatcher(decode_and_classify, settings.max_batch_size, settings.max_batch_delay_ms / 1000,
                            initializer=load_here, instances=instances, instance_initializer=lambda: loaded_model().warm_up(),
                            share_cores=share_cores)
    _batcher.wait_ready(settings.worker_proc_alive_timeout)  # ready only after load and warm-up
    info = loaded_model().info
    info.update(max_batch_size=settings.max_batch_size, max_batch_delay_ms=settings.max_batch_delay_ms, pool=settings.worker_pool,
                instances=instances, adaptive_threads=share_cores is not None, gomp_spincount=os.environ.get("GOMP_SPINCOUNT"))
    if info["weights"] == "random":
        log.warning("!!! %s (model %s, process %s) !!!", info["weights_warning"], info["model"], os.getpid())
    log.info("model ready: %s", json.dumps(info))
    state_dir = os.environ.get(STATE_DIR_ENV)
    if state_dir:
        Path(state_dir, f"{os.getpid()}.json").write_text(json.dumps({**info, "ready_at": time.time()}))


def lone_batch_threads(instances: int) -> int:
    """The torch threads a batch running alone in a CPU worker may take: every instance's,
    within the worker's share of the cores (3 instances on 2 cores: 2, not 3)."""
    per_instance = torch_threads()
    return max(per_instance, min(per_instance * instances, cpu_count() // get_settings().host_workers))


def adaptive_threads(process_threads: int):
    """The batcher's `share_cores` on a CPU: a batch that runs alone gets all the process's
    threads (no latency lost at low load), each of n instances busy side by side 1/n of them
    (at saturation, single-threaded instances do not stall on each other's preempted threads).
    torch's setting is the calling thread's own (OpenMP), so each instance sets its own."""
    import torch

    def share_cores(side_by_side: int) -> None:
        threads = max(1, process_threads // side_by_side)
        if torch.get_num_threads() != threads:
            torch.set_num_threads(threads)

    return share_cores


def one_torch_thread() -> None:
    """Decoding threads run a few torch ops (preprocessing): with their own OpenMP teams of
    several threads, left spinning beside the model's, resnet18 ran ~40% slower afterwards."""
    import torch

    torch.set_num_threads(1)  # for this thread only (OpenMP's setting is per thread)


def decode_and_classify(items: list[tuple[bytes, int]]) -> list:
    """The batcher's work for a batch of (encoded image, top_k): decode and preprocess each
    picture, then one forward pass for those that decoded. Decoding here, right before the
    forward pass (as a plain script would), rather than in the task threads while a forward pass
    runs: on a busy CPU those took cores from torch mid-pass. JPEGs go through torchvision on
    the model's device when IMAGE_DECODER says so (inference/tensor_decode.py), the rest through
    PIL on the decoding threads. A picture that does not decode fails its own request only."""
    from inference import tensor_decode  # torch: pool processes only

    loaded, max_pixels = loaded_model(), get_settings().max_image_pixels
    raws = [raw for raw, _ in items]
    inputs: list = [None] * len(raws)
    if tensor_decode.used_for(loaded.device):
        # Header checks hold the GIL (PIL parses JPEG markers in Python): no threads for them.
        chosen = [n for n, raw in enumerate(raws) if tensor_decode.suits_tensor_decoding(raw, max_pixels)]
        decoded = [(n, picture) for n, picture in zip(chosen, tensor_decode.decode([raws[n] for n in chosen], loaded.device))
                   if picture is not None]
        for (n, _), tensor in zip(decoded, tensor_decode.preprocess([picture for _, picture in decoded], loaded.transforms)):
            inputs[n] = tensor

    def prepare(raw: bytes):
        try:
            return loaded.transforms(model_input(raw, max_pixels))
        except InvalidRequest as exc:
            return exc

    rest = [n for n, tensor in enumerate(inputs) if tensor is None]
    for n, tensor in zip(rest, parallel_map(prepare, [raws[n] for n in rest])):
        inputs[n] = tensor
    ready = [(tensor, top_k) for tensor, (_, top_k) in zip(inputs, items) if not isinstance(tensor, Exception)]
    outputs = iter(loaded.classify_each(ready) if ready else [])
    return [tensor if isinstance(tensor, Exception) else next(outputs) for tensor in inputs]


def parallel_map(fn, items: list) -> list:
    """fn over items, on the decoding threads when there are several items and threads."""
    return list(_decoders.map(fn, items)) if _decoders is not None and len(items) > 1 else [fn(item) for item in items]


def loaded_model():
    if _loaded is None:
        raise RuntimeError("no model loaded in this process (is the worker started with --model?)")
    return _loaded


def batcher() -> MicroBatcher:
    if _batcher is None:
        raise RuntimeError("no model loaded in this process (is the worker started with --model?)")
    return _batcher


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
        return True
    except OSError:
        return False


def process_infos() -> list[dict]:
    state_dir = os.environ.get(STATE_DIR_ENV)
    if not state_dir or not os.path.isdir(state_dir):
        return []
    infos = []
    for path in sorted(Path(state_dir).glob("*.json")):
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
        "processed": sum(worker_state.total_count.values()),
        "processes": processes,
    }


@control_command(args=[("delay", float)], signature="[delay=0.2]")
def simulate_crash(state, delay=0.2):
    """Chaos: SIGKILL this whole worker (pool processes, then the main process) after replying,
    if CHAOS_ENABLED is set on the worker: anyone who can write to Redis can send a control
    command, and no such command may take a worker down that was not started for chaos.

    `celery -A inference control simulate_crash --destination resnet18@host`
    """
    from inference.chaos import crash_worker

    if not get_settings().chaos_enabled:
        log.warning("chaos: simulate_crash received and ignored (CHAOS_ENABLED is off on this worker)")
        return {"error": "chaos is disabled on this worker (CHAOS_ENABLED=false)"}

    pool = state.consumer.pool
    pids = list(pool.info.get("processes", [])) if pool is not None else []
    log.error("chaos: simulate_crash received; killing processes %s and %s", pids, os.getpid())
    crash_worker(pids, delay)
    return {"ok": f"crashing in {delay} s", "pids": pids + [os.getpid()]}
