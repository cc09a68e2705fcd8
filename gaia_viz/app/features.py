"""Penultimate features of the set-up's sets, and their 2-D projection, for the data map page.

The sweep keeps every image's pooled penultimate features with its scores
(:data:`gaia_viz.sweep.FEATURES`, in the chunk cache and in ``Evaluation.arrays``), so after an
evaluation the map costs no model pass. Only for an evaluation without them (a model whose
head input cannot be captured) does the map make one pass per image:
:func:`gaia_viz.forward.collect_outputs` (eval mode, no gradients), over the sets exactly as the
set-up opened them (the same images the scores are of, in the same order). Both are kept in
memory per set-up score identity (``st.cache_resource``, the last few set-ups), so a second
visit to the map, a colour change or a click costs nothing.
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


def evaluation_features(evaluation) -> dict[str, np.ndarray] | None:
    """``{data set: features}`` the sweep kept (ID first), or None when it kept none."""
    from gaia_viz.sweep import FEATURES

    kept = {name: evaluation.arrays.get(name, {}).get(FEATURES) for name in evaluation.dataset_names}
    if any(value is None for value in kept.values()):
        return None
    return {name: np.asarray(value, dtype=np.float32) for name, value in kept.items()}


@st.cache_resource(max_entries=4, show_spinner="Computing penultimate features (one forward pass per image, once)…")
def setup_features(score_key: str, _setup, _evaluation=None) -> dict[str, np.ndarray]:
    """``{data set: features}`` of every set of the set-up (ID first), cached by ``score_key``:
    the evaluation's own (:func:`evaluation_features`) when it kept them, else one pass."""
    kept = evaluation_features(_evaluation) if _evaluation is not None else None
    if kept is not None:
        return kept
    return {name: set_features(_setup.model, images, _setup.batch_size) for name, images in _setup.image_sets.items()}


@st.cache_data(max_entries=8, show_spinner=False)
def setup_projection(score_key: str, names: tuple[str, ...], _features: dict):
    """:func:`gaia_viz.embedding.pca_2d` of the sets ``names`` (in that order), once per set-up
    (1.2 s per page run for the demo's 2,000 images on 2 cores, before it was cached)."""
    from gaia_viz.embedding import pca_2d

    return pca_2d(np.concatenate([_features[name] for name in names]))


__all__ = ["evaluation_features", "set_features", "setup_features", "setup_projection"]
