"""Tests of gaia_viz.detectors: each method against its published formula on a tiny model."""

import copy
import warnings

import numpy as np
import pytest
import torch
from torch import nn

from gaia_viz.detectors import (
    DETECTORS,
    KNN,
    METHOD_LABELS,
    MSP,
    ODIN,
    Energy,
    GradNorm,
    Mahalanobis,
    MaxLogit,
    ReAct,
    features_and_logits,
    make_detector,
)
from gaia_viz.errors import DataError, ModelError
from support import tiny_net

NUM_CLASSES = 4


@pytest.fixture
def model():
    return tiny_net(channels=8, classes=NUM_CLASSES)  # non-default running statistics: train and eval forwards differ


@pytest.fixture
def x():
    return torch.randn(6, 3, 8, 8, generator=torch.Generator().manual_seed(1))


def id_loader(n_batches=3, batch=10, labels=True, seed=2):
    g = torch.Generator().manual_seed(seed)
    batches = []
    for _ in range(n_batches):
        xb = torch.randn(batch, 3, 8, 8, generator=g)
        if labels:
            batches.append((xb, torch.randint(0, NUM_CLASSES, (batch,), generator=g), "extra"))
        else:
            batches.append(xb)
    return batches


def loader_features(model, loader):
    with torch.no_grad():
        xs = torch.cat([b[0] if isinstance(b, tuple) else b for b in loader])
        return model.penultimate(xs).double().numpy(), model(xs).double().numpy()


def np_logits(model, x):
    with torch.no_grad():
        return model(x).double().numpy()


def np_logsumexp(a, axis=1):
    m = a.max(axis=axis, keepdims=True)
    return (m + np.log(np.exp(a - m).sum(axis=axis, keepdims=True))).squeeze(axis)


