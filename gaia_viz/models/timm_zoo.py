"""timm models by name (``"timm:resnet50"``, ``"timm:resnet50.a1_in1k"``), weights offline.

Pretrained weights come from the local Hugging Face hub cache only
(``huggingface_hub.constants.HF_HUB_CACHE``: ``$HF_HUB_CACHE``, or ``$HF_HOME/hub``, or
``~/.cache/huggingface/hub``), or for the few timm weights published by URL from the torch
hub cache, as for torchvision. Nothing is downloaded unless ``allow_download``. The file is
read with gaia-viz's safe loader (:func:`gaia_viz.models.checkpoints.load_state_dict_file`:
``weights_only`` for PyTorch files, safetensors preferred) and handed to timm as a state
dict (``pretrained_cfg_overlay=dict(state_dict=...)``), so timm's own per-model fix-ups
(its checkpoint filters) still apply while timm never opens a file itself.
"""

from __future__ import annotations

import difflib
from collections.abc import Mapping
from pathlib import Path

import torch
from torch import nn

from ..errors import CheckpointError, ModelError
from .catalogue import ModelInfo, register_family
from .checkpoints import infer_num_classes, load_state_dict_file
from .hub import torch_hub_weights

TIMM_PREFIX = "timm:"
# file names timm looks for in a hub repository, safetensors first (timm's own order)
HF_WEIGHT_FILES = {
    "pytorch_model.bin": ("model.safetensors", "pytorch_model.bin"),
    "open_clip_pytorch_model.bin": ("open_clip_model.safetensors", "open_clip_pytorch_model.bin"),
}


def _timm():
    try:
        import timm
    except ImportError as exc:  # timm is in requirements.txt; say so rather than fail obscurely
        raise ModelError("timm models need the timm package: pip install timm") from exc
    return timm


def timm_model_names() -> list[str]:
    """Every timm architecture, as ``timm:NAME`` (a pretrained tag may be added:
    ``timm:resnet50.a1_in1k``)."""
    return [TIMM_PREFIX + name for name in _timm().list_models()]


def timm_name(name: str) -> str | None:
    """The timm model name inside ``timm:NAME``; None when ``name`` has no ``timm:`` prefix."""
    if not name.startswith(TIMM_PREFIX):
        return None
    bare = name[len(TIMM_PREFIX):].strip()
    if not _timm().is_model(bare):
        close = difflib.get_close_matches(bare, _timm().list_models(), n=3)
        hint = f" Did you mean {', '.join(TIMM_PREFIX + c for c in close)}?" if close else ""
        raise ModelError(f"unknown timm model {bare!r}.{hint} See timm.list_models().")
    return bare


def hf_hub_cache_dir() -> Path:
    """The Hugging Face hub cache folder (huggingface_hub's ``HF_HUB_CACHE``)."""
    from huggingface_hub import constants

    return Path(constants.HF_HUB_CACHE)


def _hf_repo(hf_hub_id: str) -> tuple[str, str | None]:
    repo, _, revision = hf_hub_id.partition("@")
    return repo, revision or None


def _hf_candidates(cfg) -> tuple[str, ...]:
    filename = cfg.hf_hub_filename or "pytorch_model.bin"
    return HF_WEIGHT_FILES.get(filename, (filename,))


def _cached_hf_file(repo: str, revision: str | None, candidates: tuple[str, ...]) -> Path | None:
    from huggingface_hub import try_to_load_from_cache

    for filename in candidates:
        found = try_to_load_from_cache(repo, filename, cache_dir=hf_hub_cache_dir(), revision=revision)
        if isinstance(found, str):
            return Path(found)
    return None


def _download_hf_file(repo: str, revision: str | None, candidates: tuple[str, ...]) -> Path:
    import huggingface_hub
    from huggingface_hub.errors import EntryNotFoundError

    last: Exception | None = None
    for filename in candidates:
        try:
            return Path(huggingface_hub.hf_hub_download(repo, filename, revision=revision,
                                                        cache_dir=hf_hub_cache_dir()))
        except EntryNotFoundError as exc:
            last = exc
        except Exception as exc:  # offline mode, network, authentication, ...
            raise ModelError(f"could not download {filename} of {repo} from the Hugging Face hub: "
                             f"{str(exc).splitlines()[0] if str(exc) else type(exc).__name__}") from exc
    raise ModelError(f"the Hugging Face repository {repo} has none of {', '.join(candidates)} ({last})")


