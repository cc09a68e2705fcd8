"""Tune threshold: pick an operating point, see what it accepts and flags, export it."""

import streamlit as st

from gaia_viz.app import analysis
from gaia_viz.app import keys
from gaia_viz.app.gallery import show_cases
from gaia_viz.app.markdown import escape_markdown
from gaia_viz.app.page import (
    effective_layers,
    layers_caption,
    require_scores,
    require_setup,
    warn_about_numbers,
)
from gaia_viz.app.shell import page_guard, write_link
from gaia_viz.app.state import bound_widget, selection, update_selection
from gaia_viz.app.tune import hardest_cases, install_command, threshold_snippet
from gaia_viz.detectors import DETECTORS
from gaia_viz.errors import GaiaVizError
from gaia_viz.figures import scores as figures
from gaia_viz.gaia.families import GAIA_FAMILIES
from gaia_viz.metrics import confusion_at_threshold, threshold_at_tpr
from gaia_viz.sweep import METHOD_LABELS
from gaia_viz.threshold import DEFAULT_CONFIG_NAME, config_from_evaluation, fitted_state_name

page_guard(__file__)  # first of all: a page run on its own runs the whole app (gaia_viz.app.shell)

GALLERY_SIZE = 8
OPERATING_POINT_FRAGMENT = "tune_operating_point"
MODES = {"tpr": "target TPR", "score": "score"}

st.title("Tune threshold")
st.caption("An image is accepted as in-distribution when its OOD score is at most the threshold and "
           "flagged as OOD above it. Choose the threshold by the share of ID images to accept "
           "(the TPR) or directly on the score.")

setup = require_setup()
chosen = selection()
evaluation = require_scores(setup, [chosen.method])

# ---------------------------------------------------------------- choose the operating point
left, right = st.columns(2)
methods = list(evaluation.methods)
method = bound_widget(left.selectbox, keys.tune_method(setup.score_key),
                      chosen.method if chosen.method in methods else methods[0],
                      lambda value: update_selection(method=value), label="Method", options=methods,
                      format_func=lambda m: METHOD_LABELS.get(m, m))
ood_names = list(evaluation.ood_names)
ood_set = bound_widget(right.selectbox, keys.ood_set(setup.score_key),
                       chosen.ood_set if chosen.ood_set in ood_names else ood_names[0],
                       lambda value: update_selection(ood_set=value), label="OOD set", options=ood_names)
layers = effective_layers(evaluation, method)
id_scores = analysis.method_scores(evaluation, method, evaluation.id_name, layers)
ood_scores = analysis.method_scores(evaluation, method, ood_set, layers)
if method in GAIA_FAMILIES:
    st.caption(escape_markdown(layers_caption(evaluation, method)) + " (choose on Channels and layers).")
warn_about_numbers(evaluation, [method])
hard_ood = hardest_cases(ood_scores, GALLERY_SIZE, most_ood_like=False)
hard_id = hardest_cases(id_scores, GALLERY_SIZE, most_ood_like=True)

