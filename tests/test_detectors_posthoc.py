"""ASH, SCALE, ViM, GEN, fDBD, NNGuide and DICE: each against a brute-force numpy reference
written from its paper's formula on a tiny model, their parameters and fitted state, the
models they refuse, the sweep's rule for those (the others still run), and a cross-check
against pytorch-ood 0.4.0 on the shared CIFAR-10 ResNet-20 (skipped without the data or
pytorch-ood)."""

import warnings

import numpy as np
import pytest
import torch
from torch import nn

from gaia_viz import sweep
from gaia_viz.detectors import DETECTORS, make_detector
from gaia_viz.detectors.vim import principal_dim
from gaia_viz.errors import DataError, ModelError
from gaia_viz.forward import ForwardNeeds, ForwardOutputs, shared_forward
from support import DATA_ROOT, tiny_net

NUM_CLASSES = 5
CHANNELS = 12
POSTHOC = ["ash", "scale", "vim", "gen", "fdbd", "nnguide", "dice"]
FITTED = ["vim", "fdbd", "nnguide", "dice"]


class ConvHeadNet(nn.Module):
    """A 1x1 convolution classifies every position, then the logits are averaged: no
    classifier head of pooled features."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, CHANNELS, 3, padding=1)
        self.bn = nn.BatchNorm2d(CHANNELS)
        self.head = nn.Conv2d(CHANNELS, NUM_CLASSES, 1)

    def forward(self, x):
        return self.head(torch.relu(self.bn(self.conv(x)))).mean(dim=(2, 3))


def tiny_model(pool=None):
    return tiny_net(channels=CHANNELS, classes=NUM_CLASSES, pool=pool, head_bias=True)


@pytest.fixture
def model():
    return tiny_model()


@pytest.fixture
def x():
    return torch.randn(7, 3, 8, 8, generator=torch.Generator().manual_seed(1))


def fit_loader(n_batches=4, batch=10, seed=2):
    g = torch.Generator().manual_seed(seed)
    return [(torch.randn(batch, 3, 8, 8, generator=g), torch.randint(0, NUM_CLASSES, (batch,), generator=g))
            for _ in range(n_batches)]


def np_outputs(model, x):
    """Feature map, pooled features and logits in float64 numpy, computed by hand."""
    with torch.no_grad():
        fmap = model.feature_map(x).double().numpy()
    weight, bias = model.fc.weight.detach().double().numpy(), model.fc.bias.detach().double().numpy()
    features = fmap.mean(axis=(2, 3))
    return fmap, features, features @ weight.T + bias, weight, bias


def fit_features_np(model, loader):
    xs = torch.cat([b[0] for b in loader])
    _, features, logits, _, _ = np_outputs(model, xs)
    return features, logits


def logsumexp(a):
    top = a.max(axis=1, keepdims=True)
    return (top + np.log(np.exp(a - top).sum(axis=1, keepdims=True)))[:, 0]


# --------------------------------------------------------------------------- references


def shape_reference(a, method, variant, percentile):
    """One sample's activations ``a`` (1-D) shaped as the ASH / SCALE papers write it."""
    n = a.size
    k = n - int(np.round(n * percentile / 100.0))
    kept = np.argsort(-a, kind="stable")[:k]
    total, kept_total = a.sum(), a[kept].sum()
    if method == "scale":
        return a * np.exp(total / kept_total)
    out = np.zeros_like(a)
    if variant == "ASH-P":
        out[kept] = a[kept]
    elif variant == "ASH-B":
        out[kept] = total / k
    else:
        out[kept] = a[kept] * np.exp(total / kept_total)
    return out


def shaping_reference(model, x, method, variant=None, percentile=90.0, placement="pooled"):
    fmap, features, _, weight, bias = np_outputs(model, x)
    if placement == "pooled":
        pooled = np.stack([shape_reference(f, method, variant, percentile) for f in features])
    else:
        pooled = np.stack([shape_reference(m.ravel(), method, variant, percentile).reshape(m.shape).mean(axis=(1, 2))
                           for m in fmap])
    return -logsumexp(pooled @ weight.T + bias)


