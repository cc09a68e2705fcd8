"""Tests for gaia_viz.demo: the bundled digits/OOD sets, the shipped CNN and its training."""

from __future__ import annotations

import json
import time

import numpy as np
import pytest
import torch
from torch import nn

from gaia_viz.data import open_source
from gaia_viz.demo import (
    DEMO_CHECKPOINT,
    DEMO_ID_NAME,
    DEMO_METADATA,
    DEMO_OOD_NAMES,
    DEMO_PRESET,
    DemoCNN,
    demo_id_set,
    demo_ood_sets,
    load_demo_model,
)
from gaia_viz.demo import datasets as demo_datasets
from gaia_viz.demo.train import TRAIN_COMMAND, main as train_main
from gaia_viz.errors import CheckpointError

MIN_ACCURACY = 0.97
MAX_BYTES = 2 * 1024 * 1024


@torch.no_grad()
def held_out_accuracy(model: nn.Module) -> float:
    """Accuracy on the 1,000 held-out digits, read through the ImageSet/preset pipeline."""
    loader = torch.utils.data.DataLoader(demo_id_set("test"), batch_size=250)
    correct = sum(int((model(x).argmax(1) == y).sum()) for x, y in loader)
    return correct / 1000


def test_digit_split_is_stratified_and_disjoint():
    test, train = demo_id_set("test"), demo_id_set("train")
    assert test.name == DEMO_ID_NAME and (len(train), len(test)) == (4000, 1000)
    assert np.bincount(test.labels).tolist() == [100] * 10
    assert np.bincount(train.labels).tolist() == [400] * 10
    assert test.class_names == [str(d) for d in range(10)]
    assert test.preset_name == DEMO_PRESET and test.ood_policy == "resize"
    x, y = test[0]
    assert x.shape == (1, 28, 28) and 0 <= y <= 9
    assert test.raw_image(0).mode == "RGB" and test.raw_image(0).size == (28, 28)
    # every image of the 5,000 lands in exactly one split
    assert len({a.tobytes() for a in test.images} & {a.tobytes() for a in train.images}) <= 5


def test_ood_sets_are_real_deterministic_and_unlabelled():
    sets = demo_ood_sets()
    assert tuple(sets) == DEMO_OOD_NAMES == ("faces", "textures", "photos", "letters", "noise")
    for name, images in sets.items():
        assert images.name == name and len(images) == 200
        assert set(images.labels) == {-1} and images.class_names is None
        assert images.images.shape == (200, 28, 28) and images.images.dtype == np.uint8
        assert images[0][0].shape == (1, 28, 28) and images.raw_image(5).mode == "RGB"
        assert images.images.std() > 10, f"{name} looks blank"
        assert len({a.tobytes() for a in images.images}) == 200, f"{name} has duplicates"
    assert sets["letters"].images.mean() < 60  # white on black like MNIST


def test_demo_sets_build_fast_and_identically():
    before = {k: v.images.copy() for k, v in demo_ood_sets().items()}
    for builder in (demo_datasets.mnist_split, *demo_datasets.OOD_BUILDERS.values()):
        builder.cache_clear()
    start = time.process_time()
    rebuilt = demo_ood_sets()
    demo_id_set("test")
    assert time.process_time() - start < 3.0
    for name, arr in before.items():
        assert np.array_equal(rebuilt[name].images, arr)


def test_demo_sets_follow_another_preset():
    faces = demo_ood_sets(preset="gaia-cifar10", ood_policy="center-crop")["faces"]
    assert faces[0][0].shape == (3, 32, 32) and faces.ood_policy == "center-crop"
    assert demo_id_set("test", preset="imagenet224")[0][0].shape == (3, 224, 224)


def test_open_source_demo_specs():
    assert len(open_source("demo:digits", None)) == 1000
    assert len(open_source("demo:digits:train", None, max_samples=100)) == 100
    assert open_source("demo:noise", "demo-mnist28").name == "noise"


def test_model_layout_is_hookable():
    model = DemoCNN()
    names = dict(model.named_modules())
    for name in ("conv1", "bn1", "relu1", "conv2", "bn2", "relu2", "conv3", "bn3", "relu3", "gap", "fc"):
        assert name in names
    assert isinstance(names["fc"], nn.Linear) and names["fc"].out_features == 10
    assert not any(getattr(m, "inplace", False) for m in model.modules())
    assert sum(p.numel() for p in model.parameters()) < 100_000
    assert model(torch.zeros(2, 1, 28, 28)).shape == (2, 10)


def test_committed_checkpoint_loads_and_is_accurate():
    assert DEMO_CHECKPOINT.is_file() and DEMO_CHECKPOINT.stat().st_size < MAX_BYTES
    model = load_demo_model()
    assert not model.training and next(model.parameters()).device.type == "cpu"
    accuracy = held_out_accuracy(model)
    assert accuracy >= MIN_ACCURACY
    meta = json.loads(DEMO_METADATA.read_text())
    assert meta["command"] == TRAIN_COMMAND
    assert meta["test_accuracy"] == pytest.approx(accuracy, abs=1e-9)
    assert meta["size_bytes"] == DEMO_CHECKPOINT.stat().st_size


def test_missing_or_damaged_checkpoint_is_checkpoint_error(tmp_path):
    with pytest.raises(CheckpointError, match="gaia_viz.demo.train"):
        load_demo_model(tmp_path / "none.safetensors")
    bad = tmp_path / "bad.safetensors"
    bad.write_bytes(b"garbage" * 10)
    with pytest.raises(CheckpointError, match="unreadable"):
        load_demo_model(bad)


def test_training_reproduces_an_accurate_small_checkpoint(tmp_path):
    out = tmp_path / "demo_cnn.safetensors"
    threads = torch.get_num_threads()
    assert train_main(["--out", str(out), "--quiet"]) == 0
    assert torch.get_num_threads() == threads  # global torch state restored
    assert out.stat().st_size < MAX_BYTES
    meta = json.loads(out.with_suffix(".json").read_text())
    assert meta["test_accuracy"] >= MIN_ACCURACY and meta["seed"] == 0
    assert held_out_accuracy(load_demo_model(out)) >= MIN_ACCURACY
