"""A tuned OOD threshold as a file, and the object that applies it to new images.

The Tune threshold page exports a :class:`ThresholdConfig` (JSON) holding everything that
decides a score: model name and checkpoint, method and its parameters, layers, preprocessing
preset, OOD resize policy, and the threshold with the fraction of ID images it accepts.
:class:`OODFlagger` turns that file back into a working detector::

    flagger = OODFlagger.from_file("gaia_threshold.json")
    flags = flagger.flag(["a.png", "b.jpg"])   # True = score > threshold = flagged OOD

Convention (as everywhere in gaia_viz): higher score = more OOD; an input is **accepted** as
in-distribution when ``score <= threshold`` and **flagged** when ``score > threshold``.
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any, Iterable, Sequence

import numpy as np
import torch
from PIL import Image

from gaia_viz.errors import CheckpointError, DataError, GaiaVizError
from gaia_viz.settings import resolve_device

FORMAT = "gaia-viz threshold"
FORMAT_VERSION = 1
DEFAULT_CONFIG_NAME = "gaia_threshold.json"


@dataclass
class ThresholdConfig:
    """A threshold on one method's OOD score and the set-up that produced the scores.

    ``tpr_at_id``: fraction of the ID images scored ``<= threshold`` (accepted) when tuned;
    ``ood_accepted``: fraction of the ``ood_set`` images accepted (the FPR at this threshold).
    ``layers``: ``{"zero": GAIA-Z layers, "inner": GAIA-A inner layers, "head": head layer}``.
    ``checkpoint``: a path, None for built-in weights, or ``"upload:<name>"`` when the weights
    were uploaded (then pass the file to :meth:`OODFlagger.from_file`).
    For GAIA-Z / GAIA-A the layers are the subset the threshold was tuned on.
    ``ood_policy``: how new images are fitted to the input size (the policy of ``ood_set``);
    ``ood_policies``: the policy every data set of the evaluation was scored with.
    ``fitted_state``: for methods that fit, the file (beside the JSON) holding what was
    fitted (safetensors), so loading never refits; without it the detector refits on
    ``fit_source`` (spec of :func:`gaia_viz.data.sources.open_source`, with
    ``fit_max_samples`` and ``data_root``).
    """

    method: str
    threshold: float
    model_name: str
    preset: str
    ood_policy: str = "resize"
    checkpoint: str | None = None
    tpr_at_id: float | None = None
    layers: dict = field(default_factory=dict)
    method_params: dict = field(default_factory=dict)
    ood_set: str | None = None
    ood_accepted: float | None = None
    ood_policies: dict = field(default_factory=dict)
    fitted_state: str | None = None
    fit_source: str | None = None
    fit_max_samples: int | None = None
    data_root: str | None = None
    format: str = FORMAT
    version: int = FORMAT_VERSION

    def __post_init__(self):
        from gaia_viz.data.presets import check_ood_policy, get_preset
        from gaia_viz.detectors import DETECTORS

        if self.method not in DETECTORS:
            raise DataError(f"threshold file names unknown method {self.method!r}; "
                            f"expected one of {', '.join(DETECTORS)}")
        if not isinstance(self.threshold, (int, float)) or math.isnan(float(self.threshold)):
            raise DataError(f"threshold must be a number, got {self.threshold!r}")
        self.threshold = float(self.threshold)
        get_preset(self.preset)
        check_ood_policy(self.ood_policy)

    def to_dict(self) -> dict:
        return asdict(self)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2)

    @classmethod
    def from_dict(cls, data: dict) -> "ThresholdConfig":
        if not isinstance(data, dict) or data.get("format") != FORMAT:
            raise DataError(f"not a gaia-viz threshold file (expected \"format\": \"{FORMAT}\")")
        if data.get("version", FORMAT_VERSION) > FORMAT_VERSION:
            raise DataError(f"threshold file version {data['version']} is newer than this gaia-viz "
                            f"({FORMAT_VERSION}); upgrade gaia-viz")
        known = {f.name for f in fields(cls)}
        missing = [k for k in ("method", "threshold", "model_name", "preset") if k not in data]
        if missing:
            raise DataError(f"threshold file lacks {', '.join(missing)}")
        return cls(**{k: v for k, v in data.items() if k in known})

    @classmethod
    def from_json(cls, text: str) -> "ThresholdConfig":
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise DataError(f"threshold file is not valid JSON: {exc}") from exc
        return cls.from_dict(data)

    def save(self, path: str | os.PathLike, fitted_state: dict | None = None) -> Path:
        """Write the JSON to ``path``; with ``fitted_state`` (a detector's
        :meth:`~gaia_viz.detectors.Detector.fitted_state`) also ``<stem>.fitted.safetensors``
        beside it, named in the JSON."""
        path = Path(path)
        if fitted_state:
            from safetensors.torch import save_file

            state_path = path.with_name(fitted_state_name(path.name))
            save_file({k: v.contiguous() for k, v in fitted_state.items()}, str(state_path))
            self.fitted_state = state_path.name
        path.write_text(self.to_json())
        return path

    @classmethod
    def load(cls, path: str | os.PathLike) -> "ThresholdConfig":
        try:
            text = Path(path).expanduser().read_text()
        except OSError as exc:
            raise DataError(f"cannot read threshold file {path}: {exc.strerror or exc}") from exc
        return cls.from_json(text)


def fitted_state_name(config_name: str) -> str:
    """``gaia_threshold.json`` -> ``gaia_threshold.fitted.safetensors``."""
    return f"{Path(config_name).stem}.fitted.safetensors"


def config_from_evaluation(evaluation, method: str, threshold: float, ood_set: str | None = None,
                           layers: Sequence[str] | None = None) -> ThresholdConfig:
    """The :class:`ThresholdConfig` of ``threshold`` on ``method``'s scores of ``evaluation``.

    Reads the set-up the app (or the CLI) recorded in ``evaluation.config``; the OOD policy is
    the one ``ood_set`` was scored with. ``layers``: for GAIA-Z / GAIA-A, the layer subset
    the threshold applies to (None = all evaluated layers).
    """
    from gaia_viz.gaia.families import GAIA_FAMILIES
    from gaia_viz.metrics import confusion_at_threshold

    config = evaluation.config
    ood_set = ood_set or evaluation.ood_names[0]
    policy = config.ood_policy_of(ood_set) or "resize"
    recorded = dict(zero=list(config.layers.get("zero", [])), inner=list(config.layers.get("inner", [])),
                    head=config.layers.get("head"))
    if method in GAIA_FAMILIES:
        family = GAIA_FAMILIES[method]
        id_scores = family.scores(evaluation, evaluation.id_name, layers)
        ood_scores = family.scores(evaluation, ood_set, layers)
        if layers is not None:
            recorded["zero" if method == "gaia_z" else "inner"] = list(layers)
    else:
        id_scores = evaluation.method_scores(method, evaluation.id_name)
        ood_scores = evaluation.method_scores(method, ood_set)
    params = dict(config.method_params.get(method, {}))
    confusion = confusion_at_threshold(id_scores, ood_scores, threshold)
    return ThresholdConfig(
        method=method, threshold=float(threshold), model_name=config.model_name or "demo",
        checkpoint=config.checkpoint, preset=config.preset, ood_policy=policy,
        tpr_at_id=confusion["id_accepted"], ood_accepted=confusion["ood_accepted"], layers=recorded,
        method_params=params, ood_set=ood_set, ood_policies=dict(config.ood_policies), fit_source=config.fit_source,
        fit_max_samples=config.max_samples, data_root=config.data_root,
    )


class OODFlagger:
    """Scores new images exactly as the evaluation did and flags those above the threshold."""

    def __init__(self, config: ThresholdConfig, model: torch.nn.Module, detector, device: str = "cpu",
                 batch_size: int = 64):
        from gaia_viz.data.presets import make_transform

        self.config = config
        self.model = model
        self.detector = detector
        self.device = device
        self.batch_size = batch_size
        self.transform = make_transform(config.preset, config.ood_policy)

    @property
    def threshold(self) -> float:
        return self.config.threshold

    @classmethod
    def from_config(cls, config: ThresholdConfig, checkpoint: str | os.PathLike | bytes | None = None,
                    device: str | None = None, batch_size: int = 64,
                    folder: str | os.PathLike | None = None) -> "OODFlagger":
        """Load the model (``checkpoint`` overrides the config's) and build the detector; a
        method that fits loads its fitted state from ``folder / config.fitted_state`` when the
        config names one, else fits on ``config.fit_source``."""
        from gaia_viz.detectors import make_detector
        from gaia_viz.models import load_model

        device = resolve_device(device)
        weights = checkpoint if checkpoint is not None else config.checkpoint
        if isinstance(weights, str) and weights.startswith("upload:"):
            raise CheckpointError(
                f"the threshold was tuned with the uploaded checkpoint {weights[7:]!r}: pass its path, "
                "OODFlagger.from_file(path, checkpoint='/path/to/" + weights[7:] + "')")
        model = load_model(config.model_name, checkpoint=weights, device=device)
        params = dict(config.method_params)
        if config.method == "gaia_z" and config.layers.get("zero"):
            params["layers"] = list(config.layers["zero"])
        if config.method == "gaia_a":
            if config.layers.get("inner"):
                params["inner_layers"] = list(config.layers["inner"])
            if config.layers.get("head"):
                params["head_layer"] = config.layers["head"]
        detector = make_detector(config.method, model, **params)
        if detector.needs_fit and config.fitted_state:
            detector.load_fitted_state(cls._read_fitted_state(Path(folder or "."), config.fitted_state))
        elif detector.needs_fit:
            detector.fit(cls._fit_loader(config, batch_size))
        return cls(config, model, detector, device=device, batch_size=batch_size)

    @staticmethod
    def _read_fitted_state(folder: Path, name: str) -> dict:
        from safetensors import SafetensorError
        from safetensors.torch import load_file

        path = folder / Path(name).name  # only beside the JSON
        try:
            return load_file(str(path))
        except (OSError, SafetensorError) as exc:
            raise DataError(f"cannot read the fitted state {path} named by the threshold file ({exc}); "
                            "keep it beside the JSON, or remove \"fitted_state\" to refit") from exc

    @staticmethod
    def _fit_loader(config: ThresholdConfig, batch_size: int):
        import gaia_viz.demo  # noqa: F401 (registers the demo: data scheme)
        from gaia_viz.data.presets import id_policy
        from gaia_viz.data.sources import open_source

        if not config.fit_source:
            raise DataError(f"{config.method} must be fitted on ID training data, but the threshold "
                            "file names no fit_source; add one (e.g. \"folder:/data/train\")")
        fit_set = open_source(config.fit_source, config.preset, ood_policy=id_policy(config.preset),
                              data_root=config.data_root, max_samples=config.fit_max_samples)
        return torch.utils.data.DataLoader(fit_set, batch_size=batch_size, shuffle=False)

    @classmethod
    def from_file(cls, path: str | os.PathLike, checkpoint: str | os.PathLike | bytes | None = None,
                  device: str | None = None, batch_size: int = 64) -> "OODFlagger":
        """:meth:`from_config` of the JSON file written by the Tune threshold page (its fitted
        state, if any, is read from the JSON's folder)."""
        return cls.from_config(ThresholdConfig.load(path), checkpoint=checkpoint, device=device,
                               batch_size=batch_size, folder=Path(path).expanduser().parent)

    def _tensor(self, image: Any) -> torch.Tensor:
        from gaia_viz.data.images import load_image

        if not isinstance(image, Image.Image):
            image = load_image(image)
        elif image.mode not in ("RGB", "L"):
            image = image.convert("RGB")
        return self.transform(image)

    def score(self, images: Iterable | str | os.PathLike | Image.Image) -> np.ndarray:
        """OOD scores (float64, one per image; higher = more OOD) of paths, bytes or PIL images."""
        if isinstance(images, (str, os.PathLike, bytes, Image.Image)):
            images = [images]
        images = list(images)
        if not images:
            raise GaiaVizError("no images given to score")
        scores = []
        for start in range(0, len(images), self.batch_size):
            batch = torch.stack([self._tensor(img) for img in images[start:start + self.batch_size]])
            scores.append(self.detector.score(batch.to(self.device)).double().cpu().numpy())
        return np.concatenate(scores)

    def decide(self, scores) -> np.ndarray:
        """True for each score above the threshold (flagged out-of-distribution)."""
        return np.asarray(scores, dtype=np.float64) > self.config.threshold

    def flag(self, images: Iterable | str | os.PathLike | Image.Image) -> np.ndarray:
        """True for each image whose score is above the threshold (flagged out-of-distribution)."""
        return self.decide(self.score(images))


__all__ = ["OODFlagger", "ThresholdConfig", "config_from_evaluation", "fitted_state_name"]
