"""GAIA: gradient-based attribution abnormality (Chen et al., NeurIPS 2023).

Two scores, both *higher = more out-of-distribution* (the paper's code negates them so
that ID ranks high; we return the raw value):

GAIA-Z (zero-deflation abnormality). Objective ``sum_b max_k f(x_b)_k``. For every hooked
layer ``l`` take ``g = d objective / d output_l`` and for each channel ``c``

    r[l, c] = #{spatial positions p : g[c, p] != 0} / #positions        (exact zeros)
    GAIA-Z  = mean over all hooked channels (l, c) of r[l, c]^2

GAIA-A (channel-wise average abnormality). One forward, two vector-Jacobian products:

    A = sum_b sum_k log_softmax(f(x_b))_k,  G = dA / d output_head,  a[c] = mean_p G[c, p]
    o = sqrt(mean_c |a[c]|)                                              (output component)
    B = sum of the pooled feature vector fed to the classifier head
    m[l, c] = mean_p (dB / d output_l)[c, p]  for every inner layer l
    GAIA-A  = mean over all inner channels (l, c) of (|m[l, c]| / o)^2

"The gradient at a layer" is the gradient with respect to the layer's output as the next
module receives it. A model that applies an in-place op to that output (torchvision
ResNets: ``bn -> ReLU(inplace=True)``, ``bn3 += identity``) is handled by handing the next
module a copy, so it scores exactly like the same model with ``inplace=False``.

Engineering guarantees of every public function here:
- one forward pass per call; gradients with respect to activations only (parameters are
  frozen for the call, so no parameter gradient is ever computed);
- the backward pass stops at the earliest hooked layer (its output becomes the graph's leaf),
  reduces every other layer's gradient the moment it is produced, and takes eval-mode batch
  norms (with the convolution before them) in one cheaper step (:class:`_EvalNormBackward`);
- hooks removed, ``requires_grad`` flags and train/eval modes restored, also on exceptions;
- batched: no Python loop over samples; a sample's scores do not depend on its batch.
"""

from __future__ import annotations

import contextlib
import warnings
import weakref
from dataclasses import dataclass, field
from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from gaia_viz.errors import LayerError, ModelError
from gaia_viz.model_state import activation_gradients_only, model_device

NORM_TYPES = (
    nn.modules.batchnorm._BatchNorm,
    nn.modules.instancenorm._InstanceNorm,
    nn.GroupNorm,
    nn.LayerNorm,
)


# --------------------------------------------------------------------------- layout


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


@dataclass(frozen=True)
class ModelLayout:
    """What one dry forward pass learns about a model for a given input shape."""

    feature_layers: tuple[LayerInfo, ...]  # every single-call module with a 4-D output
    linear_layers: tuple[tuple[str, int], ...]  # (name, completion order) of nn.Linear
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

    def before_head_linear(self, head_layer: str) -> str:
        """The first nn.Linear that runs after the head layer: its input is the pooled
        feature vector ("before-head" vector of GAIA-A)."""
        head_order = self.info(head_layer).order
        for name, order in self.linear_layers:
            if order > head_order:
                return name
        raise LayerError(
            "GAIA-A needs the pooled feature vector fed to a Linear classifier head, and "
            f"no nn.Linear runs after {head_layer!r} in this model"
        )


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


def _discover_layout(model: nn.Module, x: Tensor) -> ModelLayout:
    records: dict[str, dict] = {}
    calls: dict[str, int] = {}
    order = [0]
    handles = []

    def make_hook(name: str, module: nn.Module):
        def hook(_module, _inputs, output):
            calls[name] = calls.get(name, 0) + 1
            order[0] += 1
            if isinstance(output, Tensor):
                records[name] = dict(
                    module=module, output=output, version=output._version,
                    shape=tuple(output.shape), order=order[0],
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
    linear_layers = []
    for name, rec in records.items():
        module = rec["module"]
        if isinstance(module, nn.Linear) and calls[name] == 1:
            linear_layers.append((name, rec["order"]))
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
        linear_layers=tuple(sorted(linear_layers, key=lambda item: item[1])),
        num_classes=int(logits.shape[1]),
    )


# --------------------------------------------------------------------------- plumbing


