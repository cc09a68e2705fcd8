"""What one dry forward pass learns about a model: its feature layers, its heads, GAIA's
default layers.

A *feature layer* is a module called once per forward pass whose output is a 4-D feature
map (``(B, C, H, W)``, or channels-last ``(B, H, W, C)`` for a LayerNorm over the last
dimension); layers are named as in ``model.named_modules()``.

"The gradient at a norm layer" is the gradient with respect to the normalised tensor before
any activation. A module that fuses the two (timm's ``BatchNormAct2d``, ``GroupNormAct``,
``LayerNormAct2d``, ...: a norm with an ``act`` child) is therefore hooked at its activation's
input (:attr:`LayerInfo.activation`), so it scores exactly like the same norm followed by a
separate activation module.

A model may declare its own GAIA defaults as an attribute ``gaia_defaults`` holding a
:class:`~gaia_viz.layer_defaults.GaiaLayerDefaults` (Big Transfer's ResNet-v2 declares the paper's layers); the
generic rules below apply to whatever it leaves as None.

Token models (ViT, DeiT, Swin, LeViT) are refused for GAIA (:data:`TOKEN_MODEL_REASON`, with
the activations found in the model).
"""

from __future__ import annotations

import re
import weakref
from dataclasses import dataclass
from typing import Sequence

import torch
from torch import Tensor, nn

from gaia_viz.errors import LayerError, ModelError
from gaia_viz.layer_defaults import NO_DECLARED_DEFAULTS, GaiaLayerDefaults
from gaia_viz.model_output import model_logits
from gaia_viz.gaia.zeros import activation_kinds
from gaia_viz.model_state import activation_gradients_only

