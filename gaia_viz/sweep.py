"""One sweep: every chosen method over ID and OOD sets, one forward pass per batch.

Each detector states what it reads from the forward pass (:meth:`Detector.needs`); the
sweep merges those needs and runs :func:`gaia_viz.forward.shared_forward` once per batch
(without gradients when no method needs one), then lets every detector score from its
outputs. Fitted methods (ReAct, KNN, Mahalanobis, ViM, fDBD, NNGuide, DICE) learn from one
shared pass over the fit set, run only when some chunk they must score is not cached. A
chosen method that cannot run on this model or data, whatever its error (no classifier head,
no pooled features, GAIA on a token model: found on one image before anything is scored; a
fit that fails on the fit set, such as ViM with fewer fit images than its ``dim``), is left
out with one warning and its reason in ``RunConfig.left_out``; the others still run, and if
none can, the run stops with every reason. Only an error in the model's own forward pass
stops the run outright. Scores that are inf/NaN are kept and said (``RunConfig.notes``:
which method, how many, why); their metrics are NaN. Each cause gets one note.

Results are cached on disk (:mod:`gaia_viz.cache`) per dataset, per method and per chunk of
``chunk_size`` samples, keyed by what determines the numbers: the weights, the dataset's
files and preprocessing, the method and its parameters (layers included), the fit data.
Batch size, device, loader workers and how a path was typed are not part of the key. So a
second request is a cache hit, an interrupted run resumes where it stopped, and adding a
method to an evaluation scores only that method. A CUDA out-of-memory error halves the
batch and goes on.

The chunks to score are planned first (what the cache lacks), then one loader
(:mod:`gaia_viz.loader`) decodes their batches in worker processes while this process
scores. Under torchrun the plan is split across ranks (:mod:`gaia_viz.distributed`):
each rank writes its chunks to the cache and rank 0 merges them.
"""

from __future__ import annotations

import hashlib
import itertools
import os
import time
import warnings
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Callable, Iterable, Mapping, NamedTuple, Sequence

import numpy as np
import pandas as pd
import torch
from torch import nn

from gaia_viz.cache import ChunkStore, read_fitted_state, stable_hash, write_fitted_state
from gaia_viz.detectors import DETECTORS, METHOD_LABELS, Detector, detector_parameters, make_detector
from gaia_viz.distributed import SINGLE, DistributedContext, broadcast_object, broadcast_tensors, gather_to_main, share
from gaia_viz.errors import DataError, GaiaVizError, LayerFallbackWarning, LeftOutWarning, ModelError
from gaia_viz.forward import ForwardNeeds, collect_outputs, merge_needs, shared_forward
from gaia_viz.loader import BatchLoader, LoadedBatch, batch_ranges
from gaia_viz.metrics import metrics_rows
from gaia_viz.model_state import model_device
from gaia_viz.paths import printable
from gaia_viz.run_config import RunConfig
from gaia_viz.settings import cache_dir as default_cache_dir
from gaia_viz.settings import default_workers

GAIA_METHODS = ("gaia_z", "gaia_a")
ALL_METHODS = tuple(DETECTORS)
DEFAULT_METHODS = ("gaia_z", "gaia_a", "msp", "energy")
DEFAULT_CHUNK_SIZE = 256
OUTPUTS = "outputs"  # the cache entry holding labels and predictions
# The cache entry holding the pooled penultimate features (the classifier head's input) of every
# image: the shared forward computes them anyway (feature methods, GAIA-A's head), and keeping
# them makes the app's Data map free after an evaluation (no second pass over the images).
FEATURES = "features"
# what the cached arrays mean; part of every cache key, so a change starts fresh entries
# (2: GAIA-Z ratios and partial sums in float64; 3: one entry per method, fixed chunks;
# 4: a norm fused with its activation is hooked before the activation)
SCORES_FORMAT = 4
SHARED_CACHE_WAIT_S = 60.0  # how long rank 0 waits to see a chunk another rank wrote (NFS lag)

ProgressFn = Callable[[float, str], None]


class EvaluationCancelled(GaiaVizError):
    """The user cancelled; every chunk scored before the cancel is kept in the cache."""


# --------------------------------------------------------------------------- fingerprints


