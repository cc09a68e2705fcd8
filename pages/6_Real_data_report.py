"""Real-data report: the field's CIFAR-10 OOD benchmark on real images, the shared pretrained
ResNet-20/56 and ODIN's DenseNet-BC-100.

The same computation and tables as ``python -m gaia_viz report`` (gaia_viz.report).
"""

import json

import streamlit as st

from gaia_viz import report
from gaia_viz.app import keys
from gaia_viz.app.loaders import default_data_root
from gaia_viz.app.markdown import escape_markdown
from gaia_viz.app.page import user_errors
from gaia_viz.app.shell import page_guard
from gaia_viz.figures import scores as figures
from gaia_viz.metrics import roc_points
from gaia_viz.settings import resolve_device
from gaia_viz.sweep import METHOD_LABELS

page_guard(__file__)  # first of all: a page run on its own runs the whole app (gaia_viz.app.shell)

st.title("Real-data report: CIFAR-10")
st.caption("ID = the CIFAR-10 test set (JPEG); the field's OOD sets = ODIN's LSUN-Resize and "
           "TinyImageNet-Resize (32 x 32) and DTD textures center-cropped to 32 x 32 (GAIA paper) and resized "
           "to 32 x 32 (OpenOOD); far-OOD extras in their own table = MNIST digits and LFW faces as 32 x 32 RGB; "
           "models = the pretrained CIFAR ResNet-20/56 (ImageNet normalisation) and ODIN's DenseNet-BC-100 "
           "(its own CIFAR normalisation). The fitted methods fit on cifar10/train-5k, never on test data. "
           "Scores are OOD-high; each table's average is over its own sets.")

setup = st.session_state.get(keys.SETUP)
data_root = (setup.data_root if setup is not None and setup.data_root else None) or default_data_root()
if not data_root:
    st.info("Set the data root in the sidebar (or the GAIA_VIZ_DATA_ROOT environment variable) to a folder "
            "holding cifar10/test, cifar10/train-5k, textures/images and models/*.th to see this report.")
    st.stop()

bench = None
with user_errors("Real-data report: "):
    columns = st.columns(3)
    max_id = columns[0].number_input("ID test images (0 = all 10,000)", 0, 10_000, 1000, step=500,
                                     key=keys.REPORT_MAX_ID)
    max_ood = columns[1].number_input("Images per OOD set (0 = all)", 0, 10_000, 300, step=100,
                                      key=keys.REPORT_MAX_OOD)
    bench = report.open_real_benchmark(data_root, max_id=max_id or None, max_ood=max_ood or None)
if bench is None:
    st.stop()
models = columns[2].multiselect("Models", list(bench.checkpoints), default=list(bench.checkpoints),
                                key=keys.REPORT_MODELS)
st.caption(f"Data root: {escape_markdown(bench.data_root)}. OOD sets found: " + ", ".join(
    f"{name} ({len(images):,})" for name, images in bench.ood_sets.items()))
if not models:
    st.info("No model chosen (or no checkpoint found under models/).")
    st.stop()

device = setup.device if setup is not None else resolve_device("auto")
request = (str(bench.data_root), tuple(models), max_id, max_ood, device)
result = st.session_state.get(keys.REPORT_RESULT)
if st.button("Run the report", type="primary", key="report_run"):
    bar = st.progress(0.0, text="starting")
    with user_errors("Real-data report: "):
        result = (request, report.run_benchmark(bench, models, device=device,
                                                progress=lambda f, m: bar.progress(min(1.0, f), text=m)))
        st.session_state[keys.REPORT_RESULT] = result
    bar.progress(1.0, text="done")
if not result or result[0] != request:
    st.info("Press **Run the report** (every method on each model; finished chunks are cached on disk, "
            "so a second run with the same settings takes seconds).")
    st.stop()

result = result[1]
summary = result.summary
st.caption(f"{summary['date']}; {summary['machine']}. FPR95 = % of OOD images accepted at the threshold that "
           "accepts 95 % of ID images (lower is better); AUROC in % (higher is better).")
st.subheader("Published figures beside ours")
st.markdown(report.anchors_markdown(summary))
st.subheader("Does the paper's claim hold here")
st.markdown(report.claim_markdown(summary["claim"]))
for name, entry in summary["models"].items():
    st.subheader(name)
    cols = st.columns(3)
    cols[0].metric("ID top-1 accuracy", f"{100 * entry['id_accuracy']:.2f} %")
    cols[1].metric("Images scored", f"{entry['images']:,}")
    cols[2].metric("Images / s (all methods)", f"{entry['images_per_second']:.0f}")
    for table, sets in summary["tables"].items():
        if not sets:
            continue
        st.markdown("**The field's OOD sets**" if table == report.FIELD_TABLE else "**Far-OOD extras**")
        st.dataframe(report.metrics_frame(entry, sets), hide_index=True, width="stretch")
        st.markdown("**Reading.** " + report.reading(entry, sets))
    evaluation = result.evaluations[name]
    plots = st.columns(2)
    for column, method in zip(plots, ("gaia_z", "msp")):
        score_sets = {d: evaluation.method_scores(method, d) for d in [evaluation.id_name] + evaluation.ood_names}
        edges, heights = figures.bin_score_sets(score_sets)
        column.plotly_chart(figures.score_histograms(edges, heights, title=METHOD_LABELS[method],
                                                     id_name=evaluation.id_name),
                            width="stretch", key=f"report_hist_{name}_{method}")
    curves = {ood: roc_points(evaluation.method_scores("gaia_z", evaluation.id_name),
                              evaluation.method_scores("gaia_z", ood))[:2] for ood in evaluation.ood_names}
    st.plotly_chart(figures.roc_curves(curves, title=f"{name}: GAIA-Z ROC"), width="stretch",
                    key=f"report_roc_{name}")

downloads = st.columns(2)
downloads[0].download_button("metrics.json", json.dumps(summary, indent=2, default=str),
                             file_name="metrics.json", mime="application/json")
downloads[1].download_button("report.md", report.render_report(summary, f"python -m gaia_viz report --data-root "
                                                               f"{bench.data_root} --out report"),
                             file_name="report.md", mime="text/markdown")
