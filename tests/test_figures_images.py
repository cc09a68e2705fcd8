"""Per-image figure builders: the data they carry, not how they look."""

import numpy as np
import plotly.graph_objects as go
import pytest

from gaia_viz.figures import colors
from gaia_viz.figures.images import (
    attribution_grid,
    attribution_heatmap,
    channel_grid,
    channel_ratio_bars,
    layer_nonzero_bars,
    overlay,
    score_marker_histogram,
    spatial_map_figure,
)


def test_attribution_heatmap_carries_the_map_with_image_orientation():
    heat = np.random.default_rng(0).random((6, 8))
    fig = attribution_heatmap(heat, title="Saliency")
    (trace,) = fig.data
    assert isinstance(trace, go.Heatmap)
    np.testing.assert_array_equal(np.asarray(trace.z), heat)
    assert fig.layout.yaxis.autorange == "reversed"
    assert fig.layout.title.text == "Saliency"
    assert attribution_heatmap(heat[None, None]).data[0].z is not None  # (1, 1, H, W) squeezes
    with pytest.raises(ValueError):
        attribution_heatmap(np.zeros((2, 3, 4)))


def test_magnitude_maps_start_black_and_signed_maps_are_centred_at_zero():
    heat = attribution_heatmap(np.random.default_rng(0).random((6, 8))).data[0]
    assert heat.colorscale[0] == (0.0, "rgb(0, 0, 4)")  # Inferno's first stop, spelled safely
    assert (heat.zmin, heat.zmax) == (0.0, 1.0)
    signed_map = np.array([[-0.2, 0.1], [0.6, 0.0]])
    signed = attribution_heatmap(signed_map, signed=True).data[0]
    assert signed.zmin == -0.6 and signed.zmax == 0.6 and signed.zmid == 0.0
    middle = [color for position, color in signed.colorscale if position == 0.5]
    assert middle and middle[0] == "rgb(247, 247, 247)"  # RdBu's neutral at 0
    assert "−1" in signed.colorbar.title.text and "0 = none" in signed.colorbar.title.text
    zero = attribution_heatmap(np.zeros((3, 3)), signed=True).data[0]
    assert (zero.zmin, zero.zmax) == (-1.0, 1.0)  # no division by zero, still symmetric


def test_overlay_stretches_a_small_map_over_the_image():
    image = np.zeros((28, 28, 3), dtype=np.uint8)
    fig = overlay(image, np.ones((7, 7)), opacity=0.3)
    picture, heat = fig.data
    assert isinstance(picture, go.Image) and np.asarray(picture.z).shape == (28, 28, 3)
    assert heat.opacity == 0.3
    assert heat.colorscale[0][1].endswith(", 0.000)")  # "none" is transparent: the image shows
    assert heat.colorscale[-1][1].endswith(", 1.000)")
    signed = overlay(image, np.array([[-1.0, 1.0]]), signed=True).data[1]
    alphas = {position: color.rsplit(",", 1)[1] for position, color in signed.colorscale}
    assert alphas[0.5].strip() == "0.000)" and alphas[0.0].strip() == alphas[1.0].strip() == "1.000)"
    assert signed.zmin == -1.0 and signed.zmax == 1.0
    assert heat.dx == 4 and heat.dy == 4  # one map cell covers 4 x 4 pixels
    assert heat.x0 == 1.5  # centre of the first 4-pixel cell in pixel coordinates
    gray = overlay(np.zeros((10, 10), dtype=np.uint8), np.ones((10, 10)))
    assert np.asarray(gray.data[0].z).shape == (10, 10, 3)
    with pytest.raises(ValueError):
        overlay(image, np.ones((7, 7)), opacity=1.5)


def test_spatial_map_has_units_on_the_colorbar():
    fig = spatial_map_figure(np.full((4, 4), 0.5), "non-zero map",
                             "fraction of channels with non-zero gradient", zmin=0, zmax=1)
    trace = fig.data[0]
    assert trace.colorbar.title.text == "fraction of channels with non-zero gradient"
    assert (trace.zmin, trace.zmax) == (0, 1)


def test_channel_grid_has_one_panel_per_channel():
    maps = np.random.default_rng(1).normal(size=(6, 5, 5))
    fig = channel_grid(maps, [0, 3, 5, 7, 9, 11], "gradient", "d objective / d activation", columns=4)
    assert len(fig.data) == 6
    assert [a.text for a in fig.layout.annotations] == [f"channel {c}" for c in (0, 3, 5, 7, 9, 11)]
    assert fig.data[0].zmin == -fig.data[0].zmax  # signed values: symmetric scale
    mask = channel_grid((maps != 0).astype(float), list(range(6)), "mask", "non-zero", binary=True)
    assert (mask.data[0].zmin, mask.data[0].zmax) == (0, 1)


def test_every_panel_of_a_grid_has_square_pixels():
    fig = channel_grid(np.zeros((6, 7, 7)), list(range(6)), "gradient", "value", columns=4)
    for k in range(1, 9):  # 2 rows x 4 columns of axes
        suffix = "" if k == 1 else str(k)
        assert fig.layout[f"yaxis{suffix}"].scaleanchor == f"x{suffix}"
        assert fig.layout[f"yaxis{suffix}"].autorange == "reversed"
    for trace in fig.data:  # each heatmap sits on its own panel's axes
        assert fig.layout[f"yaxis{trace.yaxis[1:]}"].scaleanchor == trace.xaxis


