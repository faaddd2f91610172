"""Hostile inputs for tests/test_hostile.py and the fuzzers: pictures that cost far more to
decode or resize than their bytes suggest, and clients that come from an address of their own."""

from __future__ import annotations

import io
import struct
import zlib

from PIL import Image

# WEBP cannot be wider or taller than this; the other formats take 65,535.
LONGEST_SIDE = {"JPEG": 65_500, "PNG": 65_500, "GIF": 65_500, "TIFF": 65_500, "WEBP": 16_383}


def encoded(img: Image.Image, fmt: str, **save) -> bytes:
    out = io.BytesIO()
    img.save(out, fmt, **save)
    return out.getvalue()


def sliver(fmt: str, wide: bool = True) -> bytes:
    """A picture one pixel high (or wide) and as long as the format allows: a 17 KB JPEG of
    65,500 x 1 became 16.8 million x 256 pixels in the models' resize before it was cropped."""
    length = LONGEST_SIDE[fmt]
    return encoded(Image.new("RGB", (length, 1) if wide else (1, length), (200, 30, 60)), fmt)


def flat_jpeg(width: int, height: int) -> bytes:
    """Many pixels in few bytes (a flat colour): a picture at the pixel limit costs little to send."""
    return encoded(Image.new("RGB", (width, height), (90, 140, 200)), "JPEG", quality=50)


def noise_png(width: int, height: int) -> bytes:
    """A picture that compresses badly: its bytes are about its pixels' (a large picture to store)."""
    return encoded(Image.merge("RGB", [Image.effect_noise((width, height), 120 + 10 * n) for n in range(3)]), "PNG")


def jpeg_segments(raw: bytes) -> list[tuple[int, int, int]]:
    """(marker, start, end) of each segment, a scan's coded data included in its segment."""
    segments, pos = [], 2
    while pos < len(raw) and raw[pos + 1] != 0xD9:
        marker = raw[pos + 1]
        (length,) = struct.unpack_from(">H", raw, pos + 2)
        end = pos + 2 + length
        if marker == 0xDA:  # coded data runs to the next marker that is not a stuffed byte or a restart
            while True:
                end = raw.index(b"\xff", end)
                if raw[end + 1] != 0 and not 0xD0 <= raw[end + 1] <= 0xD7:
                    break
                end += 2
        segments.append((marker, pos, end))
        pos = end
    return segments


def many_scans(size: int, scans: int) -> bytes:
    """A progressive JPEG whose last scan is repeated: libjpeg decodes every copy (a warning, no
    error), a pass over the whole picture each. 1,000 scans of 6,000 x 6,000 took 38 s here."""
    raw = encoded(Image.new("RGB", (size, size), (120, 60, 200)), "JPEG", progressive=True, quality=90)
    _, start, end = [s for s in jpeg_segments(raw) if s[0] == 0xDA][-1]
    return raw[:end] + raw[start:end] * (scans - 1) + raw[end:]


def png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def png_with_text_bomb(kind: bytes = b"zTXt", inflated: int = 200 * 1024 * 1024) -> bytes:
    """A tiny PNG with a compressed text (or colour profile) chunk that inflates to `inflated` bytes."""
    raw = encoded(Image.new("RGB", (64, 64), (1, 2, 3)), "PNG")
    header = {b"zTXt": b"k\0\0", b"iTXt": b"k\0\1\0\0\0", b"iCCP": b"p\0\0"}[kind]
    bomb = png_chunk(kind, header + zlib.compress(b"\0" * inflated, 9))
    at = raw.index(b"IDAT") - 4
    return raw[:at] + bomb + raw[at:]
