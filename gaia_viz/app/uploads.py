"""An image the user brings to Inspect: decoding an upload with the preset, what its RGB
conversion did, the OOD policy it is resized by, its cache key, and the pixels the model saw
(no Streamlit here)."""

from __future__ import annotations

import io

import numpy as np
import torch
from PIL import Image
from torch import Tensor

from gaia_viz.data.images import DEFAULT_MAX_PIXELS, load_image
from gaia_viz.data.presets import OOD_POLICIES, Preset, denormalize, make_transform
from gaia_viz.errors import ImageLoadError


UPLOAD_TYPES = ("png", "jpg", "jpeg", "webp", "bmp", "tif", "tiff", "gif")


def image_from_upload(data: bytes, name: str, preset: Preset | str,
                      ood_policy: str, max_pixels: int = DEFAULT_MAX_PIXELS) -> tuple[Image.Image, Tensor]:
    """Decode an uploaded file and apply the preset: (RGB PIL image, Tensor[C, H, W]).

    Raises ImageLoadError naming the file and saying what to do.
    """
    try:
        image = load_image(data, max_pixels=max_pixels)
    except ImageLoadError as exc:
        reason = str(exc).replace(f"<{len(data)} bytes>", name)
        raise ImageLoadError(f"{name}: {reason}" if name not in reason else reason) from None
    return image, make_transform(preset, ood_policy)(image)


def upload_notes(data: bytes, name: str, background: str = "white") -> list[str]:
    """What the RGB conversion of an upload did that its picture does not show: transparent
    pixels composited on ``background`` (:func:`gaia_viz.data.images.to_rgb`), and an image with
    no visible pixel at all (every alpha 0: the model sees a blank white image). [] otherwise."""
    try:
        with Image.open(io.BytesIO(data)) as img:
            has_alpha = img.mode in ("RGBA", "LA", "PA", "RGBa", "La") or (
                img.mode in ("P", "L", "RGB") and "transparency" in img.info)
            if not has_alpha:
                return []
            alpha = np.asarray(img.convert("RGBA").getchannel("A"))
    except Exception:  # noqa: BLE001 - the decode already succeeded once; a note is not worth an error
        return []
    if alpha.size and int(alpha.max()) == 0:
        return [f"{name} is fully transparent: composited on {background}, the model sees a blank {background} "
                "image, so its scores describe an empty picture."]
    if alpha.size and int(alpha.min()) < 255:
        share = float((alpha < 255).mean())
        return [f"{name} has transparency ({100 * share:.0f} % of its pixels): they were composited on "
                f"{background} before the model saw it."]
    return []


def upload_policy(setup_policy: str, chosen: str | None = None) -> str:
    """The OOD policy for uploaded images: the set-up's, or ``chosen`` when the set-up scores
    both policies ("both")."""
    if setup_policy in OOD_POLICIES:
        return setup_policy
    return chosen if chosen in OOD_POLICIES else OOD_POLICIES[0]


def tensor_key(x: Tensor) -> str:
    """A digest of a tensor's shape, dtype and values: the cache key of "this image" (two uploads
    with one file name but other pixels get other keys)."""
    import hashlib

    data = x.detach().cpu().contiguous()
    digest = hashlib.sha1(f"{tuple(data.shape)}{data.dtype}".encode())
    digest.update(data.numpy().tobytes())
    return digest.hexdigest()


def model_view_pixels(x: Tensor, preset: Preset | str) -> np.ndarray:
    """The model's input (C, H, W), normalised, back as uint8 (H, W, 3) pixels, so maps
    drawn over it line up with what the model saw."""
    pixels = denormalize(x.detach().cpu().float(), preset).clamp(0, 1)
    pixels = (pixels * 255).round().to(torch.uint8).permute(1, 2, 0).numpy()
    return np.repeat(pixels, 3, axis=2) if pixels.shape[2] == 1 else pixels


__all__ = ["image_from_upload", "model_view_pixels", "tensor_key", "upload_notes", "upload_policy", "UPLOAD_TYPES"]
