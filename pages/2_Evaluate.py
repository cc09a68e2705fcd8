"""Evaluate: score the ID and OOD sets with GAIA and the baselines; histograms, ROC, metrics."""

import json

import streamlit as st

from gaia_viz.app import analysis
from gaia_viz.app import keys
from gaia_viz.app.markdown import escape_markdown
from gaia_viz.app.page import (
    effective_layers,
    layers_caption,
    require_setup,
    scores,
    user_errors,
    warn_about_accuracy,
    warn_about_numbers,
)
from gaia_viz.app.shell import page_guard, write_link
from gaia_viz.app.selection import HISTOGRAM_SCALES, HISTOGRAM_SETS
from gaia_viz.app.state import bound_widget, selection, update_selection
from gaia_viz.detectors import DETECTORS
from gaia_viz.figures import scores as figures
from gaia_viz.gaia.families import GAIA_FAMILIES
from gaia_viz.metrics import DEFAULT_BOOTSTRAP_RESAMPLES, auroc, roc_points
from gaia_viz.sweep import ALL_METHODS, METHOD_LABELS

page_guard(__file__)  # first of all: a page run on its own runs the whole app (gaia_viz.app.shell)

@st.cache_data(show_spinner=False, max_entries=16)
def bootstrap_table(score_key: str, methods: tuple, layers: tuple, _view):
    """Bootstrap intervals of the shown methods (cached per set-up, methods and layer subsets)."""
    return analysis.bootstrap_table(_view, dict(layers), METHOD_LABELS)


st.title("Evaluate")
st.caption("Score the in-distribution (ID) set and every OOD set with GAIA and the baselines in one "
           "sweep. Scores are OOD scores: higher = more out-of-distribution.")

setup = require_setup()
chosen = selection()

