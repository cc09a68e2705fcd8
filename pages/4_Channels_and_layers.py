"""Channels and layers: where in the network ID and OOD gradients differ, and which layers help."""

import numpy as np
import streamlit as st

from gaia_viz.app import analysis
from gaia_viz.app.paths import escape_markdown
from gaia_viz.app.setup import require_evaluation, require_setup
from gaia_viz.errors import GaiaVizError
from gaia_viz.figures import channels as figures
from gaia_viz.figures.scores import metrics_display_table
from gaia_viz.gaia.families import GAIA_FAMILIES
from gaia_viz.sweep import GAIA_METHODS, METHOD_LABELS

st.title("Channels and layers")
st.caption("GAIA-Z looks at the share of non-zero gradient entries r[l, c] of each channel; GAIA-A at "
           "each channel's average gradient m[l, c]. Here they are per layer and channel, averaged "
           "over each set, straight from the evaluation's cached arrays (no model run).")

setup = require_setup()
evaluation = require_evaluation(setup, need=GAIA_METHODS)
families = [m for m in GAIA_METHODS if m in evaluation.methods and analysis.has_family(evaluation, m)]
if not families:
    st.info("This evaluation has neither GAIA-Z nor GAIA-A: include them on the Evaluate page.")
    st.stop()

ood_set = st.selectbox("OOD set", evaluation.ood_names, key="channels_ood_set")

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
st.caption("Pick layers; GAIA-Z and GAIA-A are recomputed at once from the cached per-layer sums.")
stored = st.session_state.get("layer_subset") or {}
chosen = {}
picker = st.columns(len(families))
for column, method in zip(picker, families):
    layers = GAIA_FAMILIES[method].layers(evaluation)
    key = f"channels_subset_{method}"
    if key not in st.session_state:
        previous = [name for name in stored.get("zero" if method == "gaia_z" else "inner", []) if name in layers]
        st.session_state[key] = previous or list(layers)
    chosen[method] = column.multiselect(f"{METHOD_LABELS[method]} layers", layers, key=key)
st.session_state["layer_subset"] = {"zero": chosen.get("gaia_z", []), "inner": chosen.get("gaia_a", [])}

try:
    subset = analysis.subset_metrics(evaluation, chosen)
except GaiaVizError as exc:
    st.error(escape_markdown(exc))
    st.stop()
full = evaluation.metrics_table()
full = full[full["method"].isin(families)].reset_index(drop=True)
summary = st.columns(len(families))
for column, method in zip(summary, families):
    pick = subset[(subset["method"] == method) & (subset["ood_set"] == ood_set)]
    before = full[(full["method"] == method) & (full["ood_set"] == ood_set)]
    auroc, auroc_all = float(pick["auroc"].iloc[0]), float(before["auroc"].iloc[0])
    column.metric(f"{METHOD_LABELS[method]} AUROC on {ood_set}, {len(chosen[method])} layers",
                  f"{100 * auroc:.2f} %", delta=f"{100 * (auroc - auroc_all):+.2f} pts vs. all layers",
                  delta_color="normal" if np.isfinite(auroc) else "off")
left, right = st.columns(2)
left.markdown("**Chosen layers**")
left.dataframe(metrics_display_table(subset, METHOD_LABELS), hide_index=True, width="stretch",
               key="channels_subset_table")
right.markdown("**All layers** (the evaluation)")
right.dataframe(metrics_display_table(full, METHOD_LABELS), hide_index=True, width="stretch",
                key="channels_full_table")
