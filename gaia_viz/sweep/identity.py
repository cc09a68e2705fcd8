"""What makes two sets of scores the same: fingerprints of a model and of a data set, and the
cache keys built from them (one chunk entry, one fitted state, one app set-up).

A key holds what determines the numbers (the weights, the dataset's files and
preprocessing, the method and its parameters, layers included, the fit data) and nothing
that cannot change a score (batch size, device, loader workers, how a path was typed).
"""

from __future__ import annotations

import hashlib
import os
import weakref
from typing import Mapping

import torch
from torch import nn

from gaia_viz.cache import stable_hash

OUTPUTS = "outputs"  # the cache entry holding labels and predictions
# The cache entry holding the pooled penultimate features (the classifier head's input) of every
# image: the shared forward computes them anyway (feature methods, GAIA-A's head), and keeping
# them makes the app's Data map free after an evaluation (no second pass over the images).
FEATURES = "features"
PER_IMAGE_ENTRIES = (OUTPUTS, FEATURES)  # the entries that are no method
# what the cached arrays mean; part of every cache key, so a change starts fresh entries
# (2: GAIA-Z ratios and partial sums in float64; 3: one entry per method, fixed chunks;
# 4: a norm fused with its activation is hooked before the activation)
SCORES_FORMAT = 4


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


def entry_key(entry: str, model_fp: str, data_fp: dict, params: dict | None = None, layers: dict | None = None,
              fit_fp: dict | None = None) -> str:
    """The key of one cache entry of one data set: :data:`OUTPUTS`, :data:`FEATURES` (model
    and data only) or a method (with its ``params``, its own ``layers`` and, when it is
    fitted, the fit set's fingerprint ``fit_fp``)."""
    facts = dict(format=SCORES_FORMAT, model=model_fp, dataset=data_fp, entry=entry)
    if entry not in PER_IMAGE_ENTRIES:
        facts.update(params=params, layers=layers, fit_set=fit_fp)
    return stable_hash(facts)


def fitted_key(method: str, model_fp: str, params: dict, fit_fp: dict | None) -> str:
    """The key of what a fitted method learnt from the fit set ``fit_fp``."""
    return stable_hash(dict(format=SCORES_FORMAT, model=model_fp, entry=method, fitted=True,
                            params=params, fit_set=fit_fp))


_IDENTITIES: "weakref.WeakKeyDictionary[object, tuple]" = weakref.WeakKeyDictionary()


def set_identity(images) -> tuple:
    """(kind, size, preset, policy, files, name) of an image set, memoised per set object
    (the app's sets are cached objects, so this is computed once per set). Cheaper than
    :func:`dataset_fingerprint`: resolved paths only, no file is stat-ed."""
    try:
        return _IDENTITIES[images]
    except (KeyError, TypeError):
        pass
    path_of = getattr(images, "path", None)
    paths = [path_of(i) for i in range(len(images))] if callable(path_of) else []
    files = stable_hash([os.path.realpath(p) for p in paths]) if paths and all(paths) else getattr(images, "source", "")
    identity = (type(images).__name__, len(images), getattr(images, "preset_name", None),
                getattr(images, "ood_policy", None), files, getattr(images, "name", None))
    try:
        _IDENTITIES[images] = identity
    except TypeError:
        pass
    return identity


def setup_key(model_name: str, weights: str | None, preset: str, image_sets: Mapping[str, object], fit_set,
              sources: Mapping[str, str], data_root: str | None) -> str:
    """The identity of the scores a set-up gives (the app's ``Setup.score_key``): the model
    and its weights' digest, the preprocessing and the files of every set (resolved, so two
    spellings of one folder are one set-up). Not the batch size, the device or the data root
    (unless a torchvision source reads under it): they cannot change a score."""
    uses_root = any(str(spec).startswith("torchvision:") for spec in sources.values())
    return stable_hash(dict(
        model=model_name, weights=weights, preset=preset,
        sets={name: set_identity(images) for name, images in image_sets.items()},
        fit=set_identity(fit_set) if fit_set is not None else None,
        data_root=data_root if uses_root else None,
    ))


__all__ = ["FEATURES", "OUTPUTS", "SCORES_FORMAT", "dataset_fingerprint", "entry_key", "fitted_key",
           "model_fingerprint", "set_identity", "setup_key"]
