"""Safe image loading: any file a user may hand us becomes an RGB PIL image or an ImageLoadError.

Policy, in order:

1. Read the bytes (path, ``bytes`` or a binary file-like object); an empty input is refused.
2. ``Image.open`` reads only the header. The pixel count ``width * height`` is checked against
   ``max_pixels`` *before* any decoding, so a decompression bomb (a tiny file claiming
   50000x50000 pixels) costs nothing. Pillow's own bomb guard (``DecompressionBombError``, and
   its warning, turned into an error here) is also caught.
3. ``img.load()`` forces the full decode of the first frame inside the same ``try``, so
   truncated or corrupt files fail here and not later in a model.
4. EXIF orientation is applied (``ImageOps.exif_transpose``); a damaged EXIF block is ignored.
5. The mode becomes RGB:
   * transparency (``RGBA``, ``LA``, ``PA``, ``P`` with a transparent colour) is composited
     on a **white** background (``background``, default (255, 255, 255)): the usual look of
     transparent logos and icons;
   * 16-bit grayscale (``I;16*``) maps linearly v -> v / 257 (65535 -> 255); 32-bit ``I`` and
     float ``F`` images are scaled by 255 / max when they exceed 255 (or, for ``F`` in [0, 1],
     by 255), then clipped to [0, 255];
   * everything else (``1``, ``L``, ``P``, ``CMYK``, ``YCbCr``, ...) via ``Image.convert("RGB")``.
   Animated images (GIF, APNG, WebP) give their first frame.
"""

from __future__ import annotations

import io
import os
import struct
import warnings
from pathlib import Path
from typing import BinaryIO, Union

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from gaia_viz.errors import ImageLoadError

DEFAULT_MAX_PIXELS = 40_000_000
IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".webp", ".bmp", ".tif", ".tiff", ".gif")
ImageSource = Union[str, os.PathLike, bytes, bytearray, memoryview, BinaryIO]

# What Pillow raises for damaged data varies by plugin (struct.error from TIFF/ICO headers,
# OverflowError from absurd sizes, AttributeError/NotImplementedError from half-parsed
# formats, ...); all of these mean "cannot decode". A fuzz test (tests/test_bad_input_library.py)
# feeds arbitrary and mutated bytes to keep this list honest.
_DECODE_ERRORS = (OSError, SyntaxError, ValueError, EOFError, IndexError, TypeError,
                  KeyError, ZeroDivisionError, MemoryError, OverflowError, struct.error,
                  AttributeError, NotImplementedError, RuntimeError, AssertionError,
                  Image.DecompressionBombError, Image.DecompressionBombWarning)


def is_image_path(path: str | os.PathLike) -> bool:
    """True when the file name ends in one of :data:`IMAGE_EXTENSIONS` (case-insensitive)."""
    return str(path).lower().endswith(IMAGE_EXTENSIONS)


def describe_source(source: ImageSource) -> str:
    """A short name for messages: the path, the file object's name, or ``<N bytes>``."""
    if isinstance(source, (str, os.PathLike)):
        return str(source)
    if isinstance(source, (bytes, bytearray, memoryview)):
        return f"<{len(source)} bytes>"
    return str(getattr(source, "name", "<file object>"))


def _read_bytes(source: ImageSource, label: str) -> bytes:
    try:
        if isinstance(source, (str, os.PathLike)):
            return Path(source).read_bytes()
        if isinstance(source, (bytes, bytearray, memoryview)):
            return bytes(source)
        if hasattr(source, "read"):
            data = source.read()
            if isinstance(data, str):
                raise ImageLoadError(f"{label}: opened in text mode; open image files with 'rb'")
            return bytes(data)
    except OSError as exc:
        raise ImageLoadError(f"cannot read {label}: {exc.strerror or exc}") from exc
    raise ImageLoadError(f"cannot load an image from a {type(source).__name__}; "
                         "pass a path, bytes or a binary file object")


def check_pixel_count(size: tuple[int, int], max_pixels: int, label: str) -> None:
    """ImageLoadError when width * height exceeds ``max_pixels`` (a decompression-bomb guard)."""
    width, height = size
    if width <= 0 or height <= 0:
        raise ImageLoadError(f"{label}: the header claims an empty image ({width}x{height})")
    if width * height > max_pixels:
        raise over_pixel_limit(width * height, max_pixels, label, f"{width}x{height} = ")


def over_pixel_limit(pixels: int, max_pixels: int, label: str, size_text: str = "") -> ImageLoadError:
    """The one message for an image over the pixel limit, in megapixels as the app's limit reads."""
    return ImageLoadError(
        f"{label}: {size_text}{pixels:,} pixels ({pixels / 1e6:.1f} MP) exceeds the limit of "
        f"{max_pixels / 1e6:g} MP ({max_pixels:,} pixels); refusing to decode it (possible decompression "
        "bomb). Downscale the image or raise max_pixels.")


