"""Channels and layers: where in the network ID and OOD gradients differ, and which layers help."""

import streamlit as st

from gaia_viz.app import analysis
from gaia_viz.app import keys
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
from gaia_viz.app.state import bound_widget, selection, update_selection
from gaia_viz.figures import channels as figures
from gaia_viz.figures.scores import metrics_display_table
from gaia_viz.gaia.families import GAIA_FAMILIES
from gaia_viz.sweep import GAIA_METHODS, METHOD_LABELS

page_guard(__file__)  # first of all: a page run on its own runs the whole app (gaia_viz.app.shell)

st.title("Channels and layers")
st.caption("GAIA-Z looks at the share of non-zero gradient entries r[l, c] of each channel; GAIA-A at "
           "each channel's average gradient m[l, c]. Here they are per layer and channel, averaged "
           "over each set, straight from the evaluation's cached arrays (no model run).")

setup = require_setup()
chosen = selection()
evaluation = require_scores(setup, GAIA_METHODS)
families = [m for m in GAIA_METHODS if analysis.has_family(evaluation, m)]
if not families:
    st.info("This evaluation has neither GAIA-Z nor GAIA-A: include them on the Evaluate page.")
    st.stop()

ood_names = list(evaluation.ood_names)
ood_set = bound_widget(st.selectbox, keys.ood_set(setup.score_key),
                       chosen.ood_set if chosen.ood_set in ood_names else ood_names[0],
                       lambda value: update_selection(ood_set=value), label="OOD set", options=ood_names)

warn_about_numbers(evaluation, families)

# ---------------------------------------------------------------- heatmaps
for method in families:
    fam = GAIA_FAMILIES[method]
    layers, counts = fam.layers(evaluation), fam.channels(evaluation)
    unit = f"|{fam.symbol}|" if fam.heatmap_abs else fam.symbol
    st.subheader(f"{fam.label}: mean {unit} per channel ({fam.channel_label})")
    id_matrix = figures.per_layer_matrix(analysis.channel_means(evaluation, evaluation.id_name, method), counts)
    ood_matrix = figures.per_layer_matrix(analysis.channel_means(evaluation, ood_set, method), counts)
    tabs = st.tabs([f"{evaluation.id_name} (ID)", f"{ood_set} (OOD)", "difference OOD − ID"])
    with tabs[0]:
        st.plotly_chart(figures.layer_channel_heatmap(id_matrix, layers, colorbar_title=unit),
                        width="stretch", key=f"channels_{method}_id")
    with tabs[1]:
        st.plotly_chart(figures.layer_channel_heatmap(ood_matrix, layers, colorbar_title=unit),
                        width="stretch", key=f"channels_{method}_ood")
    with tabs[2]:
        st.plotly_chart(figures.layer_channel_heatmap(ood_matrix - id_matrix, layers, diverging=True,
                                                      colorbar_title=f"Δ {unit}"),
                        width="stretch", key=f"channels_{method}_diff")

# ---------------------------------------------------------------- single layers
st.subheader("AUROC of each layer alone")
st.caption("Score from one layer: its partial sum over channels divided by its channel count "
           "(GAIA-A also by o²). 50 % is chance.")
bars = {METHOD_LABELS[m]: analysis.single_layer_aurocs(evaluation, ood_set, m) for m in families}
st.plotly_chart(figures.layer_auroc_bars(bars, title=f"{evaluation.id_name} (ID) vs. {ood_set} (OOD)"),
                width="stretch", key="channels_layer_auroc")

# ---------------------------------------------------------------- layer subset
st.subheader("Recompute GAIA on a layer subset")
st.caption("Pick layers; GAIA-Z and GAIA-A are recomputed at once from the cached per-layer sums. The "
           "subset holds on every page: Evaluate, Tune threshold (and its export) and the Inspect verdict.")
picked = {}
picker = st.columns(len(families))
for column, method in zip(picker, families):
    fam = GAIA_FAMILIES[method]
    layers = fam.layers(evaluation)
    attr = "zero_layers" if method == "gaia_z" else "inner_layers"
    current = effective_layers(evaluation, method)

    def store(value, _attr=attr, _layers=layers):
        subset = tuple(name for name in _layers if name in value)
        update_selection(**{_attr: None if len(subset) == len(_layers) else subset})

    picked[method] = bound_widget(column.multiselect, keys.layer_subset(setup.score_key, method),
                                  list(layers) if current is None else list(current), store,
                                  label=f"{fam.label} layers", options=list(layers))
    column.caption(escape_markdown(layers_caption(evaluation, method)))

subset = None
with user_errors():
    subset = analysis.subset_metrics(evaluation, {m: effective_layers(evaluation, m) for m in families})
if subset is None:
    st.stop()
full = evaluation.metrics_table()
full = full[full["method"].isin(families)].reset_index(drop=True)
summary = st.columns(len(families))
for column, method in zip(summary, families):
    pick = subset[(subset["method"] == method) & (subset["ood_set"] == ood_set)]
    before = full[(full["method"] == method) & (full["ood_set"] == ood_set)]
    auroc, auroc_all = float(pick["auroc"].iloc[0]), float(before["auroc"].iloc[0])
    change = 100 * (auroc - auroc_all)
    column.metric(f"{METHOD_LABELS[method]} AUROC on {ood_set}, {len(picked[method])} layers",
                  f"{100 * auroc:.2f} %", delta=f"{change:+.2f} pts vs. all layers",
                  delta_color=analysis.delta_color(change),
                  delta_arrow="auto" if analysis.delta_color(change) == "normal" else "off")
left, right = st.columns(2)
left.markdown("**Chosen layers**")
left.dataframe(metrics_display_table(subset, METHOD_LABELS), hide_index=True, width="stretch",
               key="channels_subset_table")
right.markdown("**All layers** (the evaluation)")
right.dataframe(metrics_display_table(full, METHOD_LABELS), hide_index=True, width="stretch",
                key="channels_full_table")
