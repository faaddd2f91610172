"""IMAGE_DECODER=torchvision: JPEGs decoded in batches by torchvision (nvJPEG when the model is
on CUDA; here, on the CPU, the same code with libjpeg-turbo), everything else through PIL."""

from __future__ import annotations

import io

import pytest
import torch
from PIL import Image

from inference import tensor_decode, worker
from inference.errors import InvalidImage
from inference.imaging import load_rgb
from inference.registry import MODELS as SPECS
from inference.settings import get_settings
from tests.conftest import image_bytes

LIMIT = 10**8


@pytest.fixture(scope="module")
def resnet():
    from inference import model_runtime

    return model_runtime.load(SPECS["resnet18"], "random", 0, threads=1)


def encoded(img: Image.Image, fmt: str = "JPEG", **save) -> bytes:
    out = io.BytesIO()
    img.save(out, fmt, **save)
    return out.getvalue()


def rotated_jpeg() -> bytes:
    exif = Image.Exif()
    exif[tensor_decode.EXIF_ORIENTATION] = 6  # "rotate 90 degrees to display"
    return encoded(Image.open(io.BytesIO(image_bytes("chelsea.jpg"))), exif=exif)


def test_only_plain_jpegs_take_the_tensor_path():
    cat = Image.open(io.BytesIO(image_bytes("chelsea.jpg")))
    assert tensor_decode.suits_tensor_decoding(image_bytes("chelsea.jpg"), LIMIT)
    assert tensor_decode.suits_tensor_decoding(encoded(cat.convert("L")), LIMIT)  # greyscale is expanded to RGB
    assert not tensor_decode.suits_tensor_decoding(encoded(cat, "PNG"), LIMIT)
    assert not tensor_decode.suits_tensor_decoding(encoded(cat.convert("CMYK")), LIMIT)
    assert not tensor_decode.suits_tensor_decoding(rotated_jpeg(), LIMIT)  # PIL applies EXIF orientation
    assert not tensor_decode.suits_tensor_decoding(image_bytes("chelsea.jpg"), 1000)  # over the pixel limit: PIL says why
    assert not tensor_decode.suits_tensor_decoding(b"\xff\xd8 not really", LIMIT)


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
    monkeypatch.setattr(worker, "_loaded", resnet)
    decoded_here = []
    real_decode = tensor_decode.decode
    monkeypatch.setattr(tensor_decode, "decode", lambda raws, device: decoded_here.extend(raws) or real_decode(raws, device))
    get_settings.cache_clear()
    try:
        cat_png = encoded(Image.open(io.BytesIO(image_bytes("chelsea.jpg"))), "PNG")
        items = [(image_bytes("chelsea.jpg"), 3), (cat_png, 3), (image_bytes("chelsea.jpg")[:2500], 3), (rotated_jpeg(), 2)]
        outputs = worker.decode_and_classify(items)
    finally:
        monkeypatch.delenv("IMAGE_DECODER")
        get_settings.cache_clear()
    assert decoded_here == [items[0][0], items[2][0]]  # the JPEGs whose headers looked plain
    assert isinstance(outputs[2], InvalidImage)  # refused by torchvision, then by PIL, which says why
    assert [len(outputs[n]) for n in (0, 1, 3)] == [3, 3, 2]
    assert outputs[0][0]["class_id"] == outputs[1][0]["class_id"]  # the same cat, as JPEG (torchvision) and PNG (PIL)
    rotated = resnet.classify([load_rgb(rotated_jpeg(), LIMIT)], 2)[0]
    assert [p["class_id"] for p in outputs[3]] == [p["class_id"] for p in rotated]  # turned upright by PIL first
