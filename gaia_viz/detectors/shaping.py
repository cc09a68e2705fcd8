"""Activation shaping, shared by ASH and SCALE: reshape one sample's activations, re-run only
the classifier head on them, score the new logits with the energy.

Where the activations are read (``placement``):

* ``"pooled"`` (default): the penultimate features, the head's input after global pooling.
  This is where the papers' code shapes them: the ASH reference code
  (``x = self.avgpool(x); x = apply_ash(x); x = self.fc(flatten(x))``), OpenOOD v1.5's
  ``ASHNet`` / ``ScaleNet`` (on the pooled ``B x D x 1 x 1`` tensor) and pytorch-ood's note
  that pooled features are passed as ``B x D x 1 x 1``.
* ``"map"``: the feature map the global pooling reads (``ForwardOutputs.feature_map``, the
  last layer with spatial extent), shaped over all ``C*H*W`` activations of a sample, then
  averaged over space and fed to the head (pytorch-ood's ``FeatureMapsDetector`` example).
  That is only the model's own continuation when the head's input is exactly the spatial
  mean of that map, so the first batch checks it and refuses the model otherwise.

Both prune by the reference code's count: of ``n`` activations the ``k = n -
round(n * percentile / 100)`` largest are kept (``round`` half to even, as ``np.round``);
ties at the cut are broken by ``torch.topk``.
"""

from __future__ import annotations

import abc
from typing import ClassVar

import torch
from torch import Tensor

from gaia_viz.detectors.base import Detector, check_percentile, energy_from_logits, refuse_non_finite
from gaia_viz.errors import ModelError
from gaia_viz.forward import ForwardNeeds, ForwardOutputs, pooled_map_layer
from gaia_viz.models.heads import classifier_head

PLACEMENTS = ("pooled", "map")
# the head's input must equal the map's spatial mean to this relative precision (float32 sums)
POOLING_TOLERANCE = 1e-4


def kept_count(n: int, percentile: float) -> int:
    """How many of ``n`` activations survive pruning the lowest ``percentile`` percent."""
    return n - int(round(n * percentile / 100.0))


def top_activations(flat: Tensor, percentile: float) -> tuple[Tensor, Tensor]:
    """``(values, indices)`` of the kept, largest activations of each row of ``flat[B, n]``;
    ModelError when the percentile keeps none."""
    k = kept_count(flat.shape[1], percentile)
    if k < 1:
        raise ModelError(f"percentile {percentile} keeps none of the {flat.shape[1]} activations; lower it")
    return torch.topk(flat, k, dim=1)


def sharpening_exponent(total: Tensor, kept_total: Tensor) -> Tensor:
    """``s1 / s2`` per sample, 0 where both sums are 0 (an all-zero sample stays all zero
    whatever it is multiplied by); other zero ``s2`` give inf/NaN, refused downstream."""
    both_zero = (total == 0) & (kept_total == 0)
    return torch.where(both_zero, torch.zeros_like(total), total / kept_total)


def check_pooled_map(model, outputs: ForwardOutputs, method: str) -> None:
    """ModelError unless the head's input (``outputs.features``) is the spatial mean of the
    captured feature map (``outputs.feature_map``)."""
    feature_map, features = outputs.feature_map, outputs.features
    if feature_map is None or features is None or feature_map.ndim != 4:
        raise ModelError(f"{method} with placement='map' needs the feature map the global pooling reads "
                         "and the pooled features; this model gives no such map: use placement='pooled'")
    layer = pooled_map_layer(model, outputs.x)
    if feature_map.shape[1] != features.shape[1]:
        raise ModelError(
            f"{method} with placement='map': the last spatial layer {layer!r} has {feature_map.shape[1]} channels "
            f"but the classifier head reads {features.shape[1]} features, so the head's input is not the "
            "pooled map; use placement='pooled'")
    spatial_mean = feature_map.float().mean(dim=(2, 3)).cpu()
    difference = float((spatial_mean - features).abs().max())
    scale = float(features.abs().max())
    if not difference <= POOLING_TOLERANCE * scale + 1e-6:
        raise ModelError(
            f"{method} with placement='map': the classifier head's input is not the spatial mean of the last "
            f"spatial layer {layer!r} (max |difference| {difference:.3g} for features up to {scale:.3g}; the "
            "model pools otherwise or transforms the map after it), so shaping that map and re-running the "
            "head would not be the model; use placement='pooled'")


class ActivationShaping(Detector):
    """Base of ASH and SCALE: :meth:`shape` the activations, re-run the head, energy score
    ``-logsumexp(g(shaped))`` (OOD-high; the papers' ``logsumexp`` is ID-high)."""

    forward_only: ClassVar[bool] = True  # a function of the shared forward's outputs

    def __init__(self, model, percentile: float, placement: str):
        super().__init__(model)
        self.percentile = check_percentile("percentile", percentile, low_open=False, high_open=True)
        placement = str(placement).strip().lower()
        if placement not in PLACEMENTS:
            raise ModelError(f"placement must be one of {', '.join(PLACEMENTS)}, got {placement!r}")
        self.placement = placement
        self._map_checked = False

    @abc.abstractmethod
    def shape(self, flat: Tensor) -> Tensor:
        """The shaped activations ``(B, n)`` of one row per sample ``flat[B, n]``."""

    def needs(self) -> ForwardNeeds:
        return ForwardNeeds(features=True, feature_map=self.placement == "map")

    def validate_outputs(self, outputs: ForwardOutputs) -> None:
        if self.placement == "map" and not self._map_checked:
            check_pooled_map(self.model, outputs, self.label)
            self._map_checked = True

    NON_FINITE_REASON = ("the sharpening factor exp(s1/s2) overflowed or the kept activations sum to zero; activation "
                         "shaping assumes non-negative (post-ReLU) activations, and a lower percentile keeps more of them")

    def score_forward(self, outputs: ForwardOutputs) -> Tensor:
        return refuse_non_finite(self.raw_scores(outputs), self.label, self.NON_FINITE_REASON)

    def explain_non_finite(self, arrays) -> str:
        return self.NON_FINITE_REASON

    def raw_scores(self, outputs: ForwardOutputs) -> Tensor:
        self.validate_outputs(outputs)
        head = classifier_head(self.model)
        with torch.no_grad():
            if self.placement == "pooled":
                pooled = self.shape(outputs.features.float())
            else:
                feature_map = outputs.feature_map.float()
                pooled = self.shape(feature_map.flatten(1)).view_as(feature_map).mean(dim=(2, 3))
            logits = head(pooled).float().cpu()
        return energy_from_logits(logits)
