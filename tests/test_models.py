"""Tests for gaia_viz.models: architectures, safe checkpoint loading, torchvision weights offline."""

import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file
from torch import nn

import gaia_viz.models.zoo as zoo
from gaia_viz.errors import CheckpointError, ModelError
from gaia_viz.models import (
    cifar_resnet,
    default_preset,
    classifier_head,
    gaia_resnet18,
    hub_checkpoint_path,
    infer_num_classes,
    list_models,
    load_checkpoint_into,
    load_model,
    load_state_dict_file,
)

from support import DATA_ROOT

needs_data = pytest.mark.skipif(
    not (DATA_ROOT / "models" / "cifar10_resnet20.th").is_file(),
    reason=f"shared data not found at {DATA_ROOT} (set GAIA_VIZ_DATA_ROOT)",
)
IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


def n_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def same_weights(a: nn.Module, b: nn.Module) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


class WritesMarker:
    """Unpickling this would call open(marker, "w"), creating the marker file."""

    def __init__(self, marker: Path):
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


# --- architectures -------------------------------------------------------------------------


@pytest.mark.parametrize(
    "depth, expected", [(20, 269_722), (32, 464_154), (44, 658_586), (56, 853_018), (110, 1_727_962)]
)
def test_cifar_resnet_parameter_counts_match_he_et_al(depth, expected):
    # He et al. 2016 table 6: 0.27M, 0.46M, 0.66M, 0.85M, 1.7M
    model = cifar_resnet(depth)
    assert n_params(model) == expected
    assert model(torch.zeros(2, 3, 32, 32)).shape == (2, 10)


def test_cifar_resnet_has_akamaster_key_names_and_no_shortcut_parameters():
    keys = set(cifar_resnet(20).state_dict())
    assert {"conv1.weight", "bn1.running_var", "layer3.2.conv2.weight", "layer2.0.bn1.bias",
            "linear.weight", "linear.bias"} <= keys
    assert not any("shortcut" in k for k in keys)


def test_gaia_resnet18_key_names_and_output():
    model = gaia_resnet18(num_classes=100)
    keys = set(model.state_dict())
    assert {"layer2.0.shortcut.0.weight", "layer2.0.shortcut.1.running_mean", "linear.weight"} <= keys
    assert not any(k.startswith("layer1.0.shortcut") for k in keys)
    assert abs(n_params(model) - 11.2e6) < 0.1e6
    assert model.eval()(torch.zeros(1, 3, 32, 32)).shape == (1, 100)


def test_unknown_depth_and_name_raise_model_error():
    with pytest.raises(ModelError):
        cifar_resnet(21)
    with pytest.raises(ModelError, match="unknown model 'resnet1'.*resnet18"):
        load_model("resnet1")
    with pytest.raises(ModelError):
        default_preset("no_such_model")


def test_list_models_and_default_presets():
    names = list_models(expand=True)
    assert {"demo", "cifar_resnet20", "cifar_resnet110", "gaia_resnet34", "resnet50", "vit_b_16"} <= set(names)
    assert not {"fasterrcnn_resnet50_fpn", "raft_large"} & set(names)  # not classifiers
    assert default_preset("demo") == "demo-mnist28"
    assert default_preset("cifar_resnet56") == "cifar-imagenet-norm"
    assert default_preset("gaia_resnet18") == "gaia-cifar10"
    assert default_preset("gaia_resnet18", num_classes=100) == "gaia-cifar100"
    assert default_preset("tv:resnet18") == default_preset("densenet121") == "imagenet224"


def test_classifier_head_finds_last_linear_and_refuses_conv_heads_on_spatial_maps():
    model = cifar_resnet(20)
    head = classifier_head(model)
    assert head.name == "linear" and head.module is model.linear and head.num_classes == 10
    squeezenet = load_model("squeezenet1_1", pretrained=False)  # its classifier is a 1x1 conv
    with pytest.raises(ModelError, match="no nn.Linear"):
        classifier_head(squeezenet)


def test_demo_name_delegates_lazily(monkeypatch):
    import gaia_viz.demo

    built = nn.Sequential(nn.Flatten(), nn.Linear(4, 10)).train()
    monkeypatch.setattr(gaia_viz.demo, "load_demo_model", lambda: built, raising=False)
    model = load_model("demo")
    assert model is built and not model.training


