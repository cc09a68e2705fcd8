"""GAIA on the models people use: BiT, timm and torchvision, correct or clearly refused.

* BiT-S-R50x1 (random init, random GroupNorm affine parameters) against a brute-force
  reference written here from the architecture's formulas, with the paper's default layers;
* BiT checkpoints in GradNorm's ``.pth.tar`` format and Big Transfer's ``.npz``;
* a norm fused with its activation scores exactly like the same model unfused;
* timm ResNet-50 and RegNet against a brute-force reference (plain autograd, one sample);
* the warning when GAIA-Z's gradients hold no exact zeros (EfficientNet, ConvNeXt), in the
  library, the sweep, the CLI and metrics.json; the refusal of token models (ViT, Swin);
* timm weights from a fake local Hugging Face cache (never the network);
* the README's support table, every row measured on random weights.
"""

import copy
import json
import re
import warnings
from collections import OrderedDict
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from gaia_viz import gaia
from gaia_viz.errors import CheckpointError, LayerError, ModelError
from gaia_viz.gaia.zeros import EXACT_ZERO_THRESHOLD, NoExactZerosWarning
from gaia_viz.models import classifier_head, load_model

timm = pytest.importorskip("timm", reason="timm is in requirements.txt: pip install timm")

from support import ROOT
BIT_BLOCK4_NORMS = [f"body.block4.unit{u:02d}.gn{k}" for u in (1, 2, 3) for k in (1, 2, 3)]


def _images(n=2, size=128, seed=0):
    return torch.randn(n, 3, size, size, generator=torch.Generator().manual_seed(seed))


def _randomise_norms(model, seed=0):
    """Random affine parameters (and running statistics) so that the norms are not identities."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, (nn.GroupNorm, nn.BatchNorm2d)) and module.weight is not None:
                module.weight.copy_(torch.rand(module.weight.shape, generator=g) + 0.5)
                module.bias.copy_(torch.randn(module.bias.shape, generator=g) * 0.5)
            if isinstance(module, nn.BatchNorm2d) and module.running_mean is not None:
                module.running_mean.copy_(torch.randn(module.running_mean.shape, generator=g) * 0.1)
                module.running_var.copy_(torch.rand(module.running_var.shape, generator=g) + 0.5)
    return model


# ----------------------------------------------------------------------------- BiT by formulas


def _standardised(weight):
    var, mean = torch.var_mean(weight, dim=[1, 2, 3], keepdim=True, unbiased=False)
    return (weight - mean) / torch.sqrt(var + 1e-10)


def bit_by_formulas(params, x, kept):
    """BiT ResNet-v2 R50 written from its definition: weight-standardised convs, GroupNorm(32),
    pre-activation bottlenecks (stride on the 3x3 conv), a 1x1 conv head. Keeps every
    GroupNorm output in ``kept``; returns the logits and the pooled vector."""
    def conv(name, x, stride=1, padding=0):
        return F.conv2d(x, _standardised(params[f"{name}.weight"]), None, stride, padding)

    def gn(name, x):
        kept[name] = F.group_norm(x, 32, params[f"{name}.weight"], params[f"{name}.bias"], eps=1e-5)
        return kept[name]

    x = F.max_pool2d(F.pad(conv("root.conv", x, 2, 3), (1, 1, 1, 1)), 3, 2)
    for block, units in enumerate((3, 4, 6, 3), start=1):
        for unit in range(1, units + 1):
            prefix = f"body.block{block}.unit{unit:02d}"
            stride = 2 if unit == 1 and block > 1 else 1
            out = F.relu(gn(f"{prefix}.gn1", x))
            residual = conv(f"{prefix}.downsample", out, stride) if unit == 1 else x
            out = conv(f"{prefix}.conv1", out)
            out = conv(f"{prefix}.conv2", F.relu(gn(f"{prefix}.gn2", out)), stride, 1)
            out = conv(f"{prefix}.conv3", F.relu(gn(f"{prefix}.gn3", out)))
            x = out + residual
    pooled = F.relu(gn("before_head.gn", x)).mean(dim=(2, 3), keepdim=True)
    return F.conv2d(pooled, params["head.conv.weight"], params["head.conv.bias"])[:, :, 0, 0], pooled


def reference_bit_gaia(model, x):
    """GAIA-Z and GAIA-A of the paper's layers, one sample at a time, by plain autograd."""
    params = {k: v.detach() for k, v in model.state_dict().items()}
    z_scores, a_scores, logits_all = [], [], []
    for i in range(len(x)):
        kept = {}
        logits, pooled = bit_by_formulas(params, x[i:i + 1].clone().requires_grad_(), kept)
        logits_all.append(logits.detach())
        norms = [kept[n] for n in BIT_BLOCK4_NORMS]
        grads = torch.autograd.grad(logits.max(1).values.sum(), norms, retain_graph=True)
        ratios = torch.cat([(g[0] != 0).double().mean(dim=(1, 2)) for g in grads])
        z_scores.append(ratios.pow(2).mean())
        (g_head,) = torch.autograd.grad(F.log_softmax(logits, 1).sum(), [pooled], retain_graph=True)
        o = g_head[0].double().mean(dim=(1, 2)).abs().mean().sqrt()
        grads = torch.autograd.grad(pooled.sum(), norms)
        means = torch.cat([g[0].double().mean(dim=(1, 2)) for g in grads])
        a_scores.append(((means.abs() / o) ** 2).mean())
    return torch.stack(z_scores), torch.stack(a_scores), torch.cat(logits_all)


