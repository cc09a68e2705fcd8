"""Inspect one image: prediction, Captum attributions, GAIA maps and where its scores fall."""

import streamlit as st

from gaia_viz import gaia
from gaia_viz.app import analysis
from gaia_viz.app import inspect_panels as panels
from gaia_viz.app import keys
from gaia_viz.app.attribution_controls import all_attributions, gradcam_note
from gaia_viz.app.markdown import escape_markdown
from gaia_viz.app.page import (
    effective_layers,
    layers_caption,
    require_scores,
    require_setup,
    warn_about_numbers,
)
from gaia_viz.app.shell import page_guard
from gaia_viz.app.state import bound_widget, selection, update_selection, warn_link
from gaia_viz.app.uploads import (
    UPLOAD_TYPES,
    image_from_upload,
    model_view_pixels,
    tensor_key,
    upload_notes,
    upload_policy,
)
from gaia_viz.app.verdict import (
    analyze_like_evaluation,
    channel_stats,
    decide,
    default_inspect_layer,
    image_channel_values,
    image_score,
    ood_channel_mean,
)
from gaia_viz.attribution import ATTRIBUTION_METHODS, CONTROLS, attribute, top_k_predictions
from gaia_viz.data.presets import OOD_POLICIES
from gaia_viz.errors import GaiaVizError
from gaia_viz.figures import images as figures
from gaia_viz.figures.scores import score_axis_title
from gaia_viz.gaia.families import GAIA_FAMILIES
from gaia_viz.paths import printable
from gaia_viz.sweep import GAIA_METHODS

page_guard(__file__)  # first of all: a page run on its own runs the whole app (gaia_viz.app.shell)

UPLOAD = "upload"

st.title("Inspect one image")
st.caption("Why does the model call this image in- or out-of-distribution? "
           "Upload images or pick one from the loaded sets.")

setup = require_setup()
chosen = selection()
evaluation = require_scores(setup, list(GAIA_METHODS))
image_sets = setup.image_sets
max_pixels = int(st.session_state.get(keys.SB_MAX_MEGAPIXELS, 40) * 1e6)
model, preset = setup.model, setup.preset

# ---------------------------------------------------------------- choose the image
set_names = list(image_sets)
picked_set = chosen.image[0] if chosen.image and chosen.image[0] in set_names else set_names[0]
source = bound_widget(
    st.radio, keys.inspect_source(setup.score_key), picked_set if chosen.image != (UPLOAD, 0) else UPLOAD,
    lambda value: update_selection(image=(UPLOAD, 0) if value == UPLOAD else (value, 0)),
    label="Image from", options=[UPLOAD, *set_names], horizontal=True,
    format_func=lambda s: "my files" if s == UPLOAD else f"set: {escape_markdown(s)}")
image_x, image_caption, image_key = None, "", ""
uploaded = {}
if source == UPLOAD:
    uploads = st.file_uploader("Image file(s)", type=list(UPLOAD_TYPES),
                               accept_multiple_files=True, key=keys.INSPECT_UPLOAD)
    chosen_policy = None
    if setup.ood_policy not in OOD_POLICIES:
        chosen_policy = st.radio("Fit uploads to the input size by", OOD_POLICIES, horizontal=True,
                                 key=keys.INSPECT_UPLOAD_POLICY)
    policy = upload_policy(setup.ood_policy, chosen_policy)
    for upload in uploads or []:
        try:
            uploaded[upload.name] = image_from_upload(
                upload.getvalue(), upload.name, setup.preset, policy, max_pixels=max_pixels)[1]
            for note in upload_notes(upload.getvalue(), upload.name):
                st.warning(escape_markdown(note))
        except GaiaVizError as exc:
            st.error(f"{escape_markdown(exc)}. Use a real image file (PNG, JPEG, WebP, BMP or TIFF, not renamed "
                     f"text), complete (re-export a truncated download) and at most "
                     f"{max_pixels / 1e6:.0f} megapixels (the pixel limit is in the sidebar).")
    if uploaded:
        name = (st.selectbox("Image to inspect in detail", list(uploaded), key=keys.INSPECT_UPLOAD_PICK)
                if len(uploaded) > 1 else next(iter(uploaded)))
        image_x, image_caption, image_key = uploaded[name], escape_markdown(name), f"upload:{name}"
    else:
        st.info("Upload one or more images (png, jpg, jpeg, webp, bmp, tif, tiff).")
else:
    image_set = image_sets[source]
    current_index = chosen.image[1] if chosen.image and chosen.image[0] == source else 0
    current_index = min(max(0, current_index), len(image_set) - 1)
    index = (bound_widget(st.slider, keys.inspect_index(setup.score_key, source), current_index,
                          lambda value, _s=source: update_selection(image=(_s, int(value))),
                          label="Image index", min_value=0, max_value=len(image_set) - 1)
             if len(image_set) > 1 else 0)
    strip = range(index, min(len(image_set), index + 8))
    st.image([image_set.raw_image(i) for i in strip], caption=[f"#{i}" for i in strip], width=64)
    image_x = image_set[index][0]
    image_caption, image_key = f"{escape_markdown(source)} #{index}", f"{source}:{index}"
    path = image_set.path(index) if callable(getattr(image_set, "path", None)) else None
    st.caption(f"File: {escape_markdown(printable(path))}" if path else "No file: this set is generated in memory.")
