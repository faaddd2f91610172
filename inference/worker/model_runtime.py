"""A registry model, loaded and run: weights, device, the weights' transforms, forward pass, top-k.

The worker decodes pictures itself (inference/worker/process.py with PIL, tensor_decode.py with
torchvision on the model's device) and hands the tensors to `classify_each`; `classify` (PIL
pictures in, predictions out) is the same path for scripts: the benchmark's plain script and
the correctness tests. Imported only inside worker processes (and tests): this is where torch lives.
"""

from __future__ import annotations

import logging
import os
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field

import torch
from PIL import Image
from torchvision.models import get_model, get_weight

from inference.core.errors import WeightsUnavailable
from inference.core.imaging import visible_part
from inference.core.registry import RANDOM_WEIGHTS_WARNING, ModelSpec
from inference.worker import openvino_runtime
from inference.worker.device import pick_device
from inference.worker.runtime_choice import resolve_runtime

log = logging.getLogger(__name__)


@dataclass
class LoadedModel:
    spec: ModelSpec
    model: Callable[[torch.Tensor], torch.Tensor]  # a torch module, TorchScript, or a compiled OpenVINO model
    weights: str  # "pretrained" or "random"
    transforms: Callable[[Image.Image], torch.Tensor]
    categories: list[str]
    device: str
    info: dict = field(default_factory=dict)
    dtype: torch.dtype = torch.float32
    memory_format: torch.memory_format = torch.contiguous_format

    @property
    def resize_to(self) -> int:
        """The length the weights' transforms give a picture's shorter side (0: unknown)."""
        return min(getattr(self.transforms, "resize_size", None) or [0])

    def preprocess(self, images: list[Image.Image]) -> torch.Tensor:
        """Decoded pictures as a batch, as a worker prepares them (`imaging.visible_part` first)."""
        return self.batch_of([self.transforms(visible_part(img)) for img in images])

    def batch_of(self, tensors: list[torch.Tensor]) -> torch.Tensor:
        """Preprocessed pictures as one batch, on the model's device, dtype and memory format."""
        # Pictures decoded on the device (tensor_decode) and on the CPU (PIL) may share a batch.
        return torch.stack([t.to(self.device) for t in tensors]).to(dtype=self.dtype, memory_format=self.memory_format)

    @torch.inference_mode()
    def scores(self, batch: torch.Tensor) -> torch.Tensor:
        """Class probabilities, left on the model's device (see `postprocess`)."""
        return torch.softmax(self.model(batch).float(), dim=1)

    def forward(self, batch: torch.Tensor) -> torch.Tensor:
        """Class probabilities on the CPU: the whole forward pass, finished."""
        return self.scores(batch).cpu()

    @torch.inference_mode()
    def postprocess(self, probs: torch.Tensor, top_k: int | list[int]) -> list[list[dict]]:
        """The top_k classes of each row (`top_k` for all rows, or one per row). One topk call,
        on the device that holds `probs`, and one rounding for all: from a GPU only the top
        classes come back, and the Python left is building the entries (postprocessing held a
        GPU worker's GIL ~19% of the time with a topk on the CPU and a round() per entry)."""
        wanted = [top_k] * probs.shape[0] if isinstance(top_k, int) else top_k
        conf, idx = probs.topk(min(max(wanted, default=1), probs.shape[1]), dim=1)
        conf = conf.double().cpu().round(decimals=6)  # in float64: the float32 scores as round(float(c), 6) gave
        categories = self.categories
        return [
            [{"class": categories[i], "class_id": i, "confidence": c} for c, i in zip(row_conf[:k], row_idx[:k])]
            for row_conf, row_idx, k in zip(conf.tolist(), idx.cpu().tolist(), wanted)
        ]

    def warm_up(self) -> None:
        """Forward passes in the thread that will run the model (see inference/worker/batching.py); a
        TorchScript model optimises itself during its first two runs."""
        started = time.perf_counter()
        for _ in range(2):
            self.forward(torch.zeros(1, 3, 224, 224).to(self.device, dtype=self.dtype, memory_format=self.memory_format))
        self.info["warmup_seconds"] = round(time.perf_counter() - started, 3)
        self.info["torch_threads"] = torch.get_num_threads()

    def classify(self, images: list[Image.Image], top_k: int) -> list[list[dict]]:
        return self.postprocess(self.scores(self.preprocess(images)), top_k)

    def classify_each(self, items: list[tuple[torch.Tensor, int]]) -> list[list[dict]]:
        """One forward pass for several requests (preprocessed pictures), each with its own top_k."""
        probs = self.scores(self.batch_of([tensor for tensor, _ in items]))
        return self.postprocess(probs, [top_k for _, top_k in items])


def checkpoint_path(weights) -> str:
    """Where torchvision caches these weights: $TORCH_HOME/hub/checkpoints/<file>."""
    return os.path.join(torch.hub.get_dir(), "checkpoints", os.path.basename(weights.url))


def _pretrained_state_dict(weights, allow_download: bool) -> dict:
    path = checkpoint_path(weights)
    if os.path.exists(path):
        return torch.load(path, map_location="cpu", weights_only=True)
    if allow_download:
        return weights.get_state_dict(progress=False, check_hash=True)
    raise FileNotFoundError(
        f"{path} is missing; run `make weights` on a machine with internet and copy TORCH_HOME, "
        "or set WEIGHTS_DOWNLOAD=true"
    )


