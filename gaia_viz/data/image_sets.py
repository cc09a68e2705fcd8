"""Image sets: one Dataset type for folders, file lists, torchvision datasets and in-memory arrays.

Every set is an :class:`ImageSet`: ``set[i] -> (Tensor[C,H,W], label)`` with the preset's
transform applied, label -1 when unknown. It records the preset and OOD policy that made its
tensors (``.preset_name``, ``.ood_policy``) so results can say which were used, and the
files it left out as unreadable (``.skipped``: ``[(path, reason), ...]``).
"""

from __future__ import annotations

import copy
from typing import Sequence

import numpy as np
import torch
from PIL import Image
from torch.utils.data import Dataset

from gaia_viz.data.images import DEFAULT_MAX_PIXELS, load_image
from gaia_viz.data.presets import Preset, check_ood_policy, get_preset, make_transform
from gaia_viz.errors import DataError

SUBSET_SEED = 0


class ImageSet(Dataset):
    """A labelled collection of images seen through one preset and OOD policy.

    Subclasses provide :meth:`raw_image` (RGB PIL, un-normalised) and may override :meth:`path`.
    """

    def __init__(self, name: str, labels: Sequence[int], preset: Preset | str,
                 ood_policy: str = "resize", class_names: list[str] | None = None,
                 skipped: list[tuple[str, str]] | None = None, source: str = ""):
        self.name = name
        self.labels = np.asarray(labels, dtype=np.int64)
        self.preset = get_preset(preset)
        self.ood_policy = check_ood_policy(ood_policy)
        self.class_names = class_names
        self.skipped = list(skipped or [])
        self.source = source
        self.transform = make_transform(self.preset, self.ood_policy)

    @property
    def preset_name(self) -> str:
        return self.preset.name

    def __len__(self) -> int:
        return len(self.labels)

    def _check_index(self, i: int) -> int:
        n = len(self)
        if not -n <= i < n:
            raise IndexError(f"{self.name}: index {i} out of range for {n} images")
        return i % n

    def raw_image(self, i: int) -> Image.Image:
        raise NotImplementedError

    def path(self, i: int) -> str | None:
        """The file behind item ``i``, or None for in-memory sets."""
        return None

    def label(self, i: int) -> int:
        return int(self.labels[self._check_index(i)])

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        i = self._check_index(int(i))
        return self.transform(self.raw_image(i)), int(self.labels[i])

    def describe(self) -> dict:
        """What a result needs to record about its data."""
        return {"name": self.name, "source": self.source, "n": len(self),
                "preset": self.preset_name, "ood_policy": self.ood_policy,
                "skipped": len(self.skipped)}

    def __repr__(self) -> str:
        return (f"{type(self).__name__}(name={self.name!r}, n={len(self)}, "
                f"preset={self.preset_name!r}, ood_policy={self.ood_policy!r})")


class ArrayImageSet(ImageSet):
    """Images held in memory as uint8 arrays ``[N,H,W]`` (grayscale) or ``[N,H,W,3]`` (RGB)."""

    def __init__(self, name: str, images: np.ndarray, labels: Sequence[int] | None = None,
                 preset: Preset | str = "demo-mnist28", ood_policy: str = "resize", **kwargs):
        images = np.asarray(images)
        if images.dtype != np.uint8 or images.ndim not in (3, 4):
            raise DataError(f"{name}: expected uint8 images [N,H,W] or [N,H,W,3], got "
                            f"{images.dtype} {images.shape}")
        if labels is None:
            labels = np.full(len(images), -1)
        if len(labels) != len(images):
            raise DataError(f"{name}: {len(images)} images but {len(labels)} labels")
        self.images = images
        super().__init__(name, labels, preset, ood_policy, **kwargs)

    def raw_image(self, i: int) -> Image.Image:
        arr = self.images[self._check_index(i)]
        return Image.fromarray(arr, mode="L" if arr.ndim == 2 else "RGB").convert("RGB")


class FileImageSet(ImageSet):
    """Images read from files on demand with :func:`~gaia_viz.data.images.load_image`."""

    def __init__(self, name: str, paths: Sequence[str], labels: Sequence[int] | None = None,
                 preset: Preset | str = "demo-mnist28", ood_policy: str = "resize",
                 max_pixels: int = DEFAULT_MAX_PIXELS, **kwargs):
        self.paths = [str(p) for p in paths]
        self.max_pixels = max_pixels
        super().__init__(name, labels if labels is not None else [-1] * len(self.paths),
                         preset, ood_policy, **kwargs)

    def raw_image(self, i: int) -> Image.Image:
        return load_image(self.paths[self._check_index(i)], max_pixels=self.max_pixels)

    def path(self, i: int) -> str | None:
        return self.paths[self._check_index(i)]


class TorchvisionImageSet(ImageSet):
    """A torchvision dataset that yields ``(PIL image, label)`` when it has no transform."""

    def __init__(self, name: str, dataset, labels: Sequence[int], preset: Preset | str,
                 ood_policy: str = "resize", **kwargs):
        self.dataset = dataset
        super().__init__(name, labels, preset, ood_policy, **kwargs)

    def raw_image(self, i: int) -> Image.Image:
        img, _ = self.dataset[self._check_index(i)]
        return img.convert("RGB")


class SubsetImageSet(ImageSet):
    """Items ``indices`` of ``base`` (same preset, policy and class names)."""

    def __init__(self, base: ImageSet, indices: Sequence[int], name: str | None = None):
        self.base = base
        self.indices = np.asarray(indices, dtype=np.int64)
        if self.indices.size and (self.indices.min() < 0 or self.indices.max() >= len(base)):
            raise DataError(f"subset indices out of range for {base.name} ({len(base)} images)")
        super().__init__(name or base.name, base.labels[self.indices], base.preset,
                         base.ood_policy, class_names=base.class_names,
                         skipped=base.skipped, source=base.source)

    def raw_image(self, i: int) -> Image.Image:
        return self.base.raw_image(int(self.indices[self._check_index(i)]))

    def path(self, i: int) -> str | None:
        return self.base.path(int(self.indices[self._check_index(i)]))


def subset(images: ImageSet, indices: Sequence[int], name: str | None = None) -> ImageSet:
    """The items ``indices`` of ``images`` as an ImageSet."""
    return SubsetImageSet(images, indices, name)


def limit(images: ImageSet, max_samples: int | None, seed: int = SUBSET_SEED) -> ImageSet:
    """At most ``max_samples`` items, chosen uniformly at random with ``seed`` and kept in order.

    Deterministic; random rather than the first N so a class-sorted folder keeps all classes.
    """
    if max_samples is None or max_samples >= len(images):
        return images
    if max_samples <= 0:
        raise DataError(f"max_samples must be positive, got {max_samples}")
    rng = np.random.default_rng(seed)
    return subset(images, np.sort(rng.choice(len(images), size=max_samples, replace=False)))


def with_preset(images: ImageSet, preset: Preset | str, ood_policy: str | None = None) -> ImageSet:
    """A shallow copy of ``images`` seen through another preset and/or OOD policy."""
    clone = copy.copy(images)
    clone.preset = get_preset(preset)
    clone.ood_policy = check_ood_policy(ood_policy or images.ood_policy)
    clone.transform = make_transform(clone.preset, clone.ood_policy)
    return clone


__all__ = ["ArrayImageSet", "FileImageSet", "ImageSet", "SUBSET_SEED", "SubsetImageSet",
           "TorchvisionImageSet", "limit", "subset", "with_preset"]
