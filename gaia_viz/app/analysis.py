"""What the pages show, computed from a finished Evaluation without running the model.

Pure numpy/pandas (no streamlit), so the numbers the pages draw are tested directly. The
per-layer facts of GAIA-Z and GAIA-A (which arrays, how a subset is rescored) come from
:data:`gaia_viz.gaia.families.GAIA_FAMILIES`.
"""

from __future__ import annotations

from typing import Mapping, Sequence

import numpy as np
import pandas as pd

from gaia_viz.gaia.families import GAIA_FAMILIES, family
from gaia_viz.metrics import auroc, metrics_rows

METRIC_TABLE_COLUMNS = ["method", "ood_set", "fpr95", "auroc", "aupr_in", "aupr_out", "detection_error"]


def dataset_names(evaluation) -> list[str]:
    """The ID set first, then the OOD sets."""
    return evaluation.dataset_names


def score_sets(evaluation, method: str, layers: Sequence[str] | None = None) -> dict[str, np.ndarray]:
    """``{dataset: scores of method}``, ID first; GAIA scores over ``layers`` (None = all)."""
    return {name: method_scores(evaluation, method, name, layers) for name in dataset_names(evaluation)}


def method_scores(evaluation, method: str, dataset: str, layers: Sequence[str] | None = None) -> np.ndarray:
    """``method``'s scores of ``dataset``; for GAIA-Z/GAIA-A recomputed over ``layers``."""
    if layers is not None and method in GAIA_FAMILIES:
        return subset_scores(evaluation, dataset, method, layers)
    return evaluation.method_scores(method, dataset)


def has_family(evaluation, method: str) -> bool:
    """True when the evaluation holds the per-layer arrays of GAIA-Z (``gaia_z``) or GAIA-A."""
    return family(method).present(evaluation)


def channel_means(evaluation, dataset: str, method: str) -> np.ndarray:
    """Mean over the dataset's images of each channel's GAIA quantity, flat (all layers'
    channels): mean r[l, c] for ``gaia_z``, mean |m[l, c]| for ``gaia_a``."""
    fam = family(method)
    values = np.asarray(evaluation.arrays[dataset][fam.channel_array], dtype=float)
    return (np.abs(values) if fam.heatmap_abs else values).mean(axis=0)


def subset_scores(evaluation, dataset: str, method: str, layers: Sequence[str] | None = None) -> np.ndarray:
    """GAIA-Z or GAIA-A of ``dataset`` recomputed over the ``layers`` subset (None = all)."""
    return family(method).scores(evaluation, dataset, layers)


def single_layer_scores(evaluation, dataset: str, method: str) -> np.ndarray:
    """``(N, L)``: column ``l`` is the method's score using layer ``l`` alone."""
    layers = family(method).layers(evaluation)
    return np.stack([subset_scores(evaluation, dataset, method, [name]) for name in layers], axis=1)


def single_layer_aurocs(evaluation, ood_set: str, method: str) -> tuple[list[str], np.ndarray]:
    """(layers, AUROC of each single-layer score for ID vs ``ood_set``); NaN where a layer's
    scores are not finite (e.g. GAIA-A with a zero output component)."""
    layers = family(method).layers(evaluation)
    id_scores = single_layer_scores(evaluation, evaluation.id_name, method)
    ood_scores = single_layer_scores(evaluation, ood_set, method)
    values = []
    for column in range(len(layers)):
        a, b = id_scores[:, column], ood_scores[:, column]
        values.append(auroc(a, b) if np.isfinite(a).all() and np.isfinite(b).all() else np.nan)
    return layers, np.array(values)


def subset_metrics(evaluation, layers: Mapping[str, Sequence[str] | None], tpr: float = 0.95) -> pd.DataFrame:
    """Metrics of GAIA-Z / GAIA-A recomputed on layer subsets, in the schema of
    :meth:`Evaluation.metrics_table` (method, ood_set incl. 'average', fpr95, auroc, ...).

    ``layers``: ``{"gaia_z": [...], "gaia_a": [...]}``; a method absent or None uses all its layers.
    """
    rows = []
    for method, fam in GAIA_FAMILIES.items():
        if not fam.present(evaluation):
            continue
        chosen = layers.get(method)
        rows += metrics_rows(method, subset_scores(evaluation, evaluation.id_name, method, chosen),
                             {ood: subset_scores(evaluation, ood, method, chosen) for ood in evaluation.ood_names},
                             tpr=tpr)
    return pd.DataFrame(rows, columns=METRIC_TABLE_COLUMNS)


def view_metrics(evaluation, layers: Mapping[str, Sequence[str] | None], tpr: float = 0.95) -> pd.DataFrame:
    """:meth:`Evaluation.metrics_table` of the evaluation's methods, with GAIA-Z / GAIA-A
    recomputed on their ``layers`` subsets (absent or None: all layers)."""
    rows = []
    for method in evaluation.methods:
        chosen = layers.get(method)
        rows += metrics_rows(method, method_scores(evaluation, method, evaluation.id_name, chosen),
                             {ood: method_scores(evaluation, method, ood, chosen) for ood in evaluation.ood_names},
                             tpr=tpr)
    return pd.DataFrame(rows, columns=METRIC_TABLE_COLUMNS)
