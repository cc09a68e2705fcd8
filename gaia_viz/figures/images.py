"""Per-image figures: attribution heatmaps, overlays, GAIA spatial maps, channel bars, score markers.

Pure functions: numpy in, ``plotly.graph_objects.Figure`` out, no model and no Streamlit.
Image-like figures keep pixels square and row 0 at the top, as the image is seen.
"""

from __future__ import annotations

from typing import Mapping, Sequence

import numpy as np
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from gaia_viz.figures import colors
from gaia_viz.figures.scores import add_marker_line, score_histograms, threshold_histogram
from gaia_viz.metrics import DEFAULT_BINS, binned_histogram, shared_edges

MAGNITUDE_TITLE = "attribution (0 = none, 1 = strongest)"
SIGNED_TITLE = "attribution (−1 against, 0 = none, +1 for the class)"


def _as_map(map2d) -> np.ndarray:
    values = np.asarray(map2d, dtype=np.float64)
    while values.ndim > 2 and values.shape[0] == 1:  # (1, 1, H, W) -> (H, W); a 1 x W map stays 2-D
        values = values[0]
    if values.ndim != 2:
        raise ValueError(f"expected an (H, W) map, got shape {np.shape(map2d)}")
    return values


def _axis_suffix(k: int) -> str:
    return "" if k == 1 else str(k)


def _image_axes(fig: go.Figure, subplots: int = 1) -> None:
    """Image orientation (row 0 on top) and square pixels in each of ``subplots`` panels."""
    for k in range(1, subplots + 1):
        suffix = _axis_suffix(k)
        fig.layout[f"xaxis{suffix}"].update(showticklabels=False, showgrid=False, zeroline=False, ticks="",
                                            constrain="domain")
        fig.layout[f"yaxis{suffix}"].update(showticklabels=False, showgrid=False, zeroline=False, ticks="",
                                            autorange="reversed", scaleanchor=f"x{suffix}", constrain="domain")


def symmetric_range(values) -> tuple[float, float]:
    """``(-b, b)`` with ``b`` the largest finite ``|value|`` (1 when there is none): a diverging
    scale centred at 0."""
    finite = np.abs(np.asarray(values, dtype=np.float64))
    finite = finite[np.isfinite(finite)]
    bound = float(finite.max()) if finite.size and finite.max() > 0 else 1.0
    return -bound, bound


def attribution_scale(values, signed: bool) -> dict:
    """Heatmap colour arguments: magnitudes on Inferno from 0, signed values on a diverging
    red-blue scale centred at 0 (symmetric ``zmin``/``zmax``)."""
    if signed:
        low, high = symmetric_range(values)
        return dict(colorscale=colors.colorscale(colors.SIGNED_SCALE), zmin=low, zmax=high, zmid=0.0)
    finite = np.asarray(values, dtype=np.float64)
    finite = finite[np.isfinite(finite)]
    return dict(colorscale=colors.colorscale(colors.HEAT_SCALE), zmin=0.0,
                zmax=max(1.0, float(finite.max())) if finite.size else 1.0)


def attribution_heatmap(map2d, title: str = "", colorbar_title: str | None = None,
                        signed: bool = False) -> go.Figure:
    """An (H, W) attribution map as a heatmap; values are shown as given (see
    :func:`gaia_viz.attribution.to_heatmap`). ``signed``: a diverging scale centred at 0."""
    values = _as_map(map2d)
    fig = go.Figure(go.Heatmap(
        z=values, **attribution_scale(values, signed),
        colorbar=dict(title=dict(text=colorbar_title or (SIGNED_TITLE if signed else MAGNITUDE_TITLE), side="right")),
        hovertemplate="row %{y}, col %{x}<br>value %{z:.3f}<extra></extra>"))
    fig.update_layout(title=title, margin=dict(l=10, r=10, t=40, b=10))
    _image_axes(fig)
    return fig


def fading_colorscale(scale: list[list], signed: bool) -> list[list]:
    """``scale`` with an alpha channel that grows with the strength of the value: transparent
    at 0 (the image shows through where the attribution is none), opaque at the ends."""
    faded = []
    for position, color in scale:
        r, g, b = (int(v) for v in color[color.index("(") + 1:color.index(")")].split(","))
        strength = abs(2 * position - 1) if signed else position
        faded.append([position, f"rgba({r}, {g}, {b}, {strength:.3f})"])
    return faded


