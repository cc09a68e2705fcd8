"""Every colour the figures use, in one place, written so that the browser shows it unaltered.

Why ``rgb(...)`` and never ``#0000xx``: Streamlit's Plotly support uses the colours
``#000001`` to ``#000040`` as placeholders. ``st.plotly_chart`` sends the figure as JSON
and the browser replaces every occurrence of those strings in it with a theme colour
(``PlotlyChart.*.js`` in Streamlit's static files, ``replaceAll`` over the serialised
figure, with ``theme="streamlit"`` and with ``theme=None`` alike; see
``streamlit/elements/lib/streamlit_plotly_theme.py``). Plotly's own Inferno and Magma
scales start at ``#000004``, Streamlit's fourth chart colour, so "0 = none" was drawn pink.
:func:`colorscale` writes every stop as ``rgb(r, g, b)``, which no placeholder matches;
:func:`placeholder_colors` finds any that slipped into a figure (the tests run it on every
builder's output).

Palettes: :data:`SET_COLORS` is Paul Tol's "bright" qualitative scheme (colour-blind safe,
distinct hues); the ID set is always its blue. Curves of many methods (the ROC figure holds up
to 17) take :func:`curve_styles`: eight hues, then the same hues dashed, so no two curves look
alike however many there are (issue 22: 17 curves shared about 7 colours).
"""

from __future__ import annotations

import json
from typing import Sequence

import plotly.colors
import plotly.graph_objects as go
from PIL import ImageColor

PLACEHOLDER_COLORS = tuple(f"#{k:06d}" for k in range(1, 41))  # Streamlit's: #000001 ... #000040

# Paul Tol's "bright" scheme (https://personal.sron.nl/~pault/#sec:qualitative), ID first
ID_COLOR = "rgb(68, 119, 170)"  # blue #4477AA
OOD_COLORS = ("rgb(238, 102, 119)", "rgb(34, 136, 51)", "rgb(170, 51, 119)", "rgb(204, 187, 68)",
              "rgb(102, 204, 238)", "rgb(187, 187, 187)")  # red, green, purple, yellow, cyan, grey
SET_COLORS = (ID_COLOR, *OOD_COLORS)
THIS_IMAGE_COLOR = "rgb(51, 51, 51)"  # dark grey: neither the ID blue nor an OOD hue
MARKER_COLORS = ("rgb(0, 0, 0)", "rgb(230, 97, 1)", "rgb(94, 60, 153)")  # black, orange, violet
THRESHOLD_COLOR = "rgb(64, 64, 64)"
GRID_GREY = "rgb(128, 128, 128)"

# Tol's bright hues (grey left out: the reference lines are grey), then Tol's vibrant orange and black
CURVE_COLORS = (ID_COLOR, "rgb(238, 102, 119)", "rgb(34, 136, 51)", "rgb(204, 187, 68)", "rgb(102, 204, 238)",
                "rgb(170, 51, 119)", "rgb(238, 119, 51)", "rgb(0, 0, 0)")
CURVE_DASHES = ("solid", "dash", "dashdot", "longdash", "longdashdot")  # "dot" is the chance diagonal's

HEAT_SCALE = "Inferno"  # magnitudes: 0 = none (black) ... strongest (light yellow)
SIGNED_SCALE = "RdBu_r"  # signed values: blue < 0 < red, white at 0
SEQUENTIAL_SCALE = "Viridis"


def _rgb(color: str) -> str:
    """Any CSS colour (``#rrggbb``, ``rgb(...)``, a name) as ``rgb(r, g, b)``."""
    r, g, b = ImageColor.getrgb(color.strip().replace(" ", ""))[:3]
    return f"rgb({r}, {g}, {b})"


def colorscale(name_or_colors: str | Sequence[str], reverse: bool = False) -> list[list]:
    """A Plotly colour scale as explicit ``[[position, "rgb(r, g, b)"], ...]`` stops.

    ``name_or_colors``: a Plotly scale name (``"Inferno"``, ``"RdBu_r"``, ...) or a list of
    colours spread evenly over [0, 1]. The stops are exactly Plotly's, only spelled so that
    Streamlit's placeholder substitution cannot touch them (module docstring)."""
    if isinstance(name_or_colors, str):
        stops = plotly.colors.get_colorscale(name_or_colors)
    else:
        colors = list(name_or_colors)
        stops = [[k / (len(colors) - 1), c] for k, c in enumerate(colors)] if len(colors) > 1 else [[0, colors[0]], [1, colors[0]]]
    scale = [[float(position), _rgb(color)] for position, color in stops]
    if reverse:
        scale = [[1.0 - position, color] for position, color in reversed(scale)]
    return scale


def set_colors(names: Sequence[str], id_name: str | None) -> dict[str, str]:
    """A colour per data set: the ID set blue, the OOD sets the next hues of :data:`OOD_COLORS`."""
    colors, k = {}, 0
    for name in names:
        if name == id_name:
            colors[name] = ID_COLOR
        else:
            colors[name] = OOD_COLORS[k % len(OOD_COLORS)]
            k += 1
    return colors


def curve_styles(count: int) -> list[tuple[str, str]]:
    """``count`` distinct ``(colour, dash)`` line styles: each hue of :data:`CURVE_COLORS` solid,
    then each dashed, and so on through :data:`CURVE_DASHES` (40 styles before one repeats).

    >>> styles = curve_styles(17)
    >>> len(set(styles)), styles[0], styles[8]
    (17, ('rgb(68, 119, 170)', 'solid'), ('rgb(68, 119, 170)', 'dash'))
    """
    n = len(CURVE_COLORS)
    return [(CURVE_COLORS[k % n], CURVE_DASHES[(k // n) % len(CURVE_DASHES)]) for k in range(count)]


def placeholder_colors(figure: go.Figure | dict | str) -> list[str]:
    """The Streamlit placeholder colours (``#000001``-``#000040``) in a figure's data and
    layout, the template left out (Streamlit's own template is meant to hold them)."""
    if isinstance(figure, go.Figure):
        spec = figure.to_plotly_json()
    elif isinstance(figure, str):
        spec = json.loads(figure)
    else:
        spec = dict(figure)
    layout = {k: v for k, v in (spec.get("layout") or {}).items() if k != "template"}
    text = json.dumps({"data": spec.get("data", []), "layout": layout}, default=str)
    return [color for color in PLACEHOLDER_COLORS if color in text]  # substrings, as the browser matches


__all__ = ["CURVE_COLORS", "CURVE_DASHES", "GRID_GREY", "HEAT_SCALE", "ID_COLOR", "MARKER_COLORS", "OOD_COLORS", "PLACEHOLDER_COLORS",
           "SEQUENTIAL_SCALE", "SET_COLORS", "SIGNED_SCALE", "THIS_IMAGE_COLOR", "THRESHOLD_COLOR",
           "colorscale", "curve_styles", "placeholder_colors", "set_colors"]
