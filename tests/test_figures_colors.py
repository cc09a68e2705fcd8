"""Colours as specified: what a figure builder sets is what the browser draws.

Streamlit sends a figure as JSON (the ``spec`` of the PlotlyChart proto) and its browser code
(``PlotlyChart.*.js``) then runs ``replaceAll`` over that text for each placeholder colour
``#000001``-``#000040``, with ``theme="streamlit"`` and with ``theme=None`` alike.
:func:`as_the_browser_draws` repeats that substitution, so these tests compare a builder's
colour stops with what the browser ends up drawing.
"""

import json

import numpy as np
import plotly.graph_objects as go
from streamlit.testing.v1 import AppTest

from gaia_viz.figures import colors
from gaia_viz.figures.images import attribution_heatmap, overlay


def as_the_browser_draws(spec: str) -> dict:
    """The figure after Streamlit's browser substitution of its placeholder colours (any
    replacement shows up as a change; the real one is a theme colour)."""
    for k, placeholder in enumerate(colors.PLACEHOLDER_COLORS):
        spec = spec.replace(placeholder, f"rgb(255, 0, {k})")
    return json.loads(spec)


def charts_sent(script) -> dict[str, str]:
    at = AppTest.from_function(script).run()
    assert not at.exception, at.exception
    return {chart.key: chart.proto for chart in at.get("plotly_chart")}


def test_colour_stops_reach_the_browser_unaltered():
    def script():
        import numpy as np
        import streamlit as st

        from gaia_viz.figures.images import attribution_heatmap, overlay

        heat = np.linspace(0, 1, 16).reshape(4, 4)
        st.plotly_chart(attribution_heatmap(heat), key="magnitude")
        st.plotly_chart(attribution_heatmap(heat - 0.5, signed=True), key="signed")
        st.plotly_chart(overlay(np.zeros((8, 8, 3), dtype=np.uint8), heat), key="overlay")

    heat = np.linspace(0, 1, 16).reshape(4, 4)
    expected = {
        "magnitude": (0, attribution_heatmap(heat).data[0].colorscale),
        "signed": (0, attribution_heatmap(heat - 0.5, signed=True).data[0].colorscale),
        "overlay": (1, overlay(np.zeros((8, 8, 3), dtype=np.uint8), heat).data[1].colorscale),
    }
    sent = charts_sent(script)
    assert set(sent) == set(expected)
    for key, (trace, stops) in expected.items():
        assert sent[key].theme == "streamlit"  # the app's theme stays on: fonts and grids match the app
        drawn = as_the_browser_draws(sent[key].spec)["data"][trace]["colorscale"]
        assert [tuple(stop) for stop in drawn] == [tuple(stop) for stop in stops], key
    magnitude = as_the_browser_draws(sent["magnitude"].spec)["data"][0]["colorscale"]
    assert magnitude[0] == [0.0, "rgb(0, 0, 4)"]  # 0 = none is Inferno's black, not a theme pink


def test_plotlys_own_inferno_would_be_altered():
    """The symptom the builders avoid: Plotly's Inferno, as Plotly writes it, loses its first stop."""
    def script():
        import plotly.graph_objects as go
        import streamlit as st

        st.plotly_chart(go.Figure(go.Heatmap(z=[[0, 1]], colorscale="Inferno")), key="raw", theme=None)

    sent = charts_sent(script)["raw"]
    drawn = as_the_browser_draws(sent.spec)["data"][0]["colorscale"]
    assert drawn[0][1] != "#000004" and go.Figure(go.Heatmap(colorscale="Inferno")).data[0].colorscale[0][1] == "#000004"


def test_colorscale_keeps_plotlys_stops_in_rgb():
    import plotly.colors

    for name in ("Inferno", "Magma", "Viridis", "RdBu_r", "Blues"):
        ours = colors.colorscale(name)
        theirs = plotly.colors.get_colorscale(name)
        assert [p for p, _ in ours] == [float(p) for p, _ in theirs]
        assert all(color.startswith("rgb(") for _, color in ours)
        assert not colors.placeholder_colors(go.Figure(go.Heatmap(z=[[0]], colorscale=ours)))
    assert colors.colorscale(["#000004", "white"]) == [[0.0, "rgb(0, 0, 4)"], [1.0, "rgb(255, 255, 255)"]]
    assert colors.colorscale("Inferno", reverse=True)[0] == [0.0, "rgb(252, 255, 164)"]


def test_set_colours_are_distinct_and_id_is_blue():
    palette = colors.set_colors(["digits", "a (center-crop)", "a (resize)", "b"], "digits")
    assert palette["digits"] == colors.ID_COLOR
    assert len(set(palette.values())) == 4
    assert palette["a (center-crop)"] != palette["a (resize)"]