def _weights_file(name: str, cfg, allow_download: bool) -> Path:
    """The cached weights file of timm's pretrained config ``cfg`` (downloaded if allowed)."""
    if cfg.hf_hub_id:
        repo, revision = _hf_repo(cfg.hf_hub_id)
        candidates = _hf_candidates(cfg)
        found = _cached_hf_file(repo, revision, candidates)
        if found is not None:
            return found
        if not allow_download:
            where = hf_hub_cache_dir() / f"models--{repo.replace('/', '--')}" / "snapshots"
            raise ModelError(
                f"pretrained weights for {TIMM_PREFIX}{name} are not cached: looked for "
                f"{' or '.join(candidates)} of {repo} under {where}. Download them (allow downloads, "
                f"or `hf download {repo}`), or use pretrained=False."
            )
        return _download_hf_file(repo, revision, candidates)
    if cfg.url:
        return torch_hub_weights(f"{TIMM_PREFIX}{name}", cfg.url, allow_download)
    raise ModelError(f"timm knows no pretrained weights for {name}; pass a checkpoint or pretrained=False")


def _pretrained_cfg(name: str):
    from timm.models import get_pretrained_cfg

    cfg = get_pretrained_cfg(name)
    if cfg is None:
        raise ModelError(f"timm knows no pretrained weights for {name}; pass a checkpoint or pretrained=False")
    if cfg.custom_load and not cfg.hf_hub_id:
        raise ModelError(f"timm reads the weights of {name} with its own loader (not a state dict file), "
                         "which gaia-viz does not run; pass a converted checkpoint or pretrained=False")
    return cfg


def timm_num_classes(name: str, state_dict: Mapping[str, torch.Tensor]) -> int | None:
    """Classes of a checkpoint for timm model ``name``: rows of the weight of the classifier
    that timm's config names (``fc``, ``head.fc``, ... also a 1x1 conv), else the generic rule."""
    from timm.models import get_pretrained_cfg

    cfg = get_pretrained_cfg(name)
    classifiers = getattr(cfg, "classifier", None) or ()
    if isinstance(classifiers, str):
        classifiers = (classifiers,)
    stripped = {k[len("module."):] if k.startswith("module.") else k: v for k, v in state_dict.items()}
    for classifier in classifiers:
        weight = stripped.get(f"{classifier}.weight")
        if weight is not None and weight.ndim in (2, 4):
            return int(weight.shape[0])
    return infer_num_classes(state_dict)


def build_timm(name: str, num_classes: int | None, pretrained: bool, allow_download: bool) -> nn.Module:
    """timm model ``name``: random init, or its default pretrained weights from the local cache."""
    timm = _timm()
    kwargs = {} if num_classes is None else {"num_classes": num_classes}
    if not pretrained:
        try:
            return timm.create_model(name, pretrained=False, **kwargs)
        except Exception as exc:
            raise ModelError(f"timm could not build {name}: {exc}") from exc
    cfg = _pretrained_cfg(name)
    if num_classes not in (None, cfg.num_classes):
        raise ModelError(
            f"pretrained {TIMM_PREFIX}{name} weights have {cfg.num_classes} classes, not {num_classes}; "
            "pass a checkpoint for your head or pretrained=False."
        )
    path = _weights_file(name, cfg, allow_download)
    try:
        state_dict = load_state_dict_file(path)
    except CheckpointError as exc:
        raise ModelError(f"cached weights {path} are unusable ({exc}); delete the file") from exc
    try:
        model = timm.create_model(name, pretrained=True,
                                  pretrained_cfg_overlay=dict(state_dict=state_dict, source=""))
    except Exception as exc:  # timm's strict load_state_dict: the file does not fit
        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise ModelError(f"cached weights {path} do not fit {TIMM_PREFIX}{name} ({reason}); delete the file") from exc
    if isinstance(model.pretrained_cfg, dict):  # do not keep a second copy of the weights
        model.pretrained_cfg.pop("state_dict", None)
    return model


# A timm model whose pretrained config normalises otherwise (timm.data.resolve_data_config) needs
# its own preset.
@register_family("timm", "timm model", [ModelInfo(
    f"{TIMM_PREFIX}<name>", "timm", "timm model",
    "any timm model (`timm:resnet50`, `timm:convnext_atto.d2_in1k`: a pretrained tag may be added)",
    "imagenet224", None, "hub")], resolve=timm_name, expand=timm_model_names)
def _load_timm(info: ModelInfo, request):
    state_dict = request.state_dict()
    num_classes = request.checkpoint_classes(state_dict, lambda found: timm_num_classes(info.arch, found))
    model = build_timm(info.arch, num_classes, request.pretrained and state_dict is None, request.allow_download)
    return model, state_dict


__all__ = ["TIMM_PREFIX", "build_timm", "hf_hub_cache_dir", "timm_model_names", "timm_name", "timm_num_classes"]
