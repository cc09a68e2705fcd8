"""GAIA inside pytorch-ood and Captum (gaia_viz.integrations), against the real packages.

The numbers test runs the shared ResNet-20 on 64 CIFAR-10 test images and 64 textures: the
pytorch-ood detector in an ``OODMetrics`` loop against ``gaia_viz``'s own sweep on the same
images. Everything else uses the demo CNN and needs no shared data.
"""

import re
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import torch
from torch import nn
from torch.utils.data import ConcatDataset, DataLoader, Dataset, Subset

from gaia_viz import gaia
from gaia_viz import metrics as gm
from gaia_viz.errors import LayerError, ModelError

pytest.importorskip("pytorch_ood", reason="pytorch-ood is not installed (pip install -r requirements-dev.txt)")
pytest.importorskip("captum", reason="captum is not installed (pip install -r requirements.txt)")

from captum.attr import LayerAttribution  # noqa: E402
from pytorch_ood.api import Detector, GradientDetector, ModelNotSetException  # noqa: E402
from pytorch_ood.detector import EnergyBased  # noqa: E402
from pytorch_ood.metrics import OODMetrics  # noqa: E402
from pytorch_ood.metrics import functional as pood_functional  # noqa: E402
from pytorch_ood.utils import ToUnknown  # noqa: E402

from gaia_viz.demo import demo_id_set, demo_ood_sets, load_demo_model  # noqa: E402
from gaia_viz.integrations.captum import GaiaMaps  # noqa: E402
from gaia_viz.integrations.pytorch_ood import GAIAA, GAIAZ  # noqa: E402

from support import DATA_ROOT, ROOT
README_SECTION = "## Use GAIA from pytorch-ood / OODeel / Captum"


class WithTargetTransform(Dataset):
    """An image set with a target transform, as pytorch-ood's data sets take one
    (``Textures(..., target_transform=ToUnknown())``)."""

    def __init__(self, images, target_transform):
        self.images, self.target_transform = images, target_transform

    def __len__(self):
        return len(self.images)

    def __getitem__(self, i):
        x, y = self.images[i]
        return x, self.target_transform(y)


@pytest.fixture(scope="module")
def demo():
    model = load_demo_model()
    id_set = Subset(demo_id_set(), range(32))
    ood_set = WithTargetTransform(Subset(demo_ood_sets()["textures"], range(32)), ToUnknown())
    x = torch.stack([id_set[i][0] for i in range(6)] + [ood_set[i][0] for i in range(2)])
    return model, id_set, ood_set, x


def model_state(model):
    return dict(
        training=[m.training for m in model.modules()],
        requires_grad=[p.requires_grad for p in model.parameters()],
        grads=[p.grad for p in model.parameters()],
        hooks=[(dict(m._forward_hooks), dict(m._forward_pre_hooks), dict(m._backward_hooks),
                dict(m._backward_pre_hooks)) for m in model.modules()],
    )


# --------------------------------------------------------------------------- pytorch-ood: numbers


@pytest.fixture(scope="module")
def resnet20_sweep_and_loader():
    """The sweep's GAIA-Z and GAIA-A on 64 + 64 real images, and a pytorch-ood style loader
    over the same images (textures labelled -1 by ``ToUnknown``)."""
    checkpoint = DATA_ROOT / "models" / "cifar10_resnet20.th"
    if not (DATA_ROOT / "cifar10" / "test").is_dir() or not (DATA_ROOT / "textures" / "images").is_dir() \
            or not checkpoint.is_file():
        pytest.skip(f"CIFAR-10 test set, textures or ResNet-20 not found at {DATA_ROOT} (set GAIA_VIZ_DATA_ROOT)")
    from gaia_viz.data.image_sets import limit
    from gaia_viz.data.sources import open_source
    from gaia_viz.models import load_model
    from gaia_viz.report import REAL_PRESET
    from gaia_viz.sweep import SweepSettings, evaluate

    model = load_model("cifar_resnet20", checkpoint=checkpoint)
    id_set = limit(open_source(f"folder:{DATA_ROOT / 'cifar10' / 'test'}", REAL_PRESET, "resize"), 64)
    textures = limit(open_source(f"folder:{DATA_ROOT / 'textures' / 'images'}", REAL_PRESET, "center-crop"), 64)
    evaluation = evaluate(model, id_set, {"textures": textures},
                          SweepSettings(methods=["gaia_z", "gaia_a"], workers=0), use_cache=False)
    loader = DataLoader(ConcatDataset([id_set, WithTargetTransform(textures, ToUnknown())]), batch_size=64)
    batches = list(loader)  # decoded once for both detectors
    return model, evaluation, batches