if image_x is None:
    st.stop()

# ---------------------------------------------------------------- prediction
# The model's answers for this image, once per set-up and image content: a page switch or a
# widget below reruns the page, and must not rerun the forward and backward passes.
image_hash = tensor_key(image_x)


@st.cache_data(show_spinner=False, max_entries=64)
def cached_top(score_key, x_key, names, _x):
    return top_k_predictions(model, _x, k=5, class_names=names)


@st.cache_data(show_spinner=False, max_entries=64)
def cached_gaia(score_key, x_key, evaluated, _x):  # evaluated: the GAIA methods and layers it matches
    return analyze_like_evaluation(model, _x, evaluation)


@st.cache_data(show_spinner=False, max_entries=64)
def cached_maps(score_key, x_key, layer_name, _x):
    return {k: v.numpy() for k, v in gaia.spatial_maps(model, _x.unsqueeze(0), layer_name).items()}


class_names = getattr(setup.id_set, "class_names", None)
pixels = model_view_pixels(image_x, preset)
left, right = st.columns([1, 2])
with left:
    st.image(pixels, caption=f"{image_caption}, as the model sees it", width=192)
with right:
    st.subheader("Top-5 prediction")
    top = cached_top(setup.score_key, image_hash, tuple(class_names) if class_names else None, image_x)
    st.dataframe({"class": [label for label, _ in top], "probability": [p for _, p in top]},
                 hide_index=True)

# ---------------------------------------------------------------- verdict
result = cached_gaia(setup.score_key, image_hash, (tuple(m for m in evaluation.methods if m in GAIA_METHODS),
                                                   tuple(evaluation.zero_layers), tuple(evaluation.inner_layers)),
                     image_x)
gaia_methods = [m for m in evaluation.methods if m in GAIA_METHODS]
layers = {m: effective_layers(evaluation, m) for m in gaia_methods}
id_scores = {m: analysis.method_scores(evaluation, m, evaluation.id_name, layers[m]) for m in gaia_methods}
decisions = {m: decide(image_score(result, m, layers[m]), m, id_scores[m], chosen)
             for m in gaia_methods}
st.subheader("Verdict")
warn_about_numbers(evaluation, gaia_methods)
for method, decision in decisions.items():
    (st.error if decision.is_ood else st.success)(
        f"**{decision.text}**. Threshold: {decision.threshold_source}.")
    st.caption(escape_markdown(layers_caption(evaluation, method)))
if len(uploaded) > 1:
    st.subheader(f"All {len(uploaded)} uploaded images")
    panels.upload_verdict_grid(model, uploaded, evaluation, chosen, layers, id_scores, preset)
    st.caption("Each image as the model sees it, with its verdicts at the thresholds above; choose one in "
               "**Image to inspect in detail** for its attributions and GAIA maps.")

# ---------------------------------------------------------------- attributions
st.subheader("Which pixels drive the prediction (Captum)")
choice = panels.attribution_controls(setup, model, image_x, class_names)
attribution = ATTRIBUTION_METHODS[choice.method]
panels.method_settings(setup, choice.method, model, image_x)


@st.cache_data(show_spinner=False, max_entries=64)
def cached_attribution(score_key, image_key, method, target, settings_key, _x, _settings):
    """One attribution of the current image, computed once per image, method, class and settings."""
    return attribute(model, _x, method, target=target, **_settings)


def compute(method, settings):
    key = tuple(sorted((k, str(v)) for k, v in settings.items()))
    return cached_attribution(setup.score_key, image_hash, method, choice.target, key, image_x, settings)


signed = attribution.signed and choice.signed_view
st.caption(f"**{attribution.label}**: {attribution.description}, for {escape_markdown(choice.target_text)}. "
           + ("Signed: red = evidence for the class, blue = against, white = none." if signed
              else "Magnitudes: black = none, light yellow = strongest."))
with st.spinner(f"Computing {attribution.label}…"):
    shown = all_attributions(model, image_x, choice.target, {choice.method: selection().params_for(choice.method)},
                                     preset, choice.signed_view, methods=[choice.method], compute=compute)[choice.method]
if shown.error:
    st.error(f"{attribution.label} failed for this model: {escape_markdown(shown.error)}. "
             "Try another attribution method or other settings.")
