"""Big Transfer (BiT) ResNet-v2 (Kolesnikov et al., "Big Transfer (BiT): General Visual
Representation Learning", ECCV 2020): the GAIA paper's ImageNet models.

Module names are those of Big Transfer's PyTorch release, so its checkpoints and those of
GradNorm and GAIA (which fine-tune it) load as they are:

* ``root.conv`` (7x7 stride-2 weight-standardised conv, 64*w channels), ``root.pad``
  (``ConstantPad2d(1, 0)``), ``root.pool`` (``MaxPool2d(3, stride=2)``);
* ``body.block{1..4}.unit{01..}``: pre-activation bottlenecks with ``gn1, conv1, gn2, conv2,
  gn3, conv3`` and, where the shape changes, ``downsample``; block outputs 256/512/1024/2048
  * w channels, bottleneck width a quarter of that, stride 2 on ``conv2`` from block 2 on;
* ``before_head.{gn, relu, avg}``: the final pre-activation and global average pooling;
* ``head.conv``: the classifier, a 1x1 convolution with bias on the pooled ``(B, D, 1, 1)`` map.

Every convolution but the head is weight-standardised, ``w' = (w - mean) / sqrt(var + 1e-10)``
over its input channels and kernel (biased variance); every norm is ``GroupNorm(32, C)``. A unit
computes::

    out = relu(gn1(x)); residual = downsample(out) if present else x
    out = conv3(relu(gn3(conv2(relu(gn2(conv1(out))))))) + residual

Names are the release's, ``BiT-S-`` (ImageNet-1k) or ``BiT-M-`` (ImageNet-21k) + depth and width:
R50x1, R50x3, R101x1, R101x3, R152x2, R152x4 (:data:`BIT_NAMES`). Checkpoints: a PyTorch state
dict under these module names (GradNorm's ``{"model": {"module." + key: tensor}}`` included) or
Big Transfer's original ``.npz`` (TensorFlow names, HWIO kernels: :func:`bit_state_dict`).

GAIA's defaults for these models are the paper's (the model declares them,
:attr:`ResNetV2.gaia_defaults`): GAIA-Z hooks the GroupNorms of ``body.block4``; GAIA-A takes
the same GroupNorms as inner layers and ``before_head`` (the pooled vector fed to the head) as
its head layer.
"""

from __future__ import annotations

import re
from collections import OrderedDict
from collections.abc import Mapping

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from gaia_viz.errors import CheckpointError, ModelError
from gaia_viz.layer_defaults import GaiaLayerDefaults

from .catalogue import ModelInfo, register_family

BIT_UNITS = {"R50": (3, 4, 6, 3), "R101": (3, 4, 23, 3), "R152": (3, 8, 36, 3)}
BIT_WIDTHS = {"R50": (1, 3), "R101": (1, 3), "R152": (2, 4)}
BIT_NAMES = tuple(f"BiT-{upstream}-{depth}x{width}" for upstream in ("S", "M")
                  for depth, widths in BIT_WIDTHS.items() for width in widths)
BIT_GROUPS = 32
STANDARDISATION_EPS = 1e-10
_NAME_PATTERN = re.compile(r"BiT-([SM])-(R\d+)x(\d+)")


class StdConv2d(nn.Conv2d):
    """Conv2d with a weight standardised per output channel before every use."""

    def forward(self, x: Tensor) -> Tensor:
        var, mean = torch.var_mean(self.weight, dim=[1, 2, 3], keepdim=True, unbiased=False)
        weight = (self.weight - mean) / torch.sqrt(var + STANDARDISATION_EPS)
        return F.conv2d(x, weight, self.bias, self.stride, self.padding, self.dilation, self.groups)


class PreActBottleneck(nn.Module):
    """Pre-activation bottleneck unit (He et al. 2016, v2) with the stride on the 3x3 conv."""

    def __init__(self, cin: int, cout: int, cmid: int, stride: int = 1):
        super().__init__()
        self.gn1 = nn.GroupNorm(BIT_GROUPS, cin)
        self.conv1 = StdConv2d(cin, cmid, kernel_size=1, bias=False)
        self.gn2 = nn.GroupNorm(BIT_GROUPS, cmid)
        self.conv2 = StdConv2d(cmid, cmid, kernel_size=3, stride=stride, padding=1, bias=False)
        self.gn3 = nn.GroupNorm(BIT_GROUPS, cmid)
        self.conv3 = StdConv2d(cmid, cout, kernel_size=1, bias=False)
        self.downsample = (StdConv2d(cin, cout, kernel_size=1, stride=stride, bias=False)
                           if stride != 1 or cin != cout else None)

    def forward(self, x: Tensor) -> Tensor:
        out = F.relu(self.gn1(x))
        residual = self.downsample(out) if self.downsample is not None else x
        out = self.conv1(out)
        out = self.conv2(F.relu(self.gn2(out)))
        out = self.conv3(F.relu(self.gn3(out)))
        return out + residual


