"""OpenVINO for CPU workers: the torchvision model converted once, cached on disk, served without torch.

The torchvision model and its weights stay the source of truth: `inference/worker/convert.py`
converts the very module PyTorch would run (pretrained, or random with its seed) and keeps the IR
(.xml + .bin) in MODEL_CACHE_DIR under a key of architecture, weights and OpenVINO version, with a
sidecar (.json) of what serving needs besides the network: the categories and the weights'
transforms. A process that finds its model there loads it with openvino, PIL and numpy alone;
one that does not converts it in a child process, so torch (366 MB) never stays in a worker.
Precision (WORKER_PRECISION=auto): f32, which answers as PyTorch does to 1e-4, unless the CPU
computes in bf16 and runs the model faster in it, as timed once per CPU (`auto_precision`).
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import json
import logging
import os
import re
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np

from inference.core.errors import WeightsUnavailable
from inference.core.imaging import visible_part
from inference.core.registry import RANDOM_WEIGHTS_WARNING, ModelSpec
from inference.worker.core_lending import CoreLender
from inference.worker.preprocessing import ClassificationTransform, softmax, top_classes

log = logging.getLogger(__name__)

PRECISION_HINT = {"fp32": "f32", "bf16": "bf16"}  # WORKER_PRECISION -> OpenVINO's INFERENCE_PRECISION_HINT


@functools.cache
def cpu_has_bf16() -> bool:
    """Whether this CPU computes in bf16 (AMX or AVX-512 BF16), as OpenVINO's CPU plugin sees it."""
    import openvino as ov

    return "BF16" in ov.Core().get_property("CPU", "OPTIMIZATION_CAPABILITIES")


def resolve_precision(precision: str) -> str:
    """WORKER_PRECISION on this CPU, before any timing: `auto` is bf16 where the CPU has it (to be
    timed against fp32: `auto_precision`), else fp32; bf16 asked for on a CPU without it is fp32,
    with a warning (OpenVINO would fall back silently)."""
    if precision == "auto":
        return "bf16" if cpu_has_bf16() else "fp32"
    if precision == "bf16" and not cpu_has_bf16():
        log.warning("WORKER_PRECISION=bf16 but this CPU has no bf16 (AMX, AVX-512 BF16): fp32 serves instead")
        return "fp32"
    return precision


# Under `auto`, bf16 serves only where its pass takes at most this share of f32's: f32 gives
# PyTorch's answers, bf16 ones within ~1e-2, a price worth paying only for real speed.
BF16_AT_MOST = 0.9
TIMED_PASSES = 7  # of each precision, alternating; the best of each counts (other processes start too)


@functools.cache  # the CPU does not change under a running process
def cpu_identity() -> str:
    """A short name for this CPU model and the features Linux shows of it: a timing made on one
    machine is not used on another that shares MODEL_CACHE_DIR. An Intel Xeon with AVX-512 BF16
    whose AMX units its host hides ran every model 1.2-1.7x slower in bf16 than in f32, where
    an AMX Xeon ran them 1.5-5.4x faster: whether the CPU "has" bf16 does not say which wins."""
    try:
        first = Path("/proc/cpuinfo").read_text().split("\n\n")[0]
    except OSError:
        import platform

        first = platform.processor() or platform.machine()
    described = {key.strip(): value.strip() for key, _, value in (line.partition(":") for line in first.splitlines())}
    values = [described.get(key) for key in ("vendor_id", "cpu family", "model", "model name", "stepping", "flags")]
    return hashlib.sha256((repr(values) if any(values) else first).encode()).hexdigest()[:12]


def precision_record(xml: Path, threads: int) -> Path:
    """Where `auto`'s choice for this IR, on this CPU with `threads` threads, is kept."""
    return xml.with_name(f"{xml.stem}.precision-{cpu_identity()}-{threads}t.json")


def faster_precision(ms_a_pass: dict[str, float]) -> str:
    """bf16 where its pass took at most BF16_AT_MOST of f32's, else fp32."""
    return "bf16" if ms_a_pass["bf16"] <= BF16_AT_MOST * ms_a_pass["fp32"] else "fp32"


