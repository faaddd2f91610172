"""Decoding untrusted image bytes into RGB pictures (torch-free; the API uses it to validate)."""

from __future__ import annotations

import binascii
import io
import warnings

import pybase64
from PIL import Image, ImageOps, UnidentifiedImageError

from inference.errors import ImageTooLarge, InvalidBase64, InvalidImage
from inference.jpeg_headers import JpegLayout, read_layout

ALLOWED_FORMATS = ("JPEG", "PNG", "GIF", "BMP", "TIFF", "WEBP")


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


def open_checked(raw: bytes, max_pixels: int) -> Image.Image:
    """Open `raw` from its headers only (no pixels decoded): an allowed format within the pixel limit."""
    if not raw:
        raise InvalidImage("the image is empty")
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


def probe_image(raw: bytes, max_pixels: int) -> dict:
    """Cheap check (headers only) that `raw` is an allowed image within the pixel limit."""
    layout = plain_jpeg_layout(raw, max_pixels)
    if layout is not None:
        return {"format": "JPEG", "width": layout.width, "height": layout.height, "mode": "RGB" if layout.components == 3 else "L"}
    img = open_checked(raw, max_pixels)
    return {"format": img.format, "width": img.width, "height": img.height, "mode": img.mode}


def load_rgb(raw: bytes, max_pixels: int) -> Image.Image:
    """Fully decode `raw`, apply EXIF orientation and convert any mode (L, RGBA, P, CMYK...) to RGB."""
    img = open_checked(raw, max_pixels)
    try:
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
