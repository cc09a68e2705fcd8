"""ReAct: rectified activations followed by the energy score."""

from __future__ import annotations

from typing import Iterable

import numpy as np
import torch
from torch import Tensor

from gaia_viz.detectors.base import (
    OutputDetector,
    check_positive,
    collect_outputs,
    energy_from_logits,
    head_linear,
    register,
)
from gaia_viz.errors import ModelError


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

    def __init__(self, model, percentile: float = 90.0, temperature: float = 1.0):
        super().__init__(model)
        self.percentile = float(percentile)
        if not 0.0 < self.percentile <= 100.0:
            raise ModelError(f"percentile must be in (0, 100], got {self.percentile}.")
        self.temperature = check_positive("temperature", temperature)
        self.clip_value: float | None = None

    def fit(self, loader: Iterable) -> "ReAct":
        features, _, _ = collect_outputs(self.model, loader)
        # torch.quantile refuses very large inputs; numpy's percentile (linear) does not.
        self.clip_value = float(np.percentile(features.flatten().double().numpy(), self.percentile))
        self._fitted = True
        return self

    def score_outputs(self, logits: Tensor, features: Tensor) -> Tensor:
        self._require_fit()
        _, head = head_linear(self.model)
        with torch.no_grad():
            clipped_logits = head(features.clamp(max=self.clip_value))
        return energy_from_logits(clipped_logits.float(), self.temperature)
