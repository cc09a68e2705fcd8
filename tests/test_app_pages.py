"""The Streamlit app on the embedded demo, through streamlit.testing (no browser).

Every test opens ``app.py`` and goes to a page with ``switch_page``, as a user's link would.
AppTest resets Streamlit's page registry before every run, so each run is served like a
freshly started server's first request: the way ``/Evaluate`` reached a page without the app
shell (issue: links opened pages without ``app.py``). Evaluations run in background jobs
(:mod:`gaia_viz.app.jobs`); ``settle`` waits for them and reruns, as the page's own status
fragment does in a browser. Finished evaluations stay in the process-wide score store, so
only the first test pays for scoring the demo.
"""

import base64
import json
from pathlib import Path
from urllib.parse import parse_qs

import numpy as np
import pandas as pd
import pytest
import torch
from streamlit.testing.v1 import AppTest

from gaia_viz.app import jobs
from gaia_viz.app.links import selection_from_query, view_query
from gaia_viz.app.selection import Selection
from gaia_viz.app.setup import Setup
from gaia_viz.demo import DemoCNN
from gaia_viz.sweep import ALL_METHODS, DEFAULT_METHODS
from apptest_support import PAGES, SAMPLES, TIMEOUT, go, open_app, settle
from support import ROOT

pytestmark = pytest.mark.usefixtures("app_run_cache")


def follow(at: AppTest, link) -> AppTest:
    """Click a page link as the browser does: open the link's page with the link's query
    string, sending the widgets' state along (so the sidebar keeps what it holds)."""
    query = parse_qs(link.proto.query_string, keep_blank_values=True)
    at.query_params.clear()
    at.query_params.update({key: values[-1] for key, values in query.items()})
    at.switch_page(next(path for path in PAGES.values()
                        if Path(path).stem.split("_", 1)[1] == link.proto.page or (not link.proto.page and path == PAGES["home"])))
    return settle(at.run())


def links_to(at: AppTest, page: str) -> list:
    """The page links of this run's main panel that open ``page`` (a key of :data:`PAGES`)."""
    return [link for link in at.main.get("page_link") if link.proto.page == Path(PAGES[page]).stem.split("_", 1)[1]]


def widget(at: AppTest, kind: str, prefix: str):
    """The widget of ``kind`` whose key starts with ``prefix`` (set-up dependent keys carry the
    set-up's identity)."""
    return next(w for w in getattr(at, kind) if w.key and w.key.startswith(prefix))


def values(array) -> np.ndarray:
    """A number array of a figure's JSON: a list, or Plotly's base64 typed array."""
    if isinstance(array, dict):
        return np.frombuffer(base64.b64decode(array["bdata"]), dtype=array["dtype"])
    return np.asarray(array)


def metric_values(at: AppTest) -> dict[str, str]:
    return {m.label: m.value for m in at.metric}


def errors(at: AppTest) -> list[str]:
    return [e.value for e in at.error]


def scores_csv(at: AppTest) -> pd.DataFrame:
    """What the Evaluate page's scores.csv button holds: the stored evaluation, shown methods."""
    assert any(d.proto.label == "scores.csv" for d in at.get("download_button"))
    evaluation = jobs.STORE.get(at.session_state["setup"].score_key)
    shown = [m for m in at.session_state["selection"].methods if m in evaluation.methods]
    return evaluation.select(shown).scores


# --------------------------------------------------------------------------- pages


def test_app_opens_on_the_home_page_with_the_demo():
    at = open_app()
    assert not at.exception, at.exception
    assert not at.sidebar.error and at.session_state["setup_errors"] == []
    assert at.title[0].value.startswith("gaia-viz")
    assert "GAIA" in at.markdown[0].value and "exactly zero" in at.markdown[0].value
    assert len(at.get("plotly_chart")) == 1  # the digit vs face figure
    links = [link.proto.label for link in at.main.get("page_link")]
    assert links == ["Learn how GAIA works", "Inspect an image", "Tune a threshold"]
    assert at.sidebar.selectbox(key="sb_model_kind").value == "demo"
    assert isinstance(at.session_state["setup"], Setup) and at.session_state["setup"].is_demo


