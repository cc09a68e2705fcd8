"""ODIN's CIFAR-10 DenseNet-BC-100 (``cifar_densenet_bc100``) against references written here.

* the architecture: a minimal re-statement of ODIN's own ``densenet.py`` (``DenseNet3`` with its
  ``BottleneckBlock`` / ``TransitionBlock`` / ``DenseBlock``, in-place ReLUs as there), fed by
  ODIN's own preprocessing (torchvision ``ToTensor`` + ``Normalize``) on the same files: MSP and
  the top-1 prediction of every image equal ours;
* GAIA-Z and GAIA-A of the sweep equal a plain per-sample autograd reference of the GAIA
  formulas on that re-stated model with every ``nn.BatchNorm2d`` hooked (relative error <= 1e-5;
  the reference is ``tests/test_model_families.py``'s ``reference_gaia``).

Tests that need the shared data (``GAIA_VIZ_DATA_ROOT``, default ``../shared/data``) skip
without it; subsets keep each one to seconds.
"""

import json
import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image
from torch import nn
from torchvision import transforms

from gaia_viz import gaia
from gaia_viz.models import default_preset, list_models, load_model

from support import DATA_ROOT, ROOT
CHECKPOINT = DATA_ROOT / "models" / "cifar10_densenet_bc100.safetensors"
NAME = "cifar_densenet_bc100"
needs_data = pytest.mark.skipif(
    not (CHECKPOINT.is_file() and (DATA_ROOT / "cifar10" / "test").is_dir() and (DATA_ROOT / "tin_resize").is_dir()),
    reason=f"shared DenseNet-BC checkpoint or CIFAR-10/TinyImageNet-Resize images not found under {DATA_ROOT} "
           "(set GAIA_VIZ_DATA_ROOT)")
# ODIN's code normalises CIFAR-10 with these (code/cal.py: transforms.Normalize)
ODIN_MEAN = (125.3 / 255, 123.0 / 255, 113.9 / 255)
ODIN_STD = (63.0 / 255, 62.1 / 255, 66.7 / 255)


# ----------------------------------------------------------------------------- ODIN's DenseNet3, restated


class OdinBottleneckBlock(nn.Module):
    def __init__(self, in_planes, out_planes):
        super().__init__()
        inter_planes = out_planes * 4
        self.bn1 = nn.BatchNorm2d(in_planes)
        self.relu = nn.ReLU(inplace=True)
        self.conv1 = nn.Conv2d(in_planes, inter_planes, kernel_size=1, stride=1, padding=0, bias=False)
        self.bn2 = nn.BatchNorm2d(inter_planes)
        self.conv2 = nn.Conv2d(inter_planes, out_planes, kernel_size=3, stride=1, padding=1, bias=False)

    def forward(self, x):
        out = self.conv1(self.relu(self.bn1(x)))
        out = self.conv2(self.relu(self.bn2(out)))
        return torch.cat([x, out], 1)


class OdinTransitionBlock(nn.Module):
    def __init__(self, in_planes, out_planes):
        super().__init__()
        self.bn1 = nn.BatchNorm2d(in_planes)
        self.relu = nn.ReLU(inplace=True)
        self.conv1 = nn.Conv2d(in_planes, out_planes, kernel_size=1, stride=1, padding=0, bias=False)

    def forward(self, x):
        return F.avg_pool2d(self.conv1(self.relu(self.bn1(x))), 2)


class OdinDenseBlock(nn.Module):
    def __init__(self, nb_layers, in_planes, growth_rate):
        super().__init__()
        self.layer = nn.Sequential(*[OdinBottleneckBlock(in_planes + i * growth_rate, growth_rate)
                                     for i in range(nb_layers)])

    def forward(self, x):
        return self.layer(x)


