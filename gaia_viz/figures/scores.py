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

from typing import Mapping

import numpy as np
import pandas as pd
import plotly.graph_objects as go

from gaia_viz.figures import colors
from gaia_viz.metrics import DEFAULT_BINS, binned_histogram, shared_edges

SCORE_AXIS = "OOD score (higher = more OOD)"
FRACTION_AXIS = "fraction of the set's images"
COUNT_AXIS = "images"
ROC_X_AXIS = "FPR: fraction of OOD accepted as ID"
ROC_Y_AXIS = "TPR: fraction of ID accepted"
HISTOGRAM_SCALE_LABELS = {"fraction": "fraction of each set", "count": "image count", "log": "image count, log scale"}

# What each method's OOD score is. Several baselines negate a confidence (higher = more ID)
# so that every score is OOD-high, which is why their axes run through negative numbers.
SCORE_MEANINGS = {
    "gaia_z": "mean of r², r = share of non-zero gradient entries",
    "gaia_a": "mean of (|channel-average gradient| / o)²",
    "msp": "negated max softmax probability, −max p",
    "maxlogit": "negated max logit, −max f",
    "energy": "free energy, −logsumexp f (negated)",
    "odin": "negated max softmax of the perturbed input at temperature T",
    "gradnorm": "negated gradient norm, −‖∂KL/∂W‖₁",
    "react": "free energy of clipped features, −logsumexp (negated)",
    "knn": "distance to the k-th nearest ID feature",
    "mahalanobis": "squared Mahalanobis distance to the closest class",
    "ash": "free energy of the shaped features, −logsumexp (negated)",
    "scale": "free energy of the scaled features, −logsumexp (negated)",
    "vim": "virtual logit minus energy, α‖(h−u)R‖ − logsumexp f",
    "gen": "generalised entropy of the top-M softmax probabilities",
    "fdbd": "negated mean distance to the decision boundaries / ‖h − μ‖",
    "nnguide": "negated nearest-neighbour guided energy",
    "dice": "free energy of the sparsified head, −logsumexp (negated)",
}
NEGATED_METHODS = ("msp", "maxlogit", "energy", "odin", "gradnorm", "react", "ash", "scale", "fdbd", "nnguide",
                   "dice")

METRIC_COLUMNS = {
    "fpr95": "FPR95 ↓ (% OOD accepted at 95 % TPR)",
    "auroc": "AUROC ↑ (%)",
    "aupr_in": "AUPR-In ↑ (%, ID positive)",
    "aupr_out": "AUPR-Out ↑ (%, OOD positive)",
}
LOWER_IS_BETTER = {"fpr95": True, "auroc": False, "aupr_in": False, "aupr_out": False, "detection_error": True}
AVERAGE_COLUMN = "Average"


def score_axis_title(method: str, label: str | None = None) -> str:
    """The x-axis title of ``method``'s scores: what the score is (saying "negated" where a
    confidence was negated) and its direction."""
    meaning = SCORE_MEANINGS.get(method)
    name = label or method
    return f"{name}: {meaning}<br>(higher = more OOD)" if meaning else f"{name} score (higher = more OOD)"


def _bottom_legend(figure: go.Figure, title: str = "", y: float = -0.22) -> None:
    """The legend in rows below the plot (``y`` in plot heights below the x axis: clear of a
    two-line axis title at -0.3), so it never takes width from a half-page chart."""
    figure.update_layout(legend=dict(orientation="h", yanchor="top", y=y, x=0, xanchor="left",
                                     title_text=title))


def bin_score_sets(score_sets: Mapping[str, np.ndarray], bins: int = DEFAULT_BINS,
                   normalize: bool = True) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """Shared edges over all sets and each set's histogram on them: ``(edges, {name: heights})``.

    ``normalize``: heights are fractions of each set (sum 1), so sets of different sizes compare.
    """
    edges = shared_edges(list(score_sets.values()), bins=bins)
    return edges, {name: binned_histogram(scores, edges, normalize=normalize)
                   for name, scores in score_sets.items()}