def time_precisions(model, threads: int, crop: int) -> dict[str, float]:
    """Milliseconds a pass of one picture takes in each precision (the best of TIMED_PASSES,
    alternating, after one untimed pass each)."""
    compiled = {precision: compile_ir(model, precision, threads) for precision in PRECISION_HINT}
    requests = {precision: c.create_infer_request() for precision, c in compiled.items()}
    picture = np.random.default_rng(0).integers(0, 256, (1, crop, crop, 3), dtype=np.uint8)
    best = dict.fromkeys(requests, float("inf"))
    for round_ in range(TIMED_PASSES + 1):
        for precision, request in requests.items():
            started = time.perf_counter()
            request.infer({0: picture})
            if round_:
                best[precision] = min(best[precision], 1000 * (time.perf_counter() - started))
    return {precision: round(ms, 3) for precision, ms in best.items()}


def auto_precision(model, threads: int, crop: int, record: Path) -> tuple[str, dict]:
    """WORKER_PRECISION=auto on a CPU that computes in bf16: the precision that runs this model
    faster here, and what it was chosen from. Timed once (under a second, at the first start on
    this CPU) and kept in `record`; a later start reads it."""
    with contextlib.suppress(OSError, ValueError, KeyError, TypeError):
        kept = json.loads(record.read_text())
        return faster_precision(kept["ms_a_pass"]), {**kept, "timed_now": False}
    ms_a_pass = time_precisions(model, threads, crop)
    choice = {"ms_a_pass": ms_a_pass, "threads": threads, "cpu": cpu_identity()}
    temporary = record.with_name(f".{record.name}.{os.getpid()}.{threading.get_ident()}")
    try:
        temporary.write_text(json.dumps(choice))
        os.replace(temporary, record)  # two workers timing at once: either record is whole
    except OSError as exc:
        temporary.unlink(missing_ok=True)
        log.warning("could not keep the precision timing in %s (%s): it is timed again at the next start", record, exc)
    chosen = faster_precision(ms_a_pass)
    log.info("WORKER_PRECISION=auto: %s serves (a picture's pass: fp32 %.1f ms, bf16 %.1f ms on this CPU; kept in %s)",
             chosen, ms_a_pass["fp32"], ms_a_pass["bf16"], record)
    return chosen, {**choice, "timed_now": True}


def ir_key(spec: ModelSpec, weights: str, seed: int) -> str:
    """Architecture and weights: pretrained ones by name, random ones by their seed."""
    return f"{spec.builder}-{spec.weights if weights == 'pretrained' else f'random-seed{seed + spec.seed_offset}'}"


def ir_path(cache_dir: Path, key: str) -> Path:
    """The .xml of `key` for the installed OpenVINO (its .bin and .json sidecar beside it)."""
    import openvino as ov

    version = re.sub(r"[^A-Za-z0-9.]+", "_", ov.__version__)  # e.g. 2026.4.1-22982-...-releases/2026/4
    return cache_dir / f"{key}-openvino-{version}.xml"


def whole(xml: Path) -> bool:
    """Whether the IR and its sidecar are all there (an older cache's IR without a sidecar is not)."""
    return all(xml.with_suffix(suffix).exists() for suffix in (".xml", ".bin", ".json"))


def torch_hub_dir() -> Path:
    """torch.hub.get_dir() without importing torch: where torchvision keeps downloaded weights."""
    default = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache"), "torch")
    return Path(os.environ.get("TORCH_HOME", default)) / "hub"


def cached(spec: ModelSpec, mode: str, seed: int, cache_dir: Path, allow_download: bool) -> Path | None:
    """The cached IR that MODEL_WEIGHTS=`mode` would convert now, if there is one. Under `auto`, a
    random model's IR serves only while the pretrained checkpoint it looked for is still missing."""
    pretrained = ir_path(cache_dir, ir_key(spec, "pretrained", seed))
    random = ir_path(cache_dir, ir_key(spec, "random", seed))
    if mode in ("auto", "pretrained") and whole(pretrained):
        return pretrained
    if mode == "random" and whole(random):
        return random
    if mode == "auto" and whole(random) and not allow_download:
        checkpoint = json.loads(random.with_suffix(".json").read_text())["pretrained_checkpoint"]
        if not (torch_hub_dir() / "checkpoints" / checkpoint).exists():
            return random
    return None


