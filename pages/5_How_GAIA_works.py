"""How GAIA works: one digit and one OOD image from the demo, followed through every formula."""

from gaia_viz.app.shell import page_guard

page_guard(__file__)

import numpy as np  # noqa: E402
import streamlit as st  # noqa: E402

from gaia_viz.app import inspect_helpers as helpers  # noqa: E402
from gaia_viz.attribution import top_k_predictions  # noqa: E402
from gaia_viz.figures import images as figures  # noqa: E402

SHOWN_CHANNELS = 8
PLUGGED_CHANNELS = 3


@st.cache_resource(show_spinner="Scoring the demo sets with GAIA (once)...")
def demo_evaluation():
    return helpers.demo_gaia_evaluation()


@st.cache_data(show_spinner=False)
def demo_walkthrough(set_name: str, index: int, layer: str):
    model, id_set, ood_sets, _ = demo_evaluation()
    image_set = id_set if set_name == id_set.name else ood_sets[set_name]
    return helpers.walkthrough(model, image_set[index][0], layer)


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
id_index = pick_left.slider(f"ID image ({id_set.name})", 0, len(id_set) - 1, 0, key="how_id_index")
ood_name = pick_right.selectbox("OOD set", list(ood_sets), index=list(ood_sets).index("faces")
                                if "faces" in ood_sets else 0, key="how_ood_set")
ood_index = pick_right.slider(f"OOD image ({ood_name})", 0, len(ood_sets[ood_name]) - 1, 0,
                              key=f"how_ood_index_{ood_name}")
layer = st.selectbox("Layer to look inside", evaluation.zero_layers, key="how_layer",
                     index=evaluation.zero_layers.index(evaluation.inner_layers[-1]))

cases = {
    f"ID: {id_set.name} #{id_index}": (id_set, id_index),
    f"OOD: {ood_name} #{ood_index}": (ood_sets[ood_name], ood_index),
}
walks = {label: demo_walkthrough(image_set.name, index, layer) for label, (image_set, index) in cases.items()}
first_walk = next(iter(walks.values()))
shown = helpers.most_different_channels(*[w.ratio for w in walks.values()], count=SHOWN_CHANNELS)
plugged = shown[:PLUGGED_CHANNELS]
height, width = first_walk.gradient.shape[1:]
id_mean, id_std = helpers.channel_stats(evaluation, evaluation.id_name, "gaia_z", layer)


def side_by_side():
    return zip(st.columns(2), cases.items(), walks.values())


# ------------------------------------------------------------------ 1. images
st.header("1. Two images")
for column, (label, (image_set, index)), _ in side_by_side():
    label_text, probability = top_k_predictions(model, image_set[index][0], k=1,
                                                class_names=id_set.class_names)[0]
    column.image(image_set.raw_image(index), width=140, caption=label)
    column.markdown(f"The model says **{label_text}** with probability **{probability:.2f}** — "
                    "a classifier always answers, even for a face.")

# ------------------------------------------------------------------ 2. gradients
st.header(f"2. The gradient at layer `{layer}`")
st.markdown(
    f"Take the largest logit, $\\max_k f(x)_k$, and its gradient $g = \\partial \\max_k f(x)_k / "
    f"\\partial A$ with respect to the output $A$ of `{layer}` ({first_walk.gradient.shape[0]} "
    f"channels of {height}×{width} positions). Below: {SHOWN_CHANNELS} of the channels, "
    "those where the two images differ most. Red = positive, blue = negative.")
for column, (label, _), walk in side_by_side():
    column.plotly_chart(figures.channel_grid(
        walk.gradient[shown], shown, label, "gradient value"), key=f"grad_{label}")

# ------------------------------------------------------------------ 3. zeros
st.header("3. Where the gradient is exactly zero")
st.markdown(
    "After a ReLU, a position that was switched off passes no gradient back: the gradient "
    "there is **exactly 0**, not just small. Yellow = non-zero, black = zero.")
for column, (label, _), walk in side_by_side():
    column.plotly_chart(figures.channel_grid(
        walk.nonzero[shown].astype(float), shown, label, "gradient ≠ 0", binary=True),
        key=f"mask_{label}")

# ------------------------------------------------------------------ 4. ratios
st.header("4. One number per channel: the non-zero ratio")
st.latex(r"r[l, c] = \frac{\#\{p : g_{c,p} \neq 0\}}{H \cdot W}")
for column, (label, _), walk in side_by_side():
    with column:
        st.markdown(f"**{label}**")
        for c in plugged:
            count = int(walk.nonzero[c].sum())
            st.latex(rf"r[\text{{{layer}}}, {c}] = \frac{{{count}}}{{{height} \cdot {width}}} "
                     rf"= {walk.ratio[c]:.3f}")
        st.plotly_chart(figures.channel_ratio_bars(walk.ratio, id_mean, id_std, layer),
                        key=f"bars_{label}")

