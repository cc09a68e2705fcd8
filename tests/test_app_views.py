"""What the explorer's downloads, reruns and notes hold, through streamlit.testing (no browser).

Issue 22 items 5, 6 and 8: downloads hold what the screen shows, the threshold slider reruns only
its fragment, and the caveats sit next to the numbers they qualify. The helpers are
test_app_pages' (apptest_support: open the app shell, switch page, wait for the background runs).
"""

import io
import json
import struct
import zlib

import pandas as pd
import pytest
from PIL import Image
from streamlit.runtime import memory_media_file_storage
from streamlit.testing.v1 import AppTest

from apptest_support import PAGES, TIMEOUT, fragment_rerun, go, navigation_pages_kept, open_app, settle
from streamlit.testing.v1 import local_script_runner

from gaia_viz.app import jobs
from support import ROOT

pytestmark = pytest.mark.usefixtures("app_run_cache")


@pytest.fixture
def downloads(monkeypatch):
    """What each download button holds, by file name (the bytes Streamlit serves on a click)."""
    held: dict[str, bytes] = {}
    original = memory_media_file_storage.MemoryMediaFileStorage.load_and_get_id

    def recording(self, path_or_data, mimetype, kind, filename=None):
        if filename is not None:
            held[filename] = path_or_data if isinstance(path_or_data, bytes) else str(path_or_data).encode()
        return original(self, path_or_data, mimetype, kind, filename)

    monkeypatch.setattr(memory_media_file_storage.MemoryMediaFileStorage, "load_and_get_id", recording)
    return held


def bold_rows(at: AppTest) -> list[str]:
    return [m.value for m in at.markdown if m.value.startswith("| Method |")]


# --------------------------------------------------------------------------- item 5: downloads


def test_downloads_hold_the_layer_subset_shown_and_name_it(downloads):
    """Was: with a GAIA-Z subset the table showed its FPR95, metrics.json and scores.csv the all-layer GAIA-Z."""
    at = open_app("channels")
    next(m for m in at.multiselect if m.key.endswith("::gaia_z")).set_value(["bn1"]).run()
    downloads.clear()
    at = go(at, "evaluate")
    assert not at.exception, at.exception
    evaluation = jobs.STORE.get(at.session_state["setup"].score_key)
    from gaia_viz.app import analysis

    shown = evaluation.select([m for m in at.session_state["selection"].methods if m in evaluation.methods])
    subset_metrics = analysis.view_metrics(shown, {"gaia_z": ["bn1"]})
    metrics = json.loads(downloads["metrics.json"])
    assert metrics["layer_subsets"] == {"gaia_z": ["bn1"]}
    assert "tuned on the test data" in metrics["layer_subsets_note"]
    z_row = subset_metrics[(subset_metrics["method"] == "gaia_z") & (subset_metrics["ood_set"] == "faces")].iloc[0]
    assert metrics["methods"]["gaia_z"]["faces"]["fpr95"] == pytest.approx(z_row["fpr95"])
    all_layers = shown.metrics_json()["methods"]["gaia_z"]["faces"]
    assert metrics["methods"]["gaia_z"]["faces"]["auroc"] != pytest.approx(all_layers["auroc"])
    for ood, values in shown.metrics_json()["methods"]["msp"].items():  # the other methods are unchanged
        assert metrics["methods"]["msp"][ood] == pytest.approx(values)

    table = pd.read_csv(io.BytesIO(downloads["scores.csv"]))
    assert (table["gaia_z_layers"] == "bn1").all()
    ids = table[table["dataset"] == shown.id_name]["gaia_z"].to_numpy()
    assert ids == pytest.approx(analysis.subset_scores(shown, shown.id_name, "gaia_z", ["bn1"]))
    assert "gaia_a_layers" not in table.columns  # GAIA-A keeps all its layers
    assert table["gaia_a"].to_numpy() == pytest.approx(shown.scores["gaia_a"].to_numpy())

    # the table names the subset, and where it is bolded, that it was tuned on the test data
    grids = bold_rows(at)
    assert all("GAIA-Z (1 of 3 layers, tuned on the test data)" in grid for grid in grids)
    assert any("tuned on the test data" in c.value and "held-out" in c.value for c in at.caption)