def overlay(image_rgb, map2d, opacity: float = 0.7, title: str = "", colorbar_title: str | None = None,
            signed: bool = False) -> go.Figure:
    """The image (uint8, (H, W, 3) or (H, W)) with ``map2d`` drawn over it.

    The map's colours fade to transparent towards "none" (0), so the image is seen unaltered
    where nothing is attributed; ``opacity`` scales the whole layer. A map of another size
    is stretched over the whole image (one map cell covers H / h x W / w image pixels), so
    a 7x7 layer map lines up with a 28x28 digit.
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
    scale = attribution_scale(values, signed)
    scale["colorscale"] = fading_colorscale(scale["colorscale"], signed)
    fig = go.Figure()
    fig.add_trace(go.Image(z=image.astype(np.uint8), name="image", hoverinfo="skip"))
    fig.add_trace(go.Heatmap(
        z=values, x0=dx / 2 - 0.5, dx=dx, y0=dy / 2 - 0.5, dy=dy, opacity=opacity, name="attribution",
        colorbar=dict(title=dict(text=colorbar_title or (SIGNED_TITLE if signed else MAGNITUDE_TITLE), side="right")),
        hovertemplate="value %{z:.3f}<extra></extra>", **scale))
    fig.update_layout(title=title, margin=dict(l=10, r=10, t=40, b=10))
    _image_axes(fig)
    return fig


def attribution_grid(maps: Mapping[str, np.ndarray], signed: Mapping[str, bool], title: str = "",
                     columns: int = 4) -> go.Figure:
    """Several attribution methods side by side: one panel per ``{label: (H, W) map}``, each
    on its own scale (magnitudes from 0, signed maps centred at 0), one colour bar per kind."""
    labels = list(maps)
    if not labels:
        raise ValueError("no attribution maps to draw")
    columns = max(1, min(columns, len(labels)))
    rows = int(np.ceil(len(labels) / columns))
    fig = make_subplots(rows=rows, cols=columns, subplot_titles=[
        f"{label} ({'signed' if signed[label] else '|value|'})" for label in labels],
        horizontal_spacing=0.03, vertical_spacing=0.12)
    shown_bar = set()
    for k, label in enumerate(labels):
        values = _as_map(maps[label])
        kind = bool(signed[label])
        fig.add_trace(go.Heatmap(
            z=values, **attribution_scale(values, kind), showscale=kind not in shown_bar,
            colorbar=dict(title=dict(text="signed" if kind else "|value|", side="right"), len=0.45,
                          y=0.78 if kind else 0.22, x=1.02),
            hovertemplate=f"{label}<br>row %{{y}}, col %{{x}}<br>%{{z:.3f}}<extra></extra>"),
            row=k // columns + 1, col=k % columns + 1)
        shown_bar.add(kind)
    _image_axes(fig, subplots=rows * columns)
    fig.update_layout(title=title, height=230 * rows + 70, margin=dict(l=10, r=60, t=70, b=10))
    return fig


def spatial_map_figure(map2d, title: str, colorbar_title: str,
                       zmin: float | None = None, zmax: float | None = None) -> go.Figure:
    """A GAIA spatial map at one layer (e.g. fraction of channels with non-zero gradient
    per position); ``colorbar_title`` carries the units."""
    values = _as_map(map2d)
    fig = go.Figure(go.Heatmap(
        z=values, zmin=zmin, zmax=zmax, colorscale=colors.colorscale(colors.SEQUENTIAL_SCALE),
        colorbar=dict(title=dict(text=colorbar_title, side="right")),
        hovertemplate="row %{y}, col %{x}<br>%{z:.3g}<extra></extra>"))
    fig.update_layout(title=title, margin=dict(l=10, r=10, t=40, b=10))
    _image_axes(fig)
    return fig


BINARY_SCALE = [[0, "rgb(17, 17, 17)"], [0.5, "rgb(17, 17, 17)"], [0.5, "rgb(253, 231, 37)"], [1, "rgb(253, 231, 37)"]]


def channel_grid(maps, channels: Sequence[int], title: str, colorbar_title: str,
                 binary: bool = False, columns: int = 4) -> go.Figure:
    """Small multiples of per-channel maps (C, H, W) at one layer, one panel per channel,
    every panel with square pixels.

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
        scale, zmin, zmax = BINARY_SCALE, 0, 1
    else:
        zmin, zmax = symmetric_range(maps)
        scale = colors.colorscale(colors.SIGNED_SCALE)
    for i, channel_map in enumerate(maps):
        row, col = i // columns + 1, i % columns + 1
        bar = dict(title=dict(text=colorbar_title, side="right"))
        if binary:
            bar.update(tickvals=[0.25, 0.75], ticktext=["0 (zero)", "1 (non-zero)"])
        fig.add_trace(go.Heatmap(
            z=channel_map, zmin=zmin, zmax=zmax, colorscale=scale, showscale=i == 0, colorbar=bar,
            hovertemplate=f"channel {channels[i]}<br>row %{{y}}, col %{{x}}<br>%{{z:.3g}}<extra></extra>"),
            row=row, col=col)
    _image_axes(fig, subplots=rows * columns)
    fig.update_layout(title=title, height=160 * rows + 80, margin=dict(l=10, r=10, t=70, b=10))
    return fig