def np_softmax(a):
    e = np.exp(a - a.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


# ----------------------------------------------------------------- features / protocol


def test_features_and_logits_captures_head_input_and_removes_hook(model, x):
    with torch.no_grad():
        features, logits = features_and_logits(model, x)
        torch.testing.assert_close(features, model.penultimate(x))
        torch.testing.assert_close(logits, model(x))
    assert len(model.fc._forward_pre_hooks) == 0


def test_features_and_logits_without_linear_head():
    no_head = nn.Sequential(nn.Conv2d(3, 2, 3), nn.Flatten())
    with pytest.raises(ModelError, match="no nn.Linear"):
        features_and_logits(no_head, torch.zeros(1, 3, 5, 5))


def test_hook_removed_when_forward_fails(model):
    with pytest.raises(RuntimeError):
        features_and_logits(model, torch.zeros(1, 5, 8, 8))  # wrong channel count
    assert len(model.fc._forward_pre_hooks) == 0


@pytest.mark.parametrize("name", ["msp", "maxlogit", "energy", "gradnorm"])
def test_score_equals_score_outputs_and_restores_train_mode(model, x, name):
    det = make_detector(name, model)
    expected = det.score(x)
    with torch.no_grad():
        features, logits = features_and_logits(model, x)
    torch.testing.assert_close(det.score_outputs(logits, features).float(), expected)
    model.train()
    torch.testing.assert_close(det.score(x), expected)  # scored in eval mode anyway
    assert model.training and model.bn.training
    assert expected.shape == (x.shape[0],) and expected.dtype == torch.float32


# ----------------------------------------------------------------- logit-based methods


def test_msp_formula(model, x):
    expected = -np_softmax(np_logits(model, x)).max(axis=1)
    np.testing.assert_allclose(MSP(model).score(x).numpy(), expected, rtol=1e-6, atol=1e-7)


def test_maxlogit_formula(model, x):
    expected = -np_logits(model, x).max(axis=1)
    np.testing.assert_allclose(MaxLogit(model).score(x).numpy(), expected, rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("temperature", [1.0, 2.5])
def test_energy_formula(model, x, temperature):
    logits = np_logits(model, x)
    expected = -temperature * np_logsumexp(logits / temperature)
    got = Energy(model, temperature=temperature).score(x).numpy()
    np.testing.assert_allclose(got, expected, rtol=1e-6, atol=1e-6)


def test_invalid_temperature(model):
    with pytest.raises(ModelError, match="temperature"):
        Energy(model, temperature=0.0)


# ----------------------------------------------------------------- ODIN


def odin_reference(model, x, temperature, epsilon, std=None):
    ref = copy.deepcopy(model).eval()
    xl = x.clone().requires_grad_(True)
    logits = ref(xl) / temperature
    loss = -torch.log_softmax(logits, 1).gather(1, logits.argmax(1, keepdim=True)).sum()
    loss.backward()
    step = torch.sign(xl.grad)
    if std is not None:
        step = step / torch.tensor(std).view(1, -1, 1, 1)
    with torch.no_grad():
        out = ref(x - epsilon * step) / temperature
    return -torch.softmax(out, 1).amax(1)


@pytest.mark.parametrize("std", [None, (0.2, 0.3, 0.4)])
def test_odin_formula(model, x, std):
    det = ODIN(model, temperature=1000.0, epsilon=0.01, input_std=std)
    torch.testing.assert_close(det.score(x), odin_reference(model, x, 1000.0, 0.01, std))


def test_odin_without_perturbation_is_tempered_msp(model, x):
    expected = -np_softmax(np_logits(model, x) / 7.0).max(axis=1)
    got = ODIN(model, temperature=7.0, epsilon=0.0).score(x).numpy()
    np.testing.assert_allclose(got, expected, rtol=1e-6, atol=1e-7)


def test_odin_leaves_model_untouched(model, x):
    expected = odin_reference(model, x, 1000.0, 0.0014)
    model.train()
    model.conv.bias.requires_grad_(False)
    flags = {n: p.requires_grad for n, p in model.named_parameters()}
    x_in = x.clone()
    scores = ODIN(model).score(x_in)
    torch.testing.assert_close(scores, expected)  # scored in eval mode
    assert model.training and all(m.training for m in model.modules())
    assert {n: p.requires_grad for n, p in model.named_parameters()} == flags
    assert all(p.grad is None for p in model.parameters())
    assert not x_in.requires_grad and x_in.grad is None
    assert torch.equal(x_in, x)


def test_odin_perturbation_raises_tempered_confidence(model, x):
    # One small step against the cross-entropy gradient lowers the CE of the predicted
    # class, so the tempered max softmax grows and the OOD score drops, for every sample.
    plain = ODIN(model, temperature=1000.0, epsilon=0.0).score(x)
    perturbed = ODIN(model, temperature=1000.0, epsilon=1e-3).score(x)
    assert torch.all(perturbed < plain)


# ----------------------------------------------------------------- GradNorm


@pytest.mark.parametrize("temperature", [1.0, 3.0])
def test_gradnorm_batched_equals_per_sample_autograd(model, x, temperature):
    ref = copy.deepcopy(model).eval()
    expected = []
    for i in range(x.shape[0]):
        ref.zero_grad()
        logits = ref(x[i : i + 1]) / temperature
        uniform = torch.full_like(logits, 1.0 / NUM_CLASSES)
        # KL(u || softmax) up to a constant, as in the GradNorm code.
        loss = torch.sum(-uniform * torch.log_softmax(logits, dim=1))
        loss.backward()
        expected.append(-ref.fc.weight.grad.abs().sum().item())
    got = GradNorm(model, temperature=temperature).score(x)
    np.testing.assert_allclose(got.numpy(), expected, rtol=1e-5, atol=1e-6)
    assert all(p.grad is None for p in model.parameters())


# ----------------------------------------------------------------- ReAct


def test_react_clips_at_percentile(model, x):
    loader = id_loader()
    det = ReAct(model, percentile=90).fit(loader)
    features, _ = loader_features(model, loader)
    clip = np.percentile(features.ravel(), 90)
    assert det.clip_value == pytest.approx(clip)
    with torch.no_grad():
        h = model.penultimate(x)
        assert (h > det.clip_value).any()  # the clip actually bites on this batch
        clipped_logits = model.fc(h.clamp(max=det.clip_value)).double().numpy()
    expected = -np_logsumexp(clipped_logits)
    np.testing.assert_allclose(det.score(x).numpy(), expected, rtol=1e-5, atol=1e-6)
    # At the 100th percentile nothing is clipped on the fit data: plain energy.
    full = ReAct(model, percentile=100).fit(loader)
    xs = torch.cat([b[0] for b in loader])
    torch.testing.assert_close(full.score(xs), Energy(model).score(xs))


def test_react_invalid_percentile(model):
    with pytest.raises(ModelError, match="percentile"):
        ReAct(model, percentile=0)


# ----------------------------------------------------------------- KNN


@pytest.mark.parametrize("k,chunk", [(1, 4096), (5, 7), (1000, 11)])
def test_knn_matches_brute_force(model, x, k, chunk):
    loader = id_loader(labels=False)
    det = KNN(model, k=k, chunk_size=chunk).fit(loader)
    bank, _ = loader_features(model, loader)
    bank = bank / np.linalg.norm(bank, axis=1, keepdims=True)
    with torch.no_grad():
        q = model.penultimate(x).double().numpy()
    q = q / np.linalg.norm(q, axis=1, keepdims=True)
    dists = np.linalg.norm(q[:, None, :] - bank[None, :, :], axis=2)
    k_eff = min(k, bank.shape[0])
    expected = np.sort(dists, axis=1)[:, k_eff - 1]
    assert det.effective_k == k_eff
    np.testing.assert_allclose(det.score(x).numpy(), expected, rtol=1e-4, atol=1e-4)


def test_knn_invalid_k(model):
    with pytest.raises(ModelError, match="k must"):
        KNN(model, k=0)


# ----------------------------------------------------------------- Mahalanobis


def mahalanobis_reference(model, loader, x, labels, ridge):
    feats, _ = loader_features(model, loader)
    classes = np.unique(labels)
    means = np.stack([feats[labels == c].mean(0) for c in classes])
    centred = feats - means[np.searchsorted(classes, labels)]
    cov = centred.T @ centred / feats.shape[0]
    cov += ridge * np.trace(cov) / cov.shape[0] * np.eye(cov.shape[0])
    prec = np.linalg.pinv(cov)
    with torch.no_grad():
        h = model.penultimate(x).double().numpy()
    diff = h[:, None, :] - means[None, :, :]
    return np.einsum("bcd,de,bce->bc", diff, prec, diff).min(axis=1)


def test_mahalanobis_matches_numpy(model, x):
    loader = id_loader(n_batches=4)
    labels = torch.cat([b[1] for b in loader]).numpy()
    det = Mahalanobis(model, ridge=1e-6).fit(loader)
    assert det.label_source == "labels"
    expected = mahalanobis_reference(model, loader, x, labels, 1e-6)
    np.testing.assert_allclose(det.score(x).numpy(), expected, rtol=1e-4, atol=1e-4)


def test_mahalanobis_unlabelled_uses_predictions(model, x):
    loader = id_loader(n_batches=4, labels=False)
    with pytest.warns(UserWarning, match="predicted class"):
        det = Mahalanobis(model).fit(loader)
    assert det.label_source == "predicted"
    _, logits = loader_features(model, loader)
    expected = mahalanobis_reference(model, loader, x, logits.argmax(1), 1e-6)
    np.testing.assert_allclose(det.score(x).numpy(), expected, rtol=1e-4, atol=1e-4)


def test_mahalanobis_labels_out_of_range(model):
    loader = [(torch.randn(4, 3, 8, 8), torch.tensor([0, 1, 2, NUM_CLASSES]))]
    with pytest.raises(DataError, match="classes"):
        Mahalanobis(model).fit(loader)


# ----------------------------------------------------------------- fitting protocol


@pytest.mark.parametrize("name", ["react", "knn", "mahalanobis"])
def test_fitted_detectors_refuse_to_score_before_fit(model, x, name):
    det = make_detector(name, model)
    assert det.needs_fit and not det.is_fitted
    with pytest.raises(ModelError, match="fit"):
        det.score(x)
    with pytest.raises(DataError, match="no batches"):
        det.fit([])


@pytest.mark.parametrize("name", ["react", "knn", "mahalanobis"])
def test_fit_restores_mode(model, name):
    model.train()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        det = make_detector(name, model).fit(id_loader())
    assert det.is_fitted and model.training and model.bn.training


def test_fit_is_noop_for_unfitted_methods(model):
    det = MSP(model)
    assert det.fit(id_loader()) is det and det.is_fitted


# ----------------------------------------------------------------- registry


def test_registry_contents():
    assert list(DETECTORS) == ["gaia_z", "gaia_a", "msp", "maxlogit", "energy", "odin",
                               "gradnorm", "react", "knn", "mahalanobis",
                               "ash", "scale", "vim", "gen", "fdbd", "nnguide", "dice"]
    assert set(METHOD_LABELS) == set(DETECTORS)
    assert METHOD_LABELS["gaia_z"] == "GAIA-Z" and METHOD_LABELS["msp"] == "MSP"
    for name, cls in DETECTORS.items():
        assert cls.name == name
    assert DETECTORS["odin"].needs_grad and not DETECTORS["odin"].forward_only
    assert DETECTORS["gradnorm"].forward_only and not DETECTORS["gradnorm"].needs_grad


def test_make_detector_and_params(model):
    det = make_detector(" ODIN ", model, temperature=10, epsilon=0.001)
    assert isinstance(det, ODIN)
    assert det.params() == {"temperature": 10.0, "epsilon": 0.001, "input_std": None}
    assert make_detector("knn", model, **make_detector("knn", model, k=3).params()).k == 3
    assert make_detector("gaia_a", model, inner_layers="bn").params() == {
        "inner_layers": ("bn",), "head_layer": None}
    assert "temperature=10.0" in repr(det)


def test_make_detector_errors(model):
    with pytest.raises(ModelError, match="unknown detector 'foo'.*gaia_z.*mahalanobis"):
        make_detector("foo", model)
    with pytest.raises(ModelError, match="no parameter.*eps.*temperature, epsilon, input_std"):
        make_detector("odin", model, eps=0.1)
    with pytest.raises(ModelError, match="accepts: none"):
        make_detector("msp", model, temperature=2)


# ----------------------------------------------------------------- GAIA wrappers


def test_gaia_wrappers_delegate_to_gaia_module(model, x):
    from gaia_viz import gaia

    torch.testing.assert_close(make_detector("gaia_z", model).score(x),
                               gaia.gaia_z(model, x).float())
    torch.testing.assert_close(make_detector("gaia_z", model, layers=["bn"]).score(x),
                               gaia.gaia_z(model, x, layers=["bn"]).float())
    torch.testing.assert_close(
        make_detector("gaia_a", model, inner_layers=["bn"], head_layer="relu").score(x),
        gaia.gaia_a(model, x, inner_layers=["bn"], head_layer="relu").float())

