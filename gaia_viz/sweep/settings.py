"""What a sweep computes besides model and data (:class:`SweepSettings`) and the detectors it
builds from them (:func:`build_detectors`)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Mapping, Sequence

from torch import nn

from gaia_viz.detectors import DETECTORS, Detector, detector_parameters, make_detector
from gaia_viz.errors import ModelError
from gaia_viz.settings import DEFAULT_METHODS, default_workers

GAIA_METHODS = ("gaia_z", "gaia_a")
ALL_METHODS = tuple(DETECTORS)
DEFAULT_CHUNK_SIZE = 256
LAYER_PARAMETERS = ("layers", "inner_layers", "head_layer")  # GAIA's layers: part of a key as resolved


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


def build_detectors(model: nn.Module, settings: SweepSettings, preset=None) -> dict[str, Detector]:
    """One detector per method: the preset's defaults (:meth:`Detector.data_defaults`) under
    the user's parameters."""
    detectors = {}
    for method in settings.methods:
        cls = DETECTORS[method]
        defaults = {k: v for k, v in cls.data_defaults(preset).items() if k in detector_parameters(method)}
        detectors[method] = make_detector(method, model, **{**defaults, **settings.params_for(method)})
    return detectors


def keyed_params(detector: Detector) -> dict:
    """A detector's parameters as a cache key holds them: GAIA's layers apart (they are
    keyed as the model resolves them)."""
    return {k: v for k, v in detector.params().items() if k not in LAYER_PARAMETERS}


def chunk_ranges(n: int, chunk: int) -> list[tuple[int, int]]:
    """``[(start, end), ...]`` covering ``range(n)`` in chunks of ``chunk`` samples."""
    return [(s, min(n, s + chunk)) for s in range(0, n, chunk)]


__all__ = ["ALL_METHODS", "DEFAULT_CHUNK_SIZE", "DEFAULT_METHODS", "GAIA_METHODS", "SweepSettings",
           "build_detectors", "chunk_ranges", "keyed_params"]
