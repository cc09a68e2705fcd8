"""The sweep's step list, :func:`evaluate`: the job's set-up (:mod:`~gaia_viz.sweep.job`), then
plan the chunks the cache lacks, fit the fitted methods, score this rank's share and merge
(:mod:`~gaia_viz.sweep.plan`, :mod:`~gaia_viz.sweep.fit`, :mod:`~gaia_viz.sweep.scoring`,
:mod:`~gaia_viz.sweep.merge`)."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Callable, Mapping

from torch import nn

from gaia_viz.distributed import SINGLE, DistributedContext, gather_to_main, share
from gaia_viz.progress import ProgressFn
from gaia_viz.run_config import RunConfig
from gaia_viz.sweep.fit import fit, fitting
from gaia_viz.sweep.job import SweepJob
from gaia_viz.sweep.merge import merge, read_other_ranks, run_timing
from gaia_viz.sweep.plan import plan
from gaia_viz.sweep.result import Evaluation
from gaia_viz.sweep.scoring import score_share
from gaia_viz.sweep.settings import SweepSettings
from gaia_viz.sweep.tracker import SweepProgress


def evaluate(model: nn.Module, id_set, ood_sets: Mapping[str, object],
             settings: SweepSettings | None = None, fit_set=None, device=None,
             cache_dir: str | Path | None = None, use_cache: bool = True,
             progress: ProgressFn | None = None, cancel: Callable[[], bool] | None = None,
             run: RunConfig | None = None, distributed: DistributedContext | None = None) -> Evaluation | None:
    """Score ``id_set`` and every OOD set with every method of ``settings``.

    ``fit_set``: ID training data for the methods that fit (``Detector.needs_fit``); never
    the ID test set. ``progress(fraction, message)`` is called as the fit pass and every
    chunk advance; ``cancel()`` is polled between chunks (raises
    :class:`~gaia_viz.sweep.job.EvaluationCancelled`, keeping the chunks already scored).
    ``run``: what the caller records about the run (model name, checkpoint, sources, ...);
    the sweep fills in the rest of the :class:`RunConfig`, its ``timing`` included.

    Loading: ``settings.workers`` processes decode the batches while this one scores
    (:mod:`gaia_viz.loader`; 0 decodes here); the scores do not depend on it.

    ``distributed``: this process's place in a torchrun job (:func:`gaia_viz.distributed.start`;
    None is one process). Every rank must call ``evaluate`` with the same arguments: rank 0
    plans the missing chunks, each rank scores its share and writes it to the run cache
    (which must therefore be used, and shared by all nodes), rank 0 merges and returns the
    :class:`Evaluation`; the other ranks return None.
    """
    started = time.perf_counter()
    context = distributed or SINGLE
    job = SweepJob(model, id_set, ood_sets, settings or SweepSettings(), fit_set, device, cache_dir, use_cache,
                   context)
    tasks = plan(job)
    mine = share(tasks, context)
    mine_images = sum(t.end - t.start for t in mine)
    cached_images = job.total - sum(t.end - t.start for t in tasks)
    fit_images = len(fit_set) if fitting(job, tasks) else 0
    counted_here = cached_images if context.is_main else 0
    tracker = SweepProgress((fit_images if context.is_main else 0) + mine_images + counted_here, counted_here,
                            progress)
    if mine_images or fit_images:  # the start of the clock: the time left is estimable after one chunk
        tracker.say(f"starting: {counted_here:,} of {tracker.total:,} images from the run cache")

    fitted_now, fit_seconds = fit(job, tasks, tracker, cached_images)
    tasks, mine = job.without_left_out(tasks), job.without_left_out(mine)  # a method that could not fit
    rank_timing = score_share(job, mine, tracker, cancel)
    reports = gather_to_main(rank_timing, context)  # returns on rank 0 once every rank is done
    if not context.is_main:
        return None
    read_other_ranks(job, tasks)
    planned = {t.dataset for t in tasks}
    evaluation = merge(job, run, run_timing(started, cached_images, fit_images, fit_seconds, reports, context),
                       fitted_now, cache_hits=sum(name not in planned for name in job.datasets), started=started)
    if progress:
        progress(1.0, f"done: {job.total:,} images in {evaluation.seconds:.1f} s")
    return evaluation


__all__ = ["evaluate"]