@pytest.mark.real_data
@pytest.mark.parametrize("method, detector_class", [("gaia_z", GAIAZ), ("gaia_a", GAIAA)])
def test_oodmetrics_over_the_detector_equal_the_sweep(resnet20_sweep_and_loader, method, detector_class):
    model, evaluation, batches = resnet20_sweep_and_loader
    detector = detector_class(model)
    metrics = OODMetrics()
    scores, labels = [], []
    for x, y in batches:
        batch_scores = detector(x)
        metrics.update(batch_scores, y)
        scores.append(batch_scores)
        labels.append(y)
    theirs = metrics.compute()
    scores, labels = torch.cat(scores), torch.cat(labels)

    id_scores = evaluation.method_scores(method, evaluation.id_name)
    ood_scores = evaluation.method_scores(method, "textures")
    # the same code computes both: the scores are bit for bit the sweep's
    assert np.array_equal(scores[labels >= 0].numpy(), id_scores)
    assert np.array_equal(scores[labels < 0].numpy(), ood_scores)
    ours = evaluation.metrics_table().set_index("method").loc[method]
    assert theirs["AUROC"] == pytest.approx(ours["auroc"], abs=1e-12)
    # FPR95: ours takes ID as positive (OOD accepted at 95 % ID TPR), pytorch-ood's FPR95TPR
    # takes OOD as positive (ID flagged at 95 % OOD TPR); each is the other on negated scores
    # with the roles swapped
    assert theirs["FPR95TPR"] == pytest.approx(gm.fpr_at_tpr(-ood_scores, -id_scores), abs=1e-12)
    id_as_positive = torch.where(labels < 0, 0, -1)
    assert float(pood_functional.fpr_at_tpr(-scores, id_as_positive)) == pytest.approx(ours["fpr95"], abs=1e-12)
    # the two conventions give different numbers on these images, so the distinction matters
    assert theirs["FPR95TPR"] != pytest.approx(ours["fpr95"], abs=1e-3)


# --------------------------------------------------------------------------- pytorch-ood: API


def test_the_detectors_follow_the_pytorch_ood_api(demo):
    model, _, _, x = demo
    for detector_class, score in ((GAIAZ, gaia.gaia_z), (GAIAA, gaia.gaia_a)):
        detector = detector_class(model)
        assert isinstance(detector, GradientDetector) and isinstance(detector, Detector)
        assert detector.requires_fit is False and detector.hyperparameter_space == {}
        assert detector.fit(None) is detector and detector.fit_features(None, None) is detector
        paper = detector_class.info.paper
        assert (paper.venue, paper.year, paper.code) == ("NeurIPS", 2023, "https://github.com/JGEthanChen/GAIA-OOD")
        assert "GAIA" in paper.title and paper.url.startswith("https://")
        assert torch.equal(detector(x), score(model, x)) and torch.equal(detector.predict(x), score(model, x))
        assert detector.to("cpu") is detector and detector.device == torch.device("cpu")
        with pytest.raises(NotImplementedError, match="gradients"):
            detector.predict_features(torch.zeros(len(x), 96))
        with pytest.raises(ModelNotSetException, match="needs the model"):
            detector_class(None)