def _block(cin: int, cout: int, units: int, stride: int) -> nn.Sequential:
    cmid = cout // 4
    return nn.Sequential(OrderedDict(
        (f"unit{i:02d}", PreActBottleneck(cin if i == 1 else cout, cout, cmid, stride if i == 1 else 1))
        for i in range(1, units + 1)))


class ResNetV2(nn.Module):
    """BiT's ResNet-v2 with ``block_units`` units per block and width factor ``width``."""

    def __init__(self, block_units: tuple[int, int, int, int], width: int, num_classes: int = 1000):
        super().__init__()
        self.root = nn.Sequential(OrderedDict([
            ("conv", StdConv2d(3, 64 * width, kernel_size=7, stride=2, padding=3, bias=False)),
            ("pad", nn.ConstantPad2d(1, 0)),
            ("pool", nn.MaxPool2d(kernel_size=3, stride=2, padding=0)),
        ]))
        widths = [64 * width] + [c * width for c in (256, 512, 1024, 2048)]
        self.body = nn.Sequential(OrderedDict(
            (f"block{b + 1}", _block(widths[b], widths[b + 1], units, 1 if b == 0 else 2))
            for b, units in enumerate(block_units)))
        self.before_head = nn.Sequential(OrderedDict([
            ("gn", nn.GroupNorm(BIT_GROUPS, widths[-1])),
            ("relu", nn.ReLU()),
            ("avg", nn.AdaptiveAvgPool2d(output_size=1)),
        ]))
        self.head = nn.Sequential(OrderedDict([
            ("conv", nn.Conv2d(widths[-1], num_classes, kernel_size=1, bias=True)),
        ]))

    def forward(self, x: Tensor) -> Tensor:
        x = self.head(self.before_head(self.body(self.root(x))))
        return x[..., 0, 0]

    @property
    def gaia_defaults(self) -> GaiaLayerDefaults:
        """The GAIA paper's layers for BiT (:func:`bit_gaia_defaults`)."""
        return bit_gaia_defaults(len(self.body.block4))


def bit_gaia_defaults(block4_units: int) -> GaiaLayerDefaults:
    """The GAIA paper's layers for a BiT whose ``body.block4`` has ``block4_units`` units: its
    GroupNorms (GAIA-Z, and GAIA-A's inner layers; ``gn1..gn3`` of each unit, in module order)
    and ``before_head`` (GAIA-A's head layer)."""
    norms = tuple(f"body.block4.unit{unit:02d}.gn{index}" for unit in range(1, block4_units + 1)
                  for index in (1, 2, 3))
    return GaiaLayerDefaults(zero_layers=norms, inner_layers=norms, head_layer="before_head")


def bit_model(name: str, num_classes: int = 1000) -> ResNetV2:
    """The architecture of release ``name`` (one of :data:`BIT_NAMES`), randomly initialised."""
    match = _NAME_PATTERN.fullmatch(name)
    if match is None or name not in BIT_NAMES:
        raise ModelError(f"unknown BiT model {name!r}; choose one of {', '.join(BIT_NAMES)}")
    depth, width = match.group(2), int(match.group(3))
    return ResNetV2(BIT_UNITS[depth], width, num_classes)


# --------------------------------------------------------------------------- checkpoints

_NPZ_PREFIX = "resnet/"
_NPZ_CONV = "standardized_conv2d/kernel"
_NPZ_UNIT = re.compile(r"resnet/(block\d)/(unit\d+)/(a|b|c)/(proj/)?(group_norm/gamma|group_norm/beta|"
                       r"standardized_conv2d/kernel)")
_NPZ_TOP = {
    f"resnet/root_block/{_NPZ_CONV}": "root.conv.weight",
    "resnet/group_norm/gamma": "before_head.gn.weight",
    "resnet/group_norm/beta": "before_head.gn.bias",
    "resnet/head/conv2d/kernel": "head.conv.weight",
    "resnet/head/conv2d/bias": "head.conv.bias",
}
_UNIT_PART = {"a": ("gn1", "conv1"), "b": ("gn2", "conv2"), "c": ("gn3", "conv3")}