def test_gaia_resnet_without_checkpoint_needs_pretrained_false():
    with pytest.raises(ModelError, match="pretrained=False"):
        load_model("gaia_resnet18")
    model = load_model("gaia_resnet18", pretrained=False, num_classes=100)
    assert not model.training and classifier_head(model).num_classes == 100


# --- shared real checkpoints -----------------------------------------------------------------


@needs_data
@pytest.mark.parametrize("depth", [20, 56])
def test_shared_akamaster_checkpoints_load_as_they_are(depth):
    path = DATA_ROOT / "models" / f"cifar10_resnet{depth}.th"
    raw = torch.load(path, map_location="cpu", weights_only=True)["state_dict"]
    model = load_model(f"cifar_resnet{depth}", checkpoint=path)
    assert not model.training
    assert torch.equal(model.linear.weight, raw["module.linear.weight"])
    assert torch.equal(model.layer3[0].bn2.running_var, raw["module.layer3.0.bn2.running_var"])
    assert same_weights(model, load_model(f"cifar_resnet{depth}"))  # pretrained = same file


@needs_data
def test_resnet20_is_accurate_on_real_cifar10_images():
    from torchvision import datasets, transforms

    test_dir = DATA_ROOT / "cifar10" / "test"
    if not test_dir.is_dir():
        pytest.skip(f"CIFAR-10 test images not found at {test_dir}")
    transform = transforms.Compose([transforms.ToTensor(), transforms.Normalize(IMAGENET_MEAN, IMAGENET_STD)])
    dataset = datasets.ImageFolder(str(test_dir), transform=transform)
    first_20_per_class = [
        i for c in range(10) for i in [j for j, (_, y) in enumerate(dataset.samples) if y == c][:20]
    ]
    images, labels = zip(*(dataset[i] for i in first_20_per_class))
    model = load_model("cifar_resnet20", checkpoint=DATA_ROOT / "models" / "cifar10_resnet20.th")
    with torch.no_grad():
        predicted = model(torch.stack(images)).argmax(1)
    accuracy = (predicted == torch.tensor(labels)).float().mean().item()
    assert accuracy >= 0.70, f"ResNet-20 top-1 on 200 real CIFAR-10 images: {accuracy:.1%}"


# --- checkpoint formats ----------------------------------------------------------------------


@pytest.mark.parametrize("layout", ["bare", "state_dict", "model", "net", "module_prefix", "nested",
                                    "safetensors", "bytes"])
def test_checkpoint_round_trips(tmp_path, layout):
    source = cifar_resnet(20, num_classes=10)
    sd = source.state_dict()
    path = tmp_path / "ckpt.pt"
    if layout == "bare":
        torch.save(sd, path)
    elif layout in ("state_dict", "model", "net"):
        torch.save({layout: sd, "epoch": 3, "best_prec1": 91.0}, path)
    elif layout == "module_prefix":
        torch.save({"state_dict": {f"module.{k}": v for k, v in sd.items()}}, path)
    elif layout == "nested":
        torch.save({"model": {"state_dict": {f"module.model.{k}": v for k, v in sd.items()}}}, path)
    elif layout == "safetensors":
        path = tmp_path / "ckpt.safetensors"
        save_file({k: v.contiguous() for k, v in sd.items()}, str(path))
    if layout == "bytes":
        torch.save(sd, path)
        checkpoint = path.read_bytes()
    else:
        checkpoint = path
    model = load_model("cifar_resnet20", checkpoint=checkpoint)
    assert same_weights(model, source.eval())
    assert not model.training


def test_safetensors_bytes_are_recognised_by_content(tmp_path):
    sd = gaia_resnet18(num_classes=10).state_dict()
    path = tmp_path / "weights.bin"  # no .safetensors suffix
    save_file({k: v.contiguous() for k, v in sd.items()}, str(path))
    loaded = load_state_dict_file(path.read_bytes())
    assert loaded.keys() == sd.keys() and torch.equal(loaded["linear.weight"], sd["linear.weight"])


