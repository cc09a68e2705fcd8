"""Data map: the penultimate features of ID and OOD images in 2-D, coloured by set or by a
score, shaped by the threshold's decision; click an image to see it and open it on Inspect."""

import numpy as np
import streamlit as st

from gaia_viz.app import analysis
from gaia_viz.app import keys
from gaia_viz.app.features import setup_features, setup_projection
from gaia_viz.app.gallery import file_caption, inspect_link, model_view, thumbnail
from gaia_viz.app.markdown import escape_markdown
from gaia_viz.app.page import (
    effective_layers,
    layers_caption,
    require_scores,
    require_setup,
    user_errors,
    warn_about_numbers,
)
from gaia_viz.app.shell import page_guard
from gaia_viz.app.selection import MAP_AGREEMENT
from gaia_viz.app.state import bound_widget, selection, update_selection
from gaia_viz.app.verdict import current_threshold
from gaia_viz.figures.data_map import data_map, picked_image
from gaia_viz.gaia.families import GAIA_FAMILIES
from gaia_viz.sweep import ALL_METHODS, METHOD_LABELS

page_guard(__file__)  # first of all: a page run on its own runs the whole app (gaia_viz.app.shell)


st.title("Data map")
st.caption("Every ID and OOD image as one point: its penultimate features (the vector the classifier's last "
           "layer reads) projected to 2-D with PCA. Colour by data set or by a method's score; the marker "
           "shape is the threshold's decision. Where the OOD points mix with the ID cloud, no feature-space "
           "method can separate them; colour by **where two methods disagree** to see which images GAIA "
           "and a baseline decide differently.")

setup = require_setup()
chosen = selection()
label = lambda m: METHOD_LABELS.get(m, m)  # noqa: E731
wanted = [chosen.method]
if chosen.map_color not in ("set", MAP_AGREEMENT):
    wanted.append(chosen.map_color)
if chosen.map_color == MAP_AGREEMENT:
    wanted.append(chosen.map_compare)
evaluation = require_scores(setup, list(dict.fromkeys(wanted)))
methods = list(ALL_METHODS)  # a method not scored yet is scored when chosen (as on Evaluate)

# ---------------------------------------------------------------- controls
left, middle, right = st.columns(3)
method = bound_widget(left.selectbox, keys.map_method(setup.score_key), chosen.method if chosen.method in methods
                      else methods[0], lambda value: update_selection(method=value), label="Decision (marker shape) by",
                      options=methods, format_func=label,
                      help="The thresholded method: its threshold is the one set on Tune threshold (else 95 % TPR).")
color = bound_widget(middle.selectbox, keys.map_color(setup.score_key),
                     chosen.map_color if chosen.map_color in ("set", MAP_AGREEMENT, *methods) else "set",
                     lambda value: update_selection(map_color=value), label="Colour by",
                     options=["set", MAP_AGREEMENT, *methods],
                     format_func=lambda c: {"set": "data set", MAP_AGREEMENT: "where two methods disagree"}.get(
                         c, f"{label(c)} score"))
compare = None
if color == MAP_AGREEMENT:
    others = [m for m in methods if m != method] or methods
    compare_method = bound_widget(right.selectbox, keys.map_compare(setup.score_key),
                                  chosen.map_compare if chosen.map_compare in others else others[0],
                                  lambda value: update_selection(map_compare=value), label="Compare with",
                                  options=others, format_func=label)
else:
    compare_method = None

layers = {m: effective_layers(evaluation, m) for m in methods if m in GAIA_FAMILIES}


def threshold_of(name):
    id_scores = analysis.method_scores(evaluation, name, evaluation.id_name, layers.get(name))
    return current_threshold(selection(), name, id_scores)


threshold, source = threshold_of(method)
if compare_method is not None:
    compare = (compare_method, threshold_of(compare_method)[0])

# ---------------------------------------------------------------- features, projection, points
features = setup_features(setup.score_key, setup, evaluation)
names = evaluation.dataset_names
points = None
with user_errors("No data map: "):
    projection = setup_projection(setup.score_key, tuple(names), features)
    sizes = np.cumsum([0, *(len(features[name]) for name in names)])
    coords = {name: projection.coords[sizes[k]:sizes[k + 1]] for k, name in enumerate(names)}
    points = analysis.data_map_points(evaluation, coords, method, threshold, layers, color=color, compare=compare,
                                      labels=METHOD_LABELS)
if points is None:
    st.stop()
axes = [f"PC {k + 1} ({100 * share:.1f} % of the variance)" for k, share in enumerate(projection.explained)]
if color == "set":
    figure = data_map(points, "dataset", axes, label(method), id_name=evaluation.id_name)
elif color == MAP_AGREEMENT:
    categories = list(analysis.agreement_labels(label(method), label(compare_method)).values())
    figure = data_map(points, "category", axes, label(method), color_title="decisions", categories=categories)
else:
    figure = data_map(points, "score", axes, label(method), color_title=f"{label(color)} score (higher = more OOD)")


def on_pick():
    picked = picked_image(st.session_state[keys.W_DATA_MAP]["selection"])
    if picked is not None:
        update_selection(image=picked)


st.plotly_chart(figure, width="stretch", key=keys.W_DATA_MAP, on_select=on_pick, selection_mode="points")
caption = (f"{len(points):,} images, {points['flagged'].mean():.0%} flagged by {label(method)} at threshold "
           f"{threshold:.4g} ({source}). The two axes keep {100 * projection.explained.sum():.1f} % of the "
           f"features' variance ({features[names[0]].shape[1]}-dimensional).")
for name in (method, compare_method, color):
    if name in GAIA_FAMILIES:
        caption += " " + layers_caption(evaluation, name) + "."
st.caption(escape_markdown(caption))
warn_about_numbers(evaluation, [name for name in dict.fromkeys((method, compare_method, color))
                                if name in evaluation.methods])
if color == MAP_AGREEMENT:
    counts = points["color"].value_counts()
    st.markdown(" · ".join(f"**{escape_markdown(c)}**: {int(counts.get(c, 0)):,}" for c in categories))

# ---------------------------------------------------------------- the picked image
st.subheader("The selected image")
picked = selection().image
if picked is None or picked[0] not in names or not 0 <= picked[1] < len(features.get(picked[0], ())):
    st.info("Click a point to select its image.")
    st.stop()
set_name, index = picked
row = points[(points["dataset"] == set_name) & (points["index"] == index)].iloc[0]
image_set = setup.image_sets[set_name]
left, right = st.columns([1, 3])
left.image(thumbnail(model_view(image_set, index, setup.preset), size=160),
           caption=f"{escape_markdown(set_name)} #{index}, as the model sees it")
verdict = "flagged OOD" if row["flagged"] else "accepted as ID"
right.markdown(f"**{escape_markdown(set_name)} #{index}** ({escape_markdown(file_caption(image_set, index))}): "
               f"{label(method)} score {row['score']:.4g}, **{verdict}** at {threshold:.4g}.")
if color not in ("set", MAP_AGREEMENT):
    right.markdown(f"{label(color)} score: {row['color']:.4g}.")
if color == MAP_AGREEMENT:
    right.markdown(f"Decisions: **{escape_markdown(row['color'])}**.")
right.caption(f"Map position ({row['x']:.3g}, {row['y']:.3g}).")
inspect_link(set_name, index, right, label="Open on Inspect", icon=":material/image_search:")
