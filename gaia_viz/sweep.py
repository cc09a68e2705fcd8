"""One sweep: every chosen method over ID and OOD sets, one forward pass per batch.

Per batch: GAIA-Z and GAIA-A share one forward (with the gradient passes they need) that
also yields the logits and penultimate features every forward-only detector scores from
(MSP, MaxLogit, Energy, GradNorm, ReAct, KNN, Mahalanobis); without GAIA that forward runs
without gradients. ODIN takes its input gradient from that same forward when GAIA runs
(its own pass otherwise) and adds a second forward on the perturbed input.

The result is one pandas table of per-sample scores for all methods plus, per dataset, the
per-layer GAIA arrays the app plots. Results are cached on disk in chunks keyed by model
weights, dataset, preprocessing, layers and method parameters (:mod:`gaia_viz.cache`), so a
second request is a cache hit and an interrupted run resumes where it stopped. A CUDA
out-of-memory error halves the batch and goes on.
"""

from __future__ import annotations

import hashlib
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable, Mapping, Sequence

import numpy as np
import pandas as pd
import torch
from torch import nn

from gaia_viz import gaia
from gaia_viz.cache import ChunkStore, default_cache_dir, stable_hash
from gaia_viz.detectors import DETECTORS, METHOD_LABELS, Detector, features_and_logits, make_detector
from gaia_viz.errors import DataError, GaiaVizError, ModelError
from gaia_viz.metrics import evaluate_scores
from gaia_viz.model_state import eval_mode, model_device

