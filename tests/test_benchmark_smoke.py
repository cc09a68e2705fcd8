"""Smoke test of benchmarks/bench_scoring.py: it runs end to end and prints every row.

No timing assertions: the numbers depend on the machine and its load.
"""

import importlib.util
import json
import sys
from pathlib import Path

import pytest
import torch

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "bench_scoring.py"


@pytest.fixture(scope="module")
def bench():
    spec = importlib.util.spec_from_file_location("bench_scoring", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


def test_quick_run_prints_rows_ratios_and_targets(bench, tmp_path, capsys):
    threads = torch.get_num_threads()
    out = tmp_path / "bench.json"
    try:
        code = bench.main([
            "--quick", "--device", "cpu", "--models", "resnet20", "--random-init",
            "--batch", "4", "--repeats", "1", "--warmup", "0", "--threads", "1",
            "--interaction-samples", "2000", "--json", str(out),
        ])
    finally:
        torch.set_num_threads(threads)
    printed = capsys.readouterr().out
    assert code == 0
    for method in ("forward", "naive_gaia_z", "gaia_z", "gaia_a", "sweep_no_odin", "sweep_all", "posthoc_seven"):
        assert any(line.startswith(method + " ") for line in printed.splitlines()), method
    assert "1.00x" in printed  # forward is the unit
    for name in bench.RATIO_TARGETS:
        assert any(name in line and ("PASS" in line or "MISS" in line) for line in printed.splitlines())
    assert "move_threshold" in printed and "change_layers" in printed

    report = json.loads(out.read_text())
    rows = {row["method"]: row for row in report["rows"]}
    assert set(rows) == {"forward", "naive_gaia_z", "gaia_z", "gaia_a", "sweep_no_odin", "sweep_all", "posthoc_seven"}
    assert rows["forward"]["ratio"] == pytest.approx(1.0)
    for row in rows.values():
        assert row["median_s"] > 0 and row["ratio"] == pytest.approx(row["median_s"] / rows["forward"]["median_s"])
    assert {t["method"] for t in report["targets"]} == set(bench.RATIO_TARGETS)
    # the naive baseline and gaia.gaia_z compute the same score
    assert report["models"][0]["naive_vs_gaia_z_max_abs_diff"] < 1e-5
    assert [r["action"] for r in report["interaction"]] == ["move_threshold", "change_layers"]


def test_naive_baseline_matches_gaia_z_and_leaves_no_hooks(bench):
    from gaia_viz import gaia
    from gaia_viz.models import load_model

    model = load_model("cifar_resnet20", pretrained=False)
    x = torch.randn(3, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    layers = bench.norm_layer_names(model)
    naive = bench.naive_gaia_z(model, x, layers)
    assert torch.allclose(naive.double(), gaia.gaia_z(model, x, layers).double(), atol=1e-6)
    assert all(not m._forward_hooks for m in model.modules())


def test_unknown_model_is_refused(bench):
    with pytest.raises(SystemExit):
        bench.parse_args(["--models", "vgg99"])


PIPELINE = Path(__file__).resolve().parents[1] / "benchmarks" / "bench_pipeline.py"


def test_pipeline_benchmark_workers_row_runs(tmp_path, capsys):
    from gaia_viz.settings import data_root

    root = data_root()
    if root is None or not (root / "textures" / "images").is_dir():
        pytest.skip("no DTD textures under the data root (set GAIA_VIZ_DATA_ROOT to the shared data)")
    spec = importlib.util.spec_from_file_location("bench_pipeline", PIPELINE)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    threads = torch.get_num_threads()
    out = tmp_path / "pipeline.json"
    try:
        assert module.main(["--quick", "--rows", "workers", "--workers", "0,1", "--threads", "1",
                            "--json", str(out)]) == 0
    finally:
        torch.set_num_threads(threads)
    rows = json.loads(out.read_text())["rows"]
    assert [row["workers"] for row in rows] == [0, 1]
    for row in rows:
        assert row["images"] == 8 and row["images_per_s"] > 0 and row["loading_images_per_s"] > 0
    assert "workers=1" in capsys.readouterr().out
