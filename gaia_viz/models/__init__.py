"""Models for gaia-viz: CIFAR ResNets, ODIN's CIFAR DenseNet-BC-100, the GAIA paper's ResNet-18/34 and BiT ResNet-v2,
torchvision and timm models, the demo CNN, and safe checkpoint loading. Start with
:func:`load_model`; which names it takes is the catalogue's (:func:`list_models`, :func:`model_info`)."""

from .catalogue import ModelInfo, checkpoint_files, default_preset, list_models, model_families, model_info
from .zoo import load_model, shared_data_root

# Each family registers itself in the catalogue when imported: this order is the catalogue's.
from . import demo_cnn  # noqa: E402,F401  (the order of these imports matters, see above)
from .cifar_resnet import CIFAR_RESNET_DEPTHS, CifarResNet, cifar_resnet  # noqa: E402
from .cifar_densenet import DENSENET_BC_DEPTHS, CifarDenseNetBC, cifar_densenet_bc  # noqa: E402
from .gaia_resnet import GaiaResNet, gaia_resnet18, gaia_resnet34  # noqa: E402
from .bit import BIT_NAMES, ResNetV2, bit_model  # noqa: E402
from .torchvision_zoo import torchvision_model_names  # noqa: E402
from .timm_zoo import TIMM_PREFIX, hf_hub_cache_dir, timm_model_names  # noqa: E402

from .checkpoints import infer_num_classes, load_checkpoint_into, load_state_dict_file  # noqa: E402
from .heads import ClassifierHead, classifier_head  # noqa: E402
from .hub import hub_checkpoint_path  # noqa: E402

__all__ = [
    "BIT_NAMES",
    "CIFAR_RESNET_DEPTHS",
    "CifarDenseNetBC",
    "CifarResNet",
    "DENSENET_BC_DEPTHS",
    "ClassifierHead",
    "GaiaResNet",
    "ModelInfo",
    "ResNetV2",
    "TIMM_PREFIX",
    "bit_model",
    "checkpoint_files",
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
    "model_families",
    "model_info",
    "shared_data_root",
    "timm_model_names",
    "torchvision_model_names",
]
