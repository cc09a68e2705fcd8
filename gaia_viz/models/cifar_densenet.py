"""DenseNet-BC for CIFAR (Huang et al. 2017, "Densely Connected Convolutional Networks"), the
model of the ODIN (Liang et al., ICLR 2018) and Mahalanobis (Lee et al., NeurIPS 2018) papers.

DenseNet-BC-100 with growth rate ``k = 12`` and compression 0.5: a 3x3 stem conv with ``2k = 24``
channels; three dense blocks of 16 bottleneck layers each (each layer is
BN -> ReLU -> 1x1 conv to ``4k`` channels -> BN -> ReLU -> 3x3 conv to ``k`` channels, its output
concatenated to its input); between blocks a transition, BN -> ReLU -> 1x1 conv to half the
channels -> 2x2 average pool; the head is BN -> ReLU -> 8x8 average pool -> Linear (342 -> 10).
All convolutions are bias-free; there is no dropout (ODIN's model was trained without it).
Maps are 32x32, 16x16 and 8x8 in the three blocks.

Module and parameter names are those of ODIN's and Mahalanobis's ``densenet.py``
(``DenseNet3(depth=100, num_classes=10)``): ``conv1``, ``block{1,2,3}.layer.{i}.{bn1,conv1,bn2,conv2}``,
``trans{1,2}.{bn1,conv1}``, ``bn1``, ``fc``, so its published state_dict loads as it is. The
final ReLU is the module ``relu`` (no parameters), so the map the pooling reads can be hooked;
the ReLUs inside the blocks are functional and never in place.

GAIA layers for this family (the generic rules of :mod:`gaia_viz.gaia.layout`):

* GAIA-Z: every BatchNorm2d, 99 layers (2 a bottleneck layer, 1 a transition, the final ``bn1``);
* GAIA-A's head: ``relu``, the final 8x8 post-ReLU map (342 channels) that the average pooling
  turns into the vector the ``fc`` head reads;
* GAIA-A's inner layers: the BatchNorm2d layers of the last two resolutions, i.e. every BN of
  ``block2`` and ``trans2`` (16x16) and of ``block3`` and the final ``bn1`` (8x8), 66 layers.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import ModelError
from .catalogue import ModelInfo, register_family
from .zoo import with_shared_weights

DENSENET_BC_DEPTHS = (100,)
SHARED_DENSENET_CHECKPOINTS = {100: "models/cifar10_densenet_bc100.safetensors"}


class Bottleneck(nn.Module):
    """``cat(x, conv2(relu(bn2(conv1(relu(bn1(x)))))))``: adds ``growth`` channels."""

    def __init__(self, in_planes: int, growth: int):
        super().__init__()
        inter = 4 * growth
        self.bn1 = nn.BatchNorm2d(in_planes)
        self.conv1 = nn.Conv2d(in_planes, inter, kernel_size=1, bias=False)
        self.bn2 = nn.BatchNorm2d(inter)
        self.conv2 = nn.Conv2d(inter, growth, kernel_size=3, padding=1, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.conv1(F.relu(self.bn1(x)))
        out = self.conv2(F.relu(self.bn2(out)))
        return torch.cat([x, out], 1)


class Transition(nn.Module):
    """``avg_pool2d(conv1(relu(bn1(x))), 2)``: fewer channels, half the resolution."""

    def __init__(self, in_planes: int, out_planes: int):
        super().__init__()
        self.bn1 = nn.BatchNorm2d(in_planes)
        self.conv1 = nn.Conv2d(in_planes, out_planes, kernel_size=1, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.avg_pool2d(self.conv1(F.relu(self.bn1(x))), 2)


class DenseBlock(nn.Module):
    """``layers`` bottleneck layers in ``self.layer`` (the checkpoint's ``block*.layer.{i}``)."""

    def __init__(self, layers: int, in_planes: int, growth: int):
        super().__init__()
        self.layer = nn.Sequential(*(Bottleneck(in_planes + i * growth, growth) for i in range(layers)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layer(x)


class CifarDenseNetBC(nn.Module):
    """DenseNet-BC-``depth`` for 32x32 inputs; see the module docstring."""

    def __init__(self, depth: int = 100, num_classes: int = 10, growth: int = 12, compression: float = 0.5):
        super().__init__()
        if depth not in DENSENET_BC_DEPTHS:
            raise ModelError(f"CIFAR DenseNet-BC depth must be one of {DENSENET_BC_DEPTHS}, got {depth}")
        per_block = (depth - 4) // 6  # 3 blocks of bottleneck layers, 2 convolutions each
        planes = 2 * growth
        self.depth = depth
        self.conv1 = nn.Conv2d(3, planes, kernel_size=3, padding=1, bias=False)
        for index in (1, 2, 3):
            setattr(self, f"block{index}", DenseBlock(per_block, planes, growth))
            planes += per_block * growth
            if index < 3:
                setattr(self, f"trans{index}", Transition(planes, int(planes * compression)))
                planes = int(planes * compression)
        self.bn1 = nn.BatchNorm2d(planes)
        self.relu = nn.ReLU()
        self.fc = nn.Linear(planes, num_classes)
        for module in self.modules():
            if isinstance(module, nn.Conv2d):
                nn.init.kaiming_normal_(module.weight, mode="fan_out")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.trans1(self.block1(self.conv1(x)))
        out = self.trans2(self.block2(out))
        out = self.relu(self.bn1(self.block3(out)))
        out = F.avg_pool2d(out, out.shape[-1])  # 8x8 for 32x32 inputs: the global average
        return self.fc(out.flatten(1))


def cifar_densenet_bc(depth: int = 100, num_classes: int = 10) -> CifarDenseNetBC:
    """Build a randomly initialised CIFAR DenseNet-BC (growth 12, compression 0.5)."""
    return CifarDenseNetBC(depth, num_classes)


# ODIN's own input statistics: mean (125.3, 123.0, 113.9) / 255, std (63.0, 62.1, 66.7) / 255
@register_family("densenet", "CIFAR DenseNet-BC-100 (ODIN's)", [
    ModelInfo(f"cifar_densenet_bc{depth}", "densenet", f"DenseNet-BC-{depth}",
              f"ODIN's CIFAR-10 DenseNet-BC-{depth} (growth 12, compression 0.5)", "odin-cifar10", 10,
              "shared", SHARED_DENSENET_CHECKPOINTS[depth], depth)
    for depth in DENSENET_BC_DEPTHS])
def _load_cifar_densenet(info: ModelInfo, request):
    return with_shared_weights(info, request, lambda classes: cifar_densenet_bc(info.depth, classes))