# ---------------------------------------------------------------- the operating point and what it drives
# A fragment: moving the TPR slider (or the score slider, or the mode) reruns only this part, not
# the set-up, the sidebar and the score lookups above it (issue 22: the whole page took 6.6 s to
# settle in the browser for a 1.8 ms computation).
@st.fragment(key=OPERATING_POINT_FRAGMENT)
def operating_point():
    chosen = selection()  # the page run's Selection is stale in a fragment rerun
    mode = bound_widget(st.radio, keys.W_TUNE_MODE, chosen.threshold_mode,
                        lambda value: update_selection(threshold_mode=value), label="Set the threshold by",
                        options=list(MODES), format_func=MODES.get, horizontal=True,
                        help="TPR = fraction of ID images accepted (score <= threshold).")
    try:
        if mode == "tpr":
            tpr = bound_widget(st.slider, keys.W_TUNE_TPR, float(chosen.tpr), lambda value: update_selection(tpr=value),
                               label="Target TPR: fraction of ID images accepted", min_value=0.50, max_value=1.00,
                               step=0.005, format="%.3f")
            threshold = threshold_at_tpr(id_scores, tpr)
            st.caption(f"Threshold at {100 * tpr:.1f} % TPR: **{threshold:.6g}**")
        else:
            low = float(min(id_scores.min(), ood_scores.min()))
            high = float(max(id_scores.max(), ood_scores.max()))
            if high <= low:
                high = low + 1.0
            start = chosen.threshold if chosen.threshold is not None else threshold_at_tpr(id_scores, chosen.tpr)
            start = float(min(high, max(low, start)))
            threshold = bound_widget(
                st.slider, keys.tune_score(setup.score_key, method, layers), start,
                lambda value: update_selection(threshold=float(value)), label="Threshold on the OOD score",
                min_value=low, max_value=high, step=(high - low) / 1000, format="%.5g")
        confusion = confusion_at_threshold(id_scores, ood_scores, threshold)
    except GaiaVizError as exc:
        st.error(f"{METHOD_LABELS.get(method, method)} scores cannot be thresholded: {escape_markdown(exc)}")
        st.stop()

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
                                                  title=f"{METHOD_LABELS.get(method, method)}: {evaluation.id_name} vs. {ood_set}",
                                                  score_axis=figures.score_axis_title(method, METHOD_LABELS.get(method, method))),
                      width="stretch", key="tune_histogram")
    matrix.markdown("**Decisions at this threshold** (rows: the truth)")
    matrix.table(figures.confusion_table(confusion, evaluation.id_name, ood_set))

    hard_ood_flagged = int((ood_scores[hard_ood] > threshold).sum())
    hard_id_flagged = int((id_scores[hard_id] > threshold).sum())
    st.caption(f"At this threshold, of the hardest cases below: {len(hard_ood) - hard_ood_flagged} of the "
               f"{len(hard_ood)} most ID-like {escape_markdown(ood_set)} images are accepted as ID (missed) and "
               f"{hard_id_flagged} of the {len(hard_id)} most OOD-like {escape_markdown(evaluation.id_name)} images "
               "are flagged (false alarms).")

    # ---------------------------------------------------------------- export
    st.subheader("Use this threshold")
    config = config_from_evaluation(evaluation, method, threshold, ood_set, layers=layers)
    fitted = evaluation.fitted_states.get(method)
    if fitted:
        config.fitted_state = fitted_state_name(DEFAULT_CONFIG_NAME)
    left, right = st.columns(2)
    left.download_button(f"Download {DEFAULT_CONFIG_NAME}", config.to_json(), file_name=DEFAULT_CONFIG_NAME,
                         mime="application/json", key="tune_download",
                         help="Method, layers, preprocessing preset, OOD policies, model and checkpoint, "
                              "threshold and the TPR it gives on the ID set")
    if fitted:
        from safetensors.torch import save as save_safetensors

        right.download_button(f"Download {config.fitted_state}",
                              save_safetensors({k: v.contiguous() for k, v in fitted.items()}),
                              file_name=config.fitted_state, mime="application/octet-stream", key="tune_download_state",
                              help=f"What {METHOD_LABELS.get(method, method)} fitted on the ID training data: keep it "
                                   "beside the JSON, so loading never refits")
    elif DETECTORS[method].needs_fit:
        right.caption(f"{METHOD_LABELS.get(method, method)}'s fitted state is not at hand, so loading the file "
                      f"refits it on {escape_markdown(config.fit_source or 'the fit set')}.")
    with st.expander("What the file holds"):
        st.code(config.to_json(), language="json")
    st.markdown("Flag new images with it (install once with "
                f"`{install_command()}`):")
    st.code(threshold_snippet(DEFAULT_CONFIG_NAME), language="python")
    if config.checkpoint and config.checkpoint.startswith("upload:"):
        st.caption("The model's weights were uploaded: pass their path as "
                   "`OODFlagger.from_file(..., checkpoint='/path/to/weights')`.")

    write_link()  # a fragment rerun skips the app shell's write of the address bar


operating_point()

# ---------------------------------------------------------------- hardest cases
# Outside the fragment: the images and their scores do not move with the threshold, and redrawing
# 16 cards on every slider step cost the browser about 40 ms of the 300 ms budget (the verdicts
# that do move are counted in the fragment, above the export).
st.subheader("Hardest cases")
st.caption(f"OOD images scored most ID-like ({escape_markdown(ood_set)}, lowest scores) and ID images scored "
           f"most OOD-like ({escape_markdown(evaluation.id_name)}, highest scores), as the model saw them (after the "
           f"{escape_markdown(setup.preset)} preprocessing and each set's size policy), each with its score: an image "
           "is flagged when its score is above the threshold chosen above. **Inspect** opens one on the Inspect page.")


def captions(scores, indices):
    return [f"#{i} · {scores[i]:.3g}" for i in indices]


st.markdown(f"**{escape_markdown(ood_set)}: most ID-like**")
show_cases(setup.ood_sets[ood_set], hard_ood, captions(ood_scores, hard_ood), setup.preset,
           key=keys.tune_inspect(setup.score_key))
st.markdown(f"**{escape_markdown(evaluation.id_name)}: most OOD-like**")
show_cases(setup.id_set, hard_id, captions(id_scores, hard_id), setup.preset,
           key=keys.tune_inspect(setup.score_key))