def vim_reference(model, loader, x, dim):
    train_features, train_logits = fit_features_np(model, loader)
    _, features, logits, weight, bias = np_outputs(model, x)
    origin = -np.linalg.pinv(weight) @ bias
    centred = train_features - origin
    eigenvalues, eigenvectors = np.linalg.eigh(centred.T @ centred / len(centred))
    residual = eigenvectors[:, np.argsort(-eigenvalues)[dim:]]  # beyond the dim largest
    alpha = train_logits.max(axis=1).mean() / np.linalg.norm(centred @ residual, axis=1).mean()
    virtual_logit = alpha * np.linalg.norm((features - origin) @ residual, axis=1)
    return virtual_logit - logsumexp(logits)


def gen_reference(logits, gamma, m):
    p = np.exp(logits - logits.max(axis=1, keepdims=True))
    p /= p.sum(axis=1, keepdims=True)
    top = -np.sort(-p, axis=1)[:, :m]
    return (top ** gamma * (1 - top) ** gamma).sum(axis=1)


def fdbd_reference(model, loader, x):
    train_features, _ = fit_features_np(model, loader)
    _, features, logits, weight, bias = np_outputs(model, x)
    mean = train_features.mean(axis=0)
    scores = []
    for z, row in zip(features, logits):
        y = row.argmax()
        distances = [abs((weight[y] - weight[c]) @ z + bias[y] - bias[c]) / np.linalg.norm(weight[y] - weight[c])
                     for c in range(NUM_CLASSES) if c != y]
        scores.append(-np.mean(distances) / np.linalg.norm(z - mean))
    return np.array(scores)


def nnguide_reference(model, loader, x, k):
    train_features, train_logits = fit_features_np(model, loader)
    _, features, logits, _, _ = np_outputs(model, x)
    bank = train_features / np.linalg.norm(train_features, axis=1, keepdims=True) * logsumexp(train_logits)[:, None]
    queries = features / np.linalg.norm(features, axis=1, keepdims=True)
    guidance = -np.sort(-(queries @ bank.T), axis=1)[:, :k].mean(axis=1)
    return -guidance * logsumexp(logits)


def dice_reference(model, loader, x, percentile):
    train_features, _ = fit_features_np(model, loader)
    _, features, _, weight, bias = np_outputs(model, x)
    contribution = weight * train_features.mean(axis=0)[None, :]
    mask = contribution > np.percentile(contribution, percentile)
    return -logsumexp(features @ (weight * mask).T + bias), mask


# --------------------------------------------------------------------------- formulas