def test_evaluate_page_shows_metrics_and_charts():
    at = open_app("evaluate")
    assert not at.exception, at.exception
    assert not errors(at)
    tables = [m.value for m in at.markdown if m.value.startswith("| Method |")]
    assert len(tables) == 2  # FPR95 and AUROC as the paper's method x OOD-set grids
    for grid in tables:
        header, _, *rows = grid.splitlines()
        assert header.endswith("| Average |") and "faces" in header
        assert len(rows) == 4 and {r.split(" | ")[0].strip("| ") for r in rows} == {"GAIA-Z", "GAIA-A", "MSP", "Energy"}
        columns = len(header.split(" | ")) - 1
        bold = [sum("**" in r.split(" | ")[c] for r in rows) for c in range(1, columns + 1)]
        assert all(count >= 1 for count in bold), grid  # the best of every column in bold
    table = at.dataframe[0].value
    assert "FPR95 ↓ (% OOD accepted at 95 % TPR)" in table.columns
    assert set(table["Method"]) == {"GAIA-Z", "GAIA-A", "MSP", "Energy"}
    assert "average" in set(table["OOD set"])
    assert table["AUROC ↑ (%)"].between(0, 100).all()
    charts = {chart.key: chart.proto.spec for chart in at.get("plotly_chart")}
    # one histogram per method (titled with the method, one bar trace per data set), one ROC figure
    assert set(charts) == {f"evaluate_hist_{m}" for m in DEFAULT_METHODS} | {"evaluate_roc"}
    for method, label in zip(DEFAULT_METHODS, ("GAIA-Z", "GAIA-A", "MSP", "Energy")):
        assert f'"text":"{label}"' in charts[f"evaluate_hist_{method}"]
        assert charts[f"evaluate_hist_{method}"].count('"type":"bar"') == 6
    assert charts["evaluate_roc"].count('"type":"scatter"') >= 4
    assert metric_values(at)["Images scored"] == f"{SAMPLES * 6:,}"
    evaluation = jobs.STORE.get(at.session_state["setup"].score_key)
    assert set(DEFAULT_METHODS) <= set(evaluation.methods)
    assert evaluation.config.max_samples == SAMPLES and evaluation.config.model_name == "demo"

    roc = json.loads(charts["evaluate_roc"])
    assert any(t["name"].startswith("GAIA-Z · AUROC ") for t in roc["data"])  # AUROC in the legend
    msp_axis = json.loads(charts["evaluate_hist_msp"])["layout"]["xaxis"]["title"]["text"]
    assert "negated" in msp_axis and "higher = more OOD" in msp_axis

    at.multiselect(key="w_methods").set_value(["gaia_z"])
    at.run()
    assert {chart.key for chart in at.get("plotly_chart")} == {"evaluate_hist_gaia_z", "evaluate_roc"}


def test_histograms_one_set_at_a_time_on_a_log_count_scale_and_bootstrap_intervals():
    at = open_app("evaluate")
    widget(at, "selectbox", "w_ood::").set_value("letters").run()
    at.radio(key="w_evaluate_hist_sets").set_value("one").run()
    at.radio(key="w_evaluate_hist_scale").set_value("log").run()
    assert not at.exception, at.exception
    spec = json.loads(next(c for c in at.get("plotly_chart") if c.key == "evaluate_hist_gaia_z").proto.spec)
    bars = [t for t in spec["data"] if t["type"] == "bar"]
    assert [t["name"] for t in bars] == ["digits (ID)", "letters"]
    assert spec["layout"]["yaxis"]["type"] == "log" and values(bars[0]["y"]).sum() == SAMPLES  # counts
    assert at.session_state["selection"].histogram_sets == "one"
    assert at.query_params.get("hist") == "one" and at.query_params.get("hist_scale") == "log"
    at.checkbox(key="w_evaluate_bootstrap").check().run()
    assert not at.exception, at.exception
    intervals = at.dataframe[1].value  # after the long metrics table
    assert len(intervals) == 4 * 5 and "AUROC (%) [95 % CI]" in intervals.columns
    low, high = (float(v) for v in intervals["AUROC (%) [95 % CI]"].iloc[0].split("[")[1].rstrip("]").split(","))
    point = float(intervals["AUROC (%) [95 % CI]"].iloc[0].split()[0])
    assert low <= point <= high


