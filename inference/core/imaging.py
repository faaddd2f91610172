"""Decoding untrusted image bytes into RGB pictures (torch-free; the API uses it to validate)."""

from __future__ import annotations

import binascii
import io
import itertools
import re
import warnings

import pybase64
from PIL import Image, ImageOps, PngImagePlugin, UnidentifiedImageError

from inference.core.errors import ImageTooComplex, ImageTooLarge, InvalidBase64, InvalidImage, TooManyPixels
from inference.core.jpeg_headers import JpegLayout, read_layout
from inference.core.settings import get_settings

ALLOWED_FORMATS = ("JPEG", "PNG", "GIF", "BMP", "TIFF", "WEBP")
JPEG_START, START_OF_SCAN = b"\xff\xd8\xff", b"\xff\xda"
# A compiled literal finds the marker ~3x faster than bytes.count (0.30 against 0.88 ms in a 1 MB photo).
_SCAN_MARKER = re.compile(re.escape(START_OF_SCAN))
# The models' transforms resize a picture's shorter side (to 256) and keep the central square
# of it (224): along the longer side nothing beyond the shorter side's length is ever seen. But
# the resize comes first, and a 65,500 x 1 picture became 16.8 million x 256 pixels (~13 GB,
# over a minute) before the crop. A picture more than this many times longer than wide (or the
# other way round) loses the ends that no crop would keep before it is resized: at most
# 2,048 x 256 pixels are resized, and a panorama up to 8:1 is resized as it is (a picture
# cropped here comes out within a source pixel of the uncropped one's alignment).
MAX_ASPECT_RATIO = 8
# A PNG's compressed text and colour-profile chunks are inflated as it opens: each is capped at
# 1 MiB by Pillow, all of them at 64 MiB, which a 50 KB PNG reached (~0.15 s of the API's CPU, the
# same again in the worker). No classification needs more than a colour profile.
PngImagePlugin.MAX_TEXT_MEMORY = 4 * 1024 * 1024


