"""Input presets: image size, channels and normalisation a model was trained with.

A preset turns a PIL image into the tensor a model expects:

    x = (ToTensor(policy(convert(img))) - mean) / std        (per channel)

where ``convert`` makes the image grayscale (``L``) or ``RGB`` and ``policy`` is one of
:data:`OOD_POLICIES`, which decides how an image of any size reaches
``image_size x image_size``:

* ``"resize"`` (OpenOOD style): ``Resize((image_size, image_size))``, bilinear with
  antialiasing. Every image is squashed to the square, aspect ratio not kept, so
  the whole image is seen but pixel scale changes.
* ``"center-crop"`` (the GAIA paper's protocol for CIFAR): ``CenterCrop(image_size)`` with
  no resizing, so pixel scale is kept; an image smaller than ``image_size`` on a side is
  zero-padded (black before normalisation) on that side. For presets with ``resize_to``
  (the 224/480 ImageNet-style presets) it is the standard evaluation transform
  ``Resize(resize_to)`` (shorter side) then ``CenterCrop(image_size)``.

Results must record which preset and policy produced them: the two policies give
different OOD numbers on the same images.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch
from PIL import Image
from torchvision import transforms

from gaia_viz.errors import DataError

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
OOD_POLICIES = ("center-crop", "resize")
DEMO_PRESET = "demo-mnist28"  # the demo CNN's input; what a source opened without a preset uses


@dataclass(frozen=True)
class Preset:
    """How images are sized and normalised for one family of models.

    ``mean``/``std`` have one entry per channel (1 for grayscale, 3 for RGB);
    ``resize_to`` is the shorter-side size used before the centre crop, or None when the
    centre crop is applied to the image at its own scale.
    """

    name: str
    image_size: int
    mean: tuple[float, ...]
    std: tuple[float, ...]
    grayscale: bool = False
    resize_to: int | None = None
    description: str = ""

    @property
    def channels(self) -> int:
        """1 for grayscale presets, 3 for RGB."""
        return 1 if self.grayscale else 3

    @property
    def input_shape(self) -> tuple[int, int, int]:
        """(C, H, W) of the tensors :func:`make_transform` produces."""
        return (self.channels, self.image_size, self.image_size)


PRESETS: dict[str, Preset] = {
    p.name: p
    for p in (
        Preset("demo-mnist28", 28, (0.1307,), (0.3081,), grayscale=True,
               description="28x28 grayscale digits, MNIST mean/std (the demo CNN)"),
        Preset("gaia-cifar10", 32, (0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616),
               description="32x32 RGB, CIFAR-10 mean/std (the GAIA paper's CIFAR-10 models)"),
        Preset("gaia-cifar100", 32, (0.5071, 0.4865, 0.4409), (0.2673, 0.2564, 0.2762),
               description="32x32 RGB, CIFAR-100 mean/std (the GAIA paper's CIFAR-100 models)"),
        Preset("cifar-imagenet-norm", 32, IMAGENET_MEAN, IMAGENET_STD,
               description="32x32 RGB, ImageNet mean/std (akamaster CIFAR ResNets in shared/data)"),
        Preset("odin-cifar10", 32, (125.3 / 255, 123.0 / 255, 113.9 / 255), (63.0 / 255, 62.1 / 255, 66.7 / 255),
               description="32x32 RGB, ODIN's CIFAR-10 mean/std (125.3, 123.0, 113.9) / 255, "
                           "(63.0, 62.1, 66.7) / 255 (ODIN's DenseNet-BC-100 in shared/data)"),
        Preset("imagenet224", 224, IMAGENET_MEAN, IMAGENET_STD, resize_to=256,
               description="Resize 256 + CenterCrop 224, ImageNet mean/std (torchvision models)"),
        Preset("bit480", 480, (0.5, 0.5, 0.5), (0.5, 0.5, 0.5), resize_to=480,
               description="480x480 RGB, mean/std 0.5 (BiT models as in the GAIA ImageNet setup)"),
    )
}


def get_preset(preset: Preset | str) -> Preset:
    """The :class:`Preset` itself, or the one registered under that name in :data:`PRESETS`."""
    if isinstance(preset, Preset):
        return preset
    try:
        return PRESETS[preset]
    except (KeyError, TypeError):
        raise DataError(f"unknown preset {preset!r}; choose one of {sorted(PRESETS)}") from None


def check_ood_policy(ood_policy: str) -> str:
    """``ood_policy`` if it is one of :data:`OOD_POLICIES`, else DataError."""
    if ood_policy not in OOD_POLICIES:
        raise DataError(f"unknown OOD policy {ood_policy!r}; choose one of {list(OOD_POLICIES)}")
    return ood_policy


def _sizing(preset: Preset, ood_policy: str) -> list[Callable]:
    if ood_policy == "resize":
        return [transforms.Resize((preset.image_size, preset.image_size), antialias=True)]
    if preset.resize_to is not None:
        return [transforms.Resize(preset.resize_to, antialias=True),
                transforms.CenterCrop(preset.image_size)]
    return [transforms.CenterCrop(preset.image_size)]


class _ConvertMode:
    """PIL mode conversion as a picklable transform (DataLoader workers pickle it)."""

    def __init__(self, mode: str):
        self.mode = mode

    def __call__(self, img: Image.Image) -> Image.Image:
        return img if img.mode == self.mode else img.convert(self.mode)

    def __repr__(self) -> str:
        return f"ConvertMode({self.mode!r})"


def id_policy(preset: Preset | str) -> str:
    """The sizing used for ID (and fit) images: the preset's standard evaluation transform.

    ``"center-crop"`` for presets with ``resize_to`` (Resize + CenterCrop, as ImageNet models
    are evaluated), ``"resize"`` otherwise (CIFAR-size ID images are already the input size).
    """
    return "center-crop" if get_preset(preset).resize_to is not None else "resize"


def make_transform(preset: Preset | str, ood_policy: str = "resize") -> Callable[[Image.Image], torch.Tensor]:
    """PIL image -> normalised ``Tensor[C, H, W]`` for ``preset`` under ``ood_policy``.

    Steps: convert to ``L`` (grayscale presets) or ``RGB``; size with the policy (see the
    module docstring); ``ToTensor`` (uint8 / 255); ``Normalize``: (x - mean) / std per channel.
    """
    preset = get_preset(preset)
    check_ood_policy(ood_policy)
    return transforms.Compose([
        _ConvertMode("L" if preset.grayscale else "RGB"),
        *_sizing(preset, ood_policy),
        transforms.ToTensor(),
        transforms.Normalize(preset.mean, preset.std),
    ])


def denormalize(x: torch.Tensor, preset: Preset | str) -> torch.Tensor:
    """Undo the normalisation: x * std + mean per channel (``[C,H,W]`` or ``[B,C,H,W]``)."""
    preset = get_preset(preset)
    shape = (-1, 1, 1)
    mean = torch.tensor(preset.mean, dtype=x.dtype, device=x.device).view(shape)
    std = torch.tensor(preset.std, dtype=x.dtype, device=x.device).view(shape)
    return x * std + mean