@pytest.fixture(scope="module")
def bit_r50():
    torch.manual_seed(0)
    return _randomise_norms(load_model("BiT-S-R50x1", pretrained=False, num_classes=10))


def test_bit_matches_its_formulas_with_the_papers_default_layers(bit_r50):
    x = _images(2, 96)
    layers = gaia.default_layers(bit_r50, x)
    assert layers == {"zero": BIT_BLOCK4_NORMS, "inner": BIT_BLOCK4_NORMS, "head": "before_head"}
    result = gaia.gaia_analyze(bit_r50, x)
    z, a, logits = reference_bit_gaia(bit_r50, x)
    torch.testing.assert_close(result.logits, logits, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(result.gaia_z, z, rtol=0, atol=1e-12)
    torch.testing.assert_close(result.gaia_a, a, rtol=1e-5, atol=0)
    assert 0.0 < float(result.gaia_z.min()) < 1.0 and not result.lacks_exact_zeros
    assert classifier_head(bit_r50).is_conv and classifier_head(bit_r50).name == "head.conv"


def test_bit_names_architecture_and_preset():
    from gaia_viz.models import BIT_NAMES, default_preset, list_models

    assert len(BIT_NAMES) == 12 and {"BiT-S-R101x1", "BiT-M-R152x4", "BiT-S-R50x3"} <= set(BIT_NAMES)
    assert set(BIT_NAMES) <= set(list_models())
    assert default_preset("BiT-S-R101x1") == "bit480"
    from gaia_viz.models import bit_model

    with torch.device("meta"):  # 388 M parameters: the shapes are what is checked
        model = bit_model("BiT-M-R101x3", num_classes=5)
    assert len(model.body.block3) == 23 and model.root.conv.out_channels == 192
    assert model.body.block4.unit01.conv3.out_channels == 2048 * 3
    assert model.body.block4.unit01.conv2.stride == (2, 2) and model.body.block1.unit01.conv2.stride == (1, 1)
    assert isinstance(model.root.pad, nn.ConstantPad2d) and model.head.conv.bias is not None
    with pytest.raises(ModelError, match="no bundled weights.*npz"):
        load_model("BiT-S-R101x1")


def _to_big_transfer_npz(state_dict):
    """The inverse of the loader: Big Transfer's TensorFlow names, HWIO kernels."""
    arrays = {}
    for key, tensor in state_dict.items():
        value = tensor.numpy()
        if value.ndim == 4:
            value = value.transpose(2, 3, 1, 0)  # OIHW -> HWIO
        if key == "root.conv.weight":
            arrays["resnet/root_block/standardized_conv2d/kernel"] = value
        elif key.startswith("before_head.gn."):
            arrays[f"resnet/group_norm/{'gamma' if key.endswith('weight') else 'beta'}"] = value
        elif key.startswith("head.conv."):
            arrays[f"resnet/head/conv2d/{'kernel' if key.endswith('weight') else 'bias'}"] = value
        else:
            _, block, unit, module, leaf = key.split(".")
            if module == "downsample":
                arrays[f"resnet/{block}/{unit}/a/proj/standardized_conv2d/kernel"] = value
            else:
                part = "abc"[int(module[-1]) - 1]
                name = "standardized_conv2d/kernel" if module.startswith("conv") else \
                    f"group_norm/{'gamma' if leaf == 'weight' else 'beta'}"
                arrays[f"resnet/{block}/{unit}/{part}/{name}"] = value
    return arrays


def _same_weights(a, b):
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


def test_bit_checkpoints_round_trip_in_gradnorm_and_big_transfer_formats(bit_r50, tmp_path):
    state = bit_r50.state_dict()
    gradnorm = tmp_path / "BiT-S-R50x1-flat-finetune.pth.tar"
    torch.save({"step": 5, "model": {f"module.{k}": v for k, v in state.items()},
                "optim": {"state": {}, "param_groups": [{"lr": 0.003, "momentum": 0.9, "params": [0, 1]}]}},
               gradnorm)
    npz = tmp_path / "BiT-S-R50x1.npz"
    np.savez(npz, **_to_big_transfer_npz(state))
    for source in (gradnorm, npz, npz.read_bytes()):
        model = load_model("BiT-S-R50x1", checkpoint=source)  # 10 classes, from the head
        assert _same_weights(model, bit_r50) and not model.training
        assert classifier_head(model).num_classes == 10
    x = _images(1, 96)
    torch.testing.assert_close(load_model("BiT-S-R50x1", checkpoint=npz)(x), bit_r50(x))
    with pytest.raises(CheckpointError, match=r"head\.conv\.weight: checkpoint \(10, 2048, 1, 1\)"):
        load_model("BiT-S-R50x1", checkpoint=npz, num_classes=1000)


def test_unsafe_or_foreign_npz_is_refused(tmp_path):
    objects = tmp_path / "objects.npz"
    np.savez(objects, weights=np.array([{"a": 1}], dtype=object))
    with pytest.raises(CheckpointError, match="refused"):
        load_model("BiT-S-R50x1", checkpoint=objects)
    foreign = tmp_path / "foreign.npz"
    np.savez(foreign, **{"resnet/root_block/standardized_conv2d/kernel": np.zeros((7, 7, 3, 64), np.float32),
                         "resnet/block9/extra": np.zeros(3, np.float32)})
    with pytest.raises(CheckpointError, match="no part of a BiT ResNet-v2: resnet/block9/extra"):
        load_model("BiT-S-R50x1", checkpoint=foreign)
    truncated = tmp_path / "truncated.npz"
    np.savez(truncated, **{"resnet/head/conv2d/bias": np.zeros(10, np.float32)})
    truncated.write_bytes(truncated.read_bytes()[:-30])
    with pytest.raises(CheckpointError):
        load_model("BiT-S-R50x1", checkpoint=truncated)


class PooledNet(nn.Module):
    """conv-BN-ReLU, global pooling, and a head that is a Linear or a 1x1 conv (BiT-style)."""

    def __init__(self, conv_head: bool):
        super().__init__()
        self.conv = nn.Conv2d(3, 16, 3, padding=1)
        self.bn = nn.BatchNorm2d(16)
        self.conv2 = nn.Conv2d(16, 32, 3, stride=2, padding=1)
        self.bn2 = nn.BatchNorm2d(32)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.conv_head = conv_head
        self.head = nn.Conv2d(32, 5, 1) if conv_head else nn.Linear(32, 5)

    def forward(self, x):
        x = self.pool(F.relu(self.bn2(self.conv2(F.relu(self.bn(self.conv(x)))))))
        return self.head(x)[:, :, 0, 0] if self.conv_head else self.head(x.flatten(1))


def test_gaia_a_is_the_same_with_a_linear_or_a_1x1_conv_head():
    torch.manual_seed(0)
    linear = _randomise_norms(PooledNet(conv_head=False)).eval()
    conv = PooledNet(conv_head=True).eval()
    state = linear.state_dict()
    state["head.weight"] = state["head.weight"][:, :, None, None]
    conv.load_state_dict(state)
    x = _images(3, 24)
    a_linear, a_conv = gaia.gaia_a(linear, x), gaia.gaia_a(conv, x)
    torch.testing.assert_close(a_linear, a_conv, rtol=1e-6, atol=0)
    assert torch.isfinite(a_linear).all() and (a_linear > 0).all()


# ----------------------------------------------------------------------------- fused vs unfused


def unfused(model):
    """A copy where every norm+activation module ``X`` is ``X.norm`` (the plain torch norm)
    followed by ``X.act``."""
    from timm.layers import BatchNormAct2d, GroupNormAct

    model = copy.deepcopy(model)
    renames = {}
    for name, module in list(model.named_modules()):
        if isinstance(module, GroupNormAct):
            norm = nn.GroupNorm(module.num_groups, module.num_channels, module.eps, module.affine)
        elif isinstance(module, BatchNormAct2d):
            norm = nn.BatchNorm2d(module.num_features, module.eps, module.momentum, module.affine)
        else:
            continue
        if isinstance(module.act, nn.Identity):
            continue
        norm.load_state_dict({k: v for k, v in module.state_dict().items()
                              if not k.startswith(("act.", "drop."))})
        parent_name, _, child = name.rpartition(".")
        parent = model.get_submodule(parent_name) if parent_name else model
        setattr(parent, child, nn.Sequential(OrderedDict(norm=norm, act=copy.deepcopy(module.act))).eval())
        renames[name] = f"{name}.norm"
    return model, renames


def _assert_fused_scores_like_unfused(fused, x):
    plain, renames = unfused(fused)
    assert renames, "the model has no fused norm+activation modules"
    r_fused, r_plain = gaia.gaia_analyze(fused, x), gaia.gaia_analyze(plain, x)
    assert [renames.get(n, n) for n in r_fused.zero_layers] == r_plain.zero_layers
    assert [renames.get(n, n) for n in r_fused.inner_layers] == r_plain.inner_layers
    assert r_fused.head_layer == r_plain.head_layer
    assert torch.equal(r_fused.gaia_z, r_plain.gaia_z)
    torch.testing.assert_close(r_fused.gaia_a, r_plain.gaia_a, rtol=1e-6, atol=0)
    return r_fused


def test_fused_groupnorm_act_scores_like_unfused_timm_resnetv2():
    """timm's ResNetV2 with the BiT configuration (``resnetv2_50x1_bit``: GroupNormAct,
    weight-standardised convs, fixed stem), one unit per stage to keep it fast."""
    from functools import partial

    from timm.layers import StdConv2d
    from timm.models.resnetv2 import ResNetV2

    torch.manual_seed(0)
    fused = _randomise_norms(ResNetV2(layers=[1, 1, 1, 1], channels=(128, 256, 512, 1024), num_classes=10,
                                      stem_type="fixed", conv_layer=partial(StdConv2d, eps=1e-8))).eval()
    layout = gaia.model_layout(fused, _images(1, 96))
    info = layout.info("stages.3.blocks.0.norm2")
    assert info.activation == "stages.3.blocks.0.norm2.act" and info.activation_kind == "ReLU"
    result = _assert_fused_scores_like_unfused(fused, _images(2, 96))
    assert 0.0 < float(result.gaia_z.max()) < 0.9  # pre-activation gradients: exact zeros


class FusedNet(nn.Module):
    """timm BatchNormAct2d with an in-place ReLU, as timm's ConvNormAct builds them."""

    def __init__(self):
        super().__init__()
        from timm.layers import BatchNormAct2d

        self.conv1 = nn.Conv2d(3, 8, 3, padding=1)
        self.bn1 = BatchNormAct2d(8, act_layer=nn.ReLU, inplace=True)
        self.conv2 = nn.Conv2d(8, 16, 3, stride=2, padding=1)
        self.bn2 = BatchNormAct2d(16, act_layer=nn.ReLU, inplace=True)
        self.fc = nn.Linear(16, 4)

    def forward(self, x):
        return self.fc(self.bn2(self.conv2(self.bn1(self.conv1(x)))).mean(dim=(2, 3)))


def test_fused_batchnorm_act_with_in_place_relu_scores_like_unfused():
    torch.manual_seed(0)
    fused = _randomise_norms(FusedNet()).eval()
    assert gaia.model_layout(fused, _images(1, 16)).info("bn1").activation_input_modified_in_place
    result = _assert_fused_scores_like_unfused(fused, _images(4, 16))
    assert float(result.gaia_z.max()) < 1.0


# ----------------------------------------------------------------------------- timm vs brute force


def reference_gaia(model, x, zero_layers, inner_layers, head):
    """Plain autograd, one sample at a time, every in-place op switched off: a layer's
    tensor is its output, or for a norm fused with an activation (an ``act`` child) the
    activation's input; GAIA-A's head is read at the module's output."""
    ref = copy.deepcopy(model).eval()
    for module in ref.modules():
        if hasattr(module, "inplace"):
            module.inplace = False
    modules = dict(ref.named_modules())
    kept, head_input = {}, []

    def keep_output(key):
        def hook(_m, _i, out):
            kept[key] = out
            return out.clone()
        return hook

    def keep_act_input(key):
        def pre_hook(_m, args):
            kept[key] = args[0]
            return (args[0].clone(),)
        return pre_hook

    handles = []
    for name in dict.fromkeys(zero_layers + inner_layers):
        act = getattr(modules[name], "act", None)
        if isinstance(act, nn.Module) and not isinstance(act, nn.Identity):
            handles.append(act.register_forward_pre_hook(keep_act_input(name)))
        else:
            handles.append(modules[name].register_forward_hook(keep_output(name)))
    handles.append(modules[head].register_forward_hook(keep_output(("head", head))))
    classifier = modules[classifier_head(ref).name]
    handles.append(classifier.register_forward_pre_hook(lambda _m, a: head_input.append(a[0])))
    z, a = [], []
    try:
        for i in range(len(x)):
            kept.clear()
            head_input.clear()
            logits = ref(x[i:i + 1].clone().requires_grad_())
            grads = torch.autograd.grad(logits.max(1).values.sum(), [kept[n] for n in zero_layers],
                                        retain_graph=True)
            z.append(torch.cat([(g[0] != 0).double().mean(dim=(1, 2)) for g in grads]).pow(2).mean())
            (g_head,) = torch.autograd.grad(F.log_softmax(logits, 1).sum(), [kept[("head", head)]],
                                            retain_graph=True)
            o = g_head[0].double().mean(dim=(1, 2)).abs().mean().sqrt()
            grads = torch.autograd.grad(head_input[0].sum(), [kept[n] for n in inner_layers])
            means = torch.cat([g[0].double().mean(dim=(1, 2)) for g in grads])
            a.append(((means.abs() / o) ** 2).mean())
    finally:
        for handle in handles:
            handle.remove()
    return torch.stack(z), torch.stack(a)


@pytest.mark.parametrize("name", ["resnet50", "regnety_002"])
def test_timm_models_against_brute_force(name):
    torch.manual_seed(0)
    model = _randomise_norms(load_model(f"timm:{name}", pretrained=False, num_classes=10))
    for parameter in model.parameters():  # the reference takes activation gradients only
        parameter.requires_grad_(False)
    x = _images(2, 96)
    result = gaia.gaia_analyze(model, x)
    norms = [n for n, m in model.named_modules() if isinstance(m, nn.BatchNorm2d)]
    assert result.zero_layers == norms
    z, a = reference_gaia(model, x, result.zero_layers, result.inner_layers, result.head_layer)
    torch.testing.assert_close(result.gaia_z, z, rtol=0, atol=1e-12)
    torch.testing.assert_close(result.gaia_a, a, rtol=1e-5, atol=0)
    assert float(result.gaia_z.max()) < 0.5 and not result.lacks_exact_zeros


# ----------------------------------------------------------------------------- smooth activations


@pytest.mark.parametrize("name, activation", [("efficientnet_b0", "SiLU"), ("convnext_atto", "GELU")])
def test_smooth_activations_warn_that_gaia_z_has_no_exact_zeros(name, activation):
    torch.manual_seed(0)
    model = load_model(f"timm:{name}", pretrained=False, num_classes=10)
    # 112 px: ConvNeXt's last strided conv then skips a row and a column (zeros in every
    # channel alike, the same for every input); they must not hide the missing ReLU zeros
    with pytest.warns(NoExactZerosWarning) as caught:
        result = gaia.gaia_analyze(model, _images(2, 112))
    text = str(caught[0].message)
    assert "exact zeros" in text and activation in text and "GAIA-A" in text
    assert result.lacks_exact_zeros and result.exact_zeros_note == text
    assert float(result.exact_zero_fraction.max()) < EXACT_ZERO_THRESHOLD
    assert torch.isfinite(result.gaia_a).all()


def test_relu_model_gives_no_warning():
    model = load_model("timm:resnet18", pretrained=False, num_classes=10)
    with warnings.catch_warnings():
        warnings.simplefilter("error", NoExactZerosWarning)
        result = gaia.gaia_analyze(model, _images(2, 96))
    assert not result.lacks_exact_zeros and result.exact_zeros_note is None
    assert float(result.exact_zero_fraction.min()) > 0.1


class TensorSet(torch.utils.data.Dataset):
    def __init__(self, name, n, seed, size=64):
        self.name = name
        self.x = _images(n, size, seed)

    def __len__(self):
        return len(self.x)

    def __getitem__(self, i):
        return self.x[i], 0


def test_sweep_records_the_note_and_the_app_can_read_it(tmp_path):
    from gaia_viz import sweep

    torch.manual_seed(0)
    smooth = load_model("timm:test_efficientnet", pretrained=False, num_classes=3)
    settings = sweep.SweepSettings(methods=["gaia_z", "gaia_a", "msp"], batch_size=3)
    with warnings.catch_warnings():
        warnings.simplefilter("error", NoExactZerosWarning)  # the sweep judges sets, never batches
        evaluation = sweep.evaluate(smooth, TensorSet("id", 6, 1), {"far": TensorSet("far", 5, 2)},
                                    settings, cache_dir=tmp_path)
    note = sweep.gaia_z_note(evaluation)
    assert note is not None and "exact zeros" in note and "on id, far" in note and "SiLU" in note
    assert evaluation.config.notes == [note] and evaluation.metrics_json()["config"]["notes"] == [note]
    assert sweep.gaia_z_note(evaluation.select(["msp"])) is None
    cached = sweep.evaluate(smooth, TensorSet("id", 6, 1), {"far": TensorSet("far", 5, 2)},
                            settings, cache_dir=tmp_path)
    assert cached.cache_hits == 2 and sweep.gaia_z_note(cached) == note  # judged from the cache too

    relu = load_model("timm:test_resnet", pretrained=False, num_classes=3)
    fine = sweep.evaluate(relu, TensorSet("id", 4, 1), {"far": TensorSet("far", 4, 2)},
                          sweep.SweepSettings(methods=["gaia_z"], batch_size=4), use_cache=False)
    assert fine.config.notes == [] and sweep.gaia_z_note(fine) is None


def test_cli_prints_one_line_and_writes_the_note_to_metrics_json(tmp_path):
    import subprocess
    import sys

    from PIL import Image

    torch.manual_seed(0)
    checkpoint = tmp_path / "smooth.pt"
    torch.save(timm.create_model("test_efficientnet", num_classes=3).state_dict(), checkpoint)
    for name in ("id", "ood"):
        (tmp_path / name).mkdir()
        for i in range(3):
            Image.new("RGB", (40, 40), (40 * i, 90 if name == "id" else 200, 10)).save(tmp_path / name / f"{i}.png")
    out = tmp_path / "out"
    proc = subprocess.run(
        [sys.executable, "-m", "gaia_viz", "evaluate", "--model", "timm:test_efficientnet",
         "--checkpoint", checkpoint, "--id", tmp_path / "id", "--ood", f"far={tmp_path / 'ood'}",
         "--methods", "gaia_z,msp", "--no-cache", "--quiet", "--out", out],
        cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    lines = [line for line in proc.stderr.splitlines() if "exact zeros" in line]
    assert len(lines) == 1 and lines[0].startswith("warning: GAIA-Z") and "SiLU" in lines[0]
    notes = json.loads((out / "metrics.json").read_text())["config"]["notes"]
    assert notes == [lines[0][len("warning: "):]]


# ----------------------------------------------------------------------------- token models


@pytest.mark.parametrize("name, evidence", [
    ("timm:vit_tiny_patch16_224", "normalises a token sequence"),
    ("tv:swin_t", "ShiftedWindowAttention"),
])
def test_token_models_are_refused_for_gaia_and_scored_by_the_others(name, evidence):
    from gaia_viz import sweep

    model = load_model(name, pretrained=False, num_classes=3)
    x = _images(2, 224 if "vit" in name else 96)
    for call in (lambda: gaia.gaia_z(model, x), lambda: gaia.gaia_a(model, x),
                 lambda: gaia.gaia_z(model, x, layers=[gaia.model_layout(model, x).feature_layers[0].name])):
        with pytest.raises(LayerError) as info:
            call()
        message = str(info.value)
        assert "token models" in message and "GELU" in message and evidence in message and "msp" in message
    if "swin" in name:
        return
    evaluation = sweep.evaluate(model, TensorSet("id", 2, 1, size=x.shape[-1]),
                                {"far": TensorSet("far", 2, 2, size=x.shape[-1])},
                                sweep.SweepSettings(methods=["msp", "energy"], batch_size=2), use_cache=False)
    assert np.isfinite(evaluation.scores["msp"]).all()


# ----------------------------------------------------------------------------- timm weights offline


@pytest.fixture
def hf_cache(tmp_path, monkeypatch):
    """An empty Hugging Face hub cache; any attempt to reach the network fails the test."""
    from huggingface_hub import constants

    cache = tmp_path / "hf" / "hub"
    cache.mkdir(parents=True)
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(cache))

    def no_network(*args, **kwargs):
        raise AssertionError("tried to reach the network")

    monkeypatch.setattr("socket.socket.connect", no_network)
    monkeypatch.setattr(torch.hub, "download_url_to_file", no_network)
    return cache


def _put_in_hf_cache(cache, repo, filename, write):
    folder = cache / f"models--{repo.replace('/', '--')}"
    snapshot = folder / "snapshots" / ("0" * 40)
    snapshot.mkdir(parents=True)
    (folder / "refs").mkdir()
    (folder / "refs" / "main").write_text("0" * 40)
    write(snapshot / filename)
    return snapshot / filename


def test_timm_pretrained_offline_names_what_is_missing(hf_cache):
    with pytest.raises(ModelError) as info:
        load_model("timm:resnet18")
    message = str(info.value)
    assert "not cached" in message and "timm/resnet18.a1_in1k" in message and str(hf_cache) in message
    assert "pretrained=False" in message
    with pytest.raises(ModelError, match="1000 classes, not 3"):
        load_model("timm:resnet18", num_classes=3)
    with pytest.raises(ModelError, match="unknown timm model 'resnet1888'"):
        load_model("timm:resnet1888")


def test_timm_weights_are_read_from_the_hf_cache(hf_cache):
    from safetensors.torch import save_file

    reference = timm.create_model("resnet18").eval()
    _put_in_hf_cache(hf_cache, "timm/resnet18.a1_in1k", "model.safetensors",
                     lambda path: save_file(reference.state_dict(), str(path)))
    model = load_model("timm:resnet18")
    assert _same_weights(model, reference) and not model.training
    assert "state_dict" not in model.pretrained_cfg  # no second copy of the weights kept


class WritesMarker:
    """Unpickling this would call open(marker, "w"), creating the marker file."""

    def __init__(self, marker: Path):
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


def test_timm_cached_pickle_that_runs_code_is_refused(hf_cache, tmp_path):
    marker = tmp_path / "pwned"
    _put_in_hf_cache(hf_cache, "timm/resnet18.a1_in1k", "pytorch_model.bin",
                     lambda path: torch.save({"fc.weight": WritesMarker(marker)}, path))
    with pytest.raises(ModelError, match="refused"):
        load_model("timm:resnet18")
    assert not marker.exists()


def test_timm_download_only_when_allowed(hf_cache, monkeypatch):
    import huggingface_hub
    from huggingface_hub.errors import EntryNotFoundError

    reference = timm.create_model("resnet18")
    calls = []

    def fake_download(repo, filename, revision=None, cache_dir=None):
        calls.append((repo, filename))
        if filename == "model.safetensors":
            raise EntryNotFoundError("no safetensors in this repository")
        return str(_put_in_hf_cache(Path(cache_dir), repo, filename,
                                    lambda path: torch.save(reference.state_dict(), path)))

    monkeypatch.setattr(huggingface_hub, "hf_hub_download", fake_download)
    model = load_model("timm:resnet18", allow_download=True)
    assert calls == [("timm/resnet18.a1_in1k", "model.safetensors"), ("timm/resnet18.a1_in1k", "pytorch_model.bin")]
    assert _same_weights(model, reference.eval())


def test_timm_user_checkpoint_sets_the_classes(tmp_path):
    source = timm.create_model("resnetv2_50x1_bit", num_classes=7)  # its head is a 1x1 conv
    path = tmp_path / "bit.pth"
    torch.save({"state_dict": {f"module.{k}": v for k, v in source.state_dict().items()}}, path)
    model = load_model("timm:resnetv2_50x1_bit", checkpoint=path)
    assert _same_weights(model, source.eval()) and classifier_head(model).num_classes == 7


# ----------------------------------------------------------------------------- torchvision fix-ups


@pytest.mark.parametrize("name", ["densenet121", "googlenet", "inception_v3"])
def test_torchvision_weights_load_like_torchvision_itself(name, tmp_path, monkeypatch):
    """Built with weights=None plus the fix-ups, the model equals what torchvision's own
    loader builds from the same cached file (DenseNet's old key names, the aux heads and
    transform_input of GoogLeNet / Inception)."""
    import torchvision

    from gaia_viz.models import hub_checkpoint_path
    from gaia_viz.models.torchvision_zoo import DENSENET_OLD_KEY

    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch_home"))
    weights = torchvision.models.get_model_weights(name).DEFAULT
    kwargs = {"aux_logits": True, "init_weights": False} if name in ("googlenet", "inception_v3") else {}
    state = torchvision.models.get_model(name, weights=None, **kwargs).state_dict()
    if name.startswith("densenet"):  # the published file's old names: "norm.1" for "norm1"
        old = {}
        for key, value in state.items():
            if key.endswith("num_batches_tracked"):  # the published file predates them
                continue
            key = re.sub(r"(denselayer\d+\.(?:norm|relu|conv))([12])\.", r"\1.\2.", key)
            old[key] = value
        assert any(DENSENET_OLD_KEY.match(k) for k in old)
        state = old
    path = hub_checkpoint_path(weights.url)
    path.parent.mkdir(parents=True)
    torch.save(state, path)
    ours = load_model(name)
    theirs = torchvision.models.get_model(name, weights=weights).eval()
    assert _same_weights(ours, theirs)
    assert [n for n, _ in ours.named_modules()] == [n for n, _ in theirs.named_modules()]
    assert getattr(ours, "transform_input", None) == getattr(theirs, "transform_input", None)
    if name != "inception_v3":  # 299 px only: same weights, modules and flags say it already
        x = _images(1, 64)
        torch.testing.assert_close(ours(x), theirs(x))


# ----------------------------------------------------------------------------- the README's table


def readme_support_rows():
    text = (ROOT / "README.md").read_text()
    section = text.split("## Which models GAIA supports", 1)[1].split("\n## ", 1)[0]
    rows = []
    for line in section.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) >= 5 and cells[1].startswith("`") and not set(cells[0]) <= {"-"}:
            rows.append(cells)
    return rows


