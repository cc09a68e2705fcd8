"""One call of :func:`gaia_viz.sweep.evaluate` (:class:`SweepJob`), cut along its steps: what
is scored and with which detectors (checked before anything runs), the cache entries, the
plan of missing chunks, the fit pass and this rank's scoring. The merge into an
:class:`~gaia_viz.sweep.result.Evaluation` is :mod:`gaia_viz.sweep.merge`."""

from __future__ import annotations

import itertools
import time
import warnings
from pathlib import Path
from typing import Callable, Mapping, Sequence

import torch
from torch import nn

from gaia_viz.cache import ChunkStore, write_fitted_state
from gaia_viz.distributed import DistributedContext, broadcast_object, broadcast_tensors
from gaia_viz.errors import DataError, GaiaVizError, LayerFallbackWarning, LeftOutWarning, ModelError
from gaia_viz.forward import ForwardNeeds, collect_outputs, merge_needs
from gaia_viz.loader import BatchLoader, batch_ranges
from gaia_viz.model_state import model_device
from gaia_viz.settings import cache_dir as default_cache_dir
import gaia_viz.sweep.scoring as scoring  # called through the module: a test may replace a step
from gaia_viz.sweep.checks import check_model_runs, has_features, method_errors, reason, resolve_layers
from gaia_viz.sweep.identity import (
    FEATURES,
    OUTPUTS,
    PER_IMAGE_ENTRIES,
    dataset_fingerprint,
    entry_key,
    fitted_key,
    model_fingerprint,
)
from gaia_viz.sweep.notes import layer_notes
from gaia_viz.sweep.settings import SweepSettings, build_detectors, chunk_ranges, keyed_params
from gaia_viz.sweep.tracker import ChunkTask, SweepProgress, rate


class EvaluationCancelled(GaiaVizError):
    """The user cancelled; every chunk scored before the cancel is kept in the cache."""


def named_datasets(id_set, ood_sets: Mapping[str, object]) -> dict[str, object]:
    """``{name: data set}``, the ID set first; DataError for a repeated name or an empty set."""
    datasets = {getattr(id_set, "name", "id"): id_set}
    for name, ds in ood_sets.items():
        if name in datasets:
            raise DataError(f"two datasets are both named {name!r}; give them distinct names")
        datasets[name] = ds
    for name, ds in datasets.items():
        if len(ds) == 0:
            raise DataError(f"dataset {name!r} has no samples")
    return datasets


