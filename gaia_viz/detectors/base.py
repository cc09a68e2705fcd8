"""Detector protocol, shared helpers and nothing method-specific.

A detector turns a batch of images into one OOD score per image (higher = more OOD).

* ``Detector`` is the base class: ``name``, ``label``, ``needs_fit``, ``needs_grad``,
  ``fit(loader)``, ``score(x)``, ``params()``.
* ``OutputDetector`` is the base of forward-only methods: they also offer the pure
  ``score_outputs(logits, features)`` so one forward pass can feed many detectors
  (``features`` is the penultimate vector, i.e. the input of the final ``nn.Linear``).

Every ``score``/``fit`` call puts the model in eval mode and restores each module's
training flag afterwards, so detectors leave the model exactly as found.
"""

from __future__ import annotations

import abc
import inspect
from typing import Any, ClassVar, Iterable

import torch
from torch import Tensor, nn

from gaia_viz.errors import DataError, ModelError
from gaia_viz.model_state import eval_mode, frozen_parameters, model_device  # noqa: F401 (re-exported)


def head_linear(model: nn.Module) -> tuple[str, nn.Linear]:
    """The classifier head: the last ``nn.Linear`` in ``model.named_modules()`` order.

    Raises :class:`ModelError` when the model has no ``nn.Linear``.
    """
    found = None
    for name, module in model.named_modules():
        if isinstance(module, nn.Linear):
            found = (name, module)
    if found is None:
        raise ModelError(
            f"{type(model).__name__} has no nn.Linear classifier head; feature-based "
            "detectors need one (the penultimate features are the head's input)."
        )
    return found


def features_and_logits(model: nn.Module, x: Tensor) -> tuple[Tensor, Tensor]:
    """One forward pass returning ``(features[B, D], logits[B, C])``.

    ``features`` is the input of the classifier head (:func:`head_linear`), captured with a
    temporary forward pre-hook that is removed even when the forward fails. Runs under the
    caller's grad mode and the model's current train/eval mode.
    """
    _, head = head_linear(model)
    captured: list[Tensor] = []

    def keep_input(_module, inputs):
        captured.append(inputs[0])

    handle = head.register_forward_pre_hook(keep_input)
    try:
        logits = model(x)
    finally:
        handle.remove()
    if not captured:
        raise ModelError(
            "the model's last nn.Linear was not called during forward, so it is not the "
            "classifier head; feature-based detectors cannot find the penultimate features."
        )
    if not isinstance(logits, Tensor) or logits.ndim != 2:
        raise ModelError(
            "the model must return a logits tensor of shape [batch, classes]; got "
            f"{type(logits).__name__}{tuple(getattr(logits, 'shape', ()))}."
        )
    return captured[-1].flatten(1), logits


def split_batch(batch) -> tuple[Tensor, Tensor | None]:
    """``(x, labels)`` from a loader batch: a tensor, or a tuple/list ``(x, label, ...)``."""
    if isinstance(batch, Tensor):
        return batch, None
    if isinstance(batch, (tuple, list)) and batch and isinstance(batch[0], Tensor):
        labels = batch[1] if len(batch) > 1 else None
        if labels is not None and not isinstance(labels, Tensor):
            labels = torch.as_tensor(labels)
        return batch[0], labels
    raise DataError(
        f"a loader batch must be a tensor or a tuple (images, labels, ...); got {type(batch).__name__}."
    )


@torch.no_grad()
def collect_outputs(model: nn.Module, loader: Iterable) -> tuple[Tensor, Tensor, Tensor]:
    """Run ``model`` (eval mode) over ``loader``: ``(features[N, D], logits[N, C], labels[N])``.

    Labels are ``-1`` where the loader gives none. All results are on the CPU.
    Raises :class:`DataError` for an empty loader.
    """
    device = model_device(model)
    feats, logits_all, labels_all = [], [], []
    with eval_mode(model):
        for batch in loader:
            x, labels = split_batch(batch)
            features, logits = features_and_logits(model, x.to(device))
            feats.append(features.float().cpu())
            logits_all.append(logits.float().cpu())
            if labels is None:
                labels = torch.full((x.shape[0],), -1, dtype=torch.long)
            labels_all.append(labels.reshape(-1).long().cpu())
    if not feats:
        raise DataError("the fit loader yielded no batches; give the detector some ID training images.")
    return torch.cat(feats), torch.cat(logits_all), torch.cat(labels_all)


