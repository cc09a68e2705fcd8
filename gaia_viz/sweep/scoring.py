"""Scoring: every detector from one shared forward pass per batch (:func:`score_batch`), over
a range of samples (:func:`score_range`, which halves the batch on a CUDA out-of-memory
error). The sweep calls both through this module, so a test may replace either here."""

from __future__ import annotations

from typing import Iterable, Mapping

import numpy as np
import torch
from torch import nn

from gaia_viz.detectors import Detector
from gaia_viz.forward import ForwardNeeds, merge_needs, shared_forward
from gaia_viz.loader import BatchLoader, LoadedBatch, batch_ranges
from gaia_viz.sweep.identity import FEATURES, OUTPUTS


def score_batch(model: nn.Module, x: torch.Tensor, detectors: Mapping[str, Detector],
                needs: ForwardNeeds | None = None) -> dict[str, dict]:
    """What the sweep computes for one batch: every detector of ``detectors`` from one shared
    forward pass, as ``{method: {array name: per-sample array}}`` plus ``{"outputs":
    {"prediction": ...}}`` (and ``{"features": {"features": (B, D)}}`` when the pass
    captured the pooled features, :data:`~gaia_viz.sweep.identity.FEATURES`). ``needs``:
    what the pass computes, by default what the detectors need (the sweep adds the
    features to keep). The unit the benchmark times."""
    if needs is None:
        needs = merge_needs(d.needs() for d in detectors.values())
    outputs = shared_forward(model, x, needs, warn_without_zeros=False)  # judged per data set
    entries = {OUTPUTS: {"prediction": outputs.logits.argmax(1).numpy()}}
    if outputs.features is not None:
        entries[FEATURES] = {FEATURES: outputs.features.float().numpy()}
    for method, detector in detectors.items():
        # inf/NaN kept: the evaluation says for how many images and why (notes.non_finite_notes)
        entries[method] = {method: detector.raw_scores(outputs).double().numpy(), **detector.arrays(outputs)}
    return entries


def score_range(model: nn.Module, dataset, start: int, end: int, detectors: Mapping[str, Detector],
                needs: ForwardNeeds, batch_size: int, device,
                batches: Iterable[LoadedBatch] | None = None) -> dict[str, dict]:
    """Score samples [start, end) of ``dataset``: ``{entry: {array name: per-sample array}}``
    as :func:`score_batch` gives, with ``{"outputs": {"label": ...}}`` too. ``batches``: the
    loaded batches covering the range in order (the sweep's
    :class:`~gaia_viz.loader.BatchLoader` yields them); None loads them here. A CUDA
    out-of-memory error halves the batch size, splitting each loaded batch into pieces that
    fit."""
    if batches is None:
        batches = BatchLoader([dataset], [(0, s, e) for s, e in batch_ranges(start, end, batch_size)])
    parts: list[dict[str, dict]] = []
    for batch in batches:
        images = batch.images.to(device, non_blocking=True)  # overlaps the copy when pinned
        labels = batch.labels.numpy()
        position = 0
        while position < len(images):
            x = images[position:position + batch_size]
            try:
                scored = score_batch(model, x, detectors, needs)
            except torch.OutOfMemoryError:
                if len(x) == 1:
                    raise
                if x.is_cuda:
                    torch.cuda.empty_cache()
                batch_size = max(1, len(x) // 2)
                continue
            scored[OUTPUTS]["label"] = labels[position:position + len(x)]
            parts.append(scored)
            position += len(x)
    return {entry: {key: np.concatenate([p[entry][key] for p in parts]) for key in parts[0][entry]}
            for entry in parts[0]}


__all__ = ["score_batch", "score_range"]
