"""GAIA-Z and GAIA-A scores: one forward pass, the gradient passes each needs, per-sample
and per-layer results (:class:`GaiaResult`), and scores recomputed for any layer subset
from the per-layer partial sums (:func:`gaia_z_from_partials`, :func:`gaia_a_from_partials`).
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field
from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from gaia_viz.errors import LayerError, LayerFallbackWarning, NonFiniteScoreWarning
from gaia_viz.notes import non_finite_note
from gaia_viz.gaia.autograd import grads, prepare_input, reduced_grads, tapped_forward
from gaia_viz.gaia.layout import LayerInfo, model_layout
from gaia_viz.gaia.zeros import (
    ZeroGradientWarning,
    activation_kinds,
    all_zero_note,
    all_zero_samples,
    exact_zero_fraction,
    lacks_exact_zeros,
    no_exact_zeros_note,
    warn_no_exact_zeros,
)



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
    features: Tensor | None = None  # input of the classifier head (penultimate), when asked
    input_grad: Tensor | None = None  # d input_objective / d x, when asked (on x's device)
    kept: dict[str, Tensor] = field(default_factory=dict)  # keep_outputs: detached, on x's device
    # GAIA-Z's data-dependent exact zeros per sample (:func:`gaia_viz.gaia.zeros.exact_zero_fraction`)
    exact_zero_fraction: Tensor | None = None
    exact_zeros_note: str | None = None  # the warning when the batch has almost none
    all_zero: Tensor | None = None  # (B,) bool: every hooked gradient entry exactly zero (r = 0 everywhere)
    zero_gradients_note: str | None = None  # the warning when some samples are all_zero
    non_finite_note: str | None = None  # the warning when some GAIA-A scores are inf/NaN (o = 0)
    layers_note: str | None = None  # the warning when the default layers are a fallback (convolutions)

    @property
    def lacks_exact_zeros(self) -> bool:
        """True when GAIA-Z was computed and its gradients hold almost no exact zeros, so the
        score carries no information (``exact_zeros_note`` says why)."""
        if self.exact_zero_fraction is None:
            return False
        fraction = self.exact_zero_fraction[~self.all_zero] if self.all_zero is not None else self.exact_zero_fraction
        return bool(len(fraction)) and lacks_exact_zeros(float(fraction.mean()))  # all-zero samples: another note

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


# why GAIA-A is not finite where its output component is 0 (the score divides by o^2)
GAIA_A_ZERO_OUTPUT = "the output component o is 0 for these images"
_UNIFORM = ("the softmax is uniform (every class has the same logit, e.g. a head with zero weights: the gradient "
            "of sum_k log_softmax(f(x))_k is 1 - C * softmax(f(x)), which is then 0)")
_CUT = ("the output does not depend on the head layer for these inputs (every path from it to the logits passes "
        "an inactive ReLU)")
_DIVIDES = "and GAIA-A divides by o^2 (x / 0 = inf, 0 / 0 = NaN)"


def gaia_a_non_finite_reason(output_component: np.ndarray, uniform: np.ndarray | None = None) -> str:
    """Why GAIA-A is not finite on samples with output components ``output_component``;
    ``uniform``: per sample, whether its logits are all equal (None: not known, both causes
    of o = 0 are named)."""
    o = np.asarray(output_component, dtype=np.float64)
    zero = o == 0
    if not zero.any():
        return "a gradient is inf or NaN (it overflowed in the backward pass)"
    if uniform is None:
        cause = f"the gradient at the head layer is exactly zero: {_UNIFORM}, or {_CUT}"
    else:
        uniform = np.asarray(uniform, dtype=bool)
        cause = _UNIFORM if uniform[zero].all() else _CUT if not uniform[zero].any() else f"{_UNIFORM}, or {_CUT}"
    reason = f"{GAIA_A_ZERO_OUTPUT}: {cause}, {_DIVIDES}"
    if not zero.all():
        reason = f"for {int(zero.sum())} of them {reason}; for the others a gradient overflowed"
    return reason


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



def _nonzero_count(grad: Tensor, info: LayerInfo) -> Tensor:
    # |sign(g)| is exactly 1 where g != 0 and 0 where g == 0 (also -0.0); summing these
    # ones in float32 is exact below 2**24 positions and several times faster on the CPU
    # than count_nonzero, which widens a bool mask to int64. A NaN gradient gives NaN.
    return info.channels_first(grad).sign().abs_().sum(dim=(2, 3), dtype=torch.float32)


def _channel_mean(grad: Tensor, info: LayerInfo) -> Tensor:
    return info.channels_first(grad).mean(dim=(2, 3))


def _zero_pass(result, logits, tap, layout, layers):
    def run(retain_graph):
        counts = reduced_grads(
            logits.max(dim=1).values.sum(), {n: tap.outputs[n] for n in layers},
            lambda name, grad: _nonzero_count(grad, layout.info(name)), retain_graph)
        for name in layers:  # to the CPU after the pass: a copy inside a hook would stall it
            info = layout.info(name)
            result.nonzero_ratio[name] = counts[name].cpu().double() / info.positions
        ratios = torch.cat([result.nonzero_ratio[n] for n in layers], 1).numpy()
        result.exact_zero_fraction = torch.as_tensor(exact_zero_fraction(
            ratios, [result.nonzero_ratio[n].shape[1] for n in layers]))
        result.all_zero = torch.as_tensor(all_zero_samples(ratios))
    return run


def _output_component_pass(result, logits, tap, layout, head):
    def run(retain_graph):
        (head_grad,) = grads(F.log_softmax(logits, dim=1).sum(), [tap.module_outputs[head]], retain_graph)
        per_channel = _channel_mean(head_grad, layout.info(head))
        result.output_component = per_channel.abs().mean(1).sqrt().double().cpu()
    return run


def _inner_pass(result, tap, layout, linear, layers):
    def run(retain_graph):
        means = reduced_grads(
            tap.inputs[linear].sum(), {n: tap.outputs[n] for n in layers},
            lambda name, grad: _channel_mean(grad, layout.info(name)), retain_graph)
        result.channel_mean_grad.update((name, means[name].double().cpu()) for name in layers)
    return run


def _input_pass(result, logits, tap, input_objective):
    def run(retain_graph):
        (result.input_grad,) = grads(input_objective(logits), [tap.input], retain_graph)
    return run


def gaia_analyze(model: nn.Module, x: Tensor, layers: Sequence[str] | None = None,
                 inner_layers: Sequence[str] | None = None, head_layer: str | None = None,
                 device=None, zero: bool = True, average: bool = True,
                 capture_features: bool = False, input_objective=None,
                 keep_outputs: Sequence[str] = (), warn_without_zeros: bool = True) -> GaiaResult:
    """Everything GAIA computes for a batch, per sample and per layer, in one forward.

    ``layers``: GAIA-Z layers (None = every normalisation layer over feature maps);
    ``inner_layers``/``head_layer``: GAIA-A (None = norm layers of the last two stages /
    the feature map the global pooling reads). ``zero``/``average`` switch either part off.

    So that other detectors can share this forward pass: ``capture_features`` keeps the
    penultimate features (the input of the classifier head, :mod:`gaia_viz.models.heads`);
    ``keep_outputs`` keeps the (detached) outputs of these layers (``result.kept``);
    ``input_objective`` (a function of the logits) adds its gradient with respect to the
    input (``result.input_grad``, on the input's device). With both GAIA parts off, the
    pass computes just what those ask for.

    When the GAIA-Z gradients of the batch hold almost no exact zeros (smooth activations:
    :mod:`gaia_viz.gaia.zeros`), ``result.lacks_exact_zeros`` is set, ``exact_zeros_note``
    says why and, with ``warn_without_zeros``, a :class:`~gaia_viz.gaia.zeros.NoExactZerosWarning`
    is issued (the sweep judges whole data sets instead and records a note). Where GAIA-A is
    inf or NaN (its output component ``o`` is 0: a uniform softmax), ``non_finite_note`` says
    for how many images and why, and with ``warn_without_zeros`` a
    :class:`~gaia_viz.errors.NonFiniteScoreWarning` is issued. A model without normalisation
    layers has convolution outputs as its default layers: ``layers_note`` says so, and with
    ``warn_without_zeros`` a :class:`~gaia_viz.errors.LayerFallbackWarning` (once per call).
    """
    from gaia_viz.models.heads import classifier_head

    x = prepare_input(model, x, device)
    layout = model_layout(model, x)
    zero_layers = layout.resolve_zero_layers(layers) if zero else []
    if average:
        inner = layout.resolve_inner_layers(inner_layers)
        head = layout.resolve_head_layer(head_layer)
        linear = layout.classifier_after(head)
    else:
        inner, head, linear = [], None, None
    # a model without normalisation layers: the default layers are convolution outputs, said once per call
    defaults = [label for label, used in (("GAIA-Z", zero and layers is None), ("GAIA-A", average and (
        inner_layers is None and layout.declared.inner_layers is None))) if used]
    result_layers_note = layout.conv_fallback_note(" and ".join(defaults)) if defaults else None
    if result_layers_note and warn_without_zeros:
        warnings.warn(result_layers_note, LayerFallbackWarning, stacklevel=2)
    taps = list(dict.fromkeys(zero_layers + inner))
    if not taps and head is None and input_objective is None:
        raise LayerError("nothing to compute: both GAIA-Z and GAIA-A are switched off")

    result = GaiaResult(logits=torch.empty(0), zero_layers=zero_layers, inner_layers=inner,
                        head_layer=head, layers_note=result_layers_note)
    classifier = classifier_head(model) if capture_features else None
    inputs_of = list(dict.fromkeys(n for n in (linear, classifier and classifier.name) if n))
    with tapped_forward(model, x, taps, inputs_of=inputs_of, keep_outputs=keep_outputs,
                        module_outputs=[head] if head else [],
                        input_leaf=input_objective is not None) as (logits, tap):
        result.logits = logits.detach().float().cpu()
        if classifier is not None:
            result.features = classifier.features_from_input(tap.inputs[classifier.name]).detach().float().cpu()
        result.kept = dict(tap.kept)
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
    if result.all_zero is not None and bool(result.all_zero.any()):
        result.zero_gradients_note = all_zero_note(int(result.all_zero.sum()), len(result.all_zero))
        if warn_without_zeros:
            warnings.warn(result.zero_gradients_note, ZeroGradientWarning, stacklevel=2)
    if result.lacks_exact_zeros:
        result.exact_zeros_note = no_exact_zeros_note(
            float(result.exact_zero_fraction[~result.all_zero].mean()), activation_kinds(model))
        if warn_without_zeros:
            warn_no_exact_zeros(result.exact_zeros_note)
    if average:
        scores = result.gaia_a.numpy()
        if not np.isfinite(scores).all():
            bad = ~np.isfinite(scores)
            logits = result.logits.numpy()
            uniform = (logits.max(axis=1) == logits.min(axis=1))[bad]
            result.non_finite_note = non_finite_note(
                "GAIA-A", {"this batch": scores}, gaia_a_non_finite_reason(result.output_component.numpy()[bad], uniform))
            if warn_without_zeros:
                warnings.warn(result.non_finite_note, NonFiniteScoreWarning, stacklevel=2)
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
