"""A worker process's model: loaded and warmed up once per process, then fed by the batcher.

Each prefork pool process loads the model in `worker_process_init` (inference/worker/bootstep.py),
so a process takes tasks only once its model is ready. A threads or solo worker batches in its
main process and runs the model in a child (inference/worker/model_host.py), which loads it the
same way. Pictures are decoded right before the forward pass (`decode_and_classify`).
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING

from inference.core import heap_trim
from inference.core.errors import InvalidRequest, PoisonMessage
from inference.core.imaging import model_input
from inference.core.registry import ModelSpec, get_spec
from inference.core.settings import cpu_count, get_settings
from inference.worker import chaos
from inference.worker.batching import MicroBatcher
from inference.worker.device import pick_device
from inference.worker.runtime_choice import resolve_runtime
from inference.worker.sizing import adaptive_threads, lone_batch_threads, model_instances, one_torch_thread, torch_threads

if TYPE_CHECKING:
    from inference.worker.model_host import ModelHost
    from inference.worker.model_runtime import LoadedModel  # torch: PyTorch workers only
    from inference.worker.openvino_runtime import CompiledClassifier

log = logging.getLogger(__name__)

report_dir: str | None = None  # where pool processes leave their model info for `inspect model_info` (set by the bootstep)
_loaded: LoadedModel | CompiledClassifier | HostedModel | None = None  # this process's model (or its host's)
_batcher: MicroBatcher | None = None  # and the batcher in front of it
_decoders: ThreadPoolExecutor | None = None  # decode a batch's pictures in parallel (PIL releases the GIL)
_decoding_threads = 1  # its size (1: no pool)
_host: ModelHost | None = None  # the model's process, in a threads or solo worker


class HostedModel:
    """What a worker's task threads need of a model that runs in its model host."""

    def __init__(self, spec: ModelSpec, host: ModelHost):
        self.spec, self._host = spec, host

    @property
    def info(self) -> dict:
        return self._host.info  # the current model process's (a new one after a crash)


def start_model_host() -> None:
    """A threads or solo worker: the batcher here, the model in a child process it feeds."""
    global _loaded, _batcher, _host
    from inference.worker.model_host import ModelHost

    settings = get_settings()
    instances = model_instances(pick_device(settings.worker_device))
    _host = ModelHost(instances, report_dir, hang_seconds=batch_hang_seconds(), start_timeout=settings.worker_proc_alive_timeout)
    _batcher = MicroBatcher(_host.run, settings.max_batch_size, settings.max_batch_delay_ms / 1000, initializer=_host.start,
                            instances=instances, max_crashes=settings.max_deliveries, give_up=poisoned)
    _batcher.wait_ready(settings.worker_proc_alive_timeout + 5)  # ready only after its load and warm-up
    _loaded = HostedModel(get_spec(settings.worker_model), _host)


def batch_hang_seconds() -> float:
    """A batching worker's hard time limit: its model process is killed when a batch runs this long
    (its requests failed as `timeout` at WORKER_TIMEOUT)."""
    return 2 * get_settings().worker_timeout


def poisoned(crashes: int) -> PoisonMessage:
    return PoisonMessage(f"the model process died each of the {crashes} times this request ran (MAX_DELIVERIES); it is not run again")


def model_host_pid() -> int | None:
    return _host.pid if _host is not None else None


def load_model_in_process():
    global _loaded, _batcher, _decoders, _decoding_threads
    settings = get_settings()
    if not settings.worker_model:
        return
    heap_trim.bound_and_trim(settings.malloc_arena_max, settings.heap_trim_seconds)
    device = pick_device(settings.worker_device)
    runtime = resolve_runtime(settings.worker_runtime, device)
    # OpenVINO borrows the cores other models leave idle (inference/worker/core_lending.py).
    lend = runtime == "openvino" and settings.lend_idle_cores and not settings.torch_threads

    def load_here() -> None:
        # Building the model (random weights are calibrated with forward passes) and warming it
        # up run in the batcher's thread, the one that will run every batch: a second OpenMP team,
        # left behind by torch work in this main thread, made each forward pass ~50% slower.
        global _loaded
        spec, threads = get_spec(settings.worker_model), torch_threads(device)
        if runtime == "openvino":  # no torch in this process (inference/worker/openvino_runtime.py)
            from inference.worker import openvino_runtime  # numpy and openvino: in the model's process only

            _loaded = openvino_runtime.load(spec, settings.model_weights, settings.random_weights_seed, precision=settings.worker_precision,
                                            threads=threads, lend_cores=cpu_count() if lend else 0, cache_dir=settings.model_cache_dir,
                                            allow_download=settings.weights_download)
            return
        from inference.worker import model_runtime  # torch is imported in PyTorch workers' pool processes only

        _loaded = model_runtime.load(spec, settings.model_weights, settings.random_weights_seed, allow_download=settings.weights_download,
                                     device=device, threads=threads, optimize=settings.model_optimize,
                                     channels_last=settings.worker_channels_last, fp16=settings.worker_fp16, runtime="torch")

    # PIL decoding: CPU cores, whatever the device; as many as a forward pass may borrow.
    decoding_threads = cpu_count() if lend else torch_threads()
    if settings.max_batch_size > 1 and decoding_threads > 1:
        _decoders = ThreadPoolExecutor(decoding_threads, thread_name_prefix="decode", initializer=one_torch_thread if runtime == "torch" else None)
        _decoding_threads = decoding_threads
    instances = model_instances(device)
    # torch's threads per instance; OpenVINO's lender sizes each batch itself (and never imports torch).
    share_cores = adaptive_threads(lone_batch_threads(instances)) if instances > 1 and device == "cpu" and runtime == "torch" else None
    _batcher = MicroBatcher(decode_and_classify, settings.max_batch_size, settings.max_batch_delay_ms / 1000,
                            initializer=load_here, instances=instances, instance_initializer=lambda: loaded_model().warm_up(),
                            share_cores=share_cores)
    _batcher.wait_ready(settings.worker_proc_alive_timeout)  # ready only after load and warm-up
    info = loaded_model().info
    hosted = settings.worker_pool != "prefork"  # a model host's process
    info.update(max_batch_size=settings.max_batch_size, max_batch_delay_ms=settings.max_batch_delay_ms, pool=settings.worker_pool,
                decoding_threads=_decoding_threads, instances=instances, adaptive_threads=share_cores is not None, gomp_spincount=os.environ.get("GOMP_SPINCOUNT"),
                model_process="host" if hosted else "pool", batch_hang_seconds=batch_hang_seconds() if hosted else None)
    if info["weights"] == "random":
        log.warning("!!! %s (model %s, process %s) !!!", info["weights_warning"], info["model"], os.getpid())
    log.info("model ready: %s", json.dumps(info))
    if report_dir:
        Path(report_dir, f"{os.getpid()}.json").write_text(json.dumps({**info, "ready_at": time.time()}))