class OdinDenseNet3(nn.Module):
    """ODIN's ``DenseNet3(depth, num_classes)`` with bottleneck=True, reduction=0.5, dropRate=0."""

    def __init__(self, depth=100, num_classes=10, growth_rate=12, reduction=0.5):
        super().__init__()
        in_planes = 2 * growth_rate
        n = int((depth - 4) / 3 / 2)
        self.conv1 = nn.Conv2d(3, in_planes, kernel_size=3, stride=1, padding=1, bias=False)
        self.block1 = OdinDenseBlock(n, in_planes, growth_rate)
        in_planes = int(in_planes + n * growth_rate)
        self.trans1 = OdinTransitionBlock(in_planes, int(math.floor(in_planes * reduction)))
        in_planes = int(math.floor(in_planes * reduction))
        self.block2 = OdinDenseBlock(n, in_planes, growth_rate)
        in_planes = int(in_planes + n * growth_rate)
        self.trans2 = OdinTransitionBlock(in_planes, int(math.floor(in_planes * reduction)))
        in_planes = int(math.floor(in_planes * reduction))
        self.block3 = OdinDenseBlock(n, in_planes, growth_rate)
        in_planes = int(in_planes + n * growth_rate)
        self.bn1 = nn.BatchNorm2d(in_planes)
        self.relu = nn.ReLU(inplace=True)
        self.fc = nn.Linear(in_planes, num_classes)
        self.in_planes = in_planes

    def forward(self, x):
        out = self.conv1(x)
        out = self.trans1(self.block1(out))
        out = self.trans2(self.block2(out))
        out = self.block3(out)
        out = self.relu(self.bn1(out))
        out = F.avg_pool2d(out, 8)
        out = out.view(-1, self.in_planes)
        return self.fc(out)


def odin_model() -> nn.Module:
    """ODIN's network with the shared weights, loaded by torch itself (only the
    ``num_batches_tracked`` counters, which the file lacks, may be missing)."""
    from safetensors.torch import load_file

    model = OdinDenseNet3()
    result = model.load_state_dict(load_file(str(CHECKPOINT)), strict=False)
    assert not result.unexpected_keys
    assert all(k.endswith("num_batches_tracked") for k in result.missing_keys)
    return model.eval()


ODIN_TRANSFORM = transforms.Compose([transforms.ToTensor(), transforms.Normalize(ODIN_MEAN, ODIN_STD)])


def odin_inputs(paths) -> torch.Tensor:
    return torch.stack([ODIN_TRANSFORM(Image.open(p).convert("RGB")) for p in paths])


def sweep_scores(methods, max_id: int, max_ood: int):
    """The sweep's per-image scores of our model on a seeded subset of cifar10/test and
    TinyImageNet-Resize (189 of its images are grayscale), as the report opens them."""
    from gaia_viz.data.sources import limit, open_source
    from gaia_viz.sweep import SweepSettings, evaluate

    preset = default_preset(NAME)
    id_set = limit(open_source(f"folder:{DATA_ROOT / 'cifar10' / 'test'}", preset, "resize", name="id"), max_id)
    ood = limit(open_source(f"folder:{DATA_ROOT / 'tin_resize'}", preset, "center-crop", name="tin"), max_ood)
    evaluation = evaluate(load_model(NAME, checkpoint=CHECKPOINT), id_set, {"tin": ood},
                          SweepSettings(methods=methods, batch_size=64, workers=0), use_cache=False)
    return evaluation


# ----------------------------------------------------------------------------- architecture (no data)


def test_names_preset_and_architecture_match_odin():
    assert NAME in list_models()
    assert default_preset(NAME) == "odin-cifar10"
    ours = load_model(NAME, pretrained=False)
    theirs = OdinDenseNet3()
    keys = [k for k in theirs.state_dict() if not k.endswith("num_batches_tracked")]
    assert [k for k in ours.state_dict() if not k.endswith("num_batches_tracked")] == keys
    assert all(ours.state_dict()[k].shape == theirs.state_dict()[k].shape for k in keys)
    assert sum(p.numel() for p in ours.parameters()) == sum(p.numel() for p in theirs.parameters())
    assert ours.fc.in_features == 342 and ours.conv1.out_channels == 24
    assert all(m.bias is None for m in ours.modules() if isinstance(m, nn.Conv2d))


def test_gaia_default_layers_are_every_batchnorm_head_the_pooled_map():
    model = load_model(NAME, pretrained=False)
    layout = gaia.model_layout(model, torch.zeros(1, 3, 32, 32))
    norms = [n for n, m in model.named_modules() if isinstance(m, nn.BatchNorm2d)]
    assert layout.default_zero_layers() == norms and len(norms) == 99
    assert layout.default_head_layer() == "relu" and layout.classifier_after("relu") == "fc"
    inner = layout.default_inner_layers()
    assert inner == [n for n in norms if n.startswith(("block2", "trans2", "block3")) or n == "bn1"]
    assert len(inner) == 66


# ----------------------------------------------------------------------------- on the shared data