def build_model(spec: ModelSpec, mode: str, seed: int, allow_download: bool = False) -> tuple[torch.nn.Module, str]:
    """Returns (model, weights actually used). Never passes random weights off as pretrained."""
    weights = get_weight(spec.weights)
    if mode in ("auto", "pretrained"):
        try:
            state = _pretrained_state_dict(weights, allow_download)
            model = get_model(spec.builder, weights=None)
            model.load_state_dict(state)
            return model, "pretrained"
        except Exception as exc:
            if mode == "pretrained":
                raise WeightsUnavailable(f"pretrained weights for {spec.name} unavailable: {exc}") from exc
            log.warning("!!! %s (model %s: %s) !!!", RANDOM_WEIGHTS_WARNING, spec.name, exc)
    torch.manual_seed(seed + spec.seed_offset)
    model = get_model(spec.builder, weights=None)
    _calibrate_batchnorm(model, seed + spec.seed_offset)
    return model, "random"


def _calibrate_batchnorm(model: torch.nn.Module, seed: int) -> None:
    """Give random weights non-degenerate outputs.

    Freshly initialised deep nets with eval-mode batch norm (mean 0, var 1) shrink activations
    to ~1e-10, so every class scores 1/1000 and top-k is a tie. Running statistics measured on
    one seeded noise batch keep activations normalised; still deterministic per seed.
    """
    norms = [m for m in model.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]
    if not norms:
        return
    for norm in norms:
        norm.reset_running_stats()
        norm.momentum = None  # plain average over the calibration batch
    noise = torch.randn(8, 3, 224, 224, generator=torch.Generator().manual_seed(seed))
    model.train()
    with torch.no_grad():
        model(noise)
    model.eval()


def optimize_for_inference(model: torch.nn.Module, example: torch.Tensor) -> torch.nn.Module:
    """TorchScript: trace, freeze, fold batch norm into convolutions, fuse, and on CPU use
    oneDNN layouts (resnet18 ~1.4x, mobilenet ~2.5x faster on the build machine, outputs equal to
    1e-7). The whole forward pass then runs in C++ without holding the GIL, so Python threads of
    the worker (Celery, decoding) no longer stall it. torch.compile would do as well but needs a
    C++ toolchain and ~20 s per process; TorchScript's deprecation warning is expected here."""
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore", FutureWarning)
        return torch.jit.optimize_for_inference(torch.jit.trace(model, example).eval())


def resolve_optimize(optimize: str, device: str) -> str:
    """MODEL_OPTIMIZE=auto: TorchScript on the CPU (~1.4x for resnet18 here); eager on CUDA,
    where TorchScript was no faster on an H100 (7.9k vs 9.3k images/s in the plain script) and
    re-specialises for every new batch size that dynamic batching makes."""
    if optimize != "auto":
        return optimize
    return "jit" if device == "cpu" else "none"


def load(spec: ModelSpec, mode: str, seed: int, *, allow_download: bool = False, device: str = "auto",
         threads: int = 0, warmup: bool = True, optimize: str = "none", channels_last: bool = False,
         fp16: bool = False, runtime: str = "torch", precision: str = "auto", cache_dir: str = "var/models") -> LoadedModel | openvino_runtime.CompiledClassifier:
    if threads > 0:
        torch.set_num_threads(threads)
    device = pick_device(device)
    if fp16 and not device.startswith("cuda"):
        log.warning("fp16 asked for on %s: ignored (half precision is for CUDA devices)", device)
        fp16 = False
    if resolve_runtime(runtime, device) == "openvino":
        return openvino_runtime.load(spec, mode, seed, precision=precision, threads=threads, cache_dir=cache_dir,
                                     allow_download=allow_download, warmup=warmup)
    if precision != "auto":
        log.warning("WORKER_PRECISION=%s: ignored by the PyTorch runtime (fp32; FP16 on CUDA)", precision)
    dtype = torch.float16 if fp16 else torch.float32
    memory_format = torch.channels_last if channels_last else torch.contiguous_format
    started = time.perf_counter()
    model, used = build_model(spec, mode, seed, allow_download)
    model = model.eval().to(device, dtype).to(memory_format=memory_format)
    runner: Callable[[torch.Tensor], torch.Tensor] = model
    optimize = resolve_optimize(optimize, device)
    if optimize == "jit":
        runner = optimize_for_inference(model, torch.zeros(1, 3, 224, 224).to(device, dtype=dtype, memory_format=memory_format))
    weights = get_weight(spec.weights)
    loaded = LoadedModel(
        spec=spec,
        model=runner,
        weights=used,
        transforms=weights.transforms(),
        categories=list(weights.meta["categories"]),
        device=device,
        dtype=dtype,
        memory_format=memory_format,
    )
    load_s = time.perf_counter() - started
    loaded.info = {
        "model": spec.name,
        "architecture": spec.builder,
        "weights": used,
        "weights_requested": mode,
        "weights_warning": RANDOM_WEIGHTS_WARNING if used == "random" else None,
        "device": device,
        "runtime": "torch",
        "optimize": optimize,
        "channels_last": channels_last,
        "precision": "fp16" if fp16 else "fp32",
        "torch_threads": torch.get_num_threads(),
        "load_seconds": round(load_s, 3),
        "warmup_seconds": None,
        "pid": os.getpid(),
    }
    if warmup:
        loaded.warm_up()
    return loaded
