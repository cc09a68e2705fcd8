"""The sidebar's catalogue: the model kinds and data kinds it offers, their names, depths and
defaults. The sidebar draws them, the set-up link (:mod:`gaia_viz.app.links`) reads and writes
them."""

from __future__ import annotations

DEFAULT_MAX_SAMPLES = 1000
DEFAULT_BATCH_SIZE = 64
CHECKPOINT_TYPES = ["pt", "pth", "th", "tar", "safetensors", "npz"]
BOTH_POLICIES = "both"
BIT_NAMES = tuple(f"BiT-{kind}-R{depth}" for kind in ("S", "M")
                  for depth in ("50x1", "50x3", "101x1", "101x3", "152x2", "152x4"))

MODEL_KINDS = {
    "demo": "Demo digit CNN (embedded)",
    "cifar": "CIFAR ResNet (20-110)",
    "densenet": "CIFAR DenseNet-BC-100 (ODIN's)",
    "gaia": "GAIA ResNet-18/34",
    "bit": "Big Transfer BiT (the paper's ImageNet model)",
    "torchvision": "torchvision classifier",
    "timm": "timm model",
}
HUB_KINDS = ("bit", "torchvision", "timm")  # weights from a local hub cache, or random
DATA_KINDS = {
    "demo": "Demo sets (digits vs. 5 OOD sets)",
    "cifar10-real": "CIFAR-10 (real)",
    "custom": "Image folders / torchvision datasets",
}
CIFAR_DEPTHS = (20, 32, 44, 56, 110)
DENSENET_NAME, DENSENET_FILE = "cifar_densenet_bc100", "cifar10_densenet_bc100.safetensors"
DEFAULT_POLICY = {"demo": "resize", "cifar10-real": BOTH_POLICIES, "custom": "center-crop"}
