"""One forward pass that feeds every detector: what they need (:class:`ForwardNeeds`), what
they get (:class:`ForwardOutputs`), and the pass itself (:func:`shared_forward`).

Every detector states its needs (pytorch-ood's ``predict_features`` idea, widened to
gradients): logits always; the penultimate features (the classifier head's input); the
feature map the global pooling reads; GAIA-Z and GAIA-A with their layers; the input
gradient of an objective (ODIN). :func:`shared_forward` merges the needs of all detectors
of a sweep and runs the model once: without gradients when nobody needs one, else one
hooked forward with the gradient passes asked for (:func:`gaia_viz.gaia.gaia_analyze`).
The fit pass of fitted detectors is :func:`collect_outputs`: one pass over the fit set
that every fitted detector of the sweep learns from.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Iterable

import torch
from torch import Tensor, nn

from gaia_viz.errors import DataError, ModelError
from gaia_viz.model_output import model_logits
from gaia_viz.model_state import eval_mode, model_device
from gaia_viz.progress import ProgressFn


@dataclass(frozen=True)
class ForwardNeeds:
    """What a detector needs from the shared forward pass.

    ``zero_layers``/``inner_layers``/``head_layer``: None means GAIA's defaults.
    ``input_objective``: a function of the logits whose input gradient is wanted.
    """

    features: bool = False
    feature_map: bool = False
    gaia_z: bool = False
    zero_layers: tuple[str, ...] | None = None
    gaia_a: bool = False
    inner_layers: tuple[str, ...] | None = None
    head_layer: str | None = None
    input_objective: Callable[[Tensor], Tensor] | None = None

    @property
    def needs_grad(self) -> bool:
        return self.gaia_z or self.gaia_a or self.input_objective is not None

    def merge(self, other: "ForwardNeeds") -> "ForwardNeeds":
        """Both sets of needs in one pass (ModelError when two callers want different
        layers for the same GAIA score or two different input gradients)."""
        for name in ("zero_layers", "inner_layers", "head_layer", "input_objective"):
            mine, theirs = getattr(self, name), getattr(other, name)
            if mine is not None and theirs is not None and mine != theirs:
                raise ModelError(f"two detectors ask for different {name} in one forward pass")
        return ForwardNeeds(
            features=self.features or other.features, feature_map=self.feature_map or other.feature_map,
            gaia_z=self.gaia_z or other.gaia_z, zero_layers=self.zero_layers or other.zero_layers,
            gaia_a=self.gaia_a or other.gaia_a, inner_layers=self.inner_layers or other.inner_layers,
            head_layer=self.head_layer or other.head_layer,
            input_objective=self.input_objective or other.input_objective,
        )


def merge_needs(needs: Iterable[ForwardNeeds]) -> ForwardNeeds:
    merged = ForwardNeeds()
    for item in needs:
        merged = merged.merge(item)
    return merged


@dataclass
class ForwardOutputs:
    """What one shared forward pass produced for a batch.

    ``x``: the input as the model received it (on the model's device); ``logits`` and
    ``features`` on the CPU (float32); ``feature_map``: the pooled map's input
    ``(B, C, H, W)`` on the model's device; ``gaia``: the :class:`gaia_viz.gaia.GaiaResult`
    when GAIA or an input gradient was asked for; ``input_grad`` on the model's device.
    """

    model: nn.Module
    x: Tensor
    logits: Tensor
    features: Tensor | None = None
    feature_map: Tensor | None = None
    gaia: object | None = None
    input_grad: Tensor | None = None
    extra: dict = field(default_factory=dict)


def pooled_map_layer(model: nn.Module, x: Tensor) -> str:
    """The feature map the global pooling reads: the last layer with spatial extent."""
    from gaia_viz.gaia import model_layout

    return model_layout(model, x).pooled_map_layer()


def shared_forward(model: nn.Module, x: Tensor, needs: ForwardNeeds,
                   warn_without_zeros: bool = True) -> ForwardOutputs:
    """Run ``model`` once on the batch ``x`` and return what ``needs`` asks for.

    The model is in eval mode for the pass and left as found. Logits that are not finite
    raise ModelError (a broken checkpoint or preprocessing must not give numbers).
    ``warn_without_zeros``: warn when GAIA-Z's gradients hold almost no exact zeros
    (:func:`gaia_viz.gaia.gaia_analyze`); the sweep judges whole data sets instead.
    """
    from gaia_viz.gaia import gaia_analyze, model_layout
    from gaia_viz.gaia.autograd import prepare_input

    x = prepare_input(model, x, None)
    map_layer = model_layout(model, x).pooled_map_layer() if needs.feature_map else None
    if needs.needs_grad:
        result = gaia_analyze(
            model, x, layers=needs.zero_layers, inner_layers=needs.inner_layers,
            head_layer=needs.head_layer, zero=needs.gaia_z, average=needs.gaia_a,
            capture_features=needs.features, input_objective=needs.input_objective,
            keep_outputs=[map_layer] if map_layer else (), warn_without_zeros=warn_without_zeros)
        outputs = ForwardOutputs(model=model, x=x, logits=result.logits, features=result.features,
                                 feature_map=result.kept.get(map_layer) if map_layer else None,
                                 gaia=result, input_grad=result.input_grad)
    else:
        outputs = _plain_forward(model, x, needs.features, map_layer)
    check_finite_logits(outputs.logits)
    return outputs


def _plain_forward(model: nn.Module, x: Tensor, features: bool, map_layer: str | None) -> ForwardOutputs:
    from gaia_viz.models.heads import classifier_head

    captured: dict[str, Tensor] = {}
    handles = []
    modules = dict(model.named_modules())
    head = classifier_head(model) if features else None
    with eval_mode(model), torch.no_grad():
        try:
            if head is not None:
                handles.append(head.module.register_forward_pre_hook(
                    lambda _m, inputs: captured.__setitem__("features", inputs[0])))
            if map_layer is not None:
                handles.append(modules[map_layer].register_forward_hook(
                    lambda _m, _i, output: captured.__setitem__("map", output.clone())))
            logits = model_logits(model(x))
        finally:
            for handle in handles:
                handle.remove()
    feats = None
    if head is not None:
        if "features" not in captured:
            raise ModelError(f"the classifier head {head.name!r} was not called during the forward pass, "
                             "so the penultimate features cannot be found")
        feats = head.features_from_input(captured["features"]).float().cpu()
    return ForwardOutputs(model=model, x=x, logits=logits.float().cpu(), features=feats,
                          feature_map=captured.get("map"))


def check_finite_logits(logits: Tensor) -> None:
    bad = int((~torch.isfinite(logits)).any(1).sum())
    if bad:
        raise ModelError(f"the model returned non-finite logits (NaN or inf) for {bad} of {len(logits)} "
                         "images; check the checkpoint and the preprocessing preset")


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


@dataclass
class FitOutputs:
    """The fit set seen through the model: ``features [N, D]``, ``logits [N, C]``,
    ``labels [N]`` (-1 where unknown), all on the CPU, float32 / int64."""

    features: Tensor
    logits: Tensor
    labels: Tensor


def collect_outputs(model: nn.Module, loader: Iterable, progress: ProgressFn | None = None,
                    total: int | None = None) -> FitOutputs:
    """Penultimate features, logits and labels of every batch of ``loader`` in one pass
    (eval mode, no gradients). ``progress(fraction, message)`` after each batch when
    ``total`` (the number of samples) is known. DataError for an empty loader."""
    device = model_device(model)
    needs = ForwardNeeds(features=True)
    feats, logits_all, labels_all = [], [], []
    seen = 0
    for batch in loader:
        x, labels = split_batch(batch)
        out = shared_forward(model, x.to(device), needs)
        feats.append(out.features)
        logits_all.append(out.logits)
        if labels is None:
            labels = torch.full((x.shape[0],), -1, dtype=torch.long)
        labels_all.append(labels.reshape(-1).long().cpu())
        seen += x.shape[0]
        if progress is not None and total:
            progress(min(1.0, seen / total), f"fit pass: {seen:,}/{total:,} images")
    if not feats:
        raise DataError("the fit loader yielded no batches; give the detector some ID training images.")
    return FitOutputs(torch.cat(feats), torch.cat(logits_all), torch.cat(labels_all))


def features_and_logits(model: nn.Module, x: Tensor) -> tuple[Tensor, Tensor]:
    """``(features[B, D], logits[B, C])`` of one batch: the classifier head's input and the
    output (eval mode, no gradients, CPU float32)."""
    out = shared_forward(model, x, ForwardNeeds(features=True))
    return out.features, out.logits


__all__ = ["FitOutputs", "ForwardNeeds", "ForwardOutputs", "collect_outputs", "features_and_logits",
           "merge_needs", "model_logits", "pooled_map_layer", "shared_forward", "split_batch"]