def test_layers_and_options_are_constructor_arguments(demo):
    model, _, _, x = demo
    assert torch.equal(GAIAZ(model, layers=["bn2", "bn3"])(x), gaia.gaia_z(model, x, layers=["bn2", "bn3"]))
    assert torch.equal(GAIAZ(model, layers="bn1")(x), gaia.gaia_z(model, x, layers=["bn1"]))
    assert not torch.equal(GAIAZ(model, layers="bn1")(x), GAIAZ(model)(x))
    chosen = GAIAA(model, inner_layers=["bn2"], head_layer="relu3")(x)
    assert torch.equal(chosen, gaia.gaia_a(model, x, inner_layers=["bn2"], head_layer="relu3"))
    with pytest.raises(LayerError):
        GAIAZ(model, layers=["no_such_layer"])(x)


def test_documentation_loop_runs_unchanged_with_gaiaz_swapped_in(demo):
    """pytorch-ood's documented loop (``metrics.update(detector(x), y)``, OOD labelled -1 by
    ``ToUnknown``, under ``torch.no_grad()``), run with one of its detectors, then with GAIAZ."""
    model, id_set, ood_set, _ = demo

    def documented_loop(detector):
        loader = DataLoader(ConcatDataset([id_set, ood_set]), batch_size=16)
        detector.fit(loader)
        metrics = OODMetrics()
        with torch.no_grad():
            for x, y in loader:
                metrics.update(detector(x), y)
        return metrics.compute()

    energy = documented_loop(EnergyBased(model))
    gaia_z = documented_loop(GAIAZ(model))
    assert set(gaia_z) == set(energy) and "FPR95TPR" in gaia_z
    x_id = torch.stack([x for x, _ in id_set])
    x_ood = torch.stack([x for x, _ in ood_set])
    expected = gm.auroc(gaia.gaia_z(model, x_id).numpy(), gaia.gaia_z(model, x_ood).numpy())
    assert gaia_z["AUROC"] == pytest.approx(expected, abs=1e-12)


def test_the_model_is_left_as_found(demo):
    model, _, _, x = demo
    model.train()
    model.bn1.eval()
    model.conv2.weight.requires_grad_(False)
    handle = model.bn2.register_forward_hook(lambda *_: None)  # the user's own hook survives
    try:
        before = model_state(model)
        train_scores = GAIAZ(model)(x)
        GAIAA(model)(x)
        GaiaMaps(model, ["bn1", "bn3"]).attribute(x, target=3)
        with pytest.raises(ModelError):
            GaiaMaps(model, "bn1").attribute(x, target=[1, 2])  # wrong count: refused, nothing left behind
        assert model_state(model) == before
        model.eval()
        assert torch.equal(train_scores, GAIAZ(model)(x))  # GAIA always scores in eval mode
    finally:
        handle.remove()
        model.conv2.weight.requires_grad_(True)
        model.eval()


# --------------------------------------------------------------------------- Captum


def _reference_grads(model, x, layers, objective):
    """Plain autograd: forward hooks that keep each layer's output, retain_grad, backward."""
    modules = dict(model.named_modules())
    kept = {}
    handles = [modules[n].register_forward_hook(lambda _m, _i, out, n=n: kept.__setitem__(n, out) or out.retain_grad())
               for n in layers]
    try:
        objective(model(x)).backward()
    finally:
        for h in handles:
            h.remove()
        model.zero_grad(set_to_none=True)
    return [kept[n].grad for n in layers]