def test_downloads_without_a_subset_say_all_layers(downloads):
    at = open_app("evaluate")
    assert not at.exception, at.exception
    metrics = json.loads(downloads["metrics.json"])
    assert metrics["layer_subsets"] == {} and "layer_subsets_note" not in metrics
    table = pd.read_csv(io.BytesIO(downloads["scores.csv"]))
    assert not [c for c in table.columns if c.endswith("_layers")]
    assert not any("tuned on the test data" in grid for grid in bold_rows(at))


# --------------------------------------------------------------------------- item 8: reruns


@pytest.fixture(autouse=True)
def pages_kept_across_runs():
    with navigation_pages_kept():
        yield


def in_fragment(at: AppTest, key: str, monkeypatch):
    # put back at teardown even when the test fails before its own undo
    monkeypatch.setattr(local_script_runner, "RerunData", local_script_runner.RerunData)
    return fragment_rerun(at, key)


@pytest.fixture
def page_runs(monkeypatch):
    """How often the app shell's sidebar (the start of every page run) ran."""
    from gaia_viz.app import sidebar

    counts = {"sidebar": 0}
    real = sidebar.sidebar

    def counted(*args, **kwargs):
        counts["sidebar"] += 1
        return real(*args, **kwargs)

    monkeypatch.setattr(sidebar, "sidebar", counted)
    return counts


def test_the_tpr_slider_reruns_its_fragment_not_the_page(page_runs, monkeypatch):
    """Was: moving Tune threshold's TPR slider reran the whole page (6.6 s in the browser)."""
    at = open_app("tune")
    assert not at.exception, at.exception
    before = {m.label: m.value for m in at.metric}
    first_histogram = next(c for c in at.get("plotly_chart") if c.key == "tune_histogram").proto.spec
    runs = page_runs["sidebar"]
    restore = in_fragment(at, "tune_operating_point", monkeypatch)
    at.slider(key="w_tune_tpr").set_value(0.8).run()
    restore()
    assert not at.exception, at.exception
    assert page_runs["sidebar"] == runs  # the page body (sidebar, set-up, score lookup) did not run
    after = {m.label: m.value for m in at.metric}
    assert after["TPR: ID accepted"] != before["TPR: ID accepted"] and after["TPR: ID accepted"].startswith("8")
    assert at.session_state["selection"].tpr == pytest.approx(0.8)
    assert at.query_params["tpr"] == "0.8"  # the fragment keeps the link in step
    histogram = next(c for c in at.get("plotly_chart") if c.key == "tune_histogram")
    assert histogram.proto.spec != first_histogram  # the threshold line moved


def test_the_evaluate_ood_set_reruns_only_the_figures(page_runs, monkeypatch):
    at = open_app("evaluate")
    runs = page_runs["sidebar"]
    restore = in_fragment(at, "evaluate_figures", monkeypatch)
    next(s for s in at.selectbox if s.key.startswith("w_ood::")).set_value("noise").run()
    restore()
    assert not at.exception, at.exception
    assert page_runs["sidebar"] == runs
    roc = next(c for c in at.get("plotly_chart") if c.key == "evaluate_roc")
    assert "noise (OOD)" in roc.proto.spec
    assert at.session_state["selection"].ood_set == "noise"


