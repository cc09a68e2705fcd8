"""Plotly figures of scores and channels: the data they carry, their axes and legends."""

import numpy as np
import pandas as pd
import pytest

from gaia_viz.errors import LayerError
from gaia_viz.figures import channels, scores
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
    assert len(figure.data) == 2
    lines = [s for s in figure.layout.shapes if s.type == "line"]
    assert len(lines) == 1 and lines[0].x0 == lines[0].x1 == 1.25
    assert "1.25" in figure.layout.annotations[0].text


def test_roc_curves_carry_the_roc_points(score_sets):
    fpr, tpr, _ = roc_points(score_sets["digits"], score_sets["faces"])
    figure = scores.roc_curves({"GAIA-Z": (fpr, tpr), "MSP": (fpr[::2], tpr[::2])}, title="x")
    assert [t.name for t in figure.data] == ["GAIA-Z", "MSP"]
    np.testing.assert_allclose(figure.data[0].x, fpr)
    np.testing.assert_allclose(figure.data[0].y, tpr)
    assert figure.layout.xaxis.title.text == scores.ROC_X_AXIS
    assert figure.layout.yaxis.title.text == scores.ROC_Y_AXIS
    assert any(s.y0 == 0.95 for s in figure.layout.shapes)  # the FPR95 operating line


def test_confusion_matrix_figure_rows_are_truth_columns_decisions():
    confusion = confusion_at_threshold([0.1, 0.2, 0.9, 0.3], [0.8, 0.95, 0.05], 0.5)
    figure = scores.confusion_matrix_figure(confusion, "digits", "faces")
    heatmap = figure.data[0]
    assert list(heatmap.x) == ["accepted as ID", "flagged OOD"]
    assert list(heatmap.y) == ["digits (truly ID)", "faces (truly OOD)"]
    np.testing.assert_allclose(heatmap.z, [[3 / 4, 1 / 4], [1 / 3, 2 / 3]])
    assert heatmap.text[0][0].startswith("3<br>75.0")
    assert figure.layout.yaxis.title.text == "truth"


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
