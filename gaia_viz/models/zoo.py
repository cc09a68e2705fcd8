"""Model registry: build any supported model by name, with weights, in eval mode.

Names:
  * ``"demo"``: the bundled MNIST-sized demo CNN (:func:`gaia_viz.demo.load_demo_model`).
  * ``"cifar_resnet20|32|44|56|110"``: He et al. 2016 CIFAR ResNets (:mod:`.cifar_resnet`).
    Pretrained weights for depths 20 and 56 are the akamaster checkpoints in the shared data
    folder (``$GAIA_VIZ_DATA_ROOT/models/cifar10_resnet{20,56}.th``).
  * ``"gaia_resnet18|34"``: the GAIA paper's CIFAR ResNets (:mod:`.gaia_resnet`); no bundled
    weights, so pass a checkpoint (or ``pretrained=False`` for random weights).
  * any torchvision classification model (``"resnet50"``, ``"tv:vit_b_16"``), with its default
    ImageNet weights taken from the torch hub cache; downloading only with ``allow_download``.
"""

from __future__ import annotations

import difflib
import os
import re
import threading
from pathlib import Path
from unittest import mock
from urllib.parse import urlparse

import torch
import torchvision
from torch import nn

from ..errors import CheckpointError, ModelError
from ..settings import SHARED_DATA_ROOT, data_root
from .checkpoints import infer_num_classes, load_checkpoint_into, load_state_dict_file
from .cifar_resnet import CIFAR_RESNET_DEPTHS, cifar_resnet
from .gaia_resnet import GAIA_RESNET_STAGES, GaiaResNet

CIFAR_NAMES = tuple(f"cifar_resnet{d}" for d in CIFAR_RESNET_DEPTHS)
GAIA_NAMES = tuple(f"gaia_resnet{d}" for d in GAIA_RESNET_STAGES)
SHARED_CIFAR_CHECKPOINTS = {20: "cifar10_resnet20.th", 56: "cifar10_resnet56.th"}
TORCHVISION_PREFIX = "tv:"
_HUB_PATCH_LOCK = threading.Lock()  # the torchvision loader is patched process-wide while building


def shared_data_root() -> Path:
    """The data root (:func:`gaia_viz.settings.data_root`), or where the shared data folder
    would be beside the repository when none exists (so messages can name the path)."""
    return data_root() or SHARED_DATA_ROOT


def torchvision_model_names() -> list[str]:
    """Classification models of ``torchvision.models`` (detection, video, ... excluded)."""
    return sorted(torchvision.models.list_models(module=torchvision.models))


def list_models() -> list[str]:
    """Every name :func:`load_model` accepts (torchvision ones also with a ``tv:`` prefix)."""
    return ["demo", *CIFAR_NAMES, *GAIA_NAMES, *torchvision_model_names()]


def _torchvision_name(name: str) -> str | None:
    bare = name[len(TORCHVISION_PREFIX):] if name.startswith(TORCHVISION_PREFIX) else name
    return bare if bare in torchvision_model_names() else None


def _unknown_model(name: str) -> ModelError:
    close = difflib.get_close_matches(name, list_models(), n=3)
    hint = f" Did you mean {', '.join(close)}?" if close else ""
    return ModelError(f"unknown model {name!r}.{hint} See gaia_viz.models.list_models().")


def default_preset(name: str, num_classes: int | None = None) -> str:
    """Input preprocessing preset (a key of ``gaia_viz.data.presets.PRESETS``) a model expects.

    The shared CIFAR ResNet checkpoints were trained on 32x32 inputs with ImageNet mean/std,
    hence ``cifar-imagenet-norm``; GAIA's ResNets use CIFAR statistics (``gaia-cifar100`` when
    ``num_classes`` is 100); torchvision models expect ``imagenet224``.
    """
    if name == "demo":
        return "demo-mnist28"
    if name in CIFAR_NAMES:
        return "cifar-imagenet-norm"
    if name in GAIA_NAMES:
        return "gaia-cifar100" if num_classes == 100 else "gaia-cifar10"
    if _torchvision_name(name):
        return "imagenet224"
    raise _unknown_model(name)


def head_module(model: nn.Module) -> tuple[str, nn.Linear]:
    """The classifier head: the last ``nn.Linear`` in ``named_modules()`` order, with its name."""
    linears = [(n, m) for n, m in model.named_modules() if isinstance(m, nn.Linear)]
    if not linears:
        raise ModelError(
            f"{type(model).__name__} has no nn.Linear classifier head (e.g. its head is a "
            "convolution); GAIA-A and feature-based detectors need a linear head."
        )
    return linears[-1]


def hub_checkpoint_path(url: str) -> Path:
    """Where ``torch.hub`` caches the file behind ``url``: ``<hub dir>/checkpoints/<file name>``."""
    return Path(torch.hub.get_dir()) / "checkpoints" / os.path.basename(urlparse(url).path)


