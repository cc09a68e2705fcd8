"""GAIA-Z / GAIA-A against a brute-force reference written here, one sample at a time."""

import copy

import numpy as np
import pytest
import torch
import torch.nn.functional as F
import torchvision
from torch import nn

from gaia_viz import gaia
from gaia_viz.errors import LayerError, ModelError

from support import DATA_ROOT


# ----------------------------------------------------------------------------- reference


def _reference_layer_grads(model, x1, layers, objective_fn):
    """Plain autograd on a deep copy: full backward with parameter gradients on, forward
    hooks that keep each layer's output and hand a copy downstream (so in-place ops after
    it cannot touch it), ``retain_grad`` on the kept outputs. One sample."""
    ref = copy.deepcopy(model).eval()
    for module in ref.modules():
        if hasattr(module, "inplace"):
            module.inplace = False
    modules = dict(ref.named_modules())
    kept = {}

    def make_hook(name):
        def hook(_m, _i, out):
            out.retain_grad()
            kept[name] = out
            return out.clone()
        return hook

    head_inputs = []
    handles = [modules[n].register_forward_hook(make_hook(n)) for n in layers]
    linear = [m for m in ref.modules() if isinstance(m, nn.Linear)][0]
    handles.append(linear.register_forward_pre_hook(lambda _m, inp: head_inputs.append(inp[0])))
    logits = ref(x1)
    objective_fn(logits, head_inputs[0]).backward()
    for h in handles:
        h.remove()
    return {n: kept[n].grad for n in layers}


def reference_gaia_z(model, x, layers):
    scores = []
    for i in range(x.shape[0]):
        grads = _reference_layer_grads(model, x[i:i + 1], layers, lambda lg, _h: lg.max(1).values.sum())
        ratios = [(g[0] != 0).double().mean(dim=(1, 2)) for g in grads.values()]
        scores.append(torch.cat(ratios).pow(2).mean())
    return torch.stack(scores)


def reference_gaia_a(model, x, inner, head):
    scores = []
    for i in range(x.shape[0]):
        g_head = _reference_layer_grads(model, x[i:i + 1], [head],
                                        lambda lg, _h: F.log_softmax(lg, 1).sum())[head]
        o = g_head[0].double().mean(dim=(1, 2)).abs().mean().sqrt()
        grads = _reference_layer_grads(model, x[i:i + 1], inner, lambda _lg, h: h.sum())
        means = torch.cat([g[0].double().mean(dim=(1, 2)) for g in grads.values()])
        scores.append(((means.abs() / o) ** 2).mean())
    return torch.stack(scores)


# ----------------------------------------------------------------------------- models


class GroupNormNet(nn.Module):
    def __init__(self, num_classes=5):
        super().__init__()
        self.conv1 = nn.Conv2d(3, 8, 3, padding=1)
        self.gn1 = nn.GroupNorm(2, 8)
        self.conv2 = nn.Conv2d(8, 16, 3, stride=2, padding=1)
        self.gn2 = nn.GroupNorm(4, 16)
        self.conv3 = nn.Conv2d(16, 16, 3, stride=2, padding=1)
        self.gn3 = nn.GroupNorm(4, 16)
        self.fc = nn.Linear(16, num_classes)

    def forward(self, x):
        x = F.relu(self.gn1(self.conv1(x)))
        x = F.relu(self.gn2(self.conv2(x)))
        x = F.relu(self.gn3(self.conv3(x)))
        return self.fc(x.mean(dim=(2, 3)))


class NoNormNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(3, 8, 3, padding=1)
        self.conv2 = nn.Conv2d(8, 8, 3, padding=1)
        self.fc = nn.Linear(8, 3)

    def forward(self, x):
        x = F.relu(self.conv2(F.relu(self.conv1(x))))
        return self.fc(x.mean(dim=(2, 3)))


def _resnet18():
    torch.manual_seed(0)
    model = torchvision.models.resnet18(num_classes=10).eval()
    # random-init BN statistics make every ReLU half-dead in the same way; perturb them so
    # the zero patterns are sample-dependent like a trained model's
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.normal_(0, 0.1)
            m.running_var.uniform_(0.5, 2.0)
            m.weight.data.uniform_(0.5, 1.5)
            m.bias.data.normal_(0, 0.2)
    return model


def _cifar_resnet20():
    from gaia_viz import models
    path = DATA_ROOT / "models" / "cifar10_resnet20.th"
    if not path.exists():
        pytest.skip(f"shared CIFAR ResNet-20 checkpoint not found at {path} (set GAIA_VIZ_DATA_ROOT)")
    return models.load_model("cifar_resnet20", checkpoint=path)


