"""What the pages show, computed from a finished Evaluation without running the model.

Pure numpy/pandas (no streamlit), so the numbers the pages draw are tested directly.

Per-layer GAIA pieces (:class:`gaia_viz.sweep.Evaluation` ``.arrays[dataset]``):
``zero_partial_sums[n, l] = sum_c r[l, c]^2`` over the channels of GAIA-Z layer ``l`` and
``avg_partial_sums[n, l] = sum_c m[l, c]^2`` over GAIA-A inner layer ``l``, so for a layer
subset ``S``::

    GAIA-Z_S = sum_{l in S} zero_partial_sums[:, l] / sum_{l in S} C_l
    GAIA-A_S = sum_{l in S} avg_partial_sums[:, l] / (o^2 * sum_{l in S} C_l)

and a single layer's score is the case ``S = {l}``.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
import pandas as pd

from gaia_viz.errors import LayerError
from gaia_viz.gaia import gaia_a_from_partials, gaia_z_from_partials
from gaia_viz.metrics import auroc, evaluate_scores

QUANTITIES = {
    "nonzero_ratio": "non-zero ratio r[l, c] of the GAIA-Z gradient",
    "abs_channel_mean": "|m[l, c]|: channel average of the GAIA-A inner gradient",
}


def dataset_names(evaluation) -> list[str]:
    """The ID set first, then the OOD sets."""
    return [evaluation.id_name, *evaluation.ood_names]


def score_sets(evaluation, method: str) -> dict[str, np.ndarray]:
    """``{dataset: scores of method}``, ID first."""
    return {name: evaluation.method_scores(method, name) for name in dataset_names(evaluation)}


def _family(evaluation, quantity_or_method: str) -> tuple[list[str], list[int], str, str]:
    """(layers, channel counts, flat per-channel array key, partial-sums key) of GAIA-Z or GAIA-A."""
    if quantity_or_method in ("gaia_z", "nonzero_ratio"):
        return list(evaluation.zero_layers), list(evaluation.zero_channels), "nonzero_ratio", "zero_partial_sums"
    if quantity_or_method in ("gaia_a", "abs_channel_mean"):
        return list(evaluation.inner_layers), list(evaluation.inner_channels), "channel_mean_grad", "avg_partial_sums"
    raise LayerError(f"unknown GAIA quantity {quantity_or_method!r}")


def has_family(evaluation, method: str) -> bool:
    """True when the evaluation holds the per-layer arrays of GAIA-Z (``gaia_z``) or GAIA-A."""
    layers, _, _, partial_key = _family(evaluation, method)
    return bool(layers) and partial_key in evaluation.arrays[evaluation.id_name]


def channel_means(evaluation, dataset: str, quantity: str) -> np.ndarray:
    """Mean over the dataset's images of each channel's quantity, flat (all layers' channels).

    ``nonzero_ratio``: mean r[l, c]; ``abs_channel_mean``: mean |m[l, c]|.
    """
    _, _, flat_key, _ = _family(evaluation, quantity)
    values = np.asarray(evaluation.arrays[dataset][flat_key], dtype=float)
    if quantity == "abs_channel_mean":
        values = np.abs(values)
    return values.mean(axis=0)


def layer_mask(all_layers: Sequence[str], chosen: Sequence[str]) -> np.ndarray:
    """Boolean mask over ``all_layers`` of the ``chosen`` ones (LayerError for unknown names)."""
    unknown = [name for name in chosen if name not in all_layers]
    if unknown:
        raise LayerError(f"layers {unknown} are not among the evaluated layers {list(all_layers)}")
    return np.array([name in chosen for name in all_layers], dtype=bool)


def subset_scores(evaluation, dataset: str, method: str, layers: Sequence[str] | None = None) -> np.ndarray:
    """GAIA-Z or GAIA-A of ``dataset`` recomputed over the ``layers`` subset (None = all)."""
    all_layers, counts, _, partial_key = _family(evaluation, method)
    arrays = evaluation.arrays[dataset]
    mask = None if layers is None else layer_mask(all_layers, layers)
    if method == "gaia_z":
        return gaia_z_from_partials(arrays[partial_key], np.asarray(counts), mask)
    return gaia_a_from_partials(arrays[partial_key], np.asarray(counts), arrays["output_component"], mask)


def single_layer_scores(evaluation, dataset: str, method: str) -> np.ndarray:
    """``(N, L)``: column ``l`` is the method's score using layer ``l`` alone."""
    all_layers, _, _, _ = _family(evaluation, method)
    return np.stack([subset_scores(evaluation, dataset, method, [name]) for name in all_layers], axis=1)


def single_layer_aurocs(evaluation, ood_set: str, method: str) -> tuple[list[str], np.ndarray]:
    """(layers, AUROC of each single-layer score for ID vs ``ood_set``); NaN where a layer's
    scores are not finite (e.g. GAIA-A with a zero output component)."""
    layers, _, _, _ = _family(evaluation, method)
    id_scores = single_layer_scores(evaluation, evaluation.id_name, method)
    ood_scores = single_layer_scores(evaluation, ood_set, method)
    values = []
    for column in range(len(layers)):
        a, b = id_scores[:, column], ood_scores[:, column]
        values.append(auroc(a, b) if np.isfinite(a).all() and np.isfinite(b).all() else np.nan)
    return layers, np.array(values)


def subset_metrics(evaluation, layers: dict[str, Sequence[str] | None], tpr: float = 0.95) -> pd.DataFrame:
    """Metrics of GAIA-Z / GAIA-A recomputed on layer subsets, in the schema of
    :meth:`Evaluation.metrics_table` (method, ood_set incl. 'average', fpr95, auroc, ...).

    ``layers``: ``{"gaia_z": [...], "gaia_a": [...]}``; a method absent or None uses all its layers.
    """
    rows = []
    for method in ("gaia_z", "gaia_a"):
        if method not in evaluation.methods or not has_family(evaluation, method):
            continue
        chosen = layers.get(method)
        id_scores = subset_scores(evaluation, evaluation.id_name, method, chosen)
        per_set = []
        for ood in evaluation.ood_names:
            values = evaluate_scores(id_scores, subset_scores(evaluation, ood, method, chosen), tpr=tpr)
            per_set.append(values)
            rows.append(dict(method=method, ood_set=ood, **values))
        if len(per_set) > 1:
            rows.append(dict(method=method, ood_set="average",
                             **{k: float(np.mean([v[k] for v in per_set])) for k in per_set[0]}))
    return pd.DataFrame(rows, columns=["method", "ood_set", "fpr95", "auroc", "aupr_in", "aupr_out",
                                       "detection_error"])