def energy_from_logits(logits: Tensor, temperature: float = 1.0) -> Tensor:
    """Energy ``E(x) = -T * logsumexp(f(x) / T)`` (Liu et al. 2020); OOD has higher energy."""
    return -temperature * torch.logsumexp(logits / temperature, dim=1)


def check_positive(name: str, value: float) -> float:
    value = float(value)
    if not value > 0:
        raise ModelError(f"{name} must be positive, got {value}.")
    return value


class Detector(abc.ABC):
    """Base class of all detectors. Scores are ``Tensor[B]``, float32, CPU, higher = more OOD.

    Subclasses set the class attributes and take their parameters as keyword arguments of
    ``__init__`` stored under the same attribute names (``params()`` reads them back).
    """

    name: ClassVar[str] = ""
    label: ClassVar[str] = ""
    needs_fit: ClassVar[bool] = False
    needs_grad: ClassVar[bool] = False
    forward_only: ClassVar[bool] = False

    def __init__(self, model: nn.Module):
        self.model = model
        self._fitted = False

    @property
    def is_fitted(self) -> bool:
        """True when the detector can score: it needs no fit, or ``fit`` has run."""
        return not self.needs_fit or self._fitted

    def fit(self, loader: Iterable) -> "Detector":
        """Learn statistics from ID data. For methods with ``needs_fit = False`` a no-op."""
        return self

    @abc.abstractmethod
    def score(self, x: Tensor) -> Tensor:
        """OOD scores ``Tensor[B]`` (float32, CPU) for images ``x[B, ...]``."""

    def params(self) -> dict[str, Any]:
        """The constructor parameters and their values (for cache keys and reports)."""
        names = [p for p in inspect.signature(type(self).__init__).parameters if p not in ("self", "model")]
        return {p: getattr(self, p) for p in names}

    def _require_fit(self) -> None:
        if not self.is_fitted:
            raise ModelError(f"detector {self.name!r} must be fitted on ID data first: call .fit(loader).")

    def _input(self, x: Tensor) -> Tensor:
        return x.to(model_device(self.model))

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.params().items())
        return f"{type(self).__name__}({args})"


class OutputDetector(Detector):
    """A forward-only detector: its score is a function of ``(logits, features)`` alone."""

    forward_only: ClassVar[bool] = True
    uses_features: ClassVar[bool] = True  # False: a function of the logits alone

    @abc.abstractmethod
    def score_outputs(self, logits: Tensor, features: Tensor) -> Tensor:
        """Scores ``Tensor[B]`` from ``logits[B, C]`` and penultimate ``features[B, D]``."""

    @torch.no_grad()
    def score(self, x: Tensor) -> Tensor:
        self._require_fit()
        with eval_mode(self.model):
            if self.uses_features:
                features, logits = features_and_logits(self.model, self._input(x))
            else:
                features, logits = None, self.model(self._input(x))
        return self.score_outputs(logits, features).float().cpu()


DETECTORS: dict[str, type[Detector]] = {}
"""Registry ``name -> class``, filled by :func:`register` as the method modules import."""


def register(cls: type[Detector]) -> type[Detector]:
    """Class decorator adding ``cls`` to :data:`DETECTORS` under ``cls.name``."""
    if not cls.name or cls.name in DETECTORS:
        raise RuntimeError(f"detector name {cls.name!r} is empty or registered twice")
    DETECTORS[cls.name] = cls
    return cls


def make_detector(name: str, model: nn.Module, **params) -> Detector:
    """Build the detector registered as ``name`` (case-insensitive) with ``params``.

    Raises :class:`ModelError` naming the valid choices for an unknown name or parameter.
    """
    key = str(name).strip().lower()
    if key not in DETECTORS:
        raise ModelError(f"unknown detector {name!r}; choose one of: {', '.join(DETECTORS)}.")
    cls = DETECTORS[key]
    accepted = [p for p in inspect.signature(cls.__init__).parameters if p not in ("self", "model")]
    unknown = sorted(set(params) - set(accepted))
    if unknown:
        raise ModelError(
            f"detector {key!r} has no parameter(s) {', '.join(unknown)}; "
            f"it accepts: {', '.join(accepted) or 'none'}."
        )
    return cls(model, **params)
