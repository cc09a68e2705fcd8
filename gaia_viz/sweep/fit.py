"""The fit step of a sweep: the fitted methods (ReAct, KNN, Mahalanobis, ViM, fDBD, NNGuide,
DICE) learn from one shared pass over the fit set, on rank 0, only when some planned chunk
needs them (:func:`fit`)."""

from __future__ import annotations

import time
from typing import Sequence

from gaia_viz.cache import write_fitted_state
from gaia_viz.distributed import broadcast_object, broadcast_tensors
from gaia_viz.errors import GaiaVizError
from gaia_viz.forward import collect_outputs
from gaia_viz.loader import BatchLoader, batch_ranges
from gaia_viz.sweep.identity import PER_IMAGE_ENTRIES
from gaia_viz.sweep.job import SweepJob
from gaia_viz.sweep.tracker import ChunkTask, SweepProgress


def fitting(job: SweepJob, tasks: Sequence[ChunkTask]) -> bool:
    """Whether some task must score a fitted method (so the fit pass runs)."""
    return any(job.detectors[m].needs_fit for t in tasks for m in t.missing if m not in PER_IMAGE_ENTRIES)


def fit(job: SweepJob, tasks: Sequence[ChunkTask], tracker: SweepProgress, cached_images: int) -> tuple[dict, float]:
    """Fit the fitted methods some task must score: once, on rank 0, from one pass over the
    fit set; the other ranks receive the fitted tensors bit for bit, so every rank scores
    with the same state. A method that cannot be fitted is left out. The state is kept in
    the cache too, for exports (a threshold file never refits). Returns ``({method: state},
    seconds)``."""
    if not fitting(job, tasks):
        return {}, 0.0
    started = time.perf_counter()
    context = job.context
    failed = fit_on_main(job, tracker, cached_images) if context.is_main else None
    job.leave_out(broadcast_object(failed, context), "as they cannot be fitted on this fit set")
    states = {}
    for method in job.needs_fit:
        state = broadcast_tensors(job.detectors[method].fitted_state() if context.is_main else None, context)
        if not context.is_main:
            job.detectors[method].load_fitted_state(state)
        elif job.use_cache:
            write_fitted_state(job.root, job.fitted_key(method), state)
        states[method] = state
    return states, time.perf_counter() - started


def fit_on_main(job: SweepJob, tracker: SweepProgress, cached_images: int) -> dict[str, Exception]:
    """One pass over the fit set that every fitted method learns from; ``{method: error}``
    for those that cannot be fitted on it (the others go on)."""
    fit_set = job.fit_set
    ranges = [(0, s, e) for s, e in batch_ranges(0, len(fit_set), job.settings.batch_size)]
    fit_loader = BatchLoader([fit_set], ranges, job.settings.workers, job.pin_memory)
    fit_name = getattr(fit_set, "name", "the fit set")

    def fit_progress(fraction: float, message: str):
        tracker.done = cached_images + round(fraction * len(fit_set))
        tracker.say(f"fitting {', '.join(job.needs_fit)} on {fit_name}: {message.split(': ', 1)[-1]}")

    outputs = collect_outputs(job.model, ((b.images, b.labels) for b in fit_loader),
                              progress=fit_progress, total=len(fit_set))
    failed = {}
    for method in job.needs_fit:
        try:
            job.detectors[method].fit_features(outputs.features, outputs.logits, outputs.labels)
        except GaiaVizError as exc:  # this method cannot fit on this data: the others go on
            failed[method] = type(exc)(f"cannot be fitted on {fit_name} ({len(fit_set)} images): {exc}")
    return failed


__all__ = ["fit", "fit_on_main", "fitting"]
