"""Detector protocol, shared helpers and nothing method-specific.

A detector turns a batch of images into one OOD score per image (higher = more OOD).

* ``needs()``: what it reads from the shared forward pass (:class:`gaia_viz.forward.ForwardNeeds`);
* ``score_forward(outputs)``: its scores from a :class:`~gaia_viz.forward.ForwardOutputs`, so
  one forward pass feeds every detector of a sweep; ``arrays(outputs)`` adds per-sample
  pieces worth keeping (GAIA's per-layer arrays);
* ``score(x)``: the same on its own (one :func:`~gaia_viz.forward.shared_forward` of its needs);
* fitted methods (``needs_fit``): ``fit_features(features, logits, labels)`` learns from one
  pass over ID training data that all fitted detectors share (pytorch-ood's
  ``fit_features``); ``fit(loader)`` runs that pass itself. ``fitted_state()`` /
  ``load_fitted_state()`` save and restore what was learnt (tensors), so an exported
  threshold never refits.
* ``OutputDetector``: forward-only methods whose score is the pure function
  ``score_outputs(logits, features)``.
* ``data_defaults(preset)``: parameters a method derives from the input preprocessing when
  the user gives none (ODIN's ``input_std``), applied the same way by every entry point.

Every ``score``/``fit`` call puts the model in eval mode and restores each module's
training flag afterwards, so detectors leave the model exactly as found.
"""

from __future__ import annotations

import abc
import inspect
from typing import Any, ClassVar, Iterable

import numpy as np
import torch
from torch import Tensor, nn

from gaia_viz.errors import ModelError
from gaia_viz.forward import ForwardNeeds, ForwardOutputs, collect_outputs, shared_forward
from gaia_viz.model_state import model_device


def check_positive(name: str, value: float) -> float:
    value = float(value)
    if not value > 0:
        raise ModelError(f"{name} must be positive, got {value}.")
    return value


def check_percentile(name: str, value: float, low_open: bool = True, high_open: bool = False) -> float:
    """A percentile in percent: (0, 100] by default; ``low_open=False`` admits 0,
    ``high_open=True`` excludes 100."""
    value = float(value)
    low_ok = value > 0.0 if low_open else value >= 0.0
    high_ok = value < 100.0 if high_open else value <= 100.0
    if not (low_ok and high_ok):
        bounds = ("(" if low_open else "[") + "0, 100" + (")" if high_open else "]")
        raise ModelError(f"{name} must be in {bounds} (percent), got {value}.")
    return value


def energy_from_logits(logits: Tensor, temperature: float = 1.0) -> Tensor:
    """Energy ``E(x) = -T * logsumexp(f(x) / T)`` (Liu et al. 2020); OOD has higher energy."""
    return -temperature * torch.logsumexp(logits / temperature, dim=1)


def refuse_non_finite(scores: Tensor, method: str, why: str) -> Tensor:
    """``scores`` when all are finite, else ModelError saying for how many images and ``why``."""
    bad = int((~torch.isfinite(scores)).sum())
    if bad:
        raise ModelError(f"{method} gave non-finite scores for {bad} of {scores.numel()} images: {why}")
    return scores