def test_every_chosen_method_is_plotted_after_its_run():
    """Was: all 10 methods chosen and run, 10 chips shown but only 4 histograms and ROC curves."""
    at = open_app("evaluate")
    at.multiselect(key="w_methods").set_value(list(ALL_METHODS))
    at = settle(at.run())  # the demo scores what is chosen at once
    assert not at.exception, at.exception
    histograms = [c for c in at.get("plotly_chart") if c.key.startswith("evaluate_hist_")]
    assert len(histograms) == len(ALL_METHODS)
    roc = next(c for c in at.get("plotly_chart") if c.key == "evaluate_roc")
    assert roc.proto.spec.count('"type":"scatter"') >= len(ALL_METHODS)
    assert len(set(at.dataframe[0].value["Method"])) == len(ALL_METHODS)


def test_choices_and_scores_survive_page_switches():
    """Was: Tune and back reset the methods to the 4 defaults, showed the old evaluation, wrote a
    4-method scores.csv, and the TPR slider went back from 0.75 to 0.95."""
    five = ["gaia_z", "gaia_a", "msp", "energy", "maxlogit"]
    at = open_app("evaluate")
    at.multiselect(key="w_methods").set_value(five)
    at = settle(at.run())  # the demo scores what is chosen at once
    assert set(at.dataframe[0].value["Method"]) == {"GAIA-Z", "GAIA-A", "MSP", "Energy", "MaxLogit"}
    at = go(at, "tune")
    at.slider(key="w_tune_tpr").set_value(0.75)
    at.run()
    assert metric_values(at)["TPR: ID accepted"] == "75.0 %"
    at = go(at, "evaluate")
    assert at.multiselect(key="w_methods").value == five
    assert set(at.dataframe[0].value["Method"]) == {"GAIA-Z", "GAIA-A", "MSP", "Energy", "MaxLogit"}
    assert [c for c in scores_csv(at).columns if c in ALL_METHODS] == five
    at = go(at, "tune")
    assert at.slider(key="w_tune_tpr").value == pytest.approx(0.75)
    assert metric_values(at)["TPR: ID accepted"] == "75.0 %"


def test_adding_a_method_scores_only_that_method(monkeypatch):
    at = open_app("evaluate", samples=43)  # a set-up of its own: the defaults get scored here
    from gaia_viz.sweep import scoring

    computed = []
    real = scoring.score_range
    monkeypatch.setattr(scoring, "score_range",
                        lambda m, d, s, e, detectors, *a, **k: computed.append(sorted(detectors)) or real(
                            m, d, s, e, detectors, *a, **k))
    at.multiselect(key="w_methods").set_value([*DEFAULT_METHODS, "maxlogit"])
    at = settle(at.run())  # the demo scores what is chosen at once
    assert computed and all(methods == ["maxlogit"] for methods in computed)
    at.multiselect(key="w_methods").set_value(["msp"])
    at.run()
    assert set(at.dataframe[0].value["Method"]) == {"MSP"}
    evaluation = jobs.STORE.get(at.session_state["setup"].score_key)
    assert {"maxlogit", *DEFAULT_METHODS} <= set(evaluation.methods)  # hidden, not dropped


def test_a_run_keeps_going_when_the_user_opens_another_page():
    """Was: leaving a page while an evaluation ran cancelled it silently."""
    at = AppTest.from_file(str(ROOT / "app.py"), default_timeout=TIMEOUT)
    at.session_state["sb_max_samples"] = 37  # a set-up nothing else scores
    at.run()
    at.switch_page(PAGES["evaluate"])
    at.run()
    job = jobs.JOBS.job(at.session_state["setup"].score_key)
    assert job is not None
    at.switch_page(PAGES["home"])
    at.run()
    progress = at.get("progress")
    assert job.running is False or progress, "a running job shows its progress on every page"
    assert job.wait(TIMEOUT) and job.status == "done"
    at = go(at, "evaluate")
    assert metric_values(at)["Images scored"] == f"{37 * 6:,}"


