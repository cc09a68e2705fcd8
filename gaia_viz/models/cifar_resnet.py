"""CIFAR ResNets of He et al. 2016, "Deep Residual Learning for Image Recognition", section 4.2.

Depth ``6n + 2`` (20, 32, 44, 56, 110): a 3x3 stem conv with 16 channels, three stages of ``n``
basic blocks with 16 / 32 / 64 channels (stages 2 and 3 halve the map with stride 2), global
average pooling and a linear head. Shortcuts are "option A": identity, or, where the shape changes,
stride-2 subsampling ``x[:, :, ::2, ::2]`` with zero-padded extra channels, so shortcuts hold no
parameters.

Module and parameter names match akamaster/pytorch_resnet_cifar10 exactly (``conv1``, ``bn1``,
``layer{1,2,3}.{i}.conv{1,2}``, ``layer{1,2,3}.{i}.bn{1,2}``, ``linear``), so its published
checkpoints load as they are.
"""

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import ModelError
from .blocks import BasicBlock
from .catalogue import ModelInfo, register_family
from .zoo import with_shared_weights

CIFAR_RESNET_DEPTHS = (20, 32, 44, 56, 110)
# the akamaster checkpoints in the shared data folder (the others have no known weights)
SHARED_CIFAR_CHECKPOINTS = {20: "models/cifar10_resnet20.th", 56: "models/cifar10_resnet56.th"}


class ZeroPadShortcut(nn.Module):
    """Option-A shortcut: take every second pixel, then pad ``pad`` zero channels on each side."""

    def __init__(self, pad: int):
        super().__init__()
        self.pad = pad

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.pad(x[:, :, ::2, ::2], (0, 0, 0, 0, self.pad, self.pad))


class CifarResNet(nn.Module):
    """ResNet-(6n+2) for 32x32 inputs; see the module docstring."""

    def __init__(self, depth: int = 20, num_classes: int = 10):
        super().__init__()
        if depth not in CIFAR_RESNET_DEPTHS:
            raise ModelError(f"CIFAR ResNet depth must be one of {CIFAR_RESNET_DEPTHS}, got {depth}")
        blocks_per_stage = (depth - 2) // 6
        self.depth = depth
        self.conv1 = nn.Conv2d(3, 16, 3, stride=1, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(16)
        self.layer1 = self._make_stage(16, 16, blocks_per_stage, stride=1)
        self.layer2 = self._make_stage(16, 32, blocks_per_stage, stride=2)
        self.layer3 = self._make_stage(32, 64, blocks_per_stage, stride=2)
        self.linear = nn.Linear(64, num_classes)
        for module in self.modules():
            if isinstance(module, (nn.Conv2d, nn.Linear)):
                nn.init.kaiming_normal_(module.weight)

    @staticmethod
    def _make_stage(in_planes: int, planes: int, blocks: int, stride: int) -> nn.Sequential:
        strides = [stride] + [1] * (blocks - 1)
        layers = []
        for s in strides:
            needs_projection = s != 1 or in_planes != planes
            layers.append(BasicBlock(in_planes, planes, s, ZeroPadShortcut(planes // 4) if needs_projection else None))
            in_planes = planes
        return nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.layer3(self.layer2(self.layer1(out)))
        out = F.avg_pool2d(out, out.shape[-1])  # global average pool over the full map
        return self.linear(out.flatten(1))


def cifar_resnet(depth: int, num_classes: int = 10) -> CifarResNet:
    """Build a randomly initialised CIFAR ResNet of the given depth."""
    return CifarResNet(depth, num_classes)


# The shared checkpoints were trained on 32x32 inputs with ImageNet mean/std, hence the preset.
@register_family("cifar", f"CIFAR ResNet ({CIFAR_RESNET_DEPTHS[0]}-{CIFAR_RESNET_DEPTHS[-1]})", [
    ModelInfo(f"cifar_resnet{depth}", "cifar", f"ResNet-{depth}",
              f"He et al.'s CIFAR ResNet-{depth} (option-A shortcuts" + (", akamaster's CIFAR-10 weights)"
                                                                       if depth in SHARED_CIFAR_CHECKPOINTS else ")"),
              "cifar-imagenet-norm", 10, "shared" if depth in SHARED_CIFAR_CHECKPOINTS else "none",
              SHARED_CIFAR_CHECKPOINTS.get(depth), depth)
    for depth in CIFAR_RESNET_DEPTHS])
def _load_cifar_resnet(info: ModelInfo, request):
    return with_shared_weights(info, request, lambda classes: cifar_resnet(info.depth, classes))
