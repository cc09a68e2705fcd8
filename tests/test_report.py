"""Real data: accuracy of the shared CIFAR-10 ResNets and the benchmark report.

The report tests run when the data root is present (``GAIA_VIZ_DATA_ROOT``, default
``../shared/data``), on seeded subsets (``--max-samples``, ``--max-fit``) of every set for the
three models, cold and then warm: the full report (3 models x about 38,600 images) is a
benchmark, not a test (README, "Reproduce on real data"). The claim check and the tables'
averages are also tested on made-up numbers, without data.
"""

import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from support import DATA_ROOT, ROOT

needs_data = [
    pytest.mark.real_data,
    pytest.mark.skipif(not (DATA_ROOT / "cifar10" / "test").is_dir(),
                       reason=f"real CIFAR-10 data not found at {DATA_ROOT} (set GAIA_VIZ_DATA_ROOT)"),
]

REPORT_TIMEOUT = 2400  # seconds: the subset runs take about 2 minutes on 2 idle cores
SUBSET = ["--max-samples", "24", "--max-fit", "400"]  # ViM needs a few hundred fit features


def _with(marks):
    def decorate(function):
        for mark in marks:
            function = mark(function)
        return function
    return decorate


@_with(needs_data)
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


def _run_report(out: Path, cache: Path, quiet: bool = True) -> tuple[float, subprocess.CompletedProcess]:
    env = dict(os.environ, GAIA_VIZ_CACHE_DIR=str(cache))
    started = time.perf_counter()
    proc = subprocess.run(
        [sys.executable, "-m", "gaia_viz", "report", "--data-root", str(DATA_ROOT), "--out", str(out), *SUBSET]
        + (["--quiet"] if quiet else []), cwd=ROOT, env=env, capture_output=True, text=True, timeout=REPORT_TIMEOUT)
    assert proc.returncode == 0, proc.stderr[-2000:]
    return time.perf_counter() - started, proc


@pytest.fixture(scope="module")
def report_runs(tmp_path_factory):
    base = tmp_path_factory.mktemp("report")
    cold_seconds, cold = _run_report(base / "cold", base / "cache", quiet=False)
    warm_seconds, _ = _run_report(base / "warm", base / "cache")
    return base, cold_seconds, warm_seconds, cold.stderr


MODELS = {"cifar_resnet20", "cifar_resnet56", "cifar_densenet_bc100"}
FIELD = ["LSUN-Resize", "TinyImageNet-Resize", "textures (center-crop)", "textures (resize)"]
EXTRAS = ["mnist digits", "lfw faces"]


def _tables(section: str):
    """``[(heading, columns, rows)]`` of the markdown tables under ``### `` headings."""
    found = []
    for part in re.split(r"^### ", section, flags=re.M)[1:]:
        lines = part.splitlines()
        header = next(line for line in lines if line.startswith("| method"))
        columns = [c.split(" FPR95")[0].strip() for c in header.strip("|").split("|")[1:]]
        rows = [line for line in lines if line.startswith("| ") and not line.startswith("| method")]
        found.append((lines[0].strip(), columns, rows))
    return found


@_with(needs_data)
@pytest.mark.timeout(REPORT_TIMEOUT)
def test_report_files_and_tables_equal_metrics_json(report_runs):
    base = report_runs[0]
    out = base / "cold"
    for name in ("report.md", "metrics.json", "scores.csv", "cifar_resnet20_histograms.png",
                 "cifar_resnet20_roc.png", "cifar_resnet56_roc.png", "cifar_densenet_bc100_roc.png"):
        assert (out / name).is_file(), name
    metrics = json.loads((out / "metrics.json").read_text())
    report = (out / "report.md").read_text()
    assert set(metrics["models"]) == MODELS
    assert metrics["tables"] == {"field": FIELD, "far-OOD extras": EXTRAS}
    from gaia_viz.detectors import METHOD_LABELS

    sections = {s.splitlines()[0].strip(): s for s in re.split(r"^## ", report, flags=re.M)[1:]}
    assert MODELS <= set(sections)
    for model in MODELS:
        section, entry = sections[model], metrics["models"][model]
        tables = _tables(section)
        assert [(heading, columns) for heading, columns, _ in tables] == [
            ("The field's OOD sets", FIELD + ["average"]), ("Far-OOD extras", EXTRAS + ["average"])]
        for (_, columns, rows), sets in zip(tables, (FIELD, EXTRAS)):
            assert len(rows) == len(entry["methods"]) == len(METHOD_LABELS)
            for row in rows:
                cells = [c.strip() for c in row.strip("|").split("|")]
                method = next(m for m, label in METHOD_LABELS.items() if label == cells[0])
                per_set = entry["methods"][method]
                for column, cell in zip(columns, cells[1:]):
                    fpr, auroc = (float(v) for v in cell.split(" / "))
                    # the average is over this table's sets only
                    values = per_set[column] if column != "average" else {
                        k: np.mean([per_set[s][k] for s in sets]) for k in ("fpr95", "auroc")}
                    assert fpr == pytest.approx(100 * values["fpr95"], abs=0.006)
                    assert auroc == pytest.approx(100 * values["auroc"], abs=0.006)
        assert f"{100 * entry['id_accuracy']:.2f} %" in section
        assert entry["preset"] == ("odin-cifar10" if "densenet" in model else "cifar-imagenet-norm")
    scores = (out / "scores.csv").read_text().splitlines()
    assert len(scores) - 1 == sum(m["images"] for m in metrics["models"].values())