def test_cancel_stops_the_run_and_no_automatic_restart(monkeypatch):
    from gaia_viz.sweep import scoring

    real = scoring.score_range
    gate = __import__("threading").Event()

    def slow(*args, **kwargs):
        gate.wait(10)
        return real(*args, **kwargs)

    monkeypatch.setattr(scoring, "score_range", slow)
    at = AppTest.from_file(str(ROOT / "app.py"), default_timeout=TIMEOUT)
    at.session_state["sb_max_samples"] = 41
    at.run()
    at.switch_page(PAGES["evaluate"])
    at.run()
    job = jobs.JOBS.job(at.session_state["setup"].score_key)
    cancel = next(b for b in at.button if b.key and b.key.startswith("cancel::"))
    cancel.click()
    at.run()
    gate.set()
    assert job.wait(TIMEOUT) and job.status == "cancelled"
    at.run()
    assert not at.exception
    assert any("cancelled" in w.value for w in at.warning)
    assert jobs.JOBS.job(at.session_state["setup"].score_key) is job  # not restarted on its own
    assert any("Run evaluation" in i.value for i in at.info)


def test_batch_size_device_and_data_root_keep_the_scores(tmp_path):
    """Was: typing a data root or changing the batch size rescored the demo from scratch."""
    at = open_app("evaluate")
    key = at.session_state["setup"].score_key
    before = metric_values(at)["Images scored"]
    at.sidebar.number_input(key="sb_batch_size").set_value(7)
    at.run()
    at.sidebar.text_input(key="sb_data_root").input(str(tmp_path))
    at.run()
    assert at.session_state["setup"].score_key == key
    assert jobs.JOBS.job(key) is None or not jobs.JOBS.job(key).running
    assert metric_values(at)["Images scored"] == before and at.dataframe


def test_threshold_slider_changes_the_numbers():
    at = open_app("tune")
    assert not at.exception, at.exception
    charts = {chart.key: chart.proto.spec for chart in at.get("plotly_chart")}
    assert set(charts) == {"tune_histogram"}
    assert "flagged OOD" in charts["tune_histogram"]
    decisions = at.table[0].value  # the confusion matrix, a table (cheap to redraw on every step)
    assert list(decisions.columns) == ["accepted as ID", "flagged OOD"] and len(decisions) == 2
    before = metric_values(at)
    assert before["TPR: ID accepted"] == "95.0 %"
    assert at.session_state["selection"].method == "gaia_z"

    at.slider(key="w_tune_tpr").set_value(0.8).run()
    after = metric_values(at)
    assert after["TPR: ID accepted"] == "80.0 %"
    assert after != before
    assert at.session_state["selection"].tpr == pytest.approx(0.8)

    at.radio(key="w_tune_mode").set_value("score").run()
    slider = widget(at, "slider", "w_tune_score::")
    slider.set_value(slider.max).run()
    at_max = metric_values(at)
    assert at_max["TPR: ID accepted"] == "100.0 %" and at_max["OOD caught (recall)"] == "0.0 %"
    assert len(at.get("image")) == 2 * 8  # the two galleries of hardest cases


def test_hardest_cases_show_what_the_model_saw_and_open_on_inspect():
    at = open_app("tune")
    widget(at, "selectbox", "w_ood::").set_value("faces").run()
    images = [img for element in at.get("image") for img in element.proto.imgs]
    assert len(images) == 16 and all(img.caption.startswith("#") for img in images)
    first = links_to(at, "inspect")[0]
    set_name, index = parse_qs(first.proto.query_string)["image"][0].rsplit(":", 1)
    assert set_name == "faces"
    assert any("generated in memory" in c.value for c in at.caption)  # the demo sets have no files
    at = follow(at, first)
    assert at.title[0].value == "Inspect one image"
    assert at.session_state["selection"].image == ("faces", int(index))
    captions = [img.caption for element in at.get("image") for img in element.proto.imgs]
    assert f"faces #{index}, as the model sees it" in captions


def test_threshold_page_other_method_and_set():
    at = open_app("tune")
    first = metric_values(at)
    widget(at, "selectbox", "w_tune_method::").set_value("energy").run()
    widget(at, "selectbox", "w_ood::").set_value("noise").run()
    assert not at.exception
    assert metric_values(at) != first
    assert at.session_state["selection"].ood_set == "noise"
    assert at.session_state["selection"].method == "energy"


