"""A JPEG's size, colour components and EXIF orientation, read straight from its markers.

The API checks every picture's headers before it queues a request, and a GPU worker every JPEG's
before it decodes a batch of them there. PIL parses all the markers in Python, then the EXIF
block: ~40 us per picture, which held a GPU worker's GIL ~15 % of the time at 128 pictures per
request (and was ~5 % of the API's CPU per one-picture submission). Walking the markers with
struct takes a few us (`inference.core.imaging.plain_jpeg_layout` applies the pixel limits).
Only the common case is answered here; for anything unusual (another format, a colour
transform, XMP, a second EXIF block, odd markers, broken lengths) `read_layout` returns None
and the caller asks PIL, so that the answers stay PIL's. Torch-free.
"""

from __future__ import annotations

import struct
from typing import NamedTuple

# Huffman-coded frames that torchvision decodes: baseline, extended sequential, progressive.
PLAIN_FRAMES = {0xC0, 0xC1, 0xC2}
# Other segments a plain JPEG has before its first scan: Huffman and quantisation tables,
# restart interval, comments, application data (APP0-APP15).
PLAIN_SEGMENTS = {0xC4, 0xDB, 0xDD, 0xFE, *range(0xE0, 0xF0)}
START_OF_SCAN, APP1, APP14 = 0xDA, 0xE1, 0xEE
EXIF_HEADER = b"Exif\0\0"
ORIENTATION_TAG = 0x0112


class JpegLayout(NamedTuple):
    width: int
    height: int
    components: int  # 1 greyscale, 3 colour (YCbCr), 4 CMYK/YCCK
    orientation: int  # EXIF orientation; 1 (upright) when there is none


def read_layout(raw: bytes) -> JpegLayout | None:
    """The layout of a JPEG whose headers up to its first scan are all plain; None otherwise."""
    if not raw.startswith(b"\xff\xd8\xff"):
        return None
    pos, size = 2, len(raw)
    frame: tuple[int, int, int] | None = None
    orientation: int | None = None
    while pos + 4 <= size:
        if raw[pos] != 0xFF:
            return None
        marker = raw[pos + 1]
        if marker == 0xFF:  # fill byte before a marker
            pos += 1
            continue
        if marker == START_OF_SCAN:
            return JpegLayout(*frame, 1 if orientation is None else orientation) if frame else None
        (length,) = struct.unpack_from(">H", raw, pos + 2)
        body, end = pos + 4, pos + 2 + length
        if length < 2 or end > size or not (marker in PLAIN_FRAMES or marker in PLAIN_SEGMENTS):
            return None  # broken, or a marker a plain JPEG does not have here
        if marker in PLAIN_FRAMES:
            if frame is not None or length < 8:
                return None
            precision, height, width, components = struct.unpack_from(">BHHB", raw, body)
            if precision != 8:
                return None
            frame = (width, height, components)
        elif marker == APP1:  # EXIF, or XMP (whose orientation PIL also reads): only one EXIF block here
            if orientation is not None or not raw.startswith(EXIF_HEADER, body):
                return None
            orientation = exif_orientation(raw[body + len(EXIF_HEADER):end])
            if orientation is None:
                return None
        elif marker == APP14:  # Adobe: the colour transform decides what 3 or 4 components mean
            return None
        pos = end
    return None


def exif_orientation(tiff: bytes) -> int | None:
    """The orientation in an EXIF block's first directory: 1 when it has none, None when the
    block is not the plain TIFF layout (let PIL read it)."""
    if len(tiff) < 8 or tiff[:2] not in (b"II", b"MM"):
        return None
    order = "<" if tiff[:2] == b"II" else ">"
    magic, directory = struct.unpack_from(order + "HI", tiff, 2)
    if magic != 42 or directory + 2 > len(tiff):
        return None
    (entries,) = struct.unpack_from(order + "H", tiff, directory)
    if directory + 2 + 12 * entries > len(tiff):
        return None
    for n in range(entries):
        entry = directory + 2 + 12 * n
        tag, kind, count = struct.unpack_from(order + "HHI", tiff, entry)
        if tag == ORIENTATION_TAG:
            if kind != 3 or count != 1:  # one SHORT, as the standard says
                return None
            return struct.unpack_from(order + "H", tiff, entry + 8)[0]
    return 1
