"""What the model can feed, found on one image before anything is scored: the model's own
forward pass (:func:`check_model_runs`), the methods it cannot feed (:func:`unusable_methods`),
whether its pooled features can be kept (:func:`has_features`) and GAIA's layers as it
resolves them (:func:`resolve_layers`)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping

import torch
from torch import nn

from gaia_viz.detectors import Detector
from gaia_viz.errors import GaiaVizError, ModelError
from gaia_viz.forward import ForwardNeeds, merge_needs, shared_forward
from gaia_viz.model_state import model_device


@dataclass
class ResolvedLayers:
    """GAIA's layers as the model resolves them (defaults made explicit)."""

    zero: list[str]
    inner: list[str]
    head: str | None
    zero_channels: list[int]
    inner_channels: list[int]

    def as_dict(self) -> dict:
        return dict(zero=self.zero, inner=self.inner, head=self.head)


def resolve_layers(model: nn.Module, sample: torch.Tensor, needs: ForwardNeeds) -> ResolvedLayers:
    """The GAIA layers ``needs`` asks for, resolved for inputs like ``sample`` (C, H, W);
    LayerError for unknown names before anything is scored."""
    from gaia_viz.gaia import model_layout

    layout = model_layout(model, sample.unsqueeze(0).to(model_device(model)))
    zero = layout.resolve_zero_layers(needs.zero_layers) if needs.gaia_z else []
    inner = layout.resolve_inner_layers(needs.inner_layers) if needs.gaia_a else []
    head = layout.resolve_head_layer(needs.head_layer) if needs.gaia_a else None
    return ResolvedLayers(zero=zero, inner=inner, head=head,
                          zero_channels=[layout.info(n).channels for n in zero],
                          inner_channels=[layout.info(n).channels for n in inner])


def check_model_runs(model: nn.Module, sample: torch.Tensor) -> torch.Tensor:
    """The model's own forward pass (no hooks, no gradients) on the one image ``sample``
    (C, H, W); returns its logits (1, classes). An error here is the model's, not a
    method's, so it stops the run: ModelError saying what failed (non-finite logits too)."""
    x = sample.unsqueeze(0).to(model_device(model))
    try:
        return shared_forward(model, x, ForwardNeeds(), warn_without_zeros=False).logits
    except GaiaVizError:
        raise
    except Exception as exc:  # the model's own code failed on this input
        raise ModelError(f"the model's own forward pass failed on an image of shape {tuple(x.shape)}: "
                         f"{type(exc).__name__}: {exc}") from exc


def unusable_methods(model: nn.Module, sample: torch.Tensor, detectors: Mapping[str, Detector]) -> dict[str, str]:
    """``{method: reason}`` for the detectors that cannot run on this model (no classifier
    head, no pooled features, a feature map the head does not pool, GAIA on a token model or
    on a model with nothing to hook, ...), found on the one image ``sample`` (C, H, W): one
    shared forward with every detector's needs, and only when that fails one forward per
    detector. The reason is the error's message, whatever its class (ModelError,
    LayerError, ...). The model's own forward pass is checked first
    (:func:`check_model_runs`): when it fails, that error is raised, as no method can run."""
    return {method: reason(exc) for method, exc in method_errors(model, sample, detectors).items()}


def method_errors(model: nn.Module, sample: torch.Tensor, detectors: Mapping[str, Detector]) -> dict[str, Exception]:
    """:func:`unusable_methods` with the errors themselves."""
    check_model_runs(model, sample)
    x = sample.unsqueeze(0).to(model_device(model))
    try:
        outputs = shared_forward(model, x, merge_needs(d.needs() for d in detectors.values()),
                                 warn_without_zeros=False)  # judged per data set
    except Exception:  # some method's needs cannot be met: find which, one by one
        outputs = None
    errors = {}
    for method, detector in detectors.items():
        try:
            if outputs is None:
                detector.check_model(x)
            else:
                detector.validate_outputs(outputs)
        except Exception as exc:  # the model ran above, so this is the method's problem
            errors[method] = exc
    return errors


def reason(exc: Exception) -> str:
    """A left-out method's reason: the message of a GaiaVizError, else the class too."""
    return str(exc) if isinstance(exc, GaiaVizError) else f"{type(exc).__name__}: {exc}"


def has_features(model: nn.Module, sample: torch.Tensor) -> bool:
    """True when the model's pooled penultimate features can be captured (a classifier head
    whose input they are), tried on one image; the sweep then keeps them
    (:data:`~gaia_viz.sweep.identity.FEATURES`)."""
    try:
        shared_forward(model, sample.unsqueeze(0).to(model_device(model)), ForwardNeeds(features=True),
                       warn_without_zeros=False)
    except ModelError:
        return False
    return True


__all__ = ["ResolvedLayers", "check_model_runs", "has_features", "method_errors", "reason", "resolve_layers",
           "unusable_methods"]