@_with(needs_data)
def test_report_prints_the_published_anchors_and_the_claim_check_from_the_results(report_runs):
    out = report_runs[0] / "cold"
    report = (out / "report.md").read_text()
    metrics = json.loads((out / "metrics.json").read_text())
    anchors = report.split("## Published figures beside ours", 1)[1].split("\n## ", 1)[0]
    assert "4.81 %" in anchors and "ODIN's README" in anchors
    assert "34.7 %" in anchors and "4.3 %" in anchors and "ICLR 2018" in anchors
    densenet = metrics["models"]["cifar_densenet_bc100"]
    assert f"{100 * densenet['id_accuracy']:.2f} % top-1" in anchors
    assert "JPEG" in anchors and "resize" in anchors and "crop" in anchors
    claim = report.split("## Does the paper's claim hold here", 1)[1].split("\n## ", 1)[0]
    titles = {"cifar_resnet20": "ResNet-20", "cifar_resnet56": "ResNet-56", "cifar_densenet_bc100": "DenseNet-BC-100"}
    for model, entry in metrics["models"].items():
        averages = {m: np.mean([v[s]["fpr95"] for s in FIELD]) for m, v in entry["methods"].items()}
        for method, label in (("gaia_z", "GAIA-Z"), ("gaia_a", "GAIA-A")):
            rank = 1 + sum(a < averages[method] for a in averages.values())
            row = next(line for line in claim.splitlines() if line.startswith(f"| {titles[model]} | {label} |"))
            assert f"| {rank} of 17 |" in row
            for baseline, baseline_label in (("msp", "MSP"), ("odin", "ODIN"), ("energy", "Energy"),
                                             ("gradnorm", "GradNorm"), ("react", "ReAct")):
                word = "wins" if averages[method] < averages[baseline] else "loses"
                assert f"{word}: {100 * averages[method]:.1f} vs {100 * averages[baseline]:.1f}" in row
        assert f"- {titles[model]}: the claim" in claim


@_with(needs_data)
def test_progress_names_model_set_and_eta(report_runs):
    stderr = report_runs[3]
    assert "[1/3] ResNet-20: " in stderr and "[3/3] DenseNet-BC-100: scoring LSUN-Resize" in stderr
    assert re.search(r"DenseNet-BC-100: scoring [^\r\n]* \d+ s left", stderr)


@_with(needs_data)
def test_warm_cache_rerun_is_five_times_faster(report_runs):
    base, cold, warm, _ = report_runs
    warm_metrics = json.loads((base / "warm" / "metrics.json").read_text())
    cold_metrics = json.loads((base / "cold" / "metrics.json").read_text())
    # the evaluations' own time: the process start, the folder check of every file (36,000 headers)
    # and the figures cost the same warm or cold (about 8 s on 2 cores)
    cold_eval, warm_eval = (sum(m["models"][n]["seconds"] for n in m["models"]) for m in (cold_metrics, warm_metrics))
    assert warm_eval * 5 <= cold_eval, f"evaluations cold {cold_eval:.1f} s, warm {warm_eval:.1f} s"
    assert warm < cold, f"whole command cold {cold:.1f} s, warm {warm:.1f} s"
    for model in cold_metrics["models"]:
        assert warm_metrics["models"][model]["methods"] == cold_metrics["models"][model]["methods"]
        assert warm_metrics["models"][model]["cache_hits"] == 7  # the ID set and 6 OOD sets


