"""The sweep's loader: worker processes give the same batches, order and scores as loading
in the main process; a bad file met inside a worker gives the main process's message; the
run reports loading and scoring rates apart."""

import io

import numpy as np
import pytest
import torch
from PIL import Image

from gaia_viz import sweep
from gaia_viz.data.sources import open_source
from gaia_viz.detectors import make_detector
from gaia_viz.errors import ImageLoadError
from gaia_viz.loader import BatchLoader, batch_ranges
from gaia_viz.models import load_model
from gaia_viz.sweep import scoring


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    """PNG files on disk, so the workers really decode: an ID set in ImageFolder layout
    (labels from the class folders), an OOD set, and the same OOD set plus a truncated PNG."""
    root = tmp_path_factory.mktemp("images")
    rng = np.random.default_rng(0)
    for split, count in (("id", 23), ("fit", 30)):
        for i in range(count):
            folder = root / split / str(i % 3)
            folder.mkdir(parents=True, exist_ok=True)
            Image.fromarray(rng.integers(0, 256, (28, 28), dtype=np.uint8)).save(folder / f"{i:03d}.png")
    for i in range(17):
        (root / "ood").mkdir(exist_ok=True)
        Image.fromarray(rng.integers(0, 256, (40, 36, 3), dtype=np.uint8)).save(root / "ood" / f"{i:03d}.png")
    bad = root / "bad"
    bad.mkdir()
    for i in range(5):
        Image.new("RGB", (30, 30), (40 * i, 0, 0)).save(bad / f"{i}.png")
    buffer = io.BytesIO()
    Image.fromarray(rng.integers(0, 256, (64, 64, 3), dtype=np.uint8)).save(buffer, format="PNG")
    damaged = bytearray(buffer.getvalue())  # damaged in the middle, its end intact: the folder check passes it
    damaged[len(damaged) // 2: len(damaged) // 2 + 64] = bytes(64)  # (a file cut short is skipped up front)
    (bad / "cut.png").write_bytes(bytes(damaged))
    return root


def open_sets(root, *names):
    return [open_source(f"folder:{root / n}", preset=None, name=n) for n in names]


def test_workers_give_the_same_batches_in_the_same_order(folders):
    id_set, ood = open_sets(folders, "id", "ood")
    plan = [(d, s, e) for d, n in ((0, len(id_set)), (1, len(ood))) for s, e in batch_ranges(0, n, 4)]
    plan = plan[::-1]  # any order: the loader keeps the plan's
    in_process = list(BatchLoader([id_set, ood], plan, workers=0))
    with_workers = list(BatchLoader([id_set, ood], plan, workers=2))
    assert [(b.dataset, b.start, b.stop) for b in with_workers] == plan
    for a, b in zip(in_process, with_workers):
        assert torch.equal(a.images, b.images) and torch.equal(a.labels, b.labels)
    direct = torch.stack([id_set[i][0] for i in range(4)])
    assert torch.equal(next(b for b in with_workers if b.dataset == 0 and b.start == 0).images, direct)


def test_workers_give_identical_scores_with_batches_inside_chunks(folders, monkeypatch):
    id_set, ood, fit_set = open_sets(folders, "id", "ood", "fit")
    model = load_model("demo")
    real = scoring.score_batch
    runs = {}
    for workers in (0, 2):
        sizes = []
        monkeypatch.setattr(scoring, "score_batch", lambda m, x, *a: sizes.append(len(x)) or real(m, x, *a))
        settings = sweep.SweepSettings(methods=["gaia_z", "gaia_a", "msp", "knn", "react"], batch_size=4,
                                       chunk_size=7, workers=workers)
        runs[workers] = (sweep.evaluate(model, id_set, {"ood": ood}, settings, fit_set=fit_set, use_cache=False),
                         sizes)
    (alone, sizes_alone), (pooled, sizes_pooled) = runs[0], runs[2]
    assert pooled.scores.equals(alone.scores)  # order, labels, predictions and every score, exactly
    for name in alone.arrays:
        for key, values in alone.arrays[name].items():
            assert np.array_equal(pooled.arrays[name][key], values), (name, key)
    # chunks of 7 in batches of 4: 4 + 3 per chunk, never a batch across a chunk boundary
    expected = [len(range(s, e)) for n in (23, 17) for c, d in sweep.chunk_ranges(n, 7) for s, e in batch_ranges(c, d, 4)]
    assert sizes_alone == sizes_pooled == expected
    assert alone.config.workers == 0 and pooled.config.workers == 2 and pooled.config.world_size == 1
    # fitted on a fit pass that the workers loaded: the same fit as a detector fitted alone
    knn = make_detector("knn", model).fit(torch.utils.data.DataLoader(fit_set, batch_size=4))
    x = torch.stack([id_set[i][0] for i in range(len(id_set))])
    assert np.allclose(pooled.method_scores("knn", "id"), knn.score(x).double().numpy(), atol=1e-5)


def test_a_bad_file_inside_a_worker_gives_the_main_process_message(folders):
    id_set, bad = open_sets(folders, "id", "bad")
    model = load_model("demo")
    messages = {}
    for workers in (0, 2):
        settings = sweep.SweepSettings(methods=["msp"], batch_size=2, workers=workers)
        with pytest.raises(ImageLoadError) as caught:
            sweep.evaluate(model, id_set, {"bad": bad}, settings, use_cache=False)
        messages[workers] = str(caught.value)
    assert messages[2] == messages[0]
    assert "cut.png is corrupt or truncated" in messages[0] and "re-export" in messages[0]
    assert "Caught" not in messages[2] and "Traceback" not in messages[2]  # not torch's re-wrapped form


def test_the_run_reports_loading_and_scoring_rates_apart(folders):
    id_set, ood = open_sets(folders, "id", "ood")
    seen = []
    settings = sweep.SweepSettings(methods=["msp", "energy"], batch_size=4, chunk_size=8, workers=1)
    ev = sweep.evaluate(load_model("demo"), id_set, {"ood": ood}, settings, use_cache=False,
                        progress=lambda f, m: seen.append(m))
    timing = ev.config.timing
    assert timing["loading"]["images"] == timing["scoring"]["images"] == 23 + 17
    assert timing["loading"]["images_per_s"] > 0 and timing["scoring"]["images_per_s"] > 0
    assert timing["loading"]["processes_per_rank"] == 1 and timing["loading"]["wait_seconds"] >= 0
    assert 0 < timing["scoring"]["seconds"] < timing["total_seconds"]
    assert any("load " in m and "/s" in m and "score " in m for m in seen)
    assert ev.metrics_json()["config"]["timing"]["scoring"]["images"] == 40


def test_fitted_state_round_trips_bit_for_bit():
    model = load_model("demo")
    react = make_detector("react", model)
    react.fit_features(torch.rand(50, 8) * 1.2345678901, torch.zeros(50, 10), torch.zeros(50, dtype=torch.long))
    copy = make_detector("react", model).load_fitted_state(react.fitted_state())
    assert copy.clip_value == react.clip_value  # a Python float survives, not rounded to float32
