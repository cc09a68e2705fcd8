"""The Streamlit app on the embedded demo, through streamlit.testing (no browser).

Each page runs on its own (AppTest runs a page file without app.py) with at most
``SAMPLES`` images per set; the run cache lives in a per-module folder and finished
evaluations are kept in the process, so only the first page pays for scoring.
"""

from pathlib import Path

import pytest
import torch
from streamlit.testing.v1 import AppTest

from gaia_viz.app import setup as app_setup
from gaia_viz.demo import DemoCNN

ROOT = Path(__file__).resolve().parents[1]
SAMPLES = 100
TIMEOUT = 120


@pytest.fixture(autouse=True)
def run_cache(tmp_path_factory, monkeypatch):
    monkeypatch.setenv("GAIA_VIZ_CACHE_DIR", str(tmp_path_factory.getbasetemp() / "app-run-cache"))


def open_page(name: str, samples: int = SAMPLES, **state) -> AppTest:
    at = AppTest.from_file(str(ROOT / name), default_timeout=TIMEOUT)
    at.session_state["sb_max_samples"] = samples
    for key, value in state.items():
        at.session_state[key] = value
    return at.run()


def metric_values(at: AppTest) -> dict[str, str]:
    return {m.label: m.value for m in at.metric}


def errors(at: AppTest) -> list[str]:
    return [e.value for e in at.error]


def test_app_opens_on_the_demo_without_set_up():
    at = AppTest.from_file(str(ROOT / "app.py"), default_timeout=TIMEOUT)
    at.session_state["sb_max_samples"] = SAMPLES
    at.run()
    assert not at.exception, at.exception
    assert not at.sidebar.error and at.session_state["setup_errors"] == []
    assert at.sidebar.selectbox(key="sb_model_kind").value == "demo"
    assert at.sidebar.selectbox(key="sb_data_kind").value == "demo"
    assert isinstance(at.session_state["setup"], app_setup.Setup)
    assert at.session_state["setup"].is_demo


def test_evaluate_page_shows_metrics_and_charts():
    at = open_page("pages/2_Evaluate.py")
    assert not at.exception, at.exception
    assert not errors(at)
    table = at.dataframe[0].value
    assert "FPR95 ↓ (% OOD accepted at 95 % TPR)" in table.columns
    assert set(table["Method"]) == {"GAIA-Z", "GAIA-A", "MSP", "Energy"}
    assert "average" in set(table["OOD set"])
    assert table["AUROC ↑ (%)"].between(0, 100).all()
    charts = at.get("plotly_chart")
    assert len(charts) == 4 + 1  # one histogram per method, one ROC figure
    assert metric_values(at)["Images scored"] == f"{SAMPLES * 6:,}"
    evaluation = at.session_state["evaluation"]
    assert evaluation.methods == ["gaia_z", "gaia_a", "msp", "energy"]
    assert evaluation.config.max_samples == SAMPLES and evaluation.config.model_name == "demo"

    at.multiselect(key="evaluate_plot_methods").set_value(["gaia_z"]).run()
    assert len(at.get("plotly_chart")) == 1 + 1


def test_evaluate_runs_other_methods_on_the_button():
    at = open_page("pages/2_Evaluate.py")
    at.multiselect(key="evaluate_methods").set_value(["gaia_z", "energy", "knn"]).run()
    assert not at.get("plotly_chart")  # a non-default choice waits for the button
    at.button(key="evaluate_run").click().run()
    assert not at.exception, at.exception
    assert set(at.dataframe[0].value["Method"]) == {"GAIA-Z", "Energy", "KNN"}


def test_no_automatic_run_after_a_cancel():
    at = open_page("pages/2_Evaluate.py", samples=37, cancel_requested=True)
    assert not at.exception
    assert not at.get("plotly_chart")
    assert any("Run evaluation" in i.value for i in at.info)


def test_threshold_slider_changes_the_numbers():
    at = open_page("pages/3_Tune_threshold.py")
    assert not at.exception, at.exception
    assert len(at.get("plotly_chart")) == 2  # histogram with the threshold line, confusion matrix
    before = metric_values(at)
    assert before["TPR: ID accepted"] == "95.0 %"
    assert at.session_state["threshold"]["method"] == "gaia_z"

    at.slider(key="tune_tpr").set_value(0.8).run()
    after = metric_values(at)
    assert after["TPR: ID accepted"] == "80.0 %"
    assert after != before
    assert at.session_state["threshold"]["tpr_at_id"] == pytest.approx(0.8)

    at.radio(key="tune_mode").set_value("score").run()
    slider = next(s for s in at.slider if s.key.startswith("tune_score::"))
    slider.set_value(slider.max).run()
    at_max = metric_values(at)
    assert at_max["TPR: ID accepted"] == "100.0 %" and at_max["OOD caught (recall)"] == "0.0 %"
    assert len(at.get("image")) == 2 * 8  # the two galleries of hardest cases


