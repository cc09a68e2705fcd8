"""What one dry forward pass learns about a model: its feature layers, its heads, GAIA's
default layers.

A *feature layer* is a module called once per forward pass whose output is a 4-D feature
map (``(B, C, H, W)``, or channels-last ``(B, H, W, C)`` for a LayerNorm over the last
dimension); layers are named as in ``model.named_modules()``.
"""

from __future__ import annotations

import warnings
import weakref
from dataclasses import dataclass
from typing import Sequence

import torch
from torch import Tensor, nn

from gaia_viz.errors import LayerError, ModelError
from gaia_viz.model_state import activation_gradients_only

NORM_TYPES = (
    nn.modules.batchnorm._BatchNorm,
    nn.modules.instancenorm._InstanceNorm,
    nn.GroupNorm,
    nn.LayerNorm,
)


@dataclass(frozen=True)
class LayerInfo:
    """A module whose output is a feature map, as seen in one forward pass."""

    name: str
    kind: str  # module class name
    channels: int
    height: int
    width: int
    channel_dim: int  # 1 for (B, C, H, W); 3 for channels-last (B, H, W, C) LayerNorm
    order: int  # completion order in the forward pass
    modified_in_place: bool  # a later op writes into this output (needs a copy)
    is_norm: bool

    @property
    def positions(self) -> int:
        """Spatial positions per channel (H * W)."""
        return self.height * self.width

    def channels_first(self, tensor: Tensor) -> Tensor:
        """``tensor`` (this layer's output or its gradient) as ``(B, C, H, W)``."""
        return tensor.permute(0, 3, 1, 2) if self.channel_dim == 3 else tensor


@dataclass(frozen=True)
class ModelLayout:
    """What one dry forward pass learns about a model for a given input shape."""

    feature_layers: tuple[LayerInfo, ...]  # every single-call module with a 4-D output
    # (name, completion order) of the modules that can act as a classifier on the pooled
    # features: nn.Linear, or a 1x1 nn.Conv2d applied to a 1x1 map (BiT's head.conv)
    classifier_layers: tuple[tuple[str, int], ...]
    num_classes: int

    def info(self, name: str) -> LayerInfo:
        for layer in self.feature_layers:
            if layer.name == name:
                return layer
        known = [layer.name for layer in self.feature_layers]
        hint = ", ".join(known[:12]) + (" ..." if len(known) > 12 else "")
        raise LayerError(
            f"layer {name!r} has no 4-D feature-map output in this model (or runs more "
            f"than once per forward pass). Layers that can be hooked: {hint}"
        )

    @property
    def norm_layers(self) -> list[str]:
        return [layer.name for layer in self.feature_layers if layer.is_norm]

    def default_zero_layers(self) -> list[str]:
        """GAIA-Z default: every normalisation layer over feature maps.

        Fallback for models without normalisation layers: every Conv2d output (its
        gradient is zero where a following ReLU was inactive), with a warning.
        """
        if self.norm_layers:
            return self.norm_layers
        convs = [layer.name for layer in self.feature_layers if layer.kind == "Conv2d"]
        if not convs:
            raise LayerError(
                "this model has neither normalisation layers nor Conv2d layers over feature "
                "maps, so GAIA has nothing to hook; pass layers=[...] explicitly"
            )
        warnings.warn(
            "model has no normalisation layers: GAIA hooks its Conv2d outputs instead",
            stacklevel=3,
        )
        return convs

    def default_head_layer(self) -> str:
        """GAIA-A default head: the last feature map with spatial extent, i.e. the tensor
        the global pooling reads (``layer4`` in torchvision ResNets, ``layer3`` in CIFAR
        ResNets)."""
        spatial = [layer for layer in self.feature_layers if layer.height * layer.width > 1]
        if not spatial:
            raise LayerError("no feature map with spatial extent: pass head_layer explicitly")
        return spatial[-1].name

    def default_inner_layers(self) -> list[str]:
        """GAIA-A default inner layers: the GAIA-Z layers of the last two stages, a stage
        being a run of layers at the same spatial resolution."""
        layers = [self.info(name) for name in self.default_zero_layers()]
        resolutions: list[tuple[int, int]] = []
        for layer in layers:
            if (layer.height, layer.width) not in resolutions:
                resolutions.append((layer.height, layer.width))
        last_two = set(resolutions[-2:])
        return [layer.name for layer in layers if (layer.height, layer.width) in last_two]

    def classifier_after(self, head_layer: str) -> str:
        """The first classifier module (nn.Linear or 1x1 conv on the pooled map) that runs
        after ``head_layer``: its input is the pooled feature vector, GAIA-A's "before-head"
        vector."""
        head_order = self.info(head_layer).order
        for name, order in self.classifier_layers:
            if order > head_order:
                return name
        raise LayerError(
            "GAIA-A needs the pooled feature vector fed to the classifier (an nn.Linear, or a "
            f"1x1 convolution on the pooled map), and no such module runs after {head_layer!r}"
        )

    def resolve_layers(self, layers: Sequence[str] | str | None, default) -> list[str]:
        """``layers`` validated (unknown names raise LayerError naming the hookable ones),
        de-duplicated in order; ``default()`` when None."""
        if layers is None:
            return list(default())
        if isinstance(layers, str):
            layers = [layers]
        layers = list(dict.fromkeys(layers))
        if not layers:
            raise LayerError("the layer list is empty: pick at least one layer")
        for name in layers:
            self.info(name)
        return layers

    def resolve_zero_layers(self, layers: Sequence[str] | str | None = None) -> list[str]:
        """GAIA-Z layers: ``layers`` validated, or :meth:`default_zero_layers`."""
        return self.resolve_layers(layers, self.default_zero_layers)

    def resolve_inner_layers(self, layers: Sequence[str] | str | None = None) -> list[str]:
        """GAIA-A inner layers: ``layers`` validated, or :meth:`default_inner_layers`."""
        return self.resolve_layers(layers, self.default_inner_layers)

    def resolve_head_layer(self, head_layer: str | None = None) -> str:
        """GAIA-A head layer: ``head_layer`` validated (a classifier must run after it), or
        :meth:`default_head_layer`."""
        head = head_layer if head_layer is not None else self.default_head_layer()
        self.info(head)
        self.classifier_after(head)
        return head