# ---------------------------------------------------------------- choose and run
methods = bound_widget(
    st.multiselect, keys.W_METHODS, list(chosen.methods),
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
columns[0].metric("ID top-1 accuracy" + (" (random weights)" if setup.random_weights else ""),
                  f"{100 * accuracy:.2f} %" if accuracy is not None else "n/a",
                  help="Of the ID images with a known label" + (": an untrained model's, near chance"
                                                                 if setup.random_weights else ""))
columns[1].metric("Images scored", f"{len(view.scores):,}")
columns[2].metric("Seconds", f"{view.seconds:.1f}",
                  help=f"{view.cache_hits} of {1 + len(view.ood_names)} data sets came from the run cache")
columns[3].metric("Device", view.config.device or setup.device)
warn_about_accuracy(view)
checkpoint_text = f" ({escape_markdown(setup.checkpoint)})" if setup.checkpoint else ""
st.caption(f"Model **{escape_markdown(setup.model_name)}**{checkpoint_text}; preset "
           f"**{setup.preset}**; OOD policy **{setup.ood_policy}**; ID set **{escape_markdown(view.id_name)}** "
           f"({len(setup.id_set):,} images); OOD: " + ", ".join(
               f"{escape_markdown(n)} ({len(setup.ood_sets[n]):,}, {setup.ood_policy_of(n)})"
               for n in view.ood_names))
for method in layers:
    st.caption(escape_markdown(layers_caption(view, method)) + " (choose on Channels and layers).")
warn_about_numbers(evaluation, methods)


@st.fragment(key="evaluate_bootstrap")
def bootstrap_intervals():
    """The bootstrap checkbox and its table: ticking it reruns only this."""
    if st.checkbox("Bootstrap 95 % intervals of AUROC and FPR95", key=keys.W_EVALUATE_BOOTSTRAP,
                   help=f"{DEFAULT_BOOTSTRAP_RESAMPLES} resamples of the ID and OOD scores (seed 0): how much the "
                        "numbers would move with another sample of the same sets."):
        with user_errors("No intervals: "), st.spinner("Resampling…"):
            st.dataframe(bootstrap_table(setup.score_key, tuple(shown), tuple(sorted(
                (m, tuple(v) if v is not None else None) for m, v in layers.items())), view),
                hide_index=True, width="stretch", key="evaluate_bootstrap_table")


# ---------------------------------------------------------------- metrics
st.subheader("Metrics")
metrics = None
with user_errors("No metrics: "):
    metrics = analysis.view_metrics(view, layers)
tuned = analysis.subset_layers(layers)
row_labels = analysis.row_labels(layers, METHOD_LABELS, view)
if metrics is not None:
    for metric, title in (("fpr95", "FPR95 (%) ↓: share of OOD images accepted at the threshold that accepts "
                                    "95 % of the ID images"),
                          ("auroc", "AUROC (%) ↑")):
        grid = figures.metric_grid(metrics, metric, row_labels)
        st.markdown(f"**{title}**")
        st.markdown(analysis.markdown_table(grid, figures.best_in_column(grid, figures.LOWER_IS_BETTER[metric])))
    if tuned:
        st.caption(escape_markdown(
            f"{', '.join(row_labels[m] for m in tuned)}: the layer subset was chosen on this evaluation's own OOD "
            f"sets, so its numbers (and any bold best among them) are {analysis.TUNED_ON_TEST}, not a held-out "
            "comparison with the other methods."))
    st.caption("As in the GAIA paper's tables: one row per method, one column per OOD set, the best value of each "
               "column in **bold**, and the average over the OOD sets. FPR95: lower is better; AUROC: higher is "
               "better.")
    with st.expander("All metrics, one row per method and OOD set (AUPR too)"):
        st.dataframe(figures.metrics_display_table(metrics, METHOD_LABELS), hide_index=True, width="stretch")
        st.caption("AUPR-In: ID is the positive class; AUPR-Out: OOD is. 'average' is the mean over the OOD sets.")
    bootstrap_intervals()


# ---------------------------------------------------------------- histograms and ROC
# A fragment: the OOD set and the histogram controls rerun only the figures they drive.
@st.fragment(key="evaluate_figures")
def score_figures():
    chosen = selection()  # the page run's Selection is stale in a fragment rerun
    # ---------------------------------------------------------------- histograms
    st.subheader("Score distributions")
    ood_names = list(view.ood_names)
    current_ood = chosen.ood_set if chosen.ood_set in ood_names else ood_names[0]
    controls = st.columns(3)
    focus_set = bound_widget(controls[0].selectbox, keys.ood_set(setup.score_key), current_ood,
                             lambda value: update_selection(ood_set=value), label="OOD set",
                             options=ood_names, help="The set of the ROC curves, and of the histograms when one is shown")
    sets_shown = bound_widget(controls[1].radio, keys.W_EVALUATE_HIST_SETS, chosen.histogram_sets,
                              lambda value: update_selection(histogram_sets=value), label="Histograms of",
                              options=list(HISTOGRAM_SETS), horizontal=True,
                              format_func={"all": "all OOD sets", "one": "the chosen OOD set"}.get)
    scale = bound_widget(controls[2].radio, keys.W_EVALUATE_HIST_SCALE, chosen.histogram_scale,
                         lambda value: update_selection(histogram_scale=value), label="Bar heights",
                         options=list(HISTOGRAM_SCALES), horizontal=True, format_func=figures.HISTOGRAM_SCALE_LABELS.get)
    grid = st.columns(2)
    for k, method in enumerate(shown):
        with grid[k % 2], user_errors(f"{METHOD_LABELS.get(method, method)}: "):
            sets = analysis.score_sets(view, method, layers.get(method))
            if sets_shown == "one":
                sets = {name: values for name, values in sets.items() if name in (view.id_name, focus_set)}
            edges, heights = figures.bin_score_sets(sets, normalize=scale == "fraction")
            st.plotly_chart(figures.score_histograms(
                edges, heights, title=METHOD_LABELS.get(method, method), id_name=view.id_name,
                normalized=scale == "fraction", log_y=scale == "log",
                score_axis=figures.score_axis_title(method, METHOD_LABELS.get(method, method))),
                width="stretch", key=f"evaluate_hist_{method}")

    # ---------------------------------------------------------------- ROC
    st.subheader("ROC curves")
    roc_set = focus_set
    curves, aurocs = {}, {}
    for method in shown:
        label = METHOD_LABELS.get(method, method)
        with user_errors(f"No ROC curve for {label}: "):
            id_scores = analysis.method_scores(view, method, view.id_name, layers.get(method))
            ood_scores = analysis.method_scores(view, method, roc_set, layers.get(method))
            curves[label] = roc_points(id_scores, ood_scores)[:2]
            aurocs[label] = auroc(id_scores, ood_scores)
    if curves:
        st.plotly_chart(figures.roc_curves(curves, title=f"{view.id_name} (ID) vs. {roc_set} (OOD)", aurocs=aurocs),
                        width="stretch", key="evaluate_roc")
    st.caption("Choose the OOD set above. ID is the positive class: TPR = share of ID accepted, FPR = share of OOD "
               "accepted; FPR95 is the FPR where the curve crosses the dashed 95 % TPR line.")
    write_link()  # a fragment rerun skips the app shell's write of the address bar


score_figures()

# ---------------------------------------------------------------- downloads
st.subheader("Downloads")
left, middle, right = st.columns(3)
subsets_text = "; ".join(f"{METHOD_LABELS.get(m, m)} on {', '.join(v)}" for m, v in tuned.items())
middle.download_button("scores.csv", analysis.view_scores_table(view, layers).to_csv(index=False),
                       file_name="scores.csv", mime="text/csv",
                       help="One row per image: dataset, index, path, label, prediction, one column of OOD scores "
                            "per shown method, as shown here" + (f" ({subsets_text}; the `<method>_layers` column "
                                                                 "names the subset)" if tuned else " (all layers)"))
if metrics is not None:
    left.download_button("metrics.json", json.dumps(analysis.view_metrics_json(view, metrics, layers), indent=2,
                                                    default=str),
                         file_name="metrics.json", mime="application/json",
                         help="As shown here" + (f" ({subsets_text}, named under `layer_subsets`)" if tuned else
                                                 " (all layers)") +
                              ", same schema as `python -m gaia_viz evaluate`: {methods: {method: {ood set: "
                              "{fpr95, auroc, aupr_in, aupr_out, detection_error}}}, layer_subsets, config}")
    right.download_button("metrics.csv", metrics.to_csv(index=False), file_name="metrics.csv",
                          mime="text/csv", help="The metrics table as fractions (not %), GAIA on the chosen layers")
