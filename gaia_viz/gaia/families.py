"""The two GAIA families as data: one table of what GAIA-Z and GAIA-A store and how a
score is recomputed from it. Every page, chart and sweep reads these facts from here.

Per-layer pieces an evaluation keeps for each dataset (``Evaluation.arrays[dataset]``):

* GAIA-Z: ``nonzero_ratio`` (N, channels of all layers) holds every ``r[l, c]``;
  ``zero_partial_sums`` (N, L) holds ``sum_c r[l, c]^2`` per layer;
* GAIA-A: ``channel_mean_grad`` holds every ``m[l, c]``; ``avg_partial_sums`` holds
  ``sum_c m[l, c]^2`` per inner layer; ``output_component`` holds ``o`` (N,).

So for a layer subset ``S``::

    GAIA-Z_S = sum_{l in S} zero_partial_sums[:, l] / sum_{l in S} C_l
    GAIA-A_S = sum_{l in S} avg_partial_sums[:, l] / (o^2 * sum_{l in S} C_l)
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np

from gaia_viz.errors import LayerError
from gaia_viz.gaia.scores import gaia_a_from_partials, gaia_z_from_partials


@dataclass(frozen=True)
class GaiaFamily:
    """What one GAIA score stores per sample and how it is recomputed from it."""

    method: str  # detector id
    label: str  # "GAIA-Z"
    channel_array: str  # per-channel values of all layers, concatenated layer by layer
    symbol: str  # the per-channel quantity in the formulas
    channel_label: str  # what ``channel_array`` holds, for axis titles
    partial_sums: str  # (N, L) per-layer partial sums
    layers_attr: str  # the Evaluation attribute listing the layers
    channels_attr: str  # ... and their channel counts
    heatmap_abs: bool  # charts show |value| (signed means average out)

    def layers(self, evaluation) -> list[str]:
        return list(getattr(evaluation, self.layers_attr))

    def channels(self, evaluation) -> list[int]:
        return [int(c) for c in getattr(evaluation, self.channels_attr)]

    def present(self, evaluation) -> bool:
        """True when ``evaluation`` holds this family's per-layer arrays."""
        return (self.method in evaluation.methods and bool(self.layers(evaluation))
                and self.partial_sums in evaluation.arrays[evaluation.id_name])

    def layer_mask(self, evaluation, chosen: Sequence[str] | None) -> np.ndarray | None:
        """Boolean mask over this family's layers (None = all); LayerError for unknown names."""
        if chosen is None:
            return None
        layers = self.layers(evaluation)
        unknown = [name for name in chosen if name not in layers]
        if unknown:
            raise LayerError(f"layers {unknown} are not among the evaluated {self.label} layers {layers}")
        return np.array([name in chosen for name in layers], dtype=bool)

    def scores(self, evaluation, dataset: str, layers: Sequence[str] | None = None) -> np.ndarray:
        """The score of every sample of ``dataset`` recomputed over ``layers`` (None = all)."""
        arrays = evaluation.arrays[dataset]
        return self.scores_from_arrays(arrays, self.channels(evaluation), self.layer_mask(evaluation, layers))

    def scores_from_arrays(self, arrays: dict, channel_counts: Sequence[int], mask: np.ndarray | None) -> np.ndarray:
        counts = np.asarray(channel_counts)
        if self.method == "gaia_z":
            return gaia_z_from_partials(arrays[self.partial_sums], counts, mask)
        return gaia_a_from_partials(arrays[self.partial_sums], counts, arrays["output_component"], mask)

    def channel_columns(self, evaluation, layer: str) -> slice:
        """The columns of ``layer`` in ``channel_array``."""
        layers, channels = self.layers(evaluation), self.channels(evaluation)
        if layer not in layers:
            raise LayerError(f"layer {layer!r} was not part of this evaluation's {self.label}; "
                             f"choose one of {layers}")
        i = layers.index(layer)
        start = int(np.sum(channels[:i]))
        return slice(start, start + channels[i])

    def layer_values(self, evaluation, dataset: str, layer: str) -> np.ndarray:
        """(N, C_l) float64: ``channel_array`` of ``dataset`` at ``layer`` (every sample's
        r[l, c] or m[l, c] for the channels of that layer); LayerError for an unknown layer."""
        columns = self.channel_columns(evaluation, layer)
        return np.asarray(evaluation.arrays[dataset][self.channel_array], dtype=np.float64)[:, columns]


GAIA_FAMILIES: dict[str, GaiaFamily] = {
    "gaia_z": GaiaFamily("gaia_z", "GAIA-Z", "nonzero_ratio", "r", "non-zero gradient ratio r[l, c]",
                         "zero_partial_sums", "zero_layers", "zero_channels", heatmap_abs=False),
    "gaia_a": GaiaFamily("gaia_a", "GAIA-A", "channel_mean_grad", "m", "channel-mean gradient m[l, c]",
                         "avg_partial_sums", "inner_layers", "inner_channels", heatmap_abs=True),
}


def family(method: str) -> GaiaFamily:
    """The family of ``method`` (``gaia_z`` or ``gaia_a``); LayerError otherwise."""
    try:
        return GAIA_FAMILIES[method]
    except KeyError:
        raise LayerError(f"{method!r} is not a GAIA score (choose gaia_z or gaia_a)") from None


__all__ = ["GAIA_FAMILIES", "GaiaFamily", "family"]
