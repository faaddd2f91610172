"""The model registry: the single source of truth for model names and how to build them.

Torch-free on purpose: the API imports it to validate model names. Adding a model is one
entry here plus one file in worker_configs/.
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass


@dataclass(frozen=True)
class ModelSpec:
    name: str  # the name the API and queues use
    builder: str  # torchvision.models.get_model() name
    weights: str  # torchvision weights enum member, e.g. "ResNet18_Weights.IMAGENET1K_V1"
    classes: int = 1000  # the length of its output (ImageNet-1k for all of today's)

    @property
    def seed_offset(self) -> int:
        # A stable per-model offset (hash() is salted per process, crc32 is not).
        return zlib.crc32(self.name.encode()) % 10_000


MODELS: dict[str, ModelSpec] = {
    spec.name: spec
    for spec in (
        ModelSpec("mobilenet", "mobilenet_v2", "MobileNet_V2_Weights.IMAGENET1K_V1"),
        ModelSpec("resnet18", "resnet18", "ResNet18_Weights.IMAGENET1K_V1"),
        ModelSpec("efficientnet", "efficientnet_b0", "EfficientNet_B0_Weights.IMAGENET1K_V1"),
        ModelSpec("squeezenet", "squeezenet1_1", "SqueezeNet1_1_Weights.IMAGENET1K_V1"),
    )
}

ANY_MODEL = "any"
RANDOM_WEIGHTS_WARNING = "RANDOM WEIGHTS, NOT PRETRAINED: predictions are meaningless"  # in logs and every result


def model_names() -> list[str]:
    return list(MODELS)


def get_spec(name: str) -> ModelSpec:
    try:
        return MODELS[name]
    except KeyError:
        raise KeyError(f"unknown model {name!r}; known models: {', '.join(MODELS)}") from None
