"""The one-sweep evaluation: shared forward, score table, disk cache, resume, OOM halving."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from gaia_viz import gaia, sweep
from gaia_viz.cache import ChunkStore
from gaia_viz.errors import DataError, ModelError
from gaia_viz.sweep import scoring


class TinyNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(1, 8, 3, padding=1)
        self.bn1 = nn.BatchNorm2d(8)
        self.conv2 = nn.Conv2d(8, 16, 3, stride=2, padding=1)
        self.bn2 = nn.BatchNorm2d(16)
        self.fc = nn.Linear(16, 4)

    def forward(self, x):
        x = F.relu(self.bn1(self.conv1(x)))
        x = F.relu(self.bn2(self.conv2(x)))
        return self.fc(x.mean(dim=(2, 3)))


class TensorSet(torch.utils.data.Dataset):
    def __init__(self, name, n, seed, shift=0.0, labels=True):
        g = torch.Generator().manual_seed(seed)
        self.name = name
        self.x = torch.randn(n, 1, 8, 8, generator=g) + shift
        self.y = torch.randint(0, 4, (n,), generator=g) if labels else torch.full((n,), -1)

    def __len__(self):
        return len(self.x)

    def __getitem__(self, i):
        return self.x[i], int(self.y[i])


@pytest.fixture
def setup(tmp_path):
    torch.manual_seed(0)
    model = TinyNet().eval()
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.normal_(0, 0.2)
    id_set = TensorSet("id", 40, 1)
    ood = {"far": TensorSet("far", 30, 2, shift=2.0, labels=False), "near": TensorSet("near", 25, 3, shift=0.5)}
    return model, id_set, ood, TensorSet("train", 50, 4), tmp_path / "cache"


ALL_BUT_ODIN = [m for m in sweep.ALL_METHODS if m != "odin"]


def test_sweep_scores_equal_each_detector_alone(setup):
    model, id_set, ood, fit_set, cache = setup
    settings = sweep.SweepSettings(methods=list(sweep.ALL_METHODS), batch_size=8)
    ev = sweep.evaluate(model, id_set, ood, settings, fit_set=fit_set, cache_dir=cache)
    table = ev.scores
    assert list(table.columns[:5]) == ["dataset", "index", "path", "label", "prediction"]
    assert len(table) == 40 + 30 + 25
    assert ev.ood_names == ["far", "near"]
    x = id_set.x
    assert np.allclose(ev.method_scores("gaia_z", "id"), gaia.gaia_z(model, x).numpy())
    assert np.allclose(ev.method_scores("gaia_a", "id"), gaia.gaia_a(model, x).numpy())
    from gaia_viz.detectors import make_detector

    loader = torch.utils.data.DataLoader(fit_set, batch_size=8)
    for method in sweep.ALL_METHODS:
        if method in sweep.GAIA_METHODS:
            continue
        detector = make_detector(method, model)
        if detector.needs_fit:
            detector.fit(loader)
        alone = detector.score(x).double().numpy()
        assert np.allclose(ev.method_scores(method, "id"), alone, rtol=1e-5, atol=1e-6), method
    assert np.array_equal(table.loc[table.dataset == "id", "prediction"], model(x).argmax(1).numpy())
    metrics = ev.metrics_table()
    assert set(metrics.ood_set) == {"far", "near", "average"}
    assert len(metrics) == len(sweep.ALL_METHODS) * 3
    from gaia_viz.metrics import evaluate_scores

    direct = evaluate_scores(ev.method_scores("gaia_z", "id"), ev.method_scores("gaia_z", "far"))
    assert metrics.query("method == 'gaia_z' and ood_set == 'far'").auroc.item() == direct["auroc"]
    js = ev.metrics_json()
    assert set(js["methods"]["msp"]["far"]) >= {"fpr95", "auroc", "aupr_in", "aupr_out"}
    assert js["config"]["layers"]["zero"] == ["bn1", "bn2"]
    # per-layer arrays: partial sums recompute the score
    arrays = ev.arrays["far"]
    recomputed = gaia.gaia_z_from_partials(arrays["zero_partial_sums"], ev.zero_channels)
    assert np.allclose(recomputed, ev.method_scores("gaia_z", "far"))
    assert arrays["nonzero_ratio"].shape == (30, 8 + 16)


def test_second_run_is_a_cache_hit_and_settings_change_the_key(setup, monkeypatch):
    model, id_set, ood, fit_set, cache = setup
    settings = sweep.SweepSettings(methods=ALL_BUT_ODIN, batch_size=8)
    first = sweep.evaluate(model, id_set, ood, settings, fit_set=fit_set, cache_dir=cache)
    assert first.cache_hits == 0
    calls = []
    real = scoring.score_range
    monkeypatch.setattr(scoring, "score_range", lambda *a, **k: calls.append(1) or real(*a, **k))
    second = sweep.evaluate(model, id_set, ood, settings, fit_set=fit_set, cache_dir=cache)
    assert second.cache_hits == 3 and not calls
    assert second.scores.equals(first.scores)
    other = sweep.SweepSettings(methods=ALL_BUT_ODIN, batch_size=8, layers=["bn2"])
    third = sweep.evaluate(model, id_set, ood, other, fit_set=fit_set, cache_dir=cache)
    assert calls and third.cache_hits == 0
    assert not np.allclose(third.method_scores("gaia_z", "id"), first.method_scores("gaia_z", "id"))
    with torch.no_grad():
        model.fc.weight.add_(0.1)  # new weights: a new key
    fourth = sweep.evaluate(model, id_set, ood, settings, fit_set=fit_set, cache_dir=cache)
    assert fourth.cache_hits == 0


def test_cancel_keeps_finished_chunks_and_resumes(setup, monkeypatch):
    model, id_set, ood, _, cache = setup
    settings = sweep.SweepSettings(methods=["gaia_z", "msp"], batch_size=2, chunk_size=8)
    polls = []

    def cancel():
        polls.append(1)
        return len(polls) > 3

    with pytest.raises(sweep.EvaluationCancelled):
        sweep.evaluate(model, id_set, ood, settings, cache_dir=cache, cancel=cancel)
    computed = []
    real = scoring.score_range
    monkeypatch.setattr(scoring, "score_range",
                        lambda m, d, s, e, *a, **k: computed.append((d.name, s)) or real(m, d, s, e, *a, **k))
    resumed = sweep.evaluate(model, id_set, ood, settings, cache_dir=cache)
    assert ("id", 0) not in computed and ("id", 24) in computed  # the first 3 chunks were kept
    fresh = sweep.evaluate(model, id_set, ood, settings, use_cache=False)
    assert resumed.scores.equals(fresh.scores)


def test_exception_mid_run_keeps_chunks(setup, monkeypatch):
    model, id_set, ood, _, cache = setup
    settings = sweep.SweepSettings(methods=["gaia_z"], batch_size=4)
    real = scoring.score_range
    seen = []

    def flaky(m, d, s, e, *a, **k):
        seen.append(s)
        if d.name == "far":
            raise RuntimeError("disk on fire")
        return real(m, d, s, e, *a, **k)

    monkeypatch.setattr(scoring, "score_range", flaky)
    with pytest.raises(RuntimeError):
        sweep.evaluate(model, id_set, ood, settings, cache_dir=cache)
    seen.clear()
    monkeypatch.setattr(scoring, "score_range", lambda m, d, *a, **k: seen.append(d.name) or real(m, d, *a, **k))
    sweep.evaluate(model, id_set, ood, settings, cache_dir=cache)
    assert "id" not in seen and "far" in seen


def test_corrupted_chunk_is_detected_and_recomputed(setup):
    model, id_set, ood, _, cache = setup
    settings = sweep.SweepSettings(methods=["gaia_z", "energy"], batch_size=8)
    first = sweep.evaluate(model, id_set, ood, settings, cache_dir=cache)
    chunks = sorted(cache.rglob("chunk-*.npz"))
    assert chunks
    chunks[0].write_bytes(chunks[0].read_bytes()[:100])  # truncated
    data = bytearray(chunks[1].read_bytes())
    data[len(data) // 2] ^= 0xFF  # a flipped byte
    chunks[1].write_bytes(bytes(data))
    again = sweep.evaluate(model, id_set, ood, settings, cache_dir=cache)
    assert again.cache_hits < 3
    assert again.scores.equals(first.scores)


def test_chunk_store_atomic_and_checksummed(tmp_path):
    store = ChunkStore(tmp_path, "k")
    store.write(0, 3, {"a": np.arange(3.0)})
    assert np.array_equal(store.read(0, 3)["a"], np.arange(3.0))
    assert store.read(3, 6) is None
    assert not list(tmp_path.rglob(".tmp-*"))
    path = next(tmp_path.rglob("chunk-*.npz"))
    path.write_bytes(b"garbage")
    assert store.read(0, 3) is None and not path.exists()


def test_cuda_out_of_memory_halves_the_batch(setup, monkeypatch):
    model, id_set, ood, _, _ = setup
    real = scoring.score_batch
    sizes = []

    def picky(model_, x, *a, **k):
        sizes.append(len(x))
        if len(x) > 3:
            raise torch.OutOfMemoryError("CUDA out of memory (simulated)")
        return real(model_, x, *a, **k)

    monkeypatch.setattr(scoring, "score_batch", picky)
    settings = sweep.SweepSettings(methods=["gaia_z", "msp"], batch_size=16)
    ev = sweep.evaluate(model, id_set, ood, settings, use_cache=False)
    monkeypatch.setattr(scoring, "score_batch", real)
    reference = sweep.evaluate(model, id_set, ood, settings, use_cache=False)
    assert 16 in sizes and 8 in sizes and max(s for s in sizes[-5:]) <= 3
    assert np.allclose(ev.scores["gaia_z"], reference.scores["gaia_z"])


def test_progress_reaches_one_and_bad_settings(setup):
    model, id_set, ood, _, _ = setup
    seen = []
    sweep.evaluate(model, id_set, ood, sweep.SweepSettings(methods=["msp"]), use_cache=False,
                   progress=lambda f, m: seen.append(f))
    assert seen[-1] == 1.0 and all(a <= b for a, b in zip(seen, seen[1:]))
    with pytest.raises(ModelError, match="unknown method"):
        sweep.SweepSettings(methods=["nope"])
    with pytest.raises(DataError, match="fit"):
        sweep.evaluate(model, id_set, ood, sweep.SweepSettings(methods=["knn"]), use_cache=False)
    with pytest.raises(DataError, match="OOD"):
        sweep.evaluate(model, id_set, {}, use_cache=False)


def test_ood_identical_to_id_gives_defined_metrics(setup):
    model, id_set, _, _, _ = setup
    twin = TensorSet("twin", 40, 1)
    ev = sweep.evaluate(model, id_set, {"twin": twin}, sweep.SweepSettings(methods=["gaia_z", "msp"]),
                        use_cache=False)
    row = ev.metrics_table().query("method == 'msp'").iloc[0]
    assert row.auroc == pytest.approx(0.5) and row.fpr95 == pytest.approx(0.95, abs=0.03)


def test_setup_key_ignores_how_a_folder_is_typed_and_keys_what_changes_a_score(tmp_path):
    """The app's Setup.score_key is identity.setup_key: one home for a set-up's identity."""
    from PIL import Image

    from gaia_viz.data.sources import open_source
    from gaia_viz.sweep.identity import setup_key

    for i in range(3):
        Image.new("L", (28, 28), 40 * i).save(tmp_path / f"{i}.png")
    plain = open_source(str(tmp_path), "demo-mnist28", name="id")
    typed = open_source(f"folder:{tmp_path}/./", "demo-mnist28", name="id")

    def key(images, preset="demo-mnist28", weights=None, spec="folder:x", root=None):
        return setup_key("demo", weights, preset, {"id": images}, None, {"id": spec}, root)

    assert key(plain) == key(typed)
    assert key(open_source(str(tmp_path), "gaia-cifar10", name="id"), "gaia-cifar10") != key(plain)
    assert key(plain, weights="abc") != key(plain)
    assert key(plain, root="/a") == key(plain, root="/b")  # a folder does not read under the data root
    assert key(plain, spec="torchvision:CIFAR10", root="/a") != key(plain, spec="torchvision:CIFAR10", root="/b")
