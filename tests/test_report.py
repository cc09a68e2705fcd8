"""Real data: accuracy of the shared CIFAR-10 ResNets and the benchmark report.

Runs when the data root is present (``GAIA_VIZ_DATA_ROOT``, default ``../shared/data``).
The full report (both models, every method, all 13,600 images per model) takes about 5
minutes on 2 cores, so CI runs it whole, cold and then warm.
"""

import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
DATA_ROOT = Path(os.environ.get("GAIA_VIZ_DATA_ROOT", ROOT.parent / "shared" / "data"))

pytestmark = [
    pytest.mark.real_data,
    pytest.mark.skipif(not (DATA_ROOT / "cifar10" / "test").is_dir(),
                       reason=f"real CIFAR-10 data not found at {DATA_ROOT} (set GAIA_VIZ_DATA_ROOT)"),
]

REPORT_TIMEOUT = 2400  # seconds: the cold run takes about 5 minutes on 2 idle cores


@pytest.mark.parametrize("name, minimum", [("cifar_resnet20", 0.80), ("cifar_resnet56", 0.82)])
def test_accuracy_on_full_jpeg_test_set(name, minimum):
    from gaia_viz.data.sources import open_source
    from gaia_viz.models import load_model
    from gaia_viz.report import REAL_PRESET, REPORT_MODELS

    model = load_model(name, checkpoint=DATA_ROOT / "models" / REPORT_MODELS[name])
    test_set = open_source(f"folder:{DATA_ROOT / 'cifar10' / 'test'}", REAL_PRESET, "resize")
    assert len(test_set) == 10_000
    loader = torch.utils.data.DataLoader(test_set, batch_size=500)
    correct = 0
    with torch.no_grad():
        for x, y in loader:
            correct += (model(x).argmax(1) == y).sum().item()
    assert correct / len(test_set) >= minimum


def _run_report(out: Path, cache: Path) -> tuple[float, subprocess.CompletedProcess]:
    env = dict(os.environ, GAIA_VIZ_CACHE_DIR=str(cache))
    started = time.perf_counter()
    proc = subprocess.run(
        [sys.executable, "-m", "gaia_viz", "report", "--data-root", str(DATA_ROOT), "--out", str(out),
         "--quiet"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=1800)
    assert proc.returncode == 0, proc.stderr[-2000:]
    return time.perf_counter() - started, proc


@pytest.fixture(scope="module")
def report_runs(tmp_path_factory):
    base = tmp_path_factory.mktemp("report")
    cold_seconds, _ = _run_report(base / "cold", base / "cache")
    warm_seconds, _ = _run_report(base / "warm", base / "cache")
    return base, cold_seconds, warm_seconds


@pytest.mark.timeout(REPORT_TIMEOUT)
def test_report_files_and_tables_equal_metrics_json(report_runs):
    base, _, _ = report_runs
    out = base / "cold"
    for name in ("report.md", "metrics.json", "scores.csv", "cifar_resnet20_histograms.png",
                 "cifar_resnet20_roc.png", "cifar_resnet56_roc.png"):
        assert (out / name).is_file(), name
    metrics = json.loads((out / "metrics.json").read_text())
    report = (out / "report.md").read_text()
    assert set(metrics["models"]) == {"cifar_resnet20", "cifar_resnet56"}
    from gaia_viz.detectors import METHOD_LABELS

    sections = re.split(r"^## ", report, flags=re.M)[1:]
    assert len(sections) == 2
    for section in sections:
        model = section.splitlines()[0].strip()
        entry = metrics["models"][model]
        header = next(line for line in section.splitlines() if line.startswith("| method"))
        columns = [c.split(" FPR95")[0].strip() for c in header.strip("|").split("|")[1:]]
        rows = [line for line in section.splitlines() if line.startswith("| ") and not line.startswith("| method")]
        assert len(rows) == len(entry["methods"]) == len(METHOD_LABELS)
        for row in rows:
            cells = [c.strip() for c in row.strip("|").split("|")]
            method = next(m for m, label in METHOD_LABELS.items() if label == cells[0])
            for column, cell in zip(columns, cells[1:]):
                fpr, auroc = (float(v) for v in cell.split(" / "))
                assert fpr == pytest.approx(100 * entry["methods"][method][column]["fpr95"], abs=0.006)
                assert auroc == pytest.approx(100 * entry["methods"][method][column]["auroc"], abs=0.006)
        assert f"{100 * entry['id_accuracy']:.2f} %" in section
    scores = (out / "scores.csv").read_text().splitlines()
    assert len(scores) - 1 == sum(m["images"] for m in metrics["models"].values())


def test_gaia_z_beats_msp_on_center_cropped_textures(report_runs):
    base, _, _ = report_runs
    methods = json.loads((base / "cold" / "metrics.json").read_text())["models"]["cifar_resnet20"]["methods"]
    assert methods["gaia_z"]["textures (center-crop)"]["fpr95"] < methods["msp"]["textures (center-crop)"]["fpr95"]


def test_warm_cache_rerun_is_five_times_faster(report_runs):
    base, cold, warm = report_runs
    assert warm * 5 <= cold, f"cold {cold:.1f} s, warm {warm:.1f} s"
    warm_metrics = json.loads((base / "warm" / "metrics.json").read_text())
    cold_metrics = json.loads((base / "cold" / "metrics.json").read_text())
    for model in cold_metrics["models"]:
        assert warm_metrics["models"][model]["methods"] == cold_metrics["models"][model]["methods"]
        assert warm_metrics["models"][model]["cache_hits"] == 5


def test_report_without_data_root_is_a_one_line_error(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "gaia_viz", "report", "--data-root", str(tmp_path / "none"),
                           "--out", str(tmp_path / "o")], cwd=ROOT, capture_output=True, text=True)
    assert proc.returncode == 2
    assert proc.stderr.count("\n") == 1 and "does not exist" in proc.stderr
