"""Decoding untrusted bytes: formats, modes, EXIF orientation, limits (pure functions)."""

from __future__ import annotations

import base64
import io

import pytest
from PIL import Image

from inference.core.errors import ImageTooLarge, InvalidBase64, InvalidImage
from inference.core.imaging import decode_base64, load_rgb, model_input, open_checked, probe_image
from tests.helpers import encoded, header_variants, image_bytes, large_photo

LIMIT = 40_000_000


def encode(img: Image.Image, fmt: str, **kw) -> bytes:
    buffer = io.BytesIO()
    img.save(buffer, format=fmt, **kw)
    return buffer.getvalue()


@pytest.mark.parametrize("mode", ["L", "RGBA", "P", "CMYK", "LA", "I;16", "1"])
def test_every_mode_becomes_rgb(mode):
    fmt = "JPEG" if mode == "CMYK" else ("TIFF" if mode == "I;16" else "PNG")
    img = Image.new(mode, (16, 8))
    rgb = load_rgb(encode(img, fmt), LIMIT)
    assert rgb.mode == "RGB" and rgb.size == (16, 8)


def test_transparent_pixels_composite_on_white():
    rgba = Image.new("RGBA", (2, 2), (0, 0, 0, 0))
    assert load_rgb(encode(rgba, "PNG"), LIMIT).getpixel((0, 0)) == (255, 255, 255)


def test_exif_orientation_is_applied():
    img = Image.new("RGB", (40, 20), (255, 0, 0))
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise when shown
    rotated = load_rgb(encode(img, "JPEG", exif=exif), LIMIT)
    assert rotated.size == (20, 40)


def test_real_photographs_decode():
    assert load_rgb(image_bytes("chelsea.jpg"), LIMIT).size == (451, 300)
    assert probe_image(image_bytes("astronaut.jpg"), LIMIT) == {"format": "JPEG", "width": 512, "height": 512, "mode": "RGB"}


@pytest.mark.parametrize("limit", [LIMIT, 451 * 300, 451 * 300 - 1])
def test_probe_answers_as_pil_does(limit):
    """A plain JPEG's headers are read from its markers, the rest by PIL: the same answers."""
    for name, raw in header_variants().items():
        try:
            img = open_checked(raw, limit)
            want: object = {"format": img.format, "width": img.width, "height": img.height, "mode": img.mode}
        except (ImageTooLarge, InvalidImage) as exc:
            want = type(exc)
        try:
            got: object = probe_image(raw, limit)
        except (ImageTooLarge, InvalidImage) as exc:
            got = type(exc)
        assert got == want, name


def test_data_url_prefix_accepted():
    raw = image_bytes("chelsea.jpg")
    assert decode_base64("data:image/jpeg;base64," + base64.b64encode(raw).decode()) == raw


@pytest.mark.parametrize("data", ["", "   ", "abc", "!!!!", "aGVsbG8"])
def test_broken_base64(data):
    with pytest.raises(InvalidBase64):
        decode_base64(data)


@pytest.mark.parametrize("raw", [b"hello", b"\x89PNG\r\n\x1a\n" + b"\0" * 20, b"GIF89a", b"%PDF-1.4"])
def test_not_an_image(raw):
    with pytest.raises(InvalidImage):
        load_rgb(raw, LIMIT)


def test_truncated_pixels_are_invalid_image():
    with pytest.raises(InvalidImage):
        load_rgb(image_bytes("chelsea.jpg")[:3000], LIMIT)


def test_pixel_limit_rejects_before_decoding():
    big = encode(Image.new("1", (3000, 3000)), "PNG")  # 9 MP in a few KB
    with pytest.raises(ImageTooLarge):
        probe_image(big, 8_000_000)
    assert probe_image(big, 9_000_000)["width"] == 3000


def test_disallowed_format_rejected():
    with pytest.raises(InvalidImage):
        load_rgb(encode(Image.new("RGB", (4, 4)), "PPM"), LIMIT)


def test_a_large_jpeg_decodes_at_a_reduced_scale_and_a_small_one_in_full():
    """A worker decodes a JPEG at the smallest DCT scale that keeps both sides twice its model's
    resize (256): a 12-megapixel photo at 1/4, upright as its EXIF says; a picture up to 512
    pixels as before, bit for bit."""
    assert model_input(large_photo(), 10**8, 256).size == (1000, 750)
    assert model_input(large_photo(orientation=6), 10**8, 256).size == (750, 1000)  # rotated upright, as in full
    assert load_rgb(large_photo(orientation=6), 10**8).size == (3000, 4000)
    for name in ("astronaut.jpg", "chelsea.jpg"):
        assert model_input(image_bytes(name), 10**8, 256).tobytes() == model_input(image_bytes(name), 10**8, 0).tobytes()
    png = encoded(Image.new("RGB", (4000, 3000)), "PNG")  # not a JPEG: no reduced decoding
    assert model_input(png, 10**8, 256).size == (4000, 3000)
