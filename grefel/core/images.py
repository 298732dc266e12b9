"""Images and videos as grefel reads them: the one image decoder and the one list of file suffixes.

`grefel prepare` (raw datasets) and `grefel predict` (photos) decode images with
:func:`decode_image`, so a face reaches the model the same way in training and in prediction:
palette, grayscale, 16-bit and CMYK images become RGB, and transparent pixels are composited over
white (FERG-DB renders and ``grefel synth`` faces carry an alpha channel). Images larger than
:data:`MAX_PIXELS` are refused (a decompression bomb) with a one-line reason.
"""

from __future__ import annotations

import io
import os
from pathlib import Path

import numpy as np

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".gif", ".webp", ".ppm", ".pgm")
VIDEO_SUFFIXES = (".mp4", ".avi", ".mov", ".mkv", ".m4v", ".webm", ".mpg", ".mpeg", ".wmv")
MAX_PIXELS = 178_956_970  # Pillow's own limit (Image.MAX_IMAGE_PIXELS): larger images are refused


class ImageError(Exception):
    """An image that cannot be used; the message is the reason (skipped.csv, a predict row's error)."""


def is_video(path: str | os.PathLike) -> bool:
    return Path(path).suffix.lower() in VIDEO_SUFFIXES


def read_image(path: str | os.PathLike, exif: bool = True) -> np.ndarray:
    """The image file ``path`` as RGB uint8 (H, W, 3) (:func:`decode_image`); ImageError with the reason."""
    try:
        data = Path(path).read_bytes()
    except FileNotFoundError:
        raise ImageError("file not found") from None
    except OSError as e:
        raise ImageError(f"unreadable file ({e.strerror or type(e).__name__})") from None
    return decode_image(data, exif=exif)


def decode_image(data: bytes, background: tuple[int, int, int] = (255, 255, 255), exif: bool = False) -> np.ndarray:
    """Decode image bytes of any PIL format into RGB uint8 (H, W, 3).

    The format comes from the content, not the file extension. Palette, grayscale, 16-bit and
    CMYK images are converted; transparent pixels are composited over ``background``. ``exif``:
    turn the image as its EXIF orientation says (photos; `grefel predict`); prepared datasets keep
    the stored pixels, which their landmarks refer to. Empty, truncated, unrecognised and oversized
    (over :data:`MAX_PIXELS`) files raise :class:`ImageError` with the reason.
    """
    from PIL import Image, ImageOps, UnidentifiedImageError

    if not data:
        raise ImageError("empty file (0 bytes)")
    try:
        img = _open_checked(Image, data)
        if data[:3] == b"\xff\xd8\xff" and data.rstrip(b"\x00\n\r ")[-2:] == b"\xff\xd9":
            rgb = _decode_jpeg(data, exif)  # whole JPEG: OpenCV decodes it about twice as fast as PIL
            if rgb is not None:
                return rgb
        img.load()
    except UnidentifiedImageError:
        raise ImageError("not an image (unrecognised format)") from None
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as e:
        raise ImageError(f"truncated or corrupt image ({str(e)[:80]})") from None
    if exif:
        img = ImageOps.exif_transpose(img)
    return _to_rgb(Image, img, background)


def _open_checked(Image, data: bytes):
    """The PIL image of ``data`` with only its header read; ImageError when it has over MAX_PIXELS."""
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)  # the limit is checked below
        img = Image.open(io.BytesIO(data))
    w, h = img.size
    if w * h > MAX_PIXELS:
        raise ImageError(f"image too large ({w}x{h} pixels, over the limit of {MAX_PIXELS:,}): not decoded")
    return img


def _decode_jpeg(data: bytes, exif: bool) -> np.ndarray | None:
    """A whole JPEG through OpenCV (None where it fails: PIL's path then reports why)."""
    import cv2

    flags = cv2.IMREAD_COLOR_RGB | (0 if exif else cv2.IMREAD_IGNORE_ORIENTATION)
    rgb = cv2.imdecode(np.frombuffer(data, np.uint8), flags)
    return rgb if rgb is not None and rgb.shape[0] >= 2 and rgb.shape[1] >= 2 else None


def _to_rgb(Image, img, background: tuple[int, int, int]) -> np.ndarray:
    """A loaded PIL image of any mode as RGB uint8, transparent pixels composited over ``background``."""
    if img.mode in ("I;16", "I;16B", "I;16L", "I", "F"):
        a = np.asarray(img, np.float64)
        hi = a.max() if a.size and a.max() > 255 else 255.0
        img = Image.fromarray(np.clip(a * (255.0 / hi), 0, 255).astype(np.uint8))
    if img.mode == "P" and "transparency" in img.info:
        img = img.convert("RGBA")
    if img.mode in ("RGBA", "LA", "PA", "RGBa", "La"):
        rgba = img.convert("RGBA")
        canvas = Image.new("RGBA", rgba.size, background + (255,))
        img = Image.alpha_composite(canvas, rgba)
    rgb = np.asarray(img.convert("RGB"))
    if rgb.shape[0] < 2 or rgb.shape[1] < 2:
        raise ImageError(f"image too small ({rgb.shape[1]}x{rgb.shape[0]})")
    return rgb
