"""The scoring step of a sweep: every detector from one shared forward pass per batch
(:func:`score_batch`), over a range of samples (:func:`score_range`, which halves the batch
on a CUDA out-of-memory error), and this rank's share of the plan (:func:`score_share`: one
loader, every chunk kept as it finishes). Each is called through this module's namespace, so
a test may replace :func:`score_range` or :func:`score_batch` here."""

from __future__ import annotations

import itertools
import time
from typing import Callable, Iterable, Mapping, Sequence

import numpy as np
import torch
from torch import nn

from gaia_viz.detectors import Detector
from gaia_viz.forward import ForwardNeeds, merge_needs, shared_forward
from gaia_viz.loader import BatchLoader, LoadedBatch, batch_ranges
from gaia_viz.sweep.identity import FEATURES, OUTPUTS, PER_IMAGE_ENTRIES
from gaia_viz.sweep.job import EvaluationCancelled, SweepJob
from gaia_viz.sweep.tracker import ChunkTask, SweepProgress, rate


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


def score_share(job: SweepJob, mine: Sequence[ChunkTask], tracker: SweepProgress,
                cancel: Callable[[], bool] | None) -> dict:
    """Score this rank's chunks ``mine``: one loader for the whole share, its batches never
    crossing a chunk; every chunk is written to the cache as it finishes (:func:`keep`) and
    ``cancel()`` is polled between chunks. Returns this rank's timing."""
    batch_size = job.settings.batch_size
    index_of = {name: i for i, name in enumerate(job.datasets)}
    plan = [(index_of[t.dataset], s, e) for t in mine for s, e in batch_ranges(t.start, t.end, batch_size)]
    loader = BatchLoader(list(job.datasets.values()), plan, job.settings.workers, job.pin_memory)
    batches = iter(loader)
    score_seconds, scored_images = 0.0, 0
    tracker.start_scoring()
    try:
        for task in mine:
            if cancel is not None and cancel():
                raise EvaluationCancelled(f"cancelled before samples {task.start}-{task.end} of {task.dataset}; "
                                          "finished chunks are cached")
            chunk_batches = itertools.islice(batches, len(batch_ranges(task.start, task.end, batch_size)))
            waited, began = loader.wait_seconds, time.perf_counter()
            computed = score_chunk(job, task, chunk_batches)
            score_seconds += time.perf_counter() - began - (loader.wait_seconds - waited)
            keep(job, task, computed)
            scored_images += task.end - task.start
            tracker.advance(task.end - task.start, task.dataset, loader.load_rate(), rate(scored_images, score_seconds))
    finally:
        batches.close()  # stops the loader's workers
    return dict(
        rank=job.context.rank, device=str(job.device), chunks=len(mine),
        loading=dict(images=loader.images, seconds=loader.load_seconds, processes=loader.processes,
                     wait_seconds=loader.wait_seconds, images_per_s=loader.load_rate()),
        scoring=dict(images=scored_images, seconds=score_seconds, images_per_s=rate(scored_images, score_seconds)),
    )


def score_chunk(job: SweepJob, task: ChunkTask, chunk_batches: Iterable[LoadedBatch]) -> dict[str, dict]:
    """The entries ``task`` lacks, scored from its loaded batches (:func:`score_range`)."""
    wanted = {m: job.detectors[m] for m in task.missing if m not in PER_IMAGE_ENTRIES}
    needs = merge_needs([*(d.needs() for d in wanted.values()), ForwardNeeds(features=FEATURES in task.missing)])
    computed = score_range(job.model, job.datasets[task.dataset], task.start, task.end, wanted, needs,
                           job.settings.batch_size, job.device, chunk_batches)
    for _ in chunk_batches:  # a scorer that stopped early must not shift the next chunk's batches
        pass
    return computed


def keep(job: SweepJob, task: ChunkTask, computed: Mapping[str, dict]) -> None:
    """A scored chunk's entries: written to the cache, and on rank 0 kept in ``job.found``."""
    for e in task.missing:
        if job.use_cache:
            job.stores[task.dataset][e].write(task.start, task.end, computed[e])
        if job.context.is_main:
            job.found[task.dataset][task.start][e] = computed[e]


__all__ = ["keep", "score_batch", "score_chunk", "score_range", "score_share"]
