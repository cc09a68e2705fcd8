"""The last step of a sweep, on rank 0: the chunks the other ranks scored (read from the run
cache), every set's arrays joined in order, and the :class:`~gaia_viz.sweep.result.Evaluation`
with its run record (notes and timing included)."""

from __future__ import annotations

import time
from dataclasses import replace
from typing import Mapping, Sequence

import numpy as np
import pandas as pd

from gaia_viz.cache import ChunkStore, read_fitted_state
from gaia_viz.distributed import DistributedContext
from gaia_viz.errors import DataError
from gaia_viz.paths import printable
from gaia_viz.run_config import RunConfig
from gaia_viz.sweep.identity import OUTPUTS
from gaia_viz.sweep.job import SweepJob
from gaia_viz.sweep.notes import accuracy_notes, exact_zero_notes, fit_label_notes, non_finite_notes
from gaia_viz.sweep.result import Evaluation
from gaia_viz.sweep.settings import chunk_ranges
from gaia_viz.sweep.tracker import ChunkTask

SHARED_CACHE_WAIT_S = 60.0  # how long rank 0 waits to see a chunk another rank wrote (NFS lag)


def read_shared_chunk(store: ChunkStore, start: int, end: int, deadline: float) -> dict | None:
    """A chunk another rank reported written, read until ``deadline`` (time.monotonic()):
    a shared filesystem (NFS) may show a new file to other nodes a few seconds late."""
    while True:
        arrays = store.read(start, end)
        if arrays is not None or time.monotonic() >= deadline:
            return arrays
        time.sleep(0.5)


def read_other_ranks(job: SweepJob, tasks: Sequence[ChunkTask]) -> None:
    """On rank 0: the chunks the other ranks scored, from the run cache, into ``job.found``."""
    deadline = time.monotonic() + SHARED_CACHE_WAIT_S
    for number, task in enumerate(tasks):
        for e in task.missing:
            if e in job.found[task.dataset][task.start]:
                continue
            arrays = read_shared_chunk(job.stores[task.dataset][e], task.start, task.end, deadline)
            if arrays is None:
                raise DataError(
                    f"rank {number % job.context.world_size} scored samples {task.start}-{task.end} of "
                    f"{task.dataset} into the run cache {job.root}, but rank 0 cannot read them there; with "
                    "several nodes the run cache (--cache-dir or GAIA_VIZ_CACHE_DIR) must be one folder on a "
                    "filesystem all nodes share")
            job.found[task.dataset][task.start][e] = arrays


def joined_results(job: SweepJob) -> dict[str, dict[str, np.ndarray]]:
    """``{data set: {array name: per-sample array}}``, the chunks joined in order."""
    results = {}
    for name, ds in job.datasets.items():
        parts = [{k: v for e in job.entries for k, v in job.found[name][start][e].items()}
                 for start, _ in chunk_ranges(len(ds), job.settings.chunk_size)]
        results[name] = {key: np.concatenate([part[key] for part in parts]) for key in parts[0]}
    return results


def fitted_states(job: SweepJob, fitted_now: dict) -> dict:
    """What every fitted method fitted: this run's states, else the cached ones."""
    states = dict(fitted_now)
    for method in job.needs_fit:
        if method not in states and job.use_cache:
            state = read_fitted_state(job.root, job.fitted_key(method))
            if state is not None:
                states[method] = state
    return states


def run_timing(started: float, cached_images: int, fit_images: int, fit_seconds: float, reports: list[dict],
               context: DistributedContext) -> dict:
    """The run record's ``timing``: fit, loading and scoring summed over the ranks."""
    def summed(part: str, key: str) -> float:
        return sum(r[part][key] or 0 for r in reports)

    timing = dict(
        total_seconds=time.perf_counter() - started, cached_images=cached_images,
        fit=dict(images=fit_images, seconds=fit_seconds) if fit_images else None,
        loading=dict(images=summed("loading", "images"), seconds=summed("loading", "seconds"),
                     wait_seconds=summed("loading", "wait_seconds"),
                     processes_per_rank=reports[0]["loading"]["processes"],
                     images_per_s=summed("loading", "images_per_s") or None),
        scoring=dict(images=summed("scoring", "images"), seconds=summed("scoring", "seconds"),
                     images_per_s=summed("scoring", "images_per_s") or None),
    )
    if context.active:
        timing["ranks"] = reports
    return timing