def _groupnorm():
    torch.manual_seed(1)
    return GroupNormNet().eval()


MODELS = {
    "cifar_resnet20": (_cifar_resnet20, (3, 32, 32)),
    "torchvision_resnet18": (_resnet18, (3, 64, 64)),
    "groupnorm": (_groupnorm, (3, 16, 16)),
}


@pytest.fixture(params=sorted(MODELS))
def model_and_batch(request):
    build, shape = MODELS[request.param]
    model = build()
    torch.manual_seed(2)
    return model, torch.randn(3, *shape)


# ----------------------------------------------------------------------------- tests


def test_gaia_z_equals_reference_exactly(model_and_batch):
    model, x = model_and_batch
    model64, x64 = copy.deepcopy(model).double(), x.double()
    layers = gaia.default_layers(model64, x64)["zero"]
    ours = gaia.gaia_z(model64, x64)
    assert torch.equal(ours, reference_gaia_z(model64, x64, layers))
    # float32 path: same up to the rare ReLU mask that flips at rounding level
    assert torch.allclose(gaia.gaia_z(model, x), ours, rtol=1e-3)


def test_gaia_a_equals_reference(model_and_batch):
    model, x = model_and_batch
    model64, x64 = copy.deepcopy(model).double(), x.double()
    defaults = gaia.default_layers(model64, x64)
    ours = gaia.gaia_a(model64, x64)
    ref = reference_gaia_a(model64, x64, defaults["inner"], defaults["head"])
    assert torch.allclose(ours, ref, rtol=1e-5, atol=0)
    assert torch.allclose(gaia.gaia_a(model, x), ref, rtol=1e-3)


def test_default_layers_of_known_architectures():
    model = _resnet18()
    d = gaia.default_layers(model, torch.zeros(1, 3, 64, 64))
    assert d["head"] == "layer4"
    assert d["zero"][0] == "bn1" and "layer4.1.bn2" in d["zero"] and len(d["zero"]) == 20
    assert all(n.startswith(("layer3", "layer4")) for n in d["inner"])
    assert "layer3.0.downsample.1" in d["inner"]
    d = gaia.default_layers(_groupnorm(), torch.zeros(1, 3, 16, 16))
    assert d == {"zero": ["gn1", "gn2", "gn3"], "inner": ["gn2", "gn3"], "head": "gn3"}


def test_cifar_resnet20_default_layers():
    model = _cifar_resnet20()
    d = gaia.default_layers(model, torch.zeros(1, 3, 32, 32))
    assert d["head"] == "layer3"
    assert len(d["zero"]) == 19
    assert {n.split(".")[0] for n in d["inner"]} == {"layer2", "layer3"}


def test_inplace_relu_scores_like_out_of_place():
    model = _resnet18()
    copy_model = copy.deepcopy(model)
    for module in copy_model.modules():
        if isinstance(module, nn.ReLU):
            module.inplace = False
    x = torch.randn(4, 3, 64, 64)
    assert torch.equal(gaia.gaia_z(model, x), gaia.gaia_z(copy_model, x))
    assert torch.equal(gaia.gaia_a(model, x), gaia.gaia_a(copy_model, x))


class BatchNormAct2d(nn.BatchNorm2d):
    """A batch norm that also applies its activation (as timm's does): not a plain norm."""

    def forward(self, x):
        return F.relu(super().forward(x))


class BranchyNet(nn.Module):
    """Every case the backward-pass shortcuts (eval batch norm, conv folded into its norm,
    stopping at the upstream-most hooked layers) must get right: a conv output that is also
    read elsewhere, an in-place op between a conv and its norm, a branch straight from the
    input (a second leaf), a norm without affine parameters, a norm subclass with its own
    forward."""

    def __init__(self):
        super().__init__()
        self.stem = nn.Conv2d(3, 8, 3, padding=1)
        self.bn0 = nn.BatchNorm2d(8)
        self.conv_a = nn.Conv2d(8, 8, 3, padding=1)
        self.bn_a = BatchNormAct2d(8)
        self.conv_b = nn.Conv2d(8, 8, 3, stride=2, padding=1, bias=False)
        self.bn_b = nn.BatchNorm2d(8, affine=False)
        self.side = nn.Conv2d(3, 8, 3, stride=2, padding=1)
        self.bn_side = nn.BatchNorm2d(8)
        self.fc = nn.Linear(8, 4)

    def forward(self, x):
        h = F.relu(self.bn0(self.stem(x)))
        a = self.conv_a(h)
        h = self.bn_a(a) + 0.5 * torch.tanh(a)
        b = self.conv_b(h)
        b.mul_(1.5)
        h = F.relu(self.bn_b(b)) + F.relu(self.bn_side(self.side(x)))
        return self.fc(h.mean(dim=(2, 3)))


