"""The Inspect page's UI blocks: each draws its widgets (bound to the Selection) and returns
what they chose, so the page reads top to bottom as a few calls.

Widget keys (``w_inspect_*``; set-up dependent ones carry ``setup.score_key``):
``w_inspect_target::<score key>::<predicted class>`` (the class explained), ``w_inspect_attr_view`` (signed or
|value|), ``w_inspect_param::<score key>::<method>::<param>`` (one per researcher control of
:data:`gaia_viz.attribution.CONTROLS`), ``inspect_all_methods`` (the side-by-side grid).
"""

from __future__ import annotations

from dataclasses import dataclass

import streamlit as st
from PIL import Image

from gaia_viz.app import keys
from gaia_viz.app.attribution_controls import class_count, gradcam_layers, parameter_defaults, predicted_class
from gaia_viz.app.gallery import thumbnail
from gaia_viz.app.markdown import escape_markdown
from gaia_viz.app.keys import SELECTION
from gaia_viz.app.selection import ATTRIBUTION_VIEWS
from gaia_viz.app.state import bound_widget, selection, update_selection
from gaia_viz.app.uploads import model_view_pixels
from gaia_viz.app.verdict import image_verdicts
from gaia_viz.attribution import ATTRIBUTION_METHODS, BASELINES, CONTROLS

PREDICTED = "predicted"  # the class selectbox's first option (None would read as "no choice")


def class_label(index: int, class_names) -> str:
    """"3" or "3: cat" when the set names its classes."""
    if class_names is not None and index < len(class_names) and str(class_names[index]) != str(index):
        return f"{index}: {class_names[index]}"
    return str(index)


@dataclass
class AttributionChoice:
    """What the attribution controls chose: the method, the class (None = predicted), the
    view of signed methods, the overlay opacity and the text naming the class."""

    method: str
    target: int | None
    signed_view: bool
    opacity: float
    target_text: str


def _class_index(value, classes: int) -> int | None:
    """The class the target box chose, None for the predicted one (or a value that is no class)."""
    return value if isinstance(value, int) and 0 <= value < classes else None


def attribution_controls(setup, model, x, class_names) -> AttributionChoice:
    """Method, class explained, signed/|value| view and overlay opacity."""
    chosen = selection()
    method = bound_widget(st.selectbox, keys.W_INSPECT_ATTRIBUTION,
                          chosen.attribution if chosen.attribution in ATTRIBUTION_METHODS else "saliency",
                          lambda value: update_selection(attribution=value), label="Attribution method",
                          options=list(ATTRIBUTION_METHODS), format_func=lambda k: ATTRIBUTION_METHODS[k].label)
    classes = class_count(model, x)
    predicted = predicted_class(model, x)
    target = chosen.target if chosen.target is not None and chosen.target < classes else None
    if chosen.target is not None and target is None:
        st.warning(f"Class {chosen.target} is not one of this model's {classes} classes: explaining the "
                   "predicted class.")
    left, middle, right = st.columns(3)
    # The first option's label names this image's predicted class, so the key carries it: a
    # browser holding another image's label ("predicted (8)") can never feed it back.
    picked = bound_widget(
        left.selectbox, keys.inspect_target(setup.score_key, predicted), PREDICTED if target is None else target,
        lambda value: update_selection(target=_class_index(value, classes)),
        label="Explain the class", options=[PREDICTED, *range(classes)],
        format_func=lambda c: (f"predicted ({class_label(predicted, class_names)})" if c == PREDICTED
                               else class_label(c, class_names)),
        help="The logit whose attribution is shown; by default the predicted class.")
    target = _class_index(picked, classes)
    view = bound_widget(
        middle.radio, keys.W_INSPECT_ATTR_VIEW, chosen.attribution_view,
        lambda value: update_selection(attribution_view=value), label="Show signed methods as",
        options=list(ATTRIBUTION_VIEWS), horizontal=True,
        format_func={"signed": "signed (red for, blue against)", "abs": "|value|"}.get,
        help="Integrated Gradients, Input x Gradient, Guided Backprop and Occlusion have a sign; Saliency, "
             "Grad-CAM and SmoothGrad are magnitudes.")
    opacity = right.slider("Overlay opacity", 0.0, 1.0, 0.8, 0.05, key=keys.INSPECT_OPACITY,
                           help="The overlay fades to transparent where the attribution is none.")
    text = (f"class {class_label(target, class_names)}" if target is not None
            else f"the predicted class ({class_label(predicted, class_names)})")
    return AttributionChoice(method, target, view == "signed", opacity, text)


def _store_param(method: str, param: str, default):
    def store(value):
        st.session_state[SELECTION] = selection().with_param(method, param, None if value == default else value)
    return store


def method_settings(setup, method: str, model, x) -> None:
    """One widget per researcher control of ``method`` (IG steps and baseline, Grad-CAM
    layer, occlusion window and stride, SmoothGrad noise level and samples), seeded from
    the Selection; a value equal to the default is stored as "default"."""
    items = CONTROLS.get(method, ())
    if not items:
        return
    defaults = parameter_defaults(method, model, x)
    current = selection().params_for(method)
    for column, item in zip(st.columns(len(items)), items):
        default = defaults[item.param]
        value = current.get(item.param, default)
        key = keys.inspect_param(setup.score_key, method, item.param)
        store = _store_param(method, item.param, default)
        common = dict(label=item.label, help=item.help or None)
        if item.kind == "layer":
            options = gradcam_layers(model, x)[0]
            bound_widget(column.selectbox, key, value if value in options else default, store, options=options,
                         **common)
        elif item.kind == "choice":
            bound_widget(column.selectbox, key, value, store, options=list(item.choices),
                         format_func=lambda b: f"{b}: {BASELINES[b]}", **common)
        elif item.kind == "int":
            high = int(item.high)
            if method == "occlusion":
                high = min(high, int(min(x.shape[-2:])))
            bound_widget(column.number_input, key, int(min(int(value), high)), store, min_value=int(item.low),
                         max_value=high, step=1, **common)
        else:
            bound_widget(column.slider, key, float(value), store, min_value=float(item.low),
                         max_value=float(item.high), step=0.01, **common)


def upload_verdict_grid(model, uploaded: dict, evaluation, chosen, layers: dict, id_scores: dict, preset,
                        per_row: int = 6) -> None:
    """Every uploaded image as the model sees it, with its GAIA verdicts."""
    verdicts = image_verdicts(model, uploaded, evaluation, chosen, layers, id_scores)
    names = list(uploaded)
    for start in range(0, len(names), per_row):
        for column, name in zip(st.columns(per_row), names[start:start + per_row]):
            column.image(thumbnail(Image.fromarray(model_view_pixels(uploaded[name], preset))),
                         caption=escape_markdown(name))
            for decision in verdicts[name].values():
                color, verdict = ("red", "OOD") if decision.is_ood else ("green", "ID")
                column.markdown(f":{color}[**{verdict}**] {escape_markdown(decision.method_label)} "
                                f"{decision.score:.4g}")


__all__ = ["AttributionChoice", "attribution_controls", "class_label", "method_settings", "upload_verdict_grid"]
