"""IMAGE_DECODER=torchvision: JPEGs decoded in batches by torchvision (nvJPEG when the model is
on CUDA; here, on the CPU, the same code with libjpeg-turbo), everything else through PIL."""

from __future__ import annotations

import io
import random

import pytest
import torch
from PIL import Image

from inference.core.errors import InvalidImage, InvalidRequest
from inference.core.imaging import load_rgb, open_checked
from inference.core.jpeg_headers import read_layout
from inference.core.registry import MODELS as SPECS
from inference.core.settings import use_settings
from inference.worker import process, tensor_decode
from tests.helpers import encoded, header_variants, image_bytes, rotated_jpeg

LIMIT = 10**8


@pytest.fixture(scope="module")
def resnet():
    from inference.worker import model_runtime

    return model_runtime.load(SPECS["resnet18"], "random", 0, threads=1)


def test_only_plain_jpegs_take_the_tensor_path():
    cat = Image.open(io.BytesIO(image_bytes("chelsea.jpg")))
    assert tensor_decode.suits_tensor_decoding(image_bytes("chelsea.jpg"), LIMIT)
    assert tensor_decode.suits_tensor_decoding(encoded(cat.convert("L")), LIMIT)  # greyscale is expanded to RGB
    assert not tensor_decode.suits_tensor_decoding(encoded(cat, "PNG"), LIMIT)
    assert not tensor_decode.suits_tensor_decoding(encoded(cat.convert("CMYK")), LIMIT)
    assert not tensor_decode.suits_tensor_decoding(rotated_jpeg(), LIMIT)  # PIL applies EXIF orientation
    assert not tensor_decode.suits_tensor_decoding(image_bytes("chelsea.jpg"), 1000)  # over the pixel limit: PIL says why
    assert not tensor_decode.suits_tensor_decoding(b"\xff\xd8 not really", LIMIT)


@pytest.mark.parametrize("max_pixels", [LIMIT, 451 * 300, 451 * 300 - 1, 1000])
def test_the_fast_header_check_answers_as_pil(max_pixels):
    variants = header_variants()
    for name, raw in variants.items():
        assert tensor_decode.suits_tensor_decoding(raw, max_pixels) == tensor_decode.suits_by_pil(raw, max_pixels), name
    layout = read_layout(image_bytes("chelsea.jpg"))
    assert layout == (451, 300, 3, 1)
    assert read_layout(variants["exif_6"]).orientation == 6
    assert read_layout(variants["png"]) is None and read_layout(variants["xmp_rotated"]) is None


def test_the_fast_header_check_never_passes_what_pil_reads_otherwise():
    """Corrupt headers: whatever the fast reader lets through, PIL either reads as a plain JPEG
    too or cannot read at all (then the tensor decoder refuses it, or decodes what it can)."""
    rng = random.Random(7)
    sources = list(header_variants().values())
    let_through = answered = 0
    for _ in range(3000):
        raw = bytearray(rng.choice(sources))
        for _ in range(rng.randint(1, 3)):
            if len(raw) > 4:
                raw[rng.randrange(2, min(len(raw), 700))] = rng.randrange(256)
        raw = bytes(raw)
        answered += read_layout(raw) is not None
        if tensor_decode.suits_tensor_decoding(raw, LIMIT) and not tensor_decode.suits_by_pil(raw, LIMIT):
            let_through += 1
            with pytest.raises(InvalidRequest):
                open_checked(raw, LIMIT)
    assert answered > 1000 and let_through < 300  # the fast reader answered most; both caught most corruptions


def test_a_broken_jpeg_does_not_spoil_the_batch():
    good, broken = image_bytes("chelsea.jpg"), image_bytes("chelsea.jpg")[:2500]
    decoded = tensor_decode.decode([good, broken, image_bytes("astronaut.jpg")], "cpu")
    assert decoded[1] is None
    assert decoded[0].shape == (3, 300, 451) and decoded[2].shape == (3, 512, 512) and decoded[0].dtype == torch.uint8


