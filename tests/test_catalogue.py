"""The model catalogue (gaia_viz.models.catalogue): its queries, every entry loading through
load_model with the catalogue's defaults, and the readers that print it (README, CLI help,
sidebar, report). Models are random-init or the shared CIFAR checkpoints (skipped when
absent); the large BiT releases are built on the meta device. Nothing is downloaded."""

import dataclasses
import os
from pathlib import Path

import pytest
import torch
from torch import nn

from gaia_viz.data.presets import PRESETS
from gaia_viz.errors import ModelError
from gaia_viz.models import (BIT_NAMES, classifier_head, default_preset, list_models, load_model,
                             model_families, model_info)
from gaia_viz.models.catalogue import ModelInfo, catalogue_markdown, checkpoint_files, register_family

ROOT = Path(__file__).resolve().parents[1]
DATA_ROOT = Path(os.environ.get("GAIA_VIZ_DATA_ROOT", ROOT.parent / "shared" / "data"))
CLOSED_NAMES = [name for name in list_models() if not name.endswith(">")]
# what the sidebar showed before it read the catalogue: the catalogue must give the same
OLD_SIDEBAR_KINDS = {
    "demo": "Demo digit CNN (embedded)",
    "cifar": "CIFAR ResNet (20-110)",
    "densenet": "CIFAR DenseNet-BC-100 (ODIN's)",
    "gaia": "GAIA ResNet-18/34",
    "bit": "Big Transfer BiT (the paper's ImageNet model)",
    "torchvision": "torchvision classifier",
    "timm": "timm model",
}


def test_families_register_in_the_sidebars_order_with_its_labels():
    assert {family.kind: family.label for family in model_families()} == OLD_SIDEBAR_KINDS
    assert list(OLD_SIDEBAR_KINDS) == [family.kind for family in model_families()]
    assert [family.kind for family in model_families() if family.is_open] == ["torchvision", "timm"]


def test_list_models_by_family():
    assert list_models("demo") == ["demo"]
    assert list_models("cifar") == [f"cifar_resnet{d}" for d in (20, 32, 44, 56, 110)]
    assert list_models("densenet") == ["cifar_densenet_bc100"]
    assert list_models("gaia") == ["gaia_resnet18", "gaia_resnet34"]
    assert list_models("bit") == list(BIT_NAMES) and len(BIT_NAMES) == 12
    assert list_models("torchvision") == ["tv:<name>"] and list_models("timm") == ["timm:<name>"]
    assert list_models() == [name for family in model_families() for name in list_models(family.kind)]
    torchvision_names = list_models("torchvision", expand=True)
    assert {"resnet18", "vit_b_16", "densenet121"} <= set(torchvision_names)
    assert not {"fasterrcnn_resnet50_fpn", "raft_large"} & set(torchvision_names)  # not classifiers
    timm_names = list_models("timm", expand=True)
    assert "timm:resnet18" in timm_names and all(name.startswith("timm:") for name in timm_names)
    assert set(list_models(expand=True)) == set(CLOSED_NAMES) | set(torchvision_names) | set(timm_names)
    with pytest.raises(ModelError, match="unknown model family 'resnet'.*cifar"):
        list_models("resnet")


def test_model_info_of_the_closed_families():
    shared = {"cifar_resnet20": "models/cifar10_resnet20.th", "cifar_resnet56": "models/cifar10_resnet56.th",
              "cifar_densenet_bc100": "models/cifar10_densenet_bc100.safetensors"}
    for name in CLOSED_NAMES:
        info = model_info(name)
        assert info.name == info.arch == name and info.default_preset in PRESETS
        assert info.checkpoint_file == shared.get(name)
        assert info.weights == ("shared" if name in shared else "bundled" if name == "demo" else "none")
        assert info.has_pretrained == (name in shared or name == "demo")
    assert checkpoint_files() == list(shared.values()) and checkpoint_files("gaia") == []
    assert [model_info(n).depth for n in list_models("cifar")] == [20, 32, 44, 56, 110]
    assert model_info("gaia_resnet34").depth == 34 and model_info("BiT-M-R152x4").depth == 152
    assert model_info("BiT-S-R101x1").num_classes == 1000 and model_info("demo").num_classes == 10
    assert model_info("gaia_resnet18").preset(100) == "gaia-cifar100" == default_preset("gaia_resnet34", 100)
    assert model_info("  cifar_resnet20 ") is model_info("cifar_resnet20")
    with pytest.raises(dataclasses.FrozenInstanceError):
        model_info("demo").default_preset = "imagenet224"


