"""CIFAR ResNet-18/34 as used by the GAIA paper (Chen et al., NeurIPS 2023) for CIFAR-10/100.

This is the widespread kuangliu/pytorch-cifar variant of He et al. 2016's ImageNet ResNet adapted
to 32x32 inputs: a 3x3 stride-1 stem ``conv1`` (64 channels) + ``bn1`` without max-pooling, four
stages ``layer1..layer4`` of basic blocks with 64 / 128 / 256 / 512 channels (stride 2 from stage
2 on), ``F.avg_pool2d(out, 4)`` and a linear head ``linear``. Where a block changes shape its
shortcut is a projection ``nn.Sequential(conv1x1, BatchNorm)`` (keys ``shortcut.0`` and
``shortcut.1``); otherwise it is an empty ``nn.Sequential`` (identity). Stage sizes: ResNet-18
``[2, 2, 2, 2]``, ResNet-34 ``[3, 4, 6, 3]``.
"""

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import ModelError
from .blocks import BasicBlock
from .catalogue import ModelInfo, register_family
from .checkpoints import infer_num_classes

GAIA_RESNET_STAGES = {18: (2, 2, 2, 2), 34: (3, 4, 6, 3)}


def _shortcut(in_planes: int, planes: int, stride: int) -> nn.Sequential:
    """A projection (1x1 conv + batch norm) where the block changes shape, else an empty
    Sequential (identity; keys ``shortcut.0``/``shortcut.1`` as in the published checkpoints)."""
    if stride != 1 or in_planes != planes:
        return nn.Sequential(nn.Conv2d(in_planes, planes, 1, stride=stride, bias=False), nn.BatchNorm2d(planes))
    return nn.Sequential()


class GaiaResNet(nn.Module):
    """ResNet-18/34 for 32x32 inputs; see the module docstring."""

    def __init__(self, depth: int = 18, num_classes: int = 10):
        super().__init__()
        stages = GAIA_RESNET_STAGES[depth]
        self.depth = depth
        self.conv1 = nn.Conv2d(3, 64, 3, stride=1, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        in_planes = 64
        for index, (planes, blocks) in enumerate(zip((64, 128, 256, 512), stages), start=1):
            first_stride = 1 if index == 1 else 2
            stage = []
            for stride in [first_stride] + [1] * (blocks - 1):
                stage.append(BasicBlock(in_planes, planes, stride, _shortcut(in_planes, planes, stride)))
                in_planes = planes
            setattr(self, f"layer{index}", nn.Sequential(*stage))
        self.linear = nn.Linear(512, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.layer4(self.layer3(self.layer2(self.layer1(out))))
        out = F.avg_pool2d(out, 4)
        return self.linear(out.flatten(1))


def gaia_resnet18(num_classes: int = 10) -> GaiaResNet:
    """Randomly initialised GAIA-paper CIFAR ResNet-18 (11.2 M parameters for 10 classes)."""
    return GaiaResNet(18, num_classes)


def gaia_resnet34(num_classes: int = 10) -> GaiaResNet:
    """Randomly initialised GAIA-paper CIFAR ResNet-34 (21.3 M parameters for 10 classes)."""
    return GaiaResNet(34, num_classes)


# CIFAR statistics, CIFAR-100's for a 100-class head
@register_family("gaia", f"GAIA ResNet-{'/'.join(map(str, GAIA_RESNET_STAGES))}", [
    ModelInfo(f"gaia_resnet{depth}", "gaia", f"GAIA ResNet-{depth}",
              f"the GAIA paper's CIFAR ResNet-{depth} (kuangliu's variant)", "gaia-cifar10", 10, "none",
              depth=depth, presets_by_classes=((100, "gaia-cifar100"),))
    for depth in GAIA_RESNET_STAGES])
def _load_gaia_resnet(info: ModelInfo, request):
    state_dict = request.state_dict()
    model = GaiaResNet(info.depth, request.checkpoint_classes(state_dict, infer_num_classes) or info.num_classes)
    if state_dict is None and request.pretrained:
        raise ModelError(
            f"{info.name} has no bundled weights: pass the checkpoint you trained, "
            "or pretrained=False for random weights."
        )
    return model, state_dict
