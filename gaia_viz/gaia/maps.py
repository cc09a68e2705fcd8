"""Per-layer gradients and H x W maps of one batch, for display (Inspect, How GAIA works)."""

from __future__ import annotations

import warnings
from typing import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from gaia_viz.errors import LayerFallbackWarning, ModelError
from gaia_viz.gaia.autograd import grads, prepare_input, tapped_forward
from gaia_viz.gaia.layout import model_layout


OBJECTIVES = {
    "max_logit": "sum of each sample's maximum logit (GAIA-Z)",
    "log_softmax_sum": "sum of log-softmax over all classes (GAIA-A output component)",
    "before_head_sum": "sum of the pooled features fed to the classifier (GAIA-A inner)",
}


def layer_gradients(model: nn.Module, x: Tensor, layers: Sequence[str],
                    objective: str = "max_logit", device=None, target=None) -> dict[str, Tensor]:
    """Gradients of a GAIA objective w.r.t. layer outputs, channels first (B, C, H, W), CPU.

    ``target`` (``max_logit`` only): a class index, or one per sample, whose logit replaces
    each sample's maximum logit in the objective (Captum's ``target``); None is GAIA's own.
    """
    if objective not in OBJECTIVES:
        raise ModelError(f"unknown objective {objective!r}; choose one of {sorted(OBJECTIVES)}")
    if target is not None and objective != "max_logit":
        raise ModelError(f"target applies to the max_logit objective only, not to {objective!r} "
                         "(it sums over every class or over the pooled features)")
    x = prepare_input(model, x, device)
    layout = model_layout(model, x)
    layers = layout.resolve_zero_layers(layers)
    linear = None
    if objective == "before_head_sum":
        linear = layout.classifier_after(layout.resolve_head_layer())
    with tapped_forward(model, x, layers, inputs_of=[linear] if linear else []) as (logits, tap):
        if objective == "max_logit" and target is not None:
            value = logits.gather(1, _target_index(target, logits)).sum()
        elif objective == "max_logit":
            value = logits.max(dim=1).values.sum()
        elif objective == "log_softmax_sum":
            value = F.log_softmax(logits, dim=1).sum()
        else:
            value = tap.inputs[linear].sum()
        layer_grads = grads(value, [tap.outputs[n] for n in layers], retain_graph=False)
    return {name: layout.info(name).channels_first(g).detach().cpu() for name, g in zip(layers, layer_grads)}


def _target_index(target, logits: Tensor) -> Tensor:
    """``target`` as a (B, 1) index into the logits: one class for all, or one per sample."""
    batch, classes = logits.shape[0], logits.shape[1]
    index = torch.as_tensor(target, device=logits.device).reshape(-1)
    if index.is_floating_point() or index.is_complex() or index.dtype == torch.bool:
        raise ModelError(f"target must hold class indices (integers), got {index.dtype}")
    if index.numel() == 1:
        index = index.expand(batch)
    if index.numel() != batch:
        raise ModelError(f"target has {index.numel()} class indices for a batch of {batch}: "
                         "give one index, or one per sample")
    if bool(((index < 0) | (index >= classes)).any()):
        raise ModelError(f"target classes must lie in [0, {classes - 1}], got {index.tolist()}")
    return index.long().view(-1, 1)


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
    layout = model_layout(model, prepare_input(model, x, None))
    return [
        dict(name=i.name, kind=i.kind, channels=i.channels, height=i.height, width=i.width,
             is_norm=i.is_norm)
        for i in layout.feature_layers
    ]


def default_layers(model: nn.Module, x: Tensor) -> dict:
    """The layers GAIA uses when none are given: {'zero': [...], 'inner': [...], 'head': name}
    (a :class:`~gaia_viz.errors.LayerFallbackWarning` when they are convolution outputs)."""
    layout = model_layout(model, prepare_input(model, x, None))
    note = layout.conv_fallback_note()
    if note:
        warnings.warn(note, LayerFallbackWarning, stacklevel=2)
    return dict(zero=layout.resolve_zero_layers(), inner=layout.resolve_inner_layers(),
                head=layout.resolve_head_layer())


