"""Per-image figures: attribution heatmaps, overlays, GAIA spatial maps, channel bars, score markers.

Pure functions: numpy in, ``plotly.graph_objects.Figure`` out, no model and no Streamlit.
Image-like figures keep pixels square and row 0 at the top, as the image is seen.
"""

from __future__ import annotations

from typing import Mapping, Sequence

import numpy as np
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from gaia_viz.figures.scores import score_histograms, threshold_histogram
from gaia_viz.metrics import DEFAULT_BINS, binned_histogram, shared_edges

HEAT_COLORSCALE = "Inferno"
SIGNED_COLORSCALE = "RdBu_r"
ID_COLOR = "#1f77b4"
OOD_COLOR = "#d62728"
THIS_IMAGE_COLOR = "#2ca02c"
# markers on score histograms: colours the histogram palette does not use
MARKER_COLORS = ("#e6007e", "#000080", "#00a89d")


def _as_map(map2d) -> np.ndarray:
    values = np.asarray(map2d, dtype=np.float64)
    values = np.squeeze(values)
    if values.ndim != 2:
        raise ValueError(f"expected an (H, W) map, got shape {np.shape(map2d)}")
    return values


def _image_axes(fig: go.Figure, row=None, col=None) -> None:
    fig.update_xaxes(showticklabels=False, showgrid=False, zeroline=False, constrain="domain",
                     row=row, col=col)
    fig.update_yaxes(showticklabels=False, showgrid=False, zeroline=False, autorange="reversed",
                     scaleanchor="x" if row is None else None, constrain="domain", row=row, col=col)


def attribution_heatmap(map2d, title: str = "",
                        colorbar_title: str = "attribution (0 = none, 1 = strongest)") -> go.Figure:
    """An (H, W) attribution map as a heatmap; values are shown as given (see ``to_heatmap``)."""
    values = _as_map(map2d)
    fig = go.Figure(go.Heatmap(
        z=values, colorscale=HEAT_COLORSCALE, colorbar=dict(title=dict(text=colorbar_title, side="right")),
        hovertemplate="row %{y}, col %{x}<br>value %{z:.3f}<extra></extra>"))
    fig.update_layout(title=title, margin=dict(l=10, r=10, t=40, b=10))
    _image_axes(fig)
    return fig


def overlay(image_rgb, map2d, opacity: float = 0.5, title: str = "",
            colorbar_title: str = "attribution (0-1)") -> go.Figure:
    """The image (uint8, (H, W, 3) or (H, W)) with ``map2d`` drawn over it at ``opacity``.

    A map of another size is stretched over the whole image (one map cell covers
    H / h x W / w image pixels), so a 7x7 layer map lines up with a 28x28 digit.
    """
    image = np.asarray(image_rgb)
    if image.ndim == 2:
        image = np.stack([image] * 3, axis=-1)
    if image.ndim != 3 or image.shape[2] != 3:
        raise ValueError(f"expected an RGB image (H, W, 3), got shape {image.shape}")
    if not 0.0 <= opacity <= 1.0:
        raise ValueError(f"opacity must be in [0, 1], got {opacity}")
    values = _as_map(map2d)
    height, width = image.shape[:2]
    dy, dx = height / values.shape[0], width / values.shape[1]
    fig = go.Figure()
    fig.add_trace(go.Image(z=image.astype(np.uint8), name="image", hoverinfo="skip"))
    fig.add_trace(go.Heatmap(
        z=values, x0=dx / 2 - 0.5, dx=dx, y0=dy / 2 - 0.5, dy=dy, opacity=opacity,
        colorscale=HEAT_COLORSCALE, name="attribution",
        colorbar=dict(title=dict(text=colorbar_title, side="right")),
        hovertemplate="value %{z:.3f}<extra></extra>"))
    fig.update_layout(title=title, margin=dict(l=10, r=10, t=40, b=10))
    _image_axes(fig)
    return fig


def spatial_map_figure(map2d, title: str, colorbar_title: str,
                       zmin: float | None = None, zmax: float | None = None) -> go.Figure:
    """A GAIA spatial map at one layer (e.g. fraction of channels with non-zero gradient
    per position); ``colorbar_title`` carries the units."""
    values = _as_map(map2d)
    fig = go.Figure(go.Heatmap(
        z=values, zmin=zmin, zmax=zmax, colorscale="Viridis",
        colorbar=dict(title=dict(text=colorbar_title, side="right")),
        hovertemplate="row %{y}, col %{x}<br>%{z:.3g}<extra></extra>"))
    fig.update_layout(title=title, margin=dict(l=10, r=10, t=40, b=10))
    _image_axes(fig)
    return fig