def decode_and_classify(items: list[tuple[bytes, int]]) -> list:
    """The batcher's work for a batch of (encoded image, top_k): decode and preprocess each
    picture, then one forward pass for those that decoded. Decoding here, right before the
    forward pass (as a plain script would), rather than in the task threads while a forward pass
    runs: on a busy CPU those took cores from torch mid-pass. JPEGs go through torchvision on
    the model's device when IMAGE_DECODER says so (inference/tensor_decode.py), the rest through
    PIL on the decoding threads. A picture that does not decode fails its own request only."""
    started_at = time.time()
    loaded, max_pixels = loaded_model(), get_settings().max_image_pixels
    raws = [raw for raw, _ in items]
    chaos.in_batch(raws)
    inputs: list = [None] * len(raws)
    for n, tensor in decoded_on_device(loaded, raws, max_pixels).items():
        inputs[n] = tensor

    def prepare(raw: bytes):
        try:
            return loaded.transforms(model_input(raw, max_pixels, loaded.resize_to))
        except InvalidRequest as exc:
            return exc

    rest = [n for n, tensor in enumerate(inputs) if tensor is None]
    lender = getattr(loaded, "lender", None)  # OpenVINO's, when it borrows idle cores
    with lender.running() if lender else contextlib.nullcontext():  # the others see this worker busy
        for n, tensor in zip(rest, parallel_map(prepare, [raws[n] for n in rest], lender.threads() if lender else None)):
            inputs[n] = tensor
    ready = [(tensor, top_k) for tensor, (_, top_k) in zip(inputs, items) if not isinstance(tensor, Exception)]
    decoded_at = time.time()
    outputs = iter(loaded.classify_each(ready) if ready else [])
    timing = {"decode": (started_at, decoded_at), "forward": (decoded_at, time.time())}
    return [tensor if isinstance(tensor, Exception) else Predictions(next(outputs), timing) for tensor in inputs]


class Predictions(list):
    """A picture's ranked classes, carrying the times (epoch seconds) of its batch's decoding and
    forward pass, for its trace (inference/core/tracing.py); a list to everyone else."""

    def __init__(self, ranked, timing: dict):
        super().__init__(ranked)
        self.timing = timing


def decoded_on_device(loaded, raws: list[bytes], max_pixels: int) -> dict:
    """The JPEGs that torchvision decodes and preprocesses on the model's device (IMAGE_DECODER),
    by their place in `raws`: PyTorch workers only (OpenVINO ones never import torch)."""
    if loaded.info["runtime"] != "torch":
        return {}
    from inference.worker import tensor_decode

    if not tensor_decode.used_for(loaded.device):
        return {}
    # Header checks hold the GIL (PIL parses JPEG markers in Python): no threads for them.
    chosen = [n for n, raw in enumerate(raws) if tensor_decode.suits_tensor_decoding(raw, max_pixels)]
    decoded = [(n, picture) for n, picture in zip(chosen, tensor_decode.decode([raws[n] for n in chosen], loaded.device))
               if picture is not None]
    tensors = tensor_decode.preprocess([picture for _, picture in decoded], loaded.transforms)
    return {n: tensor for (n, _), tensor in zip(decoded, tensors)}


def parallel_map(fn, items: list, threads: int | None = None) -> list:
    """fn over items, on up to `threads` of the decoding threads (all by default) when there are
    several items and threads: a 12-MP photo takes ~16 ms to decode even in draft mode, and a
    batch of them decoded on one thread left the other cores idle before its forward pass."""
    threads = min(threads or len(items), len(items), _decoding_threads)
    if _decoders is None or threads <= 1:
        return [fn(item) for item in items]
    chunks = [items[n::threads] for n in range(threads)]  # one chunk per thread, in turn
    done = [_decoders.submit(lambda chunk: [fn(item) for item in chunk], chunk) for chunk in chunks]
    results: list = [None] * len(items)
    for n, future in enumerate(done):
        results[n::threads] = future.result()
    return results


def loaded_model():
    if _loaded is None:
        raise RuntimeError("no model loaded in this process (is the worker started with --model?)")
    return _loaded


def runs_in_any_thread() -> bool:
    """Whether any thread may run this process's batches (`decode_and_classify`): OpenVINO's
    classifier keeps infer requests per calling thread; PyTorch's forward passes stay in the
    batcher's thread, which loaded and warmed up the model (a second OpenMP team slows them)."""
    return loaded_model().info["runtime"] == "openvino"


def batcher() -> MicroBatcher:
    if _batcher is None:
        raise RuntimeError("no model loaded in this process (is the worker started with --model?)")
    return _batcher
