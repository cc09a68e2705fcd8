"""The data map: a 2-D embedding of the penultimate features of ID and OOD images.

One marker per image at its 2-D coordinates; the colour is its data set, a method's score
(continuous) or a category (e.g. where two methods decide differently); the marker shape is
the threshold's decision (circle = accepted as ID, x = flagged OOD). Every marker carries
``customdata = [data set, index, score]`` so a click (``st.plotly_chart(on_select=...)``)
names the image: :func:`picked_image`.
"""

from __future__ import annotations

from typing import Mapping, Sequence

import numpy as np
import pandas as pd
import plotly.graph_objects as go

from gaia_viz.figures import colors

SHAPES = {False: "circle", True: "x"}
CATEGORY_COLORS = ("rgb(187, 187, 187)", "rgb(68, 119, 170)", "rgb(238, 102, 119)", "rgb(34, 136, 51)")


def _symbols(flagged: pd.Series) -> list[str]:
    return [SHAPES[bool(f)] for f in flagged]


# a clicked point grows, the others stay readable (Plotly dims unselected points to 0.2)
SELECTION_STYLE = dict(selected=dict(marker=dict(size=14, opacity=1.0)), unselected=dict(marker=dict(opacity=0.45)))


def _custom(group: pd.DataFrame, extra) -> list[list]:
    """``[data set, index, score, extra]`` per row, as plain Python values (a numpy array
    would turn the numbers into strings)."""
    return [[str(d), int(i), float(v), e] for d, i, v, e in zip(group["dataset"], group["index"], group["score"], extra)]


def _hover(decision_label: str, value_name: str | None) -> str:
    extra = f"<br>{value_name} %{{customdata[3]}}" if value_name else ""
    return ("%{customdata[0]} #%{customdata[1]}<br>" + decision_label + " score %{customdata[2]:.4g}"
            + extra + "<br>click to select<extra></extra>")


def data_map(points: pd.DataFrame, color: str, axis_titles: Sequence[str], decision_label: str,
             id_name: str | None = None, color_title: str = "", categories: Sequence[str] | None = None,
             title: str = "") -> go.Figure:
    """``points``: one row per image with ``dataset``, ``index``, ``x``, ``y``, ``score`` (of
    the deciding method), ``flagged`` (bool) and, unless ``color == "dataset"``, a ``color``
    column: numbers (a score; NaN = undefined, drawn grey) or, when ``categories`` are given,
    one of them.

    ``color``: ``"dataset"`` (one colour per set, ID blue), ``"score"`` (a continuous scale,
    titled ``color_title``) or ``"category"``. The two shapes are legend entries of their own.
    """
    figure = go.Figure()
    base = points.assign(index=points["index"].astype(int))
    if color == "dataset":
        palette = colors.set_colors(list(dict.fromkeys(base["dataset"])), id_name)
        for name, group in base.groupby("dataset", sort=False):
            label = f"{name} (ID)" if name == id_name else str(name)
            figure.add_trace(go.Scatter(
                x=group["x"], y=group["y"], mode="markers", name=label,
                marker=dict(color=palette[name], symbol=_symbols(group["flagged"]), size=7, opacity=0.75,
                            line=dict(width=1, color=palette[name])),
                customdata=_custom(group, group["dataset"]),
                hovertemplate=_hover(decision_label, None), **SELECTION_STYLE))
    elif color == "category":
        for k, category in enumerate(categories or list(dict.fromkeys(base["color"]))):
            group = base[base["color"] == category]
            if group.empty:
                continue
            tint = CATEGORY_COLORS[k % len(CATEGORY_COLORS)]
            figure.add_trace(go.Scatter(
                x=group["x"], y=group["y"], mode="markers", name=f"{category} ({len(group):,})",
                marker=dict(color=tint, symbol=_symbols(group["flagged"]), size=7, opacity=0.8,
                            line=dict(width=1, color=tint)),
                customdata=_custom(group, group["color"]),
                hovertemplate=_hover(decision_label, color_title), **SELECTION_STYLE))
    elif color == "score":
        values = base["color"].to_numpy(dtype=float)
        defined = np.isfinite(values)
        shown = base[defined]
        figure.add_trace(go.Scatter(
            x=shown["x"], y=shown["y"], mode="markers", name=color_title, showlegend=False,
            marker=dict(color=values[defined], colorscale=colors.colorscale(colors.SEQUENTIAL_SCALE),
                        symbol=_symbols(shown["flagged"]), size=7, opacity=0.85,
                        colorbar=dict(title=dict(text=color_title, side="right"))),
            customdata=_custom(shown, [f"{v:.4g}" for v in values[defined]]),
            hovertemplate=_hover(decision_label, color_title), **SELECTION_STYLE))
        undefined = base[~defined]
        if not undefined.empty:
            figure.add_trace(go.Scatter(
                x=undefined["x"], y=undefined["y"], mode="markers", name=f"{color_title} undefined ({len(undefined)})",
                marker=dict(color=colors.GRID_GREY, symbol=_symbols(undefined["flagged"]), size=7),
                customdata=_custom(undefined, ["undefined"] * len(undefined)),
                hovertemplate=_hover(decision_label, color_title), **SELECTION_STYLE))
    else:
        raise ValueError(f"color must be 'dataset', 'score' or 'category', got {color!r}")
    for flagged, text in ((False, f"circle: accepted as ID by {decision_label}"),
                          (True, f"x: flagged OOD by {decision_label}")):
        figure.add_trace(go.Scatter(x=[None], y=[None], mode="markers", name=text, hoverinfo="skip",
                                    marker=dict(symbol=SHAPES[flagged], size=9, color="rgb(51, 51, 51)")))
    figure.update_layout(title=title, height=620, clickmode="event+select", dragmode="pan",
                         legend=dict(orientation="h", yanchor="top", y=-0.12, x=0),
                         margin=dict(l=10, r=10, t=50 if title else 10, b=10))
    figure.update_xaxes(title_text=axis_titles[0], zeroline=False)
    figure.update_yaxes(title_text=axis_titles[1], zeroline=False, scaleanchor="x", scaleratio=1)
    return figure


def picked_image(selection: Mapping | None) -> tuple[str, int] | None:
    """``(data set, index)`` of the first point of a plotly selection event
    (``st.plotly_chart(..., on_select=...)``'s ``selection``), None when nothing is picked."""
    points = (selection or {}).get("points") or []
    for point in points:
        data = point.get("customdata")
        if data is not None and len(data) >= 2:
            return str(data[0]), int(float(data[1]))
    return None


__all__ = ["SHAPES", "data_map", "picked_image"]