def channel_ratio_bars(ratios_this_image, id_mean, id_std, layer: str, ood_mean=None,
                       value_label: str = "non-zero gradient ratio r[l, c]",
                       ood_label: str = "OOD mean", this_label: str = "this image") -> go.Figure:
    """Per-channel values of one image beside the ID mean +- one standard deviation.

    All arrays have one entry per channel of ``layer``; the error bars show the spread of
    the ID set (std over ID images), so a bar far outside them is unusual for ID data. The
    two bars of a channel stand side by side (neither hides the other); the OOD mean is a
    marker above them. Meant for the full page width (a layer can have 96 channels).
    """
    this = np.asarray(ratios_this_image, dtype=np.float64).ravel()
    mean = np.asarray(id_mean, dtype=np.float64).ravel()
    std = np.asarray(id_std, dtype=np.float64).ravel()
    if not this.shape == mean.shape == std.shape:
        raise ValueError(f"channel arrays differ in length: {this.shape}, {mean.shape}, {std.shape}")
    channels = np.arange(this.size)
    fig = go.Figure()
    fig.add_trace(go.Bar(x=channels, y=mean, name="ID mean (error bar: ±1 std)", marker_color=colors.ID_COLOR,
                         error_y=dict(type="data", array=std, visible=True, thickness=1, width=0,
                                      color=colors.GRID_GREY),
                         hovertemplate="channel %{x}<br>ID mean %{y:.3f}<extra></extra>"))
    fig.add_trace(go.Bar(x=channels, y=this, name=this_label, marker_color=colors.THIS_IMAGE_COLOR,
                         hovertemplate=f"channel %{{x}}<br>{this_label} %{{y:.3f}}<extra></extra>"))
    if ood_mean is not None:
        ood = np.asarray(ood_mean, dtype=np.float64).ravel()
        fig.add_trace(go.Scatter(x=channels, y=ood, mode="markers", name=ood_label,
                                 marker=dict(color=colors.OOD_COLORS[0], symbol="line-ew-open", size=9,
                                             line=dict(width=2, color=colors.OOD_COLORS[0])),
                                 hovertemplate="channel %{x}<br>OOD mean %{y:.3f}<extra></extra>"))
    fig.update_layout(
        title=f"{value_label} per channel at {layer}: {this_label} and the ID set", barmode="group", bargap=0.15, bargroupgap=0.0,
        xaxis_title=f"channel of {layer}", yaxis_title=value_label, height=340,
        legend=dict(orientation="h", y=1.0, yanchor="bottom", x=0), margin=dict(l=10, r=10, t=80, b=10))
    return fig