def channel_grid(maps, channels: Sequence[int], title: str, colorbar_title: str,
                 binary: bool = False, columns: int = 4) -> go.Figure:
    """Small multiples of per-channel maps (C, H, W) at one layer, one panel per channel.

    ``binary=True`` draws 0/1 masks (e.g. gradient != 0) in two colours; otherwise a
    diverging scale symmetric around 0 (gradients are signed).
    """
    maps = np.asarray(maps, dtype=np.float64)
    if maps.ndim != 3 or maps.shape[0] != len(channels):
        raise ValueError(f"expected (C, H, W) maps for {len(channels)} channels, got {maps.shape}")
    rows = int(np.ceil(len(channels) / columns))
    fig = make_subplots(rows=rows, cols=columns, horizontal_spacing=0.02, vertical_spacing=0.08,
                        subplot_titles=[f"channel {c}" for c in channels])
    if binary:
        scale, zmin, zmax = [[0, "#111111"], [0.5, "#111111"], [0.5, "#fde725"], [1, "#fde725"]], 0, 1
    else:
        limit = float(np.abs(maps).max()) or 1.0
        scale, zmin, zmax = SIGNED_COLORSCALE, -limit, limit
    for i, channel_map in enumerate(maps):
        row, col = i // columns + 1, i % columns + 1
        fig.add_trace(go.Heatmap(
            z=channel_map, zmin=zmin, zmax=zmax, colorscale=scale, showscale=i == 0,
            colorbar=dict(title=dict(text=colorbar_title, side="right")),
            hovertemplate=f"channel {channels[i]}<br>row %{{y}}, col %{{x}}<br>%{{z:.3g}}<extra></extra>"),
            row=row, col=col)
        _image_axes(fig, row=row, col=col)
    fig.update_layout(title=title, height=160 * rows + 80, margin=dict(l=10, r=10, t=70, b=10))
    return fig


def channel_ratio_bars(ratios_this_image, id_mean, id_std, layer: str, ood_mean=None,
                       value_label: str = "non-zero gradient ratio r[l, c]",
                       ood_label: str = "OOD mean") -> go.Figure:
    """Per-channel values of one image against the ID mean +- one standard deviation.

    All arrays have one entry per channel of ``layer``; the error bars show the spread of
    the ID set (std over ID images), so a bar far outside them is unusual for ID data.
    """
    this = np.asarray(ratios_this_image, dtype=np.float64).ravel()
    mean = np.asarray(id_mean, dtype=np.float64).ravel()
    std = np.asarray(id_std, dtype=np.float64).ravel()
    if not this.shape == mean.shape == std.shape:
        raise ValueError(f"channel arrays differ in length: {this.shape}, {mean.shape}, {std.shape}")
    channels = np.arange(this.size)
    fig = go.Figure()
    fig.add_trace(go.Bar(x=channels, y=mean, name="ID mean (bars: ±1 std)", marker_color=ID_COLOR,
                         opacity=0.55, error_y=dict(type="data", array=std, visible=True),
                         hovertemplate="channel %{x}<br>ID mean %{y:.3f}<extra></extra>"))
    if ood_mean is not None:
        ood = np.asarray(ood_mean, dtype=np.float64).ravel()
        fig.add_trace(go.Scatter(x=channels, y=ood, mode="markers", name=ood_label,
                                 marker=dict(color=OOD_COLOR, symbol="x", size=6),
                                 hovertemplate="channel %{x}<br>OOD mean %{y:.3f}<extra></extra>"))
    fig.add_trace(go.Bar(x=channels, y=this, name="this image", marker_color=THIS_IMAGE_COLOR,
                         opacity=0.85, hovertemplate="channel %{x}<br>this image %{y:.3f}<extra></extra>"))
    fig.update_layout(
        title=f"{value_label} per channel at {layer}", barmode="overlay", bargap=0.05,
        xaxis_title=f"channel of {layer}", yaxis_title=value_label,
        legend=dict(orientation="h", y=1.02, yanchor="bottom", x=0), margin=dict(l=10, r=10, t=70, b=10))
    return fig


