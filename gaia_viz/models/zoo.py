"""Model registry: build any supported model by name, with weights, in eval mode.

Names:
  * ``"demo"``: the bundled MNIST-sized demo CNN (:func:`gaia_viz.demo.load_demo_model`).
  * ``"cifar_resnet20|32|44|56|110"``: He et al. 2016 CIFAR ResNets (:mod:`.cifar_resnet`).
    Pretrained weights for depths 20 and 56 are the akamaster checkpoints in the shared data
    folder (``$GAIA_VIZ_DATA_ROOT/models/cifar10_resnet{20,56}.th``).
  * ``"cifar_densenet_bc100"``: ODIN's CIFAR-10 DenseNet-BC-100 (:mod:`.cifar_densenet`); its
    pretrained weights are in the shared data folder
    (``$GAIA_VIZ_DATA_ROOT/models/cifar10_densenet_bc100.safetensors``).
  * ``"gaia_resnet18|34"``: the GAIA paper's CIFAR ResNets (:mod:`.gaia_resnet`); no bundled
    weights, so pass a checkpoint (or ``pretrained=False`` for random weights).
  * ``"BiT-S-R50x1"`` ... ``"BiT-M-R152x4"``: Big Transfer's ResNet-v2, the GAIA paper's
    ImageNet models (:mod:`.bit`); no bundled weights, so pass a checkpoint (GradNorm's and
    GAIA's ``.pth.tar`` or Big Transfer's ``.npz``) or ``pretrained=False``.
  * any torchvision classification model (``"resnet50"``, ``"tv:vit_b_16"``), with its default
    ImageNet weights taken from the torch hub cache; downloading only with ``allow_download``.
  * any timm model (``"timm:resnet50"``, ``"timm:convnext_atto.d2_in1k"``), with its default
    pretrained weights from the local Hugging Face hub cache (:mod:`.timm_zoo`); downloading
    only with ``allow_download``.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Mapping
from pathlib import Path

import torch
import torchvision
from torch import nn

from ..errors import CheckpointError, ModelError
from ..paths import check_allowed
from ..settings import SHARED_DATA_ROOT, data_root
from .bit import BIT_NAMES, bit_model, bit_num_classes, bit_state_dict
from .checkpoints import infer_num_classes, load_checkpoint_into, load_state_dict_file
from .cifar_densenet import DENSENET_BC_DEPTHS, cifar_densenet_bc
from .cifar_resnet import CIFAR_RESNET_DEPTHS, cifar_resnet
from .gaia_resnet import GAIA_RESNET_STAGES, GaiaResNet
from .hub import torch_hub_weights
from .timm_zoo import build_timm, timm_model_names, timm_name, timm_num_classes

CIFAR_NAMES = tuple(f"cifar_resnet{d}" for d in CIFAR_RESNET_DEPTHS)
GAIA_NAMES = tuple(f"gaia_resnet{d}" for d in GAIA_RESNET_STAGES)
SHARED_CIFAR_CHECKPOINTS = {20: "cifar10_resnet20.th", 56: "cifar10_resnet56.th"}
DENSENET_NAMES = tuple(f"cifar_densenet_bc{d}" for d in DENSENET_BC_DEPTHS)
SHARED_DENSENET_CHECKPOINTS = {100: "cifar10_densenet_bc100.safetensors"}
TORCHVISION_PREFIX = "tv:"
# DenseNet's published weights name layers "norm.1", as its modules were once named
DENSENET_OLD_KEY = re.compile(
    r"^(.*denselayer\d+\.(?:norm|relu|conv))\.((?:[12])\.(?:weight|bias|running_mean|running_var))$")


def shared_data_root() -> Path:
    """The data root (:func:`gaia_viz.settings.data_root`), or where the shared data folder
    would be beside the repository when none exists (so messages can name the path)."""
    return data_root() or SHARED_DATA_ROOT


def torchvision_model_names() -> list[str]:
    """Classification models of ``torchvision.models`` (detection, video, ... excluded)."""
    return sorted(torchvision.models.list_models(module=torchvision.models))


def list_models(include_timm: bool = True) -> list[str]:
    """Every name :func:`load_model` accepts (torchvision ones also with a ``tv:`` prefix; timm
    architectures as ``timm:NAME``, a pretrained tag may be added: ``timm:resnet50.a1_in1k``)."""
    names = ["demo", *CIFAR_NAMES, *DENSENET_NAMES, *GAIA_NAMES, *BIT_NAMES, *torchvision_model_names()]
    return names + timm_model_names() if include_timm else names


def _torchvision_name(name: str) -> str | None:
    bare = name[len(TORCHVISION_PREFIX):] if name.startswith(TORCHVISION_PREFIX) else name
    return bare if bare in torchvision_model_names() else None


def _unknown_model(name: str) -> ModelError:
    close = difflib.get_close_matches(name, list_models(include_timm=False), n=3)
    hint = f" Did you mean {', '.join(close)}?" if close else ""
    return ModelError(f"unknown model {name!r}.{hint} See gaia_viz.models.list_models().")


def default_preset(name: str, num_classes: int | None = None) -> str:
    """Input preprocessing preset (a key of ``gaia_viz.data.presets.PRESETS``) a model expects.

    The shared CIFAR ResNet checkpoints were trained on 32x32 inputs with ImageNet mean/std,
    hence ``cifar-imagenet-norm``; ODIN's DenseNet-BC its own CIFAR statistics
    (``odin-cifar10``: mean (125.3, 123.0, 113.9) / 255, std (63.0, 62.1, 66.7) / 255); GAIA's ResNets use CIFAR statistics (``gaia-cifar100`` when
    ``num_classes`` is 100); BiT models ``bit480`` (the GAIA/GradNorm ImageNet setup: 480 x 480,
    mean/std 0.5); torchvision and timm models ``imagenet224`` (a timm model whose pretrained
    config normalises otherwise, ``timm.data.resolve_data_config``, needs ``--preset``).
    """
    if name == "demo":
        return "demo-mnist28"
    if name in CIFAR_NAMES:
        return "cifar-imagenet-norm"
    if name in DENSENET_NAMES:
        return "odin-cifar10"
    if name in GAIA_NAMES:
        return "gaia-cifar100" if num_classes == 100 else "gaia-cifar10"
    if name in BIT_NAMES:
        return "bit480"
    if _torchvision_name(name) or timm_name(name):
        return "imagenet224"
    raise _unknown_model(name)


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


def _build_torchvision(
    name: str, num_classes: int | None, pretrained: bool, allow_download: bool
) -> nn.Module:
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


def _shared_cifar_checkpoint(depth: int, family: str = "cifar_resnet",
                             known: Mapping[int, str] = SHARED_CIFAR_CHECKPOINTS) -> Path:
    filename = known.get(depth)
    if filename is None:
        raise ModelError(
            f"no pretrained weights are known for {family}{depth} (only depths "
            f"{sorted(known)}); pass a checkpoint or pretrained=False."
        )
    path = shared_data_root() / "models" / filename
    # a server path like any other: a models/ link out of the data root is refused unread
    if not check_allowed(path, "pretrained weights").is_file():
        raise ModelError(
            f"pretrained {family}{depth} weights not found: looked for {path}. "
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
    if num_classes is not None and (isinstance(num_classes, bool) or int(num_classes) != num_classes
                                    or num_classes < 1):
        raise ModelError(f"num_classes must be a whole number of at least 1, not {num_classes!r}")
    if name == "demo":
        if checkpoint is not None or num_classes not in (None, 10):
            raise ModelError("the demo model has fixed weights; it takes no checkpoint or num_classes")
        from ..demo import load_demo_model

        return load_demo_model().to(device).eval()

    state_dict = load_state_dict_file(checkpoint) if checkpoint is not None else None

    if name in CIFAR_NAMES or name in GAIA_NAMES:
        if state_dict is not None and num_classes is None:
            num_classes = infer_num_classes(state_dict)
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
    elif name in DENSENET_NAMES:
        if state_dict is not None and num_classes is None:
            num_classes = infer_num_classes(state_dict)
        depth = int(name.rsplit("bc", 1)[1])
        model = cifar_densenet_bc(depth, num_classes or 10)
        if state_dict is None and pretrained:
            state_dict = load_state_dict_file(
                _shared_cifar_checkpoint(depth, "cifar_densenet_bc", SHARED_DENSENET_CHECKPOINTS))
    elif name in BIT_NAMES:
        if state_dict is None and pretrained:
            raise ModelError(
                f"{name} has no bundled weights: pass a checkpoint (GradNorm's and GAIA's "
                f"{name}-flat-finetune.pth.tar, or Big Transfer's {name}.npz), or pretrained=False."
            )
        if state_dict is not None:
            state_dict = bit_state_dict(state_dict)
            num_classes = num_classes or bit_num_classes(state_dict)
        model = bit_model(name, num_classes or 1000)
    elif (bare_timm := timm_name(name)) is not None:
        if state_dict is not None and num_classes is None:
            num_classes = timm_num_classes(bare_timm, state_dict)
        model = build_timm(bare_timm, num_classes, pretrained and state_dict is None, allow_download)
    elif (tv_name := _torchvision_name(name)) is not None:
        if state_dict is not None and num_classes is None:
            num_classes = infer_num_classes(state_dict)
        use_hub_weights = pretrained and state_dict is None
        model = _build_torchvision(tv_name, num_classes, use_hub_weights, allow_download)
    else:
        raise _unknown_model(name)

    if state_dict is not None:
        load_checkpoint_into(model, state_dict)
    return model.to(device).eval()
