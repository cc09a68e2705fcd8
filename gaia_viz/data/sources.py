"""Image sources: folders, file lists, torchvision datasets and the demo sets, as one Dataset type.

Every source is an :class:`ImageSet`: ``set[i] -> (Tensor[C,H,W], label)`` with the preset's
transform applied, label -1 when unknown. It records the preset and OOD policy that made its
tensors (``.preset_name``, ``.ood_policy``) so results can say which were used.

Spec strings for :func:`open_source`:

* ``"demo:<set>"``: ``demo:digits`` (held-out test split), ``demo:digits:train``, or a demo OOD
  set (``faces``, ``textures``, ``photos``, ``letters``, ``noise``); registered by
  :mod:`gaia_viz.demo` when it is imported (:func:`register_scheme`), as a package above
  this one may register its own scheme.
* ``"folder:<path>"`` or a bare existing directory: images found recursively by extension
  (:data:`~gaia_viz.data.images.IMAGE_EXTENSIONS`), sorted by relative path. If the root holds
  no images itself and at least two sub-folders hold images, it is an ``ImageFolder`` layout:
  labels are the indices of the sorted sub-folder names (as torchvision sorts them). Otherwise
  (flat folders, a single sub-folder such as ``LSUN/test``) every label is -1.
* ``"torchvision:<NAME>[:train|test]"``: CIFAR10, CIFAR100, SVHN, MNIST, FashionMNIST under
  ``data_root`` (default: ``$GAIA_VIZ_DATA_ROOT``), downloaded only when ``download=True``.
* ``"images:<p1>,<p2>,..."``: explicit image files (a bare existing file path works too).

Folder files with a non-image extension are ignored; image files whose header cannot be read
(empty, not an image, too many pixels) are skipped at open time and listed in ``.skipped`` as
``(path, reason)``; damage found only by decoding (truncation) raises ImageLoadError naming the
file when that item is read.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import torch

from gaia_viz.data.image_sets import (  # noqa: F401 (re-exported: the sets open_source returns)
    ArrayImageSet,
    FileImageSet,
    ImageSet,
    SubsetImageSet,
    TorchvisionImageSet,
    limit,
    subset,
    with_preset,
)
from gaia_viz.data.images import DEFAULT_MAX_PIXELS, is_image_path, probe_image
from gaia_viz.data.presets import DEMO_PRESET, Preset, check_ood_policy, get_preset
from gaia_viz.errors import DataError
from gaia_viz.paths import (
    DEFAULT_MAX_DIRS,
    DEFAULT_MAX_FILES,
    PathPolicy,
    check_allowed,
    check_text,
    echo,
    path_policy,
    walk_files,
)
from gaia_viz.settings import DATA_ROOT_ENV, data_root as default_data_root

MAX_LISTED_MISSING = 3


# --- folders -------------------------------------------------------------------------------

def list_image_files(root: str | os.PathLike, max_files: int = DEFAULT_MAX_FILES,
                     max_dirs: int = DEFAULT_MAX_DIRS) -> list[Path]:
    """Image files under ``root`` (recursive, by extension, hidden entries skipped), sorted by
    path below ``root``. The walk is :func:`gaia_viz.paths.walk_files`: each folder once (symlink
    loops end), at most ``max_files`` files and ``max_dirs`` folders, and, when paths are
    restricted, no link followed to a place that may not be read (a DataError)."""
    typed, root = root, Path(root).expanduser()  # messages name the folder as typed (``~`` kept)
    found = list(walk_files(typed, is_image_path, max_files=max_files, max_dirs=max_dirs))
    if os.sep != "/":
        return sorted(found, key=lambda p: p.relative_to(root).as_posix())
    # every path found starts with root + "/" (pathlib drops a leading "./")
    below = 0 if str(root) == "." else len(str(root).rstrip("/")) + 1
    return sorted(found, key=lambda p: str(p)[below:])


def _folder_labels(root: Path, files: list[Path]) -> tuple[list[int], list[str] | None]:
    tops = [p.relative_to(root).parts for p in files]
    if any(len(parts) == 1 for parts in tops):
        return [-1] * len(files), None
    classes = sorted({parts[0] for parts in tops})
    if len(classes) < 2:
        return [-1] * len(files), None
    index = {c: k for k, c in enumerate(classes)}
    return [index[parts[0]] for parts in tops], classes


def open_folder(path: str | os.PathLike, preset: Preset | str, ood_policy: str = "resize",
                name: str | None = None, validate: bool = True,
                max_pixels: int = DEFAULT_MAX_PIXELS, max_files: int = DEFAULT_MAX_FILES,
                max_dirs: int = DEFAULT_MAX_DIRS) -> FileImageSet:
    """An ImageSet of the images under ``path`` (labelling rules: module docstring).

    ``validate`` reads each header once (about 0.2 ms a file) to skip unusable files up front;
    ``max_files`` / ``max_dirs`` bound the walk (see :func:`list_image_files`).
    """
    root = Path(path).expanduser()
    files = list_image_files(path, max_files=max_files, max_dirs=max_dirs)
    skipped: list[tuple[str, str]] = []
    if validate:
        good = []
        for f in files:
            reason = probe_image(f, max_pixels)
            if reason is None:
                good.append(f)
            else:
                skipped.append((str(f), reason))
        files = good
    if not files:
        detail = f" ({len(skipped)} unreadable image files skipped)" if skipped else ""
        raise DataError(f"no images found in {echo(path)}{detail}; expected files ending in "
                        ".png, .jpg, .jpeg, .webp, .bmp, .tif, .tiff or .gif")
    labels, classes = _folder_labels(root, files)
    return FileImageSet(name or root.name, files, labels, preset, ood_policy,
                        max_pixels=max_pixels, class_names=classes, skipped=skipped,
                        source=f"folder:{root}")


def open_files(paths: Sequence[str | os.PathLike], preset: Preset | str, ood_policy: str = "resize",
               name: str | None = None, max_pixels: int = DEFAULT_MAX_PIXELS) -> FileImageSet:
    """An ImageSet of explicit image files; a missing file, or one that may not be read
    (:func:`gaia_viz.paths.check_allowed`), is a DataError."""
    typed = [os.fsdecode(os.fspath(p)).strip() for p in paths if str(p).strip()]
    if not typed:
        raise DataError("no image files given; use images:<file1>,<file2>")
    if len(typed) > DEFAULT_MAX_FILES:
        raise DataError(f"{len(typed):,} image files given, more than one data set may hold "
                        f"({DEFAULT_MAX_FILES:,}); use a folder of fewer files")
    policy = path_policy()
    missing = [p for p in typed if not check_allowed(p, "image file", policy).is_file()]
    if missing:
        shown = ", ".join(echo(p) for p in missing[:MAX_LISTED_MISSING])
        more = f" and {len(missing) - MAX_LISTED_MISSING:,} more" if len(missing) > MAX_LISTED_MISSING else ""
        raise DataError(f"image files not found: {shown}{more}")
    paths = [Path(p).expanduser() for p in typed]
    return FileImageSet(name or ("images" if len(paths) > 1 else paths[0].name), paths, None,
                        preset, ood_policy, max_pixels=max_pixels,
                        source="images:" + ",".join(map(str, paths)))


# --- torchvision ---------------------------------------------------------------------------

# name -> (folder or file torchvision expects under root for a split, class-name attribute)
TORCHVISION_DATASETS = {
    "CIFAR10": lambda split: "cifar-10-batches-py",
    "CIFAR100": lambda split: "cifar-100-python",
    "SVHN": lambda split: f"{split}_32x32.mat",
    "MNIST": lambda split: "MNIST/raw",
    "FashionMNIST": lambda split: "FashionMNIST/raw",
}


def open_torchvision(dataset_name: str, split: str, preset: Preset | str, ood_policy: str = "resize",
                     data_root: str | os.PathLike | None = None, download: bool = False,
                     name: str | None = None) -> TorchvisionImageSet:
    """A torchvision dataset under ``data_root``; DataError naming the expected folder if absent."""
    import torchvision.datasets as tvd

    canonical = {k.lower(): k for k in TORCHVISION_DATASETS}.get(dataset_name.lower())
    if canonical is None:
        raise DataError(f"unknown torchvision dataset {echo(dataset_name)!r}; "
                        f"supported: {', '.join(TORCHVISION_DATASETS)}")
    if split not in ("train", "test"):
        raise DataError(f"split must be 'train' or 'test', got {echo(split)!r}")
    root = Path(data_root).expanduser() if data_root is not None else default_data_root()
    if root is None:
        raise DataError(f"{canonical} needs a data root: pass data_root or set ${DATA_ROOT_ENV}")
    policy = path_policy()
    check_allowed(root, "data root", policy)
    expected = root / TORCHVISION_DATASETS[canonical](split)
    if not download and not check_allowed(expected, f"{canonical} ({split})", policy).exists():
        raise DataError(f"{canonical} ({split}) not found: expected {echo(expected)}. Put the dataset "
                        "there or pass download=True (needs internet)")
    try:
        if canonical == "SVHN":
            ds = tvd.SVHN(str(root), split=split, download=download)
            labels = ds.labels
        else:
            ds = getattr(tvd, canonical)(str(root), train=(split == "train"), download=download)
            labels = ds.targets
    except (RuntimeError, OSError, ValueError) as exc:
        raise DataError(f"cannot open {canonical} ({split}) under {echo(root)}: {echo(exc)}") from exc
    labels = np.asarray(labels.tolist() if isinstance(labels, torch.Tensor) else labels)
    return TorchvisionImageSet(name or f"{canonical.lower()}-{split}", ds, labels, preset,
                               ood_policy, class_names=list(getattr(ds, "classes", []) or []) or None,
                               source=f"torchvision:{canonical}:{split}")


# --- spec strings --------------------------------------------------------------------------

BUILT_IN_FORMS = ("folder:<path>", "torchvision:<NAME>[:train|test]", "images:<p1>,<p2>",
                  "an existing folder or image path")
# scheme -> (form, opener): the sources a package above this one registers when it is imported
# (gaia_viz.demo registers "demo:"), so the data layer never imports them
SCHEMES: dict[str, tuple[str, Callable[[str, Preset, str], ImageSet]]] = {}


def register_scheme(scheme: str, form: str, opener: Callable[[str, Preset, str], ImageSet]) -> None:
    """Let :func:`open_source` open ``"<scheme>:<rest>"`` with ``opener(rest, preset,
    ood_policy)``; ``form`` (``"demo:<set>"``) is listed where a spec is not understood."""
    SCHEMES[scheme] = (form, opener)


def spec_forms() -> tuple[str, ...]:
    """Every spec form :func:`open_source` understands: the registered schemes', then its own."""
    return (*(form for form, _ in SCHEMES.values()), *BUILT_IN_FORMS)