def test_gaia_maps_follow_captums_convention(demo):
    model, _, _, x = demo
    maps = GaiaMaps(model, ["bn1", "bn3"])
    assert isinstance(maps, LayerAttribution)
    assert maps.layer == [model.bn1, model.bn3] and maps.layer_names == ["bn1", "bn3"]
    out = maps.attribute(x)
    assert isinstance(out, list) and [m.shape for m in out] == [(8, 32, 28, 28), (8, 96, 7, 7)]
    by_module = GaiaMaps(model, [model.bn1, model.bn3]).attribute((x,))  # modules, 1-tuple input
    assert all(torch.equal(a, b) for a, b in zip(out, by_module))
    from_module_list = GaiaMaps(model, nn.ModuleList([model.bn1, model.bn3])).attribute(x)
    assert all(torch.equal(a, b) for a, b in zip(out, from_module_list))
    single = GaiaMaps(model, "bn3").attribute(x)
    assert isinstance(single, torch.Tensor) and torch.equal(single, out[1])
    # the maps are GAIA's: what GAIA-Z counts
    ratio = (single != 0).flatten(2).double().mean(2)
    assert torch.allclose(ratio, gaia.gaia_analyze(model, x, layers=["bn3"], average=False).nonzero_ratio["bn3"])
    # Captum's helpers take them as they are
    heat = LayerAttribution.interpolate((single != 0).float().mean(1, keepdim=True), x.shape[-2:])
    assert heat.shape == (8, 1, 28, 28)


def test_gaia_maps_equal_plain_autograd_with_and_without_target(demo):
    model, _, _, x = demo
    layers = ["bn1", "bn2"]
    x = x.double()
    model = load_demo_model().double()
    none = GaiaMaps(model, layers).attribute(x)
    for mine, ref in zip(none, _reference_grads(model, x, layers, lambda z: z.max(1).values.sum())):
        assert torch.allclose(mine, ref, rtol=1e-10, atol=1e-14)
    target = torch.tensor([0, 1, 2, 3, 4, 5, 6, 7])
    targeted = GaiaMaps(model, layers).attribute(x, target=target)
    for mine, ref in zip(targeted, _reference_grads(model, x, layers, lambda z: z.gather(1, target[:, None]).sum())):
        assert torch.allclose(mine, ref, rtol=1e-10, atol=1e-14)
    predicted = GaiaMaps(model, layers).attribute(x, target=model(x).argmax(1))
    assert all(torch.equal(a, b) for a, b in zip(none, predicted))  # max logit = predicted class's
    one_class = GaiaMaps(model, "bn2").attribute(x, target=3)
    assert torch.equal(one_class, GaiaMaps(model, "bn2").attribute(x, target=[3] * 8))


def test_gaia_maps_refuse_bad_arguments_with_reasons(demo):
    model, _, _, x = demo
    with pytest.raises(ModelError, match="max_logit objective only"):
        GaiaMaps(model, "bn3", objective="before_head_sum").attribute(x, target=1)
    with pytest.raises(ModelError, match="one per sample"):
        GaiaMaps(model, "bn3").attribute(x, target=[1, 2])
    with pytest.raises(ModelError, match=r"\[0, 9\]"):
        GaiaMaps(model, "bn3").attribute(x, target=10)
    with pytest.raises(ModelError, match="integers"):
        GaiaMaps(model, "bn3").attribute(x, target=torch.tensor(1.0))
    with pytest.raises(ModelError, match="unknown objective"):
        GaiaMaps(model, "bn3", objective="logits")
    with pytest.raises(LayerError, match="not a module of the model"):
        GaiaMaps(model, nn.BatchNorm2d(3))
    with pytest.raises(LayerError, match="no module named"):
        GaiaMaps(model, ["bn1", "bn9"])
    inner = GaiaMaps(model, ["bn2"], objective="before_head_sum").attribute(x)
    assert torch.equal(inner[0], gaia.layer_gradients(model, x, ["bn2"], "before_head_sum")["bn2"])


# --------------------------------------------------------------------------- README and imports