def score_marker_histogram(id_scores, ood_scores_by_set: Mapping[str, Sequence[float]],
                           this_score: float | Mapping[str, float] | None, threshold: float | None,
                           method_label: str, id_name: str = "ID", bins: int = DEFAULT_BINS) -> go.Figure:
    """ID and OOD score histograms (fractions per set, shared bins; the Evaluate page's
    :func:`~gaia_viz.figures.scores.score_histograms`) with the threshold and this image's
    score as vertical lines. Higher score = more OOD.

    ``this_score``: one score (marked "this image") or a mapping label -> score to mark
    several images. The bins span the markers too, so a far-out image stays on the axis.
    """
    if this_score is None:
        markers = {}
    elif isinstance(this_score, Mapping):
        markers = {label: float(v) for label, v in this_score.items()}
    else:
        markers = {"this image": float(this_score)}
    score_sets = {id_name: np.asarray(id_scores, dtype=np.float64)}
    score_sets.update({name: np.asarray(s, dtype=np.float64) for name, s in ood_scores_by_set.items()})
    extra = [np.array([v]) for v in (*markers.values(), threshold) if v is not None and np.isfinite(v)]
    edges = shared_edges([*score_sets.values(), *extra], bins=bins)
    heights = {name: binned_histogram(scores[np.isfinite(scores)], edges, normalize=True)
               for name, scores in score_sets.items()}
    where = "this image falls" if len(markers) <= 1 else "these images fall"
    title = f"{method_label}: where {where}"
    if threshold is None:
        fig = score_histograms(edges, heights, title=title, id_name=id_name)
    else:
        fig = threshold_histogram(edges, heights, threshold, title=title, id_name=id_name)
    for i, (label, score) in enumerate(markers.items()):
        fig.add_vline(x=score, line=dict(color=MARKER_COLORS[i % len(MARKER_COLORS)], width=3),
                      annotation_text=f"{label} {score:.4g}",
                      annotation_position="bottom right" if i % 2 == 0 else "bottom left")
    fig.update_xaxes(title_text=f"{method_label} score (higher = more OOD)")
    fig.update_layout(margin=dict(l=10, r=10, t=50, b=10))
    return fig


__all__ = ["attribution_heatmap", "channel_grid", "channel_ratio_bars", "gaia_at_a_glance", "overlay",
           "score_marker_histogram", "spatial_map_figure"]


def gaia_at_a_glance(cases: Sequence[Mapping]) -> go.Figure:
    """For each case (``label``, ``pixels`` uint8 (H, W, 3), ``nonzero`` (h, w) in [0, 1]:
    the share of channels whose GAIA-Z gradient is non-zero at each position, ``gaia_z``):
    the image and its non-zero map side by side, the score in the title. The home page's
    one-figure summary of GAIA-Z."""
    titles = []
    for case in cases:
        titles += [f"{case['label']}: the image", f"non-zero gradients · GAIA-Z {case['gaia_z']:.3f}"]
    fig = make_subplots(rows=1, cols=2 * len(cases), subplot_titles=titles, horizontal_spacing=0.03)
    for i, case in enumerate(cases):
        image_col, map_col = 2 * i + 1, 2 * i + 2
        fig.add_trace(go.Image(z=np.asarray(case["pixels"], dtype=np.uint8), hoverinfo="skip"), row=1, col=image_col)
        fig.add_trace(go.Heatmap(
            z=_as_map(case["nonzero"]), zmin=0, zmax=1, colorscale="Viridis", showscale=i == len(cases) - 1,
            colorbar=dict(title=dict(text="share of channels<br>with gradient ≠ 0", side="right")),
            hovertemplate="row %{y}, col %{x}<br>%{z:.2f} of channels non-zero<extra></extra>"),
            row=1, col=map_col)
        for col in (image_col, map_col):
            fig.update_xaxes(showticklabels=False, showgrid=False, zeroline=False, constrain="domain", row=1, col=col)
            fig.update_yaxes(showticklabels=False, showgrid=False, zeroline=False, autorange="reversed",
                             scaleanchor=f"x{col if col > 1 else ''}", constrain="domain", row=1, col=col)
    fig.update_layout(height=300, margin=dict(l=10, r=10, t=50, b=10))
    return fig
