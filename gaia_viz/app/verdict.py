"""One image against a finished evaluation (no Streamlit here): its GAIA pieces with the
evaluation's layers, its score on a layer subset, its per-channel values beside the sets'
(:meth:`gaia_viz.gaia.families.GaiaFamily.layer_values`), and the verdict at the current
threshold (:class:`Decision`)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np
from torch import Tensor, nn

from gaia_viz import gaia
from gaia_viz.gaia.families import GAIA_FAMILIES, family
from gaia_viz.metrics import threshold_at_tpr


def analyze_like_evaluation(model: nn.Module, x: Tensor, evaluation) -> gaia.GaiaResult:
    """GAIA pieces of one image (C, H, W) with the evaluation's layers, so its scores are
    comparable with the evaluation's score table."""
    want_z, want_a = "gaia_z" in evaluation.methods, "gaia_a" in evaluation.methods
    return gaia.gaia_analyze(
        model, x.unsqueeze(0) if x.ndim == 3 else x,
        layers=evaluation.zero_layers or None, inner_layers=evaluation.inner_layers or None,
        head_layer=evaluation.head_layer, zero=want_z, average=want_a,
        warn_without_zeros=False)  # the evaluation judged its sets; the page shows that note


def image_score(result: gaia.GaiaResult, method: str, layers: Sequence[str] | None = None) -> float:
    """The image's (first sample's) GAIA score over the ``layers`` subset (None = all)."""
    if method == "gaia_z":
        partials, counts, all_layers = result.zero_partial_sums.numpy(), result.zero_channel_counts, result.zero_layers
        arrays = {"zero_partial_sums": partials}
    else:
        partials, counts, all_layers = result.avg_partial_sums.numpy(), result.avg_channel_counts, result.inner_layers
        arrays = {"avg_partial_sums": partials, "output_component": result.output_component.numpy()}
    mask = None if layers is None else np.array([name in layers for name in all_layers])
    return float(GAIA_FAMILIES[method].scores_from_arrays(arrays, counts, mask)[0])


def image_channel_values(result: gaia.GaiaResult, method: str, layer: str) -> np.ndarray:
    """This image's per-channel r[l, c] (``gaia_z``) or m[l, c] (``gaia_a``) at ``layer``
    (first sample of ``result``)."""
    per_layer = result.nonzero_ratio if family(method).method == "gaia_z" else result.channel_mean_grad
    return per_layer[layer][0].double().numpy()


def channel_stats(evaluation, dataset: str, method: str, layer: str) -> tuple[np.ndarray, np.ndarray]:
    """Per-channel mean and standard deviation over the images of ``dataset`` at ``layer`` of
    GAIA-Z's r[l, c] (``method="gaia_z"``) or GAIA-A's m[l, c] (``"gaia_a"``)."""
    values = family(method).layer_values(evaluation, dataset, layer)
    return values.mean(axis=0), values.std(axis=0)


def ood_channel_mean(evaluation, method: str, layer: str) -> np.ndarray:
    """Per-channel mean over all OOD images of the evaluation (every OOD set pooled)."""
    pooled = np.concatenate([family(method).layer_values(evaluation, name, layer) for name in evaluation.ood_names])
    return pooled.mean(axis=0)


def default_inspect_layer(evaluation, method: str) -> tuple[str, str]:
    """The layer "GAIA at one layer" opens on, and the rule that chose it: the layer whose
    single-layer score separates the ID set from the evaluation's OOD sets best (highest
    AUROC of the method on that layer alone, averaged over the OOD sets; the deeper layer on a
    tie), so the view opens where GAIA's signal for this model is. Without a finite AUROC, the
    deepest layer, as How GAIA works."""
    from gaia_viz.app.analysis import single_layer_aurocs

    fam = family(method)
    layers = fam.layers(evaluation)
    per_set = np.array([single_layer_aurocs(evaluation, ood, method)[1] for ood in evaluation.ood_names])
    mean = np.array([np.nan if np.isnan(column).all() else np.nanmean(column) for column in per_set.T])
    if not np.isfinite(mean).any():
        return layers[-1], "the deepest layer (no layer's AUROC is defined)"
    best = max(i for i in range(len(layers)) if mean[i] == np.nanmax(mean))
    return layers[best], (f"the layer where {fam.label} on that layer alone separates {evaluation.id_name} from the "
                          f"OOD sets best (AUROC {100 * mean[best]:.1f} %, mean over "
                          f"{len(evaluation.ood_names)} set(s))")


@dataclass(frozen=True)
class Decision:
    """An OOD decision for one score: score > threshold means OOD."""

    score: float
    threshold: float
    threshold_source: str
    method_label: str

    @property
    def is_ood(self) -> bool:
        return bool(self.score > self.threshold)

    @property
    def text(self) -> str:
        verdict = "OOD" if self.is_ood else "ID"
        return (f"{verdict} at threshold {self.threshold:.4g} "
                f"({self.method_label}, higher = more OOD; score {self.score:.4g})")


def current_threshold(chosen, method: str, id_scores, tpr: float = 0.95) -> tuple[float, str]:
    """The threshold to judge ``method`` by, and where it came from.

    ``chosen``: the session's :class:`gaia_viz.app.selection.Selection`; when its thresholded
    method is ``method``, its operating point (a TPR on ``id_scores`` or a score) is used, as
    set on the Tune threshold page or in the link, or that page's default (95 % TPR) until
    either changes it: the source says "as on the Tune threshold page" either way. Otherwise
    the ``tpr`` quantile of the ID scores (``tpr`` of ID images accepted).
    """
    if chosen is not None and getattr(chosen, "method", None) == method:
        if chosen.threshold_mode == "score" and chosen.threshold is not None and np.isfinite(chosen.threshold):
            return float(chosen.threshold), "as on the Tune threshold page"
        if chosen.threshold_mode == "tpr":
            source = f"{chosen.tpr:.1%} of ID accepted, as on the Tune threshold page"
            return threshold_at_tpr(id_scores, chosen.tpr), source
    return threshold_at_tpr(id_scores, tpr), f"{tpr:.0%} of ID images accepted"


def decide(score: float, method: str, id_scores, chosen=None, tpr: float = 0.95) -> Decision:
    """The verdict for one image's ``method`` score against the current threshold."""
    threshold, source = current_threshold(chosen, method, id_scores, tpr)
    label = GAIA_FAMILIES[method].label if method in GAIA_FAMILIES else method
    return Decision(float(score), threshold, source, label)


def image_verdicts(model: nn.Module, images: dict[str, Tensor], evaluation, chosen, layers: dict,
                   id_scores: dict) -> dict[str, dict[str, Decision]]:
    """The GAIA verdict of each image (``{name: (C, H, W)}``) for each GAIA method of the
    evaluation, on the Selection's layers and thresholds: ``{name: {method: Decision}}``."""
    verdicts = {}
    for name, x in images.items():
        result = analyze_like_evaluation(model, x, evaluation)
        verdicts[name] = {method: decide(image_score(result, method, layers[method]), method, id_scores[method], chosen)
                          for method in id_scores}
    return verdicts


__all__ = ["analyze_like_evaluation", "channel_stats", "current_threshold", "decide", "Decision",
           "default_inspect_layer", "image_channel_values", "image_score", "image_verdicts", "ood_channel_mean"]