def test_the_data_map_after_an_evaluation_runs_no_forward_pass():
    """Was: the first Data map made one more forward pass over every image (20 s on CIFAR-10):
    the sweep now keeps the pooled features it computes in its chunk cache."""
    from gaia_viz.app.features import setup_features, setup_projection
    from gaia_viz.sweep import FEATURES

    at = open_app("evaluate", samples=44)  # a set-up of its own: scored here, with this code
    setup = at.session_state["setup"]
    evaluation = jobs.STORE.get(setup.score_key)
    assert evaluation.arrays[evaluation.id_name][FEATURES].shape[0] == 44
    setup_features.clear()
    setup_projection.clear()
    calls = []
    hook = setup.model.register_forward_hook(lambda *_: calls.append(1))
    try:
        at = go(at, "map")
    finally:
        hook.remove()
    assert not at.exception, at.exception
    assert calls == []  # no model pass for the map
    chart = next(c for c in at.get("plotly_chart") if c.key == "w_data_map")
    assert '"type":"scatter"' in chart.proto.spec
    assert any("images" in c.value and "flagged" in c.value for c in at.caption)


def test_the_kept_features_are_the_ones_a_separate_pass_gives():
    from gaia_viz.app.features import evaluation_features, set_features
    from gaia_viz.data.image_sets import subset
    from gaia_viz.demo import load_demo_model
    from gaia_viz.demo.datasets import demo_id_set, demo_ood_sets
    from gaia_viz.sweep import SweepSettings, evaluate

    model = load_demo_model()
    sets = {"digits": subset(demo_id_set(), range(12)), "faces": subset(demo_ood_sets()["faces"], range(9))}
    evaluation = evaluate(model, sets["digits"], {"faces": sets["faces"]},
                          SweepSettings(methods=["gaia_z", "msp"], batch_size=5), use_cache=False)
    kept = evaluation_features(evaluation)
    for name, images in sets.items():
        assert kept[name] == pytest.approx(set_features(model, images, 7), abs=1e-5)


# --------------------------------------------------------------------------- item 8: first request, banners


def done_banners(at: AppTest) -> list[str]:
    return [s.value for s in at.success if "done:" in s.value]


def test_one_done_banner_the_current_set_ups():
    """Was: each finished run of the session kept its "done" banner with a Dismiss button above
    every page (three of them pushed the page down)."""
    jobs.STORE.clear()  # a run of its own, though another test file scored this set-up in this process
    at = open_app("evaluate", samples=31)
    assert len(done_banners(at)) == 1
    first = done_banners(at)[0]
    at.session_state["sb_max_samples"] = 33  # another set-up: a run of its own
    at = settle(at.run())
    assert not at.exception, at.exception
    banners = done_banners(at)
    assert len(banners) == 1 and banners != [first]
    assert "Dismiss" in [b.label for b in at.button]


CIFAR_LINK = {"model": "cifar_resnet20", "data": "cifar10-real", "ood_sets": "textures",
              "methods": "gaia_z,msp", "tpr": "0.9"}


@pytest.mark.parametrize("entry", ["app", "page alone"])
def test_a_cifar_link_as_a_first_request_runs_no_demo_evaluation(entry, monkeypatch):
    """Was: a link naming a CIFAR set-up, opened as a fresh session's first request, first ran
    the whole demo evaluation, whose "done" banner then stacked above the CIFAR one."""
    from gaia_viz.settings import data_root

    root = data_root()
    if root is None or not (root / "models").is_dir() or not (root / "cifar10").is_dir():
        pytest.skip("needs the shared CIFAR-10 data and checkpoint (GAIA_VIZ_DATA_ROOT)")
    submitted = []
    real = jobs.JOBS.submit

    def recording(setup, methods, session):
        submitted.append(setup.is_demo)
        return real(setup, methods, session)

    monkeypatch.setattr(jobs.JOBS, "submit", recording)
    script = "app.py" if entry == "app" else PAGES["tune"]
    at = AppTest.from_file(str(ROOT / script), default_timeout=TIMEOUT)
    at.session_state["sb_max_samples"] = 20
    at.query_params.update(CIFAR_LINK)
    if entry == "app":
        at.switch_page(PAGES["tune"])
    at.run()
    assert not at.exception, at.exception
    assert True not in submitted  # the link's set-up only (scored now or by an earlier test), never the demo
    assert not at.session_state["setup"].is_demo
    at = settle(at.run())
    assert True not in submitted
    banners = done_banners(at)
    assert len(banners) <= 1 and all("cifar" in b for b in banners)
    assert any(m.label == "TPR: ID accepted" for m in at.metric)  # the link's view, scored