def test_attribution_grid_one_panel_per_method_each_on_its_scale():
    maps = {"Saliency": np.random.default_rng(0).random((5, 5)), "Integrated Gradients": np.array([[-2.0, 1.0]])}
    fig = attribution_grid(maps, {"Saliency": False, "Integrated Gradients": True}, columns=4)
    magnitude, signed = fig.data
    assert magnitude.zmin == 0.0 and (signed.zmin, signed.zmax) == (-2.0, 2.0)
    assert [a.text for a in fig.layout.annotations] == ["Saliency (|value|)", "Integrated Gradients (signed)"]
    assert fig.layout.yaxis2.scaleanchor == "x2"


def test_channel_ratio_bars_show_this_image_against_id_spread():
    this, mean, std = np.array([0.1, 0.9, 0.5]), np.array([0.2, 0.3, 0.4]), np.array([0.05, 0.1, 0.0])
    fig = channel_ratio_bars(this, mean, std, "layer3", ood_mean=np.array([0.6, 0.7, 0.8]))
    by_name = {t.name: t for t in fig.data}
    id_trace = next(t for name, t in by_name.items() if name.startswith("ID mean"))
    np.testing.assert_array_equal(id_trace.y, mean)
    np.testing.assert_array_equal(id_trace.error_y.array, std)
    np.testing.assert_array_equal(by_name["this image"].y, this)
    np.testing.assert_array_equal(by_name["OOD mean"].y, [0.6, 0.7, 0.8])
    assert "layer3" in fig.layout.xaxis.title.text
    assert fig.layout.barmode == "group"  # side by side: the image's bars cannot hide the ID bars
    with pytest.raises(ValueError):
        channel_ratio_bars(this, mean[:2], std, "layer3")


def test_layer_nonzero_bars_per_layer_for_images_and_sets():
    fig = layer_nonzero_bars(["bn1", "bn2"], {"ID image": ([0.2, 0.3], [0.1, 0.2]), "OOD image": ([0.5, 0.6], [0.4, 0.5])},
                             {"ID set mean": ([0.25, 0.35], [0.15, 0.25])})
    assert [t.name for t in fig.data] == ["ID image", "OOD image", "ID set mean"] * 2
    assert list(fig.data[1].y) == [0.5, 0.6] and list(fig.data[4].y) == [0.4, 0.5]  # share, then mean r²
    assert [t.showlegend for t in fig.data] == [True] * 3 + [False] * 3  # one legend entry per series
    assert list(fig.data[0].x) == ["bn1", "bn2"] and fig.layout.yaxis.range == fig.layout.yaxis2.range == (0, 1)


def test_score_marker_histogram_fractions_threshold_and_marker():
    rng = np.random.default_rng(2)
    id_scores, ood = rng.normal(0, 1, 200), {"faces": rng.normal(3, 1, 50), "noise": rng.normal(5, 1, 30)}
    fig = score_marker_histogram(id_scores, ood, this_score=4.0, threshold=1.6, method_label="GAIA-Z",
                                 id_name="digits")
    bars = [t for t in fig.data if isinstance(t, go.Bar)]
    assert [t.name for t in bars] == ["digits (ID)", "faces", "noise"]
    for trace in bars:
        assert abs(sum(trace.y) - 1.0) < 1e-9  # fractions per set
    lines = {round(shape.x0, 6): shape for shape in fig.layout.shapes}
    assert set(lines) == {1.6, 4.0}
    marker = next(a for a in fig.layout.annotations if a.text == "this image 4")
    assert marker.yref == "paper" and marker.y == 1.0  # at the top, above the bars
    assert "this image 4" in [t.name for t in fig.data]  # and in the legend
    assert "GAIA-Z" in fig.layout.xaxis.title.text
    two = score_marker_histogram(id_scores, ood, {"digit": 0.1, "face": 3.2}, 1.6, "GAIA-Z")
    assert {round(shape.x0, 6) for shape in two.layout.shapes} == {0.1, 3.2, 1.6}
    assert {a.text for a in two.layout.annotations} >= {"digit 0.1", "face 3.2"}
    # a score outside every set's range is still on the axis
    far = score_marker_histogram(id_scores, ood, this_score=50.0, threshold=None, method_label="GAIA-A")
    assert max(far.data[0].x) + far.data[0].width[-1] >= 50.0


def test_no_figure_holds_a_streamlit_placeholder_colour():
    """Streamlit's browser code replaces #000001-#000040 anywhere in a figure (Inferno starts at #000004)."""
    rng = np.random.default_rng(3)
    figures = [
        attribution_heatmap(rng.random((4, 4))), attribution_heatmap(rng.normal(size=(4, 4)), signed=True),
        overlay(np.zeros((8, 8, 3), dtype=np.uint8), rng.random((4, 4))),
        overlay(np.zeros((8, 8, 3), dtype=np.uint8), rng.normal(size=(4, 4)), signed=True),
        spatial_map_figure(rng.random((4, 4)), "t", "u"), channel_grid(rng.normal(size=(2, 3, 3)), [0, 1], "t", "u"),
        channel_grid(np.ones((2, 3, 3)), [0, 1], "t", "u", binary=True),
        attribution_grid({"a": rng.random((3, 3)), "b": rng.normal(size=(3, 3))}, {"a": False, "b": True}),
        channel_ratio_bars(rng.random(5), rng.random(5), rng.random(5), "bn1", ood_mean=rng.random(5)),
        score_marker_histogram(rng.normal(size=50), {"x": rng.normal(size=40)}, 0.5, 0.2, "GAIA-Z"),
        layer_nonzero_bars(["a"], {"i": ([0.1], [0.01])}, {"s": ([0.2], [0.04])}),
    ]
    for figure in figures:
        assert colors.placeholder_colors(figure) == [], figure.layout.title.text
    assert colors.placeholder_colors(go.Figure(go.Heatmap(z=[[0]], colorscale="Inferno"))) == ["#000004"]