def score_histograms(edges: np.ndarray, heights: Mapping[str, np.ndarray], title: str = "",
                     id_name: str | None = None, normalized: bool = True, log_y: bool = False,
                     score_axis: str = SCORE_AXIS) -> go.Figure:
    """Overlaid histograms, one bar trace per set (ID in blue when ``id_name`` is given, the
    OOD sets in distinct colour-blind-safe hues), the legend below the plot.

    ``edges``: the ``bins + 1`` bin edges; ``heights[name]``: the ``bins`` bar heights
    (fractions when ``normalized``, else counts); ``log_y``: a logarithmic height axis.
    """
    edges = np.asarray(edges, dtype=float)
    centers = (edges[:-1] + edges[1:]) / 2
    widths = np.diff(edges)
    palette = colors.set_colors(list(heights), id_name)
    figure = go.Figure()
    for name, values in heights.items():
        label = f"{name} (ID)" if name == id_name else name
        figure.add_trace(go.Bar(
            x=centers, y=np.asarray(values), width=widths, name=label, marker_color=palette[name],
            opacity=0.55 if name != id_name else 0.65,
            hovertemplate=f"{label}<br>score %{{x:.4g}}<br>%{{y:.3g}}<extra></extra>",
        ))
    figure.update_layout(barmode="overlay", title=title, bargap=0,
                         margin=dict(l=10, r=10, t=50 if title else 10, b=10), height=420)
    _bottom_legend(figure, "data set", y=-0.32 if "<br>" in score_axis else -0.22)
    figure.update_xaxes(title_text=score_axis)
    y_title = FRACTION_AXIS if normalized else COUNT_AXIS
    figure.update_yaxes(title_text=f"{y_title} (log scale)" if log_y else y_title, type="log" if log_y else "linear")
    return figure


def add_marker_line(fig: go.Figure, x: float, text: str, color: str, dash: str = "solid", row: int = 0) -> None:
    """A vertical line at ``x`` labelled at the top of the plot (staggered by ``row`` so
    labels do not overlap) and as a legend entry of the same colour and dash."""
    fig.add_vline(x=x, line=dict(color=color, width=3 if dash == "solid" else 2, dash=dash))
    fig.add_annotation(x=x, y=1.0, xref="x", yref="paper", yanchor="bottom", yshift=2 + 17 * row, text=text,
                       showarrow=False, font=dict(color=color, size=12), bgcolor="rgba(255, 255, 255, 0.85)")
    fig.add_trace(go.Scatter(x=[None], y=[None], mode="lines", name=text,
                             line=dict(color=color, width=3 if dash == "solid" else 2, dash=dash), hoverinfo="skip"))
    top = fig.layout.margin.t if fig.layout.margin.t is not None else 40
    fig.update_layout(margin=dict(t=max(top, 72 + 17 * row)))


def threshold_histogram(edges: np.ndarray, heights: Mapping[str, np.ndarray], threshold: float,
                        title: str = "", id_name: str | None = None, normalized: bool = True,
                        log_y: bool = False, score_axis: str = SCORE_AXIS) -> go.Figure:
    """:func:`score_histograms` with a dashed line at ``threshold`` (labelled at the top and
    in the legend): right of it is flagged OOD."""
    figure = score_histograms(edges, heights, title=title, id_name=id_name, normalized=normalized,
                              log_y=log_y, score_axis=score_axis)
    add_marker_line(figure, float(threshold), f"threshold {threshold:.4g}: right = flagged OOD",
                    colors.THRESHOLD_COLOR, dash="dash", row=0)
    return figure


def roc_curves(curves: Mapping[str, tuple[np.ndarray, np.ndarray]], title: str = "",
               aurocs: Mapping[str, float] | None = None) -> go.Figure:
    """ROC curves ``{label: (fpr, tpr)}`` with ID positive; ``aurocs`` (``{label: AUROC in
    [0, 1]}``) go into the legend. The chance diagonal and the 95 % TPR line (where FPR95 is
    read) are legend entries too, so no text lies over the curves. Every curve has its own
    colour and dash (:func:`gaia_viz.figures.colors.curve_styles`)."""
    aurocs = aurocs or {}
    styles = colors.curve_styles(len(curves))  # a hue each, dashed once the hues run out
    figure = go.Figure()
    for k, (label, (fpr, tpr)) in enumerate(curves.items()):
        auroc_value = aurocs.get(label)
        name = f"{label} · AUROC {100 * auroc_value:.1f} %" if auroc_value is not None and np.isfinite(auroc_value) else label
        figure.add_trace(go.Scatter(
            x=np.asarray(fpr), y=np.asarray(tpr), mode="lines", name=name,
            line=dict(color=styles[k][0], dash=styles[k][1], width=2),
            hovertemplate=f"{label}<br>FPR %{{x:.3f}}<br>TPR %{{y:.3f}}<extra></extra>",
        ))
    figure.add_trace(go.Scatter(x=[0, 1], y=[0.95, 0.95], mode="lines", name="95 % TPR: FPR95 is read here",
                                line=dict(dash="dash", color=colors.GRID_GREY, width=1), hoverinfo="skip"))
    figure.add_trace(go.Scatter(x=[0, 1], y=[0, 1], mode="lines", name="chance",
                                line=dict(dash="dot", color=colors.GRID_GREY, width=1), hoverinfo="skip"))
    figure.update_layout(title=title, height=460, margin=dict(l=10, r=10, t=50 if title else 10, b=10))
    _bottom_legend(figure)
    figure.update_xaxes(title_text=ROC_X_AXIS, range=[0, 1])
    figure.update_yaxes(title_text=ROC_Y_AXIS, range=[0, 1.02])
    return figure