def convert(spec: ModelSpec, mode: str, seed: int, cache_dir: Path, allow_download: bool) -> Path:
    """Convert now (inference/worker/convert.py). In this process where torch is loaded already
    (tests, the benchmark's plain script); elsewhere in a child process, so that the worker
    never holds torch."""
    if "torch" in sys.modules:
        from inference.worker.convert import convert_to_ir

        return convert_to_ir(spec, mode, seed, cache_dir, allow_download)
    command = [sys.executable, "-m", "inference.worker.convert", spec.name, "--weights", mode, "--seed", str(seed),
               "--cache-dir", str(cache_dir)] + (["--allow-download"] if allow_download else [])
    root = str(Path(__file__).resolve().parents[2])  # where `inference` is, wherever the worker was started from
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [root, os.environ.get("PYTHONPATH")]))}
    done = subprocess.run(command, capture_output=True, text=True, env=env)
    if done.returncode != 0:
        message = done.stderr.strip().splitlines()[-1] if done.stderr.strip() else f"exit status {done.returncode}"
        if "WeightsUnavailable" in done.stderr:
            raise WeightsUnavailable(message)
        raise RuntimeError(f"converting {spec.name} to OpenVINO failed: {message}")
    return Path(done.stdout.strip().splitlines()[-1])


def read_ir(xml: Path) -> tuple[dict, Any]:
    """The sidecar and the ov.Model of a cached IR."""
    import openvino as ov

    return json.loads(xml.with_suffix(".json").read_text()), ov.Core().read_model(xml)


def normalising_in_the_graph(model, transform: ClassificationTransform):
    """The model taking pictures as `transform.pixels` gives them (uint8, height x width x RGB),
    converted and normalised by OpenVINO inside the graph: the same arithmetic as numpy's
    (fp32 logits within ~2e-6, bf16 identical here), ~0.9 ms less per picture on the AMX Xeon
    (4.39 -> 3.47 ms per picture of decode, preprocessing and resnet18 bf16), and a quarter
    of the bytes per batch. Applied when compiling: the cached IR stays as converted."""
    import openvino as ov
    from openvino.preprocess import PrePostProcessor

    steps = PrePostProcessor(model)
    steps.input().tensor().set_element_type(ov.Type.u8).set_layout(ov.Layout("NHWC"))
    steps.input().model().set_layout(ov.Layout("NCHW"))
    # (x / 255 - mean) / std, as (x - 255 mean) / (255 std)
    steps.input().preprocess().convert_element_type(ov.Type.f32).mean([255 * m for m in transform.mean]).scale(
        [255 * s for s in transform.std])
    return steps.build()


def compile_ir(model, precision: str, threads: int):
    """The IR (an ov.Model) compiled for this CPU: one stream, `threads` inference threads. No
    pinning: OpenVINO pins a model's threads to cores by default, and two 1-thread workers on
    this 2-core machine then shared one core (each 10 passes/s of resnet18 instead of 20)."""
    import openvino as ov

    config = {"PERFORMANCE_HINT": "LATENCY", "NUM_STREAMS": 1, "INFERENCE_PRECISION_HINT": PRECISION_HINT[precision],
              "INFERENCE_NUM_THREADS": threads, "ENABLE_CPU_PINNING": False}
    return ov.Core().compile_model(model, "CPU", config)