def test_open_families_resolve_concrete_names():
    for name, kind, arch in [("resnet18", "torchvision", "resnet18"), ("tv:vit_b_16", "torchvision", "vit_b_16"),
                             ("timm:resnet50.a1_in1k", "timm", "resnet50.a1_in1k")]:
        info = model_info(name)
        assert (info.name, info.kind, info.arch, info.default_preset) == (name, kind, arch, "imagenet224")
        assert info.weights == "hub" and info.num_classes is None and info.checkpoint_file is None


@pytest.mark.parametrize("name, error", [
    ("cifar_resnet21", "unknown model 'cifar_resnet21'. Did you mean cifar_resnet"),
    ("BiT-S-R50x2", "unknown model 'BiT-S-R50x2'. Did you mean BiT-S-R50x"),
    ("tv:resnt18", "unknown model 'tv:resnt18'. Did you mean resnet18"),
    ("timm:resnet5O", "unknown timm model 'resnet5O'. Did you mean timm:resnet50"),
    ("<name>", "unknown model '<name>'"),
])
def test_unknown_names_say_so_with_close_matches(name, error):
    with pytest.raises(ModelError, match=error.replace(".", r"\.")):
        model_info(name)
    with pytest.raises(ModelError, match=error.replace(".", r"\.")):
        load_model(name, pretrained=False)


def test_a_name_that_is_no_text_and_a_second_registration_are_refused():
    with pytest.raises(ModelError, match="text, not int"):
        model_info(20)
    families = model_families()
    entry = ModelInfo("cifar_resnet20", "again", "x", "x", "imagenet224", 10, "none")
    for kind, models in [("cifar", [entry]), ("again", [dataclasses.replace(entry, kind="again")])]:
        with pytest.raises(ValueError, match="registered twice|already registered"):
            register_family(kind, "x", models)(lambda info, request: None)
    assert model_families() == families
    with pytest.raises(ValueError, match="checkpoint_file"):
        ModelInfo("x", "x", "x", "x", "imagenet224", 10, "shared")


def test_bits_declared_gaia_layers_are_the_models_group_norms():
    for name in BIT_NAMES:
        with torch.device("meta"):  # up to 936 M parameters: the module names are what is checked
            model = load_model(name, pretrained=False, device="meta")
        norms = tuple(f"body.block4.{n}" for n, m in model.body.block4.named_modules() if isinstance(m, nn.GroupNorm))
        declared = model_info(name).gaia_defaults
        assert declared == model.gaia_defaults
        assert declared.zero_layers == declared.inner_layers == norms and declared.head_layer == "before_head"
        assert classifier_head(model).num_classes == model_info(name).num_classes