@pytest.mark.filterwarnings("ignore:Detected pickle protocol")
@pytest.mark.parametrize("fmt", ["zip", "legacy", "plain_pickle"])
def test_pickle_that_runs_code_is_refused_and_never_executed(tmp_path, fmt):
    import pickle

    marker = tmp_path / "pwned"
    payload = {"state_dict": {"conv1.weight": WritesMarker(marker)}}
    path = tmp_path / "evil.pt"
    if fmt == "plain_pickle":
        path.write_bytes(pickle.dumps(payload))
    else:
        torch.save(payload, path, _use_new_zipfile_serialization=(fmt == "zip"))
    with pytest.raises(CheckpointError, match="refused: this checkpoint needs to run code"):
        load_model("cifar_resnet20", checkpoint=path)
    assert not marker.exists()


def test_whole_pickled_module_is_refused(tmp_path):
    path = tmp_path / "full_model.pt"
    torch.save(cifar_resnet(20), path)
    with pytest.raises(CheckpointError, match="refused"):
        load_state_dict_file(path)


@pytest.mark.parametrize("suffix", [".pt", ".safetensors"])
def test_truncated_or_garbage_files_raise_checkpoint_error(tmp_path, suffix):
    sd = cifar_resnet(20).state_dict()
    path = tmp_path / f"ckpt{suffix}"
    if suffix == ".pt":
        torch.save(sd, path)
    else:
        save_file(sd, str(path))
    data = path.read_bytes()
    for cut in (len(data) // 2, 100, 9, 3):
        path.write_bytes(data[:cut])
        with pytest.raises(CheckpointError):
            load_state_dict_file(path)
    path.write_bytes(b"")
    with pytest.raises(CheckpointError, match="empty"):
        load_state_dict_file(path)
    with pytest.raises(CheckpointError, match="cannot read"):
        load_state_dict_file(tmp_path / "missing.pt")


def test_non_state_dict_contents_raise_checkpoint_error(tmp_path):
    path = tmp_path / "list.pt"
    torch.save([torch.zeros(1)], path)
    with pytest.raises(CheckpointError, match="no state_dict"):
        load_state_dict_file(path)
    torch.save({"weight": torch.zeros(1), "epoch": 3}, path)
    with pytest.raises(CheckpointError, match="not tensors: epoch"):
        load_state_dict_file(path)


def test_integer_safetensors_where_floats_are_expected(tmp_path):
    sd = {k: v.contiguous() for k, v in cifar_resnet(20).state_dict().items()}
    sd["conv1.weight"] = sd["conv1.weight"].to(torch.int64)
    path = tmp_path / "ints.safetensors"
    save_file(sd, str(path))
    with pytest.raises(CheckpointError, match=r"conv1\.weight: checkpoint torch\.int64"):
        load_model("cifar_resnet20", checkpoint=path)


def test_key_mismatch_lists_missing_and_unexpected_keys():
    sd = cifar_resnet(20).state_dict()
    del sd["layer2.1.conv1.weight"]
    sd["extra.weight"] = torch.zeros(3)
    with pytest.raises(CheckpointError) as info:
        load_checkpoint_into(cifar_resnet(20), sd)
    message = str(info.value)
    assert "missing keys (1): layer2.1.conv1.weight" in message
    assert "unexpected keys (1): extra.weight" in message
    load_checkpoint_into(cifar_resnet(20), sd, strict=False)  # tolerated when not strict


def test_long_key_lists_are_capped():
    with pytest.raises(CheckpointError, match=r"missing keys \(\d+\): .* \.\.\. and \d+ more"):
        load_checkpoint_into(gaia_resnet18(), cifar_resnet(20).state_dict())


def test_missing_num_batches_tracked_is_tolerated():
    source = cifar_resnet(20)
    sd = {k: v for k, v in source.state_dict().items() if not k.endswith("num_batches_tracked")}
    assert same_weights(load_checkpoint_into(cifar_resnet(20), sd), source)


def test_shape_mismatch_shows_both_shapes(tmp_path):
    path = tmp_path / "ten.pt"
    torch.save(cifar_resnet(20, num_classes=10).state_dict(), path)
    with pytest.raises(CheckpointError, match=r"linear\.weight: checkpoint \(10, 64\) vs model \(100, 64\)"):
        load_model("cifar_resnet20", checkpoint=path, num_classes=100)


def test_num_classes_is_inferred_from_the_head(tmp_path):
    path = tmp_path / "hundred.pt"
    torch.save({"net": {f"module.{k}": v for k, v in gaia_resnet18(num_classes=100).state_dict().items()}}, path)
    model = load_model("gaia_resnet18", checkpoint=path)
    assert classifier_head(model).num_classes == 100
    assert infer_num_classes({"features.0.weight": torch.zeros(8, 3, 3, 3),
                              "classifier.0.weight": torch.zeros(1024, 960),
                              "classifier.3.weight": torch.zeros(7, 1024)}) == 7
    assert infer_num_classes({"heads.head.weight": torch.zeros(5, 768)}) == 5
    assert infer_num_classes({"classifier.1.weight": torch.zeros(1000, 512, 1, 1)}) is None


# --- torchvision ---------------------------------------------------------------------------


@pytest.fixture
def offline_hub(tmp_path, monkeypatch):
    """An empty torch hub dir, and any attempt to download fails the test."""
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch_home"))

    def no_network(*args, **kwargs):
        raise AssertionError("tried to download")

    monkeypatch.setattr(torch.hub, "download_url_to_file", no_network)
    monkeypatch.setattr("socket.socket.connect", no_network)
    return tmp_path / "torch_home" / "hub" / "checkpoints"


def test_torchvision_pretrained_offline_names_the_missing_file(offline_hub):
    start = time.monotonic()
    with pytest.raises(ModelError) as info:
        load_model("resnet18")
    assert time.monotonic() - start < 5
    assert str(offline_hub / "resnet18-f37072fd.pth") in str(info.value)


def test_torchvision_weights_are_read_from_the_hub_cache(offline_hub):
    from torchvision.models import get_model, get_model_weights

    reference = get_model("resnet18", weights=None)
    path = hub_checkpoint_path(get_model_weights("resnet18").DEFAULT.url)
    assert path.parent == offline_hub
    path.parent.mkdir(parents=True)
    torch.save(reference.state_dict(), path)
    model = load_model("tv:resnet18")
    assert same_weights(model, reference.eval()) and not model.training


def test_torchvision_cached_file_that_runs_code_is_refused(offline_hub, tmp_path):
    from torchvision.models import get_model_weights

    marker = tmp_path / "pwned"
    path = hub_checkpoint_path(get_model_weights("resnet18").DEFAULT.url)
    path.parent.mkdir(parents=True)
    torch.save({"fc.weight": WritesMarker(marker)}, path)
    with pytest.raises(ModelError, match="refused"):
        load_model("resnet18")
    assert not marker.exists()


def test_torchvision_download_only_when_allowed(offline_hub, monkeypatch):
    from torchvision.models import get_model

    reference = get_model("resnet18", weights=None)
    calls = []

    def fake_download(url, dst, hash_prefix=None, progress=True):
        calls.append((url, hash_prefix))
        torch.save(reference.state_dict(), dst)

    monkeypatch.setattr(torch.hub, "download_url_to_file", fake_download)
    model = load_model("resnet18", allow_download=True)
    assert calls == [("https://download.pytorch.org/models/resnet18-f37072fd.pth", "f37072fd")]
    assert same_weights(model, reference.eval())


def test_torchvision_random_init_and_class_count_checks(offline_hub):
    model = load_model("resnet18", pretrained=False, num_classes=3)
    head = classifier_head(model)
    assert head.name == "fc" and head.module is model.fc and model.fc.out_features == 3
    with pytest.raises(ModelError, match="1000 classes, not 3"):
        load_model("resnet18", num_classes=3)


def test_torchvision_with_user_checkpoint_needs_no_hub_weights(offline_hub, tmp_path):
    from torchvision.models import get_model

    reference = get_model("resnet18", weights=None, num_classes=4)
    path = tmp_path / "tv.safetensors"
    save_file(reference.state_dict(), str(path))
    model = load_model("resnet18", checkpoint=path)
    assert same_weights(model, reference.eval())


def test_missing_shared_cifar_weights_name_the_path(monkeypatch, tmp_path):
    monkeypatch.setenv("GAIA_VIZ_DATA_ROOT", str(tmp_path))
    assert zoo.shared_data_root() == tmp_path
    with pytest.raises(ModelError, match=str(tmp_path / "models" / "cifar10_resnet20.th")):
        load_model("cifar_resnet20")
    with pytest.raises(ModelError, match="only depths"):
        load_model("cifar_resnet110")
