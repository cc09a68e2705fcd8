"""Score figures: histograms, ROC curves, a threshold view, a confusion matrix, a metrics table.

Pure functions from numbers to ``plotly.graph_objects.Figure`` (or a display DataFrame).
Histograms take *pre-binned* counts (:func:`bin_score_sets`, built on
:func:`gaia_viz.metrics.shared_edges` and :func:`gaia_viz.metrics.binned_histogram`), so a
figure ships one bar per bin to the browser whatever the number of samples: moving a
threshold slider redraws 60 bars, not 10,000 points.

Conventions: an OOD score is higher for more OOD-looking inputs; ROC curves take ID as the
positive class (TPR = fraction of ID accepted, FPR = fraction of OOD accepted), as FPR95 does.
"""

from __future__ import annotations

from typing import Mapping, Sequence

import numpy as np
import pandas as pd
import plotly.graph_objects as go

from gaia_viz.metrics import DEFAULT_BINS, binned_histogram, shared_edges

SCORE_AXIS = "OOD score (higher = more OOD)"
FRACTION_AXIS = "fraction of the set's images"
COUNT_AXIS = "images"
ROC_X_AXIS = "FPR: fraction of OOD accepted as ID"
ROC_Y_AXIS = "TPR: fraction of ID accepted"
ID_COLOR = "#1f77b4"
OOD_COLORS = ("#d62728", "#ff7f0e", "#2ca02c", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22", "#17becf")

METRIC_COLUMNS = {
    "fpr95": "FPR95 ↓ (% OOD accepted at 95 % TPR)",
    "auroc": "AUROC ↑ (%)",
    "aupr_in": "AUPR-In ↑ (%, ID positive)",
    "aupr_out": "AUPR-Out ↑ (%, OOD positive)",
}


def _colors(names: Sequence[str], id_name: str | None) -> dict[str, str]:
    colors, k = {}, 0
    for name in names:
        if name == id_name:
            colors[name] = ID_COLOR
        else:
            colors[name] = OOD_COLORS[k % len(OOD_COLORS)]
            k += 1
    return colors


def bin_score_sets(score_sets: Mapping[str, np.ndarray], bins: int = DEFAULT_BINS,
                   normalize: bool = True) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """Shared edges over all sets and each set's histogram on them: ``(edges, {name: heights})``.

    ``normalize``: heights are fractions of each set (sum 1), so sets of different sizes compare.
    """
    edges = shared_edges(list(score_sets.values()), bins=bins)
    return edges, {name: binned_histogram(scores, edges, normalize=normalize)
                   for name, scores in score_sets.items()}


def score_histograms(edges: np.ndarray, heights: Mapping[str, np.ndarray], title: str = "",
                     id_name: str | None = None, normalized: bool = True) -> go.Figure:
    """Overlaid histograms, one bar trace per set (ID first in blue when ``id_name`` is given).

    ``edges``: the ``bins + 1`` bin edges; ``heights[name]``: the ``bins`` bar heights.
    """
    edges = np.asarray(edges, dtype=float)
    centers = (edges[:-1] + edges[1:]) / 2
    widths = np.diff(edges)
    colors = _colors(list(heights), id_name)
    figure = go.Figure()
    for name, values in heights.items():
        label = f"{name} (ID)" if name == id_name else name
        figure.add_trace(go.Bar(
            x=centers, y=np.asarray(values), width=widths, name=label, marker_color=colors[name],
            opacity=0.55 if name != id_name else 0.65,
            hovertemplate=f"{label}<br>score %{{x:.4g}}<br>%{{y:.3g}}<extra></extra>",
        ))
    figure.update_layout(barmode="overlay", title=title, bargap=0, legend_title_text="data set",
                         margin=dict(l=10, r=10, t=40 if title else 10, b=10), height=320)
    figure.update_xaxes(title_text=SCORE_AXIS)
    figure.update_yaxes(title_text=FRACTION_AXIS if normalized else COUNT_AXIS)
    return figure


def threshold_histogram(edges: np.ndarray, heights: Mapping[str, np.ndarray], threshold: float,
                        title: str = "", id_name: str | None = None, normalized: bool = True) -> go.Figure:
    """:func:`score_histograms` with a vertical line at ``threshold``: right of it is flagged OOD."""
    figure = score_histograms(edges, heights, title=title, id_name=id_name, normalized=normalized)
    figure.add_vline(x=float(threshold), line_width=2, line_dash="dash", line_color="black",
                     annotation_text=f"threshold {threshold:.4g}: right = flagged OOD",
                     annotation_position="top right")
    return figure


def roc_curves(curves: Mapping[str, tuple[np.ndarray, np.ndarray]], title: str = "") -> go.Figure:
    """ROC curves ``{label: (fpr, tpr)}`` with ID positive; dotted chance diagonal and a 95 % TPR line."""
    figure = go.Figure()
    for k, (label, (fpr, tpr)) in enumerate(curves.items()):
        figure.add_trace(go.Scatter(
            x=np.asarray(fpr), y=np.asarray(tpr), mode="lines", name=label,
            line=dict(color=OOD_COLORS[k % len(OOD_COLORS)] if k else ID_COLOR, width=2),
            hovertemplate=f"{label}<br>FPR %{{x:.3f}}<br>TPR %{{y:.3f}}<extra></extra>",
        ))
    figure.add_shape(type="line", x0=0, y0=0, x1=1, y1=1, line=dict(dash="dot", color="grey", width=1))
    figure.add_hline(y=0.95, line=dict(dash="dash", color="grey", width=1),
                     annotation_text="95 % TPR (FPR95)", annotation_position="bottom right")
    figure.update_layout(title=title, legend_title_text="", height=360,
                         margin=dict(l=10, r=10, t=40 if title else 10, b=10))
    figure.update_xaxes(title_text=ROC_X_AXIS, range=[0, 1])
    figure.update_yaxes(title_text=ROC_Y_AXIS, range=[0, 1.02])
    return figure


def confusion_matrix_figure(confusion: Mapping[str, float], id_name: str = "ID",
                            ood_name: str = "OOD") -> go.Figure:
    """2x2 heatmap of :func:`gaia_viz.metrics.confusion_at_threshold`'s counts.

    Rows: the truth (ID set, OOD set); columns: the decision (accepted as ID, flagged OOD).
    Cells show the count and the row's percentage.
    """
    counts = np.array([[confusion["tn"], confusion["fp"]], [confusion["fn"], confusion["tp"]]], dtype=float)
    rows = counts.sum(1, keepdims=True)
    shares = np.divide(counts, rows, out=np.zeros_like(counts), where=rows > 0)
    text = [[f"{int(c):,}<br>{100 * s:.1f} %" for c, s in zip(cr, sr)] for cr, sr in zip(counts, shares)]
    y = [f"{id_name} (truly ID)", f"{ood_name} (truly OOD)"]
    x = ["accepted as ID", "flagged OOD"]
    figure = go.Figure(go.Heatmap(
        z=shares, x=x, y=y, text=text, texttemplate="%{text}", colorscale="Blues", zmin=0, zmax=1,
        colorbar=dict(title="share of row"), hovertemplate="%{y} → %{x}: %{text}<extra></extra>",
    ))
    figure.update_layout(height=260, margin=dict(l=10, r=10, t=10, b=10))
    figure.update_xaxes(title_text="decision at the threshold", side="bottom")
    figure.update_yaxes(title_text="truth", autorange="reversed")
    return figure


def metrics_display_table(metrics: pd.DataFrame, labels: Mapping[str, str] | None = None) -> pd.DataFrame:
    """:meth:`Evaluation.metrics_table` for people: percentages, method labels, column headers
    that state each metric's direction and convention."""
    labels = labels or {}
    table = pd.DataFrame({
        "Method": [labels.get(m, m) for m in metrics["method"]],
        "OOD set": metrics["ood_set"].to_numpy(),
    })
    for key, header in METRIC_COLUMNS.items():
        table[header] = (100 * metrics[key].to_numpy(dtype=float)).round(2)
    return table


def metric_pivot(metrics: pd.DataFrame, metric: str = "auroc",
                 labels: Mapping[str, str] | None = None) -> pd.DataFrame:
    """One metric as a method x OOD-set grid in %, methods in the table's order."""
    labels = labels or {}
    grid = metrics.pivot(index="method", columns="ood_set", values=metric)
    grid = grid.loc[list(dict.fromkeys(metrics["method"])), list(dict.fromkeys(metrics["ood_set"]))]
    grid.index = [labels.get(m, m) for m in grid.index]
    return (100 * grid).round(2)
