"""Notes about the numbers: one line per cause, in an evaluation's ``config.notes``.

The CLI prints each as one ``warning:`` line and the app shows it next to the numbers it is
about. A note about one method starts with that method's label and a colon ("GAIA-A: ...");
:func:`notes_about` finds them. Here: the notes for scores that are not finite (inf/NaN) and
for fit images without labels.
"""

from __future__ import annotations

from typing import Mapping, Sequence

import numpy as np

NON_FINITE = "scores are not finite"


def non_finite_note(label: str, scores_by_set: Mapping[str, np.ndarray], why: str) -> str | None:
    """``"GAIA-A: 4 of 4 scores are not finite (2 NaN, 2 inf; 2 of 2 on id, 2 of 2 on far): why;
    ..."``, or None when every score is finite. ``scores_by_set``: ``{data set: scores}``."""
    arrays = {name: np.asarray(scores, dtype=np.float64).reshape(-1) for name, scores in scores_by_set.items()}
    bad = {name: int((~np.isfinite(a)).sum()) for name, a in arrays.items()}
    if not sum(bad.values()):
        return None
    every = np.concatenate(list(arrays.values()))
    where = ", ".join(f"{count} of {arrays[name].size} on {name}" for name, count in bad.items() if count)
    return (f"{label}: {sum(bad.values())} of {every.size} {NON_FINITE} ({int(np.isnan(every).sum())} NaN, "
            f"{int(np.isinf(every).sum())} inf; {where}): {why}. Its metrics are n/a where these scores "
            "would enter them")


def unlabelled_fit_note(label: str, unlabelled: int, total: int, fit_name: str) -> str | None:
    """``"Mahalanobis: 300 of 300 fit images (dtd) have no label: ..."``, or None when every fit
    image has one. For a method that fits per class (its class means)."""
    if not unlabelled:
        return None
    return (f"{label}: {unlabelled:,} of {total:,} fit images ({fit_name}) have no label: the model's predicted "
            "class stands in for it in the class means, so its numbers rest on the model's own mistakes "
            "(fit on a labelled ID training set, e.g. folders named by class)")


def notes_about(notes: Sequence[str], label: str) -> list[str]:
    """The notes of ``notes`` about the method labelled ``label``: those whose text before the
    first colon names it ("GAIA-A: ...", "GAIA-Z and GAIA-A: ...")."""
    found = []
    for note in notes:
        head, colon, _ = note.partition(":")
        if colon and label in [part.strip() for part in head.replace(" and ", ",").split(",")]:
            found.append(note)
    return found


__all__ = ["NON_FINITE", "non_finite_note", "notes_about"]
