"""Plotly figures of scores and channels: the data they carry, their axes and legends."""

import numpy as np
import pandas as pd
import pytest

from gaia_viz.errors import LayerError
from gaia_viz.figures import channels, colors, scores
from gaia_viz.metrics import confusion_at_threshold, roc_points


@pytest.fixture
def score_sets():
    rng = np.random.default_rng(0)
    return {"digits": rng.normal(0, 1, 500), "faces": rng.normal(2, 1, 300), "noise": rng.normal(4, 1, 200)}


def test_bin_score_sets_shares_edges_and_normalises(score_sets):
    edges, heights = scores.bin_score_sets(score_sets, bins=40)
    assert edges.shape == (41,)
    assert edges[0] == pytest.approx(min(s.min() for s in score_sets.values()))
    assert edges[-1] == pytest.approx(max(s.max() for s in score_sets.values()))
    for name, values in heights.items():
        assert values.shape == (40,)
        assert values.sum() == pytest.approx(1.0)
    counts = scores.bin_score_sets(score_sets, bins=40, normalize=False)[1]
    assert counts["faces"].sum() == 300


def test_score_histograms_one_bar_trace_per_set_at_bin_centres(score_sets):
    edges, heights = scores.bin_score_sets(score_sets, bins=30)
    figure = scores.score_histograms(edges, heights, title="GAIA-Z", id_name="digits")
    assert [t.type for t in figure.data] == ["bar"] * 3
    assert [t.name for t in figure.data] == ["digits (ID)", "faces", "noise"]
    np.testing.assert_allclose(figure.data[0].x, (edges[:-1] + edges[1:]) / 2)
    np.testing.assert_allclose(figure.data[1].y, heights["faces"])
    np.testing.assert_allclose(figure.data[2].width, np.diff(edges))
    assert figure.layout.barmode == "overlay"
    assert figure.layout.xaxis.title.text == scores.SCORE_AXIS
    assert figure.layout.yaxis.title.text == scores.FRACTION_AXIS
    assert figure.layout.title.text == "GAIA-Z"
    counts = scores.score_histograms(edges, heights, normalized=False)
    assert counts.layout.yaxis.title.text == scores.COUNT_AXIS


def test_threshold_histogram_draws_the_threshold_line(score_sets):
    edges, heights = scores.bin_score_sets({k: score_sets[k] for k in ("digits", "faces")})
    figure = scores.threshold_histogram(edges, heights, 1.25, id_name="digits")
    assert [t.type for t in figure.data] == ["bar", "bar", "scatter"]  # the line's legend entry
    lines = [s for s in figure.layout.shapes if s.type == "line"]
    assert len(lines) == 1 and lines[0].x0 == lines[0].x1 == 1.25
    label = figure.layout.annotations[0]
    assert "1.25" in label.text and figure.data[2].name == label.text
    assert label.yref == "paper" and label.y == 1.0 and label.yanchor == "bottom"  # at the top, not on the bars


def test_histogram_legend_below_palette_distinct_and_log_counts(score_sets):
    six = {"digits": score_sets["digits"], **{f"set {k}": score_sets["faces"] + k for k in range(6)}}
    edges, heights = scores.bin_score_sets(six, bins=20, normalize=False)
    figure = scores.score_histograms(edges, heights, id_name="digits", normalized=False, log_y=True)
    assert figure.layout.legend.orientation == "h" and figure.layout.legend.y < 0  # below the plot
    assert figure.layout.yaxis.type == "log" and "log" in figure.layout.yaxis.title.text
    hues = [t.marker.color for t in figure.data]
    assert len(set(hues)) == len(hues)  # every set its own colour
    assert hues[0] == colors.ID_COLOR and set(hues[1:]) <= set(colors.OOD_COLORS)


def test_negated_scores_say_so_on_the_axis():
    from gaia_viz.detectors import DETECTORS

    assert set(scores.SCORE_MEANINGS) == set(DETECTORS)
    for method, detector in DETECTORS.items():
        doc = " ".join((detector.__doc__ or "").split())
        negates = any(marker in doc for marker in ("score(x) = -", "score is ``-", "= -T * logsumexp"))
        assert negates == (method in scores.NEGATED_METHODS), method
        title = scores.score_axis_title(method, detector.label)
        assert ("negated" in title) == negates and "higher = more OOD" in title


