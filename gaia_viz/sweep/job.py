"""The state of one call of :func:`gaia_viz.sweep.evaluate` (:class:`SweepJob`): what is
scored and with which detectors (checked before anything runs), GAIA's layers, the cache
keys and stores, and what the cache held or the run computed. The steps that work on it are
:mod:`~gaia_viz.sweep.plan`, :mod:`~gaia_viz.sweep.fit`, :mod:`~gaia_viz.sweep.scoring` and
:mod:`~gaia_viz.sweep.merge`."""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Mapping, Sequence

import torch
from torch import nn

from gaia_viz.cache import ChunkStore
from gaia_viz.distributed import DistributedContext
from gaia_viz.errors import DataError, GaiaVizError, LayerFallbackWarning, LeftOutWarning, ModelError
from gaia_viz.forward import merge_needs
from gaia_viz.model_state import model_device
from gaia_viz.settings import cache_dir as default_cache_dir
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
from gaia_viz.sweep.settings import SweepSettings, build_detectors, keyed_params
from gaia_viz.sweep.tracker import ChunkTask


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


__all__ = ["EvaluationCancelled", "SweepJob", "named_datasets"]
