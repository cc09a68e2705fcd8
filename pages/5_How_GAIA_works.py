"""How GAIA works: one digit and one OOD image from the demo, followed through every formula."""

import numpy as np
import streamlit as st

from gaia_viz.app import keys
from gaia_viz.app.markdown import escape_markdown
from gaia_viz.app.page import formula
from gaia_viz.app.shell import page_guard
from gaia_viz.app.teaching import (
    demo_gaia_evaluation,
    illustrating_channels,
    latex_number,
    layer_shares,
    set_layer_shares,
    walkthrough,
)
from gaia_viz.app.verdict import channel_stats, decide
from gaia_viz.attribution import top_k_predictions
from gaia_viz.figures import images as figures
from gaia_viz.figures.scores import score_axis_title

page_guard(__file__)  # first of all: a page run on its own runs the whole app (gaia_viz.app.shell)

SHOWN_CHANNELS = 8
PLUGGED_CHANNELS = 3


@st.cache_resource(show_spinner="Scoring the demo sets with GAIA (once)...")
def demo_evaluation():
    return demo_gaia_evaluation()


@st.cache_data(show_spinner=False)
def demo_walkthrough(set_name: str, index: int, layer: str):
    model, id_set, ood_sets, _ = demo_evaluation()
    image_set = id_set if set_name == id_set.name else ood_sets[set_name]
    return walkthrough(model, image_set[index][0], layer)


st.title("How GAIA works")
st.markdown(
    "GAIA asks a trained classifier *how it would change its mind*: it takes the gradient "
    "of the output with respect to the feature maps inside the network. For images like "
    "the training data these gradients look one way; for unfamiliar images they look "
    "different — more or fewer **exact zeros**, and a different **average size**. "
    "We follow one digit (in-distribution) and one image the model never saw the like of."
)

model, id_set, ood_sets, evaluation = demo_evaluation()
pick_left, pick_right = st.columns(2)
id_index = pick_left.slider(f"ID image ({id_set.name})", 0, len(id_set) - 1, 0, key=keys.HOW_ID_INDEX)
ood_name = pick_right.selectbox("OOD set", list(ood_sets), index=list(ood_sets).index("faces")
                                if "faces" in ood_sets else 0, key=keys.HOW_OOD_SET)
ood_index = pick_right.slider(f"OOD image ({ood_name})", 0, len(ood_sets[ood_name]) - 1, 0,
                              key=keys.how_ood_index(ood_name))
layer = st.selectbox("Layer to look inside", evaluation.zero_layers, key=keys.HOW_LAYER,
                     index=evaluation.zero_layers.index(evaluation.inner_layers[-1]))

cases = {
    f"ID: {id_set.name} #{id_index}": (id_set, id_index),
    f"OOD: {ood_name} #{ood_index}": (ood_sets[ood_name], ood_index),
}
walks = {label: demo_walkthrough(image_set.name, index, layer) for label, (image_set, index) in cases.items()}
(id_label, id_walk), (ood_label, ood_walk) = walks.items()
first_walk = id_walk
picked = illustrating_channels(id_walk.ratio, ood_walk.ratio, count=SHOWN_CHANNELS)
shown = picked.channels
plugged = shown[:PLUGGED_CHANNELS]
height, width = first_walk.gradient.shape[1:]
id_mean, id_std = channel_stats(evaluation, evaluation.id_name, "gaia_z", layer)


def side_by_side():
    return zip(st.columns(2), cases.items(), walks.values())


# ------------------------------------------------------------------ 1. images
st.header("1. Two images")
for column, (label, (image_set, index)), _ in side_by_side():
    label_text, probability = top_k_predictions(model, image_set[index][0], k=1,
                                                class_names=id_set.class_names)[0]
    column.image(image_set.raw_image(index), width=140, caption=label)
    answer = f"The model says **{label_text}** with probability **{probability:.2f}**"
    if image_set is id_set:
        column.markdown(answer + ".")
    else:
        column.markdown(answer + f": a classifier always answers, even for an image unlike any {id_set.name} "
                        "it was trained on. GAIA asks whether the answer came the usual way.")