else:
    left, right = st.columns(2)
    left.plotly_chart(figures.attribution_heatmap(shown.heat, attribution.label, signed=shown.signed),
                      key="inspect_attribution_heatmap")
    right.plotly_chart(figures.overlay(pixels, shown.heat, choice.opacity, f"{attribution.label} over the image",
                                       signed=shown.signed), key="inspect_overlay")
    if choice.method == "grad_cam":
        note = gradcam_note(model, image_x, selection().params_for("grad_cam").get("layer"))
        if note:
            st.info(note)

if st.toggle("All methods side by side", key=keys.INSPECT_ALL_METHODS,
             help="Every attribution method for the same image and class, each with its own settings."):
    with st.expander("Settings of the other methods"):
        for method in CONTROLS:
            if method != choice.method:
                st.markdown(f"**{ATTRIBUTION_METHODS[method].label}**")
                panels.method_settings(setup, method, model, image_x)
    with st.spinner("Computing every attribution…"):
        views = all_attributions(model, image_x, choice.target,
                                         {m: selection().params_for(m) for m in ATTRIBUTION_METHODS},
                                         preset, choice.signed_view, compute=compute)
    drawn = {v.label: v for v in views.values() if v.error is None}
    if drawn:
        st.plotly_chart(figures.attribution_grid({label: v.heat for label, v in drawn.items()},
                                                 {label: v.signed for label, v in drawn.items()},
                                                 title=f"Every attribution method for {choice.target_text}"),
                        width="stretch", key="inspect_all_attributions")
    gradcam_uniform = gradcam_note(model, image_x, selection().params_for("grad_cam").get("layer"))
    if gradcam_uniform and "grad_cam" in views and views["grad_cam"].error is None:
        st.caption(gradcam_uniform)
    for view in views.values():
        if view.error:
            st.caption(f"{view.label}: not available for this model ({escape_markdown(view.error)}).")

# ---------------------------------------------------------------- GAIA per layer
st.subheader("GAIA at one layer")
families = [m for m in gaia_methods if GAIA_FAMILIES[m].layers(evaluation)]
family_method = st.radio("Per-channel quantity", families, horizontal=True, key=keys.INSPECT_QUANTITY,
                         format_func=lambda m: GAIA_FAMILIES[m].channel_label)
fam = GAIA_FAMILIES[family_method]
fam_layers = fam.layers(evaluation)
rule_layer, rule = default_inspect_layer(evaluation, family_method)
known_layers = {name for m in families for name in GAIA_FAMILIES[m].layers(evaluation)}
if chosen.inspect_layer and chosen.inspect_layer not in known_layers:  # only a link can name such a layer
    warn_link(f"inspect_layer={chosen.inspect_layer[:60]!r} in the link is not a layer GAIA hooked in this model "
              f"({', '.join(sorted(known_layers))}); showing {rule_layer}")
    update_selection(inspect_layer=None)
start_layer = chosen.inspect_layer if chosen.inspect_layer in fam_layers else rule_layer
# The default is not written into the link: it follows from the set-up by the rule, and writing
# it on arrival would add a second browser-history entry for one view change.
layer = bound_widget(st.selectbox, f"inspect_layer::{setup.score_key}::{family_method}", start_layer,
                     lambda value: update_selection(inspect_layer=value), label="Layer", options=fam_layers,
                     help=f"Opens on {rule_layer}: {rule}.")
st.caption(escape_markdown(f"Opened on {rule_layer}: {rule}.") if layer == rule_layer
           else escape_markdown(f"By default {rule_layer}: {rule}."))
id_mean, id_std = channel_stats(evaluation, evaluation.id_name, family_method, layer)
st.plotly_chart(figures.channel_ratio_bars(
    image_channel_values(result, family_method, layer), id_mean, id_std, layer,
    ood_mean=ood_channel_mean(evaluation, family_method, layer), value_label=fam.channel_label,
    ood_label="OOD mean (all OOD images)"), width="stretch", key="inspect_channel_bars")
maps = cached_maps(setup.score_key, image_hash, layer, image_x)
left, right = st.columns(2)
left.plotly_chart(figures.spatial_map_figure(
    maps["nonzero_fraction"][0], "where the GAIA-Z gradient is non-zero",
    "fraction of channels with non-zero gradient", zmin=0, zmax=1), key="inspect_nonzero_map")
right.plotly_chart(figures.spatial_map_figure(
    maps["abs_channel_mean"][0], "|channel-averaged GAIA-A gradient|",
    "|mean over channels of d(pooled features)/d(activation)|"), key="inspect_mean_map")

# ---------------------------------------------------------------- scores on the histograms
st.subheader("Where this image's scores fall")
for method, decision in decisions.items():
    st.plotly_chart(figures.score_marker_histogram(
        id_scores[method], {name: analysis.method_scores(evaluation, method, name, layers[method])
                            for name in evaluation.ood_names},
        decision.score, decision.threshold, decision.method_label, id_name=evaluation.id_name,
        score_axis=score_axis_title(method, decision.method_label)),
        width="stretch", key=f"inspect_hist_{method}")
