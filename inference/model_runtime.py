"""Loading a registry model and running it: initialize / preprocess / inference / postprocess.

Imported only inside worker processes (and tests): this is where torch lives.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import torch
from PIL import Image
from torchvision.models import get_model, get_weight

from inference.errors import WeightsUnavailable
from inference.registry import ModelSpec

log = logging.getLogger(__name__)

RANDOM_WEIGHTS_WARNING = "RANDOM WEIGHTS, NOT PRETRAINED: predictions are meaningless"


@dataclass
class LoadedModel:
    spec: ModelSpec
    model: torch.nn.Module
    weights: str  # "pretrained" or "random"
    transforms: Callable[[Image.Image], torch.Tensor]
    categories: list[str]
    device: str
    info: dict = field(default_factory=dict)

    def preprocess(self, images: list[Image.Image]) -> torch.Tensor:
        return torch.stack([self.transforms(img) for img in images]).to(self.device)

    @torch.inference_mode()
    def forward(self, batch: torch.Tensor) -> torch.Tensor:
        return torch.softmax(self.model(batch), dim=1).cpu()

    def postprocess(self, probs: torch.Tensor, top_k: int) -> list[list[dict]]:
        k = min(top_k, probs.shape[1])
        conf, idx = probs.topk(k, dim=1)
        return [
            [
                {"class": self.categories[i], "class_id": int(i), "confidence": round(float(c), 6)}
                for c, i in zip(row_conf.tolist(), row_idx.tolist())
            ]
            for row_conf, row_idx in zip(conf, idx)
        ]

    def warm_up(self, threads: int = 0) -> None:
        """One forward pass (in the thread that will run the model; see inference/batching.py)."""
        if threads > 0:
            torch.set_num_threads(threads)
        started = time.perf_counter()
        self.forward(torch.zeros(1, 3, 224, 224, device=self.device))
        self.info["warmup_seconds"] = round(time.perf_counter() - started, 3)
        self.info["torch_threads"] = torch.get_num_threads()

    def classify(self, images: list[Image.Image], top_k: int) -> list[list[dict]]:
        return self.postprocess(self.forward(self.preprocess(images)), top_k)

    def classify_each(self, items: list[tuple[Image.Image, int]]) -> list[list[dict]]:
        """One forward pass for several requests, each with its own top_k."""
        probs = self.forward(self.preprocess([image for image, _ in items]))
        return [self.postprocess(probs[i : i + 1], top_k)[0] for i, (_, top_k) in enumerate(items)]


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


def pick_device(requested: str = "auto") -> str:
    if requested == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    return requested


def load(spec: ModelSpec, mode: str, seed: int, *, allow_download: bool = False, device: str = "auto",
         threads: int = 0, warmup: bool = True) -> LoadedModel:
    if threads > 0:
        torch.set_num_threads(threads)
    device = pick_device(device)
    started = time.perf_counter()
    model, used = build_model(spec, mode, seed, allow_download)
    model.eval().to(device)
    weights = get_weight(spec.weights)
    loaded = LoadedModel(
        spec=spec,
        model=model,
        weights=used,
        transforms=weights.transforms(),
        categories=list(weights.meta["categories"]),
        device=device,
    )
    load_s = time.perf_counter() - started
    loaded.info = {
        "model": spec.name,
        "architecture": spec.builder,
        "weights": used,
        "weights_requested": mode,
        "weights_warning": RANDOM_WEIGHTS_WARNING if used == "random" else None,
        "device": device,
        "torch_threads": torch.get_num_threads(),
        "load_seconds": round(load_s, 3),
        "warmup_seconds": None,
        "pid": os.getpid(),
    }
    if warmup:
        loaded.warm_up()
    return loaded
