"""GAIA-Z and GAIA-A (Chen et al., NeurIPS 2023) as detectors."""

from __future__ import annotations

from typing import Sequence

import numpy as np
import torch
from torch import Tensor

from gaia_viz.detectors.base import Detector, register
from gaia_viz.forward import ForwardNeeds, ForwardOutputs


def _names(layers: Sequence[str] | str | None) -> tuple[str, ...] | None:
    if layers is None:
        return None
    if isinstance(layers, str):
        return (layers,)
    return tuple(layers)


@register
class GaiaZ(Detector):
    """GAIA-Z (Chen et al., "GAIA: delving into gradient-based attribution abnormality for
    out-of-distribution detection", NeurIPS 2023), zero-deflation abnormality: the mean over
    the channels ``(l, c)`` of ``layers`` of the squared non-zero ratio ``r[l, c]`` of the
    max-logit gradient (the formula: :mod:`gaia_viz.gaia`).

    Computed by :func:`gaia_viz.gaia.gaia_analyze` (``layers=None``: its default, every
    normalisation layer over feature maps), which leaves the model as found. Per sample it
    also keeps ``zero_partial_sums`` (sum_c r^2 per layer, float64) and ``nonzero_ratio``
    (every r, float32) so any layer subset is rescored without the model.
    """

    name = "gaia_z"
    label = "GAIA-Z"
    needs_grad = True

    def __init__(self, model, layers: Sequence[str] | str | None = None):
        super().__init__(model)
        self.layers = _names(layers)

    def needs(self) -> ForwardNeeds:
        return ForwardNeeds(gaia_z=True, zero_layers=self.layers)

    def score_forward(self, outputs: ForwardOutputs) -> Tensor:
        return outputs.gaia.gaia_z

    def arrays(self, outputs: ForwardOutputs) -> dict[str, np.ndarray]:
        result = outputs.gaia
        return {
            "zero_partial_sums": result.zero_partial_sums.numpy(),
            # per-channel ratios are for charts: float32 halves the cache (scores use the
            # float64 partial sums above)
            "nonzero_ratio": torch.cat([result.nonzero_ratio[n] for n in result.zero_layers], 1).float().numpy(),
        }


@register
class GaiaA(Detector):
    """GAIA-A (Chen et al., NeurIPS 2023), channel-wise average abnormality: the channel
    averages ``m[l, c]`` of the gradients at ``inner_layers``, relative to the output
    component ``o`` read at ``head_layer`` (the formula: :mod:`gaia_viz.gaia`).

    Computed by :func:`gaia_viz.gaia.gaia_analyze` (``None``: its default layers). Per
    sample it also keeps ``avg_partial_sums``, ``channel_mean_grad`` and ``output_component``.
    """

    name = "gaia_a"
    label = "GAIA-A"
    needs_grad = True

    def __init__(
        self,
        model,
        inner_layers: Sequence[str] | str | None = None,
        head_layer: str | None = None,
    ):
        super().__init__(model)
        self.inner_layers = _names(inner_layers)
        self.head_layer = head_layer

    def needs(self) -> ForwardNeeds:
        return ForwardNeeds(gaia_a=True, inner_layers=self.inner_layers, head_layer=self.head_layer)

    def score_forward(self, outputs: ForwardOutputs) -> Tensor:
        return outputs.gaia.gaia_a

    def explain_non_finite(self, arrays) -> str:
        from gaia_viz.gaia.scores import gaia_a_non_finite_reason

        return gaia_a_non_finite_reason(arrays["output_component"])

    def arrays(self, outputs: ForwardOutputs) -> dict[str, np.ndarray]:
        result = outputs.gaia
        return {
            "avg_partial_sums": result.avg_partial_sums.numpy(),
            "channel_mean_grad": torch.cat([result.channel_mean_grad[n] for n in result.inner_layers], 1).numpy(),
            "output_component": result.output_component.numpy(),
        }