def _prepare_input(model: nn.Module, x: Tensor, device) -> Tensor:
    if not isinstance(x, Tensor) or x.ndim != 4:
        raise ValueError(f"x must be an image batch of shape (B, C, H, W), got {getattr(x, 'shape', type(x))}")
    on_device = model_device(model)
    if device is not None and torch.device(device).type != on_device.type:
        raise ModelError(
            f"the model is on {on_device} but device={device!r} was asked: move the "
            f"model first with model.to({str(device)!r})"
        )
    dtype = next((p.dtype for p in model.parameters() if p.is_floating_point()), torch.float32)
    # detached: gradients are taken w.r.t. activations (and, for ODIN, a fresh input leaf),
    # never w.r.t. whatever graph the caller's tensor may carry
    x = x.to(device=on_device, dtype=dtype).detach()
    return x.clone() if x.is_inference() else x


class _NormInputGrad(torch.autograd.Function):
    """Identity on the values of an eval-mode batch norm's own output; backward multiplies
    by the per-channel scale ``weight / sqrt(running_var + eps)``."""

    @staticmethod
    def forward(ctx, x, scale, output_holder):
        ctx.save_for_backward(scale)
        return output_holder[0]

    @staticmethod
    def backward(ctx, grad):
        (scale,) = ctx.saved_tensors
        return grad * scale.view(1, -1, *([1] * (grad.ndim - 2))), None, None


class _ConvNormInputGrad(torch.autograd.Function):
    """Identity on the values of ``norm(conv(x))`` as the modules computed it; backward goes
    straight to ``x``: one convolution backward with the weight scaled per output channel."""

    @staticmethod
    def forward(ctx, x, scaled_weight, output_holder, conv_args):
        ctx.save_for_backward(x, scaled_weight)
        ctx.conv_args = conv_args
        return output_holder[0]

    @staticmethod
    def backward(ctx, grad):
        x, weight = ctx.saved_tensors
        stride, padding, dilation, groups = ctx.conv_args
        grad_input, _, _ = torch.ops.aten.convolution_backward(
            grad, x, weight, None, stride, padding, dilation, False, [0] * len(stride), groups,
            [True, False, False])
        return grad_input, None, None, None


def _uses_running_stats(module: nn.Module) -> bool:
    """A batch norm whose forward is exactly ``F.batch_norm`` with its running statistics
    (subclasses that add to it, such as timm's ``BatchNormAct2d``, are left to autograd)."""
    return (isinstance(module, nn.modules.batchnorm._BatchNorm)
            and type(module).forward is nn.modules.batchnorm._BatchNorm.forward
            and not module.training
            and module.running_mean is not None and module.running_var is not None)


def _plain_conv2d(module: nn.Module) -> bool:
    """A Conv2d whose forward is exactly ``F.conv2d(x, module.weight, ...)``."""
    return (isinstance(module, nn.Conv2d) and type(module).forward is nn.Conv2d.forward
            and type(module)._conv_forward is nn.Conv2d._conv_forward
            and module.padding_mode == "zeros" and not isinstance(module.padding, str))