class CompiledClassifier:
    """A registry model compiled by OpenVINO, with the same methods as model_runtime.LoadedModel
    (numpy arrays where that has tensors): pictures in, the top classes out. Its `transforms`
    stop at the resize and crop (uint8 arrays): the graph normalises them. Compiled once per
    thread count a batch may run with (`lender`: inference/worker/core_lending.py), each
    calling thread with its own infer requests (one is not thread-safe)."""

    device = "cpu"

    def __init__(self, spec: ModelSpec, variants: dict[int, Any], sidecar: dict, lender: CoreLender | None = None):
        self.spec, self.variants, self.lender = spec, variants, lender
        self.info: dict = {}
        self.compiled = variants[min(variants)]
        self.weights = sidecar["weights"]
        self.categories: list[str] = sidecar["categories"]
        self.transform = ClassificationTransform(**sidecar["transform"])
        self.transforms = self.transform.pixels
        self._local = threading.local()

    @property
    def resize_to(self) -> int:
        return self.transform.resize_size

    @property
    def precision(self) -> str:
        hint = str(self.compiled.get_property("INFERENCE_PRECISION_HINT"))
        return "bf16" if "bf16" in hint or "bfloat16" in hint else "fp32" if "f32" in hint or "float32" in hint else hint

    def preprocess(self, images) -> np.ndarray:
        return self.batch_of([self.transforms(visible_part(img)) for img in images])

    def batch_of(self, arrays) -> np.ndarray:
        return np.stack(arrays)

    def scores(self, batch) -> np.ndarray:
        if batch.dtype != np.uint8:  # a cast would make pictures of already normalised floats
            raise TypeError(f"OpenVINO classifiers take uint8 pictures (their `transforms`), not {batch.dtype}")
        threads = self.lender.threads() if self.lender else min(self.variants)
        requests = self._local.__dict__.setdefault("requests", {})
        if threads not in requests:
            requests[threads] = self.variants[threads].create_infer_request()
        with self.lender.running() if self.lender else contextlib.nullcontext():
            # share_inputs: no copy of the batch (a contiguous uint8 array, alive for the call).
            result = requests[threads].infer({0: np.ascontiguousarray(batch)}, share_inputs=True)
        return softmax(np.asarray(result[0]))  # the logits (each variant has its own output port)

    forward = scores  # already on the CPU

    def postprocess(self, probs: np.ndarray, top_k: int | list[int]) -> list[list[dict]]:
        return top_classes(probs, [top_k] * probs.shape[0] if isinstance(top_k, int) else top_k, self.categories)

    def warm_up(self) -> None:
        started = time.perf_counter()
        zeros = np.zeros((1, self.transform.crop_size, self.transform.crop_size, 3), np.uint8)
        for compiled in self.variants.values():
            for _ in range(2):
                compiled.create_infer_request().infer({0: zeros})
        self.info["warmup_seconds"] = round(time.perf_counter() - started, 3)

    def classify(self, images, top_k: int) -> list[list[dict]]:
        return self.postprocess(self.scores(self.preprocess(images)), top_k)

    def classify_each(self, items: list[tuple[np.ndarray, int]]) -> list[list[dict]]:
        """One forward pass for several requests (preprocessed pictures), each with its own top_k."""
        return self.postprocess(self.scores(self.batch_of([array for array, _ in items])), [top_k for _, top_k in items])


def load(spec: ModelSpec, mode: str, seed: int, *, precision: str = "auto", threads: int = 1, lend_cores: int = 0,
         cache_dir: str = "var/models", allow_download: bool = False, warmup: bool = True) -> CompiledClassifier:
    """The registry model from the IR cache (converted first if it is not there), compiled for
    `threads`, and with `lend_cores` (more cores than `threads`) for every count a batch may borrow."""
    started = time.perf_counter()
    xml = cached(spec, mode, seed, Path(cache_dir), allow_download)
    converted = xml is None
    if xml is None:
        xml = convert(spec, mode, seed, Path(cache_dir), allow_download)
    try:
        sidecar, model = read_ir(xml)
    except (RuntimeError, ValueError, OSError) as exc:
        if converted:
            raise
        # A damaged cache (a truncated copy, a file edited by hand) is converted again, once.
        log.warning("the cached %s does not load (%s): converting it again", xml, exc)
        for suffix in (".xml", ".bin", ".json"):
            xml.with_suffix(suffix).unlink(missing_ok=True)
        xml, converted = convert(spec, mode, seed, Path(cache_dir), allow_download), True
        sidecar, model = read_ir(xml)
    lender = CoreLender(threads, lend_cores) if lend_cores > threads else None
    served, choice = resolve_precision(precision), None
    transform = ClassificationTransform(**sidecar["transform"])
    model = normalising_in_the_graph(model, transform)
    if precision == "auto" and served == "bf16":
        served, choice = auto_precision(model, threads, transform.crop_size, precision_record(xml, threads))
    variants = {count: compile_ir(model, served, count) for count in (lender.choices if lender else [threads])}
    classifier = CompiledClassifier(spec, variants, sidecar, lender)
    classifier.info = {
        "model": spec.name, "architecture": spec.builder, "weights": sidecar["weights"], "weights_requested": mode,
        "weights_warning": RANDOM_WEIGHTS_WARNING if sidecar["weights"] == "random" else None,
        "device": "cpu", "runtime": "openvino", "optimize": "openvino", "channels_last": False,
        "precision": classifier.precision, "precision_timing": choice, "converted": converted, "torch_threads": threads, "openvino_threads": sorted(variants),
        "load_seconds": round(time.perf_counter() - started, 3), "warmup_seconds": None, "pid": os.getpid(),
    }
    if warmup:
        classifier.warm_up()
    return classifier
