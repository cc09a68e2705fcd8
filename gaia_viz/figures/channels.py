"""Channel and layer figures: layer x channel heatmaps and per-layer AUROC bars.

Layers have different channel counts (16, 32, 64 in a CIFAR ResNet), so a layer x channel
matrix is ragged; :func:`per_layer_matrix` pads the short rows with NaN, which plotly leaves
blank.
"""

from __future__ import annotations

from typing import Mapping, Sequence

import numpy as np
import plotly.graph_objects as go

from gaia_viz.errors import LayerError
from gaia_viz.figures import colors

BAR_COLORS = colors.SET_COLORS


def per_layer_matrix(flat_values: np.ndarray, channel_counts: Sequence[int]) -> np.ndarray:
    """Split per-channel values laid out layer after layer into a ``(layers, max channels)``
    matrix, NaN where a layer has fewer channels."""
    flat_values = np.asarray(flat_values, dtype=float).ravel()
    counts = [int(c) for c in channel_counts]
    if sum(counts) != flat_values.size:
        raise LayerError(f"{flat_values.size} channel values but the layers have {sum(counts)} channels")
    matrix = np.full((len(counts), max(counts, default=0)), np.nan)
    start = 0
    for row, count in enumerate(counts):
        matrix[row, :count] = flat_values[start:start + count]
        start += count
    return matrix


def layer_channel_heatmap(matrix: np.ndarray, layer_names: Sequence[str], title: str = "",
                          colorbar_title: str = "", diverging: bool = False) -> go.Figure:
    """Heatmap with one row per layer (first layer on top) and one column per channel index.

    ``diverging``: a red-blue scale centred on 0, for differences (OOD - ID).
    """
    matrix = np.asarray(matrix, dtype=float)
    finite = matrix[np.isfinite(matrix)]
    scale = (dict(colorscale=colors.colorscale(colors.SIGNED_SCALE), zmid=0.0) if diverging
             else dict(colorscale=colors.colorscale(colors.SEQUENTIAL_SCALE)))
    if diverging and finite.size:
        bound = float(np.abs(finite).max()) or 1.0
        scale.update(zmin=-bound, zmax=bound)
    figure = go.Figure(go.Heatmap(
        z=matrix, x=np.arange(matrix.shape[1]), y=list(layer_names), colorbar=dict(title=colorbar_title),
        hovertemplate="layer %{y}<br>channel %{x}<br>%{z:.4g}<extra></extra>", hoverongaps=False, **scale,
    ))
    figure.update_layout(title=title, height=max(220, 40 + 22 * len(layer_names)),
                         margin=dict(l=10, r=10, t=40 if title else 10, b=10))
    figure.update_xaxes(title_text="channel index")
    figure.update_yaxes(title_text="layer", autorange="reversed", type="category")
    return figure


def layer_auroc_bars(families: Mapping[str, tuple[Sequence[str], Sequence[float]]],
                     title: str = "") -> go.Figure:
    """Grouped bars of AUROC (in %) per single layer, one trace per family
    (``{"GAIA-Z": (layers, aurocs in [0, 1]), ...}``); a dashed line marks chance (50 %)."""
    figure = go.Figure()
    for k, (family, (layers, aurocs)) in enumerate(families.items()):
        figure.add_trace(go.Bar(
            x=list(layers), y=100 * np.asarray(aurocs, dtype=float), name=family,
            marker_color=BAR_COLORS[k % len(BAR_COLORS)],
            hovertemplate=f"{family}<br>layer %{{x}}<br>AUROC %{{y:.2f}} %<extra></extra>",
        ))
    figure.add_hline(y=50, line=dict(dash="dash", color=colors.GRID_GREY, width=1),
                     annotation_text="chance", annotation_position="bottom right")
    figure.update_layout(barmode="group", title=title, height=340, legend_title_text="score",
                         margin=dict(l=10, r=10, t=40 if title else 10, b=10))
    figure.update_xaxes(title_text="layer (single-layer score)", type="category")
    figure.update_yaxes(title_text="AUROC (%)", range=[0, 100])
    return figure
