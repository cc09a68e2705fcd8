"""Evaluate: score the ID and OOD sets with GAIA and the baselines; histograms, ROC, metrics."""

from gaia_viz.app.shell import page_guard

page_guard(__file__)

import json  # noqa: E402

import streamlit as st  # noqa: E402

from gaia_viz.app import analysis  # noqa: E402
from gaia_viz.app.page import (  # noqa: E402
    effective_layers,
    layers_caption,
    require_setup,
    scores,
    user_errors,
    warn_about_numbers,
)
from gaia_viz.app.paths import escape_markdown  # noqa: E402
from gaia_viz.app.state import bound_widget, selection, update_selection  # noqa: E402
from gaia_viz.detectors import DETECTORS  # noqa: E402
from gaia_viz.figures import scores as figures  # noqa: E402
from gaia_viz.gaia.families import GAIA_FAMILIES  # noqa: E402
from gaia_viz.metrics import roc_points  # noqa: E402
from gaia_viz.sweep import ALL_METHODS, METHOD_LABELS  # noqa: E402

st.title("Evaluate")
st.caption("Score the in-distribution (ID) set and every OOD set with GAIA and the baselines in one "
           "sweep. Scores are OOD scores: higher = more out-of-distribution.")

setup = require_setup()
chosen = selection()

# ---------------------------------------------------------------- choose and run
methods = bound_widget(
    st.multiselect, "w_methods", list(chosen.methods),
    lambda value: update_selection(methods=tuple(value)),
    label="Methods", options=list(ALL_METHODS),
    format_func=lambda m: METHOD_LABELS.get(m, m) + (" (fits on ID training data)" if DETECTORS[m].needs_fit else ""),
    help="Every method is scored in one sweep: one forward pass per batch feeds them all (GAIA adds its "
         "backward passes, ODIN its input gradient from the same pass and a second forward). Methods that "
         "fit learn from the fit set in one shared pass. Removing a method hides it; its scores are kept.",
)
if not methods:
    st.info("Choose at least one method.")
    st.stop()
evaluation, missing = scores(setup, methods)
if evaluation is None:
    st.stop()
shown = [m for m in methods if m in evaluation.methods]
if not shown:
    st.stop()
view = evaluation.select(shown)
layers = {m: effective_layers(view, m) for m in shown if m in GAIA_FAMILIES}

# ---------------------------------------------------------------- summary
accuracy = view.id_accuracy()
columns = st.columns(4)
columns[0].metric("ID top-1 accuracy", f"{100 * accuracy:.2f} %" if accuracy is not None else "n/a",
                  help="Of the ID images with a known label")
columns[1].metric("Images scored", f"{len(view.scores):,}")
columns[2].metric("Seconds", f"{view.seconds:.1f}",
                  help=f"{view.cache_hits} of {1 + len(view.ood_names)} data sets came from the run cache")
columns[3].metric("Device", view.config.device or setup.device)
checkpoint_text = f" ({escape_markdown(setup.checkpoint)})" if setup.checkpoint else ""
st.caption(f"Model **{escape_markdown(setup.model_name)}**{checkpoint_text}; preset "
           f"**{setup.preset}**; OOD policy **{setup.ood_policy}**; ID set **{escape_markdown(view.id_name)}** "
           f"({len(setup.id_set):,} images); OOD: " + ", ".join(
               f"{escape_markdown(n)} ({len(setup.ood_sets[n]):,}, {setup.ood_policy_of(n)})"
               for n in view.ood_names))
for method in layers:
    st.caption(escape_markdown(layers_caption(view, method)) + " (choose on Channels and layers).")
warn_about_numbers(evaluation, methods)

# ---------------------------------------------------------------- metrics
st.subheader("Metrics")
metrics = None
with user_errors("No metrics: "):
    metrics = analysis.view_metrics(view, layers)
if metrics is not None:
    st.dataframe(figures.metrics_display_table(metrics, METHOD_LABELS), hide_index=True, width="stretch")
    with st.expander("AUROC (%) as a method x OOD set grid"):
        st.dataframe(figures.metric_pivot(metrics, "auroc", METHOD_LABELS), width="stretch")
st.caption("FPR95: share of OOD images accepted as ID when the threshold accepts 95 % of the ID images "
           "(lower is better). AUROC, AUPR-In (ID positive) and AUPR-Out (OOD positive): higher is better. "
           "'average' is the mean over the OOD sets.")

# ---------------------------------------------------------------- histograms
st.subheader("Score distributions")
grid = st.columns(2)
for k, method in enumerate(shown):
    with grid[k % 2], user_errors(f"{METHOD_LABELS.get(method, method)}: "):
        edges, heights = figures.bin_score_sets(analysis.score_sets(view, method, layers.get(method)))
        st.plotly_chart(figures.score_histograms(edges, heights, title=METHOD_LABELS.get(method, method),
                                                 id_name=view.id_name),
                        width="stretch", key=f"evaluate_hist_{method}")

# ---------------------------------------------------------------- ROC
st.subheader("ROC curves")
ood_names = list(view.ood_names)
current_ood = chosen.ood_set if chosen.ood_set in ood_names else ood_names[0]
roc_set = bound_widget(st.selectbox, f"w_ood::{setup.score_key}", current_ood,
                       lambda value: update_selection(ood_set=value), label="OOD set", options=ood_names)
curves = {}
for method in shown:
    with user_errors(f"No ROC curve for {METHOD_LABELS.get(method, method)}: "):
        curves[METHOD_LABELS.get(method, method)] = roc_points(
            analysis.method_scores(view, method, view.id_name, layers.get(method)),
            analysis.method_scores(view, method, roc_set, layers.get(method)))[:2]
if curves:
    st.plotly_chart(figures.roc_curves(curves, title=f"{view.id_name} (ID) vs. {roc_set} (OOD)"),
                    width="stretch", key="evaluate_roc")

# ---------------------------------------------------------------- downloads
st.subheader("Downloads")
left, middle, right = st.columns(3)
middle.download_button("scores.csv", view.scores.to_csv(index=False), file_name="scores.csv",
                       mime="text/csv", help="One row per image: dataset, index, path, label, prediction, "
                                             "one column of OOD scores per shown method (all layers)")
if metrics is not None:
    left.download_button("metrics.json", json.dumps(view.metrics_json(), indent=2, default=str),
                         file_name="metrics.json", mime="application/json",
                         help="All layers, same schema as `python -m gaia_viz evaluate`: {methods: {method: {ood set: "
                              "{fpr95, auroc, aupr_in, aupr_out, detection_error}}}, config}")
    right.download_button("metrics.csv", metrics.to_csv(index=False), file_name="metrics.csv",
                          mime="text/csv", help="The metrics table as fractions (not %), GAIA on the chosen layers")