class _EvalNormBackward:
    """A cheaper backward pass for eval-mode batch norms, as forward hooks for one pass.

    Why: in eval mode a batch norm's input gradient is its output gradient times a
    per-channel constant, but PyTorch's CPU ``native_batch_norm_backward`` takes 4x as long
    as that multiplication (0.85 vs 0.21 ms on a 128 x 16 x 32 x 32 gradient, 2 threads),
    and when the norm reads a convolution's output the constant folds into the
    convolution's weight, so the multiplication disappears too. The norm's output values
    are the module's own (ReLU masks and zero counts are unchanged); gradient values may
    differ from autograd's in the last bit.

    Only where it is exact: the convolution is a plain Conv2d, not a hooked layer (its
    output's gradient is never asked for), its output reaches the norm unmodified (same
    tensor, same version) and autocast is off; otherwise just the multiplication.
    """

    def __init__(self, modules: dict[str, nn.Module], hooked: set[str]):
        self.handles = []
        self._last_conv = None  # (module, input, output, output version)
        for name, module in modules.items():
            if _plain_conv2d(module) and name not in hooked:
                self.handles.append(module.register_forward_hook(self._record_conv))
            elif _uses_running_stats(module):  # prepend: before any capture hook on it
                self.handles.append(module.register_forward_hook(self._norm_output, prepend=True))

    def _record_conv(self, module, inputs, output):
        self._last_conv = (module, inputs[0], output, output._version)

    def _norm_output(self, module, inputs, output):
        conv, self._last_conv = self._last_conv, None
        x = inputs[0] if inputs else None
        if not (isinstance(x, Tensor) and x.requires_grad and isinstance(output, Tensor)):
            return None  # upstream of every hooked layer: no gradient flows here
        scale = torch.rsqrt(module.running_var + module.eps)
        if module.weight is not None:
            scale = scale * module.weight
        scale = scale.detach().to(output.dtype)
        # the output goes in a holder, not as an argument, so that autograd does not treat
        # it as an input returned as-is (a view that later in-place ops could not modify)
        holder = [output.detach()]
        if (conv is not None and conv[2] is x and x._version == conv[3] and conv[1].requires_grad
                and not torch.is_autocast_enabled(x.device.type)):
            conv_module, conv_input = conv[0], conv[1]
            weight = conv_module.weight.detach() * scale.view(-1, 1, 1, 1).to(conv_module.weight.dtype)
            return _ConvNormInputGrad.apply(
                conv_input, weight, holder,
                (list(conv_module.stride), list(conv_module.padding), list(conv_module.dilation),
                 conv_module.groups))
        return _NormInputGrad.apply(x, scale, holder)


class _Tap:
    """Forward hooks that capture layer outputs so autograd can differentiate w.r.t. them.

    A captured output that does not require grad yet (nothing upstream is hooked and the
    parameters are frozen) becomes a leaf of the graph: that is where backward stops.
    An output that a later op modifies in place is handed on as a copy, so the captured
    tensor keeps the value whose gradient we want.
    """

    def __init__(self, model: nn.Module, layout: ModelLayout, layers: Sequence[str],
                 inputs_of: Sequence[str] = ()):
        self.outputs: dict[str, Tensor] = {}
        self.inputs: dict[str, Tensor] = {}  # first positional input of Linear modules
        self.input: Tensor | None = None  # the model input, when it is a leaf
        self._handles = []
        modules = dict(model.named_modules())
        self._handles.extend(_EvalNormBackward(modules, set(layers)).handles)
        for name in dict.fromkeys(layers):
            info = layout.info(name)
            self._handles.append(modules[name].register_forward_hook(self._capture(info)))
        for name in dict.fromkeys(inputs_of):
            self._handles.append(modules[name].register_forward_pre_hook(self._capture_input(name)))

    def _capture(self, info: LayerInfo):
        def hook(_module, _inputs, output):
            if info.name in self.outputs:
                raise LayerError(f"layer {info.name!r} runs more than once per forward pass")
            captured = output if output.requires_grad else output.detach().requires_grad_()
            self.outputs[info.name] = captured
            if info.modified_in_place:
                return captured.clone()
            return captured if captured is not output else None
        return hook

    def _capture_input(self, name: str):
        def pre_hook(_module, inputs):
            self.inputs[name] = inputs[0]
        return pre_hook

    def remove(self) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles.clear()


@contextlib.contextmanager
def _tapped_forward(model, x, layers, inputs_of=(), device=None, input_leaf=False):
    """Yield (logits, tap) for one forward pass with ``layers`` captured.

    ``input_leaf``: the input itself requires grad (``tap.input``), for a caller that also
    wants an input gradient from this forward (ODIN in the sweep).
    """
    x = _prepare_input(model, x, device)
    layout = model_layout(model, x)
    for name in layers:
        layout.info(name)  # validate names before running anything
    with activation_gradients_only(model), torch.inference_mode(False), torch.enable_grad():
        tap = _Tap(model, layout, layers, inputs_of)
        if input_leaf:
            x = tap.input = x.detach().requires_grad_()
        try:
            logits = model(x)
            missing = [name for name in layers if name not in tap.outputs]
            if missing:
                raise LayerError(f"layers did not run in the forward pass: {missing}")
            if not logits.requires_grad:
                raise LayerError("the logits do not depend on any hooked layer")
            yield logits, tap
        finally:
            tap.remove()


