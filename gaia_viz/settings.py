"""Settings that every entry point shares: environment names, the data root, the run cache,
the device choice and the default methods. One home, so the CLI, the report, the app and the library agree.

Environment variables:

* ``GAIA_VIZ_DATA_ROOT``: folder of real data (``cifar10/test``, ``textures/images``,
  ``models/*.th``, torchvision datasets). Default: ``../shared/data`` beside the repository
  when that folder exists.
* ``GAIA_VIZ_CACHE_DIR``: the run cache (scored chunks). Default ``~/.cache/gaia-viz``.
* ``GAIA_VIZ_ALLOWED_ROOTS``: ``os.pathsep``-separated folders a served app may read, besides
  the data root; ``GAIA_VIZ_ALLOW_HIDDEN=1`` lets it read hidden files and folders there too
  (see :mod:`gaia_viz.paths`).
* ``GAIA_VIZ_MAX_CHECKPOINT_MB`` (default 2048): the largest checkpoint read, on disk and,
  for a zip archive (``.npz``, PyTorch's zip), unpacked.
* ``GAIA_VIZ_MAX_IMAGE_MB`` (default 256): the largest image file read from a server path.
"""

from __future__ import annotations

import os
from pathlib import Path

from gaia_viz.errors import GaiaVizError

DATA_ROOT_ENV = "GAIA_VIZ_DATA_ROOT"
CACHE_ENV = "GAIA_VIZ_CACHE_DIR"
ALLOWED_ROOTS_ENV = "GAIA_VIZ_ALLOWED_ROOTS"
ALLOWED_HIDDEN_ENV = "GAIA_VIZ_ALLOW_HIDDEN"
REPO_ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA_ROOT = REPO_ROOT.parent / "shared" / "data"
DEVICE_CHOICES = ("auto", "cpu", "cuda")
MAX_CHECKPOINT_ENV = "GAIA_VIZ_MAX_CHECKPOINT_MB"
MAX_IMAGE_ENV = "GAIA_VIZ_MAX_IMAGE_MB"
DEFAULT_MAX_CHECKPOINT_MB = 2048  # ViT-L/16 (1.2 GB) and ConvNeXt-XL (1.4 GB) fit
DEFAULT_MAX_IMAGE_MB = 256  # a 40 MP 16-bit RGB TIFF (240 MB) fits
# the methods an evaluation scores when none are chosen (the CLI, the app, the library, the report)
DEFAULT_METHODS = ("gaia_z", "gaia_a", "msp", "energy")


def _megabytes(env: str, default: int) -> int:
    """``$env`` (megabytes, a positive number) in bytes; ``default`` when unset; GaiaVizError
    when it is not a positive number."""
    text = os.environ.get(env, "").strip()
    if not text:
        return default * 1_000_000
    try:
        value = float(text)
    except ValueError:
        value = float("nan")
    if not value > 0 or value == float("inf"):
        raise GaiaVizError(f"{env}={text[:40]!r} is not a positive number of megabytes")
    return int(value * 1_000_000)


def max_checkpoint_bytes() -> int:
    """The largest checkpoint read (file size, and unpacked size of an archive):
    ``$GAIA_VIZ_MAX_CHECKPOINT_MB`` megabytes, default :data:`DEFAULT_MAX_CHECKPOINT_MB`."""
    return _megabytes(MAX_CHECKPOINT_ENV, DEFAULT_MAX_CHECKPOINT_MB)


def max_image_bytes() -> int:
    """The largest image file read from a server path: ``$GAIA_VIZ_MAX_IMAGE_MB`` megabytes,
    default :data:`DEFAULT_MAX_IMAGE_MB`."""
    return _megabytes(MAX_IMAGE_ENV, DEFAULT_MAX_IMAGE_MB)


def data_root() -> Path | None:
    """``$GAIA_VIZ_DATA_ROOT`` (``~`` expanded), else ``../shared/data`` beside the repository
    when it is a folder, else None."""
    env = os.environ.get(DATA_ROOT_ENV, "").strip()
    if env:
        return Path(env).expanduser()
    return SHARED_DATA_ROOT if SHARED_DATA_ROOT.is_dir() else None


def cache_dir() -> Path:
    """``$GAIA_VIZ_CACHE_DIR`` or ``~/.cache/gaia-viz``."""
    env = os.environ.get(CACHE_ENV, "").strip()
    return Path(env).expanduser() if env else Path.home() / ".cache" / "gaia-viz"


def resolve_device(choice: str | None = "auto") -> str:
    """``"auto"``/None -> ``"cuda"`` when a GPU is present, else ``"cpu"``; ``"cpu"``,
    ``"cuda"`` and ``"cuda:N"`` as given. A GaiaVizError for an unknown name or for CUDA
    without a GPU."""
    import torch

    choice = "auto" if choice is None else str(choice).strip().lower()
    if choice == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if choice != "cpu" and choice != "cuda" and not (choice.startswith("cuda:") and choice[5:].isdigit()):
        raise GaiaVizError(f"unknown device {choice!r}: use auto, cpu, cuda or cuda:N")
    if choice.startswith("cuda") and not torch.cuda.is_available():
        raise GaiaVizError(f"device {choice} was asked for but no CUDA GPU is available; use auto or cpu")
    return choice


def default_workers(device: str | None = None) -> int:
    """Loader worker processes by default: never a worker that makes the run slower than
    decoding in the scoring process (``workers=0``).

    - 2 cores or fewer: 0. Measured (benchmarks/README.md, DTD at 224 px through ResNet-18 on
      2 cores): 19.5 images/s with 0 workers, 13.9 with 1 and 16.6 with 2, because scoring, not
      decoding, sets the time there and a worker only takes a core from it.
    - Scoring on the CPU: the cores torch's scoring threads leave free (``cores -
      torch.get_num_threads()``), at most 4; 0 when they use every core.
    - Scoring on a GPU: one per core beyond the main process, at most 4 (the GPU scores faster
      than one core decodes 224 px JPEGs, and workers keep it fed).

    ``device``: where the scoring runs (``"cpu"``, ``"cuda"``, ``"cuda:N"``); None = a GPU
    when one is present (as ``resolve_device("auto")``).
    """
    import torch

    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    if cores <= 2:
        return 0
    on_gpu = torch.cuda.is_available() if device is None else str(device).startswith("cuda")
    if on_gpu:
        return max(0, min(4, cores - 1))
    return max(0, min(4, cores - torch.get_num_threads()))


__all__ = ["ALLOWED_HIDDEN_ENV", "ALLOWED_ROOTS_ENV", "CACHE_ENV", "DATA_ROOT_ENV", "DEFAULT_MAX_CHECKPOINT_MB",
           "DEFAULT_MAX_IMAGE_MB", "DEFAULT_METHODS", "DEVICE_CHOICES", "MAX_CHECKPOINT_ENV", "MAX_IMAGE_ENV", "SHARED_DATA_ROOT",
           "REPO_ROOT", "cache_dir", "data_root", "default_workers", "max_checkpoint_bytes", "max_image_bytes",
           "resolve_device"]