def confusion_matrix_figure(confusion: Mapping[str, float], id_name: str = "ID",
                            ood_name: str = "OOD") -> go.Figure:
    """2x2 heatmap of :func:`gaia_viz.metrics.confusion_at_threshold`'s counts.

    Rows: the truth (ID set, OOD set); columns: the decision (accepted as ID, flagged OOD).
    Cells show the count and the row's percentage in large type; labels are horizontal.
    """
    counts = np.array([[confusion["tn"], confusion["fp"]], [confusion["fn"], confusion["tp"]]], dtype=float)
    rows = counts.sum(1, keepdims=True)
    shares = np.divide(counts, rows, out=np.zeros_like(counts), where=rows > 0)
    text = [[f"{int(c):,}<br>{100 * s:.1f} % of row" for c, s in zip(cr, sr)] for cr, sr in zip(counts, shares)]
    y = [f"{id_name}<br>(truly ID)", f"{ood_name}<br>(truly OOD)"]
    x = ["accepted as ID", "flagged OOD"]
    figure = go.Figure(go.Heatmap(
        z=shares, x=x, y=y, text=text, texttemplate="%{text}", textfont=dict(size=16),
        colorscale=colors.colorscale("Blues"), zmin=0, zmax=1, showscale=False,
        hovertemplate="%{y} → %{x}: %{text}<extra></extra>",
    ))
    figure.update_layout(height=360, margin=dict(l=10, r=10, t=10, b=10), font=dict(size=14))
    figure.update_xaxes(title_text="decision at the threshold", side="bottom", tickangle=0)
    figure.update_yaxes(title_text="truth", autorange="reversed", tickangle=0)
    return figure


def confusion_table(confusion: Mapping[str, float], id_name: str = "ID", ood_name: str = "OOD") -> pd.DataFrame:
    """The same 2x2 as :func:`confusion_matrix_figure`, as a table (rows: the truth; columns: the
    decision; cells: the count and the row's percentage). A table is what Tune threshold redraws
    on every slider step: a Plotly heatmap cost the browser about 45 ms of the 300 ms budget."""
    counts = [[int(confusion["tn"]), int(confusion["fp"])], [int(confusion["fn"]), int(confusion["tp"])]]

    def cell(count: int, row: list[int]) -> str:
        return f"{count:,} ({100 * count / sum(row):.1f} % of row)" if sum(row) else f"{count:,}"

    return pd.DataFrame([[cell(c, row) for c in row] for row in counts],
                        index=pd.Index([f"{id_name} (truly ID)", f"{ood_name} (truly OOD)"], name="truth"),
                        columns=["accepted as ID", "flagged OOD"])


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


def metric_grid(metrics: pd.DataFrame, metric: str, labels: Mapping[str, str] | None = None) -> pd.DataFrame:
    """The paper's table layout: one row per method, one column per OOD set and an
    ``Average`` column (the mean over the sets), values in %. A method whose score is
    undefined on a set (NaN) has NaN there and in its average."""
    per_set = metrics[metrics["ood_set"] != "average"]
    grid = metric_pivot(per_set, metric, labels)
    grid.columns = [str(c) for c in grid.columns]
    grid[AVERAGE_COLUMN] = (100 * per_set.pivot(index="method", columns="ood_set", values=metric)
                            .loc[list(dict.fromkeys(per_set["method"]))].mean(axis=1, skipna=False)).round(2).to_numpy()
    grid.index.name = "Method"
    return grid


def best_in_column(grid: pd.DataFrame, lower_is_better: bool) -> pd.DataFrame:
    """True at the best value of each column (every tie; NaN is never best)."""
    best = grid.min(axis=0) if lower_is_better else grid.max(axis=0)
    return grid.eq(best, axis=1) & grid.notna()