def open_source(spec: str, preset: Preset | str | None, ood_policy: str = "resize",
                data_root: str | os.PathLike | None = None, download: bool = False,
                name: str | None = None, max_samples: int | None = None,
                validate: bool = True, max_pixels: int = DEFAULT_MAX_PIXELS) -> ImageSet:
    """Open the image source described by ``spec`` (forms: module docstring) as an ImageSet.

    ``preset`` None means the demo preset. ``max_samples`` keeps a deterministic random subset
    (see :func:`limit`). ``validate=False`` skips the per-file header check of folders (faster
    for big trusted folders; bad files then fail when read). ``max_pixels``: image files with
    more pixels are refused (a decompression-bomb guard). Missing or empty sources raise
    DataError, and so are paths that may not be read (:func:`gaia_viz.paths.check_allowed`,
    checked before anything is read) and specs holding control characters.
    """
    check_text(str(spec), "data source")
    preset = get_preset(DEMO_PRESET if preset is None else preset)
    check_ood_policy(ood_policy)
    spec = str(spec).strip()
    kind, _, rest = spec.partition(":")
    if kind in SCHEMES:
        images = SCHEMES[kind][1](rest, preset, ood_policy)
    elif kind == "folder":
        images = open_folder(rest, preset, ood_policy, name=name, validate=validate, max_pixels=max_pixels)
    elif kind == "images":
        images = open_files(rest.split(","), preset, ood_policy, name=name, max_pixels=max_pixels)
    elif kind == "torchvision":
        dataset_name, _, split = rest.partition(":")
        images = open_torchvision(dataset_name, split or "test", preset, ood_policy,
                                  data_root=data_root, download=download, name=name)
    else:
        resolved = check_allowed(spec, "data source")
        if resolved.is_dir():
            images = open_folder(spec, preset, ood_policy, name=name, validate=validate, max_pixels=max_pixels)
        elif resolved.is_file():
            images = open_files([spec], preset, ood_policy, name=name, max_pixels=max_pixels)
        else:
            raise DataError(f"cannot open {echo(spec)!r}: not an existing path and not one of "
                            f"{', '.join(spec_forms())}" + ("" if "demo" in SCHEMES else
                                                            " (demo:<set> once gaia_viz.demo is imported)"))
    if name is not None:
        images.name = name
    return limit(images, max_samples)