def test_tensor_path_gives_the_pil_path_s_answers(resnet):
    raws = [image_bytes("chelsea.jpg"), image_bytes("astronaut.jpg"), image_bytes("chelsea.jpg")]
    tensors = tensor_decode.preprocess(tensor_decode.decode(raws, "cpu"), resnet.transforms)
    reference = [resnet.transforms(load_rgb(raw, LIMIT)) for raw in raws]
    for got, want in zip(tensors, reference):
        assert got.shape == want.shape == (3, 224, 224)
        assert (got - want).abs().mean() < 0.01  # libjpeg versions and resize kernels differ by a grey level at most
    got = resnet.classify_each([(t, 5) for t in tensors])
    want = resnet.classify_each([(t, 5) for t in reference])
    for g, w in zip(got, want):
        assert [p["class_id"] for p in g[:3]] == [p["class_id"] for p in w[:3]]
        assert all(abs(a["confidence"] - b["confidence"]) < 0.01 for a, b in zip(g, w))


def test_worker_batch_mixes_both_paths_and_fails_only_the_broken(resnet, monkeypatch):
    monkeypatch.setenv("IMAGE_DECODER", "torchvision")
    monkeypatch.setattr(process, "_loaded", resnet)
    decoded_here = []
    real_decode = tensor_decode.decode
    monkeypatch.setattr(tensor_decode, "decode", lambda raws, device: decoded_here.extend(raws) or real_decode(raws, device))
    use_settings(None)
    try:
        cat_png = encoded(Image.open(io.BytesIO(image_bytes("chelsea.jpg"))), "PNG")
        items = [(image_bytes("chelsea.jpg"), 3), (cat_png, 3), (image_bytes("chelsea.jpg")[:2500], 3), (rotated_jpeg(), 2)]
        outputs = process.decode_and_classify(items)
    finally:
        monkeypatch.delenv("IMAGE_DECODER")
        use_settings(None)
    assert decoded_here == [items[0][0], items[2][0]]  # the JPEGs whose headers looked plain
    assert isinstance(outputs[2], InvalidImage)  # refused by torchvision, then by PIL, which says why
    assert [len(outputs[n]) for n in (0, 1, 3)] == [3, 3, 2]
    assert outputs[0][0]["class_id"] == outputs[1][0]["class_id"]  # the same cat, as JPEG (torchvision) and PNG (PIL)
    rotated = resnet.classify([load_rgb(rotated_jpeg(), LIMIT)], 2)[0]
    assert [p["class_id"] for p in outputs[3]] == [p["class_id"] for p in rotated]  # turned upright by PIL first


def test_hostile_jpegs_take_the_pil_path_where_they_are_cropped_or_refused(resnet, monkeypatch):
    """The GPU path (torchvision) would resize a 65,500 x 1 JPEG whole, and decode every one of
    a thousand scans: such pictures go the PIL path, which crops the first and refuses the second."""
    import time

    from inference.core.errors import ImageTooComplex
    from tests import hostile

    wide, tall, scans = hostile.sliver("JPEG"), hostile.sliver("JPEG", wide=False), hostile.many_scans(1000, 1000)
    assert not any(tensor_decode.suits_tensor_decoding(raw, LIMIT) for raw in (wide, tall, scans))
    monkeypatch.setenv("IMAGE_DECODER", "torchvision")
    monkeypatch.setattr(process, "_loaded", resnet)
    use_settings(None)
    try:
        started = time.perf_counter()
        outputs = process.decode_and_classify([(wide, 1), (tall, 1), (scans, 1), (image_bytes("chelsea.jpg"), 1)])
    finally:
        monkeypatch.delenv("IMAGE_DECODER")
        use_settings(None)
    assert time.perf_counter() - started < 2
    assert isinstance(outputs[2], ImageTooComplex)
    assert all(len(outputs[n]) == 1 for n in (0, 1, 3))