def _bomb_pixels(exc: Exception) -> int | None:
    """The pixel count in PIL's decompression-bomb message, if it names one."""
    import re

    match = re.search(r"Image size \((\d+) pixels\)", str(exc))
    return int(match.group(1)) if match else None


def _high_bit_depth_to_l(img: Image.Image) -> Image.Image:
    values = np.asarray(img, dtype=np.float64)
    if img.mode.startswith("I;16"):
        values = values / 257.0
    elif img.mode == "F" and values.size and np.nanmax(values) <= 1.0 and np.nanmin(values) >= 0.0:
        values = values * 255.0
    elif values.size and np.nanmax(values) > 255:
        values = values * (255.0 / np.nanmax(values))
    values = np.nan_to_num(values, nan=0.0)
    return Image.fromarray(np.clip(np.rint(values), 0, 255).astype(np.uint8), mode="L")


def to_rgb(img: Image.Image, background: tuple[int, int, int] = (255, 255, 255)) -> Image.Image:
    """``img`` as RGB following the module's mode policy (alpha composited on ``background``)."""
    if img.mode == "RGB":
        return img
    if img.mode.startswith("I") or img.mode == "F":
        return _high_bit_depth_to_l(img).convert("RGB")
    has_alpha = img.mode in ("RGBA", "LA", "PA", "RGBa", "La") or (
        img.mode in ("P", "L", "RGB") and "transparency" in img.info)
    if has_alpha:
        rgba = img.convert("RGBA")
        canvas = Image.new("RGBA", rgba.size, tuple(background) + (255,))
        return Image.alpha_composite(canvas, rgba).convert("RGB")
    return img.convert("RGB")


def load_image(source: ImageSource, max_pixels: int = DEFAULT_MAX_PIXELS, *,
               background: tuple[int, int, int] = (255, 255, 255)) -> Image.Image:
    """Decode ``source`` into an RGB PIL image, fully loaded (see the module docstring).

    Raises ImageLoadError (empty, not an image, corrupt or truncated, over ``max_pixels``).
    """
    label = describe_source(source)
    data = _read_bytes(source, label)
    if not data:
        raise ImageLoadError(f"{label} is empty (0 bytes); choose an image file")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            img = Image.open(io.BytesIO(data))
            check_pixel_count(img.size, max_pixels, label)
            img.load()
    except ImageLoadError:
        raise
    except UnidentifiedImageError:
        raise ImageLoadError(f"{label} is not a recognised image format "
                             "(use PNG, JPEG, WebP, BMP, TIFF or GIF)") from None
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        # PIL's own guard (89 MP) fired before ours could read the size: our limit decides
        pixels = _bomb_pixels(exc)
        if pixels is None:
            raise ImageLoadError(f"{label}: refused as a possible decompression bomb ({exc})") from None
        if pixels > max_pixels:
            raise over_pixel_limit(pixels, max_pixels, label) from None
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", Image.DecompressionBombWarning)
                img = Image.open(io.BytesIO(data))
                img.load()
        except Image.DecompressionBombError:
            raise ImageLoadError(f"{label}: {pixels:,} pixels ({pixels / 1e6:.1f} MP) is over what the image "
                                 f"decoder accepts ({2 * Image.MAX_IMAGE_PIXELS / 1e6:.0f} MP); downscale the "
                                 "image") from None
        except _DECODE_ERRORS as exc:
            raise ImageLoadError(f"{label} is corrupt or truncated and cannot be decoded ({exc}); "
                                 "re-export or re-download the file") from None
    except _DECODE_ERRORS as exc:
        raise ImageLoadError(f"{label} is corrupt or truncated and cannot be decoded ({exc}); "
                             "re-export or re-download the file") from None
    try:
        img = ImageOps.exif_transpose(img)
    except _DECODE_ERRORS:
        pass  # a damaged EXIF block should not cost the user the image itself
    try:
        return to_rgb(img, background)
    except _DECODE_ERRORS as exc:
        raise ImageLoadError(f"{label}: cannot convert mode {img.mode!r} to RGB ({exc})") from None


def probe_image(path: str | os.PathLike, max_pixels: int = DEFAULT_MAX_PIXELS) -> str | None:
    """Cheap header check (no decoding): None when ``path`` looks like a usable image, else why not.

    Catches empty files, non-images, unreadable headers and bombs; truncated pixel data is only
    found by :func:`load_image`.
    """
    label = str(path)
    try:
        if os.path.getsize(path) == 0:
            return "empty file (0 bytes)"
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(path) as img:
                check_pixel_count(img.size, max_pixels, label)
    except ImageLoadError as exc:
        return str(exc)
    except UnidentifiedImageError:
        return "not a recognised image format"
    except _DECODE_ERRORS as exc:
        return f"unreadable header ({exc})"
    return None