# --- benchmark discovery -------------------------------------------------------------------

# key -> (relative path, spec kind, role, description)
BENCHMARK_LAYOUTS = (
    ("cifar10-test", "cifar10/test", "folder", "id", "CIFAR-10 test set, ImageFolder JPEGs"),
    ("cifar10-train-5k", "cifar10/train-5k", "folder", "id", "CIFAR-10 train subset, 500 a class"),
    ("textures", "textures/images", "folder", "ood", "Describable Textures (DTD)"),
    ("lsun_resize", "lsun_resize", "folder", "ood", "LSUN-Resize, ODIN's 32x32 JPEGs (shared data layout)"),
    ("tin_resize", "tin_resize", "folder", "ood", "TinyImageNet-Resize, ODIN's 32x32 JPEGs (shared data layout)"),
    ("LSUN", "LSUN", "folder", "ood", "LSUN crop (GAIA OOD layout)"),
    ("LSUN_resize", "LSUN_resize", "folder", "ood", "LSUN resized (GAIA OOD layout)"),
    ("iSUN", "iSUN", "folder", "ood", "iSUN (GAIA OOD layout)"),
    ("Places", "Places", "folder", "ood", "Places365 (GAIA OOD layout)"),
    ("SVHN", "SVHN", "folder", "ood", "SVHN images (GAIA OOD layout)"),
    ("Imagenet", "Imagenet", "folder", "ood", "TinyImageNet crop (GAIA OOD layout)"),
    ("Imagenet_resize", "Imagenet_resize", "folder", "ood", "TinyImageNet resized (GAIA OOD layout)"),
    ("cifar-10-batches-py", "cifar-10-batches-py", "torchvision:CIFAR10", "id",
     "CIFAR-10 python batches (torchvision)"),
    ("cifar-100-python", "cifar-100-python", "torchvision:CIFAR100", "id",
     "CIFAR-100 python batches (torchvision)"),
)


