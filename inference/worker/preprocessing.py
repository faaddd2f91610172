"""The weights' transforms and the top-k in PIL and numpy: what an OpenVINO worker runs without torch.

torchvision's `ImageClassification` preset on a PIL picture is PIL's resize (the shorter side to
`resize_size`, antialiased), a centre crop, then `/ 255` and `(x - mean) / std` in float32.
`ClassificationTransform` does the same steps with the same PIL call and the same float32 arithmetic,
so its arrays equal torchvision's tensors (tests/test_runtimes.py), and a process that serves a
compiled OpenVINO model never imports torch (366 MB per process).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from PIL import Image

PIL_RESAMPLING = {"bilinear": Image.Resampling.BILINEAR, "bicubic": Image.Resampling.BICUBIC, "nearest": Image.Resampling.NEAREST}


@dataclass(frozen=True)
class ClassificationTransform:
    """A PIL picture in, a float32 CHW array out (torchvision's ImageClassification, for PIL input);
    or only its resize and crop (`pixels`), for a model that normalises in its graph."""

    resize_size: int
    crop_size: int
    mean: tuple[float, ...]
    std: tuple[float, ...]
    interpolation: str = "bilinear"

    @classmethod
    def of(cls, transforms) -> ClassificationTransform:
        """The same steps as a torchvision ImageClassification preset (the weights' `transforms()`)."""
        return cls(resize_size=min(transforms.resize_size), crop_size=min(transforms.crop_size), mean=tuple(transforms.mean),
                   std=tuple(transforms.std), interpolation=transforms.interpolation.value)

    def as_dict(self) -> dict:
        return {"resize_size": self.resize_size, "crop_size": self.crop_size, "mean": list(self.mean), "std": list(self.std),
                "interpolation": self.interpolation}

    def __call__(self, picture: Image.Image) -> np.ndarray:
        return self.normalise(self.pixels(picture))

    def pixels(self, picture: Image.Image) -> np.ndarray:
        """The resize and the crop: uint8, height x width x RGB (what an OpenVINO model takes: it
        normalises inside its graph, inference/worker/openvino_runtime.py)."""
        width, height = picture.size
        short, long = (width, height) if width <= height else (height, width)
        new_short, new_long = self.resize_size, int(self.resize_size * long / short)  # torchvision's rounding
        size = (new_short, new_long) if width <= height else (new_long, new_short)
        if size != picture.size:
            picture = picture.resize(size, PIL_RESAMPLING[self.interpolation])
        return np.asarray(centre_crop(picture.convert("RGB"), self.crop_size))

    def normalise(self, pixels: np.ndarray) -> np.ndarray:
        """`/ 255`, `(x - mean) / std` in float32, channels first: torchvision's tensor."""
        scaled = np.asarray(pixels, dtype=np.float32) / np.float32(255)
        normalised = (scaled - np.asarray(self.mean, dtype=np.float32)) / np.asarray(self.std, dtype=np.float32)
        return np.ascontiguousarray(normalised.transpose(2, 0, 1))


def centre_crop(picture: Image.Image, size: int) -> Image.Image:
    """torchvision's center_crop of a PIL picture: the same offsets, black borders where it is smaller."""
    width, height = picture.size
    if size > width or size > height:
        padded = Image.new(picture.mode, (max(width, size), max(height, size)))
        padded.paste(picture, ((size - width) // 2 if size > width else 0, (size - height) // 2 if size > height else 0))
        picture, (width, height) = padded, padded.size
    top, left = int(round((height - size) / 2.0)), int(round((width - size) / 2.0))
    return picture.crop((left, top, left + size, top + size))


def softmax(logits: np.ndarray) -> np.ndarray:
    """Class probabilities of each row, in float32."""
    shifted = np.exp(logits.astype(np.float32) - logits.max(axis=1, keepdims=True))
    return shifted / shifted.sum(axis=1, keepdims=True)


def top_classes(probs: np.ndarray, wanted: list[int], categories: list[str]) -> list[list[dict]]:
    """The `wanted[row]` most likely classes of each row, as the API answers them (confidence
    rounded to 6 places from the float32 score, as the PyTorch path does)."""
    k = min(max(wanted, default=1), probs.shape[1])
    best = np.argsort(-probs, axis=1, kind="stable")[:, :k]
    confidence = np.round(np.take_along_axis(probs, best, axis=1).astype(np.float64), 6)
    return [
        [{"class": categories[i], "class_id": i, "confidence": c} for c, i in zip(row_conf[:n], row_idx[:n])]
        for row_conf, row_idx, n in zip(confidence.tolist(), best.tolist(), wanted)
    ]
