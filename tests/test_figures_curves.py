"""Seventeen ROC curves stay apart: each has its own colour and dash (issue 22: 17 curves shared
about 7 colours, GAIA-Z, ReAct and fDBD the same blue)."""

import numpy as np

from gaia_viz.figures import colors, scores
from gaia_viz.sweep import ALL_METHODS, METHOD_LABELS


def test_every_method_has_its_own_roc_line_style():
    assert len(ALL_METHODS) >= 17
    fpr = np.linspace(0, 1, 5)
    curves = {METHOD_LABELS[m]: (fpr, fpr ** (k + 1) ** -0.5) for k, m in enumerate(ALL_METHODS)}
    figure = scores.roc_curves(curves, aurocs={label: 0.5 for label in curves})
    lines = [(trace.line.color, trace.line.dash) for trace in figure.data[:len(curves)]]
    assert len(set(lines)) == len(curves)  # no two curves alike
    hues = [color for color, _ in lines]
    assert len(set(hues)) >= 8 and len(set(hues[:8])) == 8  # the first eight by colour alone
    assert all(color.startswith("rgb(") for color in hues)  # never a #0000xx Streamlit replaces
    assert colors.placeholder_colors(figure) == []
    reference = {trace.line.color for trace in figure.data[len(curves):]}
    assert reference == {colors.GRID_GREY} and colors.GRID_GREY not in hues  # the guides stay apart
    by_label = dict(zip(curves, lines))
    assert len({by_label["GAIA-Z"], by_label["ReAct"], by_label["fDBD"]}) == 3


def test_curve_styles_never_repeat_within_their_range():
    many = colors.curve_styles(len(colors.CURVE_COLORS) * len(colors.CURVE_DASHES))
    assert len(set(many)) == len(many)
    assert colors.curve_styles(0) == []