def _grads(objective: Tensor, tensors: Sequence[Tensor], retain_graph: bool) -> list[Tensor]:
    grads = torch.autograd.grad(objective, list(tensors), retain_graph=retain_graph,
                                allow_unused=True)
    # a layer the objective does not depend on has an all-zero gradient
    return [torch.zeros_like(t) if g is None else g for g, t in zip(grads, tensors)]


def _stop_tensors(targets: Sequence[Tensor]) -> list[Tensor]:
    """The targets no other target lies upstream of: the backward pass stops at them.

    Every other target is reached on the way, so its gradient can be reduced by a tensor
    hook as it is produced instead of being kept whole until the end of the pass.
    """
    marked: dict = {}  # graph node -> the targets it produces
    for t in targets:
        node = t.grad_fn if t.grad_fn is not None else _grad_accumulator(t)
        if node is not None:
            marked.setdefault(node, []).append(t)
    reaches: dict = {}  # node -> whether a marked node lies strictly upstream of it
    for start in marked:
        stack = [(start, False)]
        while stack:
            node, expanded = stack.pop()
            if node in reaches:
                continue
            children = [child for child, _ in node.next_functions if child is not None]
            if expanded:
                reaches[node] = any(child in marked or reaches[child] for child in children)
                continue
            stack.append((node, True))
            stack.extend((child, False) for child in children if child not in reaches)
    return [t for node, ts in marked.items() if not reaches[node] for t in ts]


def _grad_accumulator(leaf: Tensor):
    """The AccumulateGrad node that stands for a leaf in every graph using it (or None).

    Autograd keeps one such node per leaf while a graph refers to it; a throwaway view
    is the public way to reach it.
    """
    if not leaf.requires_grad:
        return None
    return leaf.view_as(leaf).grad_fn.next_functions[0][0]


def _reduced_grads(objective: Tensor, targets: dict[str, Tensor], reduce, retain_graph: bool
                   ) -> dict[str, Tensor]:
    """``reduce(name, d objective / d targets[name])`` for every target, in one backward pass.

    Full gradients are never all alive at once: the pass stops at the upstream-most targets
    and the others are reduced (e.g. to per-channel counts) by tensor hooks the moment they
    are produced, so memory is reused while hot instead of being faulted in fresh.
    """
    stops = _stop_tensors(list(targets.values()))
    stop_ids = {id(t) for t in stops}
    reduced: dict[str, Tensor] = {}
    handles = []

    def make_hook(name):
        def hook(grad):
            reduced[name] = reduce(name, grad)
        return hook

    try:
        for name, tensor in targets.items():
            if id(tensor) not in stop_ids:
                handles.append(tensor.register_hook(make_hook(name)))
        grads = torch.autograd.grad(objective, stops, retain_graph=retain_graph, allow_unused=True) if stops else []
    finally:
        for handle in handles:
            handle.remove()
    grad_of = {id(t): g for t, g in zip(stops, grads)}
    for name, tensor in targets.items():
        if name in reduced:
            continue
        grad = grad_of.get(id(tensor))
        # a layer the objective does not depend on has an all-zero gradient
        reduced[name] = reduce(name, torch.zeros_like(tensor) if grad is None else grad)
    return reduced


def _channels_first(grad: Tensor, info: LayerInfo) -> Tensor:
    return grad.permute(0, 3, 1, 2) if info.channel_dim == 3 else grad


def _resolve(layout: ModelLayout, layers, default) -> list[str]:
    if layers is None:
        return default()
    if isinstance(layers, str):
        layers = [layers]
    layers = list(dict.fromkeys(layers))
    if not layers:
        raise LayerError("the layer list is empty: pick at least one layer")
    for name in layers:
        layout.info(name)
    return layers


# --------------------------------------------------------------------------- results