# ------------------------------------------------------------------ 2. the aggregate first
st.header("2. The whole network at a glance")
st.markdown(
    "GAIA-Z looks at how many entries of each gradient are **exactly zero**. Per layer, for the two "
    "images (bars) and averaged over every image of the ID and the OOD set (diamonds): left, the share "
    "of gradient entries that are *not* zero (the mean of the per-channel ratio $r$ of step 5); right, "
    "the mean of $r^2$, which is what GAIA-Z averages (step 6). Squaring weighs channels whose gradient "
    "is dense more than a spread of half-empty ones, so the right panel, not the left, decides the score.")
layer_names = first_walk.result.zero_layers
st.plotly_chart(figures.layer_nonzero_bars(
    layer_names, {id_label: layer_shares(id_walk.result), ood_label: layer_shares(ood_walk.result)},
    {f"{id_set.name} (all ID images)": set_layer_shares(evaluation, evaluation.id_name),
     f"{ood_name} (all images)": set_layer_shares(evaluation, ood_name)}),
    width="stretch", key="how_layer_shares")
higher = ood_label if ood_walk.gaia_z > id_walk.gaia_z else id_label
st.caption(f"GAIA-Z (the channel-weighted mean of the right panel over all layers): {escape_markdown(id_label)} "
           f"{id_walk.gaia_z:.4f}, {escape_markdown(ood_label)} {ood_walk.gaia_z:.4f}; **{escape_markdown(higher)}** "
           "scores higher, i.e. looks more OOD.")

# ------------------------------------------------------------------ 3. gradients
st.header(f"3. The gradient at layer `{layer}`")
st.markdown(
    f"Take the largest logit, $\\max_k f(x)_k$, and its gradient $g = \\partial \\max_k f(x)_k / "
    f"\\partial A$ with respect to the output $A$ of `{layer}` ({first_walk.gradient.shape[0]} "
    f"channels of {height}×{width} positions). Red = positive, blue = negative.")
st.info(f"**The {len(shown)} channels shown**: {escape_markdown(picked.describe(id_label, ood_label))}.")
for column, (label, _), walk in side_by_side():
    column.plotly_chart(figures.channel_grid(
        walk.gradient[shown], shown, label, "gradient value"), key=f"grad_{label}")

# ------------------------------------------------------------------ 4. zeros
st.header("4. Where the gradient is exactly zero")
st.markdown(
    "After a ReLU, a position that was switched off passes no gradient back: the gradient "
    "there is **exactly 0**, not just small. Yellow = non-zero, black = zero.")
for column, (label, _), walk in side_by_side():
    column.plotly_chart(figures.channel_grid(
        walk.nonzero[shown].astype(float), shown, label, "gradient ≠ 0", binary=True),
        key=f"mask_{label}")

# ------------------------------------------------------------------ 5. ratios
st.header("5. One number per channel: the non-zero ratio")
formula(r"r[l, c] = \frac{\#\{p : g_{c,p} \neq 0\}}{H \cdot W}")
for column, (label, _), walk in side_by_side():
    with column:
        st.markdown(f"**{label}**")
        for c in plugged:
            count = int(walk.nonzero[c].sum())
            formula(rf"r[\text{{{layer}}}, {c}] = \frac{{{count}}}{{{height} \cdot {width}}} = {walk.ratio[c]:.3f}")
for label, walk in walks.items():
    st.plotly_chart(figures.channel_ratio_bars(walk.ratio, id_mean, id_std, layer, this_label=label),
                    width="stretch", key=f"bars_{label}")

# ------------------------------------------------------------------ 6. GAIA-Z
st.header("6. GAIA-Z: the mean squared ratio")
st.markdown("Square every ratio and average over all channels $N$ of all hooked layers "
            f"({', '.join(f'`{name}`' for name in first_walk.result.zero_layers)}). "
            "Higher = more OOD.")