class Detector(abc.ABC):
    """Base class of all detectors. Scores are ``Tensor[B]``, float32, CPU, higher = more OOD.

    Subclasses set the class attributes and take their parameters as keyword arguments of
    ``__init__`` stored under the same attribute names (``params()`` reads them back).
    ``fitted_keys`` names the tensor attributes ``fit_features`` sets.
    """

    name: ClassVar[str] = ""
    label: ClassVar[str] = ""
    needs_fit: ClassVar[bool] = False
    needs_grad: ClassVar[bool] = False  # it needs a gradient from the shared pass
    forward_only: ClassVar[bool] = False  # its score is a function of logits/features alone
    fitted_keys: ClassVar[tuple[str, ...]] = ()
    uses_fit_labels: ClassVar[bool] = False  # its fit reads the class labels (-1: unknown)

    def __init__(self, model: nn.Module):
        self.model = model
        self._fitted = False

    # ------------------------------------------------------------------ protocol

    def needs(self) -> ForwardNeeds:
        """What :meth:`score_forward` reads from the shared forward pass."""
        return ForwardNeeds()

    @abc.abstractmethod
    def score_forward(self, outputs: ForwardOutputs) -> Tensor:
        """OOD scores ``Tensor[B]`` from a shared forward pass that met :meth:`needs`."""

    def raw_scores(self, outputs: ForwardOutputs) -> Tensor:
        """:meth:`score_forward`, except that inf/NaN scores are returned, not refused: the
        sweep keeps them and says for how many images and why (:meth:`explain_non_finite`)."""
        return self.score_forward(outputs)

    def explain_non_finite(self, arrays: dict[str, np.ndarray]) -> str:
        """Why this method's scores are not finite on the samples of ``arrays`` (what
        :meth:`arrays` and the score column hold for just those samples)."""
        return "its formula overflowed or divided by zero on these images"

    def validate_outputs(self, outputs: ForwardOutputs) -> None:
        """Raise ModelError when ``outputs`` cannot feed this method in a way
        :func:`~gaia_viz.forward.shared_forward` does not refuse itself (ASH/SCALE on the
        feature map: the head's input must be that map's spatial mean). None by default."""

    def check_model(self, x: Tensor) -> None:
        """Raise ModelError when the model cannot give this method what it needs (a classifier
        head, pooled features, ...): one shared forward of the batch ``x`` with its needs. The
        sweep runs it on one image and leaves out the methods that fail, saying why."""
        self.validate_outputs(shared_forward(self.model, self._input(x), self.needs(), warn_without_zeros=False))

    def arrays(self, outputs: ForwardOutputs) -> dict[str, np.ndarray]:
        """Per-sample arrays besides the score worth caching (none by default)."""
        return {}

    @classmethod
    def data_defaults(cls, preset) -> dict[str, Any]:
        """Parameters derived from the input preprocessing ``preset`` (a
        :class:`gaia_viz.data.presets.Preset` or None) when the user gives none."""
        return {}

    def score(self, x: Tensor) -> Tensor:
        """OOD scores ``Tensor[B]`` (float32, CPU) for images ``x[B, ...]``."""
        self._require_fit()
        outputs = shared_forward(self.model, self._input(x), self.needs())
        return self.score_forward(outputs).float().cpu()

    # ------------------------------------------------------------------ fitting

    @property
    def is_fitted(self) -> bool:
        """True when the detector can score: it needs no fit, or it has been fitted."""
        return not self.needs_fit or self._fitted

    def fit_features(self, features: Tensor, logits: Tensor, labels: Tensor) -> "Detector":
        """Learn from ID training data seen through the model (a no-op when nothing is fitted)."""
        return self

    def fit(self, loader: Iterable) -> "Detector":
        """Learn statistics from ID data. For methods with ``needs_fit = False`` a no-op."""
        if not self.needs_fit:
            return self
        fit = collect_outputs(self.model, loader)
        return self.fit_features(fit.features, fit.logits, fit.labels)

    def fitted_state(self) -> dict[str, Tensor]:
        """What ``fit`` learnt, as named tensors (empty for methods that fit nothing).
        Restored by :meth:`load_fitted_state` bit for bit: a Python float is kept as a
        float64 scalar (``torch.as_tensor`` alone would round it to float32)."""
        self._require_fit()
        state = {}
        for key in self.fitted_keys:
            value = getattr(self, key)
            tensor = torch.tensor(value, dtype=torch.float64) if isinstance(value, float) else torch.as_tensor(value)
            state[key] = tensor.detach().cpu().clone()
        return state

    def load_fitted_state(self, state: dict[str, Tensor]) -> "Detector":
        """Restore :meth:`fitted_state` (ModelError naming missing entries)."""
        missing = [key for key in self.fitted_keys if key not in state]
        if missing:
            raise ModelError(f"the fitted state of {self.name!r} lacks {', '.join(missing)}; refit or re-export it")
        for key in self.fitted_keys:
            value = state[key]
            current = getattr(self, key, None)
            setattr(self, key, float(value) if isinstance(current, float) or value.ndim == 0 else value.clone())
        self._fitted = True
        return self

    # ------------------------------------------------------------------ helpers

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

    def needs(self) -> ForwardNeeds:
        return ForwardNeeds(features=self.uses_features)

    @abc.abstractmethod
    def score_outputs(self, logits: Tensor, features: Tensor) -> Tensor:
        """Scores ``Tensor[B]`` from ``logits[B, C]`` and penultimate ``features[B, D]``."""

    def score_forward(self, outputs: ForwardOutputs) -> Tensor:
        self._require_fit()
        with torch.no_grad():
            return self.score_outputs(outputs.logits, outputs.features)


DETECTORS: dict[str, type[Detector]] = {}
"""Registry ``name -> class``, filled by :func:`register` as the method modules import."""


def register(cls: type[Detector]) -> type[Detector]:
    """Class decorator adding ``cls`` to :data:`DETECTORS` under ``cls.name``."""
    if not cls.name or cls.name in DETECTORS:
        raise RuntimeError(f"detector name {cls.name!r} is empty or registered twice")
    DETECTORS[cls.name] = cls
    return cls


def detector_parameters(name: str) -> list[str]:
    """The keyword parameters the detector registered as ``name`` accepts."""
    return [p for p in inspect.signature(DETECTORS[name].__init__).parameters if p not in ("self", "model")]


def make_detector(name: str, model: nn.Module, **params) -> Detector:
    """Build the detector registered as ``name`` (case-insensitive) with ``params``.

    Raises :class:`ModelError` naming the valid choices for an unknown name or parameter.
    """
    key = str(name).strip().lower()
    if key not in DETECTORS:
        raise ModelError(f"unknown detector {name!r}; choose one of: {', '.join(DETECTORS)}.")
    accepted = detector_parameters(key)
    unknown = sorted(set(params) - set(accepted))
    if unknown:
        raise ModelError(
            f"detector {key!r} has no parameter(s) {', '.join(unknown)}; "
            f"it accepts: {', '.join(accepted) or 'none'}."
        )
    return DETECTORS[key](model, **params)
