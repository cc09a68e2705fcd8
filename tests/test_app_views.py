"""What the explorer's downloads, reruns and notes hold, through streamlit.testing (no browser).

Issue 22 items 5, 6 and 8: downloads hold what the screen shows, the threshold slider reruns only
its fragment, and the caveats sit next to the numbers they qualify. Same helpers as
test_app_pages (open the app shell, switch page, wait for the background runs).
"""

import io
import json
from pathlib import Path

import pandas as pd
import pytest
from streamlit.runtime import memory_media_file_storage
from streamlit.testing.v1 import AppTest

from gaia_viz.app import jobs

ROOT = Path(__file__).resolve().parents[1]
SAMPLES = 100
TIMEOUT = 120
PAGES = {"home": "pages/0_Home.py", "inspect": "pages/1_Inspect.py", "evaluate": "pages/2_Evaluate.py",
         "tune": "pages/3_Tune_threshold.py", "channels": "pages/4_Channels_and_layers.py",
         "map": "pages/7_Data_map.py"}


@pytest.fixture(autouse=True)
def run_cache(tmp_path_factory, monkeypatch):
    monkeypatch.setenv("GAIA_VIZ_CACHE_DIR", str(tmp_path_factory.getbasetemp() / "app-run-cache"))


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


def settle(at: AppTest) -> AppTest:
    jobs.wait_for_jobs(TIMEOUT)
    return at.run()


def open_app(page: str | None = None, samples: int = SAMPLES, query: dict | None = None, **state) -> AppTest:
    at = AppTest.from_file(str(ROOT / "app.py"), default_timeout=TIMEOUT)
    at.session_state["sb_max_samples"] = samples
    for key, value in state.items():
        at.session_state[key] = value
    if query:
        at.query_params.update(query)
    if page is not None:
        at.run()
        at.switch_page(PAGES[page])
    return settle(at.run())


def go(at: AppTest, page: str) -> AppTest:
    at.switch_page(PAGES[page])
    return settle(at.run())


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
