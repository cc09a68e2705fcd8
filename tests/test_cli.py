"""The CLI end to end on the embedded demo, and its one-line errors (exit code 2)."""

import json

import pandas as pd
import pytest

from gaia_viz.detectors import DETECTORS

from support import run_cli


def test_demo_evaluation_end_to_end(tmp_path):
    out = tmp_path / "out"
    proc = run_cli("evaluate", "--demo", "--out", out, "--methods", "all", "--max-samples", "120",
                   "--quiet", cache=tmp_path / "cache")
    assert proc.returncode == 0, proc.stderr
    metrics = json.loads((out / "metrics.json").read_text())
    assert set(metrics) == {"methods", "config"}
    ood_sets = {"faces", "textures", "photos", "letters", "noise"}
    assert list(metrics["methods"])[:2] == ["gaia_z", "gaia_a"] and len(metrics["methods"]) == len(DETECTORS)
    for method, per_set in metrics["methods"].items():
        assert set(per_set) == ood_sets | {"average"}
        for values in per_set.values():
            assert {"fpr95", "auroc", "aupr_in", "aupr_out"} <= set(values)
            assert all(0.0 <= values[k] <= 1.0 for k in ("fpr95", "auroc", "aupr_in", "aupr_out"))
    assert metrics["config"]["preset"] == "demo-mnist28"
    # the demo's default policy, recorded for every OOD set
    assert {metrics["config"]["ood_policies"][name] for name in ood_sets} == {"resize"}
    scores = pd.read_csv(out / "scores.csv")
    assert list(scores.columns[:5]) == ["dataset", "index", "path", "label", "prediction"]
    assert len(scores) == 120 * 6
    assert scores.groupby("dataset").size().to_dict() == {name: 120 for name in ood_sets | {"digits"}}
    digits = scores[scores.dataset == "digits"]
    assert (digits.label == digits.prediction).mean() > 0.9
    assert "FPR95" in proc.stdout and "GAIA" not in proc.stderr[:0]
    # far-OOD noise is caught by GAIA-Z on the demo
    assert metrics["methods"]["gaia_z"]["noise"]["auroc"] > 0.9


def test_folder_sources_and_ood_transform(tmp_path):
    from PIL import Image

    for name, color in (("a", 10), ("b", 200)):
        folder = tmp_path / "ood" / name
        folder.mkdir(parents=True)
        for i in range(6):
            Image.new("RGB", (40 + i, 30), (color, i * 20, 0)).save(folder / f"{i}.png")
    (tmp_path / "ood" / "notes.txt").write_text("not an image")
    proc = run_cli("evaluate", "--model", "demo", "--id", "demo:digits", "--ood", f"mine={tmp_path / 'ood'}",
                   "--ood", "noise=demo:noise", "--ood-transform", "resize", "--methods", "gaia_z,msp",
                   "--max-samples", "50", "--no-cache", "--quiet", "--out", tmp_path / "o")
    assert proc.returncode == 0, proc.stderr
    scores = pd.read_csv(tmp_path / "o" / "scores.csv")
    mine = scores[scores.dataset == "mine"]
    assert len(mine) == 12 and mine.path.str.endswith(".png").all()
    config = json.loads((tmp_path / "o" / "metrics.json").read_text())["config"]
    assert config["ood_policies"]["mine"] == config["ood_policies"]["noise"] == "resize"


@pytest.mark.parametrize("args, message", [
    (["evaluate", "--model", "no_such_model", "--id", "demo:digits", "--ood", "n=demo:noise"], "no_such_model"),
    (["evaluate", "--model", "demo", "--id", "/no/such/folder", "--ood", "n=demo:noise"], "/no/such/folder"),
    (["evaluate", "--model", "demo", "--id", "demo:digits", "--ood", "noequals"], "NAME=SOURCE"),
    (["evaluate", "--demo", "--methods", "gaia_q"], "gaia_q"),
    (["evaluate", "--demo", "--batch-size", "0"], "batch"),
    (["evaluate", "--model", "cifar_resnet20", "--checkpoint", "/no/such.th", "--id", "demo:digits",
      "--ood", "n=demo:noise"], "such.th"),
    (["evaluate", "--demo", "--bogus-flag"], "bogus"),
    (["evaluate", "--demo", "--device", "tpu"], "tpu"),
])
def test_bad_input_is_one_line_and_exit_code_2(tmp_path, args, message):
    proc = run_cli(*args, "--out", tmp_path / "o", "--quiet")
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.count("\n") == 1, proc.stderr
    assert proc.stderr.startswith("error: ") and message in proc.stderr
    assert not (tmp_path / "o" / "metrics.json").exists()


def test_empty_folder_is_a_clear_error(tmp_path):
    (tmp_path / "empty").mkdir()
    proc = run_cli("evaluate", "--model", "demo", "--id", "demo:digits", "--ood", f"e={tmp_path / 'empty'}",
                   "--out", tmp_path / "o", "--quiet")
    assert proc.returncode == 2 and "no images" in proc.stderr
