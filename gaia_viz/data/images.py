"""Safe image loading: any file a user may hand us becomes an RGB PIL image or an ImageLoadError.

Policy, in order:

1. Read the bytes (path, ``bytes`` or a binary file-like object); an empty input is refused,
   and so is a path holding more than ``$GAIA_VIZ_MAX_IMAGE_MB`` (default 256 MB), before
   it is read (:func:`gaia_viz.paths.read_capped`).
2. ``Image.open`` reads only the header. The pixel count ``width * height`` is checked against
   ``max_pixels`` *before* any decoding, so a decompression bomb (a tiny file claiming
   50000x50000 pixels) costs nothing. Pillow's own hard stop (``DecompressionBombError``, at
   twice ``Image.MAX_IMAGE_PIXELS``) is also caught, its message given with this limit; its
   warning is silenced, as this check decides.
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
import re
import struct
import warnings
from pathlib import Path
from typing import BinaryIO, Union

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from gaia_viz.errors import ImageLoadError
from gaia_viz.paths import megabytes, read_capped, size_refusal
from gaia_viz.settings import MAX_IMAGE_ENV, max_image_bytes

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
        if isinstance(source, (str, os.PathLike)):  # a server path: at most GAIA_VIZ_MAX_IMAGE_MB
            return read_capped(source, max_image_bytes(), what=label, kind="an image file",
                               setting=MAX_IMAGE_ENV, error=ImageLoadError)
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


def _bomb_message(label: str, exc: Exception, max_pixels: int) -> str:
    """Pillow's own bomb guard fired (it checks at open, before ours can): the message gives
    gaia-viz's limit, the one a user can change, with the pixel count Pillow read."""
    found = re.search(r"\((\d+) pixels\)", str(exc))
    count = int(found.group(1)) if found else None
    pixels = f"{count:,} pixels ({count / 1e6:,.0f} MP)" if count is not None else "too many pixels"
    if count is not None and count <= max_pixels:  # within ours, past Pillow's hard stop
        return (f"{label}: {pixels} exceeds Pillow's own limit of {2 * Image.MAX_IMAGE_PIXELS:,} pixels, "
                f"below the limit of {max_pixels / 1e6:g} MP set here; refusing to decode it. Downscale the image.")
    return _over_limit(label, pixels, max_pixels)


def _over_limit(label: str, pixels: str, max_pixels: int) -> str:
    """The one message for an image over ``max_pixels`` (``pixels``: how many it has, as text)."""
    return (f"{label}: {pixels} exceeds the limit of {max_pixels:,} pixels ({max_pixels / 1e6:g} MP); "
            "refusing to decode it (possible decompression bomb). Downscale the image or raise max_pixels.")


def check_pixel_count(size: tuple[int, int], max_pixels: int, label: str) -> None:
    """ImageLoadError when width * height exceeds ``max_pixels`` (a decompression-bomb guard)."""
    width, height = size
    if width <= 0 or height <= 0:
        raise ImageLoadError(f"{label}: the header claims an empty image ({width}x{height})")
    if width * height > max_pixels:
        raise ImageLoadError(_over_limit(label, f"{width}x{height} = {width * height:,} pixels", max_pixels))


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
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)  # our own check follows
            img = Image.open(io.BytesIO(data))
            check_pixel_count(img.size, max_pixels, label)
            img.load()
    except ImageLoadError:
        raise
    except UnidentifiedImageError:
        raise ImageLoadError(f"{label} is not a recognised image format "
                             "(use PNG, JPEG, WebP, BMP, TIFF or GIF)") from None
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise ImageLoadError(_bomb_message(label, exc, max_pixels)) from None
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


# The bytes a whole JPEG or PNG ends with: a file cut short (an interrupted copy or download)
# lacks them. Looked for in the last TAIL_BYTES; some cameras append data after a JPEG's end,
# so a file without the marker there is decoded once to be sure before it is skipped.
END_MARKERS = {"JPEG": b"\xff\xd9", "PNG": b"IEND\xaeB`\x82"}
TAIL_BYTES = 4096


def _ends_whole(path: str | os.PathLike, size: int, image_format: str | None) -> bool:
    marker = END_MARKERS.get(image_format or "")
    if marker is None:
        return True
    with open(path, "rb") as handle:
        handle.seek(max(0, size - TAIL_BYTES))
        return marker in handle.read()


def probe_image(path: str | os.PathLike, max_pixels: int = DEFAULT_MAX_PIXELS) -> str | None:
    """Cheap check (the header, and the last bytes of a JPEG or PNG): None when ``path`` looks
    like a usable image, else why not.

    Catches empty files, files over the size cap, non-images, unreadable headers, bombs, and
    JPEGs and PNGs cut short (no end marker, and a decode fails); other damaged pixel data is
    only found by :func:`load_image`.
    """
    label = str(path)
    try:
        size = os.path.getsize(path)
        if size == 0:
            return "empty file (0 bytes)"
        if size > max_image_bytes():
            return f"{megabytes(size)}, {size_refusal(max_image_bytes(), 'an image file', MAX_IMAGE_ENV)}"
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)  # our own check follows
            with Image.open(path) as img:
                check_pixel_count(img.size, max_pixels, label)
                if not _ends_whole(path, size, img.format):
                    try:
                        img.load()
                    except _DECODE_ERRORS as exc:
                        return f"truncated: the file ends before the image does ({exc})"
    except ImageLoadError as exc:
        return str(exc)
    except UnidentifiedImageError:
        return "not a recognised image format"
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        return _bomb_message(label, exc, max_pixels)
    except _DECODE_ERRORS as exc:
        return f"unreadable header ({exc})"
    return None