def layer_nonzero_bars(layers: Sequence[str], images: Mapping[str, tuple[Sequence[float], Sequence[float]]],
                       set_means: Mapping[str, tuple[Sequence[float], Sequence[float]]] | None = None) -> go.Figure:
    """Per GAIA-Z layer, two panels: the share of non-zero gradient entries (mean over
    channels of r[l, c]) and the mean of r[l, c]^2, what GAIA-Z averages. ``images`` and
    ``set_means`` map a label to ``(shares, squares)``, one value per layer; images are bars,
    set means diamonds. The aggregate the illustrating channels must agree with."""
    fig = make_subplots(rows=1, cols=2, horizontal_spacing=0.08, subplot_titles=[
        "share of non-zero gradient entries (mean r)", "mean r² (what GAIA-Z averages)"])
    for panel in (0, 1):
        for k, (label, values) in enumerate(images.items()):
            fig.add_trace(go.Bar(x=list(layers), y=np.asarray(values[panel], dtype=float), name=label,
                                 marker_color=colors.SET_COLORS[k % len(colors.SET_COLORS)], legendgroup=label,
                                 showlegend=panel == 0,
                                 hovertemplate=f"{label}<br>layer %{{x}}<br>%{{y:.3f}}<extra></extra>"),
                          row=1, col=panel + 1)
        for k, (label, values) in enumerate((set_means or {}).items()):
            fig.add_trace(go.Scatter(x=list(layers), y=np.asarray(values[panel], dtype=float), mode="markers",
                                     name=label, legendgroup=label, showlegend=panel == 0,
                                     marker=dict(symbol="diamond", size=11,
                                                 color=colors.SET_COLORS[k % len(colors.SET_COLORS)],
                                                 line=dict(width=1.5, color="rgb(0, 0, 0)")),
                                     hovertemplate=f"{label}<br>layer %{{x}}<br>%{{y:.3f}}<extra></extra>"),
                          row=1, col=panel + 1)
    fig.update_layout(barmode="group", height=360, legend=dict(orientation="h", y=-0.22, yanchor="top", x=0),
                      margin=dict(l=10, r=10, t=40, b=10))
    fig.update_xaxes(title_text="GAIA-Z layer", type="category")
    fig.update_yaxes(range=[0, 1])
    return fig


def score_marker_histogram(id_scores, ood_scores_by_set: Mapping[str, Sequence[float]],
                           this_score: float | Mapping[str, float] | None, threshold: float | None,
                           method_label: str, id_name: str = "ID", bins: int = DEFAULT_BINS,
                           score_axis: str | None = None) -> go.Figure:
    """ID and OOD score histograms (fractions per set, shared bins; the Evaluate page's
    :func:`~gaia_viz.figures.scores.score_histograms`) with the threshold and this image's
    score as vertical lines, labelled at the top and in the legend. Higher score = more OOD.

    ``this_score``: one score (marked "this image") or a mapping label -> score to mark
    several images. The bins span the markers too, so a far-out image stays on the axis.
    ``score_axis``: the x-axis title (default: "<method> score (higher = more OOD)").
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
    axis = score_axis or f"{method_label} score (higher = more OOD)"
    if threshold is None:
        fig = score_histograms(edges, heights, title=title, id_name=id_name, score_axis=axis)
    else:
        fig = threshold_histogram(edges, heights, threshold, title=title, id_name=id_name, score_axis=axis)
    first_row = 0 if threshold is None else 1  # the threshold's label takes the first row
    for i, (label, score) in enumerate(markers.items()):
        color = colors.MARKER_COLORS[i % len(colors.MARKER_COLORS)]
        add_marker_line(fig, score, f"{label} {score:.4g}", color, row=first_row + i)
    return fig


__all__ = ["attribution_grid", "attribution_heatmap", "attribution_scale", "channel_grid",
           "channel_ratio_bars", "fading_colorscale", "gaia_at_a_glance", "layer_nonzero_bars", "overlay",
           "score_marker_histogram", "spatial_map_figure", "symmetric_range"]


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
            z=_as_map(case["nonzero"]), zmin=0, zmax=1, colorscale=colors.colorscale(colors.SEQUENTIAL_SCALE),
            showscale=i == len(cases) - 1,
            colorbar=dict(title=dict(text="share of channels<br>with gradient ≠ 0", side="right")),
            hovertemplate="row %{y}, col %{x}<br>%{z:.2f} of channels non-zero<extra></extra>"),
            row=1, col=map_col)
    _image_axes(fig, subplots=2 * len(cases))
    fig.update_layout(height=300, margin=dict(l=10, r=10, t=50, b=10))
    return fig