def model_fingerprint(model: nn.Module) -> str:
    """Hash of the architecture and every weight and buffer (not of the Python object)."""
    digest = hashlib.blake2b(digest_size=12)
    digest.update(type(model).__qualname__.encode())
    for name, tensor in model.state_dict().items():
        digest.update(name.encode())
        digest.update(str(tuple(tensor.shape)).encode())
        digest.update(tensor.detach().cpu().contiguous().view(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


def dataset_fingerprint(dataset) -> dict:
    """What determines a dataset's tensors: its files (resolved path, size, mtime) or, for
    in-memory sets, a hash of a few samples; plus its preprocessing and OOD policy."""
    n = len(dataset)
    info = dict(
        kind=type(dataset).__name__, name=getattr(dataset, "name", None), size=n,
        preset=getattr(dataset, "preset_name", None), ood_policy=getattr(dataset, "ood_policy", None),
    )
    path_of = getattr(dataset, "path", None)
    paths = [path_of(i) for i in range(n)] if callable(path_of) else [None]
    digest = hashlib.blake2b(digest_size=12)
    if all(paths):
        for path in paths:
            stat = os.stat(path)
            # the name as the file system's bytes: a name that is not UTF-8 (a byte \xff) is hashed too
            digest.update(os.fsencode(os.path.realpath(path)) + f"|{stat.st_size}|{stat.st_mtime_ns}".encode())
        info["files"] = digest.hexdigest()
    else:
        for i in sorted({0, n // 2, n - 1} if n else set()):
            digest.update(dataset[i][0].numpy().tobytes())
        info["samples"] = digest.hexdigest()
    return info


# --------------------------------------------------------------------------- settings


@dataclass
class SweepSettings:
    """Everything besides model and data that decides what is computed.

    ``method_params``: ``{method: {parameter: value}}`` (see each detector's docstring);
    ``layers`` / ``inner_layers`` / ``head_layer`` are shorthands for GAIA-Z's ``layers``
    and GAIA-A's ``inner_layers`` / ``head_layer``. ``batch_size``, ``chunk_size``
    (samples per cached chunk) and ``workers`` (loader processes that decode images while
    the main process scores; 0 decodes in the main process; default
    :func:`gaia_viz.settings.default_workers`) change the speed, never the scores.
    """

    methods: Sequence[str] = DEFAULT_METHODS
    layers: Sequence[str] | None = None
    inner_layers: Sequence[str] | None = None
    head_layer: str | None = None
    method_params: Mapping[str, Mapping] = field(default_factory=dict)
    batch_size: int = 64
    chunk_size: int = DEFAULT_CHUNK_SIZE
    workers: int = field(default_factory=default_workers)

    def __post_init__(self):
        methods = [m.strip().lower() for m in self.methods if m.strip()]
        unknown = [m for m in methods if m not in DETECTORS]
        if unknown or not methods:
            raise ModelError(
                f"unknown method(s) {unknown or self.methods}; choose from {', '.join(DETECTORS)}"
            )
        self.methods = list(dict.fromkeys(methods))
        stray = [m for m in self.method_params if m not in self.methods]
        if stray:
            raise ModelError(f"method_params given for {', '.join(map(str, stray))}, which "
                             f"{'is' if len(stray) == 1 else 'are'} not among the methods {self.methods}")
        if int(self.batch_size) < 1:
            raise ModelError("batch size must be at least 1")
        if int(self.chunk_size) < 1:
            raise ModelError("chunk size must be at least 1")
        if int(self.workers) < 0:
            raise ModelError("the number of loader workers must be 0 (load in the main process) or more")
        self.batch_size, self.chunk_size, self.workers = int(self.batch_size), int(self.chunk_size), int(self.workers)

    def params_for(self, method: str) -> dict:
        """The parameters ``method`` is built with: its ``method_params`` and the shorthands."""
        params = dict(self.method_params.get(method, {}))
        shorthands = {"gaia_z": {"layers": self.layers},
                      "gaia_a": {"inner_layers": self.inner_layers, "head_layer": self.head_layer}}
        for name, value in shorthands.get(method, {}).items():
            if value is None:
                continue
            if name in params and params[name] != value:
                raise ModelError(f"{method}: {name} is given twice with different values")
            params[name] = value
        return params


@dataclass
class ResolvedLayers:
    """GAIA's layers as the model resolves them (defaults made explicit)."""

    zero: list[str]
    inner: list[str]
    head: str | None
    zero_channels: list[int]
    inner_channels: list[int]

    def as_dict(self) -> dict:
        return dict(zero=self.zero, inner=self.inner, head=self.head)


def resolve_layers(model: nn.Module, sample: torch.Tensor, needs: ForwardNeeds) -> ResolvedLayers:
    """The GAIA layers ``needs`` asks for, resolved for inputs like ``sample`` (C, H, W);
    LayerError for unknown names before anything is scored."""
    from gaia_viz.gaia import model_layout

    layout = model_layout(model, sample.unsqueeze(0).to(model_device(model)))
    zero = layout.resolve_zero_layers(needs.zero_layers) if needs.gaia_z else []
    inner = layout.resolve_inner_layers(needs.inner_layers) if needs.gaia_a else []
    head = layout.resolve_head_layer(needs.head_layer) if needs.gaia_a else None
    return ResolvedLayers(zero=zero, inner=inner, head=head,
                          zero_channels=[layout.info(n).channels for n in zero],
                          inner_channels=[layout.info(n).channels for n in inner])


def _layer_notes(model: nn.Module, sample: torch.Tensor, needs: ForwardNeeds) -> list[str]:
    """The note when GAIA's default layers for ``needs`` are a fallback (a model without
    normalisation layers: its convolution outputs), else none."""
    from gaia_viz.gaia import model_layout

    if not (needs.gaia_z or needs.gaia_a):
        return []
    layout = model_layout(model, sample.unsqueeze(0).to(model_device(model)))
    defaults = [label for label, used in (
        ("GAIA-Z", needs.gaia_z and needs.zero_layers is None),
        ("GAIA-A", needs.gaia_a and needs.inner_layers is None and layout.declared.inner_layers is None)) if used]
    note = layout.conv_fallback_note(" and ".join(defaults)) if defaults else None
    return [note] if note else []


def build_detectors(model: nn.Module, settings: SweepSettings, preset=None) -> dict[str, Detector]:
    """One detector per method: the preset's defaults (:meth:`Detector.data_defaults`) under
    the user's parameters."""
    detectors = {}
    for method in settings.methods:
        cls = DETECTORS[method]
        defaults = {k: v for k, v in cls.data_defaults(preset).items() if k in detector_parameters(method)}
        detectors[method] = make_detector(method, model, **{**defaults, **settings.params_for(method)})
    return detectors


def check_model_runs(model: nn.Module, sample: torch.Tensor) -> torch.Tensor:
    """The model's own forward pass (no hooks, no gradients) on the one image ``sample``
    (C, H, W); returns its logits (1, classes). An error here is the model's, not a
    method's, so it stops the run: ModelError saying what failed (non-finite logits too)."""
    x = sample.unsqueeze(0).to(model_device(model))
    try:
        return shared_forward(model, x, ForwardNeeds(), warn_without_zeros=False).logits
    except GaiaVizError:
        raise
    except Exception as exc:  # the model's own code failed on this input
        raise ModelError(f"the model's own forward pass failed on an image of shape {tuple(x.shape)}: "
                         f"{type(exc).__name__}: {exc}") from exc


def unusable_methods(model: nn.Module, sample: torch.Tensor, detectors: Mapping[str, Detector]) -> dict[str, str]:
    """``{method: reason}`` for the detectors that cannot run on this model (no classifier
    head, no pooled features, a feature map the head does not pool, GAIA on a token model or
    on a model with nothing to hook, ...), found on the one image ``sample`` (C, H, W): one
    shared forward with every detector's needs, and only when that fails one forward per
    detector. The reason is the error's message, whatever its class (ModelError,
    LayerError, ...). The model's own forward pass is checked first
    (:func:`check_model_runs`): when it fails, that error is raised, as no method can run."""
    return {method: _reason(exc) for method, exc in _method_errors(model, sample, detectors).items()}


def _method_errors(model: nn.Module, sample: torch.Tensor, detectors: Mapping[str, Detector]) -> dict[str, Exception]:
    """:func:`unusable_methods` with the errors themselves."""
    check_model_runs(model, sample)
    x = sample.unsqueeze(0).to(model_device(model))
    try:
        outputs = shared_forward(model, x, merge_needs(d.needs() for d in detectors.values()),
                                 warn_without_zeros=False)  # judged per data set
    except Exception:  # some method's needs cannot be met: find which, one by one
        outputs = None
    errors = {}
    for method, detector in detectors.items():
        try:
            if outputs is None:
                detector.check_model(x)
            else:
                detector.validate_outputs(outputs)
        except Exception as exc:  # the model ran above, so this is the method's problem
            errors[method] = exc
    return errors


def _reason(exc: Exception) -> str:
    """A left-out method's reason: the message of a GaiaVizError, else the class too."""
    return str(exc) if isinstance(exc, GaiaVizError) else f"{type(exc).__name__}: {exc}"


# --------------------------------------------------------------------------- scoring


def _score_batch(model, x, detectors: Mapping[str, Detector], needs: ForwardNeeds) -> dict[str, dict]:
    """Every detector on one batch: ``{method: {array name: per-sample array}}`` plus
    ``{OUTPUTS: {"prediction": ...}}`` and, when the pass captured them, ``{FEATURES: ...}``."""
    outputs = shared_forward(model, x, needs, warn_without_zeros=False)  # judged per data set
    entries = {OUTPUTS: {"prediction": outputs.logits.argmax(1).numpy()}}
    if outputs.features is not None:
        entries[FEATURES] = {FEATURES: outputs.features.float().numpy()}
    for method, detector in detectors.items():
        # inf/NaN kept: the evaluation says for how many images and why (_non_finite_notes)
        entries[method] = {method: detector.raw_scores(outputs).double().numpy(), **detector.arrays(outputs)}
    return entries


def score_batch(model: nn.Module, x: torch.Tensor, detectors: Mapping[str, Detector]) -> dict[str, dict]:
    """What the sweep computes for one batch: every detector of ``detectors`` from one shared
    forward pass, as ``{method: {array name: per-sample array}}`` plus ``{"outputs":
    {"prediction": ...}}`` (and ``{"features": {"features": (B, D)}}`` when a detector's pass
    captured the pooled features, :data:`FEATURES`). The unit the benchmark times."""
    return _score_batch(model, x, detectors, merge_needs(d.needs() for d in detectors.values()))


def _score_range(model, dataset, start: int, end: int, detectors: Mapping[str, Detector],
                 needs: ForwardNeeds, batch_size: int, device,
                 batches: Iterable[LoadedBatch] | None = None) -> dict[str, dict]:
    """Score samples [start, end) of ``dataset``. ``batches``: the loaded batches covering
    the range in order (the sweep's :class:`~gaia_viz.loader.BatchLoader` yields them);
    None loads them here. A CUDA out-of-memory error halves the batch size, splitting each
    loaded batch into pieces that fit."""
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
                scored = _score_batch(model, x, detectors, needs)
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


def chunk_ranges(n: int, chunk: int) -> list[tuple[int, int]]:
    """``[(start, end), ...]`` covering ``range(n)`` in chunks of ``chunk`` samples."""
    return [(s, min(n, s + chunk)) for s in range(0, n, chunk)]


# --------------------------------------------------------------------------- evaluation


@dataclass
class Evaluation:
    """The result of one sweep: a score table, per-dataset GAIA arrays and the run record."""

    scores: pd.DataFrame  # dataset, index, path, label, prediction, <one column per method>
    id_name: str
    ood_names: list[str]
    methods: list[str]
    zero_layers: list[str]
    zero_channels: list[int]
    inner_layers: list[str]
    inner_channels: list[int]
    head_layer: str | None
    arrays: dict[str, dict[str, np.ndarray]]  # dataset -> GAIA arrays (partial sums, ...)
    config: RunConfig
    seconds: float = 0.0
    cache_hits: int = 0
    fitted_states: dict = field(default_factory=dict)  # method -> what it fitted (tensors)

    @property
    def dataset_names(self) -> list[str]:
        """The ID set first, then the OOD sets."""
        return [self.id_name, *self.ood_names]

    def method_scores(self, method: str, dataset: str) -> np.ndarray:
        table = self.scores
        return table.loc[table["dataset"] == dataset, method].to_numpy(dtype=np.float64)

    def metrics_table(self, tpr: float = 0.95) -> pd.DataFrame:
        """One row per (method, OOD set) plus an 'average' row per method.

        Columns fpr95 (fraction of OOD accepted at 95 % TPR on ID, lower is better),
        auroc, aupr_in, aupr_out (higher is better), detection_error."""
        rows = []
        for method in self.methods:
            rows += metrics_rows(method, self.method_scores(method, self.id_name),
                                 {ood: self.method_scores(method, ood) for ood in self.ood_names}, tpr=tpr,
                                 non_finite="nan")  # NaN where scores are inf/NaN; config.notes says why
        return pd.DataFrame(rows)

    def metrics_json(self) -> dict:
        """The CLI's schema: {"methods": {method: {ood: {fpr95, auroc, aupr_in, aupr_out}}}, "config"};
        a metric that is undefined (non-finite scores) is null, and ``"undefined"`` holds
        ``{method: why}`` (the note of ``config.notes``)."""
        methods: dict[str, dict] = {}
        for row in self.metrics_table().to_dict("records"):
            methods.setdefault(row["method"], {})[row["ood_set"]] = {
                k: (None if np.isnan(row[k]) else row[k]) for k in ("fpr95", "auroc", "aupr_in", "aupr_out",
                                                                   "detection_error")
            }
        result = {"methods": methods, "config": self.config.to_dict()}
        undefined = non_finite_methods(self)
        if undefined:
            result["undefined"] = undefined
        return result

    def id_accuracy(self) -> float | None:
        rows = self.scores[self.scores["dataset"] == self.id_name]
        labelled = rows[rows["label"] >= 0]
        if labelled.empty:
            return None
        return float((labelled["label"] == labelled["prediction"]).mean())

    def select(self, methods: Sequence[str]) -> "Evaluation":
        """The same evaluation showing only ``methods`` (in that order; ModelError for a
        method it does not hold)."""
        missing = [m for m in methods if m not in self.methods]
        if missing:
            raise ModelError(f"the evaluation has no scores for {', '.join(missing)}")
        dropped = [m for m in self.methods if m not in methods]
        return replace(self, methods=list(methods), scores=self.scores.drop(columns=dropped),
                       config=replace(self.config, methods=list(methods),
                                      method_params={m: self.config.method_params.get(m, {}) for m in methods}),
                       fitted_states={m: s for m, s in self.fitted_states.items() if m in methods})


def _exact_zero_notes(model: nn.Module, results: Mapping[str, dict], layers: ResolvedLayers) -> list[str]:
    """One note when GAIA-Z's gradients hold almost no exact zeros on some data sets, and one
    when some images' gradients are exactly zero everywhere (the opposite cause;
    :mod:`gaia_viz.gaia.zeros`), judged on each whole set from its cached per-channel ratios."""
    from gaia_viz.gaia.zeros import (
        activation_kinds,
        all_zero_note,
        all_zero_samples,
        lacks_exact_zeros,
        mean_exact_zero_fraction,
        no_exact_zeros_note,
    )

    if not layers.zero:
        return []
    notes = []
    ratios = {name: arrays["nonzero_ratio"] for name, arrays in results.items() if "nonzero_ratio" in arrays}
    all_zero = {name: int(all_zero_samples(r).sum()) for name, r in ratios.items()}
    if any(all_zero.values()):  # the opposite cause: gradients that are zero everywhere
        notes.append(all_zero_note(sum(all_zero.values()), sum(len(r) for r in ratios.values()),
                                   ", ".join(f"{count} of {len(ratios[name])} on {name}"
                                             for name, count in all_zero.items() if count)))
    fractions = {name: mean_exact_zero_fraction(r, layers.zero_channels) for name, r in ratios.items()}
    lacking = [name for name, fraction in fractions.items() if fraction is not None and lacks_exact_zeros(fraction)]
    if lacking:
        notes.append(no_exact_zeros_note(max(fractions[n] for n in lacking), activation_kinds(model),
                                         where=", ".join(lacking)))
    return notes


def _non_finite_notes(detectors: Mapping[str, Detector], results: Mapping[str, dict]) -> list[str]:
    """One note per method whose scores are not all finite: how many, on which sets and why
    (:meth:`Detector.explain_non_finite` on just those samples), judged on the whole sets."""
    from gaia_viz.notes import non_finite_note

    notes = []
    for method, detector in detectors.items():
        by_set = {name: np.asarray(arrays[method], dtype=np.float64) for name, arrays in results.items()}
        if all(np.isfinite(scores).all() for scores in by_set.values()):
            continue
        bad = {name: ~np.isfinite(scores) for name, scores in by_set.items()}
        keys = [k for k, v in next(iter(results.values())).items()
                if isinstance(v, np.ndarray) and v.ndim >= 1 and len(v) == len(bad[next(iter(results))])]
        arrays = {k: np.concatenate([np.asarray(results[n][k])[bad[n]] for n in results]) for k in keys}
        notes.append(non_finite_note(detector.label, by_set, detector.explain_non_finite(arrays)))
    return notes


ACCURACY_NOTE = "ID accuracy"
CHANCE_MIN_LABELLED = 30  # fewer labelled images cannot tell a model at chance from a weak one


def _accuracy_notes(id_arrays: Mapping[str, np.ndarray], num_classes: int, id_name: str) -> list[str]:
    """A note when the ID accuracy is not clearly above chance (1 / classes): within three
    binomial standard deviations of it, on at least :data:`CHANCE_MIN_LABELLED` labelled
    images. The usual cause is a label order that is not the model's (BiT checkpoints and a
    folder's sorted class names), which no OOD score shows."""
    labels, predictions = np.asarray(id_arrays["label"]), np.asarray(id_arrays["prediction"])
    labelled = labels >= 0
    n = int(labelled.sum())
    if n < CHANCE_MIN_LABELLED or num_classes < 2:
        return []
    accuracy = float((labels[labelled] == predictions[labelled]).mean())
    chance = 1.0 / num_classes
    if accuracy > chance + 3 * np.sqrt(chance * (1 - chance) / n):
        return []
    return [f"{ACCURACY_NOTE} is {100 * accuracy:.2f} % on the {n} labelled images of {id_name}, no better than "
            f"chance for {num_classes} classes ({100 * chance:.2f} %): the labels may not follow the model's class "
            "order (a folder's classes are sorted by name; a BiT or other ImageNet checkpoint needs the class list "
            "it was trained with), or the checkpoint or the preprocessing does not fit the model. The OOD scores "
            "use no labels, but they are those of a model that does not recognise the ID set."]


def non_finite_methods(evaluation: "Evaluation") -> dict[str, str]:
    """``{method: note}`` for the methods of ``evaluation`` whose scores are not all finite:
    their metrics are n/a (NaN in :meth:`Evaluation.metrics_table`) and the note says why."""
    from gaia_viz.notes import NON_FINITE, notes_about

    found = {}
    for method in evaluation.methods:
        about = [n for n in notes_about(evaluation.config.notes, METHOD_LABELS.get(method, method)) if NON_FINITE in n]
        if about:
            found[method] = about[0]
    return found


def gaia_z_note(evaluation: "Evaluation") -> str | None:
    """The warning to show next to the GAIA-Z numbers of ``evaluation``: the note the sweep
    recorded when its gradients held almost no exact zeros (GAIA-Z is then uninformative);
    None when GAIA-Z is fine or was not computed."""
    from gaia_viz.gaia.zeros import NO_EXACT_ZEROS_NOTE

    if "gaia_z" not in evaluation.methods:
        return None
    return next((note for note in evaluation.config.notes if note.startswith(NO_EXACT_ZEROS_NOTE)), None)


class ChunkTask(NamedTuple):
    """A chunk some cache entries lack: samples ``[start, end)`` of data set ``dataset``."""

    dataset: str
    start: int
    end: int
    missing: tuple[str, ...]  # entries to compute: OUTPUTS and/or method names


class _Progress:
    """Progress of a sweep as fraction + message: images done and the loading and scoring
    rates (so a user sees which one limits the run)."""

    def __init__(self, total: int, done: int, report: ProgressFn | None):
        self.total, self.done, self.report = max(1, total), done, report
        self.scored = 0
        self.scoring_since = time.perf_counter()

    def say(self, message: str) -> None:
        if self.report is not None:
            self.report(min(1.0, self.done / self.total), message)

    def start_scoring(self) -> None:
        self.scoring_since = time.perf_counter()

    def advance(self, count: int, name: str, load_rate: float | None, score_rate: float | None) -> None:
        self.done += count
        self.scored += count
        rates = "".join(f", {label} {rate:,.0f}/s" for label, rate in (("load", load_rate), ("score", score_rate))
                        if rate)
        # the time left is the listener's (gaia_viz.progress.EtaEstimate): it moves between reports
        self.say(f"scoring {name}: {self.done:,}/{self.total:,}{rates}")


def _rate(images: int, seconds: float) -> float | None:
    return images / seconds if images and seconds > 0 else None


def _read_shared_chunk(store: ChunkStore, start: int, end: int, deadline: float) -> dict | None:
    """A chunk another rank reported written, read until ``deadline`` (time.monotonic()):
    a shared filesystem (NFS) may show a new file to other nodes a few seconds late."""
    while True:
        arrays = store.read(start, end)
        if arrays is not None or time.monotonic() >= deadline:
            return arrays
        time.sleep(0.5)


class _Sweep:
    """One call of :func:`evaluate`, cut along its steps: what is scored and with which
    detectors (checked before anything runs), the cache entries, the plan of missing
    chunks, the fit pass, this rank's scoring, and the merge into an :class:`Evaluation`."""

    def __init__(self, model: nn.Module, id_set, ood_sets: Mapping[str, object], settings: SweepSettings,
                 fit_set, device, cache_dir, use_cache: bool, context: DistributedContext):
        if not ood_sets:
            raise DataError("choose at least one OOD set to compare the ID set with")
        if context.active and not use_cache:
            raise DataError("a distributed evaluation hands the scored chunks between its ranks through the run "
                            "cache; drop --no-cache (use_cache=False)")
        self.model, self.settings, self.context, self.use_cache = model, settings, context, use_cache
        self.datasets = _named_datasets(id_set, ood_sets)
        self.id_name = next(iter(self.datasets))
        self.device = torch.device(device) if device is not None else model_device(model)
        if model_device(model).type != self.device.type:
            raise ModelError(f"the model is on {model_device(model)}; move it to {self.device} first")

        sample = id_set[0][0]
        detectors = build_detectors(model, settings, getattr(id_set, "preset", None))
        self.num_classes = int(check_model_runs(model, sample).shape[1])  # an error here stops the run
        self.left_out: dict[str, str] = {}
        self.methods = list(settings.methods)
        self.detectors = dict(detectors)
        self.needs_fit = [m for m, d in self.detectors.items() if d.needs_fit]
        self.leave_out(_method_errors(model, sample, detectors), "as this model cannot feed them")
        if self.needs_fit and fit_set is None:
            raise DataError(f"{', '.join(self.needs_fit)} must be fitted on ID training data: give a fit set")
        self.fit_set = fit_set
        merged = merge_needs(d.needs() for d in self.detectors.values())
        self.layers = resolve_layers(model, sample, merged)
        self.layer_notes = _layer_notes(model, sample, merged)
        for note in self.layer_notes:  # once per evaluation (the batches' GAIA passes do not warn)
            warnings.warn(note, LayerFallbackWarning, stacklevel=3)
        self.own_layers = {m: resolve_layers(model, sample, d.needs()).as_dict() for m, d in self.detectors.items()}

        self.model_fp = model_fingerprint(model)
        self.fit_fp = dataset_fingerprint(fit_set) if self.needs_fit else None
        self.method_params = {m: {k: v for k, v in d.params().items()
                                  if k not in ("layers", "inner_layers", "head_layer")}
                              for m, d in self.detectors.items()}
        self.data_fps = {name: dataset_fingerprint(ds) for name, ds in self.datasets.items()}  # stats every file once
        self.root = Path(cache_dir) if cache_dir is not None else default_cache_dir()
        self.entries = [OUTPUTS, *([FEATURES] if _has_features(model, sample) else []), *self.methods]
        self.stores = {name: {e: ChunkStore(self.root, self.entry_key(e, self.data_fps[name]),
                                            meta=dict(entry=e, dataset=self.data_fps[name], model=self.model_fp))
                              for e in self.entries}
                       for name in self.datasets} if use_cache else {}
        # name -> chunk start -> entry -> arrays: what the cache held or this run computed
        self.found: dict[str, dict[int, dict[str, dict]]] = {name: {} for name in self.datasets}
        self.total = sum(len(ds) for ds in self.datasets.values())
        self.pin_memory = self.device.type == "cuda"

    def leave_out(self, errors: Mapping[str, Exception], why: str) -> None:
        """Drop the methods of ``errors`` (``{method: error}``) from this run, record each
        reason once in ``left_out`` and warn once. When no method is left, the run stops
        with every reason: a ModelError, or the errors' own class when all are alike (a
        LayerError for GAIA alone on a model it cannot hook)."""
        if not errors:
            return
        reasons = {m: _reason(exc) for m, exc in errors.items()}
        self.left_out.update(reasons)
        self.methods = [m for m in self.methods if m not in reasons]
        if not self.methods:
            classes = {type(exc) for exc in errors.values()}
            cls = classes.pop() if len(classes) == 1 and issubclass(next(iter(classes)), GaiaVizError) else ModelError
            raise cls("no chosen method can run on this model: "
                      + "; ".join(f"{m}: {reason}" for m, reason in self.left_out.items()))
        self.detectors = {m: self.detectors[m] for m in self.methods}
        self.needs_fit = [m for m in self.needs_fit if m in self.methods]
        for attribute in ("own_layers", "method_params"):
            if hasattr(self, attribute):
                setattr(self, attribute, {m: v for m, v in getattr(self, attribute).items() if m in self.methods})
        if hasattr(self, "entries"):
            self.entries = [e for e in self.entries if e not in reasons]
        warnings.warn(f"left out of the evaluation, {why}: "
                      + "; ".join(f"{m}: {reason}" for m, reason in reasons.items()), LeftOutWarning, stacklevel=4)

    def without_left_out(self, tasks: Sequence[ChunkTask]) -> list[ChunkTask]:
        """``tasks`` without the entries of methods left out since they were planned."""
        kept = [t._replace(missing=tuple(e for e in t.missing if e not in self.left_out)) for t in tasks]
        return [t for t in kept if t.missing]

    def fitted_key(self, method: str) -> str:
        return stable_hash(dict(format=SCORES_FORMAT, model=self.model_fp, entry=method, fitted=True,
                                params=self.method_params[method], fit_set=self.fit_fp))

    def entry_key(self, method: str, data_fp: dict) -> str:
        facts = dict(format=SCORES_FORMAT, model=self.model_fp, dataset=data_fp, entry=method)
        if method not in (OUTPUTS, FEATURES):
            facts.update(params=self.method_params[method], layers=self.own_layers[method],
                         fit_set=self.fit_fp if self.detectors[method].needs_fit else None)
        return stable_hash(facts)

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

    def fit(self, tasks: Sequence[ChunkTask], tracker: _Progress, cached_images: int) -> tuple[dict, float]:
        """Fit the fitted methods some task must score: once, on rank 0, from one pass over
        the fit set; the other ranks receive the fitted tensors bit for bit, so every rank
        scores with the same state. The state is kept in the cache too, for exports (a
        threshold file never refits). Returns ``({method: state}, seconds)``."""
        if not self.fitting(tasks):
            return {}, 0.0
        started = time.perf_counter()
        fit_set, context = self.fit_set, self.context
        if context.is_main:
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
        failed = broadcast_object(failed if context.is_main else None, context)
        self.leave_out(failed, "as they cannot be fitted on this fit set")
        states = {}
        for method in self.needs_fit:
            state = broadcast_tensors(self.detectors[method].fitted_state() if context.is_main else None, context)
            if not context.is_main:
                self.detectors[method].load_fitted_state(state)
            elif self.use_cache:
                write_fitted_state(self.root, self.fitted_key(method), state)
            states[method] = state
        return states, time.perf_counter() - started

    def fitting(self, tasks: Sequence[ChunkTask]) -> bool:
        return any(self.detectors[m].needs_fit for t in tasks for m in t.missing if m not in (OUTPUTS, FEATURES))

    def score(self, mine: Sequence[ChunkTask], tracker: _Progress, cancel: Callable[[], bool] | None) -> dict:
        """Score this rank's chunks: one loader for the whole share, its batches never
        crossing a chunk; every chunk is written to the cache as it finishes. Returns this
        rank's timing."""
        settings = self.settings
        index_of = {name: i for i, name in enumerate(self.datasets)}
        plan = [(index_of[t.dataset], s, e) for t in mine for s, e in batch_ranges(t.start, t.end, settings.batch_size)]
        loader = BatchLoader(list(self.datasets.values()), plan, settings.workers, self.pin_memory)
        batches = iter(loader)
        score_seconds, scored_images = 0.0, 0
        tracker.start_scoring()
        try:
            for task in mine:
                if cancel is not None and cancel():
                    raise EvaluationCancelled(f"cancelled before samples {task.start}-{task.end} of {task.dataset}; "
                                              "finished chunks are cached")
                wanted = {m: self.detectors[m] for m in task.missing if m not in (OUTPUTS, FEATURES)}
                needs = merge_needs([*(d.needs() for d in wanted.values()),
                                     ForwardNeeds(features=FEATURES in task.missing)])
                chunk_batches = itertools.islice(batches, len(batch_ranges(task.start, task.end, settings.batch_size)))
                waited, began = loader.wait_seconds, time.perf_counter()
                computed = _score_range(self.model, self.datasets[task.dataset], task.start, task.end, wanted,
                                        needs, settings.batch_size, self.device, chunk_batches)
                for _ in chunk_batches:  # a scorer that stopped early must not shift the next chunk's batches
                    pass
                score_seconds += time.perf_counter() - began - (loader.wait_seconds - waited)
                scored_images += task.end - task.start
                for e in task.missing:
                    if self.use_cache:
                        self.stores[task.dataset][e].write(task.start, task.end, computed[e])
                    if self.context.is_main:
                        self.found[task.dataset][task.start][e] = computed[e]
                tracker.advance(task.end - task.start, task.dataset, loader.load_rate(),
                                _rate(scored_images, score_seconds))
        finally:
            batches.close()  # stops the loader's workers
        return dict(
            rank=self.context.rank, device=str(self.device), chunks=len(mine),
            loading=dict(images=loader.images, seconds=loader.load_seconds, processes=loader.processes,
                         wait_seconds=loader.wait_seconds, images_per_s=loader.load_rate()),
            scoring=dict(images=scored_images, seconds=score_seconds, images_per_s=_rate(scored_images, score_seconds)),
        )

    def read_other_ranks(self, tasks: Sequence[ChunkTask]) -> None:
        """On rank 0: the chunks the other ranks scored, from the run cache."""
        deadline = time.monotonic() + SHARED_CACHE_WAIT_S
        for number, task in enumerate(tasks):
            for e in task.missing:
                if e in self.found[task.dataset][task.start]:
                    continue
                arrays = _read_shared_chunk(self.stores[task.dataset][e], task.start, task.end, deadline)
                if arrays is None:
                    raise DataError(
                        f"rank {number % self.context.world_size} scored samples {task.start}-{task.end} of "
                        f"{task.dataset} into the run cache {self.root}, but rank 0 cannot read them there; with "
                        "several nodes the run cache (--cache-dir or GAIA_VIZ_CACHE_DIR) must be one folder on a "
                        "filesystem all nodes share")
                self.found[task.dataset][task.start][e] = arrays

    def results(self) -> dict[str, dict[str, np.ndarray]]:
        """``{data set: {array name: per-sample array}}``, the chunks joined in order."""
        results = {}
        for name, ds in self.datasets.items():
            parts = [{k: v for e in self.entries for k, v in self.found[name][start][e].items()}
                     for start, _ in chunk_ranges(len(ds), self.settings.chunk_size)]
            results[name] = {key: np.concatenate([part[key] for part in parts]) for key in parts[0]}
        return results

    def fitted_states(self, fitted_now: dict) -> dict:
        """What every fitted method fitted: this run's states, else the cached ones."""
        states = dict(fitted_now)
        for method in self.needs_fit:
            if method not in states and self.use_cache:
                state = read_fitted_state(self.root, self.fitted_key(method))
                if state is not None:
                    states[method] = state
        return states

    def evaluation(self, results: Mapping[str, dict], run: RunConfig | None, timing: dict,
                   fitted_states: dict, cache_hits: int, started: float) -> Evaluation:
        frames = []
        for name, ds in self.datasets.items():
            arrays = results[name]
            n = len(arrays["label"])
            path_of = getattr(ds, "path", None)
            frame = pd.DataFrame({
                "dataset": name, "index": np.arange(n),
                # as text that can be shown and written: a name's bytes that are not UTF-8 as \xff
                "path": [printable(path_of(i)) for i in range(n)] if callable(path_of) else [None] * n,
                "label": arrays["label"], "prediction": arrays["prediction"],
            })
            for method in self.methods:
                frame[method] = arrays[method]
            frames.append(frame)
        ood_names = [n for n in self.datasets if n != self.id_name]
        layers = self.layers
        config = replace(
            run or RunConfig(),
            model=self.model_fp, methods=list(self.methods), method_params=self.method_params,
            left_out=self.left_out, layers=layers.as_dict(), fit_set=self.fit_fp, datasets=self.data_fps,
            id_set=self.id_name, ood_sets=ood_names,
            notes=list(dict.fromkeys([  # one note per cause
                *(run.notes if run else []), *self.layer_notes, *_exact_zero_notes(self.model, results, layers),
                *_non_finite_notes(self.detectors, results),
                *_accuracy_notes(results[self.id_name], self.num_classes, self.id_name)])),
            ood_policies={n: getattr(ds, "ood_policy", None) for n, ds in self.datasets.items()},
            batch_size=self.settings.batch_size, chunk_size=self.settings.chunk_size, device=str(self.device),
            world_size=self.context.world_size, workers=self.settings.workers, timing=timing,
            skipped={n: [list(item) for item in getattr(ds, "skipped", [])] for n, ds in self.datasets.items()
                     if getattr(ds, "skipped", None)},
        )
        id_set = self.datasets[self.id_name]
        if config.preset is None and getattr(id_set, "preset_name", None):
            config.preset = id_set.preset_name
        per_sample = {OUTPUTS, "label", "prediction", *self.methods}
        return Evaluation(
            scores=pd.concat(frames, ignore_index=True), id_name=self.id_name, ood_names=ood_names,
            methods=list(self.methods), zero_layers=layers.zero, zero_channels=layers.zero_channels,
            inner_layers=layers.inner, inner_channels=layers.inner_channels, head_layer=layers.head,
            arrays={name: {k: v for k, v in arrays.items() if k not in per_sample} for name, arrays in results.items()},
            config=config, seconds=time.perf_counter() - started, cache_hits=cache_hits, fitted_states=fitted_states,
        )


def _has_features(model: nn.Module, sample: torch.Tensor) -> bool:
    """True when the model's pooled penultimate features can be captured (a classifier head
    whose input they are), tried on one image; the sweep then keeps them (:data:`FEATURES`)."""
    try:
        shared_forward(model, sample.unsqueeze(0).to(model_device(model)), ForwardNeeds(features=True),
                       warn_without_zeros=False)
    except ModelError:
        return False
    return True


def _named_datasets(id_set, ood_sets: Mapping[str, object]) -> dict[str, object]:
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


def _run_timing(started: float, cached_images: int, fit_images: int, fit_seconds: float, reports: list[dict],
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


def evaluate(model: nn.Module, id_set, ood_sets: Mapping[str, object],
             settings: SweepSettings | None = None, fit_set=None, device=None,
             cache_dir: str | Path | None = None, use_cache: bool = True,
             progress: ProgressFn | None = None, cancel: Callable[[], bool] | None = None,
             run: RunConfig | None = None, distributed: DistributedContext | None = None) -> Evaluation | None:
    """Score ``id_set`` and every OOD set with every method of ``settings``.

    ``fit_set``: ID training data for the methods that fit (``Detector.needs_fit``); never
    the ID test set. ``progress(fraction, message)`` is called as the fit pass and every
    chunk advance; ``cancel()`` is polled between chunks (raises :class:`EvaluationCancelled`,
    keeping the chunks already scored). ``run``: what the caller records about the run
    (model name, checkpoint, sources, ...); the sweep fills in the rest of the
    :class:`RunConfig`, its ``timing`` included.

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
    sweep = _Sweep(model, id_set, ood_sets, settings or SweepSettings(), fit_set, device, cache_dir, use_cache,
                   context)
    tasks = sweep.plan()
    mine = share(tasks, context)
    mine_images = sum(t.end - t.start for t in mine)
    cached_images = sweep.total - sum(t.end - t.start for t in tasks)
    fit_images = len(fit_set) if sweep.fitting(tasks) else 0
    counted_here = cached_images if context.is_main else 0
    tracker = _Progress((fit_images if context.is_main else 0) + mine_images + counted_here, counted_here, progress)
    if mine_images or fit_images:  # the start of the clock: the time left is estimable after one chunk
        tracker.say(f"starting: {counted_here:,} of {tracker.total:,} images from the run cache")

    fitted_now, fit_seconds = sweep.fit(tasks, tracker, cached_images)
    tasks, mine = sweep.without_left_out(tasks), sweep.without_left_out(mine)  # a method that could not fit
    rank_timing = sweep.score(mine, tracker, cancel)
    reports = gather_to_main(rank_timing, context)  # returns on rank 0 once every rank is done
    if not context.is_main:
        return None
    sweep.read_other_ranks(tasks)
    planned = {t.dataset for t in tasks}
    evaluation = sweep.evaluation(
        sweep.results(), run, _run_timing(started, cached_images, fit_images, fit_seconds, reports, context),
        sweep.fitted_states(fitted_now), cache_hits=sum(name not in planned for name in sweep.datasets),
        started=started)
    if progress:
        progress(1.0, f"done: {sweep.total:,} images in {evaluation.seconds:.1f} s")
    return evaluation


__all__ = [
    "ALL_METHODS", "DEFAULT_CHUNK_SIZE", "DEFAULT_METHODS", "GAIA_METHODS", "METHOD_LABELS", "Evaluation",
    "EvaluationCancelled", "FEATURES", "ResolvedLayers", "SweepSettings", "build_detectors", "chunk_ranges",
    "gaia_z_note", "score_batch", "dataset_fingerprint", "evaluate", "model_fingerprint", "non_finite_methods",
    "resolve_layers", "unusable_methods",
]
