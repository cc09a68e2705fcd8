"""torchvision classifiers by name (``"resnet50"``, ``"tv:vit_b_16"``), weights offline.

Pretrained weights are torchvision's DEFAULT ones, read from the torch hub cache with
gaia-viz's safe loader (the model is built with ``weights=None`` and torchvision's per-model
fix-ups for its weights are re-applied here); nothing is downloaded unless ``allow_download``.
The family registers itself in the catalogue as ``tv:<name>`` (the prefix is optional).
"""

from __future__ import annotations

import re
from collections.abc import Mapping

import torch
import torchvision
from torch import nn

from ..errors import CheckpointError, ModelError
from .catalogue import ModelInfo, register_family
from .checkpoints import infer_num_classes, load_checkpoint_into, load_state_dict_file
from .hub import torch_hub_weights

TORCHVISION_PREFIX = "tv:"
# DenseNet's published weights name layers "norm.1", as its modules were once named
DENSENET_OLD_KEY = re.compile(
    r"^(.*denselayer\d+\.(?:norm|relu|conv))\.((?:[12])\.(?:weight|bias|running_mean|running_var))$")


def torchvision_model_names() -> list[str]:
    """Classification models of ``torchvision.models`` (detection, video, ... excluded)."""
    return sorted(torchvision.models.list_models(module=torchvision.models))


def torchvision_name(name: str) -> str | None:
    """torchvision's name of ``name`` (``tv:`` dropped); None when it names no classifier."""
    bare = name[len(TORCHVISION_PREFIX):] if name.startswith(TORCHVISION_PREFIX) else name
    return bare if bare in torchvision_model_names() else None


def _torchvision_build_arguments(name: str, weights) -> dict:
    """The builder arguments torchvision's own loading of ``weights`` sets for ``name`` (its
    per-model fix-ups), so that ``get_model(name, weights=None, **these)`` is the architecture
    the weights were made for."""
    arguments = {"num_classes": len(weights.meta["categories"])}
    if name.startswith("vit_"):
        arguments["image_size"] = weights.meta["min_size"][0]
    elif name.startswith("maxvit_"):
        arguments["input_size"] = weights.meta["min_size"]
    elif name in ("inception_v3", "googlenet"):
        # the weights expect ImageNet-normalised input re-scaled inside the model, and include
        # the auxiliary heads, which torchvision drops from GoogLeNet after loading
        arguments.update(transform_input=True, aux_logits=True, init_weights=False)
    elif name.startswith("vgg"):
        arguments["init_weights"] = False
    return arguments


def _torchvision_state_dict(name: str, state_dict: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The published file's tensors under the model's current key names (DenseNet's old ones)."""
    if not name.startswith("densenet"):
        return dict(state_dict)
    renamed = {}
    for key, tensor in state_dict.items():
        old = DENSENET_OLD_KEY.match(key)
        renamed[old.group(1) + old.group(2) if old else key] = tensor
    return renamed


def _after_torchvision_loading(name: str, model: nn.Module) -> nn.Module:
    if name == "googlenet":  # as torchvision: its pretrained GoogLeNet has no auxiliary heads
        model.aux_logits = False
        model.aux1 = None
        model.aux2 = None
    return model


def build_torchvision(name: str, num_classes: int | None, pretrained: bool, allow_download: bool) -> nn.Module:
    """torchvision's ``name``: random init, or its DEFAULT weights read from the torch hub cache
    with the safe loader (built with ``weights=None``; torchvision's per-model fix-ups for
    its weights are re-applied here)."""
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
    path = torch_hub_weights(name, weights.url, allow_download)
    model = torchvision.models.get_model(name, weights=None, **_torchvision_build_arguments(name, weights))
    try:
        state_dict = _torchvision_state_dict(name, load_state_dict_file(path))
        load_checkpoint_into(model, state_dict)
    except CheckpointError as exc:
        raise ModelError(f"cached weights {path} are unusable ({exc}); delete the file") from exc
    return _after_torchvision_loading(name, model)


@register_family("torchvision", "torchvision classifier", [ModelInfo(
    f"{TORCHVISION_PREFIX}<name>", "torchvision", "torchvision classifier",
    "any torchvision classification model (`resnet50`, `tv:vit_b_16`; `tv:` optional)",
    "imagenet224", None, "hub")], resolve=torchvision_name, expand=torchvision_model_names, suggest=True)
def _load_torchvision(info: ModelInfo, request):
    state_dict = request.state_dict()
    num_classes = request.checkpoint_classes(state_dict, infer_num_classes)
    model = build_torchvision(info.arch, num_classes, request.pretrained and state_dict is None,
                              request.allow_download)
    return model, state_dict


__all__ = ["TORCHVISION_PREFIX", "build_torchvision", "torchvision_model_names", "torchvision_name"]
