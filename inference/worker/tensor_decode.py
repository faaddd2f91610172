"""Decoding a batch of JPEGs with torchvision, on the model's device (nvJPEG on CUDA).

At thousands of images a second a GPU outruns any CPU decoding with PIL; torchvision decodes
a whole list of JPEGs in one call on the GPU, and the preprocessing (resize, crop, normalise)
then runs there too, on each group of same-sized pictures at once. Every picture is first
checked from its headers alone (format, pixel limit, decompression bombs), with PIL's answers
(inference/core/jpeg_headers.py reads the common case faster); only plain JPEGs (RGB or greyscale,
no EXIF rotation) go this way, the rest (PNG, CMYK, rotated photos...) and any JPEG this
decoder refuses take the PIL path, which also gives a corrupt picture its error.

Imported in worker processes only (torch).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torchvision.io import ImageReadMode, decode_jpeg

from inference.core.errors import InvalidRequest
from inference.core.imaging import extreme_aspect, open_checked, plain_jpeg_layout, within_scan_limit
from inference.core.jpeg_headers import ORIENTATION_TAG
from inference.core.settings import get_settings


def used_for(device: str) -> bool:
    """IMAGE_DECODER: whether a model on `device` gets its JPEGs decoded here."""
    decoder = get_settings().image_decoder
    return decoder == "torchvision" or (decoder == "auto" and device.startswith("cuda"))


def suits_tensor_decoding(raw: bytes, max_pixels: int) -> bool:
    """A plain JPEG (the headers say so) that decodes the same here as with PIL, and that needs no
    cropping before it is resized (the PIL path crops an extreme aspect ratio: `visible_part`).
    The common case is read from the markers directly (inference/core/jpeg_headers.py), anything
    else by PIL."""
    layout = plain_jpeg_layout(raw, max_pixels)
    if layout is not None:
        # PIL turns a rotated photo upright; the scan limit is the PIL path's to report.
        return layout.orientation == 1 and not extreme_aspect(layout.width, layout.height) and within_scan_limit(raw)
    return suits_by_pil(raw, max_pixels)


def suits_by_pil(raw: bytes, max_pixels: int) -> bool:
    try:
        img = open_checked(raw, max_pixels)
    except InvalidRequest:
        return False  # the PIL path reports why
    return (img.format == "JPEG" and img.mode in ("RGB", "L") and img.getexif().get(ORIENTATION_TAG, 1) == 1
            and not extreme_aspect(*img.size))


@torch.inference_mode()  # views without autograd's bookkeeping: the split took ~40 % less
def decode(raws: list[bytes], device: str) -> list[torch.Tensor | None]:
    """Each JPEG as a 3xHxW uint8 tensor on `device`; None where this decoder refused it."""
    if not raws:
        return []
    # One buffer for the batch, split into views: a copy and two torch calls per batch, not per picture.
    tensors = list(torch.frombuffer(bytearray().join(raws), dtype=torch.uint8).split([len(raw) for raw in raws]))
    try:
        return list(decode_jpeg(tensors, mode=ImageReadMode.RGB, device=device))
    except RuntimeError:  # one picture spoilt the batch: decode them one by one
        return [_decode_one(tensor, device) for tensor in tensors]


def _decode_one(tensor: torch.Tensor, device: str) -> torch.Tensor | None:
    try:
        return decode_jpeg(tensor, mode=ImageReadMode.RGB, device=device)
    except RuntimeError:
        return None


def preprocess(pictures: list[torch.Tensor], transforms: Callable[[torch.Tensor], torch.Tensor]) -> list[torch.Tensor]:
    """The model's transforms on each picture, run once per group of same-sized pictures."""
    by_size: dict[tuple[int, ...], list[int]] = {}
    for n, picture in enumerate(pictures):
        by_size.setdefault(tuple(picture.shape), []).append(n)
    out: list[torch.Tensor] = [torch.empty(0)] * len(pictures)
    for indices in by_size.values():
        for n, tensor in zip(indices, transforms(torch.stack([pictures[n] for n in indices]))):
            out[n] = tensor
    return out
