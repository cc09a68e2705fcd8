"""Exported thresholds: the config file, the flagger, and the snippet the Tune page shows."""

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from gaia_viz.app.tune import SNIPPET_IMAGES, hardest_cases, install_command, threshold_snippet
from gaia_viz.data.sources import limit
from gaia_viz.demo import DEMO_PRESET, demo_id_set, demo_ood_sets, load_demo_model
from gaia_viz.errors import CheckpointError, DataError
from gaia_viz.metrics import threshold_at_tpr
from gaia_viz.run_config import RunConfig
from gaia_viz.sweep import SweepSettings, evaluate
from gaia_viz.threshold import DEFAULT_CONFIG_NAME, OODFlagger, ThresholdConfig, config_from_evaluation

from support import ROOT as REPO

SAMPLES = 40
ID_INDEX, OOD_INDEX = 3, 5


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    """A small demo evaluation recorded the way the app records it."""
    id_set = limit(demo_id_set("test"), SAMPLES)
    ood_sets = {"faces": limit(demo_ood_sets()["faces"], SAMPLES),
                "noise": limit(demo_ood_sets(ood_policy="center-crop")["noise"], SAMPLES)}
    fit_set = limit(demo_id_set("train"), SAMPLES)
    evaluation = evaluate(
        load_demo_model(), id_set, ood_sets,
        SweepSettings(methods=["gaia_z", "gaia_a", "msp", "energy", "knn"], batch_size=32),
        fit_set=fit_set, cache_dir=tmp_path_factory.mktemp("cache"),
        run=RunConfig(model_name="demo", checkpoint=None, preset=DEMO_PRESET,
                      fit_source="demo:digits:train", max_samples=SAMPLES, data_root=None),
    )
    return evaluation, id_set, ood_sets


def _save_images(folder: Path, id_set, ood_set) -> None:
    id_set.raw_image(ID_INDEX).save(folder / SNIPPET_IMAGES[0])
    ood_set.raw_image(OOD_INDEX).save(folder / SNIPPET_IMAGES[1])


def test_config_records_the_setup_and_round_trips(demo, tmp_path):
    evaluation = demo[0]
    threshold = threshold_at_tpr(evaluation.method_scores("gaia_z", "digits"), 0.9)
    config = config_from_evaluation(evaluation, "gaia_z", threshold, "noise")
    assert config.model_name == "demo" and config.checkpoint is None and config.preset == DEMO_PRESET
    assert config.ood_policy == "center-crop"  # the policy the tuned OOD set was scored with
    assert config.layers == dict(zero=evaluation.zero_layers, inner=evaluation.inner_layers,
                                 head=evaluation.head_layer)
    assert config.tpr_at_id == pytest.approx(0.9, abs=1 / SAMPLES)
    scores = evaluation.method_scores("gaia_z", "noise")
    assert config.ood_accepted == pytest.approx(np.mean(scores <= threshold))
    path = config.save(tmp_path / "t.json")
    assert ThresholdConfig.load(path) == config
    assert json.loads(path.read_text())["format"] == "gaia-viz threshold"


@pytest.mark.parametrize("text, message", [
    ("{not json", "not valid JSON"),
    ('{"method": "gaia_z"}', "not a gaia-viz threshold file"),
    ('{"format": "gaia-viz threshold", "method": "gaia_z"}', "lacks threshold"),
    ('{"format": "gaia-viz threshold", "method": "zzz", "threshold": 1, "model_name": "demo", '
     '"preset": "demo-mnist28"}', "unknown method"),
])
def test_bad_threshold_files_raise_data_errors(text, message):
    with pytest.raises(DataError, match=message):
        ThresholdConfig.from_json(text)


