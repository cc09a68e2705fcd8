"""Evaluate: score the ID and OOD sets with GAIA and the baselines; histograms, ROC, metrics."""

import json

import streamlit as st

from gaia_viz.app import analysis
from gaia_viz.app.paths import escape_markdown
from gaia_viz.app.setup import cached_evaluation, get_evaluation, require_setup, user_errors
from gaia_viz.detectors import DETECTORS
from gaia_viz.figures import scores as figures
from gaia_viz.metrics import roc_points
from gaia_viz.sweep import ALL_METHODS, DEFAULT_METHODS, METHOD_LABELS

st.title("Evaluate")
st.caption("Score the in-distribution (ID) set and every OOD set with GAIA and the baselines in one "
           "sweep. Scores are OOD scores: higher = more out-of-distribution.")

setup = require_setup()

# ---------------------------------------------------------------- choose and run
methods = st.multiselect(
    "Methods", list(ALL_METHODS), default=list(DEFAULT_METHODS), key="evaluate_methods",
    format_func=lambda m: METHOD_LABELS.get(m, m) + (" (fits on ID training data)" if DETECTORS[m].needs_fit else ""),
    help="GAIA-Z and GAIA-A share one forward/backward pass per batch with the forward-only "
         "baselines; ODIN needs its own passes. ReAct, KNN and Mahalanobis fit on the fit set first.",
)
if not methods:
    st.info("Choose at least one method.")
    st.stop()
run = st.button("Run evaluation", type="primary", key="evaluate_run")
if run:
    st.session_state["cancel_requested"] = False
evaluation = cached_evaluation(setup, methods, make_current=True)
if evaluation is None and (run or (setup.is_demo and list(methods) == list(DEFAULT_METHODS)
                                   and not st.session_state.get("cancel_requested"))):
    evaluation = get_evaluation(setup, methods, make_current=True)
if evaluation is None:
    n_images = len(setup.id_set) + sum(len(s) for s in setup.ood_sets.values())
    st.info(f"Press **Run evaluation** to score {n_images:,} images on {setup.device} "
            f"(finished chunks are cached on disk, so a cancelled run resumes).")
    st.stop()

# ---------------------------------------------------------------- summary
accuracy = evaluation.id_accuracy()
columns = st.columns(4)
columns[0].metric("ID top-1 accuracy", f"{100 * accuracy:.2f} %" if accuracy is not None else "n/a",
                  help="Of the ID images with a known label")
columns[1].metric("Images scored", f"{len(evaluation.scores):,}")
columns[2].metric("Seconds", f"{evaluation.seconds:.1f}",
                  help=f"{evaluation.cache_hits} of {1 + len(evaluation.ood_names)} data sets came from the run cache")
columns[3].metric("Device", evaluation.config.device or setup.device)
checkpoint_text = f" ({escape_markdown(setup.checkpoint)})" if setup.checkpoint else ""
st.caption(f"Model **{escape_markdown(setup.model_name)}**{checkpoint_text}; preset "
           f"**{setup.preset}**; OOD policy **{setup.ood_policy}**; ID set **{escape_markdown(evaluation.id_name)}** "
           f"({len(setup.id_set):,} images); OOD: " + ", ".join(
               f"{escape_markdown(n)} ({len(setup.ood_sets[n]):,}, {setup.ood_policy_of(n)})"
               for n in evaluation.ood_names))

# ---------------------------------------------------------------- metrics
st.subheader("Metrics")
metrics = None
with user_errors("No metrics: "):
    metrics = evaluation.metrics_table()
if metrics is not None:
    st.dataframe(figures.metrics_display_table(metrics, METHOD_LABELS), hide_index=True, width="stretch")
    with st.expander("AUROC (%) as a method x OOD set grid"):
        st.dataframe(figures.metric_pivot(metrics, "auroc", METHOD_LABELS), width="stretch")
st.caption("FPR95: share of OOD images accepted as ID when the threshold accepts 95 % of the ID images "
           "(lower is better). AUROC, AUPR-In (ID positive) and AUPR-Out (OOD positive): higher is better. "
           "'average' is the mean over the OOD sets.")

# ---------------------------------------------------------------- histograms
st.subheader("Score distributions")
shown = st.multiselect("Methods to plot", evaluation.methods, default=evaluation.methods,
                       format_func=lambda m: METHOD_LABELS.get(m, m), key="evaluate_plot_methods")
grid = st.columns(2)
for k, method in enumerate(shown):
    with grid[k % 2], user_errors(f"{METHOD_LABELS.get(method, method)}: "):
        edges, heights = figures.bin_score_sets(analysis.score_sets(evaluation, method))
        st.plotly_chart(figures.score_histograms(edges, heights, title=METHOD_LABELS.get(method, method),
                                                 id_name=evaluation.id_name),
                        width="stretch", key=f"evaluate_hist_{method}")

# ---------------------------------------------------------------- ROC
st.subheader("ROC curves")
roc_set = st.selectbox("OOD set", evaluation.ood_names, key="evaluate_roc_set")
curves = {}
for method in shown:
    with user_errors(f"No ROC curve for {METHOD_LABELS.get(method, method)}: "):
        curves[METHOD_LABELS.get(method, method)] = roc_points(
            evaluation.method_scores(method, evaluation.id_name), evaluation.method_scores(method, roc_set))[:2]
if curves:
    st.plotly_chart(figures.roc_curves(curves, title=f"{evaluation.id_name} (ID) vs. {roc_set} (OOD)"),
                    width="stretch", key="evaluate_roc")

# ---------------------------------------------------------------- downloads
st.subheader("Downloads")
left, middle, right = st.columns(3)
middle.download_button("scores.csv", evaluation.scores.to_csv(index=False), file_name="scores.csv",
                       mime="text/csv", help="One row per image: dataset, index, path, label, prediction, "
                                             "one column of OOD scores per method")
if metrics is not None:
    left.download_button("metrics.json", json.dumps(evaluation.metrics_json(), indent=2, default=str),
                         file_name="metrics.json", mime="application/json",
                         help="Same schema as `python -m gaia_viz evaluate`: {methods: {method: {ood set: "
                              "{fpr95, auroc, aupr_in, aupr_out, detection_error}}}, config}")
    right.download_button("metrics.csv", metrics.to_csv(index=False), file_name="metrics.csv",
                          mime="text/csv", help="The metrics table as fractions (not %)")