def score_table(job: SweepJob, results: Mapping[str, dict]) -> pd.DataFrame:
    """One row per image of every set: dataset, index, path, label, prediction, one column per method."""
    frames = []
    for name, ds in job.datasets.items():
        arrays = results[name]
        n = len(arrays["label"])
        path_of = getattr(ds, "path", None)
        frame = pd.DataFrame({
            "dataset": name, "index": np.arange(n),
            # as text that can be shown and written: a name's bytes that are not UTF-8 as \xff
            "path": [printable(path_of(i)) for i in range(n)] if callable(path_of) else [None] * n,
            "label": arrays["label"], "prediction": arrays["prediction"],
        })
        for method in job.methods:
            frame[method] = arrays[method]
        frames.append(frame)
    return pd.concat(frames, ignore_index=True)


def run_record(job: SweepJob, results: Mapping[str, dict], run: RunConfig | None, timing: dict) -> RunConfig:
    """What the caller recorded about the run (``run``), completed with what the sweep did."""
    datasets, layers = job.datasets, job.layers
    config = replace(
        run or RunConfig(),
        model=job.model_fp, methods=list(job.methods), method_params=job.method_params,
        left_out=job.left_out, layers=layers.as_dict(), fit_set=job.fit_fp, datasets=job.data_fps,
        id_set=job.id_name, ood_sets=[n for n in datasets if n != job.id_name],
        notes=list(dict.fromkeys([  # one note per cause
            *(run.notes if run else []), *job.layer_notes, *exact_zero_notes(job.model, results, layers),
            *non_finite_notes(job.detectors, results),
            *fit_label_notes(job.detectors, job.fit_set),
            *accuracy_notes(results[job.id_name], job.num_classes, job.id_name)])),
        ood_policies={n: getattr(ds, "ood_policy", None) for n, ds in datasets.items()},
        batch_size=job.settings.batch_size, chunk_size=job.settings.chunk_size, device=str(job.device),
        world_size=job.context.world_size, workers=job.settings.workers, timing=timing,
        skipped={n: [list(item) for item in getattr(ds, "skipped", [])] for n, ds in datasets.items()
                 if getattr(ds, "skipped", None)},
    )
    id_set = datasets[job.id_name]
    if config.preset is None and getattr(id_set, "preset_name", None):
        config.preset = id_set.preset_name
    return config


def merge(job: SweepJob, run: RunConfig | None, timing: dict, fitted_now: dict, cache_hits: int,
          started: float) -> Evaluation:
    """The :class:`Evaluation` of ``job``: its score table, the per-set arrays that are not
    per-image scores (GAIA's partial sums, ratios, features, ...) and the run record."""
    results = joined_results(job)
    layers = job.layers
    per_sample = {OUTPUTS, "label", "prediction", *job.methods}
    return Evaluation(
        scores=score_table(job, results), id_name=job.id_name,
        ood_names=[n for n in job.datasets if n != job.id_name],
        methods=list(job.methods), zero_layers=layers.zero, zero_channels=layers.zero_channels,
        inner_layers=layers.inner, inner_channels=layers.inner_channels, head_layer=layers.head,
        arrays={name: {k: v for k, v in arrays.items() if k not in per_sample} for name, arrays in results.items()},
        config=run_record(job, results, run, timing), seconds=time.perf_counter() - started,
        cache_hits=cache_hits, fitted_states=fitted_states(job, fitted_now),
    )


__all__ = ["SHARED_CACHE_WAIT_S", "fitted_states", "joined_results", "merge", "read_other_ranks",
           "read_shared_chunk", "run_record", "run_timing", "score_table"]
