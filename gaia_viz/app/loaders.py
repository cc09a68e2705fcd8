"""Cached loaders behind the sidebar: models in ``st.cache_resource`` (keyed by name,
weights digest, device and options), image sets likewise (keyed by spec, preset, policy,
sample cap and pixel limit), the benchmark layouts of a data root in ``st.cache_data``."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import streamlit as st

from gaia_viz.cache import stable_hash


def upload_digest(data: bytes) -> str:
    return hashlib.blake2b(data, digest_size=12).hexdigest()


def file_digest(path: str) -> str:
    """Resolved path, size and mtime: a replaced checkpoint file is reloaded, an unchanged
    one is not, however its path was typed."""
    stat = os.stat(path)
    return stable_hash([str(Path(path).resolve()), stat.st_size, stat.st_mtime_ns])


@st.cache_resource(max_entries=4, show_spinner="Loading the model…")
def cached_model(name: str, checkpoint_path: str | None, checkpoint_digest: str | None, device: str,
                 pretrained: bool = True, allow_download: bool = False, _checkpoint_bytes: bytes | None = None):
    from gaia_viz.models import load_model

    source = _checkpoint_bytes if _checkpoint_bytes is not None else checkpoint_path
    return load_model(name, checkpoint=source, device=device, pretrained=pretrained,
                      allow_download=allow_download)


@st.cache_resource(max_entries=64, show_spinner="Opening images…")
def cached_source(spec: str, preset: str, ood_policy: str, data_root: str | None, name: str,
                  max_samples: int | None, max_pixels: int, path_policy: str):
    """``path_policy`` (:meth:`gaia_viz.paths.PathPolicy.describe`) is only part of the key."""
    import gaia_viz.demo  # noqa: F401 (registers the demo: data scheme)
    from gaia_viz.data.sources import open_source

    return open_source(spec, preset, ood_policy=ood_policy, data_root=data_root, name=name,
                       max_samples=max_samples, max_pixels=max_pixels)


@st.cache_data(ttl=60, show_spinner=False)
def benchmark_sets(data_root: str) -> dict:
    from gaia_viz.data.sources import find_benchmark_sets

    return find_benchmark_sets(data_root)


__all__ = ["benchmark_sets", "cached_model", "cached_source", "file_digest", "upload_digest"]