GAIA_METHODS = ("gaia_z", "gaia_a")
ALL_METHODS = tuple(DETECTORS)
DEFAULT_METHODS = ("gaia_z", "gaia_a", "msp", "energy")
# what the cached arrays mean; part of every cache key, so a change starts fresh entries
# (2: GAIA-Z ratios and partial sums in float64)
SCORES_FORMAT = 2

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
    """What determines a dataset's tensors: its files (path, size, mtime) or, for in-memory
    sets, a hash of a few samples; plus its preprocessing and OOD policy."""
    n = len(dataset)
    info = dict(
        kind=type(dataset).__name__, name=getattr(dataset, "name", None), size=n,
        preset=getattr(dataset, "preset_name", None), ood_policy=getattr(dataset, "ood_policy", None),
    )
    path_of = getattr(dataset, "path", None)
    paths = [path_of(i) for i in range(n)] if callable(path_of) else [None]
    if all(paths):
        digest = hashlib.blake2b(digest_size=12)
        for path in paths:
            stat = os.stat(path)
            digest.update(f"{path}|{stat.st_size}|{stat.st_mtime_ns}".encode())
        info["files"] = digest.hexdigest()
    else:
        digest = hashlib.blake2b(digest_size=12)
        for i in sorted({0, n // 2, n - 1} if n else set()):
            digest.update(dataset[i][0].numpy().tobytes())
        info["samples"] = digest.hexdigest()
    return info


# --------------------------------------------------------------------------- settings


@dataclass
class SweepSettings:
    """Everything besides model and data that determines the scores."""

    methods: Sequence[str] = DEFAULT_METHODS
    layers: Sequence[str] | None = None  # GAIA-Z layers, None = defaults
    inner_layers: Sequence[str] | None = None  # GAIA-A inner layers
    head_layer: str | None = None  # GAIA-A head layer
    method_params: Mapping[str, Mapping] = field(default_factory=dict)
    batch_size: int = 64

    def __post_init__(self):
        methods = [m.strip().lower() for m in self.methods if m.strip()]
        unknown = [m for m in methods if m not in DETECTORS]
        if unknown or not methods:
            raise ModelError(
                f"unknown method(s) {unknown or self.methods}; choose from {', '.join(DETECTORS)}"
            )
        self.methods = list(dict.fromkeys(methods))
        if int(self.batch_size) < 1:
            raise ValueError("batch size must be at least 1")
        self.batch_size = int(self.batch_size)


@dataclass
class _ResolvedLayers:
    zero: list[str]
    inner: list[str]
    head: str | None
    zero_channels: list[int]
    inner_channels: list[int]


def _resolve_layers(model, sample: torch.Tensor, settings: SweepSettings) -> _ResolvedLayers:
    x = sample.unsqueeze(0).to(model_device(model))
    layout = gaia.model_layout(model, x)
    zero = inner = []
    head = None
    if "gaia_z" in settings.methods:
        zero = gaia._resolve(layout, settings.layers, layout.default_zero_layers)
    if "gaia_a" in settings.methods:
        inner = gaia._resolve(layout, settings.inner_layers, layout.default_inner_layers)
        head = settings.head_layer or layout.default_head_layer()
        layout.info(head)
        layout.before_head_linear(head)
    return _ResolvedLayers(
        zero=list(zero), inner=list(inner), head=head,
        zero_channels=[layout.info(n).channels for n in zero],
        inner_channels=[layout.info(n).channels for n in inner],
    )


# --------------------------------------------------------------------------- scoring


def _score_batch(model, x, detectors: dict[str, Detector], layers: _ResolvedLayers) -> dict[str, np.ndarray]:
    """All methods on one batch. Returns per-sample arrays (scores, GAIA pieces, labels...)."""
    out: dict[str, np.ndarray] = {}
    # penultimate features are captured only for detectors that read them, so logit-only
    # methods also work on models whose head is not a Linear
    wants_features = any(d.forward_only and d.uses_features for d in detectors.values())
    want_z, want_a = "gaia_z" in detectors, "gaia_a" in detectors
    odin = detectors.get("odin")
    if want_z or want_a:
        # ODIN's input gradient comes from this same forward pass (its second forward, on
        # the perturbed input, stays its own)
        result = gaia.gaia_analyze(
            model, x, layers=layers.zero or None, inner_layers=layers.inner or None,
            head_layer=layers.head, zero=want_z, average=want_a,
            capture_features=wants_features,
            input_objective=odin.input_objective if odin is not None else None,
        )
        logits, features = result.logits, result.features
        if odin is not None:
            x_model = x.to(device=result.input_grad.device, dtype=result.input_grad.dtype)
            out["odin"] = odin.score_perturbed(odin.step(x_model, result.input_grad)).double().numpy()
        if want_z:
            out["zero_partial_sums"] = result.zero_partial_sums.numpy()
            # per-channel ratios are for charts: float32 halves the cache (scores use the
            # float64 partial sums above)
            out["nonzero_ratio"] = torch.cat([result.nonzero_ratio[n] for n in layers.zero], 1).float().numpy()
            out["gaia_z"] = result.gaia_z.numpy()
        if want_a:
            out["avg_partial_sums"] = result.avg_partial_sums.numpy()
            out["channel_mean_grad"] = torch.cat([result.channel_mean_grad[n] for n in layers.inner], 1).numpy()
            out["output_component"] = result.output_component.numpy()
            out["gaia_a"] = result.gaia_a.numpy()
    else:
        with torch.no_grad(), eval_mode(model):
            if wants_features:
                features, logits = features_and_logits(model, x.to(model_device(model)))
                features = features.float().cpu()
            else:
                features, logits = None, model(x.to(model_device(model)))
        logits = logits.float().cpu()
    bad = int((~torch.isfinite(logits)).any(1).sum())
    if bad:
        raise ModelError(f"the model returned non-finite logits (NaN or inf) for {bad} of {len(logits)} "
                         "images; check the checkpoint and the preprocessing preset")
    out["prediction"] = logits.argmax(1).numpy()
    for name, detector in detectors.items():
        if name in GAIA_METHODS or name in out:
            continue
        if detector.forward_only:
            out[name] = detector.score_outputs(logits, features).double().numpy()
        else:
            out[name] = detector.score(x).double().numpy()
    return out


def _score_range(model, dataset, start: int, end: int, detectors, layers, batch_size: int,
                 device) -> dict[str, np.ndarray]:
    """Score samples [start, end), halving the batch on CUDA out-of-memory."""
    parts: list[dict[str, np.ndarray]] = []
    position = start
    while position < end:
        stop = min(end, position + batch_size)
        items = [dataset[i] for i in range(position, stop)]
        x = torch.stack([item[0] for item in items]).to(device)
        try:
            batch = _score_batch(model, x, detectors, layers)
        except torch.OutOfMemoryError:
            if batch_size == 1:
                raise
            if x.is_cuda:
                torch.cuda.empty_cache()
            batch_size = max(1, batch_size // 2)
            continue
        batch["label"] = np.array([int(item[1]) for item in items])
        parts.append(batch)
        position = stop
    return {key: np.concatenate([p[key] for p in parts]) for key in parts[0]}


def _chunk_ranges(n: int, chunk: int) -> list[tuple[int, int]]:
    return [(s, min(n, s + chunk)) for s in range(0, n, chunk)]


@dataclass
class DatasetResult:
    """Per-sample arrays of one dataset (see :func:`_score_batch` for the keys)."""

    name: str
    arrays: dict[str, np.ndarray]
    paths: list[str | None]
    cache_hit: bool


def score_dataset(model, dataset, detectors: dict[str, Detector], settings: SweepSettings,
                  layers: _ResolvedLayers, store: ChunkStore | None, device=None,
                  progress: Callable[[int], None] | None = None,
                  cancel: Callable[[], bool] | None = None,
                  before_compute: Callable[[], None] | None = None) -> DatasetResult:
    """Score one dataset chunk by chunk, reading chunks from / writing them to ``store``."""
    n = len(dataset)
    if n == 0:
        raise DataError(f"dataset {getattr(dataset, 'name', '?')!r} has no samples")
    device = device or model_device(model)
    chunks = []
    all_cached = True
    for start, end in _chunk_ranges(n, settings.batch_size * 4):
        if cancel is not None and cancel():
            raise EvaluationCancelled(f"cancelled after {start} of {n} samples; finished chunks are cached")
        arrays = store.read(start, end) if store is not None else None
        if arrays is None:
            all_cached = False
            if before_compute is not None:
                before_compute()
            arrays = _score_range(model, dataset, start, end, detectors, layers, settings.batch_size, device)
            if store is not None:
                store.write(start, end, arrays)
        chunks.append(arrays)
        if progress is not None:
            progress(end - start)
    merged = {key: np.concatenate([c[key] for c in chunks]) for key in chunks[0]}
    path_of = getattr(dataset, "path", None)
    paths = [path_of(i) for i in range(n)] if callable(path_of) else [None] * n
    return DatasetResult(getattr(dataset, "name", "data"), merged, paths, all_cached)


# --------------------------------------------------------------------------- evaluation


@dataclass
class Evaluation:
    """The result of one sweep: a score table, per-dataset GAIA arrays and the settings."""

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
    config: dict
    seconds: float = 0.0
    cache_hits: int = 0

    def method_scores(self, method: str, dataset: str) -> np.ndarray:
        table = self.scores
        return table.loc[table["dataset"] == dataset, method].to_numpy(dtype=np.float64)

    def metrics_table(self, tpr: float = 0.95) -> pd.DataFrame:
        """One row per (method, OOD set) plus an 'average' row per method.

        Columns fpr95 (fraction of OOD accepted at 95 % TPR on ID, lower is better),
        auroc, aupr_in, aupr_out (higher is better), detection_error."""
        rows = []
        for method in self.methods:
            id_scores = self.method_scores(method, self.id_name)
            per_set = []
            for ood in self.ood_names:
                values = evaluate_scores(id_scores, self.method_scores(method, ood), tpr=tpr)
                per_set.append(values)
                rows.append(dict(method=method, ood_set=ood, **values))
            if len(per_set) > 1:
                average = {k: float(np.mean([v[k] for v in per_set])) for k in per_set[0]}
                rows.append(dict(method=method, ood_set="average", **average))
        return pd.DataFrame(rows)

    def metrics_json(self) -> dict:
        """The CLI's schema: {"methods": {method: {ood: {fpr95, auroc, aupr_in, aupr_out}}}, "config"}."""
        methods: dict[str, dict] = {}
        for row in self.metrics_table().to_dict("records"):
            methods.setdefault(row["method"], {})[row["ood_set"]] = {
                k: row[k] for k in ("fpr95", "auroc", "aupr_in", "aupr_out", "detection_error")
            }
        return {"methods": methods, "config": self.config}

    def id_accuracy(self) -> float | None:
        rows = self.scores[self.scores["dataset"] == self.id_name]
        labelled = rows[rows["label"] >= 0]
        if labelled.empty:
            return None
        return float((labelled["label"] == labelled["prediction"]).mean())


def _fit_loader(dataset, batch_size: int) -> Iterable:
    return torch.utils.data.DataLoader(dataset, batch_size=batch_size, shuffle=False, num_workers=0)


def evaluate(model: nn.Module, id_set, ood_sets: Mapping[str, object],
             settings: SweepSettings | None = None, fit_set=None, device=None,
             cache_dir: str | Path | None = None, use_cache: bool = True,
             progress: ProgressFn | None = None, cancel: Callable[[], bool] | None = None,
             extra_config: Mapping | None = None) -> Evaluation:
    """Score ``id_set`` and every OOD set with every method of ``settings``.

    ``fit_set``: ID training data for the methods that fit (ReAct, KNN, Mahalanobis); never
    the ID test set. ``progress(fraction, message)`` is called after every chunk;
    ``cancel()`` is polled between chunks (raises :class:`EvaluationCancelled`, keeping the
    chunks already scored). Fitting happens only if some chunk is not cached.
    """
    started = time.perf_counter()
    settings = settings or SweepSettings()
    if not ood_sets:
        raise DataError("choose at least one OOD set to compare the ID set with")
    datasets = {getattr(id_set, "name", "id"): id_set}
    for name, ds in ood_sets.items():
        if name in datasets:
            raise DataError(f"two datasets are both named {name!r}; give them distinct names")
        datasets[name] = ds
    for name, ds in datasets.items():
        if len(ds) == 0:
            raise DataError(f"dataset {name!r} has no samples")
    id_name = next(iter(datasets))
    device = torch.device(device) if device is not None else model_device(model)
    if model_device(model).type != device.type:
        raise ModelError(f"the model is on {model_device(model)}; move it to {device} first")

    detectors = {m: make_detector(m, model, **dict(settings.method_params.get(m, {})))
                 for m in settings.methods}
    needs_fit = [m for m, d in detectors.items() if d.needs_fit]
    if needs_fit and fit_set is None:
        raise DataError(f"{', '.join(needs_fit)} must be fitted on ID training data: give a fit set")
    layers = _resolve_layers(model, id_set[0][0], settings)

    model_fp = model_fingerprint(model)
    fit_fp = dataset_fingerprint(fit_set) if needs_fit else None
    method_config = {m: detectors[m].params() for m in settings.methods}
    method_config = {m: {k: v for k, v in p.items() if k not in ("layers", "inner_layers", "head_layer")}
                     for m, p in method_config.items()}
    config = dict(
        model=model_fp, methods=settings.methods, method_params=method_config,
        layers=dict(zero=layers.zero, inner=layers.inner, head=layers.head),
        fit_set=fit_fp, **(dict(extra_config) if extra_config else {}),
    )
    fitted = [False]

    def fit_once():
        if fitted[0] or not needs_fit:
            return
        if progress:
            progress(done[0] / total, f"fitting {', '.join(needs_fit)} on {getattr(fit_set, 'name', 'fit set')}")
        loader = _fit_loader(fit_set, settings.batch_size)
        for m in needs_fit:
            detectors[m].fit(loader)
        fitted[0] = True

    total = sum(len(ds) for ds in datasets.values())
    done = [0]
    results: dict[str, DatasetResult] = {}
    root = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    data_fps = {name: dataset_fingerprint(ds) for name, ds in datasets.items()}  # stats every file once
    for name, ds in datasets.items():
        data_fp = data_fps[name]
        key = stable_hash(dict(config, dataset=data_fp, format=SCORES_FORMAT))
        store = ChunkStore(root, key, meta=dict(config, dataset=data_fp)) if use_cache else None

        def advance(count, _name=name):
            done[0] += count
            if progress:
                progress(done[0] / total, f"scoring {_name}: {done[0]:,}/{total:,} images")

        results[name] = score_dataset(model, ds, detectors, settings, layers, store, device,
                                      progress=advance, cancel=cancel, before_compute=fit_once)

    frames = []
    for name, res in results.items():
        n = len(res.arrays["label"])
        frame = pd.DataFrame({
            "dataset": name, "index": np.arange(n), "path": res.paths,
            "label": res.arrays["label"], "prediction": res.arrays["prediction"],
        })
        for method in settings.methods:
            frame[method] = res.arrays[method]
        frames.append(frame)
    gaia_keys = ("zero_partial_sums", "nonzero_ratio", "avg_partial_sums", "channel_mean_grad", "output_component")
    evaluation = Evaluation(
        scores=pd.concat(frames, ignore_index=True), id_name=id_name,
        ood_names=[n for n in datasets if n != id_name], methods=list(settings.methods),
        zero_layers=layers.zero, zero_channels=layers.zero_channels,
        inner_layers=layers.inner, inner_channels=layers.inner_channels, head_layer=layers.head,
        arrays={name: {k: v for k, v in res.arrays.items() if k in gaia_keys} for name, res in results.items()},
        config=dict(config, datasets=data_fps,
                    id_set=id_name, ood_sets=[n for n in datasets if n != id_name],
                    batch_size=settings.batch_size, device=str(device)),
        seconds=time.perf_counter() - started,
        cache_hits=sum(r.cache_hit for r in results.values()),
    )
    if progress:
        progress(1.0, f"done: {total:,} images in {evaluation.seconds:.1f} s")
    return evaluation


__all__ = [
    "ALL_METHODS", "DEFAULT_METHODS", "GAIA_METHODS", "METHOD_LABELS", "Evaluation",
    "EvaluationCancelled", "SweepSettings", "dataset_fingerprint", "evaluate",
    "model_fingerprint", "score_dataset",
]