def test_layer_subset_changes_the_metrics():
    at = open_app("channels")
    assert not at.exception, at.exception
    # per method: 3 heatmaps (ID, OOD, difference); plus the per-layer AUROC bars
    charts = {chart.key: chart.proto.spec for chart in at.get("plotly_chart")}
    assert set(charts) == {f"channels_{m}_{part}" for m in ("gaia_z", "gaia_a") for part in ("id", "ood", "diff")} \
        | {"channels_layer_auroc"}
    assert all('"type":"heatmap"' in spec for key, spec in charts.items() if key != "channels_layer_auroc")
    assert charts["channels_layer_auroc"].count('"type":"bar"') == 2
    before = at.dataframe[0].value  # chosen layers (left), all layers (right)
    z_picker = next(m for m in at.multiselect if m.key.endswith("::gaia_z"))
    assert z_picker.value == ["bn1", "bn2", "bn3"]
    z_picker.set_value(["bn1"]).run()
    assert not at.exception
    after = at.dataframe[0].value
    z_rows = after["Method"] == "GAIA-Z"
    assert not after[z_rows].equals(before[before["Method"] == "GAIA-Z"])
    assert at.session_state["selection"].zero_layers == ("bn1",)
    assert "1 layers" in " ".join(m.label for m in at.metric)
    assert after[~z_rows].equals(before[before["Method"] != "GAIA-Z"])  # GAIA-A keeps all its layers
    assert at.dataframe[1].value[z_rows].equals(before[before["Method"] == "GAIA-Z"])  # full set unchanged

    from streamlit.proto.Metric_pb2 import Metric

    colours = {m.label: m.proto.color for m in at.metric}
    gaia_a = next(label for label in colours if label.startswith("GAIA-A AUROC"))
    assert "+0.00 pts" in next(m.proto.delta for m in at.metric if m.label == gaia_a)
    assert colours[gaia_a] == Metric.MetricColor.GRAY  # no change is not a green improvement
    assert next(m.proto.direction for m in at.metric if m.label == gaia_a) == Metric.MetricDirection.NONE

    next(m for m in at.multiselect if m.key.endswith("::gaia_z")).set_value([]).run()  # nothing chosen
    assert not at.exception
    assert any("no layer selected" in e for e in errors(at))


def test_the_layer_subset_carries_to_tune_inspect_and_the_export():
    """Was: the subset chosen on Channels and layers was used nowhere else."""
    at = open_app("channels")
    next(m for m in at.multiselect if m.key.endswith("::gaia_z")).set_value(["bn2", "bn3"]).run()
    at = go(at, "tune")
    captions = " ".join(c.value for c in at.caption)
    assert "GAIA-Z on 2 of 3 layers: bn2, bn3" in captions
    import json

    exported = json.loads(next(c for c in at.code if c.language == "json").value)
    assert exported["layers"]["zero"] == ["bn2", "bn3"] and exported["method"] == "gaia_z"
    from gaia_viz.app import analysis

    evaluation = jobs.STORE.get(at.session_state["setup"].score_key)
    subset_id = analysis.subset_scores(evaluation, evaluation.id_name, "gaia_z", ["bn2", "bn3"])
    from gaia_viz.metrics import threshold_at_tpr

    assert exported["threshold"] == pytest.approx(threshold_at_tpr(subset_id, 0.95))
    at = go(at, "inspect")
    assert "GAIA-Z on 2 of 3 layers: bn2, bn3" in " ".join(c.value for c in at.caption)
    at = go(at, "evaluate")
    assert "GAIA-Z on 2 of 3 layers: bn2, bn3" in " ".join(c.value for c in at.caption)


def test_inspect_follows_a_set_up_change_without_stale_choices():
    """Was: after a set-up change the radio named a set while the old upload branch was drawn,
    and the attribution selectbox disagreed with the heading."""
    at = open_app("inspect")
    at.selectbox(key="w_inspect_attribution").set_value("integrated_gradients").run()
    widget(at, "radio", "w_inspect_source::").set_value("upload").run()
    at.sidebar.multiselect(key="sb_demo_ood").set_value(["faces", "noise"])
    at = settle(at.run())
    assert not at.exception, at.exception
    source = widget(at, "radio", "w_inspect_source::")
    assert source.key.endswith(at.session_state["setup"].score_key)
    assert source.value == "upload" and not errors(at)
    source.set_value("noise").run()
    captions = [img.caption for element in at.get("image") for img in element.proto.imgs]
    assert "noise #0, as the model sees it" in captions
    assert at.selectbox(key="w_inspect_attribution").value == "integrated_gradients"
    assert any("**Integrated Gradients**" in c.value for c in at.caption)