class SweepJob:
    """The state of one sweep: its data sets, detectors, resolved layers, cache keys and
    what the cache held or this run computed (``found``)."""

    def __init__(self, model: nn.Module, id_set, ood_sets: Mapping[str, object], settings: SweepSettings,
                 fit_set, device, cache_dir, use_cache: bool, context: DistributedContext):
        if not ood_sets:
            raise DataError("choose at least one OOD set to compare the ID set with")
        if context.active and not use_cache:
            raise DataError("a distributed evaluation hands the scored chunks between its ranks through the run "
                            "cache; drop --no-cache (use_cache=False)")
        self.model, self.settings, self.context, self.use_cache = model, settings, context, use_cache
        self.datasets = named_datasets(id_set, ood_sets)
        self.id_name = next(iter(self.datasets))
        self.device = torch.device(device) if device is not None else model_device(model)
        if model_device(model).type != self.device.type:
            raise ModelError(f"the model is on {model_device(model)}; move it to {self.device} first")
        self.fit_set = fit_set
        sample = id_set[0][0]
        self.own_layers: dict[str, dict] = {}  # filled below, kept to the methods left
        self.method_params: dict[str, dict] = {}
        self.entries: list[str] = []
        self.choose_methods(sample, getattr(id_set, "preset", None))
        self.resolve(sample)
        self.open_stores(cache_dir, sample)
        # name -> chunk start -> entry -> arrays: what the cache held or this run computed
        self.found: dict[str, dict[int, dict[str, dict]]] = {name: {} for name in self.datasets}
        self.total = sum(len(ds) for ds in self.datasets.values())
        self.pin_memory = self.device.type == "cuda"

    # ----------------------------------------------------------------------- set-up

    def choose_methods(self, sample: torch.Tensor, preset) -> None:
        """Build the detectors, check the model's own forward pass (an error stops the run)
        and leave out the methods this model cannot feed."""
        detectors = build_detectors(self.model, self.settings, preset)
        self.num_classes = int(check_model_runs(self.model, sample).shape[1])  # an error here stops the run
        self.left_out: dict[str, str] = {}
        self.methods = list(self.settings.methods)
        self.detectors = dict(detectors)
        self.needs_fit = [m for m, d in self.detectors.items() if d.needs_fit]
        self.leave_out(method_errors(self.model, sample, detectors), "as this model cannot feed them", stacklevel=5)
        if self.needs_fit and self.fit_set is None:
            raise DataError(f"{', '.join(self.needs_fit)} must be fitted on ID training data: give a fit set")

    def resolve(self, sample: torch.Tensor) -> None:
        """GAIA's layers as the model resolves them, their notes (warned once per
        evaluation: the batches' GAIA passes do not warn) and every method's own layers."""
        merged = merge_needs(d.needs() for d in self.detectors.values())
        self.layers = resolve_layers(self.model, sample, merged)
        self.layer_notes = layer_notes(self.model, sample, merged)
        for note in self.layer_notes:
            warnings.warn(note, LayerFallbackWarning, stacklevel=4)
        self.own_layers = {m: resolve_layers(self.model, sample, d.needs()).as_dict()
                           for m, d in self.detectors.items()}

    def open_stores(self, cache_dir, sample: torch.Tensor) -> None:
        """The fingerprints, the cache entries of every set and their stores."""
        self.model_fp = model_fingerprint(self.model)
        self.fit_fp = dataset_fingerprint(self.fit_set) if self.needs_fit else None
        self.method_params = {m: keyed_params(d) for m, d in self.detectors.items()}
        self.data_fps = {name: dataset_fingerprint(ds) for name, ds in self.datasets.items()}  # stats every file once
        self.root = Path(cache_dir) if cache_dir is not None else default_cache_dir()
        self.entries = [OUTPUTS, *([FEATURES] if has_features(self.model, sample) else []), *self.methods]
        self.stores = {name: {e: ChunkStore(self.root, self.entry_key(e, self.data_fps[name]),
                                            meta=dict(entry=e, dataset=self.data_fps[name], model=self.model_fp))
                              for e in self.entries}
                       for name in self.datasets} if self.use_cache else {}

    def leave_out(self, errors: Mapping[str, Exception], why: str, stacklevel: int = 4) -> None:
        """Drop the methods of ``errors`` (``{method: error}``) from this run, record each
        reason once in ``left_out`` and warn once (``stacklevel``: at the caller of
        :func:`~gaia_viz.sweep.evaluate`). When no method is left, the run stops with every
        reason: a ModelError, or the errors' own class when all are alike (a LayerError for
        GAIA alone on a model it cannot hook)."""
        if not errors:
            return
        reasons = {m: reason(exc) for m, exc in errors.items()}
        self.left_out.update(reasons)
        self.methods = [m for m in self.methods if m not in reasons]
        if not self.methods:
            classes = {type(exc) for exc in errors.values()}
            cls = classes.pop() if len(classes) == 1 and issubclass(next(iter(classes)), GaiaVizError) else ModelError
            raise cls("no chosen method can run on this model: "
                      + "; ".join(f"{m}: {why_not}" for m, why_not in self.left_out.items()))
        self.detectors = {m: self.detectors[m] for m in self.methods}
        self.needs_fit = [m for m in self.needs_fit if m in self.methods]
        self.own_layers = {m: v for m, v in self.own_layers.items() if m in self.methods}
        self.method_params = {m: v for m, v in self.method_params.items() if m in self.methods}
        self.entries = [e for e in self.entries if e not in reasons]
        warnings.warn(f"left out of the evaluation, {why}: "
                      + "; ".join(f"{m}: {why_not}" for m, why_not in reasons.items()), LeftOutWarning,
                      stacklevel=stacklevel)

    def without_left_out(self, tasks: Sequence[ChunkTask]) -> list[ChunkTask]:
        """``tasks`` without the entries of methods left out since they were planned."""
        kept = [t._replace(missing=tuple(e for e in t.missing if e not in self.left_out)) for t in tasks]
        return [t for t in kept if t.missing]

    def fitted_key(self, method: str) -> str:
        return fitted_key(method, self.model_fp, self.method_params[method], self.fit_fp)

    def entry_key(self, entry: str, data_fp: dict) -> str:
        if entry in PER_IMAGE_ENTRIES:
            return entry_key(entry, self.model_fp, data_fp)
        return entry_key(entry, self.model_fp, data_fp, params=self.method_params[entry],
                         layers=self.own_layers[entry],
                         fit_fp=self.fit_fp if self.detectors[entry].needs_fit else None)

    # ----------------------------------------------------------------------- plan

    def plan(self) -> list[ChunkTask]:
        """Every chunk the cache lacks. Rank 0 reads the cache and shares the plan, so all
        ranks agree on it even while chunks are being written."""
        tasks: list[ChunkTask] | None = None
        if self.context.is_main:
            tasks = []
            for name, ds in self.datasets.items():
                for start, end in chunk_ranges(len(ds), self.settings.chunk_size):
                    cached = ({e: self.stores[name][e].read(start, end) for e in self.entries}
                              if self.use_cache else {})
                    self.found[name][start] = {e: arrays for e, arrays in cached.items() if arrays is not None}
                    missing = tuple(e for e in self.entries if e not in self.found[name][start])
                    if missing:
                        tasks.append(ChunkTask(name, start, end, missing))
        return broadcast_object(tasks, self.context)

    # ----------------------------------------------------------------------- fit

    def fitting(self, tasks: Sequence[ChunkTask]) -> bool:
        return any(self.detectors[m].needs_fit for t in tasks for m in t.missing if m not in PER_IMAGE_ENTRIES)

    def fit(self, tasks: Sequence[ChunkTask], tracker: SweepProgress, cached_images: int) -> tuple[dict, float]:
        """Fit the fitted methods some task must score: once, on rank 0, from one pass over
        the fit set; the other ranks receive the fitted tensors bit for bit, so every rank
        scores with the same state. The state is kept in the cache too, for exports (a
        threshold file never refits). Returns ``({method: state}, seconds)``."""
        if not self.fitting(tasks):
            return {}, 0.0
        started = time.perf_counter()
        failed = self.fit_on_main(tracker, cached_images) if self.context.is_main else None
        self.leave_out(broadcast_object(failed, self.context), "as they cannot be fitted on this fit set")
        states = {}
        for method in self.needs_fit:
            state = broadcast_tensors(self.detectors[method].fitted_state() if self.context.is_main else None,
                                      self.context)
            if not self.context.is_main:
                self.detectors[method].load_fitted_state(state)
            elif self.use_cache:
                write_fitted_state(self.root, self.fitted_key(method), state)
            states[method] = state
        return states, time.perf_counter() - started

    def fit_on_main(self, tracker: SweepProgress, cached_images: int) -> dict[str, Exception]:
        """One pass over the fit set that every fitted method learns from; ``{method: error}``
        for those that cannot be fitted on it (the others go on)."""
        fit_set = self.fit_set
        ranges = [(0, s, e) for s, e in batch_ranges(0, len(fit_set), self.settings.batch_size)]
        fit_loader = BatchLoader([fit_set], ranges, self.settings.workers, self.pin_memory)
        fit_name = getattr(fit_set, "name", "the fit set")

        def fit_progress(fraction: float, message: str):
            tracker.done = cached_images + round(fraction * len(fit_set))
            tracker.say(f"fitting {', '.join(self.needs_fit)} on {fit_name}: {message.split(': ', 1)[-1]}")

        outputs = collect_outputs(self.model, ((b.images, b.labels) for b in fit_loader),
                                  progress=fit_progress, total=len(fit_set))
        failed = {}
        for method in self.needs_fit:
            try:
                self.detectors[method].fit_features(outputs.features, outputs.logits, outputs.labels)
            except GaiaVizError as exc:  # this method cannot fit on this data: the others go on
                failed[method] = type(exc)(f"cannot be fitted on {fit_name} ({len(fit_set)} images): {exc}")
        return failed

    # ----------------------------------------------------------------------- score

    def score(self, mine: Sequence[ChunkTask], tracker: SweepProgress, cancel: Callable[[], bool] | None) -> dict:
        """Score this rank's chunks: one loader for the whole share, its batches never
        crossing a chunk; every chunk is written to the cache as it finishes. Returns this
        rank's timing."""
        batch_size = self.settings.batch_size
        index_of = {name: i for i, name in enumerate(self.datasets)}
        plan = [(index_of[t.dataset], s, e) for t in mine for s, e in batch_ranges(t.start, t.end, batch_size)]
        loader = BatchLoader(list(self.datasets.values()), plan, self.settings.workers, self.pin_memory)
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
                computed = self.score_chunk(task, chunk_batches)
                score_seconds += time.perf_counter() - began - (loader.wait_seconds - waited)
                self.keep(task, computed)
                scored_images += task.end - task.start
                tracker.advance(task.end - task.start, task.dataset, loader.load_rate(),
                                rate(scored_images, score_seconds))
        finally:
            batches.close()  # stops the loader's workers
        return dict(
            rank=self.context.rank, device=str(self.device), chunks=len(mine),
            loading=dict(images=loader.images, seconds=loader.load_seconds, processes=loader.processes,
                         wait_seconds=loader.wait_seconds, images_per_s=loader.load_rate()),
            scoring=dict(images=scored_images, seconds=score_seconds, images_per_s=rate(scored_images, score_seconds)),
        )

    def score_chunk(self, task: ChunkTask, chunk_batches) -> dict[str, dict]:
        """The entries ``task`` lacks, scored from its loaded batches (:func:`scoring.score_range`)."""
        wanted = {m: self.detectors[m] for m in task.missing if m not in PER_IMAGE_ENTRIES}
        needs = merge_needs([*(d.needs() for d in wanted.values()), ForwardNeeds(features=FEATURES in task.missing)])
        computed = scoring.score_range(self.model, self.datasets[task.dataset], task.start, task.end, wanted,
                                       needs, self.settings.batch_size, self.device, chunk_batches)
        for _ in chunk_batches:  # a scorer that stopped early must not shift the next chunk's batches
            pass
        return computed

    def keep(self, task: ChunkTask, computed: Mapping[str, dict]) -> None:
        """A scored chunk's entries: written to the cache, and on rank 0 kept in ``found``."""
        for e in task.missing:
            if self.use_cache:
                self.stores[task.dataset][e].write(task.start, task.end, computed[e])
            if self.context.is_main:
                self.found[task.dataset][task.start][e] = computed[e]


__all__ = ["EvaluationCancelled", "SweepJob", "named_datasets"]
