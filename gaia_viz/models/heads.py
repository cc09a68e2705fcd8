"""The classifier head of a model: the module that maps the pooled feature vector to logits.

Feature-based detectors (ReAct, KNN, Mahalanobis, ...) read the head's input ("penultimate
features") and some re-apply the head to changed features. Two kinds of head are known:

* an ``nn.Linear`` (torchvision, CIFAR ResNets, timm): the last one in
  ``model.named_modules()`` order;
* a 1x1 ``nn.Conv2d`` on the pooled ``(B, D, 1, 1)`` map that is the model's last module,
  or followed only by a ``Flatten`` / ``Identity`` / dropout (Big Transfer's ``head.conv``,
  timm's ResNet-v2 ``head.fc``). A 1x1 convolution on a spatial map followed by pooling
  (SqueezeNet) is not a head of pooled features and is refused.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn

from gaia_viz.errors import ModelError

# modules that may follow a conv head: they change no value (Flatten only drops 1x1 dims)
SHAPE_ONLY_MODULES = (nn.Flatten, nn.Identity, nn.modules.dropout._DropoutNd)


@dataclass(frozen=True)
class ClassifierHead:
    """``name`` and ``module`` of the head; ``weight`` is ``(classes, D)`` for either kind."""

    name: str
    module: nn.Module

    @property
    def is_conv(self) -> bool:
        return isinstance(self.module, nn.Conv2d)

    @property
    def weight(self) -> Tensor:
        weight = self.module.weight
        return weight.flatten(1) if self.is_conv else weight

    @property
    def bias(self) -> Tensor | None:
        return self.module.bias

    @property
    def num_classes(self) -> int:
        return int(self.module.out_channels if self.is_conv else self.module.out_features)

    @property
    def in_features(self) -> int:
        return int(self.module.in_channels if self.is_conv else self.module.in_features)

    def __call__(self, features: Tensor) -> Tensor:
        """Logits ``(B, classes)`` of pooled ``features`` ``(B, D)``, on the device of
        ``features`` (the head runs where its weights are: the sweep keeps features on the
        CPU while the model may be on a GPU)."""
        inputs = features.to(self.module.weight.device)
        if self.is_conv:
            return self.module(inputs[:, :, None, None]).flatten(1).to(features.device)
        return self.module(inputs).to(features.device)

    def weight_and_bias(self, dtype: torch.dtype = torch.float64) -> tuple[Tensor, Tensor]:
        """Detached CPU copies of ``weight`` ``(classes, D)`` and ``bias`` ``(classes,)`` in
        ``dtype`` (zeros for a head without bias), for methods that use the head's geometry."""
        weight = self.weight.detach().to("cpu", dtype)
        bias = self.bias
        bias = torch.zeros(weight.shape[0], dtype=dtype) if bias is None else bias.detach().to("cpu", dtype)
        return weight, bias

    def features_from_input(self, head_input: Tensor) -> Tensor:
        """The head's captured input as ``(B, D)``; ModelError when a conv head was given a
        spatial map (it then is no head of pooled features)."""
        if self.is_conv and (head_input.ndim != 4 or tuple(head_input.shape[2:]) != (1, 1)):
            raise ModelError(
                f"the last module {self.name!r} is a 1x1 convolution on a "
                f"{tuple(head_input.shape[2:])} feature map, not on pooled features, so the model "
                "has no classifier head of pooled features (as Linear or BiT's 1x1 conv)")
        return head_input.flatten(1)


def classifier_head(model: nn.Module) -> ClassifierHead:
    """The head of ``model`` (see the module docstring); ModelError when it has none."""
    linear = None
    modules = list(model.named_modules())
    for name, module in modules:
        if isinstance(module, nn.Linear):
            linear = (name, module)
    if linear is not None:
        return ClassifierHead(*linear)
    leaves = [(n, m) for n, m in modules if not any(True for _ in m.children())]
    while leaves and isinstance(leaves[-1][1], SHAPE_ONLY_MODULES):
        leaves.pop()
    if leaves:
        name, last = leaves[-1]
        if isinstance(last, nn.Conv2d) and tuple(last.kernel_size) == (1, 1) and last.groups == 1:
            return ClassifierHead(name, last)
    raise ModelError(
        f"{type(model).__name__} has no nn.Linear classifier head (nor a 1x1 convolution on the "
        "pooled features as its last module, like BiT's head.conv); GAIA-A and the "
        "feature-based detectors need one (the penultimate features are the head's input)."
    )


__all__ = ["ClassifierHead", "classifier_head"]