def test_missing_folder_shows_an_error_not_a_traceback():
    at = open_app("evaluate")
    at.sidebar.selectbox(key="sb_data_kind").set_value("custom").run()
    at.sidebar.text_input(key="sb_custom_id").input("folder:/no/such/folder").run()
    at.sidebar.text_area(key="sb_custom_ood").input("faces = demo:faces").run()
    assert not at.exception, at.exception
    assert any("/no/such/folder does not exist" in e for e in errors(at))
    assert any("/no/such/folder does not exist" in e.value for e in at.sidebar.error)
    assert not at.get("plotly_chart")


def test_set_up_errors_are_in_the_main_panel_with_the_control_that_fixes_them(tmp_path, monkeypatch):
    """Was: 'weights not cached' appeared 1,000 px down the sidebar while the page only said
    'Choose a model and data in the sidebar to start'."""
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))  # an empty hub cache
    at = open_app("evaluate")
    at.sidebar.selectbox(key="sb_model_kind").set_value("torchvision").run()
    main_errors = [e.value for e in at.main.error]
    assert any("not cached" in e for e in main_errors), main_errors
    assert any("not cached" in e.value for e in at.sidebar.error)
    links = [m.value for m in at.main.markdown if m.value.startswith("Link: [")]
    assert links and "%5C" not in links[0] and "](https://download.pytorch.org/models/" in links[0]
    fix = next(b for b in at.main.button if b.proto.label == "Use random weights")
    fix.click()
    at.run()
    assert not at.exception, at.exception
    assert at.sidebar.checkbox(key="sb_random_weights::torchvision").value is True
    assert not [e for e in at.main.error if "not cached" in e.value]


def test_checkpoint_of_another_architecture_shows_an_error(tmp_path):
    checkpoint = tmp_path / "demo_weights.pt"
    torch.save(DemoCNN().state_dict(), checkpoint)
    at = open_app("evaluate")
    at.sidebar.selectbox(key="sb_model_kind").set_value("cifar").run()
    at.sidebar.text_input(key="sb_checkpoint_path::cifar").input(str(checkpoint)).run()
    assert not at.exception, at.exception
    assert any("does not fit" in e for e in errors(at))


@pytest.mark.parametrize("kind, widget_key, value, message", [
    ("torchvision", "sb_tv_name", "resnet_nope", "unknown model"),
    ("gaia", None, None, "no built-in weights"),
    ("cifar", "sb_checkpoint_path::cifar", "/no/such/weights.pth", "does not exist"),
])
def test_bad_models_show_errors(kind, widget_key, value, message):
    at = open_app("evaluate")
    at.sidebar.selectbox(key="sb_model_kind").set_value(kind).run()
    if widget_key:
        at.sidebar.text_input(key=widget_key).input(value).run()
    assert not at.exception, at.exception
    assert any(message in e for e in errors(at)), errors(at)


def test_user_errors_show_the_message_and_the_page_goes_on():
    def script():
        import streamlit as st

        from gaia_viz.app.page import user_errors
        from gaia_viz.errors import MetricInputError

        with user_errors("GAIA-A: "):
            raise MetricInputError("3 of 100 scores are not finite")
        st.write("the rest of the page")

    at = AppTest.from_function(script).run()
    assert not at.exception
    assert errors(at) == ["GAIA-A: 3 of 100 scores are not finite"]
    assert at.markdown[0].value == "the rest of the page"


# --------------------------------------------------------------------------- links


def test_a_link_straight_to_a_page_runs_the_whole_app():
    """Was: a link to /Evaluate as a fresh server's first request ran the page without app.py
    (no app navigation, no page config, no start-up). AppTest serves every run that way."""
    at = open_app("evaluate", query={"methods": "gaia_z,msp"})
    assert not at.exception, at.exception
    assert at.title[0].value == "Evaluate"
    assert at.sidebar.selectbox(key="sb_model_kind").value == "demo"  # the app's own sidebar
    assert at.query_params.get("methods") == "gaia_z,msp"  # the app shell writes the view back


