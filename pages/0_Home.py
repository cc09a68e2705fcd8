"""Home: what GAIA is, in three sentences and one figure, and three ways in."""

import streamlit as st

from gaia_viz.app.page import page_link
from gaia_viz.app.shell import page_guard
from gaia_viz.app.teaching import glance_case
from gaia_viz.figures import images as figures

page_guard(__file__)  # first of all: a page run on its own runs the whole app (gaia_viz.app.shell)

ID_INDEX, OOD_INDEX = 0, 0


@st.cache_data(show_spinner=False)
def demo_glance():
    from gaia_viz.demo import DEMO_PRESET, demo_id_set, demo_ood_sets, load_demo_model

    model = load_demo_model()
    digit, face = demo_id_set()[ID_INDEX][0], demo_ood_sets()["faces"][OOD_INDEX][0]
    return [glance_case(model, digit, DEMO_PRESET, "a digit (ID)"),
            glance_case(model, face, DEMO_PRESET, "a face (OOD)")]


st.title("gaia-viz: see why GAIA flags an image")
st.markdown(
    "**GAIA** (Chen et al., NeurIPS 2023) detects inputs a classifier was not trained for "
    "(out-of-distribution, OOD) without retraining it, by looking at the gradients an attribution "
    "produces inside the network. For images like the training data many of those gradients are "
    "**exactly zero** (ReLUs switch parts of the network off); unfamiliar images switch more on, so "
    "their gradients are denser (**GAIA-Z**) and their channel averages abnormal (**GAIA-A**). "
    "Both scores are OOD scores: higher means more likely OOD.")
cases = demo_glance()
st.plotly_chart(figures.gaia_at_a_glance(cases), width="stretch", key="home_glance")
digit, face = cases
st.caption(f"The demo's digit CNN at layer `{digit['layer']}`: on average {digit['mean_nonzero']:.0%} of the "
           f"channels carry a non-zero gradient for the digit and {face['mean_nonzero']:.0%} for the face, which "
           f"gets the higher GAIA-Z ({face['gaia_z']:.3f} vs. {digit['gaia_z']:.3f}; GAIA-A "
           f"{face['gaia_a']:.3g} vs. {digit['gaia_a']:.3g}).")

st.subheader("Three ways in")
learn, inspect, tune = st.columns(3)
with learn:
    page_link("pages/5_How_GAIA_works.py", "Learn how GAIA works", icon=":material/school:")
    st.caption("One digit and one face followed through every formula, with the numbers plugged in.")
with inspect:
    page_link("pages/1_Inspect.py", "Inspect an image", icon=":material/image_search:")
    st.caption("Upload your own image or pick one from a set: prediction, attributions, GAIA maps, verdict.")
with tune:
    page_link("pages/3_Tune_threshold.py", "Tune a threshold", icon=":material/tune:")
    st.caption("Choose an operating point on real scores, see what it catches, export it to Python.")
st.caption("Everything runs on the embedded demo out of the box; choose your own model and data in the sidebar. "
           "Every view is a link: copy the address to share it.")