def test_roc_curves_carry_the_roc_points(score_sets):
    fpr, tpr, _ = roc_points(score_sets["digits"], score_sets["faces"])
    figure = scores.roc_curves({"GAIA-Z": (fpr, tpr), "MSP": (fpr[::2], tpr[::2])}, title="x",
                               aurocs={"GAIA-Z": 0.9123})
    assert [t.name for t in figure.data] == ["GAIA-Z · AUROC 91.2 %", "MSP", "95 % TPR: FPR95 is read here", "chance"]
    np.testing.assert_allclose(figure.data[0].x, fpr)
    np.testing.assert_allclose(figure.data[0].y, tpr)
    assert list(figure.data[2].y) == [0.95, 0.95]  # the FPR95 operating line, named in the legend
    assert not figure.layout.annotations  # no text over the curves
    assert figure.layout.xaxis.title.text == scores.ROC_X_AXIS
    assert figure.layout.yaxis.title.text == scores.ROC_Y_AXIS


def test_confusion_matrix_figure_rows_are_truth_columns_decisions():
    confusion = confusion_at_threshold([0.1, 0.2, 0.9, 0.3], [0.8, 0.95, 0.05], 0.5)
    figure = scores.confusion_matrix_figure(confusion, "digits", "faces")
    heatmap = figure.data[0]
    assert list(heatmap.x) == ["accepted as ID", "flagged OOD"]
    assert list(heatmap.y) == ["digits<br>(truly ID)", "faces<br>(truly OOD)"]
    np.testing.assert_allclose(heatmap.z, [[3 / 4, 1 / 4], [1 / 3, 2 / 3]])
    assert heatmap.text[0][0].startswith("3<br>75.0")
    assert figure.layout.yaxis.title.text == "truth"
    assert figure.layout.xaxis.tickangle == 0 and heatmap.textfont.size >= 14 and figure.layout.height >= 320


def test_confusion_table_holds_the_figures_counts_and_row_shares():
    confusion = confusion_at_threshold([0.1, 0.2, 0.9, 0.3], [0.8, 0.95, 0.05], 0.5)
    table = scores.confusion_table(confusion, "digits", "faces")
    assert list(table.columns) == ["accepted as ID", "flagged OOD"]
    assert list(table.index) == ["digits (truly ID)", "faces (truly OOD)"] and table.index.name == "truth"
    assert table.to_numpy().tolist() == [["3 (75.0 % of row)", "1 (25.0 % of row)"],
                                         ["1 (33.3 % of row)", "2 (66.7 % of row)"]]
    empty = scores.confusion_table({"tn": 1, "fp": 0, "fn": 0, "tp": 0}, "digits", "faces")
    assert empty.loc["faces (truly OOD)"].tolist() == ["0", "0"]  # no OOD images: no share to give


def test_metrics_display_table_in_percent_with_conventions_in_headers():
    metrics = pd.DataFrame([
        dict(method="gaia_z", ood_set="faces", fpr95=0.25, auroc=0.9, aupr_in=0.8, aupr_out=0.95, detection_error=0.1),
        dict(method="msp", ood_set="faces", fpr95=0.5, auroc=0.7, aupr_in=0.6, aupr_out=0.75, detection_error=0.2),
    ])
    table = scores.metrics_display_table(metrics, {"gaia_z": "GAIA-Z"})
    assert list(table.columns) == ["Method", "OOD set", *scores.METRIC_COLUMNS.values()]
    assert table.columns[2] == "FPR95 ↓ (% OOD accepted at 95 % TPR)"
    assert list(table["Method"]) == ["GAIA-Z", "msp"]
    assert table.iloc[0, 2] == 25.0 and table.iloc[1, 3] == 70.0
    grid = scores.metric_pivot(metrics, "auroc", {"gaia_z": "GAIA-Z"})
    assert grid.loc["GAIA-Z", "faces"] == 90.0