# --------------------------------------------------------------------------- item 6: caveats


def png(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def header_png(width: int, height: int) -> bytes:
    """A PNG whose header claims ``width`` x ``height`` pixels (a few bytes of data)."""
    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))
    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(b"\x00" * 64))
            + chunk(b"IEND", b""))


def test_random_weights_are_named_where_the_numbers_are():
    """Was: BiT/timm with random weights showed 'ID accuracy 0.00 %' and bold bests, no word why."""
    at = open_app("evaluate", samples=12, sb_model_kind="timm", sb_timm_name="test_efficientnet",
                  **{"sb_random_weights::timm": True})
    at.button[0].click().run()
    at = settle(at)
    assert at.session_state["setup"].random_weights
    for page in ("evaluate", "tune"):
        at = go(at, page)
        assert not at.exception, (page, at.exception)
        notes = [w.value for w in at.warning if "random weights" in w.value and "untrained" in w.value]
        assert len(notes) == 1, (page, [w.value for w in at.warning])
    at = go(at, "evaluate")
    assert any(m.label == "ID top-1 accuracy (random weights)" for m in at.metric)


def test_pretrained_weights_get_no_random_weights_note():
    at = open_app("evaluate")
    assert not at.session_state["setup"].random_weights
    assert not [w.value for w in at.warning if "random weights" in w.value]
    assert any(m.label == "ID top-1 accuracy" for m in at.metric)


def inspect_layer_box(at: AppTest):
    return next(s for s in at.selectbox if s.key and s.key.startswith("inspect_layer::"))


def test_inspect_opens_gaia_at_one_layer_by_its_stated_rule_and_links_it():
    """Was: 'GAIA at one layer' opened on bn1, where the OOD photo has fewer non-zeros than the
    ID mean (contradicting the verdict), with no rule and not in the link."""
    from gaia_viz.app import analysis

    at = open_app("inspect")
    assert not at.exception, at.exception
    evaluation = jobs.STORE.get(at.session_state["setup"].score_key)
    layers = evaluation.zero_layers
    mean_auroc = {layer: sum(analysis.single_layer_aurocs(evaluation, ood, "gaia_z")[1][k]
                             for ood in evaluation.ood_names) for k, layer in enumerate(layers)}
    best = max(mean_auroc, key=mean_auroc.get)
    assert inspect_layer_box(at).value == best != "bn1"
    assert any(c.value.startswith(f"Opened on {best}:") and "separates" in c.value for c in at.caption)
    assert "inspect_layer" not in at.query_params  # the rule gives it back from the set-up; no extra history entry
    inspect_layer_box(at).set_value("bn2").run()
    assert at.query_params["inspect_layer"] == "bn2"
    assert any(c.value.startswith(f"By default {best}:") for c in at.caption)


def test_a_link_opens_its_inspect_layer_and_refuses_an_unknown_one():
    at = open_app("inspect", query={"inspect_layer": "bn2"})
    assert inspect_layer_box(at).value == "bn2"
    at = open_app("inspect", query={"inspect_layer": "layer9.nope"})
    assert not at.exception, at.exception
    assert any("layer9.nope" in w.value and "not a layer GAIA hooked" in w.value for w in at.warning)
    assert inspect_layer_box(at).value != "layer9.nope"


def test_grad_cam_on_a_1x1_layer_says_why_its_map_is_uniform():
    at = open_app("inspect", query={"attribution": "grad_cam", "attr_params": "grad_cam.layer:gap"})
    assert not at.exception, at.exception
    notes = [i.value for i in at.info if "uniform" in i.value]
    assert len(notes) == 1 and "1 x 1" in notes[0] and "`gap`" in notes[0]
    at = open_app("inspect", query={"attribution": "grad_cam"})  # the default layer has a 7 x 7 map
    assert not [i.value for i in at.info if "uniform" in i.value]