@pytest.mark.parametrize("name", [n for n in CLOSED_NAMES if not n.startswith("BiT-")])
def test_every_entry_loads_with_the_catalogues_defaults(name, monkeypatch):
    info = model_info(name)
    if info.weights == "shared":
        if not (DATA_ROOT / info.checkpoint_file).is_file():
            pytest.skip(f"shared checkpoint {DATA_ROOT / info.checkpoint_file} not found (set GAIA_VIZ_DATA_ROOT)")
        monkeypatch.setenv("GAIA_VIZ_DATA_ROOT", str(DATA_ROOT))
        model = load_model(name)
        explicit = load_model(name, checkpoint=DATA_ROOT / info.checkpoint_file).state_dict()
        assert all(torch.equal(tensor, explicit[key]) for key, tensor in model.state_dict().items())
        assert not torch.equal(model.state_dict()[key := next(iter(explicit))],
                               load_model(name, pretrained=False).state_dict()[key])
    elif info.weights == "bundled":
        model = load_model(name)
    else:
        with pytest.raises(ModelError, match="pretrained=False"):
            load_model(name)
        model = load_model(name, pretrained=False)
    assert not model.training and classifier_head(model).num_classes == info.num_classes
    channels = 1 if info.default_preset == "demo-mnist28" else 3
    size = {"demo-mnist28": 28}.get(info.default_preset, 32)
    with torch.no_grad():
        assert model(torch.zeros(1, channels, size, size)).shape == (1, info.num_classes)


@pytest.fixture
def empty_caches(tmp_path, monkeypatch):
    """Empty torch hub and Hugging Face caches; any attempt to reach the network fails the test."""
    from huggingface_hub import constants

    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch_home"))
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hf" / "hub"))

    def no_network(*args, **kwargs):
        raise AssertionError("tried to reach the network")

    monkeypatch.setattr(torch.hub, "download_url_to_file", no_network)
    monkeypatch.setattr("socket.socket.connect", no_network)


@pytest.mark.parametrize("name", ["tv:mobilenet_v3_small", "timm:mobilenetv3_small_050"])
def test_open_families_load_a_small_model_without_weights(name, empty_caches):
    with pytest.raises(ModelError, match="not cached"):
        load_model(name)
    model = load_model(name, pretrained=False, num_classes=3)
    assert classifier_head(model).num_classes == 3 and model_info(name).default_preset == "imagenet224"


def test_the_readme_table_is_the_catalogues():
    text = (ROOT / "README.md").read_text()
    begin, end = "<!-- model catalogue: begin -->\n", "\n<!-- model catalogue: end -->"
    assert text.count(begin) == text.count(end) == 1
    table = text[text.index(begin) + len(begin):text.index(end)]
    names = [row.split("|")[1].strip().strip("`") for row in table.splitlines()[2:]]
    assert names == list_models()
    assert table == catalogue_markdown(), ("the README's model table is stale: paste the output of "
                                           "python -c 'from gaia_viz.models.catalogue import catalogue_markdown; "
                                           "print(catalogue_markdown())'")


def test_the_clis_model_help_lists_the_catalogue(capsys):
    from gaia_viz.cli import build_parser

    with pytest.raises(SystemExit):
        build_parser().parse_args(["evaluate", "--help"])
    help_text = "".join(capsys.readouterr().out.split())  # argparse wraps lines, also at hyphens
    assert all(name in help_text for name in list_models())


def test_the_sidebar_and_the_report_read_the_catalogue():
    from gaia_viz.app import catalogue as sidebar  # the sidebar's catalogue (gaia_viz.app.catalogue)
    from gaia_viz.report import MODEL_TITLES, REPORT_MODELS

    assert sidebar.MODEL_KINDS == OLD_SIDEBAR_KINDS and sidebar.BIT_NAMES == tuple(BIT_NAMES)
    assert sidebar.CIFAR_DEPTHS == (20, 32, 44, 56, 110) and sidebar.DENSENET_NAME == "cifar_densenet_bc100"
    assert sidebar.CIFAR_NAMES[56] == "cifar_resnet56" and sidebar.GAIA_NAMES == {18: "gaia_resnet18",
                                                                                   34: "gaia_resnet34"}
    assert REPORT_MODELS == {"cifar_resnet20": "cifar10_resnet20.th", "cifar_resnet56": "cifar10_resnet56.th",
                             "cifar_densenet_bc100": "cifar10_densenet_bc100.safetensors"}
    assert MODEL_TITLES == {"cifar_resnet20": "ResNet-20", "cifar_resnet56": "ResNet-56",
                            "cifar_densenet_bc100": "DenseNet-BC-100"}