def test_evaluate_link_scores_and_plots_its_five_methods():
    five = "gaia_z,gaia_a,msp,energy,maxlogit"
    at = open_app("evaluate", query={"methods": five})
    assert not at.exception, at.exception
    assert at.multiselect(key="w_methods").value == five.split(",")
    assert len([c for c in at.get("plotly_chart") if c.key.startswith("evaluate_hist_")]) == 5
    assert len(at.dataframe[0].value["Method"].unique()) == 5


def test_tune_link_thresholds_its_layers_at_its_tpr_and_exports_exactly_that():
    at = open_app("tune", query={"method": "gaia_z", "layers": "bn2,bn3", "tpr": "0.9"})
    assert not at.exception, at.exception
    assert metric_values(at)["TPR: ID accepted"] == "90.0 %"
    import json

    exported = json.loads(next(c for c in at.code if c.language == "json").value)
    assert exported["method"] == "gaia_z" and exported["layers"]["zero"] == ["bn2", "bn3"]
    assert exported["tpr_at_id"] == pytest.approx(0.9, abs=0.01)
    assert at.slider(key="w_tune_tpr").value == pytest.approx(0.9)


def test_bad_link_values_warn_and_fall_back():
    at = open_app("tune", query={"method": "nope", "layers": "bn2,zzz", "tpr": "7", "methods": "gaia_z,bogus"})
    assert not at.exception, at.exception
    warnings = " ".join(w.value for w in at.warning)
    for name in ("nope", "zzz", "7", "bogus"):
        assert name in warnings, (name, warnings)
    assert metric_values(at)["TPR: ID accepted"] == "95.0 %"
    assert at.session_state["selection"].method == "gaia_z"


def test_widget_to_url_to_new_session_restores_the_view():
    at = open_app("channels")
    next(m for m in at.multiselect if m.key.endswith("::gaia_z")).set_value(["bn1", "bn3"]).run()
    at = go(at, "tune")
    at.slider(key="w_tune_tpr").set_value(0.85).run()
    widget(at, "selectbox", "w_ood::").set_value("letters").run()
    url = dict(at.query_params)
    assert url["layers"] == "bn1,bn3" and url["tpr"] == "0.85" and url["ood"] == "letters"
    fresh = open_app("tune", query=url)
    assert fresh.session_state["selection"] == at.session_state["selection"]
    assert metric_values(fresh) == metric_values(at)


def test_selection_query_round_trip_and_refusals():
    chosen = Selection(methods=("gaia_z", "knn"), zero_layers=("bn1",), method="knn", tpr=0.8,
                       ood_set="faces", image=("noise", 4))
    again, warnings = selection_from_query(view_query(chosen), list(ALL_METHODS))
    assert again == chosen and warnings == []
    views = Selection(histogram_sets="one", histogram_scale="log", attribution="integrated_gradients", target=3,
                      attribution_view="abs", map_color="agree", map_compare="energy")
    views = (views.with_param("integrated_gradients", "n_steps", 64).with_param("integrated_gradients", "baseline", "blur")
             .with_param("smoothgrad", "noise_level", 0.123456789).with_param("grad_cam", "layer", "conv2.1"))
    again, warnings = selection_from_query(view_query(views), list(ALL_METHODS))
    assert again == views and warnings == []
    assert again.params_for("integrated_gradients") == {"n_steps": 64, "baseline": "blur"}
    assert views.with_param("integrated_gradients", "n_steps", None).params_for("integrated_gradients") == {"baseline": "blur"}
    _, warnings = selection_from_query({"hist": "some", "hist_scale": "sqrt", "attr_view": "x", "target": "-1",
                                        "attribution": "lime", "map_color": "nope", "map_compare": "nope",
                                        "attr_params": "integrated_gradients.n_steps:1,foo.bar:2,smoothgrad.nt_samples:4"},
                                       list(ALL_METHODS))
    assert len(warnings) == 9  # each bad value once; the good nt_samples is kept
    assert selection_from_query({"attr_params": "smoothgrad.nt_samples:4"}, list(ALL_METHODS))[0].attribution_params \
        == (("smoothgrad.nt_samples", 4),)
    score = Selection(threshold_mode="score", threshold=1.25)
    assert selection_from_query(view_query(score), list(ALL_METHODS))[0] == score
    _, warnings = selection_from_query({"tpr": "abc", "image": "noindex", "threshold": "nan"}, list(ALL_METHODS))
    assert len(warnings) == 2  # tpr and image; a threshold is ignored when a tpr is given