@dataclass
class GaiaResult:
    """Per-sample GAIA pieces for a batch (all tensors on the CPU, batch first).

    ``zero_partial_sums[:, i]`` is sum_c r[l_i, c]^2 over the channels of
    ``zero_layers[i]`` and ``avg_partial_sums[:, i]`` is sum_c m[l_i, c]^2 over the
    channels of ``inner_layers[i]``, so the score for any subset of layers is recomputed
    from these without the model (:func:`gaia_z_from_partials`, :func:`gaia_a_from_partials`).
    """

    logits: Tensor
    zero_layers: list[str] = field(default_factory=list)
    nonzero_ratio: dict[str, Tensor] = field(default_factory=dict)  # r[l]: (B, C_l), float64
    inner_layers: list[str] = field(default_factory=list)
    head_layer: str | None = None
    channel_mean_grad: dict[str, Tensor] = field(default_factory=dict)  # m[l]: (B, C_l)
    output_component: Tensor | None = None  # o: (B,)
    features: Tensor | None = None  # input of the last Linear (penultimate), when asked
    input_grad: Tensor | None = None  # d input_objective / d x, when asked (on x's device)

    @property
    def predictions(self) -> Tensor:
        return self.logits.argmax(dim=1)

    @property
    def zero_channel_counts(self) -> np.ndarray:
        return np.array([self.nonzero_ratio[n].shape[1] for n in self.zero_layers])

    @property
    def zero_partial_sums(self) -> Tensor:
        return torch.stack([(self.nonzero_ratio[n] ** 2).sum(1) for n in self.zero_layers], 1)

    @property
    def avg_channel_counts(self) -> np.ndarray:
        return np.array([self.channel_mean_grad[n].shape[1] for n in self.inner_layers])

    @property
    def avg_partial_sums(self) -> Tensor:
        return torch.stack([(self.channel_mean_grad[n] ** 2).sum(1) for n in self.inner_layers], 1)

    @property
    def gaia_z(self) -> Tensor:
        return torch.as_tensor(gaia_z_from_partials(
            self.zero_partial_sums.numpy(), self.zero_channel_counts))

    @property
    def gaia_a(self) -> Tensor:
        return torch.as_tensor(gaia_a_from_partials(
            self.avg_partial_sums.numpy(), self.avg_channel_counts,
            self.output_component.numpy()))


def gaia_z_from_partials(partial_sums: np.ndarray, channel_counts: np.ndarray,
                         layer_mask: np.ndarray | None = None) -> np.ndarray:
    """GAIA-Z over a subset of layers: sum of chosen partial sums / chosen channel count.

    ``partial_sums``: (N, L) of sum_c r[l, c]^2; ``channel_counts``: (L,);
    ``layer_mask``: (L,) booleans (None = all layers).
    """
    partial_sums = np.asarray(partial_sums, dtype=np.float64)
    mask = _layer_mask(layer_mask, partial_sums.shape[1])
    return partial_sums[:, mask].sum(1) / np.asarray(channel_counts)[mask].sum()


def gaia_a_from_partials(partial_sums: np.ndarray, channel_counts: np.ndarray,
                         output_component: np.ndarray,
                         layer_mask: np.ndarray | None = None) -> np.ndarray:
    """GAIA-A over a subset of inner layers: sum of m^2 / (o^2 * chosen channel count)."""
    partial_sums = np.asarray(partial_sums, dtype=np.float64)
    mask = _layer_mask(layer_mask, partial_sums.shape[1])
    denominator = np.asarray(output_component, dtype=np.float64) ** 2 * np.asarray(channel_counts)[mask].sum()
    with np.errstate(divide="ignore", invalid="ignore"):
        return partial_sums[:, mask].sum(1) / denominator


def _layer_mask(layer_mask, num_layers: int) -> np.ndarray:
    if layer_mask is None:
        return np.ones(num_layers, dtype=bool)
    mask = np.asarray(layer_mask, dtype=bool)
    if mask.shape != (num_layers,):
        raise LayerError(f"layer mask has shape {mask.shape}, expected ({num_layers},)")
    if not mask.any():
        raise LayerError("no layer selected: pick at least one layer")
    return mask


# --------------------------------------------------------------------------- scores


def _nonzero_count(grad: Tensor, info: LayerInfo) -> Tensor:
    # |sign(g)| is exactly 1 where g != 0 and 0 where g == 0 (also -0.0); summing these
    # ones in float32 is exact below 2**24 positions and several times faster on the CPU
    # than count_nonzero, which widens a bool mask to int64. A NaN gradient gives NaN.
    return _channels_first(grad, info).sign().abs_().sum(dim=(2, 3), dtype=torch.float32)