# ------------------------------------------------------------------ 5. GAIA-Z
st.header("5. GAIA-Z: the mean squared ratio")
st.markdown("Square every ratio and average over all channels $N$ of all hooked layers "
            f"({', '.join(f'`{name}`' for name in first_walk.result.zero_layers)}). "
            "Higher = more OOD.")
st.latex(r"\text{GAIA-Z}(x) = \frac{1}{N} \sum_{l, c} r[l, c]^2")
for column, (label, _), walk in side_by_side():
    with column:
        st.markdown(f"**{label}**")
        squares = " + ".join(f"{walk.ratio[c]:.3f}^2" for c in plugged)
        st.latex(rf"{squares} + \dots \quad\text{{(at {layer}: mean }} r^2 = "
                 rf"{walk.mean_squared_ratio_here:.4f})")
        total = float(walk.result.zero_partial_sums[0].sum())
        st.latex(rf"\text{{GAIA-Z}} = \frac{{{total:.3f}}}{{{walk.total_zero_channels}}} = "
                 rf"{walk.gaia_z:.4f}")


# ------------------------------------------------------------------ 6. GAIA-A
st.header("6. GAIA-A: average gradients, measured against the output")
head = first_walk.result.head_layer
st.markdown(
    f"First the **output component** $o$: the gradient of $\\sum_k \\log \\mathrm{{softmax}}(f(x))_k$ "
    f"at the head layer `{head}`, averaged per channel ($a[c]$), then $o$ from its size. "
    "Then for each inner layer the gradient of the pooled features $\\sum_j h_j$ "
    "averaged per channel ($m[l, c]$). GAIA-A is the mean of $(|m| / o)^2$. Higher = more OOD.")
st.latex(r"a[c] = \frac{1}{HW}\sum_p \frac{\partial \sum_k \log\mathrm{softmax}(f(x))_k}"
         r"{\partial A^{\text{head}}_{c,p}} \qquad o = \sqrt{\frac{1}{C}\sum_c |a[c]|}")
st.latex(r"m[l, c] = \frac{1}{HW}\sum_p \frac{\partial \sum_j h_j}{\partial A^{l}_{c,p}} \qquad "
         r"\text{GAIA-A}(x) = \frac{1}{N_A} \sum_{l, c} \left(\frac{|m[l, c]|}{o}\right)^2")
num = helpers.latex_number
for column, (label, _), walk in side_by_side():
    with column:
        st.markdown(f"**{label}**")
        head_values = ", ".join(f"a[{c}] = {num(walk.head_channel_mean[c])}" for c in range(PLUGGED_CHANNELS))
        st.latex(rf"{head_values}, \dots")
        st.latex(rf"o = \sqrt{{{num(np.abs(walk.head_channel_mean).mean())}}} = {num(walk.output_component, 4)}")
        if layer in walk.result.inner_layers:
            inner_values = ", ".join(f"m[{c}] = {num(walk.channel_mean[c])}" for c in plugged)
            st.latex(rf"\text{{at {layer}: }} {inner_values}, \dots")
        total = float(walk.result.avg_partial_sums[0].sum())
        st.latex(rf"\text{{GAIA-A}} = \frac{{{num(total)}}}{{{num(walk.output_component, 4)}^2 \cdot "
                 rf"{walk.total_inner_channels}}} = {num(walk.gaia_a, 4)}")

# ------------------------------------------------------------------ 7. histograms
st.header("7. Where the two scores fall")
st.markdown(f"The histograms show the scores of all {len(id_set)} ID digits and of every OOD set; "
            "the dashed line accepts 95 % of the ID digits. Right of it = flagged OOD.")
for method in ("gaia_z", "gaia_a"):
    id_scores = evaluation.method_scores(method, evaluation.id_name)
    marks = {label.split(":")[0]: float(getattr(walk, method)) for label, walk in walks.items()}
    decision = helpers.decide(marks["OOD"], method, id_scores)
    st.plotly_chart(figures.score_marker_histogram(
        id_scores, {name: evaluation.method_scores(method, name) for name in evaluation.ood_names},
        marks, decision.threshold, decision.method_label, id_name=evaluation.id_name),
        key=f"hist_{method}")
    for short, score in marks.items():
        st.markdown(f"- {short} image: " + helpers.decide(score, method, id_scores).text)
