"""Models for gaia-viz: CIFAR ResNets, ODIN's CIFAR DenseNet-BC-100, the GAIA paper's ResNet-18/34 and BiT ResNet-v2,
torchvision and timm models, the demo CNN, and safe checkpoint loading. Start with
:func:`load_model`."""

from .bit import BIT_NAMES, ResNetV2, bit_model

from .checkpoints import infer_num_classes, load_checkpoint_into, load_state_dict_file
from .cifar_densenet import DENSENET_BC_DEPTHS, CifarDenseNetBC, cifar_densenet_bc
from .cifar_resnet import CIFAR_RESNET_DEPTHS, CifarResNet, cifar_resnet
from .gaia_resnet import GaiaResNet, gaia_resnet18, gaia_resnet34
from .heads import ClassifierHead, classifier_head
from .hub import hub_checkpoint_path
from .timm_zoo import TIMM_PREFIX, hf_hub_cache_dir, timm_model_names
from .zoo import (
    default_preset,
    list_models,
    load_model,
    shared_data_root,
    torchvision_model_names,
)

__all__ = [
    "BIT_NAMES",
    "CIFAR_RESNET_DEPTHS",
    "CifarDenseNetBC",
    "CifarResNet",
    "DENSENET_BC_DEPTHS",
    "ClassifierHead",
    "GaiaResNet",
    "ResNetV2",
    "TIMM_PREFIX",
    "bit_model",
    "cifar_densenet_bc",
    "cifar_resnet",
    "classifier_head",
    "default_preset",
    "gaia_resnet18",
    "gaia_resnet34",
    "hf_hub_cache_dir",
    "hub_checkpoint_path",
    "infer_num_classes",
    "list_models",
    "load_checkpoint_into",
    "load_model",
    "load_state_dict_file",
    "shared_data_root",
    "timm_model_names",
    "torchvision_model_names",
]