def _channel_mean(grad: Tensor, info: LayerInfo) -> Tensor:
    return _channels_first(grad, info).mean(dim=(2, 3))


def _zero_pass(result, logits, tap, layout, layers):
    def run(retain_graph):
        counts = _reduced_grads(
            logits.max(dim=1).values.sum(), {n: tap.outputs[n] for n in layers},
            lambda name, grad: _nonzero_count(grad, layout.info(name)), retain_graph)
        for name in layers:  # to the CPU after the pass: a copy inside a hook would stall it
            info = layout.info(name)
            result.nonzero_ratio[name] = counts[name].cpu().double() / (info.height * info.width)
    return run


def _output_component_pass(result, logits, tap, layout, head):
    def run(retain_graph):
        (head_grad,) = _grads(F.log_softmax(logits, dim=1).sum(), [tap.outputs[head]], retain_graph)
        per_channel = _channel_mean(head_grad, layout.info(head))
        result.output_component = per_channel.abs().mean(1).sqrt().double().cpu()
    return run


def _inner_pass(result, tap, layout, linear, layers):
    def run(retain_graph):
        means = _reduced_grads(
            tap.inputs[linear].sum(), {n: tap.outputs[n] for n in layers},
            lambda name, grad: _channel_mean(grad, layout.info(name)), retain_graph)
        result.channel_mean_grad.update((name, means[name].double().cpu()) for name in layers)
    return run


def _input_pass(result, logits, tap, input_objective):
    def run(retain_graph):
        (result.input_grad,) = _grads(input_objective(logits), [tap.input], retain_graph)
    return run


def gaia_analyze(model: nn.Module, x: Tensor, layers: Sequence[str] | None = None,
                 inner_layers: Sequence[str] | None = None, head_layer: str | None = None,
                 device=None, zero: bool = True, average: bool = True,
                 capture_features: bool = False, input_objective=None) -> GaiaResult:
    """Everything GAIA computes for a batch, per sample and per layer, in one forward.

    ``layers``: GAIA-Z layers (None = every normalisation layer over feature maps);
    ``inner_layers``/``head_layer``: GAIA-A (None = norm layers of the last two stages /
    the feature map the global pooling reads). ``zero``/``average`` switch either part off.
    ``capture_features`` also keeps the penultimate features (the input of the last
    Linear) so forward-only detectors can share this forward pass; ``input_objective``
    (a function of the logits) adds its gradient with respect to the input
    (``result.input_grad``), so ODIN can share it too.
    """
    x = _prepare_input(model, x, device)
    layout = model_layout(model, x)
    zero_layers = _resolve(layout, layers, layout.default_zero_layers) if zero else []
    if average:
        inner = _resolve(layout, inner_layers, layout.default_inner_layers)
        head = head_layer if head_layer is not None else layout.default_head_layer()
        layout.info(head)
        linear = layout.before_head_linear(head)
    else:
        inner, head, linear = [], None, None
    taps = list(dict.fromkeys(zero_layers + inner + ([head] if head else [])))
    if not taps:
        raise LayerError("nothing to compute: both GAIA-Z and GAIA-A are switched off")

    result = GaiaResult(logits=torch.empty(0), zero_layers=zero_layers, inner_layers=inner,
                        head_layer=head)
    last_linear = layout.linear_layers[-1][0] if capture_features and layout.linear_layers else None
    if capture_features and last_linear is None:
        raise ModelError("the model has no nn.Linear head, so it has no penultimate features")
    inputs_of = [name for name in (linear, last_linear) if name is not None]
    with _tapped_forward(model, x, taps, inputs_of=inputs_of,
                         input_leaf=input_objective is not None) as (logits, tap):
        result.logits = logits.detach().float().cpu()
        if last_linear is not None:
            result.features = tap.inputs[last_linear].detach().flatten(1).float().cpu()
        # one backward pass per objective; the last one frees the graph as it goes
        passes = []
        if average:
            passes += [_output_component_pass(result, logits, tap, layout, head),
                       _inner_pass(result, tap, layout, linear, inner)]
        if zero:
            passes.append(_zero_pass(result, logits, tap, layout, zero_layers))
        if input_objective is not None:
            passes.append(_input_pass(result, logits, tap, input_objective))
        for i, run_pass in enumerate(passes):
            run_pass(retain_graph=i < len(passes) - 1)
    return result