def test_threshold_page_other_method_and_set():
    at = open_page("pages/3_Tune_threshold.py")
    first = metric_values(at)
    at.selectbox(key="tune_method").set_value("energy").run()
    at.selectbox(key="tune_ood_set").set_value("noise").run()
    assert not at.exception
    assert metric_values(at) != first
    assert at.session_state["threshold"]["ood_set"] == "noise"


def test_layer_subset_changes_the_metrics():
    at = open_page("pages/4_Channels_and_layers.py")
    assert not at.exception, at.exception
    # per method: 3 heatmaps; plus the per-layer AUROC bars
    assert len(at.get("plotly_chart")) == 2 * 3 + 1
    before = at.dataframe[0].value  # chosen layers (left), all layers (right)
    subset = at.multiselect(key="channels_subset_gaia_z")
    assert subset.value == ["bn1", "bn2", "bn3"]
    subset.set_value(["bn1"]).run()
    assert not at.exception
    after = at.dataframe[0].value
    z_rows = after["Method"] == "GAIA-Z"
    assert not after[z_rows].equals(before[before["Method"] == "GAIA-Z"])
    assert at.session_state["layer_subset"]["zero"] == ["bn1"]
    assert "1 layers" in " ".join(m.label for m in at.metric)
    assert after[~z_rows].equals(before[before["Method"] != "GAIA-Z"])  # GAIA-A keeps all its layers
    assert at.dataframe[1].value[z_rows].equals(before[before["Method"] == "GAIA-Z"])  # full set unchanged

    at.multiselect(key="channels_subset_gaia_z").set_value([]).run()  # nothing chosen: a message
    assert not at.exception
    assert any("no layer selected" in e for e in errors(at))


def test_missing_folder_shows_an_error_not_a_traceback():
    at = open_page("pages/2_Evaluate.py")
    at.sidebar.selectbox(key="sb_data_kind").set_value("custom").run()
    at.sidebar.text_input(key="sb_custom_id").input("folder:/no/such/folder").run()
    at.sidebar.text_area(key="sb_custom_ood").input("faces = demo:faces").run()
    assert not at.exception, at.exception
    assert any("/no/such/folder does not exist" in e for e in errors(at))
    assert not at.get("plotly_chart")


def test_checkpoint_of_another_architecture_shows_an_error(tmp_path):
    checkpoint = tmp_path / "demo_weights.pt"
    torch.save(DemoCNN().state_dict(), checkpoint)
    at = open_page("pages/2_Evaluate.py")
    at.sidebar.selectbox(key="sb_model_kind").set_value("cifar").run()
    at.sidebar.text_input(key="sb_checkpoint_path::cifar").input(str(checkpoint)).run()
    assert not at.exception, at.exception
    assert any("does not fit" in e for e in errors(at))


@pytest.mark.parametrize("kind, widget, value, message", [
    ("torchvision", "sb_tv_name", "resnet_nope", "unknown model"),
    ("gaia", None, None, "no built-in weights"),
    ("cifar", "sb_checkpoint_path::cifar", "/no/such/weights.pth", "does not exist"),
])
def test_bad_models_show_errors(kind, widget, value, message):
    at = open_page("pages/2_Evaluate.py")
    at.sidebar.selectbox(key="sb_model_kind").set_value(kind).run()
    if widget:
        at.sidebar.text_input(key=widget).input(value).run()
    assert not at.exception, at.exception
    assert any(message in e for e in errors(at)), errors(at)


def test_pages_share_the_documented_session_keys():
    at = open_page("pages/3_Tune_threshold.py")
    threshold = at.session_state["threshold"]
    assert set(threshold) == {"method", "ood_set", "threshold", "tpr_at_id"}
    assert at.session_state["evaluation_setup_key"] == at.session_state["setup"].key()


def test_user_errors_show_the_message_and_the_page_goes_on():
    def script():
        import streamlit as st

        from gaia_viz.app.setup import user_errors
        from gaia_viz.errors import MetricInputError

        with user_errors("GAIA-A: "):
            raise MetricInputError("3 of 100 scores are not finite")
        st.write("the rest of the page")

    at = AppTest.from_function(script).run()
    assert not at.exception
    assert errors(at) == ["GAIA-A: 3 of 100 scores are not finite"]
    assert at.markdown[0].value == "the rest of the page"
