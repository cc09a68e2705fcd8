"""ReAct: rectified activations followed by the energy score."""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor

from gaia_viz.detectors.base import OutputDetector, check_percentile, check_positive, energy_from_logits, register
from gaia_viz.models.heads import classifier_head


@register
class ReAct(OutputDetector):
    """ReAct (Sun, Guo & Li, "ReAct: out-of-distribution detection with rectified
    activations", NeurIPS 2021).

    ``fit`` sets ``c`` to the ``percentile``-th percentile (default 90) of all penultimate
    activations (every element of every feature vector) on ID data. Scoring truncates the
    penultimate features and re-applies the head ``g``::

        score(x) = -T * logsumexp(g(min(h(x), c)) / T)     (energy, T = 1 by default)

    Labels from the loader are not used.
    """

    name = "react"
    label = "ReAct"
    needs_fit = True
    fitted_keys = ("clip_value",)

    def __init__(self, model, percentile: float = 90.0, temperature: float = 1.0):
        super().__init__(model)
        self.percentile = check_percentile("percentile", percentile)
        self.temperature = check_positive("temperature", temperature)
        self.clip_value: float | None = None

    def fit_features(self, features: Tensor, logits: Tensor, labels: Tensor) -> "ReAct":
        # torch.quantile refuses very large inputs; numpy's percentile (linear) does not.
        self.clip_value = float(np.percentile(features.flatten().double().numpy(), self.percentile))
        self._fitted = True
        return self

    def score_outputs(self, logits: Tensor, features: Tensor) -> Tensor:
        self._require_fit()
        head = classifier_head(self.model)
        with torch.no_grad():
            clipped_logits = head(features.clamp(max=self.clip_value))
        return energy_from_logits(clipped_logits.float(), self.temperature)
