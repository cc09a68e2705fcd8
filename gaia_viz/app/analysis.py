"""What the pages show, computed from a finished Evaluation without running the model.

Pure numpy/pandas (no streamlit), so the numbers the pages draw are tested directly. The
per-layer facts of GAIA-Z and GAIA-A (which arrays, how a subset is rescored) come from
:data:`gaia_viz.gaia.families.GAIA_FAMILIES`.
"""

from __future__ import annotations

from typing import Mapping, Sequence

import numpy as np
import pandas as pd

from gaia_viz.app.markdown import escape_markdown
from gaia_viz.gaia.families import GAIA_FAMILIES, family
from gaia_viz.metrics import DEFAULT_BOOTSTRAP_RESAMPLES, auroc, bootstrap_intervals, evaluate_scores, metrics_rows

NEGLIGIBLE_DELTA_PTS = 0.005  # a change below this shows as "+0.00 pts": not a change

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
                             tpr=tpr, non_finite="nan")
    return pd.DataFrame(rows, columns=METRIC_TABLE_COLUMNS)


def view_metrics(evaluation, layers: Mapping[str, Sequence[str] | None], tpr: float = 0.95) -> pd.DataFrame:
    """:meth:`Evaluation.metrics_table` of the evaluation's methods, with GAIA-Z / GAIA-A
    recomputed on their ``layers`` subsets (absent or None: all layers)."""
    rows = []
    for method in evaluation.methods:
        chosen = layers.get(method)
        rows += metrics_rows(method, method_scores(evaluation, method, evaluation.id_name, chosen),
                             {ood: method_scores(evaluation, method, ood, chosen) for ood in evaluation.ood_names},
                             tpr=tpr, non_finite="nan")
    return pd.DataFrame(rows, columns=METRIC_TABLE_COLUMNS)


def markdown_table(grid: pd.DataFrame, bold: pd.DataFrame, digits: int = 2) -> str:
    """``grid`` (rows = methods, columns = OOD sets) as a Markdown table with the ``bold``
    cells in bold, numbers right-aligned; NaN is written "n/a" (the score is undefined
    there: :func:`view_metrics` keeps NaN rather than inventing a number)."""
    corner = escape_markdown(grid.index.name or "")
    header = "| " + " | ".join([corner, *(escape_markdown(c) for c in grid.columns)]) + " |"
    rule = "| :-- | " + " | ".join("--:" for _ in grid.columns) + " |"
    lines = [header, rule]
    for label, row in grid.iterrows():
        cells = []
        for column, value in row.items():
            text = "n/a" if not np.isfinite(value) else f"{value:.{digits}f}"
            cells.append(f"**{text}**" if bool(bold.loc[label, column]) else text)
        lines.append("| " + " | ".join([escape_markdown(label), *cells]) + " |")
    return "\n".join(lines)


def delta_color(delta_pts: float) -> str:
    """``st.metric``'s ``delta_color`` for a change in percentage points: ``"off"`` (grey)
    when it is not a number or rounds to ±0.00, else ``"normal"`` (green up, red down)."""
    return "normal" if np.isfinite(delta_pts) and abs(delta_pts) >= NEGLIGIBLE_DELTA_PTS else "off"


def bootstrap_table(evaluation, layers: Mapping[str, Sequence[str] | None], labels: Mapping[str, str] | None = None,
                    n_resamples: int = DEFAULT_BOOTSTRAP_RESAMPLES, seed: int = 0) -> pd.DataFrame:
    """AUROC and FPR95 (%) of every method and OOD set with percentile-bootstrap 95 %
    intervals (:func:`gaia_viz.metrics.bootstrap_intervals`, ``seed`` fixed), GAIA on its
    ``layers`` subset. A method whose scores are not finite on a set gets "n/a" and why."""
    labels = labels or {}
    rows = []
    for method in evaluation.methods:
        chosen = layers.get(method)
        id_scores = method_scores(evaluation, method, evaluation.id_name, chosen)
        for ood in evaluation.ood_names:
            ood_scores = method_scores(evaluation, method, ood, chosen)
            row = {"Method": labels.get(method, method), "OOD set": ood}
            if not (np.isfinite(id_scores).all() and np.isfinite(ood_scores).all()):
                row.update({"AUROC (%) [95 % CI]": "n/a (non-finite scores)", "FPR95 (%) [95 % CI]": "n/a (non-finite scores)"})
            else:
                point = evaluate_scores(id_scores, ood_scores)
                ci = bootstrap_intervals(id_scores, ood_scores, n_resamples=n_resamples, seed=seed)
                for key, header in (("auroc", "AUROC (%) [95 % CI]"), ("fpr95", "FPR95 (%) [95 % CI]")):
                    low, high = ci[key]
                    row[header] = f"{100 * point[key]:.2f} [{100 * low:.2f}, {100 * high:.2f}]"
            rows.append(row)
    return pd.DataFrame(rows)


