"""Where pretrained weights are cached: the torch hub cache, and downloading into it only
when allowed (torchvision's weights, and timm's few weights published by URL)."""

from __future__ import annotations

import os
import re
from pathlib import Path
from urllib.parse import urlparse

import torch

from ..errors import ModelError


def hub_checkpoint_path(url: str) -> Path:
    """Where ``torch.hub`` caches the file behind ``url``: ``<hub dir>/checkpoints/<file name>``."""
    return Path(torch.hub.get_dir()) / "checkpoints" / os.path.basename(urlparse(url).path)


def torch_hub_weights(name: str, url: str, allow_download: bool) -> Path:
    """The cached file of ``url`` (weights of model ``name``); downloaded only when
    ``allow_download`` (checked against the hash prefix in the file name, as torch.hub does),
    else ModelError naming the path and the URL."""
    path = hub_checkpoint_path(url)
    if path.is_file():
        return path
    if not allow_download:
        raise ModelError(
            f"pretrained weights for {name} are not cached: looked for {path}. Download them "
            f"(allow downloads, or fetch {url} to that path), or use pretrained=False."
        )
    path.parent.mkdir(parents=True, exist_ok=True)
    hash_prefix = re.search(r"-([a-f0-9]*)\.", path.name)
    try:
        torch.hub.download_url_to_file(url, str(path), hash_prefix.group(1) if hash_prefix else None,
                                       progress=False)
    except Exception as exc:
        raise ModelError(f"could not download {url} to {path}: {exc}") from exc
    return path


__all__ = ["hub_checkpoint_path", "torch_hub_weights"]
