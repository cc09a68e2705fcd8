"""The basic residual block both CIFAR ResNet families share (He et al. 2016).

As in torchvision's ``resnet.py``, variants are arguments, not copies: the two families differ
only in the shortcut (parameter-free option-A zero padding for the CIFAR ResNets of He et al.,
a 1x1 projection with batch norm for the GAIA paper's ResNet-18/34), which the caller passes.
"""

from torch import Tensor, nn
from torch.nn import functional as F


class BasicBlock(nn.Module):
    """``relu(bn2(conv2(relu(bn1(conv1(x))))) + shortcut(x))`` with 3x3 convolutions.

    Module names (``conv1``, ``bn1``, ``conv2``, ``bn2``, ``shortcut``) are those of the
    published checkpoints of both families, so they load as they are.
    """

    def __init__(self, in_planes: int, planes: int, stride: int = 1, shortcut: nn.Module | None = None):
        super().__init__()
        self.conv1 = nn.Conv2d(in_planes, planes, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, stride=1, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.shortcut = shortcut if shortcut is not None else nn.Identity()

    def forward(self, x: Tensor) -> Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return F.relu(out + self.shortcut(x))