def readme_snippets() -> list[str]:
    text = (ROOT / "README.md").read_text()
    assert README_SECTION in text, f"README.md lacks the section {README_SECTION!r}"
    section = text.split(README_SECTION, 1)[1].split("\n## ", 1)[0]
    return re.findall(r"```python\n(.*?)```", section, re.S)


def test_readme_snippets_run(capsys):
    snippets = readme_snippets()
    assert len(snippets) == 2  # pytorch-ood and Captum; OODeel is not integrated (the section says why)
    namespace: dict = {}
    for snippet in snippets:
        exec(compile(snippet, "README.md", "exec"), namespace)
    printed = capsys.readouterr().out
    assert "AUROC" in printed and "FPR95TPR" in printed
    assert isinstance(namespace["detector"], GAIAZ)
    assert len(namespace["maps"]) == 3 and namespace["heat"].shape == (8, 1, 28, 28)


BLOCKED_IMPORTS = textwrap.dedent("""
    import importlib, sys, torch

    class Blocked:
        def find_spec(self, name, path=None, target=None):
            if name.split(".")[0] in ("pytorch_ood", "captum", "oodeel"):
                raise ImportError(f"No module named {name!r}", name=name)
            return None

    sys.meta_path.insert(0, Blocked())
    import gaia_viz, gaia_viz.gaia, gaia_viz.models, gaia_viz.data, gaia_viz.detectors, gaia_viz.metrics
    import gaia_viz.sweep, gaia_viz.threshold, gaia_viz.cli, gaia_viz.report, gaia_viz.attribution
    import gaia_viz.integrations
    from gaia_viz.demo import load_demo_model
    scores = gaia_viz.gaia.gaia_z(load_demo_model(), torch.zeros(2, 1, 28, 28))
    assert scores.shape == (2,)
    loaded = sorted(m for m in sys.modules if m.split(".")[0] in ("pytorch_ood", "captum", "oodeel"))
    assert not loaded, loaded
    for module, words in (("gaia_viz.integrations.pytorch_ood", ["pytorch-ood", "pip install pytorch-ood==0.4.0 --no-deps"]),
                          ("gaia_viz.integrations.captum", ["captum", "pip install captum"])):
        try:
            importlib.import_module(module)
        except ImportError as error:
            assert all(w in str(error) for w in words), str(error)
            assert error.__cause__ is None and error.__suppress_context__, "one error, not a chain"
            print(type(error).__name__ + ": " + str(error))
        else:
            raise AssertionError(module + " imported without its package")
""")


def test_core_imports_without_pytorch_ood_or_captum_and_the_integrations_say_what_to_install():
    done = subprocess.run([sys.executable, "-c", BLOCKED_IMPORTS], cwd=ROOT, capture_output=True, text=True,
                          timeout=180)
    assert done.returncode == 0, done.stderr[-3000:]
    lines = done.stdout.strip().splitlines()
    assert len(lines) == 2 and all(line.startswith("ImportError: gaia_viz.integrations.") for line in lines)
    assert "not installed" in lines[0] and "gaia_viz itself does not need it" in lines[0]


def test_the_import_error_tells_a_missing_package_from_a_broken_one():
    from gaia_viz.integrations import missing_package_error

    missing = missing_package_error("gaia_viz.integrations.pytorch_ood", "pytorch-ood",
                                    "pip install pytorch-ood==0.4.0 --no-deps",
                                    ImportError("No module named 'pytorch_ood'", name="pytorch_ood"))
    assert "is not installed" in str(missing) and "pip install pytorch-ood==0.4.0 --no-deps" in str(missing)
    assert missing.name == "pytorch_ood"
    # pytorch-ood present, one of its own imports failing: say so, with that import's error
    broken = missing_package_error("gaia_viz.integrations.pytorch_ood", "pytorch-ood",
                                   "pip install pytorch-ood==0.4.0 --no-deps",
                                   ImportError("No module named 'scipy'", name="scipy"))
    assert "installed but fails to import" in str(broken) and "'scipy'" in str(broken)