@needs_data
def test_shared_checkpoint_loads_strict_with_its_key_names(monkeypatch):
    from safetensors.torch import load_file

    stored = load_file(str(CHECKPOINT))
    monkeypatch.setenv("GAIA_VIZ_DATA_ROOT", str(DATA_ROOT))
    model = load_model(NAME)  # the default: the shared checkpoint under the data root
    state = model.state_dict()
    assert set(stored) == {k for k in state if not k.endswith("num_batches_tracked")}
    assert all(torch.equal(state[k], v) for k, v in stored.items())
    assert not model.training


@needs_data
def test_msp_and_top1_of_every_image_equal_odins_code():
    evaluation = sweep_scores(["msp"], max_id=256, max_ood=64)
    scores = evaluation.scores
    assert (scores["dataset"] == "tin").sum() == 64
    reference = odin_model()
    with torch.no_grad():
        logits = reference(odin_inputs(scores["path"]))
    softmax = torch.softmax(logits.double(), 1)
    np.testing.assert_array_equal(scores["prediction"].to_numpy(), logits.argmax(1).numpy())
    np.testing.assert_allclose(-scores["msp"].to_numpy(), softmax.amax(1).numpy(), rtol=0, atol=1e-5)
    accuracy = evaluation.id_accuracy()
    # 83.9 % on all 10,000 JPEG test images (shared data README); 256 of them: within 3 sigma
    assert 0.78 <= accuracy <= 0.90, accuracy


@needs_data
def test_gaia_scores_equal_a_per_sample_reference_with_every_batchnorm_hooked():
    from test_model_families import reference_gaia

    evaluation = sweep_scores(["gaia_z", "gaia_a"], max_id=6, max_ood=6)
    scores = evaluation.scores
    reference = odin_model()
    norms = [n for n, m in reference.named_modules() if isinstance(m, nn.BatchNorm2d)]
    assert evaluation.zero_layers == norms
    for parameter in reference.parameters():  # the reference takes activation gradients only
        parameter.requires_grad_(False)
    z, a = reference_gaia(reference, odin_inputs(scores["path"]), norms, list(evaluation.inner_layers), "relu")
    np.testing.assert_allclose(scores["gaia_z"].to_numpy(), z.numpy(), rtol=1e-5, atol=0)
    np.testing.assert_allclose(scores["gaia_a"].to_numpy(), a.numpy(), rtol=1e-5, atol=0)
    assert 0 < float(z.max()) < 1  # exact zeros exist (ReLU), so GAIA-Z is informative


@needs_data
def test_cli_evaluate_runs_as_written_in_the_issue(tmp_path):
    proc = subprocess.run(
        [sys.executable, "-m", "gaia_viz", "evaluate", "--model", NAME, "--checkpoint", str(CHECKPOINT),
         "--id", f"folder:{DATA_ROOT / 'cifar10' / 'test'}", "--ood", f"lsun_resize=folder:{DATA_ROOT / 'lsun_resize'}",
         "--max-samples", "8", "--out", str(tmp_path / "out"), "--quiet", "--no-cache"],
        cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    metrics = json.loads((tmp_path / "out" / "metrics.json").read_text())
    assert metrics["config"]["preset"] == "odin-cifar10"
    assert set(metrics["methods"]["gaia_z"]) == {"lsun_resize"}
    assert "ID accuracy (top-1)" in proc.stdout


@needs_data
def test_app_model_picker_offers_it_with_the_shared_checkpoint(monkeypatch):
    from streamlit.testing.v1 import AppTest

    monkeypatch.setenv("GAIA_VIZ_DATA_ROOT", str(DATA_ROOT))
    at = AppTest.from_file(str(ROOT / "app.py"), default_timeout=300)
    at.session_state["sb_max_samples"] = 8
    at.query_params.update({"model": NAME, "data": "cifar10-real"})  # a link names it
    at.run()
    assert not at.exception, at.exception
    assert not [e.value for e in at.error]
    assert "CIFAR DenseNet-BC-100 (ODIN's)" in at.sidebar.selectbox(key="sb_model_kind").options
    assert at.sidebar.selectbox(key="sb_model_kind").value == "densenet"
    assert at.query_params["model"] == NAME  # and the view's link names it again
    setup = at.session_state["setup"]
    assert setup.model_name == NAME and setup.preset == "odin-cifar10"
    assert Path(setup.checkpoint) == CHECKPOINT
