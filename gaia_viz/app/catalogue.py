"""The sidebar's catalogue: the model kinds and data kinds it offers, their names, depths and
defaults. The sidebar draws them, the set-up link (:mod:`gaia_viz.app.links`) reads and writes
them."""

from __future__ import annotations

from gaia_viz.models import list_models, model_families, model_info

DEFAULT_MAX_SAMPLES = 1000
DEFAULT_BATCH_SIZE = 64
CHECKPOINT_TYPES = ["pt", "pth", "th", "tar", "safetensors", "npz"]
BOTH_POLICIES = "both"
BIT_NAMES = tuple(list_models("bit"))

MODEL_KINDS = {family.kind: family.label for family in model_families()}  # the model catalogue's families
HUB_KINDS = ("torchvision", "timm")  # pretrained weights from a local hub cache, fetched only when allowed
DATA_KINDS = {
    "demo": "Demo sets (digits vs. 5 OOD sets)",
    "cifar10-real": "CIFAR-10 (real)",
    "custom": "Image folders / torchvision datasets",
}
CIFAR_NAMES, GAIA_NAMES = ({model_info(name).depth: name for name in list_models(kind)} for kind in ("cifar", "gaia"))
CIFAR_DEPTHS = tuple(CIFAR_NAMES)
DENSENET_NAME = list_models("densenet")[0]
DEFAULT_POLICY = {"demo": "resize", "cifar10-real": BOTH_POLICIES, "custom": "center-crop"}