def test_metric_grid_is_the_papers_table_with_average_and_best_per_column():
    rows = []
    for method, values in {"gaia_z": (0.10, 0.30, np.nan), "msp": (0.20, 0.30, 0.5), "energy": (0.40, 0.05, 0.6)}.items():
        for ood, value in zip(("faces", "noise", "letters"), values):
            rows.append(dict(method=method, ood_set=ood, fpr95=value, auroc=1 - value))
    metrics = pd.DataFrame(rows)
    metrics = pd.concat([metrics, pd.DataFrame([dict(method="msp", ood_set="average", fpr95=9.0, auroc=9.0)])])
    grid = scores.metric_grid(metrics, "fpr95", {"gaia_z": "GAIA-Z"})
    assert list(grid.columns) == ["faces", "noise", "letters", scores.AVERAGE_COLUMN]
    assert list(grid.index) == ["GAIA-Z", "msp", "energy"]
    assert grid.loc["msp", "Average"] == pytest.approx(100 * (0.2 + 0.3 + 0.5) / 3, abs=0.01)  # not the stored row
    assert np.isnan(grid.loc["GAIA-Z", "Average"])  # undefined on one set: no average either
    best = scores.best_in_column(grid, lower_is_better=True)
    assert best["faces"].tolist() == [True, False, False]
    assert best["noise"].tolist() == [False, False, True]
    assert best["letters"].tolist() == [False, True, False]  # NaN is never best
    assert best["Average"].tolist() == [False, True, False]
    higher = scores.best_in_column(scores.metric_grid(metrics, "auroc"), lower_is_better=False)
    assert higher["faces"].tolist() == [True, False, False]
    assert scores.best_in_column(pd.DataFrame({"a": [1.0, 1.0]}), False)["a"].tolist() == [True, True]  # ties


def test_per_layer_matrix_pads_ragged_layers_with_nan():
    matrix = channels.per_layer_matrix(np.arange(7.0), [2, 4, 1])
    assert matrix.shape == (3, 4)
    np.testing.assert_array_equal(matrix[0, :2], [0, 1])
    np.testing.assert_array_equal(matrix[1], [2, 3, 4, 5])
    assert matrix[2, 0] == 6 and np.isnan(matrix[2, 1:]).all() and np.isnan(matrix[0, 2:]).all()
    with pytest.raises(LayerError):
        channels.per_layer_matrix(np.arange(6.0), [2, 4, 1])


def test_layer_channel_heatmap_axes_and_diverging_scale():
    matrix = np.array([[0.1, 0.2, np.nan], [0.3, -0.6, 0.0]])
    figure = channels.layer_channel_heatmap(matrix, ["bn1", "bn2"], title="t", colorbar_title="r")
    heatmap = figure.data[0]
    np.testing.assert_array_equal(heatmap.z, matrix)
    assert list(heatmap.y) == ["bn1", "bn2"] and list(heatmap.x) == [0, 1, 2]
    assert figure.layout.xaxis.title.text == "channel index"
    assert figure.layout.yaxis.title.text == "layer"
    assert heatmap.colorbar.title.text == "r"
    diff = channels.layer_channel_heatmap(matrix, ["bn1", "bn2"], diverging=True).data[0]
    assert diff.zmid == 0 and diff.zmin == -0.6 and diff.zmax == 0.6


def test_layer_auroc_bars_in_percent_one_trace_per_family():
    figure = channels.layer_auroc_bars({"GAIA-Z": (["bn1", "bn2"], [0.5, 0.9]), "GAIA-A": (["bn2"], [0.75])})
    assert [t.name for t in figure.data] == ["GAIA-Z", "GAIA-A"]
    np.testing.assert_allclose(figure.data[0].y, [50, 90])
    assert list(figure.data[1].x) == ["bn2"]
    assert figure.layout.yaxis.title.text == "AUROC (%)"
    assert figure.layout.xaxis.title.text == "layer (single-layer score)"