formula(r"\text{GAIA-Z}(x) = \frac{1}{N} \sum_{l, c} r[l, c]^2")
for column, (label, _), walk in side_by_side():
    with column:
        st.markdown(f"**{label}**")
        squares = " + ".join(f"{walk.ratio[c]:.3f}^2" for c in plugged)
        formula(rf"{squares} + \dots")
        formula(rf"\text{{mean }} r^2 \text{{ at {layer}}} = {walk.mean_squared_ratio_here:.4f}")
        total = float(walk.result.zero_partial_sums[0].sum())
        formula(rf"\text{{GAIA-Z}} = \frac{{{total:.3f}}}{{{walk.total_zero_channels}}} = {walk.gaia_z:.4f}")


# ------------------------------------------------------------------ 7. GAIA-A
st.header("7. GAIA-A: average gradients, measured against the output")
head = first_walk.result.head_layer
st.markdown(
    f"First the **output component** $o$: the gradient of $\\sum_k \\log \\mathrm{{softmax}}(f(x))_k$ "
    f"at the head layer `{head}`, averaged per channel ($a[c]$), then $o$ from its size. "
    "Then for each inner layer the gradient of the pooled features $\\sum_j h_j$ "
    "averaged per channel ($m[l, c]$). GAIA-A is the mean of $(|m| / o)^2$. Higher = more OOD.")
formula(r"a[c] = \frac{1}{HW}\sum_p \frac{\partial \sum_k \log\mathrm{softmax}(f(x))_k}"
         r"{\partial A^{\text{head}}_{c,p}}")
formula(r"o = \sqrt{\frac{1}{C}\sum_c |a[c]|}")
formula(r"m[l, c] = \frac{1}{HW}\sum_p \frac{\partial \sum_j h_j}{\partial A^{l}_{c,p}}")
formula(r"\text{GAIA-A}(x) = \frac{1}{N_A} \sum_{l, c} \left(\frac{|m[l, c]|}{o}\right)^2")
num = latex_number
for column, (label, _), walk in side_by_side():
    with column:
        st.markdown(f"**{label}**")
        for c in range(PLUGGED_CHANNELS):
            formula(rf"a[{c}] = {num(walk.head_channel_mean[c])}")
        formula(rf"o = \sqrt{{{num(np.abs(walk.head_channel_mean).mean())}}} = {num(walk.output_component, 4)}")
        if layer in walk.result.inner_layers:
            for c in plugged:
                formula(rf"m[\text{{{layer}}}, {c}] = {num(walk.channel_mean[c])}")
        total = float(walk.result.avg_partial_sums[0].sum())
        formula(rf"\text{{GAIA-A}} = \frac{{{num(total)}}}{{{num(walk.output_component, 4)}^2 \cdot "
                 rf"{walk.total_inner_channels}}}")
        formula(rf"\text{{GAIA-A}} = {num(walk.gaia_a, 4)}")

# ------------------------------------------------------------------ 8. histograms
st.header("8. Where the two scores fall")
st.markdown(f"The histograms show the scores of all {len(id_set)} ID digits and of every OOD set; "
            "the dashed line accepts 95 % of the ID digits. Right of it = flagged OOD.")
for method in ("gaia_z", "gaia_a"):
    id_scores = evaluation.method_scores(method, evaluation.id_name)
    marks = {label.split(":")[0]: float(getattr(walk, method)) for label, walk in walks.items()}
    decision = decide(marks["OOD"], method, id_scores)
    st.plotly_chart(figures.score_marker_histogram(
        id_scores, {name: evaluation.method_scores(method, name) for name in evaluation.ood_names},
        marks, decision.threshold, decision.method_label, id_name=evaluation.id_name,
        score_axis=score_axis_title(method, decision.method_label)),
        width="stretch", key=f"hist_{method}")
    for short, score in marks.items():
        st.markdown(f"- {short} image: " + decide(score, method, id_scores).text)