def agreement_labels(first: str, second: str) -> dict[tuple[bool, bool], str]:
    """The four ways two methods' decisions can combine (keys: (first flags, second flags))."""
    return {(False, False): "both accept", (True, True): "both flag",
            (True, False): f"only {first} flags", (False, True): f"only {second} flags"}


def data_map_points(evaluation, coords: Mapping[str, np.ndarray], method: str, threshold: float,
                    layers: Mapping[str, Sequence[str] | None], color: str = "set",
                    compare: tuple[str, float] | None = None, labels: Mapping[str, str] | None = None) -> pd.DataFrame:
    """One row per image of the map: ``dataset``, ``index``, ``x``, ``y`` (its 2-D
    coordinates, ``coords[dataset]`` row ``index``), ``score`` of ``method`` (GAIA on its
    ``layers`` subset) and ``flagged`` (score > ``threshold``), plus ``color``: the score of
    the method ``color`` names, or with ``color="agree"`` the :func:`agreement_labels`
    category of ``method`` against ``compare = (method, threshold)``. Sets in evaluation
    order, ID first."""
    labels = labels or {}
    frames = []
    for name in dataset_names(evaluation):
        points = np.asarray(coords[name], dtype=float)
        scores = method_scores(evaluation, method, name, layers.get(method))
        if len(scores) != len(points):
            raise ValueError(f"{name}: {len(points)} feature vectors but {len(scores)} scores; the map and the "
                             "evaluation must use the same images")
        frame = pd.DataFrame({"dataset": name, "index": np.arange(len(points)), "x": points[:, 0], "y": points[:, 1],
                              "score": scores, "flagged": scores > threshold})
        if color == "agree":
            other, other_threshold = compare
            other_flagged = method_scores(evaluation, other, name, layers.get(other)) > other_threshold
            names = agreement_labels(labels.get(method, method), labels.get(other, other))
            frame["color"] = [names[(bool(a), bool(b))] for a, b in zip(frame["flagged"], other_flagged)]
        elif color != "set":
            frame["color"] = method_scores(evaluation, color, name, layers.get(color))
        frames.append(frame)
    return pd.concat(frames, ignore_index=True)


TUNED_ON_TEST = "tuned on the test data"


def subset_layers(layers: Mapping[str, Sequence[str] | None]) -> dict[str, list[str]]:
    """The GAIA methods of ``layers`` that use a layer subset (None = all layers: left out)."""
    return {method: list(chosen) for method, chosen in layers.items() if chosen is not None}


def row_labels(layers: Mapping[str, Sequence[str] | None], labels: Mapping[str, str], evaluation) -> dict[str, str]:
    """``labels`` with each GAIA method on a layer subset renamed "GAIA-Z (2 of 3 layers, tuned on
    the test data)": the app's subsets are chosen on the Channels and layers page by looking at
    this evaluation's own OOD sets, so a bold "best" from one is not a held-out result."""
    renamed = dict(labels)
    for method, chosen in subset_layers(layers).items():
        total = len(GAIA_FAMILIES[method].layers(evaluation))
        renamed[method] = f"{labels.get(method, method)} ({len(chosen)} of {total} layers, {TUNED_ON_TEST})"
    return renamed


def view_scores_table(evaluation, layers: Mapping[str, Sequence[str] | None]) -> pd.DataFrame:
    """The evaluation's score table as the screen shows it: each GAIA method on a layer subset
    rescored over it, with a ``<method>_layers`` column naming the subset on every row."""
    table = evaluation.scores.copy()
    for method, chosen in subset_layers(layers).items():
        if method not in table.columns:
            continue
        column = np.empty(len(table), dtype=float)
        for name in dataset_names(evaluation):
            rows = (table["dataset"] == name).to_numpy()
            column[rows] = method_scores(evaluation, method, name, chosen)
        table[method] = column
        table.insert(table.columns.get_loc(method) + 1, f"{method}_layers", " ".join(chosen))
    return table


def view_metrics_json(evaluation, metrics: pd.DataFrame, layers: Mapping[str, Sequence[str] | None]) -> dict:
    """:meth:`Evaluation.metrics_json`'s schema holding ``metrics`` (:func:`view_metrics`, GAIA on
    its layer subsets), plus ``layer_subsets``: each subset used ({method: [layers]}, empty when
    every method uses all its layers) and ``layer_subsets_note`` saying they were chosen on the
    evaluation's own OOD sets."""
    methods: dict[str, dict] = {}
    for row in metrics.to_dict("records"):
        methods.setdefault(row["method"], {})[row["ood_set"]] = {
            k: row[k] for k in ("fpr95", "auroc", "aupr_in", "aupr_out", "detection_error")}
    subsets = subset_layers(layers)
    result = {"methods": methods, "layer_subsets": subsets, "config": evaluation.config.to_dict()}
    if subsets:
        result["layer_subsets_note"] = (f"{', '.join(subsets)} scored on a layer subset chosen on this evaluation's "
                                        f"own OOD sets ({TUNED_ON_TEST}): not a held-out result")
    return result