# --------------------------------------------------------------------------- data map


def test_data_map_plots_every_image_with_its_decision_and_opens_the_picked_one():
    at = open_app("map", query={"image": "faces:3", "map_color": "agree", "map_compare": "msp"})
    assert not at.exception, at.exception
    assert not errors(at)
    (chart,) = [c for c in at.get("plotly_chart") if c.key == "w_data_map"]
    spec = json.loads(chart.proto.spec)
    markers = [t for t in spec["data"] if t.get("customdata")]
    assert sum(len(t["customdata"]) for t in markers) == SAMPLES * 6  # every scored image, once
    categories = {t["name"].split(" (")[0] for t in markers}
    assert categories <= {"both accept", "both flag", "only GAIA-Z flags", "only MSP flags"} and len(categories) >= 2
    symbols = {s for t in markers for s in t["marker"]["symbol"]}
    assert symbols <= {"circle", "x"} and len(symbols) == 2
    assert spec["layout"]["xaxis"]["title"]["text"].startswith("PC 1 (")
    assert "faces #3" in " ".join(m.value for m in at.markdown)
    from gaia_viz.figures.data_map import picked_image

    faces_point = next(p for t in markers for p in t["customdata"] if p[0] == "faces" and p[1] == 3)
    assert picked_image({"points": [{"customdata": faces_point}]}) == ("faces", 3)
    at = settle(widget(at, "selectbox", "w_map_color::").set_value("gaia_a").run())  # GAIA-A may be scored now
    assert not at.exception, at.exception
    score_spec = json.loads(next(c for c in at.get("plotly_chart") if c.key == "w_data_map").proto.spec)
    assert "colorbar" in score_spec["data"][0]["marker"]
    (link,) = [link for link in links_to(at, "inspect") if link.proto.label == "Open on Inspect"]
    at = follow(at, link)
    assert at.title[0].value == "Inspect one image"
    captions = [img.caption for element in at.get("image") for img in element.proto.imgs]
    assert "faces #3, as the model sees it" in captions


def test_gaia_z_without_exact_zeros_is_said_next_to_its_numbers_on_every_page():
    """A smooth model (timm's SiLU test EfficientNet, random weights): every page that shows
    GAIA-Z numbers says, next to them, that its gradients hold no exact zeros."""
    jobs.STORE.clear()  # test_app_views scores this set-up too: start from its Run button either way
    at = open_app("evaluate", samples=12, sb_model_kind="timm", sb_timm_name="test_efficientnet",
                  **{"sb_random_weights::timm": True})
    at.button[0].click().run()
    at = settle(at)
    for page in ("evaluate", "tune", "channels", "inspect", "map"):
        at = go(at, page)
        assert not at.exception, (page, at.exception)
        notes = [w.value for w in at.warning if "almost no exact zeros" in w.value]
        assert len(notes) == 1 and "SiLU" in notes[0], (page, [w.value for w in at.warning])


def test_pca_2d_is_deterministic_and_keeps_the_main_direction():
    from gaia_viz.embedding import pca_2d
    from gaia_viz.errors import MetricInputError

    rng = np.random.default_rng(0)
    features = np.outer(rng.normal(size=200), [3.0, 0.0, 4.0]) + 0.01 * rng.normal(size=(200, 3))
    first, again = pca_2d(features), pca_2d(features)
    np.testing.assert_array_equal(first.coords, again.coords)
    np.testing.assert_allclose(np.abs(first.components[0]), [0.6, 0.0, 0.8], atol=1e-3)
    assert first.explained[0] > 0.99 and first.explained.sum() <= 1 + 1e-12
    np.testing.assert_allclose(first.transform(features), first.coords)
    flat = pca_2d(np.ones((5, 4)))
    assert not flat.coords.any() and not flat.explained.any()
    with pytest.raises(MetricInputError):
        pca_2d(np.ones((1, 4)))
    with pytest.raises(MetricInputError):
        pca_2d(np.array([[0.0, np.nan], [1.0, 2.0]]))
