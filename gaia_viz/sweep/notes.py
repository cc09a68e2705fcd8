"""The notes a sweep records in ``RunConfig.notes``, one per cause, each judged on the whole
sets: GAIA's layers being a fallback, gradients without exact zeros (or zero everywhere),
scores that are not finite, an ID accuracy no better than chance, fit images without labels."""

from __future__ import annotations

from typing import Mapping

import numpy as np
import torch
from torch import nn

from gaia_viz.detectors import Detector
from gaia_viz.forward import ForwardNeeds
from gaia_viz.model_state import model_device
from gaia_viz.sweep.checks import ResolvedLayers

ACCURACY_NOTE = "ID accuracy"
CHANCE_MIN_LABELLED = 30  # fewer labelled images cannot tell a model at chance from a weak one


def layer_notes(model: nn.Module, sample: torch.Tensor, needs: ForwardNeeds) -> list[str]:
    """The note when GAIA's default layers for ``needs`` are a fallback (a model without
    normalisation layers: its convolution outputs), else none."""
    from gaia_viz.gaia import model_layout

    if not (needs.gaia_z or needs.gaia_a):
        return []
    layout = model_layout(model, sample.unsqueeze(0).to(model_device(model)))
    defaults = [label for label, used in (
        ("GAIA-Z", needs.gaia_z and needs.zero_layers is None),
        ("GAIA-A", needs.gaia_a and needs.inner_layers is None and layout.declared.inner_layers is None)) if used]
    note = layout.conv_fallback_note(" and ".join(defaults)) if defaults else None
    return [note] if note else []


def exact_zero_notes(model: nn.Module, results: Mapping[str, dict], layers: ResolvedLayers) -> list[str]:
    """One note when GAIA-Z's gradients hold almost no exact zeros on some data sets, and one
    when some images' gradients are exactly zero everywhere (the opposite cause;
    :mod:`gaia_viz.gaia.zeros`), judged on each whole set from its cached per-channel ratios."""
    from gaia_viz.gaia.zeros import (
        activation_kinds,
        all_zero_note,
        all_zero_samples,
        lacks_exact_zeros,
        mean_exact_zero_fraction,
        no_exact_zeros_note,
    )

    if not layers.zero:
        return []
    notes = []
    ratios = {name: arrays["nonzero_ratio"] for name, arrays in results.items() if "nonzero_ratio" in arrays}
    all_zero = {name: int(all_zero_samples(r).sum()) for name, r in ratios.items()}
    if any(all_zero.values()):  # the opposite cause: gradients that are zero everywhere
        notes.append(all_zero_note(sum(all_zero.values()), sum(len(r) for r in ratios.values()),
                                   ", ".join(f"{count} of {len(ratios[name])} on {name}"
                                             for name, count in all_zero.items() if count)))
    fractions = {name: mean_exact_zero_fraction(r, layers.zero_channels) for name, r in ratios.items()}
    lacking = [name for name, fraction in fractions.items() if fraction is not None and lacks_exact_zeros(fraction)]
    if lacking:
        notes.append(no_exact_zeros_note(max(fractions[n] for n in lacking), activation_kinds(model),
                                         where=", ".join(lacking)))
    return notes


def non_finite_notes(detectors: Mapping[str, Detector], results: Mapping[str, dict]) -> list[str]:
    """One note per method whose scores are not all finite: how many, on which sets and why
    (:meth:`Detector.explain_non_finite` on just those samples), judged on the whole sets."""
    from gaia_viz.notes import non_finite_note

    notes = []
    for method, detector in detectors.items():
        by_set = {name: np.asarray(arrays[method], dtype=np.float64) for name, arrays in results.items()}
        if all(np.isfinite(scores).all() for scores in by_set.values()):
            continue
        bad = {name: ~np.isfinite(scores) for name, scores in by_set.items()}
        keys = [k for k, v in next(iter(results.values())).items()
                if isinstance(v, np.ndarray) and v.ndim >= 1 and len(v) == len(bad[next(iter(results))])]
        arrays = {k: np.concatenate([np.asarray(results[n][k])[bad[n]] for n in results]) for k in keys}
        notes.append(non_finite_note(detector.label, by_set, detector.explain_non_finite(arrays)))
    return notes


def fit_label_notes(detectors: Mapping[str, Detector], fit_set) -> list[str]:
    """One note per method that fits per class when some fit images have no label (-1):
    judged on the fit set's labels, so a rerun that finds its scores cached says it too."""
    from gaia_viz.notes import unlabelled_fit_note

    labels = getattr(fit_set, "labels", None)
    if labels is None:
        return []
    labels = np.asarray(labels)
    return [note for detector in detectors.values() if detector.uses_fit_labels
            if (note := unlabelled_fit_note(detector.label, int((labels < 0).sum()), labels.size,
                                            getattr(fit_set, "name", "the fit set")))]


def accuracy_notes(id_arrays: Mapping[str, np.ndarray], num_classes: int, id_name: str) -> list[str]:
    """A note when the ID accuracy is not clearly above chance (1 / classes): within three
    binomial standard deviations of it, on at least :data:`CHANCE_MIN_LABELLED` labelled
    images. The usual cause is a label order that is not the model's (BiT checkpoints and a
    folder's sorted class names), which no OOD score shows."""
    labels, predictions = np.asarray(id_arrays["label"]), np.asarray(id_arrays["prediction"])
    labelled = labels >= 0
    n = int(labelled.sum())
    if n < CHANCE_MIN_LABELLED or num_classes < 2:
        return []
    accuracy = float((labels[labelled] == predictions[labelled]).mean())
    chance = 1.0 / num_classes
    if accuracy > chance + 3 * np.sqrt(chance * (1 - chance) / n):
        return []
    return [f"{ACCURACY_NOTE} is {100 * accuracy:.2f} % on the {n} labelled images of {id_name}, no better than "
            f"chance for {num_classes} classes ({100 * chance:.2f} %): the labels may not follow the model's class "
            "order (a folder's classes are sorted by name; a BiT or other ImageNet checkpoint needs the class list "
            "it was trained with), or the checkpoint or the preprocessing does not fit the model. The OOD scores "
            "use no labels, but they are those of a model that does not recognise the ID set."]


__all__ = ["ACCURACY_NOTE", "CHANCE_MIN_LABELLED", "accuracy_notes", "exact_zero_notes", "fit_label_notes",
           "layer_notes", "non_finite_notes"]
