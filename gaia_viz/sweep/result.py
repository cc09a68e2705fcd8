"""What a sweep returns (:class:`Evaluation`: the score table, per-set arrays and the run
record) and what its readers ask of it (:func:`non_finite_methods`, :func:`gaia_z_note`)."""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Sequence

import numpy as np
import pandas as pd

from gaia_viz.detectors import METHOD_LABELS
from gaia_viz.errors import ModelError
from gaia_viz.metrics import metrics_rows
from gaia_viz.run_config import RunConfig


@dataclass
class Evaluation:
    """The result of one sweep: a score table, per-dataset GAIA arrays and the run record."""

    scores: pd.DataFrame  # dataset, index, path, label, prediction, <one column per method>
    id_name: str
    ood_names: list[str]
    methods: list[str]
    zero_layers: list[str]
    zero_channels: list[int]
    inner_layers: list[str]
    inner_channels: list[int]
    head_layer: str | None
    arrays: dict[str, dict[str, np.ndarray]]  # dataset -> GAIA arrays (partial sums, ...)
    config: RunConfig
    seconds: float = 0.0
    cache_hits: int = 0
    fitted_states: dict = field(default_factory=dict)  # method -> what it fitted (tensors)

    @property
    def dataset_names(self) -> list[str]:
        """The ID set first, then the OOD sets."""
        return [self.id_name, *self.ood_names]

    def method_scores(self, method: str, dataset: str) -> np.ndarray:
        table = self.scores
        return table.loc[table["dataset"] == dataset, method].to_numpy(dtype=np.float64)

    def metrics_table(self, tpr: float = 0.95) -> pd.DataFrame:
        """One row per (method, OOD set) plus an 'average' row per method.

        Columns fpr95 (fraction of OOD accepted at 95 % TPR on ID, lower is better),
        auroc, aupr_in, aupr_out (higher is better), detection_error."""
        rows = []
        for method in self.methods:
            rows += metrics_rows(method, self.method_scores(method, self.id_name),
                                 {ood: self.method_scores(method, ood) for ood in self.ood_names}, tpr=tpr,
                                 non_finite="nan")  # NaN where scores are inf/NaN; config.notes says why
        return pd.DataFrame(rows)

    def metrics_json(self) -> dict:
        """The CLI's schema: {"methods": {method: {ood: {fpr95, auroc, aupr_in, aupr_out}}}, "config"};
        a metric that is undefined (non-finite scores) is null, and ``"undefined"`` holds
        ``{method: why}`` (the note of ``config.notes``)."""
        methods: dict[str, dict] = {}
        for row in self.metrics_table().to_dict("records"):
            methods.setdefault(row["method"], {})[row["ood_set"]] = {
                k: (None if np.isnan(row[k]) else row[k]) for k in ("fpr95", "auroc", "aupr_in", "aupr_out",
                                                                   "detection_error")
            }
        result = {"methods": methods, "config": self.config.to_dict()}
        undefined = non_finite_methods(self)
        if undefined:
            result["undefined"] = undefined
        return result

    def id_accuracy(self) -> float | None:
        rows = self.scores[self.scores["dataset"] == self.id_name]
        labelled = rows[rows["label"] >= 0]
        if labelled.empty:
            return None
        return float((labelled["label"] == labelled["prediction"]).mean())

    def select(self, methods: Sequence[str]) -> "Evaluation":
        """The same evaluation showing only ``methods`` (in that order; ModelError for a
        method it does not hold)."""
        missing = [m for m in methods if m not in self.methods]
        if missing:
            raise ModelError(f"the evaluation has no scores for {', '.join(missing)}")
        dropped = [m for m in self.methods if m not in methods]
        return replace(self, methods=list(methods), scores=self.scores.drop(columns=dropped),
                       config=replace(self.config, methods=list(methods),
                                      method_params={m: self.config.method_params.get(m, {}) for m in methods}),
                       fitted_states={m: s for m, s in self.fitted_states.items() if m in methods})


def non_finite_methods(evaluation: Evaluation) -> dict[str, str]:
    """``{method: note}`` for the methods of ``evaluation`` whose scores are not all finite:
    their metrics are n/a (NaN in :meth:`Evaluation.metrics_table`) and the note says why."""
    from gaia_viz.notes import NON_FINITE, notes_about

    found = {}
    for method in evaluation.methods:
        about = [n for n in notes_about(evaluation.config.notes, METHOD_LABELS.get(method, method)) if NON_FINITE in n]
        if about:
            found[method] = about[0]
    return found


def gaia_z_note(evaluation: Evaluation) -> str | None:
    """The warning to show next to the GAIA-Z numbers of ``evaluation``: the note the sweep
    recorded when its gradients held almost no exact zeros (GAIA-Z is then uninformative);
    None when GAIA-Z is fine or was not computed."""
    from gaia_viz.gaia.zeros import NO_EXACT_ZEROS_NOTE

    if "gaia_z" not in evaluation.methods:
        return None
    return next((note for note in evaluation.config.notes if note.startswith(NO_EXACT_ZEROS_NOTE)), None)


__all__ = ["Evaluation", "gaia_z_note", "non_finite_methods"]