@pytest.mark.parametrize("method", ["gaia_z", "gaia_a", "msp", "knn"])
def test_flagger_reproduces_the_evaluation_scores(demo, tmp_path, method):
    evaluation, id_set, ood_sets = demo
    id_scores = evaluation.method_scores(method, "digits")
    ood_scores = evaluation.method_scores(method, "noise")
    config = config_from_evaluation(evaluation, method, threshold_at_tpr(id_scores), "noise")
    flagger = OODFlagger.from_file(config.save(tmp_path / "t.json"), device="cpu")
    images = [id_set.raw_image(ID_INDEX), ood_sets["noise"].raw_image(OOD_INDEX)]
    got = flagger.score(images)
    np.testing.assert_allclose(got, [id_scores[ID_INDEX], ood_scores[OOD_INDEX]], rtol=1e-4, atol=1e-6)
    np.testing.assert_array_equal(flagger.flag(images), got > config.threshold)


def test_the_snippet_runs_and_flags(demo, tmp_path, monkeypatch):
    evaluation, id_set, ood_sets = demo
    id_score = evaluation.method_scores("gaia_z", "digits")[ID_INDEX]
    ood_score = evaluation.method_scores("gaia_z", "noise")[OOD_INDEX]
    assert id_score != ood_score
    threshold = (id_score + ood_score) / 2  # between the two, so exactly one is flagged
    config_from_evaluation(evaluation, "gaia_z", threshold, "noise").save(tmp_path / DEFAULT_CONFIG_NAME)
    _save_images(tmp_path, id_set, ood_sets["noise"])
    monkeypatch.chdir(tmp_path)
    namespace = {}
    exec(threshold_snippet(DEFAULT_CONFIG_NAME), namespace)
    np.testing.assert_allclose(namespace["scores"], [id_score, ood_score], rtol=1e-4)
    assert list(namespace["flags"]) == [id_score > threshold, ood_score > threshold]
    assert namespace["flags"].sum() == 1


def test_uploaded_checkpoint_needs_its_path(demo):
    config = config_from_evaluation(demo[0], "msp", 0.5)
    config.checkpoint = "upload:weights.pt"
    with pytest.raises(CheckpointError, match="weights.pt"):
        OODFlagger.from_config(config)


def test_fitting_methods_need_a_fit_source(demo):
    config = config_from_evaluation(demo[0], "knn", 0.5)
    config.fit_source = None
    with pytest.raises(DataError, match="fit_source"):
        OODFlagger.from_config(config, device="cpu")


def test_hardest_cases_order():
    scores = np.array([0.3, 0.9, 0.1, 0.5, 0.9])
    np.testing.assert_array_equal(hardest_cases(scores, 3, most_ood_like=True), [1, 4, 3])
    np.testing.assert_array_equal(hardest_cases(scores, 2, most_ood_like=False), [2, 0])
    assert hardest_cases(scores, 0, True).size == 0


