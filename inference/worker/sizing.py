"""How many torch threads and model instances a worker process runs, from the cores it shares."""

from __future__ import annotations

import os

from inference.core.settings import cpu_count, get_settings
from inference.worker.runtime_choice import resolve_runtime


def openmp_wait_policy() -> None:
    """GOMP_SPINCOUNT for this process's torch (its OpenMP runtime reads it once, as it loads),
    unless the environment already says how idle torch threads wait."""
    if "OMP_WAIT_POLICY" not in os.environ:
        os.environ.setdefault("GOMP_SPINCOUNT", str(get_settings().gomp_spincount))


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
    copy's threads (two would double them), and for OpenVINO, which runs one batch at a time on
    all the process's threads. The prefork pool runs one per process."""
    settings = get_settings()
    if settings.worker_pool == "prefork":
        return 1
    if settings.model_instances:
        return settings.model_instances
    if settings.torch_threads or resolve_runtime(settings.worker_runtime, device, warn=False, importing=False) == "openvino":
        return 1
    return auto_instances(device, cpu_count() // settings.host_workers)


def auto_instances(device: str, cores: int) -> int:
    """On a CPU with cores to share, two instances with adaptive threads (see `adaptive_threads`;
    what they gained is in docs/performance.md). Elsewhere one."""
    return 2 if device == "cpu" and cores >= 2 else 1


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