SUPPORT_ROWS = readme_support_rows()


def test_the_support_table_lists_every_family_of_the_issue():
    families = {row[0] for row in SUPPORT_ROWS}
    assert {"torchvision ResNet", "torchvision WideResNet", "torchvision VGG-BN", "torchvision DenseNet",
            "torchvision RegNet", "torchvision MobileNetV2", "torchvision MobileNetV3", "torchvision EfficientNet",
            "torchvision ConvNeXt", "torchvision ViT", "torchvision Swin", "timm ResNet", "timm ResNetV2 (BiT)",
            "timm RegNet", "timm EfficientNet", "timm ConvNeXt", "timm ViT", "CIFAR ResNets",
            "GAIA's ResNet-18/34", "BiT", "torchvision SqueezeNet", "timm DeiT", "timm LeViT",
            "timm NF-ResNet"} <= families


def _default_layer_summary(layout, zero, head):
    kinds = {}
    for name in zero:
        info = layout.info(name)
        kind = info.kind + (f"+{info.activation_kind}" if info.activation_kind else "")
        kinds[kind] = kinds.get(kind, 0) + 1
    return kinds, head


@pytest.mark.parametrize("row", SUPPORT_ROWS, ids=[row[0] for row in SUPPORT_ROWS])
def test_support_table_row_is_what_gaia_measures(row):
    """Each row of the README's table, measured: 2 random-init images at the size the row
    names, the default layers, whether GAIA-Z has exact zeros, whether GAIA-A is finite."""
    family, model_cell, hooked, z_cell, a_cell = row[:5]
    name = re.search(r"`([^`]+)`", model_cell).group(1)
    size = int(re.search(r"(\d+) px", model_cell).group(1))
    torch.manual_seed(0)
    model = load_model(name, pretrained=False, num_classes=10)
    x = _images(2, size)
    layout = gaia.model_layout(model, x)
    if z_cell.startswith("refused"):
        assert layout.token_model is not None
        with pytest.raises(LayerError, match="token models"):
            gaia.gaia_analyze(model, x)
        assert a_cell.startswith("refused")
        return
    a_refused = a_cell.startswith("refused")  # GAIA-A alone: no pooled feature vector (SqueezeNet)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # no exact zeros, the convolution fallback
        result = gaia.gaia_analyze(model, x, average=not a_refused)
        if a_refused:
            with pytest.raises(LayerError, match="pooled feature vector"):
                gaia.gaia_a(model, x)
    kinds, head = _default_layer_summary(layout, result.zero_layers, result.head_layer)
    for kind, count in kinds.items():
        assert f"{count} {kind}" in hooked, f"{family}: README says {hooked!r}, measured {kinds}"
    assert (f"head `{head}`" if head else "no head") in hooked, f"{family}: README says {hooked!r}, measured head {head}"
    assert ("convolution fallback" in hooked) == layout.uses_conv_fallback, family
    zeros = float(result.exact_zero_fraction.mean())
    percent = int(re.search(r"(\d+) %", z_cell).group(1))
    assert abs(100 * zeros - percent) <= 5, f"{family}: README says {percent} %, measured {100 * zeros:.1f} %"
    if z_cell.startswith("yes"):
        assert not result.lacks_exact_zeros and float(result.gaia_z.max()) < 1.0
    else:
        assert z_cell.startswith("warns") and result.lacks_exact_zeros
    assert a_refused or (a_cell.startswith("yes") and torch.isfinite(result.gaia_a).all())