@pytest.mark.parametrize("placement", ["pooled", "map"])
@pytest.mark.parametrize("variant, percentile", [("ASH-S", 90.0), ("ASH-P", 65.0), ("ASH-B", 65.0), ("ASH-S", 0.0)])
def test_ash_matches_reference(model, x, variant, percentile, placement):
    det = make_detector("ash", model, variant=variant, percentile=percentile, placement=placement)
    expected = shaping_reference(model, x, "ash", variant, percentile, placement)
    np.testing.assert_allclose(det.score(x).numpy(), expected, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("placement", ["pooled", "map"])
@pytest.mark.parametrize("percentile", [85.0, 50.0])
def test_scale_matches_reference(model, x, percentile, placement):
    det = make_detector("scale", model, percentile=percentile, placement=placement)
    expected = shaping_reference(model, x, "scale", None, percentile, placement)
    np.testing.assert_allclose(det.score(x).numpy(), expected, rtol=1e-5, atol=1e-5)


def test_ash_p_at_zero_percentile_is_the_energy(model, x):
    energy = make_detector("energy", model).score(x)
    torch.testing.assert_close(make_detector("ash", model, variant="p", percentile=0).score(x), energy)


def test_all_zero_activations_score_the_bias_energy(model):
    features = torch.zeros(2, CHANNELS)
    outputs = ForwardOutputs(model=model, x=torch.zeros(2, 3, 8, 8), logits=torch.zeros(2, NUM_CLASSES),
                             features=features)
    expected = -torch.logsumexp(model.fc.bias.detach(), dim=0).expand(2)
    for name in ("ash", "scale"):
        torch.testing.assert_close(make_detector(name, model).score_forward(outputs), expected)


def test_shaping_overflow_is_refused_not_a_number():
    head = nn.Linear(10_000, 3)
    model = nn.Sequential(head).eval()
    features = torch.ones(2, 10_000)  # keeps 10 of 10,000 at 99.9 %: exp(10,000 / 10) overflows
    outputs = ForwardOutputs(model=model, x=features, logits=head(features).detach(), features=features)
    with pytest.raises(ModelError, match="non-finite scores for 2 of 2.*lower percentile"):
        make_detector("ash", model, percentile=99.9).score_forward(outputs)


@pytest.mark.parametrize("dim", [None, 3, 9])
def test_vim_matches_reference(model, x, dim):
    loader = fit_loader()
    det = make_detector("vim", model, dim=dim).fit(loader)
    used = principal_dim(CHANNELS) if dim is None else dim
    assert det.principal_dim == used
    np.testing.assert_allclose(det.score(x).numpy(), vim_reference(model, loader, x, used), rtol=1e-4, atol=1e-4)


def test_vim_principal_dim_rule():
    assert [principal_dim(d) for d in (4096, 2048, 1024, 768, 512, 64)] == [1000, 1000, 512, 512, 256, 32]


def test_vim_refuses_dim_at_the_feature_size_and_too_few_samples(model):
    with pytest.raises(ModelError, match="below the feature size 12"):
        make_detector("vim", model, dim=CHANNELS).fit(fit_loader())
    two = [(b[0][:2], b[1][:2]) for b in fit_loader(1)]  # 2 samples span at most 2 directions
    with pytest.raises(DataError, match="no residual"):
        make_detector("vim", model, dim=4).fit(two)


@pytest.mark.parametrize("gamma, top_m", [(0.1, 100), (0.5, 3), (2.0, 1)])
def test_gen_matches_reference(model, x, gamma, top_m):
    _, _, logits, _, _ = np_outputs(model, x)
    det = make_detector("gen", model, gamma=gamma, top_m=top_m)
    np.testing.assert_allclose(det.score(x).numpy(), gen_reference(logits, gamma, min(top_m, NUM_CLASSES)),
                               rtol=1e-5)


def test_gen_is_highest_for_a_flat_posterior(model):
    logits = torch.tensor([[0.0] * NUM_CLASSES, [9.0] + [0.0] * (NUM_CLASSES - 1)])
    scores = make_detector("gen", model).score_outputs(logits)
    assert scores[0] > scores[1]


def test_fdbd_matches_reference(model, x):
    loader = fit_loader()
    det = make_detector("fdbd", model).fit(loader)
    np.testing.assert_allclose(det.score(x).numpy(), fdbd_reference(model, loader, x), rtol=1e-5)


def test_fdbd_refuses_identical_class_weights(model):
    with torch.no_grad():
        model.fc.weight[3] = model.fc.weight[1]
    with pytest.raises(ModelError, match="classes 1 and 3 have identical head weights"):
        make_detector("fdbd", model).fit(fit_loader())


@pytest.mark.parametrize("k", [1, 10, 100])
def test_nnguide_matches_reference(model, x, k):
    loader = fit_loader()
    det = make_detector("nnguide", model, k=k).fit(loader)
    expected = nnguide_reference(model, loader, x, min(k, 40))  # k is clamped to the 40 in the bank
    np.testing.assert_allclose(det.score(x).numpy(), expected, rtol=1e-5, atol=1e-6)


def test_nnguide_bank_size_keeps_a_fixed_subset(model):
    loader = fit_loader()
    full = make_detector("nnguide", model).fit(loader).bank
    small = make_detector("nnguide", model, bank_size=15).fit(loader).bank
    assert small.shape == (15, CHANNELS) and full.shape == (40, CHANNELS)
    assert torch.equal(small, make_detector("nnguide", model, bank_size=15).fit(loader).bank)
    rows = (small[:, None, :] == full[None, :, :]).all(dim=2)
    assert bool((rows.sum(dim=1) == 1).all())  # every kept row is one of the fit samples
    assert torch.equal(make_detector("nnguide", model, bank_size=400).fit(loader).bank, full)


@pytest.mark.parametrize("percentile", [90.0, 50.0, 0.0])
def test_dice_matches_reference(model, x, percentile):
    loader = fit_loader()
    det = make_detector("dice", model, percentile=percentile).fit(loader)
    expected, mask = dice_reference(model, loader, x, percentile)
    assert np.array_equal(det.weight_mask.numpy(), mask)
    kept = round(mask.size * (1 - percentile / 100))
    assert abs(int(mask.sum()) - kept) <= 1
    np.testing.assert_allclose(det.score(x).numpy(), expected, rtol=1e-5, atol=1e-6)


# --------------------------------------------------------------------------- protocol


def test_parameters_are_the_issue_names_with_the_papers_defaults(model):
    assert {name: make_detector(name, model).params() for name in POSTHOC} == {
        "ash": {"variant": "ASH-S", "percentile": 90.0, "placement": "pooled"},
        "scale": {"percentile": 85.0, "placement": "pooled"},
        "vim": {"dim": None},
        "gen": {"gamma": 0.1, "top_m": 100},
        "fdbd": {},
        "nnguide": {"k": 10, "bank_size": None},
        "dice": {"percentile": 90.0},
    }
    assert make_detector("ash", model, variant=" ash-b ").variant == "ASH-B"
    assert make_detector("ash", model, variant="p").variant == "ASH-P"
    for name in POSTHOC:
        params = make_detector(name, model).params()
        assert make_detector(name, model, **params).params() == params
    assert [DETECTORS[m].label for m in POSTHOC] == ["ASH", "SCALE", "ViM", "GEN", "fDBD", "NNGuide", "DICE"]


@pytest.mark.parametrize("name, params, match", [
    ("ash", dict(percentile=100), r"percentile must be in \[0, 100\)"),
    ("ash", dict(percentile=-1), "percentile"),
    ("ash", dict(variant="ASH-X"), "ASH-P, ASH-B, ASH-S"),
    ("ash", dict(placement="stem"), "pooled, map"),
    ("scale", dict(percentile=float("nan")), "percentile"),
    ("vim", dict(dim=0), "dim must be a positive integer"),
    ("vim", dict(dim=2.5), "dim must be a positive integer"),
    ("gen", dict(gamma=0), "gamma must be positive"),
    ("gen", dict(top_m=0), "top_m"),
    ("nnguide", dict(k=0), "k must be"),
    ("nnguide", dict(bank_size=0), "bank_size"),
    ("dice", dict(percentile=100), "percentile"),
])
def test_invalid_parameters(model, name, params, match):
    with pytest.raises(ModelError, match=match):
        make_detector(name, model, **params)


def test_percentile_keeping_nothing_is_refused(model, x):
    with pytest.raises(ModelError, match="keeps none of the 12"):
        make_detector("ash", model, percentile=99).score(x)


@pytest.mark.parametrize("name", FITTED)
def test_fitted_state_round_trips(model, x, name):
    det = make_detector(name, model)
    with pytest.raises(ModelError, match="fit"):
        det.score(x)
    det.fit(fit_loader())
    state = det.fitted_state()
    assert set(state) == set(det.fitted_keys)
    restored = make_detector(name, model).load_fitted_state(state)
    assert restored.is_fitted
    torch.testing.assert_close(restored.score(x), det.score(x))
    with pytest.raises(ModelError, match="lacks"):
        make_detector(name, model).load_fitted_state({})


@pytest.mark.parametrize("name", POSTHOC)
def test_scoring_leaves_the_model_as_found(model, x, name):
    model.train()
    det = make_detector(name, model)
    if det.needs_fit:
        det.fit(fit_loader())
    before = {k: v.clone() for k, v in model.state_dict().items()}
    scores = det.score(x)
    assert scores.shape == (7,) and scores.dtype == torch.float32 and bool(torch.isfinite(scores).all())
    assert model.training and model.bn.training
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    assert not any(p.grad is not None for p in model.parameters())


def test_feature_map_check_runs_once(model, x, monkeypatch):
    from gaia_viz.detectors import shaping

    calls = []
    real = shaping.check_pooled_map
    monkeypatch.setattr(shaping, "check_pooled_map", lambda *a: calls.append(1) or real(*a))
    det = make_detector("ash", model, placement="map")
    det.score(x)
    det.score(x)
    assert len(calls) == 1


# --------------------------------------------------------------------------- bad models


@pytest.mark.parametrize("name", ["ash", "scale", "vim", "fdbd", "nnguide", "dice"])
def test_model_without_linear_head_is_a_clear_model_error(name, x):
    model = ConvHeadNet().eval()
    det = make_detector(name, model)
    with pytest.raises(ModelError, match="not on pooled features|no nn.Linear"):
        det.check_model(x)
    with pytest.raises(ModelError, match="not on pooled features|no nn.Linear"):
        det.fit(fit_loader()) if det.needs_fit else det.score(x)


def test_logit_only_gen_runs_without_a_head(x):
    model = ConvHeadNet().eval()
    make_detector("gen", model).check_model(x)
    assert torch.isfinite(make_detector("gen", model).score(x)).all()


@pytest.mark.parametrize("name", ["ash", "scale"])
def test_feature_map_placement_refuses_a_head_that_does_not_average_the_map(name, x):
    model = tiny_model(pool=nn.AdaptiveMaxPool2d(1))
    with pytest.raises(ModelError, match="not the spatial mean of the last spatial layer 'relu'.*placement='pooled'"):
        make_detector(name, model, placement="map").check_model(x)
    make_detector(name, model).check_model(x)  # on the pooled features it is fine
    assert torch.isfinite(make_detector(name, model).score(x)).all()


class TensorSet(torch.utils.data.Dataset):
    def __init__(self, name, n, seed, shift=0.0):
        g = torch.Generator().manual_seed(seed)
        self.name = name
        self.x = torch.randn(n, 3, 8, 8, generator=g) + shift
        self.y = torch.randint(0, NUM_CLASSES, (n,), generator=g)

    def __len__(self):
        return len(self.x)

    def __getitem__(self, i):
        return self.x[i], int(self.y[i])


def evaluate(model, methods, method_params=None):
    id_set, fit_set = TensorSet("id", 20, 1), TensorSet("fit", 30, 3)
    settings = sweep.SweepSettings(methods=methods, method_params=method_params or {}, batch_size=8)
    return sweep.evaluate(model, id_set, {"ood": TensorSet("ood", 16, 2, shift=1.5)}, settings,
                          fit_set=fit_set, use_cache=False)


def test_sweep_leaves_out_the_methods_a_headless_model_cannot_feed_and_says_so_once():
    methods = ["msp", "gen", "ash", "vim", "dice", "energy", "knn"]
    with pytest.warns(UserWarning, match="left out") as caught:
        ev = evaluate(ConvHeadNet().eval(), methods)
    assert len([w for w in caught if "left out" in str(w.message)]) == 1
    assert ev.methods == ["msp", "gen", "energy"] == ev.config.methods
    assert set(ev.config.left_out) == {"ash", "vim", "dice", "knn"}
    assert all("pooled features" in reason for reason in ev.config.left_out.values())
    assert "ash" not in ev.scores.columns and "ash" not in ev.config.method_params
    assert ev.metrics_table()["auroc"].between(0, 1).all()
    assert ev.config.to_dict()["left_out"] == ev.config.left_out


def test_sweep_raises_when_no_chosen_method_can_run():
    with pytest.raises(ModelError, match="no chosen method can run.*ash:.*dice:"):
        evaluate(ConvHeadNet().eval(), ["ash", "dice"])


def test_sweep_leaves_out_a_map_placement_the_model_does_not_pool():
    model = tiny_model(pool=nn.AdaptiveMaxPool2d(1))
    with pytest.warns(UserWarning, match="left out.*ash: ASH with placement='map'"):
        ev = evaluate(model, ["ash", "scale"], {"ash": {"placement": "map"}})
    assert ev.methods == ["scale"] and list(ev.config.left_out) == ["ash"]


def test_sweep_on_a_usable_model_leaves_nothing_out(model):
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        ev = evaluate(model, POSTHOC)
    assert ev.methods == POSTHOC and ev.config.left_out == {}


def test_sweep_with_gaia_gives_map_placement_the_same_scores_as_alone(model):
    # GAIA's gradient pass keeps the feature map for ASH/SCALE instead of the plain forward
    ev = evaluate(model, ["gaia_z", "ash", "scale"], {"ash": {"placement": "map"}, "scale": {"placement": "map"}})
    x = TensorSet("id", 20, 1).x
    for name in ("ash", "scale"):
        alone = make_detector(name, model, placement="map").score(x).double().numpy()
        np.testing.assert_allclose(ev.method_scores(name, "id"), alone, rtol=1e-6)
    assert ev.config.method_params["ash"] == {"variant": "ASH-S", "percentile": 90.0, "placement": "map"}


# --------------------------------------------------------------------------- pytorch-ood cross-check

def same_ranks(ours: np.ndarray, theirs: np.ndarray, tolerance: float) -> bool:
    """True when no pair of samples is ordered differently by more than ``tolerance``: in
    our order, their scores never fall below an earlier one by more than it."""
    in_our_order = theirs[np.argsort(ours, kind="stable")]
    return bool((np.maximum.accumulate(in_our_order) - in_our_order).max() <= tolerance)


@pytest.fixture(scope="module")
def resnet20_outputs():
    """ResNet-20 on 1,000 CIFAR-10 test images and 500 center-cropped textures (pooled
    features, feature maps, logits) and on cifar10/train-5k (the fit pass)."""
    pytest.importorskip("pytorch_ood", reason="pytorch-ood is not installed (pip install -r requirements-dev.txt)")
    checkpoint = DATA_ROOT / "models" / "cifar10_resnet20.th"
    if not (DATA_ROOT / "cifar10" / "train-5k").is_dir() or not (DATA_ROOT / "textures").is_dir() \
            or not checkpoint.is_file():
        pytest.skip(f"real CIFAR-10 data, textures or ResNet-20 not found at {DATA_ROOT} (set GAIA_VIZ_DATA_ROOT)")
    from gaia_viz.data.image_sets import limit
    from gaia_viz.data.sources import open_source
    from gaia_viz.forward import collect_outputs
    from gaia_viz.models import load_model
    from gaia_viz.report import REAL_PRESET

    model = load_model("cifar_resnet20", checkpoint=checkpoint)
    id_set = limit(open_source(f"folder:{DATA_ROOT / 'cifar10' / 'test'}", REAL_PRESET, "resize"), 1000)
    textures = limit(open_source(f"folder:{DATA_ROOT / 'textures' / 'images'}", REAL_PRESET, "center-crop"), 500)
    fit_set = open_source(f"folder:{DATA_ROOT / 'cifar10' / 'train-5k'}", REAL_PRESET, "resize")
    parts = []
    for batch, _ in torch.utils.data.DataLoader(torch.utils.data.ConcatDataset([id_set, textures]), batch_size=250):
        parts.append(shared_forward(model, batch, ForwardNeeds(features=True, feature_map=True)))
    outputs = ForwardOutputs(model=model, x=torch.cat([p.x for p in parts]), logits=torch.cat([p.logits for p in parts]),
                             features=torch.cat([p.features for p in parts]),
                             feature_map=torch.cat([p.feature_map for p in parts]))
    fit = collect_outputs(model, torch.utils.data.DataLoader(fit_set, batch_size=250))
    return model, outputs, fit


def ours(resnet20_outputs, name, **params):
    model, outputs, fit = resnet20_outputs
    det = make_detector(name, model, **params)
    if det.needs_fit:
        det.fit_features(fit.features, fit.logits, fit.labels)
    return det.score_forward(outputs).double().numpy(), det


@pytest.mark.parametrize("placement", ["pooled", "map"])
def test_activation_shaping_equals_pytorch_ood(resnet20_outputs, placement):
    from pytorch_ood.detector import ASH, SCALE

    model, outputs, _ = resnet20_outputs
    activations = outputs.features[:, :, None, None] if placement == "pooled" else outputs.feature_map

    def head(maps):  # pytorch-ood's head: the global average pool and the Linear
        return model.linear(maps.mean(dim=(2, 3)))

    with torch.no_grad():
        for variant in ("ASH-S", "ASH-P", "ASH-B"):
            mine, _ = ours(resnet20_outputs, "ash", variant=variant, placement=placement)
            theirs = ASH(None, head, variant=variant.lower(), percentile=0.9).predict_feature_maps(activations)
            assert np.array_equal(np.argsort(mine, kind="stable"), np.argsort(theirs.double().numpy(), kind="stable"))
            np.testing.assert_allclose(mine, theirs.double().numpy(), rtol=1e-6, err_msg=variant)
        mine, _ = ours(resnet20_outputs, "scale", placement=placement)
        theirs = SCALE(None, head, percentile=0.85).predict_feature_maps(activations).double().numpy()
    assert np.array_equal(np.argsort(mine, kind="stable"), np.argsort(theirs, kind="stable"))
    np.testing.assert_allclose(mine, theirs, rtol=1e-6)


def test_vim_fdbd_nnguide_dice_equal_pytorch_ood(resnet20_outputs):
    from pytorch_ood.detector import DICE, NNGuide, ViM, fDBD

    model, outputs, fit = resnet20_outputs
    weight, bias = model.linear.weight.detach(), model.linear.bias.detach()
    mine_vim, vim = ours(resnet20_outputs, "vim")
    assert vim.principal_dim == 32  # D // 2 for ResNet-20's 64 features
    theirs_vim = ViM(None, d=32, w=weight, b=bias).fit_features(fit.features, fit.labels)
    assert theirs_vim.alpha == pytest.approx(vim.alpha, rel=1e-5)
    references = {
        "vim": theirs_vim,
        "fdbd": fDBD(None, model.linear).fit_features(fit.features),
        "nnguide": NNGuide(None, model.linear, k=10).fit_features(fit.features, fit.labels),
        "dice": DICE(None, weight, bias, p=0.9).fit_features(fit.features, fit.labels),
    }
    for name, reference in references.items():
        mine = mine_vim if name == "vim" else ours(resnet20_outputs, name)[0]
        with torch.no_grad():
            theirs = reference.predict_features(outputs.features).double().numpy()
        # float32 (pytorch-ood) against float64 (here): equal to 1e-5 of the score range (ViM:
        # 3e-5, its float32 eigendecomposition) and in the same order but for pairs closer
        tolerance = (3e-5 if name == "vim" else 1e-5) * np.abs(theirs).max()
        np.testing.assert_allclose(mine, theirs, rtol=0, atol=tolerance, err_msg=name)
        assert same_ranks(mine, theirs, 2 * tolerance), name
    dice = ours(resnet20_outputs, "dice")[1]
    assert torch.equal(dice.weight_mask, references["dice"].masked_w != 0)


def test_gen_equals_pytorch_ood_up_to_its_mean_and_clamp(resnet20_outputs):
    from pytorch_ood.detector import GEN

    _, outputs, _ = resnet20_outputs
    mine, _ = ours(resnet20_outputs, "gen")
    theirs = GEN.score(outputs.logits, gamma=0.1, M=10).double().numpy()
    probabilities = outputs.logits.double().softmax(dim=1)
    unclamped = ((probabilities >= 1e-7) & (probabilities <= 1 - 1e-7)).all(dim=1).numpy()
    assert unclamped.sum() > 100  # enough samples where the definitions agree
    # theirs is the mean of the M = 10 terms, in float32: 1 - p loses digits when p is near 1
    tolerance = 2e-5 * np.abs(theirs).max()
    np.testing.assert_allclose(mine[unclamped] / 10, theirs[unclamped], rtol=0, atol=tolerance)
    assert same_ranks(mine[unclamped] / 10, theirs[unclamped], 2 * tolerance)
    # where a probability is below 1e-7 pytorch-ood clamps it: scores differ, ranks nearly agree
    assert not np.allclose(mine[~unclamped] / 10, theirs[~unclamped], rtol=1e-3)
