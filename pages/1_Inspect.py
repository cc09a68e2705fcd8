"""Inspect one image: prediction, Captum attributions, GAIA maps and where its scores fall."""

import streamlit as st

from gaia_viz import gaia
from gaia_viz.app import inspect_helpers as helpers
from gaia_viz.app.paths import escape_markdown
from gaia_viz.app.setup import current_setup, require_evaluation
from gaia_viz.attribution import ATTRIBUTION_METHODS, attribute, to_heatmap, top_k_predictions
from gaia_viz.data.images import DEFAULT_MAX_PIXELS
from gaia_viz.data.presets import OOD_POLICIES
from gaia_viz.errors import GaiaVizError
from gaia_viz.figures import images as figures
from gaia_viz.sweep import GAIA_METHODS

st.title("Inspect one image")
st.caption("Why does the model call this image in- or out-of-distribution? "
           "Upload an image or pick one from the loaded sets.")

setup = current_setup()
if setup is None:
    st.info("Choose a model and data in the sidebar to start.")
    st.stop()
evaluation = require_evaluation(setup, need=list(GAIA_METHODS))
if evaluation is None:
    st.stop()
session_threshold = st.session_state.get("threshold")
image_sets = {evaluation.id_name: setup.id_set, **setup.ood_sets}
id_name = evaluation.id_name

# ---------------------------------------------------------------- choose the image
source = st.radio("Image from", ["upload", *image_sets], index=1, horizontal=True, key="inspect_source",
                  format_func=lambda s: "my files" if s == "upload" else f"set: {escape_markdown(s)}")
image_x, image_caption = None, ""
if source == "upload":
    uploads = st.file_uploader("Image file(s)", type=list(helpers.UPLOAD_TYPES),
                               accept_multiple_files=True, key="inspect_upload")
    chosen_policy = None
    if setup.ood_policy not in OOD_POLICIES:
        chosen_policy = st.radio("Fit uploads to the input size by", OOD_POLICIES, horizontal=True,
                                 key="inspect_upload_policy")
    policy = helpers.upload_policy(setup.ood_policy, chosen_policy)
    loaded = {}
    for upload in uploads or []:
        try:
            loaded[upload.name] = helpers.image_from_upload(
                upload.getvalue(), upload.name, setup.preset, policy)
        except GaiaVizError as exc:
            st.error(f"{escape_markdown(exc)}. Use a real image file (PNG, JPEG, WebP, BMP or TIFF, not renamed "
                     f"text), complete (re-export a truncated download) and at most "
                     f"{DEFAULT_MAX_PIXELS / 1e6:.0f} megapixels.")
    if loaded:
        name = (st.selectbox("Uploaded image", list(loaded), key="inspect_upload_pick")
                if len(loaded) > 1 else next(iter(loaded)))
        image_x, image_caption = loaded[name][1], escape_markdown(name)
    else:
        st.info("Upload one or more images (png, jpg, jpeg, webp, bmp, tif, tiff).")
else:
    image_set = image_sets[source]
    index = (st.slider("Image index", 0, len(image_set) - 1, 0, key=f"inspect_index_{source}")
             if len(image_set) > 1 else 0)
    strip = range(index, min(len(image_set), index + 8))
    st.image([image_set.raw_image(i) for i in strip], caption=[f"#{i}" for i in strip], width=64)
    image_x = image_set[index][0]
    image_caption = f"{escape_markdown(source)} #{index}"
if image_x is None:
    st.stop()

# ---------------------------------------------------------------- prediction
model, preset = setup.model, setup.preset
class_names = getattr(setup.id_set, "class_names", None)
pixels = helpers.model_view_pixels(image_x, preset)
left, right = st.columns([1, 2])
with left:
    st.image(pixels, caption=f"{image_caption}, as the model sees it", width=192)
with right:
    st.subheader("Top-5 prediction")
    top = top_k_predictions(model, image_x, k=5, class_names=class_names)
    st.dataframe({"class": [label for label, _ in top], "probability": [p for _, p in top]},
                 hide_index=True)