def fresh_environment(tmp_path: Path) -> Path:
    """A new virtual environment whose only way to ``import gaia_viz`` is the install command
    the page prints (its other packages come from the test environment, so nothing is
    downloaded). Returns its python."""
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True, timeout=120)
    python = venv / "bin" / "python"
    site_packages = subprocess.run([str(python), "-c", "import site; print(site.getsitepackages()[0])"],
                                   capture_output=True, text=True, check=True).stdout.strip()
    ours = [p for p in sys.path if p.endswith("site-packages")]
    Path(site_packages, "test-environment.pth").write_text("\n".join(ours) + "\n")
    command = install_command().split()
    assert command[:2] == ["pip", "install"] and command[-2] == "-e" and Path(command[-1]) == REPO
    # the printed command (requirements are already there: only the editable install is run)
    done = subprocess.run([str(python), "-m", "pip", "install", "-q", "--no-deps", "--no-build-isolation",
                           "-e", command[-1]], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    return python


@pytest.mark.timeout(600)
def test_the_tune_page_snippet_and_config_work_as_shown(tmp_path, monkeypatch):
    """Take the code and the config exactly as the Tune threshold page displays them and run
    them in a fresh environment, from a fresh working directory, after the install it names."""
    from streamlit.testing.v1 import AppTest

    from gaia_viz.app import jobs

    monkeypatch.setenv("GAIA_VIZ_CACHE_DIR", str(tmp_path / "cache"))
    page = REPO / "pages" / "3_Tune_threshold.py"
    at = AppTest.from_file(str(page), default_timeout=240)
    at.session_state["sb_max_samples"] = 60
    at.run()
    jobs.wait_for_jobs(240)
    at.run()
    assert not at.exception, at.exception
    snippet = next(c for c in at.code if c.language == "python").value
    assert snippet.strip() == threshold_snippet(DEFAULT_CONFIG_NAME).strip()  # st.code drops the last newline
    assert install_command() in snippet and install_command() in " ".join(m.value for m in at.markdown)
    config = ThresholdConfig.from_dict(json.loads(next(c for c in at.code if c.language == "json").value))
    assert config.method == at.session_state["selection"].method
    work = tmp_path / "work"
    work.mkdir()
    config.save(work / DEFAULT_CONFIG_NAME)
    _save_images(work, limit(demo_id_set("test"), 60), limit(demo_ood_sets()["noise"], 60))
    (work / "run.py").write_text(snippet + "\nimport json\nprint(json.dumps({'scores': [float(s) for s in scores], "
                                 "'flags': [bool(f) for f in flags]}))\n")
    python = fresh_environment(tmp_path)
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH",)}
    done = subprocess.run([str(python), "run.py"], cwd=work, capture_output=True, text=True, timeout=300, env=env)
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert len(result["flags"]) == 2
    assert result["flags"] == [score > config.threshold for score in result["scores"]]


def test_fitted_state_is_saved_beside_the_json_and_loading_never_refits(demo, tmp_path, monkeypatch):
    evaluation, id_set, ood_sets = demo
    assert "knn" in evaluation.fitted_states  # the sweep keeps what it fitted
    id_scores = evaluation.method_scores("knn", "digits")
    config = config_from_evaluation(evaluation, "knn", threshold_at_tpr(id_scores), "noise")
    path = config.save(tmp_path / "knn.json", fitted_state=evaluation.fitted_states["knn"])
    assert json.loads(path.read_text())["fitted_state"] == "knn.fitted.safetensors"
    assert (tmp_path / "knn.fitted.safetensors").is_file()
    from gaia_viz.detectors import KNN

    monkeypatch.setattr(KNN, "fit", lambda *a, **k: pytest.fail("loading a fitted threshold refitted"))
    flagger = OODFlagger.from_file(path, device="cpu")
    got = flagger.score([id_set.raw_image(ID_INDEX)])
    np.testing.assert_allclose(got, [id_scores[ID_INDEX]], rtol=1e-4, atol=1e-6)
    (tmp_path / "knn.fitted.safetensors").write_bytes(b"garbage")
    with pytest.raises(DataError, match="fitted state"):
        OODFlagger.from_file(path, device="cpu")


def test_a_threshold_on_a_layer_subset_is_applied_on_that_subset(demo, tmp_path):
    evaluation, id_set, _ = demo
    from gaia_viz.gaia.families import GAIA_FAMILIES

    subset = evaluation.zero_layers[1:]
    id_scores = GAIA_FAMILIES["gaia_z"].scores(evaluation, "digits", subset)
    config = config_from_evaluation(evaluation, "gaia_z", threshold_at_tpr(id_scores, 0.9), "noise", layers=subset)
    assert config.layers["zero"] == subset and config.tpr_at_id == pytest.approx(0.9, abs=1 / SAMPLES)
    assert config.ood_policies == {"digits": "resize", "faces": "resize", "noise": "center-crop"}
    flagger = OODFlagger.from_file(config.save(tmp_path / "t.json"), device="cpu")
    got = flagger.score([id_set.raw_image(ID_INDEX)])
    np.testing.assert_allclose(got, [id_scores[ID_INDEX]], rtol=1e-5)