def is_big_transfer_npz(state_dict: Mapping[str, Tensor]) -> bool:
    """True when the keys are Big Transfer's TensorFlow names (``resnet/...``)."""
    return bool(state_dict) and all(k.startswith(_NPZ_PREFIX) for k in state_dict)


def _module_key(npz_key: str) -> str | None:
    if npz_key in _NPZ_TOP:
        return _NPZ_TOP[npz_key]
    match = _NPZ_UNIT.fullmatch(npz_key)
    if match is None:
        return None
    block, unit, part, proj, leaf = match.groups()
    norm, conv = _UNIT_PART[part]
    if proj:
        return f"body.{block}.{unit}.downsample.weight" if part == "a" and leaf == _NPZ_CONV else None
    if leaf == _NPZ_CONV:
        return f"body.{block}.{unit}.{conv}.weight"
    return f"body.{block}.{unit}.{norm}.{'weight' if leaf.endswith('gamma') else 'bias'}"


def _from_tensorflow(key: str, array: Tensor) -> Tensor:
    if key.endswith("kernel"):
        if array.ndim != 4:
            raise CheckpointError(f"BiT .npz entry {key} has shape {tuple(array.shape)}; a kernel is 4-D (HWIO)")
        return array.permute(3, 2, 0, 1).contiguous()  # HWIO -> OIHW
    return array.reshape(-1)


def bit_state_dict(state_dict: Mapping[str, Tensor]) -> dict[str, Tensor]:
    """A BiT checkpoint under the PyTorch release's module names.

    Big Transfer's ``.npz`` names (``resnet/block1/unit01/a/group_norm/gamma``, ...) are
    renamed, kernels transposed from HWIO to OIHW; any other mapping (a PyTorch state dict,
    ``module.`` prefixes included) is returned as it is. CheckpointError for ``.npz`` entries
    that are no part of a BiT ResNet-v2.
    """
    if not is_big_transfer_npz(state_dict):
        return dict(state_dict)
    converted, unknown = {}, []
    for key, array in state_dict.items():
        target = _module_key(key)
        if target is None:
            unknown.append(key)
        else:
            converted[target] = _from_tensorflow(key, array)
    if unknown:
        shown = ", ".join(unknown[:5]) + (f" ... and {len(unknown) - 5} more" if len(unknown) > 5 else "")
        raise CheckpointError(f"the .npz holds entries that are no part of a BiT ResNet-v2: {shown}")
    return converted


def bit_num_classes(state_dict: Mapping[str, Tensor]) -> int | None:
    """Classes of a BiT checkpoint (already under module names): rows of ``head.conv.weight``."""
    for key, tensor in state_dict.items():
        while key.startswith(("module.", "model.")):
            key = key.split(".", 1)[1]
        if key == "head.conv.weight" and tensor.ndim == 4:
            return int(tensor.shape[0])
    return None


# --------------------------------------------------------------------------- catalogue

def _bit_info(name: str) -> ModelInfo:
    """The catalogue entry of release ``name``; its preset is the GAIA/GradNorm ImageNet setup
    (480 x 480 inputs, mean and std 0.5)."""
    upstream, depth, width = _NAME_PATTERN.fullmatch(name).groups()
    return ModelInfo(name, "bit", name, f"Big Transfer's ResNet-v2 {depth}x{width} "
                     f"({'ImageNet-1k' if upstream == 'S' else 'ImageNet-21k'} upstream; the GAIA paper's ImageNet "
                     "models)", "bit480", 1000, "none", depth=int(depth[1:]),
                     gaia_defaults=bit_gaia_defaults(BIT_UNITS[depth][-1]))


@register_family("bit", "Big Transfer BiT (the paper's ImageNet model)", [_bit_info(name) for name in BIT_NAMES])
def _load_bit(info: ModelInfo, request):
    state_dict = request.state_dict()
    if state_dict is None and request.pretrained:
        raise ModelError(
            f"{info.name} has no bundled weights: pass a checkpoint (GradNorm's and GAIA's "
            f"{info.name}-flat-finetune.pth.tar, or Big Transfer's {info.name}.npz), or pretrained=False."
        )
    num_classes = request.num_classes
    if state_dict is not None:
        state_dict = bit_state_dict(state_dict)
        num_classes = num_classes or bit_num_classes(state_dict)
    return bit_model(info.name, num_classes or info.num_classes), state_dict


__all__ = ["BIT_NAMES", "PreActBottleneck", "ResNetV2", "StdConv2d", "bit_gaia_defaults", "bit_model",
           "bit_num_classes", "bit_state_dict", "is_big_transfer_npz"]