def _fetch_torchvision_weights(name: str, weights, allow_download: bool) -> Path:
    path = hub_checkpoint_path(weights.url)
    if path.is_file():
        return path
    if not allow_download:
        raise ModelError(
            f"pretrained weights for {name} are not cached: looked for {path}. Download them "
            f"(allow downloads, or fetch {weights.url} to that path), or use pretrained=False."
        )
    path.parent.mkdir(parents=True, exist_ok=True)
    hash_prefix = re.search(r"-([a-f0-9]*)\.", path.name)
    try:
        torch.hub.download_url_to_file(
            weights.url, str(path), hash_prefix.group(1) if hash_prefix else None, progress=False
        )
    except Exception as exc:
        raise ModelError(f"could not download {weights.url} to {path}: {exc}") from exc
    return path


def _build_torchvision(
    name: str, num_classes: int | None, pretrained: bool, allow_download: bool
) -> nn.Module:
    if not pretrained:
        kwargs = {} if num_classes is None else {"num_classes": num_classes}
        return torchvision.models.get_model(name, weights=None, **kwargs)
    weights = torchvision.models.get_model_weights(name).DEFAULT
    categories = len(weights.meta["categories"])
    if num_classes not in (None, categories):
        raise ModelError(
            f"pretrained {name} weights have {categories} classes, not {num_classes}; "
            "pass a checkpoint for your head or pretrained=False."
        )
    path = _fetch_torchvision_weights(name, weights, allow_download)

    def read_cached(url, *args, **kwargs):  # replaces torch.hub.load_state_dict_from_url
        return load_state_dict_file(hub_checkpoint_path(url))

    # Building through torchvision keeps its per-model fix-ups (DenseNet key renames, Inception's
    # aux head, ...); only the file reading is swapped for the weights_only loader above.
    with _HUB_PATCH_LOCK, mock.patch.object(
        torchvision.models._api, "load_state_dict_from_url", read_cached
    ):
        try:
            return torchvision.models.get_model(name, weights=weights)
        except CheckpointError as exc:
            raise ModelError(f"cached weights {path} are unusable ({exc}); delete the file") from exc


def _shared_cifar_checkpoint(depth: int) -> Path:
    filename = SHARED_CIFAR_CHECKPOINTS.get(depth)
    if filename is None:
        raise ModelError(
            f"no pretrained weights are known for cifar_resnet{depth} (only depths "
            f"{sorted(SHARED_CIFAR_CHECKPOINTS)}); pass a checkpoint or pretrained=False."
        )
    path = shared_data_root() / "models" / filename
    if not path.is_file():
        raise ModelError(
            f"pretrained cifar_resnet{depth} weights not found: looked for {path}. "
            "Set GAIA_VIZ_DATA_ROOT, pass a checkpoint, or use pretrained=False."
        )
    return path


def load_model(
    name: str,
    checkpoint: str | Path | bytes | None = None,
    num_classes: int | None = None,
    pretrained: bool = True,
    device: str | torch.device = "cpu",
    allow_download: bool = False,
) -> nn.Module:
    """Build model ``name`` (see the module docstring), load weights, return it in eval mode.

    Weights come from ``checkpoint`` when given (``pretrained`` is then ignored; ``num_classes``
    defaults to the checkpoint's head size), else from the model's known pretrained weights
    when ``pretrained``, else random initialisation. Nothing is downloaded unless
    ``allow_download``. Raises :class:`ModelError` / :class:`CheckpointError`.
    """
    name = name.strip()
    if name == "demo":
        if checkpoint is not None or num_classes not in (None, 10):
            raise ModelError("the demo model has fixed weights; it takes no checkpoint or num_classes")
        from ..demo import load_demo_model

        return load_demo_model().to(device).eval()

    state_dict = load_state_dict_file(checkpoint) if checkpoint is not None else None
    if state_dict is not None and num_classes is None:
        num_classes = infer_num_classes(state_dict)

    if name in CIFAR_NAMES or name in GAIA_NAMES:
        depth = int(name.rsplit("resnet", 1)[1])
        classes = num_classes or 10
        model = cifar_resnet(depth, classes) if name in CIFAR_NAMES else GaiaResNet(depth, classes)
        if state_dict is None and pretrained:
            if name in GAIA_NAMES:
                raise ModelError(
                    f"{name} has no bundled weights: pass the checkpoint you trained, "
                    "or pretrained=False for random weights."
                )
            state_dict = load_state_dict_file(_shared_cifar_checkpoint(depth))
    elif (tv_name := _torchvision_name(name)) is not None:
        use_hub_weights = pretrained and state_dict is None
        model = _build_torchvision(tv_name, num_classes, use_hub_weights, allow_download)
    else:
        raise _unknown_model(name)

    if state_dict is not None:
        load_checkpoint_into(model, state_dict)
    return model.to(device).eval()
