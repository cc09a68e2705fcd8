"""The first step of a sweep: every chunk the cache lacks (:func:`plan`)."""

from __future__ import annotations

from gaia_viz.distributed import broadcast_object
from gaia_viz.sweep.job import SweepJob
from gaia_viz.sweep.settings import chunk_ranges
from gaia_viz.sweep.tracker import ChunkTask


def plan(job: SweepJob) -> list[ChunkTask]:
    """Every chunk the cache lacks, each with the entries it lacks; what the cache holds goes
    into ``job.found``. Rank 0 reads the cache and shares the plan, so all ranks agree on it
    even while chunks are being written."""
    tasks: list[ChunkTask] | None = None
    if job.context.is_main:
        tasks = []
        for name, ds in job.datasets.items():
            for start, end in chunk_ranges(len(ds), job.settings.chunk_size):
                cached = {e: job.stores[name][e].read(start, end) for e in job.entries} if job.use_cache else {}
                job.found[name][start] = {e: arrays for e, arrays in cached.items() if arrays is not None}
                missing = tuple(e for e in job.entries if e not in job.found[name][start])
                if missing:
                    tasks.append(ChunkTask(name, start, end, missing))
    return broadcast_object(tasks, job.context)


__all__ = ["plan"]