def test_transparent_uploads_get_a_note_and_a_huge_one_the_apps_limit():
    at = open_app("inspect")
    at.radio(key=next(r.key for r in at.radio if r.key.startswith("w_inspect_source::"))).set_value("upload").run()
    half = Image.new("RGBA", (40, 40), (10, 200, 10, 255))
    half.paste((0, 0, 0, 0), (0, 0, 20, 40))
    clear = Image.new("RGBA", (40, 40), (0, 0, 0, 0))
    at.file_uploader(key="inspect_upload").set_value([
        ("half.png", png(half), "image/png"), ("clear.png", png(clear), "image/png"),
        ("opaque.png", png(Image.new("RGB", (40, 40), (1, 2, 3))), "image/png"),
        ("huge.png", header_png(12_000, 12_000), "image/png")])
    at.run()
    assert not at.exception, at.exception
    warnings = [w.value for w in at.warning]
    assert any("half.png" in w and "composited on white" in w and "50 %" in w for w in warnings)
    assert any("clear.png" in w and "fully transparent" in w and "blank" in w for w in warnings)
    assert not any("opaque.png" in w for w in warnings)
    huge = [e.value for e in at.error if "huge.png" in e.value]
    assert len(huge) == 1 and "144,000,000 pixels" in huge[0] and "(40 MP)" in huge[0]
    assert "DOS attack" not in huge[0] and "89478485" not in huge[0]  # not PIL's own text


def test_the_pixel_limit_decides_also_above_pils_own_guard():
    from gaia_viz.data.images import load_image
    from gaia_viz.errors import ImageLoadError

    with pytest.raises(ImageLoadError, match=r"144,000,000 pixels exceeds the limit of 40,000,000 pixels \(40 MP\)"):
        load_image(header_png(12_000, 12_000), max_pixels=40_000_000)
    # 95 MP: over PIL's 89 MP warning, under a raised limit: decoded (this header-only file is then truncated)
    with pytest.raises(ImageLoadError, match="corrupt or truncated|over what the image decoder accepts") as caught:
        load_image(header_png(10_000, 9_500), max_pixels=100_000_000)
    assert "DOS attack" not in str(caught.value)


def test_two_uploads_of_one_name_are_not_one_cached_image():
    """The per-image caches are keyed by the image's content, not its file name."""
    at = open_app("inspect")
    at.radio(key=next(r.key for r in at.radio if r.key.startswith("w_inspect_source::"))).set_value("upload").run()
    verdicts = []
    for colour in ((250, 250, 250), (0, 0, 0)):
        at.file_uploader(key="inspect_upload").set_value(
            ("same.png", png(Image.new("RGB", (28, 28), colour)), "image/png")).run()
        assert not at.exception, at.exception
        verdicts.append([m.value for m in at.get("dataframe")][0].to_dict() if at.get("dataframe") else None)
    assert verdicts[0] != verdicts[1]  # the top-5 of each image, not the first one's again


def test_a_sessions_first_run_loads_the_chart_library_in_a_hidden_chart():
    """Streamlit loads its Plotly chunk (4.7 MB) with the first chart: a cold open waited for it
    after the evaluation. The first run sends a hidden, empty chart, so it loads meanwhile."""
    at = AppTest.from_file(str(ROOT / "app.py"), default_timeout=TIMEOUT)
    at.run()
    assert not at.exception, at.exception
    hidden = [c for c in at.sidebar.get("plotly_chart") if c.key == "chart_preload_figure"]
    assert len(hidden) == 1 and '"data":[]' in hidden[0].proto.spec.replace(" ", "")
    assert any(".st-key-chart_preload {display: none;}" in h.proto.body for h in at.get("html"))  # styles: no gap
    at.run()  # the session has it: later runs draw nothing more
    assert not [c for c in at.get("plotly_chart") if c.key == "chart_preload_figure"]
