"""Tune threshold: pick an operating point, see what it accepts and flags, export it."""

import streamlit as st

from gaia_viz.app.gallery import show_gallery
from gaia_viz.app.paths import escape_markdown
from gaia_viz.app.setup import require_evaluation, require_setup
from gaia_viz.errors import GaiaVizError
from gaia_viz.figures import scores as figures
from gaia_viz.metrics import confusion_at_threshold, threshold_at_tpr
from gaia_viz.sweep import METHOD_LABELS
from gaia_viz.threshold import DEFAULT_CONFIG_NAME, config_from_evaluation, hardest_cases, threshold_snippet

GALLERY_SIZE = 8

st.title("Tune threshold")
st.caption("An image is accepted as in-distribution when its OOD score is at most the threshold and "
           "flagged as OOD above it. Choose the threshold by the share of ID images to accept "
           "(the TPR) or directly on the score.")

setup = require_setup()
evaluation = require_evaluation(setup)

# ---------------------------------------------------------------- choose the operating point
left, right = st.columns(2)
method = left.selectbox("Method", evaluation.methods, format_func=lambda m: METHOD_LABELS.get(m, m),
                        key="tune_method")
ood_set = right.selectbox("OOD set", evaluation.ood_names, key="tune_ood_set")
id_scores = evaluation.method_scores(method, evaluation.id_name)
ood_scores = evaluation.method_scores(method, ood_set)

mode = st.radio("Set the threshold by", ["target TPR", "score"], horizontal=True, key="tune_mode",
                help="TPR = fraction of ID images accepted (score <= threshold).")
try:
    if mode == "target TPR":
        tpr = st.slider("Target TPR: fraction of ID images accepted", 0.50, 1.00, 0.95, 0.005,
                        key="tune_tpr", format="%.3f")
        threshold = threshold_at_tpr(id_scores, tpr)
        st.caption(f"Threshold at {100 * tpr:.1f} % TPR: **{threshold:.6g}**")
    else:
        low = float(min(id_scores.min(), ood_scores.min()))
        high = float(max(id_scores.max(), ood_scores.max()))
        if high <= low:
            high = low + 1.0
        threshold = st.slider("Threshold on the OOD score", low, high, float(threshold_at_tpr(id_scores)),
                              (high - low) / 1000, key=f"tune_score::{method}::{ood_set}", format="%.5g")
    confusion = confusion_at_threshold(id_scores, ood_scores, threshold)
except GaiaVizError as exc:
    st.error(f"{METHOD_LABELS.get(method, method)} scores cannot be thresholded: {escape_markdown(exc)}")
    st.stop()
st.session_state["threshold"] = dict(method=method, ood_set=ood_set, threshold=float(threshold),
                                     tpr_at_id=confusion["id_accepted"])

# ---------------------------------------------------------------- what it does
columns = st.columns(4)
columns[0].metric("TPR: ID accepted", f"{100 * confusion['id_accepted']:.1f} %",
                  help=f"{confusion['tn']:,} of {confusion['tn'] + confusion['fp']:,} ID images have score <= threshold")
columns[1].metric("FPR: OOD accepted", f"{100 * confusion['ood_accepted']:.1f} %",
                  help=f"{confusion['fn']:,} of {confusion['fn'] + confusion['tp']:,} {ood_set} images slip "
                       "through as ID (at 95 % TPR this is FPR95)")
columns[2].metric("OOD caught (recall)", f"{100 * confusion['tpr']:.1f} %",
                  help="Share of the OOD images flagged (score > threshold)")
columns[3].metric("Precision of the flags", f"{100 * confusion['precision']:.1f} %",
                  help="Share of the flagged images that are OOD (with these set sizes)")

plot, matrix = st.columns([3, 2])
edges, heights = figures.bin_score_sets({evaluation.id_name: id_scores, ood_set: ood_scores})
plot.plotly_chart(figures.threshold_histogram(edges, heights, threshold, id_name=evaluation.id_name,
                                              title=f"{METHOD_LABELS.get(method, method)}: {evaluation.id_name} vs. {ood_set}"),
                  width="stretch", key="tune_histogram")
matrix.plotly_chart(figures.confusion_matrix_figure(confusion, evaluation.id_name, ood_set),
                    width="stretch", key="tune_confusion")

# ---------------------------------------------------------------- hardest cases
st.subheader("Hardest cases")
st.caption(f"OOD images scored most ID-like ({escape_markdown(ood_set)}, lowest scores) and ID images scored "
           f"most OOD-like ({escape_markdown(evaluation.id_name)}, highest scores), with their verdict at this "
           "threshold.")


def captions(scores, indices):
    return [f"#{i} · {scores[i]:.3g} · {'flagged' if scores[i] > threshold else 'accepted'}" for i in indices]


hard_ood = hardest_cases(ood_scores, GALLERY_SIZE, most_ood_like=False)
st.markdown(f"**{escape_markdown(ood_set)}: most ID-like**")
show_gallery(setup.ood_sets[ood_set], hard_ood, captions(ood_scores, hard_ood))
hard_id = hardest_cases(id_scores, GALLERY_SIZE, most_ood_like=True)
st.markdown(f"**{escape_markdown(evaluation.id_name)}: most OOD-like**")
show_gallery(setup.id_set, hard_id, captions(id_scores, hard_id))

# ---------------------------------------------------------------- export
st.subheader("Use this threshold")
config = config_from_evaluation(evaluation, method, threshold, ood_set)
st.download_button(f"Download {DEFAULT_CONFIG_NAME}", config.to_json(), file_name=DEFAULT_CONFIG_NAME,
                   mime="application/json", key="tune_download",
                   help="Method, layers, preprocessing preset, OOD policy, model and checkpoint, "
                        "threshold and the TPR it gives on the ID set")
with st.expander("What the file holds"):
    st.json(config.to_dict())
st.markdown("Flag new images with it:")
st.code(threshold_snippet(DEFAULT_CONFIG_NAME), language="python")
if config.checkpoint and config.checkpoint.startswith("upload:"):
    st.caption("The model's weights were uploaded: pass their path as "
               "`OODFlagger.from_file(..., checkpoint='/path/to/weights')`.")