def decode_base64(data: object) -> bytes:
    if not isinstance(data, str) or not data.strip():
        raise InvalidBase64("`data` must be a non-empty base64 string")
    if data.startswith("data:") and "," in data:  # accept data URLs from browsers
        data = data.split(",", 1)[1]
    try:
        # pybase64: SIMD, ~40x the standard library's speed (4 vs 169 us for a 68 KB JPEG here),
        # the same strict checks. At 128 pictures a request it was a quarter of the API's CPU.
        raw = pybase64.b64decode(data, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise InvalidBase64(f"`data` is not valid base64: {exc}") from None
    if not raw:
        raise InvalidBase64("`data` decodes to zero bytes")
    return raw


def within_scan_limit(raw: bytes, max_scans: int | None = None) -> bool:
    """Not a JPEG of more than MAX_JPEG_SCANS scans (a JPEG decodes in one pass per scan). Every
    scan starts with its marker, which cannot occur inside coded data (0xFF is stuffed there), so
    counting the marker's bytes never counts fewer scans than there are. `max_scans`: the API's
    own setting; else this process's MAX_JPEG_SCANS (a worker's)."""
    if not raw.startswith(JPEG_START):
        return True
    most = max_scans or get_settings().max_jpeg_scans
    return sum(1 for _ in itertools.islice(_SCAN_MARKER.finditer(raw), most + 1)) <= most  # stops at the first scan too many


def check_jpeg_scans(raw: bytes, max_scans: int | None = None) -> None:
    if not within_scan_limit(raw, max_scans):
        raise ImageTooComplex(f"the JPEG has more than {max_scans or get_settings().max_jpeg_scans} scans (MAX_JPEG_SCANS): "
                              "each is a pass over the whole picture")


def open_checked(raw: bytes, max_pixels: int, max_scans: int | None = None) -> Image.Image:
    """Open `raw` from its headers only (no pixels decoded): an allowed format within the pixel
    limit, and a JPEG within the scan limit."""
    if not raw:
        raise InvalidImage("the image is empty")
    check_jpeg_scans(raw, max_scans)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            img = Image.open(io.BytesIO(raw), formats=ALLOWED_FORMATS)
    except (UnidentifiedImageError, Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        if isinstance(exc, (Image.DecompressionBombError, Image.DecompressionBombWarning)):
            raise ImageTooLarge(str(exc)) from None
        raise InvalidImage(f"not a supported image (allowed: {', '.join(ALLOWED_FORMATS)})") from None
    except Exception as exc:  # PIL raises many types on corrupt headers
        raise InvalidImage(f"could not read the image: {exc}") from None
    width, height = img.size
    if width * height > max_pixels:
        raise ImageTooLarge(f"image has {width}x{height} pixels; the limit is {max_pixels} pixels")
    if width == 0 or height == 0:
        raise InvalidImage("image has no pixels")
    return img


def plain_jpeg_layout(raw: bytes, max_pixels: int) -> JpegLayout | None:
    """A greyscale or colour JPEG within the pixel limits, read from its markers (a few us, where
    PIL's header parsing takes ~40); None where PIL must look: anything else, or over a limit
    (PIL says why)."""
    layout = read_layout(raw)
    if layout is None or layout.components not in (1, 3):
        return None
    # open_checked's limits: the caller's, and PIL's bomb warning, which counts as too large.
    limit = min(max_pixels, Image.MAX_IMAGE_PIXELS or max_pixels)
    return layout if 0 < layout.width * layout.height <= limit else None


def probe_image(raw: bytes, max_pixels: int, max_scans: int | None = None) -> dict:
    """Cheap check (headers only) that `raw` is an allowed image within the pixel and scan limits."""
    layout = plain_jpeg_layout(raw, max_pixels)
    if layout is not None:
        check_jpeg_scans(raw, max_scans)
        return {"format": "JPEG", "width": layout.width, "height": layout.height, "mode": "RGB" if layout.components == 3 else "L"}
    img = open_checked(raw, max_pixels, max_scans)
    return {"format": img.format, "width": img.width, "height": img.height, "mode": img.mode}


def check_request_pixels(sizes: list[tuple[int, int]], most: int) -> None:
    """All of one request's pictures (width, height) within `most` pixels together (MAX_REQUEST_PIXELS)."""
    total = sum(width * height for width, height in sizes)
    if total > most:
        raise TooManyPixels(f"the request's {len(sizes)} pictures hold {total} pixels together; the limit is {most} (MAX_REQUEST_PIXELS)")


def extreme_aspect(width: int, height: int) -> bool:
    return max(width, height) > MAX_ASPECT_RATIO * min(width, height)


def visible_part(img: Image.Image) -> Image.Image:
    """The picture less the ends of its longer side that the models' centre crop never keeps
    (see MAX_ASPECT_RATIO): what is resized is at most 8 times as long as wide."""
    width, height = img.size
    if not extreme_aspect(width, height):
        return img
    keep = MAX_ASPECT_RATIO * min(width, height)
    if width > height:
        left = (width - keep) // 2
        return img.crop((left, 0, left + keep, height))
    top = (height - keep) // 2
    return img.crop((0, top, width, top + keep))


def model_input(raw: bytes, max_pixels: int, resize_to: int = 0) -> Image.Image:
    """What a worker resizes for its model: the decoded picture (`load_rgb`), its visible part.
    `resize_to`: the model's resize (its shorter side's length); a large JPEG then decodes at a
    reduced scale that still holds twice that (see `load_rgb`)."""
    return visible_part(load_rgb(raw, max_pixels, at_least=DRAFT_MARGIN * resize_to))


# A JPEG decodes at a reduced scale only while both sides keep this many times the model's
# resize: the resize then still averages 2x2 pixels or more into each, as from the full picture
# (a photo's answer stays within ~1e-3 of the full decode's), and a picture up to twice the
# resize (every test picture) decodes in full, bit for bit as before.
DRAFT_MARGIN = 2


def load_rgb(raw: bytes, max_pixels: int, at_least: int = 0) -> Image.Image:
    """Decode `raw`, apply EXIF orientation and convert any mode (L, RGBA, P, CMYK...) to RGB.
    With `at_least`, a JPEG decodes at the smallest of libjpeg's DCT scales (1/2, 1/4, 1/8) that
    keeps both sides at least that long (Pillow's draft mode): a 12-megapixel photo for a
    256-pixel resize decodes at 1/4, several times faster, in a sixteenth of the memory."""
    img = open_checked(raw, max_pixels)
    try:
        if at_least and img.format == "JPEG":
            img.draft("RGB", (at_least, at_least))
        img.load()
        img = ImageOps.exif_transpose(img)
        if img.mode in ("RGBA", "LA") or (img.mode == "P" and "transparency" in img.info):
            # Composite transparency on white rather than on whatever the hidden pixels hold.
            rgba = img.convert("RGBA")
            background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
            img = Image.alpha_composite(background, rgba)
        return img.convert("RGB")
    except ImageTooLarge:
        raise
    except Exception as exc:  # truncated or corrupt pixel data
        raise InvalidImage(f"could not decode the image: {exc}") from None