# ---------------------------------------------------------------- verdict
result = helpers.analyze_like_evaluation(model, image_x, evaluation)
gaia_methods = [m for m in evaluation.methods if m in GAIA_METHODS]
id_scores = {m: evaluation.method_scores(m, id_name) for m in gaia_methods}
decisions = {m: helpers.decide(float(getattr(result, m)[0]), m, id_scores[m], session_threshold)
             for m in gaia_methods}
st.subheader("Verdict")
for decision in decisions.values():
    (st.error if decision.is_ood else st.success)(
        f"**{decision.text}**. Threshold: {decision.threshold_source}.")

# ---------------------------------------------------------------- attributions
st.subheader("Which pixels drive the prediction (Captum)")
method_key = st.selectbox("Attribution method", list(ATTRIBUTION_METHODS), key="inspect_attribution",
                          format_func=lambda k: ATTRIBUTION_METHODS[k].label)
opacity = st.slider("Overlay opacity", 0.0, 1.0, 0.5, 0.05, key="inspect_opacity")
st.caption(ATTRIBUTION_METHODS[method_key].description + ", for the predicted class.")
try:
    with st.spinner(f"Computing {ATTRIBUTION_METHODS[method_key].label}…"):
        heat = to_heatmap(attribute(model, image_x, method_key)[0])
except (GaiaVizError, RuntimeError) as exc:
    reason = escape_markdown((str(exc).splitlines() or [type(exc).__name__])[0])
    st.error(f"{ATTRIBUTION_METHODS[method_key].label} failed for this model: {reason}. "
             "Try another attribution method.")
else:
    left, right = st.columns(2)
    left.plotly_chart(figures.attribution_heatmap(heat, ATTRIBUTION_METHODS[method_key].label),
                      key="inspect_attribution_heatmap")
    right.plotly_chart(figures.overlay(pixels, heat, opacity, "over the image"), key="inspect_overlay")

# ---------------------------------------------------------------- GAIA per layer
st.subheader("GAIA at one layer")
quantities = {q: spec for q, spec in helpers.CHANNEL_QUANTITIES.items() if getattr(evaluation, spec[0])}
quantity = st.radio("Per-channel quantity", list(quantities), horizontal=True, key="inspect_quantity",
                    format_func=lambda q: quantities[q][2])
layer = st.selectbox("Layer", getattr(evaluation, quantities[quantity][0]), key=f"inspect_layer_{quantity}")
id_mean, id_std = helpers.channel_stats(evaluation, id_name, quantity, layer)
st.plotly_chart(figures.channel_ratio_bars(
    helpers.image_channel_values(result, quantity, layer), id_mean, id_std, layer,
    ood_mean=helpers.ood_channel_mean(evaluation, quantity, layer), value_label=quantities[quantity][2],
    ood_label="OOD mean (all OOD images)"), key="inspect_channel_bars")
maps = gaia.spatial_maps(model, image_x.unsqueeze(0), layer)
left, right = st.columns(2)
left.plotly_chart(figures.spatial_map_figure(
    maps["nonzero_fraction"][0].numpy(), "where the GAIA-Z gradient is non-zero",
    "fraction of channels with non-zero gradient", zmin=0, zmax=1), key="inspect_nonzero_map")
right.plotly_chart(figures.spatial_map_figure(
    maps["abs_channel_mean"][0].numpy(), "|channel-averaged GAIA-A gradient|",
    "|mean over channels of d(pooled features)/d(activation)|"), key="inspect_mean_map")

# ---------------------------------------------------------------- scores on the histograms
st.subheader("Where this image's scores fall")
for method, decision in decisions.items():
    st.plotly_chart(figures.score_marker_histogram(
        id_scores[method], {name: evaluation.method_scores(method, name) for name in evaluation.ood_names},
        decision.score, decision.threshold, decision.method_label, id_name=id_name),
        key=f"inspect_hist_{method}")