def gaia_z(model: nn.Module, x: Tensor, layers: Sequence[str] | None = None,
           device=None) -> Tensor:
    """GAIA-Z score per sample, shape (B,), higher = more OOD."""
    return gaia_analyze(model, x, layers=layers, device=device, average=False).gaia_z


def gaia_a(model: nn.Module, x: Tensor, inner_layers: Sequence[str] | None = None,
           head_layer: str | None = None, device=None) -> Tensor:
    """GAIA-A score per sample, shape (B,), higher = more OOD."""
    return gaia_analyze(model, x, inner_layers=inner_layers, head_layer=head_layer,
                        device=device, zero=False).gaia_a


# --------------------------------------------------------------------------- maps

OBJECTIVES = {
    "max_logit": "sum of each sample's maximum logit (GAIA-Z)",
    "log_softmax_sum": "sum of log-softmax over all classes (GAIA-A output component)",
    "before_head_sum": "sum of the pooled features fed to the classifier (GAIA-A inner)",
}


def layer_gradients(model: nn.Module, x: Tensor, layers: Sequence[str],
                    objective: str = "max_logit", device=None) -> dict[str, Tensor]:
    """Gradients of a GAIA objective w.r.t. layer outputs, channels first (B, C, H, W), CPU."""
    if objective not in OBJECTIVES:
        raise ValueError(f"unknown objective {objective!r}; choose one of {sorted(OBJECTIVES)}")
    x = _prepare_input(model, x, device)
    layout = model_layout(model, x)
    layers = _resolve(layout, layers, layout.default_zero_layers)
    linear = None
    if objective == "before_head_sum":
        linear = layout.before_head_linear(layout.default_head_layer())
    with _tapped_forward(model, x, layers, inputs_of=[linear] if linear else []) as (logits, tap):
        if objective == "max_logit":
            value = logits.max(dim=1).values.sum()
        elif objective == "log_softmax_sum":
            value = F.log_softmax(logits, dim=1).sum()
        else:
            value = tap.inputs[linear].sum()
        grads = _grads(value, [tap.outputs[n] for n in layers], retain_graph=False)
    return {name: _channels_first(g, layout.info(name)).detach().cpu() for name, g in zip(layers, grads)}


def spatial_maps(model: nn.Module, x: Tensor, layer: str, device=None) -> dict[str, Tensor]:
    """Per-image H x W maps at one layer, for display.

    - ``nonzero_fraction``: fraction of channels whose GAIA-Z gradient (max-logit
      objective) is non-zero at each position, in [0, 1];
    - ``abs_channel_mean``: |mean over channels| of the GAIA-A inner gradient
      (before-head objective) at each position.
    """
    zero_grad = layer_gradients(model, x, [layer], "max_logit", device)[layer]
    avg_grad = layer_gradients(model, x, [layer], "before_head_sum", device)[layer]
    return {
        "nonzero_fraction": (zero_grad != 0).float().mean(dim=1),
        "abs_channel_mean": avg_grad.mean(dim=1).abs(),
    }


def describe_layers(model: nn.Module, x: Tensor) -> list[dict]:
    """The hookable feature layers of ``model`` for inputs like ``x`` (for pickers)."""
    layout = model_layout(model, _prepare_input(model, x, None))
    return [
        dict(name=i.name, kind=i.kind, channels=i.channels, height=i.height, width=i.width,
             is_norm=i.is_norm)
        for i in layout.feature_layers
    ]


def default_layers(model: nn.Module, x: Tensor) -> dict:
    """The layers GAIA uses when none are given: {'zero': [...], 'inner': [...], 'head': name}."""
    layout = model_layout(model, _prepare_input(model, x, None))
    return dict(zero=layout.default_zero_layers(), inner=layout.default_inner_layers(),
                head=layout.default_head_layer())


__all__ = [
    "GaiaResult", "LayerInfo", "ModelLayout", "OBJECTIVES", "default_layers",
    "describe_layers", "gaia_a", "gaia_a_from_partials", "gaia_analyze", "gaia_z",
    "gaia_z_from_partials", "layer_gradients", "model_layout", "spatial_maps",
]