def _branchy():
    torch.manual_seed(4)
    model = BranchyNet()
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.normal_(0, 0.2)
            m.running_var.uniform_(0.5, 2.0)
            if m.affine:
                m.weight.data.uniform_(0.5, 1.5)
                m.bias.data.normal_(0, 0.2)
    return model.eval().double()


@pytest.mark.parametrize("layers", [
    None,  # every norm: two leaves (bn0 and bn_side), the rest reduced by hooks
    ["conv_a", "bn_a", "bn_b", "bn_side"],  # a hooked conv must not be folded into its norm
    ["bn_b"],
])
def test_backward_shortcuts_match_plain_autograd(layers):
    model = _branchy()
    torch.manual_seed(5)
    x = torch.randn(4, 3, 12, 12, dtype=torch.float64)
    names = layers or gaia.default_layers(model, x)["zero"]
    grads = gaia.layer_gradients(model, x, names)
    for i in range(x.shape[0]):
        ref = _reference_layer_grads(model, x[i:i + 1], names, lambda lg, _h: lg.max(1).values.sum())
        for name in names:
            assert torch.equal(grads[name][i] != 0, ref[name][0] != 0), name
            assert torch.allclose(grads[name][i], ref[name][0], rtol=1e-12, atol=1e-15), name
    # same zero counts (above); the score sums them in another order than the reference
    assert torch.allclose(gaia.gaia_z(model, x, layers=names), reference_gaia_z(model, x, names),
                          rtol=1e-14, atol=0)


def test_input_gradient_shares_the_forward_without_changing_gaia():
    model = _branchy()
    x = torch.randn(3, 3, 12, 12, dtype=torch.float64)
    plain = gaia.gaia_analyze(model, x)
    shared = gaia.gaia_analyze(model, x, input_objective=lambda logits: logits.logsumexp(1).sum())
    for name in plain.zero_layers:
        assert torch.equal(plain.nonzero_ratio[name], shared.nonzero_ratio[name])
    assert torch.allclose(plain.gaia_a, shared.gaia_a, rtol=1e-12)
    x_leaf = x.clone().requires_grad_()
    (expected,) = torch.autograd.grad(model(x_leaf).logsumexp(1).sum(), x_leaf)
    assert torch.allclose(shared.input_grad, expected, rtol=1e-12, atol=1e-15)
    assert all(p.grad is None for p in model.parameters())


def test_batch_independence():
    model = _resnet18()
    torch.manual_seed(3)
    x = torch.randn(6, 3, 64, 64).double()
    model = model.double()
    full = gaia.gaia_analyze(model, x)
    part = gaia.gaia_analyze(model, x[2:4])
    shuffled = gaia.gaia_analyze(model, x[[4, 2, 0, 3]])
    assert torch.equal(full.gaia_z[2:4], part.gaia_z)
    assert torch.allclose(full.gaia_a[2:4], part.gaia_a, rtol=1e-10)
    assert torch.equal(full.gaia_z[[4, 2, 0, 3]], shuffled.gaia_z)


def _state(model):
    return (
        [m.training for m in model.modules()],
        [p.requires_grad for p in model.parameters()],
        [len(m._forward_hooks) + len(m._forward_pre_hooks) + len(m._backward_hooks) for m in model.modules()],
        [p.grad for p in model.parameters()],
    )


def test_model_left_exactly_as_found_and_no_parameter_grads():
    model = _resnet18().train()
    model.layer1.requires_grad_(False)
    before = _state(model)
    gaia.gaia_analyze(model, torch.randn(2, 3, 64, 64))
    gaia.spatial_maps(model, torch.randn(1, 3, 64, 64), "layer2.0.bn1")
    after = _state(model)
    assert before[:3] == after[:3]
    assert all(g is None for g in after[3]), "a parameter gradient was computed"
    assert model.training


def test_model_restored_after_exception():
    model = _resnet18().train()
    gaia.gaia_analyze(model, torch.randn(1, 3, 64, 64))  # layout cached: the error comes mid-pass
    before = _state(model)

    def boom(*_):
        raise RuntimeError("boom")

    handle = model.layer2.register_forward_hook(boom)
    with pytest.raises(RuntimeError, match="boom"):
        gaia.gaia_analyze(model, torch.randn(2, 3, 64, 64))
    handle.remove()
    assert _state(model)[:3] == before[:3]
    with pytest.raises(LayerError):
        gaia.gaia_z(model, torch.randn(2, 3, 64, 64), layers=["no.such.layer"])
    assert _state(model)[:3] == before[:3]