def _has_image(folder: Path, policy: PathPolicy) -> bool:
    """Whether the walk finds an image before anything it may not read."""
    try:
        return next(walk_files(folder, is_image_path, policy=policy), None) is not None
    except DataError:
        return False


def find_benchmark_sets(data_root: str | os.PathLike | None = None) -> dict[str, dict]:
    """The standard benchmark layouts present under ``data_root`` (default ``$GAIA_VIZ_DATA_ROOT``).

    Returns ``{key: {"path", "spec", "role" ("id"|"ood"), "description"}}`` for each layout in
    :data:`BENCHMARK_LAYOUTS` that exists (folders must hold at least one image; an ``SVHN``
    folder may instead hold torchvision's ``test_32x32.mat``). ``spec`` goes to
    :func:`open_source`; torchvision entries add the ``data_root`` to pass with it.

    A ``data_root`` that may not be read is a DataError (:func:`gaia_viz.paths.check_allowed`);
    a layout inside it that may not be read (a link to elsewhere) counts as absent.
    """
    root = Path(data_root).expanduser() if data_root is not None else default_data_root()
    if root is None:
        return {}
    policy = path_policy()
    if not check_allowed(root, "data root", policy).is_dir():
        return {}
    found = {}
    for key, rel, kind, role, description in BENCHMARK_LAYOUTS:
        path = root / rel
        try:
            if not check_allowed(path, "benchmark folder", policy).is_dir():
                continue
        except DataError:
            continue
        entry = {"path": str(path), "role": role, "description": description}
        if kind == "folder" and _has_image(path, policy):
            entry["spec"] = f"folder:{path}"
        elif kind == "folder" and key == "SVHN" and (path / "test_32x32.mat").is_file():
            entry.update(spec="torchvision:SVHN:test", data_root=str(path))
        elif kind != "folder":
            entry.update(spec=f"{kind}:test", data_root=str(root))
        else:
            continue
        found[key] = entry
    return found
