"""Penultimate features of the set-up's sets, for the data map page.

The sweep keeps scores and GAIA's per-layer arrays, not the features, so the map makes one
extra pass per image: :func:`gaia_viz.forward.collect_outputs` (eval mode, no gradients), over
the sets exactly as the set-up opened them (at most the sidebar's "max samples per set" each,
the same images the scores are of, in the same order). The result is kept in memory per
set-up score identity (``st.cache_resource``, the last few set-ups), so a second visit to the
map, a colour change or a click costs nothing.
"""

from __future__ import annotations

import numpy as np
import streamlit as st
import torch

from gaia_viz.forward import collect_outputs


def set_features(model, image_set, batch_size: int, progress=None) -> np.ndarray:
    """``(len(image_set), D)`` penultimate features (the classifier head's input), row i =
    image i, float32 on the CPU."""
    loader = torch.utils.data.DataLoader(image_set, batch_size=int(batch_size), shuffle=False, num_workers=0)
    return collect_outputs(model, loader, progress=progress, total=len(image_set)).features.numpy()


@st.cache_resource(max_entries=4, show_spinner="Computing penultimate features (one forward pass per image, once)…")
def setup_features(score_key: str, _setup) -> dict[str, np.ndarray]:
    """``{data set: features}`` of every set of the set-up (ID first), cached by ``score_key``."""
    return {name: set_features(_setup.model, images, _setup.batch_size) for name, images in _setup.image_sets.items()}


__all__ = ["set_features", "setup_features"]