def test_report_without_data_root_is_a_one_line_error(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "gaia_viz", "report", "--data-root", str(tmp_path / "none"),
                           "--out", str(tmp_path / "o")], cwd=ROOT, capture_output=True, text=True)
    assert proc.returncode == 2
    assert proc.stderr.count("\n") == 1 and "does not exist" in proc.stderr


def test_report_refuses_a_subset_of_no_images(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "gaia_viz", "report", "--data-root", str(tmp_path),
                           "--out", str(tmp_path / "o"), "--max-samples", "0"], cwd=ROOT, capture_output=True,
                          text=True)
    assert proc.returncode == 2
    assert proc.stderr.count("\n") == 1 and "--max-samples must be at least 1" in proc.stderr


# ----------------------------------------------------------------------------- on made-up numbers


def _entry(fpr95: dict) -> dict:
    """A model entry whose methods have the given FPR95 per set (AUROC = 1 - FPR95)."""
    return {"methods": {m: {s: {"fpr95": v, "auroc": 1 - v} for s, v in per_set.items()}
                        for m, per_set in fpr95.items()}}


def test_averages_and_claim_check_use_the_field_sets_only():
    from gaia_viz import report

    field, extras = ["a", "b"], ["digits"]
    numbers = {"gaia_z": {"a": 0.10, "b": 0.30, "digits": 1.00},  # field average 0.20
               "gaia_a": {"a": 0.50, "b": 0.70, "digits": 0.00},  # 0.60
               "msp": {"a": 0.40, "b": 0.40, "digits": 0.10},     # 0.40
               "odin": {"a": 0.05, "b": 0.45, "digits": 0.10},    # 0.25
               "energy": {"a": 0.30, "b": 0.60, "digits": 0.10},  # 0.45
               "gradnorm": {"a": 0.20, "b": 0.10, "digits": 0.10},  # 0.15
               "react": {"a": 0.90, "b": 0.90, "digits": 0.10}}   # 0.90
    summary = {"models": {"cifar_resnet20": _entry(numbers)}, "tables": {"field": field, "far-OOD extras": extras}}
    averages = report.table_averages(summary["models"]["cifar_resnet20"], field)
    assert averages["gaia_z"]["fpr95"] == pytest.approx(0.20)
    assert report.table_averages(summary["models"]["cifar_resnet20"], extras)["gaia_z"]["fpr95"] == 1.0
    claim = report.claim_check(summary)["cifar_resnet20"]
    assert claim["gaia_z"]["rank"] == 2 and claim["gaia_a"]["rank"] == 6 and claim["methods"] == 7
    versus = claim["gaia_z"]["versus"]
    assert [b for b, v in versus.items() if v["wins"]] == ["msp", "odin", "energy", "react"]
    assert versus["odin"]["sets_lower"] == ["b"] and versus["gradnorm"]["sets_lower"] == ["a"]
    text = report.claim_markdown(report.claim_check(summary))
    assert "| ResNet-20 | GAIA-Z | 2 of 7 | 20.0 % |" in text
    assert "loses: 20.0 vs 15.0 (1/2 sets)" in text
    assert "the claim does not hold in full: GAIA-Z beats MSP, ODIN, Energy, ReAct; GAIA-A beats ReAct" in text
    numbers["gradnorm"] = {"a": 0.5, "b": 0.5, "digits": 0.0}
    summary["models"]["cifar_resnet20"] = _entry(numbers)
    text = report.claim_markdown(report.claim_check(summary))
    assert "ResNet-20: the claim holds: GAIA-Z has a lower average FPR95 than every one of" in text
    markdown = report.metrics_markdown(summary["models"]["cifar_resnet20"], extras)
    assert "average" not in markdown.splitlines()[0]  # one set: no average column


def test_terminal_progress_draws_each_message_with_its_own_fraction(capsys):
    from gaia_viz.progress import terminal_progress

    update, close = terminal_progress()
    update(1.0, "[1/3] ResNet-20: done")
    update(0.02, "[2/3] ResNet-56: fitting on cifar10-train-5k: 128/5,000 images")
    close()
    draws = [d for d in capsys.readouterr().err.replace("\n", "\r").split("\r") if "ResNet-56" in d]
    assert draws and all(" 2%" in d and "100%" not in d for d in draws)
    assert len("[3/3] DenseNet-BC-100: scoring textures (center-crop): 43,600/48,600, load 1,234/s, "
               "score 12/s, 3000 s left") <= 150  # the whole message, ETA included, fits the bar
