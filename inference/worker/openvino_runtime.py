"""OpenVINO for CPU workers: the torchvision model converted once, cached on disk, compiled for this CPU.

The torchvision model and its weights stay the source of truth: `ov.convert_model` converts the
very module PyTorch would run (pretrained, or random with its seed), and the IR (.xml + .bin) is
kept in MODEL_CACHE_DIR under a key of architecture, weights and OpenVINO version, so the next
process loads it without converting. On this machine's CPU (AMX) OpenVINO runs these models
several times faster than PyTorch, in bf16 by default (WORKER_PRECISION=auto: what the CPU does
best), or in f32 with PyTorch's answers to 1e-5.
"""

from __future__ import annotations

import logging
import os
import re
import threading
from pathlib import Path

log = logging.getLogger(__name__)

PRECISION_HINT = {"fp32": "f32", "bf16": "bf16"}  # WORKER_PRECISION -> OpenVINO's INFERENCE_PRECISION_HINT


def available() -> bool:
    try:
        import openvino  # noqa: F401
    except ImportError:
        return False
    return True


def resolve_runtime(runtime: str, device: str, warn: bool = True) -> str:
    """WORKER_RUNTIME on `device`: OpenVINO only on a CPU and only where it is installed (`auto`:
    there, PyTorch elsewhere). Asked for by name where it cannot run: PyTorch, with a warning."""
    if runtime == "torch":
        return "torch"
    if not device.startswith("cpu"):
        if runtime == "openvino" and warn:
            log.warning("WORKER_RUNTIME=openvino on %s: PyTorch serves instead (OpenVINO runs CPU workers)", device)
        return "torch"
    if not available():
        if runtime == "openvino" and warn:
            log.warning("WORKER_RUNTIME=openvino but openvino is not installed: PyTorch serves instead")
        return "torch"
    return "openvino"


class OpenVinoModel:
    """A compiled OpenVINO model, called like the torch module it came from: a float32 NCHW batch
    in, logits out. Each calling thread has its own infer request (one is not thread-safe)."""

    def __init__(self, compiled):
        self.compiled = compiled
        self.output = compiled.output(0)
        self._local = threading.local()

    def __call__(self, batch):
        import numpy as np
        import torch

        request = getattr(self._local, "request", None)
        if request is None:
            request = self._local.request = self.compiled.create_infer_request()
        # share_inputs: no copy of the batch (a contiguous float32 array, alive for the call).
        result = request.infer({0: np.ascontiguousarray(batch.numpy())}, share_inputs=True)
        return torch.from_numpy(np.array(result[self.output]))

    @property
    def precision(self) -> str:
        hint = str(self.compiled.get_property("INFERENCE_PRECISION_HINT"))
        return "bf16" if "bf16" in hint or "bfloat16" in hint else "fp32" if "f32" in hint or "float32" in hint else hint


def cached_ir(model, key: str, cache_dir: Path) -> tuple[Path, bool]:
    """The IR of `model` in `cache_dir` (converted now only if missing): (its .xml, converted now?).
    Written under a temporary name and renamed, .bin first: two processes converting at once
    never leave half a model behind, and the .xml's presence means the pair is whole."""
    import openvino as ov
    import torch

    version = re.sub(r"[^A-Za-z0-9.]+", "_", ov.__version__)  # e.g. 2026.4.1-22982-...-releases/2026/4
    xml = cache_dir / f"{key}-openvino-{version}.xml"
    if xml.exists() and xml.with_suffix(".bin").exists():
        return xml, False
    cache_dir.mkdir(parents=True, exist_ok=True)
    converted = ov.convert_model(model, example_input=torch.zeros(1, 3, 224, 224), input=[ov.PartialShape([-1, 3, 224, 224])])
    temporary = cache_dir / f".{xml.stem}.{os.getpid()}.{threading.get_ident()}.xml"
    ov.save_model(converted, temporary, compress_to_fp16=False)  # weights stay f32: the precision is chosen when compiling
    os.replace(temporary.with_suffix(".bin"), xml.with_suffix(".bin"))
    os.replace(temporary, xml)
    log.info("converted %s to OpenVINO IR: %s", key, xml)
    return xml, True


def compile_ir(xml: Path, precision: str, threads: int) -> OpenVinoModel:
    """The IR compiled for this CPU: one stream, `threads` inference threads (0: OpenVINO's choice)."""
    import openvino as ov

    config: dict = {"PERFORMANCE_HINT": "LATENCY", "NUM_STREAMS": 1}
    if threads:
        config["INFERENCE_NUM_THREADS"] = threads
    if precision in PRECISION_HINT:
        config["INFERENCE_PRECISION_HINT"] = PRECISION_HINT[precision]
    core = ov.Core()
    return OpenVinoModel(core.compile_model(core.read_model(xml), "CPU", config))