_LAYOUT_CACHE: "weakref.WeakKeyDictionary[nn.Module, dict]" = weakref.WeakKeyDictionary()


def model_layout(model: nn.Module, x: Tensor) -> ModelLayout:
    """Run one sample through ``model`` without gradients and record its feature layers.

    Cached per model and input shape (C, H, W).
    """
    key = tuple(x.shape[1:])
    per_model = _LAYOUT_CACHE.setdefault(model, {})
    if key not in per_model:
        per_model[key] = _discover_layout(model, x[:1])
    return per_model[key]


def _is_classifier(module: nn.Module, input_shape: tuple | None) -> bool:
    """nn.Linear, or a 1x1 nn.Conv2d applied to a (B, D, 1, 1) pooled map."""
    if isinstance(module, nn.Linear):
        return True
    return (isinstance(module, nn.Conv2d) and tuple(module.kernel_size) == (1, 1)
            and input_shape is not None and len(input_shape) == 4 and input_shape[2:] == (1, 1))


def _discover_layout(model: nn.Module, x: Tensor) -> ModelLayout:
    records: dict[str, dict] = {}
    calls: dict[str, int] = {}
    order = [0]
    handles = []

    def make_hook(name: str, module: nn.Module):
        def hook(_module, inputs, output):
            calls[name] = calls.get(name, 0) + 1
            order[0] += 1
            if isinstance(output, Tensor):
                first = inputs[0] if inputs and isinstance(inputs[0], Tensor) else None
                records[name] = dict(
                    module=module, output=output, version=output._version,
                    shape=tuple(output.shape), order=order[0],
                    input_shape=tuple(first.shape) if first is not None else None,
                )
        return hook

    try:
        with activation_gradients_only(model), torch.no_grad(), torch.inference_mode(False):
            for name, module in model.named_modules():
                if name:
                    handles.append(module.register_forward_hook(make_hook(name, module)))
            logits = model(x)
    except Exception as exc:  # the model cannot run this input at all
        raise ModelError(
            f"the model failed on an input of shape {tuple(x.shape)}: {exc}"
        ) from exc
    finally:
        for handle in handles:
            handle.remove()
    if not isinstance(logits, Tensor) or logits.ndim != 2:
        raise ModelError("the model must return logits of shape (batch, classes)")

    feature_layers = []
    classifier_layers = []
    for name, rec in records.items():
        module = rec["module"]
        if calls[name] == 1 and _is_classifier(module, rec["input_shape"]):
            classifier_layers.append((name, rec["order"]))
        if calls[name] != 1 or len(rec["shape"]) != 4:
            continue
        channel_dim = 1
        if isinstance(module, nn.LayerNorm) and not type(module).__name__.endswith("2d"):
            # torchvision ConvNeXt blocks normalise channels-last tensors (B, H, W, C)
            if rec["shape"][3] == module.normalized_shape[-1]:
                channel_dim = 3
        if channel_dim == 1:
            _, channels, height, width = rec["shape"]
        else:
            _, height, width, channels = rec["shape"]
        feature_layers.append(
            LayerInfo(
                name=name, kind=type(module).__name__, channels=channels, height=height,
                width=width, channel_dim=channel_dim, order=rec["order"],
                modified_in_place=rec["output"]._version != rec["version"],
                is_norm=isinstance(module, NORM_TYPES),
            )
        )
    feature_layers.sort(key=lambda layer: layer.order)
    return ModelLayout(
        feature_layers=tuple(feature_layers),
        classifier_layers=tuple(sorted(classifier_layers, key=lambda item: item[1])),
        num_classes=int(logits.shape[1]),
    )

