"""Models for gaia-viz: CIFAR ResNets, the GAIA paper's ResNet-18/34, torchvision models, the
demo CNN, and safe checkpoint loading. Start with :func:`load_model`."""

from .checkpoints import infer_num_classes, load_checkpoint_into, load_state_dict_file
from .cifar_resnet import CIFAR_RESNET_DEPTHS, CifarResNet, cifar_resnet
from .gaia_resnet import GaiaResNet, gaia_resnet18, gaia_resnet34
from .zoo import (
    default_preset,
    head_module,
    hub_checkpoint_path,
    list_models,
    load_model,
    shared_data_root,
    torchvision_model_names,
)

__all__ = [
    "CIFAR_RESNET_DEPTHS",
    "CifarResNet",
    "GaiaResNet",
    "cifar_resnet",
    "default_preset",
    "gaia_resnet18",
    "gaia_resnet34",
    "head_module",
    "hub_checkpoint_path",
    "infer_num_classes",
    "list_models",
    "load_checkpoint_into",
    "load_model",
    "load_state_dict_file",
    "shared_data_root",
    "torchvision_model_names",
]