NORM_TYPES = (
    nn.modules.batchnorm._BatchNorm,
    nn.modules.instancenorm._InstanceNorm,
    nn.GroupNorm,
    nn.LayerNorm,
)
# norms that are not subclasses of torch's own (torchvision's FrozenBatchNorm2d, timm's
# FrozenBatchNormAct2d, RmsNorm2d, ...) are recognised by their class name
NORM_CLASS_NAME = re.compile(r"(Batch|Group|Layer|Instance|Rms)Norm")
CONV_FALLBACK_NOTE = "this model has no normalisation layers"
FUSED_ACTIVATION_CHILD = "act"  # timm's norm+activation modules keep the activation here
TOKEN_MODEL_REASON = (
    "GAIA (Chen et al., NeurIPS 2023) is defined on convolutional feature maps and is not "
    "defined for token models (ViT, DeiT, Swin, LeViT): GAIA-Z counts, per channel of a feature "
    "map, the exact zeros that piecewise-linear activations (ReLU) put into gradients, and GAIA-A "
    "averages gradients over the spatial positions that a global pooling reads, while these models "
    "read a class token or pool tokens after attention mixed them. Use a convolutional model for "
    "GAIA, or the output- and feature-based methods (msp, energy, maxlogit, odin, react, knn, "
    "mahalanobis) for this one."
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
    # a norm fused with an activation: the activation child's module name and class; the
    # layer's hooked tensor is that child's input (the normalised, pre-activation tensor)
    activation: str | None = None
    activation_kind: str | None = None
    activation_input_modified_in_place: bool = False  # the activation runs in place
    is_conv: bool = False  # an nn.Conv2d or a subclass (timm's ScaledStdConv2d, StdConv2d, ...)
    # a convolution whose output is the class-score map (SqueezeNet's classifier.1): as many
    # channels as the model has classes and no module with weights of its own runs after it
    is_logits_map: bool = False

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
    declared: GaiaLayerDefaults = NO_DECLARED_DEFAULTS  # the model's own ``gaia_defaults``
    # why GAIA is refused for this model (a token model), naming the module that shows it
    token_model: str | None = None
    activations: tuple[str, ...] = ()  # the model's activation modules, "GELU (12)" (zeros.activation_kinds)

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

    def check_gaia_defined(self) -> None:
        """LayerError when GAIA is not defined for this model (a token model)."""
        if self.token_model is not None:
            from gaia_viz.gaia.zeros import ZERO_SLOPE_ACTIVATIONS

            found = ", ".join(self.activations) or "none as modules"
            smooth = [a.split(" (")[0] for a in self.activations if a.split(" (")[0] not in ZERO_SLOPE_ACTIVATIONS]
            slope = (f"; {', '.join(smooth)} never {'has' if len(smooth) == 1 else 'have'} an exactly zero slope, "
                     "so GAIA-Z would have no zeros to count either" if smooth else "")
            raise LayerError(f"{TOKEN_MODEL_REASON} Activations found in this model: {found}{slope} "
                             f"(token model: {self.token_model})")

    def default_zero_layers(self) -> list[str]:
        """GAIA-Z default: the model's declared layers, else every normalisation layer over
        feature maps.

        Fallback for models without normalisation layers: every Conv2d output (its
        gradient is zero where a following ReLU was inactive), with a warning.
        """
        self.check_gaia_defined()
        if self.declared.zero_layers is not None:
            return self._declared(self.declared.zero_layers)
        if self.norm_layers:
            return self.norm_layers
        convs = self._fallback_convs()
        if not convs:
            raise LayerError(
                "this model has neither normalisation layers nor convolutions (nn.Conv2d or a "
                "subclass) over feature maps, so GAIA has nothing to hook; pass layers=[...] explicitly"
            )
        return convs

    def _fallback_convs(self) -> list[str]:
        """The convolutions the fallback hooks: every one over feature maps except those whose
        output is the class-score map (:attr:`LayerInfo.is_logits_map`)."""
        return [layer.name for layer in self.feature_layers if layer.is_conv and not layer.is_logits_map]

    @property
    def uses_conv_fallback(self) -> bool:
        """True when GAIA's default layers are convolution outputs (no normalisation layers,
        none declared): :meth:`conv_fallback_note` says so."""
        return (self.token_model is None and self.declared.zero_layers is None and not self.norm_layers
                and bool(self._fallback_convs()))

    def conv_fallback_note(self, scores: str = "GAIA-Z and GAIA-A") -> str | None:
        """The note for ``scores`` (their labels) on the default layers of a model without
        normalisation layers (one line), or None when the fallback is not used."""
        if not self.uses_conv_fallback:
            return None
        convs = self._fallback_convs()
        skipped = [layer.name for layer in self.feature_layers if layer.is_logits_map]
        skipped_text = (f"; {', '.join(skipped)} {'is' if len(skipped) == 1 else 'are'} not hooked, as "
                        f"{'its' if len(skipped) == 1 else 'their'} output is the class-score map itself (as many "
                        "channels as classes, no layer with weights after it)" if skipped else "")
        return (f"{scores}: {CONV_FALLBACK_NOTE}, so GAIA's default layers are its {len(convs)} convolution outputs "
                f"({convs[0]} ... {convs[-1]}; a gradient there is zero where the ReLU after it is inactive)"
                f"{skipped_text}. Pass layers=[...] to choose others.")

    def _declared(self, names: Sequence[str]) -> list[str]:
        for name in names:
            self.info(name)  # a declaration naming a layer the model lacks is a bug: say so
        return list(names)

    def pooled_map_layer(self) -> str:
        """The last feature map with spatial extent, i.e. the tensor the global pooling reads
        (``layer4`` in torchvision ResNets, ``layer3`` in CIFAR ResNets)."""
        spatial = [layer for layer in self.feature_layers if layer.height * layer.width > 1]
        if not spatial:
            raise LayerError("no feature map with spatial extent: pass head_layer explicitly")
        return spatial[-1].name

    def default_head_layer(self) -> str:
        """GAIA-A default head: the model's declared head layer (BiT: ``before_head``, the
        pooled vector fed to the head), else :meth:`pooled_map_layer`."""
        self.check_gaia_defined()
        if self.declared.head_layer is not None:
            return self._declared([self.declared.head_layer])[0]
        return self.pooled_map_layer()

    def default_inner_layers(self) -> list[str]:
        """GAIA-A default inner layers: the model's declared ones, else the GAIA-Z default
        layers of the last two stages, a stage being a run of layers at the same spatial
        resolution."""
        self.check_gaia_defined()
        if self.declared.inner_layers is not None:
            return self._declared(self.declared.inner_layers)
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
        scores_map = [layer.name for layer in self.feature_layers if layer.is_logits_map]
        why = (f" (this model's class scores come from the convolution {scores_map[-1]} over the feature map, "
               "pooled afterwards, so there is no pooled feature vector)" if scores_map else "")
        raise LayerError(
            "GAIA-A needs the pooled feature vector fed to the classifier (an nn.Linear, or a "
            f"1x1 convolution on the pooled map), and no such module runs after {head_layer!r}{why}"
        )

    def resolve_layers(self, layers: Sequence[str] | str | None, default) -> list[str]:
        """``layers`` validated (unknown names raise LayerError naming the hookable ones),
        de-duplicated in order; ``default()`` when None. LayerError for a token model."""
        self.check_gaia_defined()
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
        self.check_gaia_defined()
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


def _is_norm(module: nn.Module) -> bool:
    return isinstance(module, NORM_TYPES) or bool(NORM_CLASS_NAME.search(type(module).__name__))


def _fused_activation(module: nn.Module) -> nn.Module | None:
    """The activation a norm module applies to its own output (timm's ``*NormAct*``), if any."""
    act = getattr(module, FUSED_ACTIVATION_CHILD, None)
    if _is_norm(module) and isinstance(act, nn.Module) and not isinstance(act, nn.Identity):
        return act
    return None


def _is_attention(module: nn.Module) -> bool:
    return isinstance(module, nn.MultiheadAttention) or type(module).__name__.endswith("Attention")


def _token_model_evidence(records: dict[str, dict]) -> str | None:
    """Why the model is a token model (ViT, DeiT, Swin), naming a module; None for others."""
    for name, rec in records.items():
        if _is_norm(rec["module"]) and len(rec["shape"]) == 3:
            return f"{name} normalises a token sequence of shape {rec['shape']}"
        if _is_attention(rec["module"]):
            return f"{name} is a {type(rec['module']).__name__} (attention between tokens)"
    return None


def declared_defaults(model: nn.Module) -> GaiaLayerDefaults:
    """The model's own ``gaia_defaults`` (:class:`GaiaLayerDefaults`), or none declared."""
    declared = getattr(model, "gaia_defaults", None)
    if declared is None:
        return NO_DECLARED_DEFAULTS
    if not isinstance(declared, GaiaLayerDefaults):
        raise ModelError(f"{type(model).__name__}.gaia_defaults must be a GaiaLayerDefaults, "
                         f"not {type(declared).__name__}")
    return declared


def _discover_layout(model: nn.Module, x: Tensor) -> ModelLayout:
    records: dict[str, dict] = {}
    calls: dict[str, int] = {}
    first_inputs: dict[str, tuple[Tensor, int]] = {}  # first call's first input, its version
    order = [0]
    handles = []

    def record_input(name: str):
        def pre_hook(_module, args):
            if name not in first_inputs and args and isinstance(args[0], Tensor):
                first_inputs[name] = (args[0], args[0]._version)
        return pre_hook

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
                    handles.append(module.register_forward_pre_hook(record_input(name)))
                    handles.append(module.register_forward_hook(make_hook(name, module)))
            logits = model(x)
    except Exception as exc:  # the model cannot run this input at all
        raise ModelError(
            f"the model failed on an input of shape {tuple(x.shape)}: {exc}"
        ) from exc
    finally:
        for handle in handles:
            handle.remove()

    logits = model_logits(logits)
    # completion order of the last module with weights of its own (a container's are its children's)
    last_weighted = max((rec["order"] for rec in records.values()
                         if any(True for _ in rec["module"].parameters(recurse=False))), default=0)

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
        activation = _fused_activation(module)
        act_name = f"{name}.{FUSED_ACTIVATION_CHILD}" if activation is not None else None
        if act_name is not None and (calls.get(act_name) != 1 or act_name not in first_inputs
                                     or tuple(first_inputs[act_name][0].shape) != rec["shape"]):
            act_name = None  # not the simple "norm, then act on it once" a fused norm is
        feature_layers.append(
            LayerInfo(
                name=name, kind=type(module).__name__, channels=channels, height=height,
                width=width, channel_dim=channel_dim, order=rec["order"],
                modified_in_place=rec["output"]._version != rec["version"],
                is_norm=_is_norm(module),
                is_conv=isinstance(module, nn.Conv2d),
                is_logits_map=(isinstance(module, nn.Conv2d) and channels == int(logits.shape[1])
                               and rec["order"] >= last_weighted),
                activation=act_name,
                activation_kind=type(activation).__name__ if act_name else None,
                activation_input_modified_in_place=bool(
                    act_name and first_inputs[act_name][0]._version != first_inputs[act_name][1]),
            )
        )
    feature_layers.sort(key=lambda layer: layer.order)
    return ModelLayout(
        feature_layers=tuple(feature_layers),
        classifier_layers=tuple(sorted(classifier_layers, key=lambda item: item[1])),
        num_classes=int(logits.shape[1]),
        declared=declared_defaults(model),
        token_model=_token_model_evidence(records),
        activations=tuple(activation_kinds(model)),
    )