def test_partial_sums_recompute_any_subset():
    model = _groupnorm()
    x = torch.randn(5, 3, 16, 16)
    full = gaia.gaia_analyze(model, x)
    subset = ["gn1", "gn3"]
    direct = gaia.gaia_z(model, x, layers=subset)
    mask = np.array([n in subset for n in full.zero_layers])
    recomputed = gaia.gaia_z_from_partials(full.zero_partial_sums.numpy(), full.zero_channel_counts, mask)
    assert np.allclose(recomputed, direct.numpy(), rtol=1e-6)
    direct_a = gaia.gaia_a(model, x, inner_layers=["gn3"])
    mask_a = np.array([n == "gn3" for n in full.inner_layers])
    recomputed_a = gaia.gaia_a_from_partials(full.avg_partial_sums.numpy(), full.avg_channel_counts,
                                             full.output_component.numpy(), mask_a)
    assert np.allclose(recomputed_a, direct_a.numpy(), rtol=1e-6)
    assert full.predictions.shape == (5,) and full.logits.shape == (5, 5)
    assert full.nonzero_ratio["gn2"].shape == (5, 16)
    with pytest.raises(LayerError):
        gaia.gaia_z_from_partials(full.zero_partial_sums.numpy(), full.zero_channel_counts, np.zeros(3, bool))


def test_spatial_maps_shapes_and_ranges():
    model = _resnet18()
    maps = gaia.spatial_maps(model, torch.randn(2, 3, 64, 64), "layer3.0.bn1")
    assert maps["nonzero_fraction"].shape == (2, 4, 4)
    assert 0 <= maps["nonzero_fraction"].min() and maps["nonzero_fraction"].max() <= 1
    assert (maps["abs_channel_mean"] >= 0).all()


def test_models_without_norm_layers_fall_back_to_convolutions():
    model = NoNormNet().eval()
    with pytest.warns(UserWarning, match="no normalisation layers"):
        d = gaia.default_layers(model, torch.zeros(1, 3, 8, 8))
    assert d["zero"] == ["conv1", "conv2"]
    with pytest.warns(UserWarning):
        scores = gaia.gaia_z(model, torch.randn(2, 3, 8, 8))
    assert scores.shape == (2,) and torch.isfinite(scores).all()


def test_bad_layers_and_devices_give_clear_errors():
    model = _groupnorm()
    x = torch.randn(2, 3, 16, 16)
    with pytest.raises(LayerError, match="gn1"):
        gaia.gaia_z(model, x, layers=["fc"])  # a Linear output is not a feature map
    with pytest.raises(LayerError):
        gaia.gaia_z(model, x, layers=[])
    with pytest.raises(ValueError):
        gaia.gaia_z(model, torch.randn(3, 16, 16))
    if not torch.cuda.is_available():
        with pytest.raises(ModelError, match="move the model"):
            gaia.gaia_z(model, x, device="cuda")


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_cuda_matches_cpu():
    model = _resnet18()
    x = torch.randn(4, 3, 64, 64)
    cpu = gaia.gaia_analyze(model, x)
    gpu = gaia.gaia_analyze(copy.deepcopy(model).cuda(), x, device="cuda")
    assert torch.allclose(cpu.gaia_z, gpu.gaia_z, rtol=1e-3)
    assert torch.allclose(cpu.gaia_a, gpu.gaia_a, rtol=1e-3)


def test_threads_sharing_one_model_do_not_see_each_others_hooks():
    """A cached model used by two Streamlit reruns at once: every call must stay correct."""
    import threading

    from gaia_viz.detectors import make_detector

    model = _resnet18()
    x = torch.randn(2, 3, 64, 64)
    expected_z, expected_a = gaia.gaia_z(model, x), gaia.gaia_a(model, x)
    energy = make_detector("energy", model)
    errors, results = [], []

    def work(kind):
        try:
            for _ in range(3):
                if kind == "z":
                    results.append(("z", gaia.gaia_z(model, x)))
                elif kind == "a":
                    results.append(("a", gaia.gaia_a(model, x)))
                else:
                    energy.score(x)
        except Exception as exc:  # noqa: BLE001 (the test reports whatever went wrong)
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(k,)) for k in ("z", "a", "e", "z")]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    for kind, value in results:
        assert torch.equal(value, expected_z if kind == "z" else expected_a)
    assert all(len(m._forward_hooks) + len(m._forward_pre_hooks) == 0 for m in model.modules())
