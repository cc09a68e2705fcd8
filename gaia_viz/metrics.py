"""Threshold-free and threshold-based metrics for OOD detection scores.

Conventions used throughout (they match the GAIA paper and most OOD papers):

* A *score* is an OOD score: **higher means more OOD**.
* A threshold ``t`` **accepts** a sample as in-distribution when ``score <= t`` and
  **flags** it as OOD when ``score > t``.
* For FPR95 and the ROC curve returned by :func:`roc_points`, ID is the positive class:
  ``TPR = P(id_score <= t)`` (ID accepted) and ``FPR = P(ood_score <= t)`` (OOD wrongly
  accepted).  FPR95 is the FPR at the threshold that accepts 95 % of the ID samples.
* :func:`confusion_at_threshold` instead reports the detector's view where the positive
  class is "flagged as OOD" (see its docstring), because that is what a user inspecting a
  threshold slider counts.

All curve metrics are computed from one sort of the pooled scores
(:func:`_pooled_counts`), which makes :func:`evaluate_scores` several times faster than
calling the equivalent scikit-learn functions one by one; the tests check every number
against ``sklearn.metrics`` (``roc_auc_score``, ``average_precision_score``,
``roc_curve``).
"""

from __future__ import annotations

import math
from typing import Mapping, NamedTuple, Sequence

import numpy as np

from gaia_viz.errors import MetricInputError

DEFAULT_TPR = 0.95
DEFAULT_BINS = 60
DEFAULT_ROC_POINTS = 512


def finite_or_raise(scores, name: str = "scores") -> np.ndarray:
    """Return ``scores`` as a 1-D float64 array, refusing empty or non-finite input.

    Accepts anything ``np.asarray`` understands (lists, numpy arrays, CPU tensors).
    Raises :class:`MetricInputError` when the array is empty, has more than one
    dimension, or holds NaN/inf values (the message says how many).
    """
    try:
        arr = np.asarray(scores, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise MetricInputError(f"{name}: cannot be read as numbers ({exc}).") from exc
    if arr.ndim == 0:
        arr = arr.reshape(1)
    if arr.ndim != 1:
        raise MetricInputError(
            f"{name}: expected a 1-D array of per-sample scores, got shape {arr.shape}; "
            "flatten it or pass one score per sample."
        )
    if arr.size == 0:
        raise MetricInputError(f"{name}: no scores given; each side needs at least one sample.")
    bad = ~np.isfinite(arr)
    n_bad = int(bad.sum())
    if n_bad:
        n_nan = int(np.isnan(arr).sum())
        raise MetricInputError(
            f"{name}: {n_bad} of {arr.size} scores are not finite ({n_nan} NaN, "
            f"{n_bad - n_nan} inf); drop those samples or fix the detector before scoring."
        )
    return arr


def _check_rate(tpr: float) -> float:
    tpr = float(tpr)
    if not 0.0 < tpr <= 1.0:
        raise MetricInputError(f"tpr must be in (0, 1], got {tpr}.")
    return tpr


def _rank_needed(n: int, tpr: float) -> int:
    """Smallest count k with k / n >= tpr (guarding against 0.95*20 = 18.999...)."""
    return max(1, min(n, math.ceil(tpr * n - 1e-9)))


def threshold_at_tpr(id_scores, tpr: float = DEFAULT_TPR) -> float:
    """Smallest threshold ``t`` with ``mean(id_scores <= t) >= tpr``.

    ``t`` is always one of the ID scores: the ``ceil(tpr * n)``-th smallest one.
    Any smaller ``t`` accepts fewer than ``tpr * n`` ID samples; ties at ``t`` may make
    the accepted fraction exceed ``tpr``.
    """
    ids = np.sort(finite_or_raise(id_scores, "id_scores"))
    k = _rank_needed(ids.size, _check_rate(tpr))
    return float(ids[k - 1])


def fpr_at_tpr(id_scores, ood_scores, tpr: float = DEFAULT_TPR) -> float:
    """Fraction of OOD samples accepted (``score <= t``) at ``t = threshold_at_tpr(id, tpr)``.

    With ``tpr=0.95`` this is FPR95 (lower is better; 1.0 = every OOD sample accepted).
    """
    t = threshold_at_tpr(id_scores, tpr)
    ood = finite_or_raise(ood_scores, "ood_scores")
    return float(np.count_nonzero(ood <= t) / ood.size)


class _PooledCounts(NamedTuple):
    """Cumulative counts at each distinct pooled score value (ascending).

    ``id_le[k]`` / ``ood_le[k]``: number of ID / OOD scores ``<= values[k]``;
    ``id_eq[k]`` / ``ood_eq[k]``: number exactly equal to ``values[k]``.
    """

    values: np.ndarray
    id_le: np.ndarray
    ood_le: np.ndarray
    id_eq: np.ndarray
    ood_eq: np.ndarray
    n_id: int
    n_ood: int


def _pooled_counts(id_scores, ood_scores) -> _PooledCounts:
    ids = np.sort(finite_or_raise(id_scores, "id_scores"))
    ood = np.sort(finite_or_raise(ood_scores, "ood_scores"))
    pooled = np.concatenate([ids, ood])
    # Two presorted runs: a stable (tim/radix) sort merges them in about linear time.
    order = np.argsort(pooled, kind="stable")
    values = pooled[order]
    is_ood = order >= ids.size
    ood_cum = np.cumsum(is_ood, dtype=np.int64)
    id_cum = np.arange(1, values.size + 1, dtype=np.int64) - ood_cum
    last_of_value = np.flatnonzero(np.diff(values) != 0)
    last_of_value = np.append(last_of_value, values.size - 1)
    id_le = id_cum[last_of_value]
    ood_le = ood_cum[last_of_value]
    id_eq = np.diff(id_le, prepend=0)
    ood_eq = np.diff(ood_le, prepend=0)
    return _PooledCounts(values[last_of_value], id_le, ood_le, id_eq, ood_eq, ids.size, ood.size)


def _auroc(c: _PooledCounts) -> float:
    # Trapezoids under (FPR, TPR) = (OOD accepted, ID accepted): each ID/OOD pair counts 1
    # when the OOD score is higher and 1/2 when tied (Mann-Whitney U / (n_id * n_ood)).
    ood_below = c.ood_le - c.ood_eq
    pairs = np.dot(c.id_eq.astype(np.float64), ood_below + 0.5 * c.ood_eq)
    return float(1.0 - pairs / (c.n_id * c.n_ood))


def _aupr_in(c: _PooledCounts) -> float:
    # ID positive, ranked by -score: at value v the "predicted ID" set is {score <= v}.
    precision = c.id_le / (c.id_le + c.ood_le)
    return float(np.dot(c.id_eq, precision) / c.n_id)


def _aupr_out(c: _PooledCounts) -> float:
    # OOD positive, ranked by score: at value v the "predicted OOD" set is {score >= v}.
    ood_ge = c.n_ood - (c.ood_le - c.ood_eq)
    id_ge = c.n_id - (c.id_le - c.id_eq)
    precision = ood_ge / (ood_ge + id_ge)
    return float(np.dot(c.ood_eq, precision) / c.n_ood)


def _detection_error(c: _PooledCounts) -> float:
    # Thresholds between distinct values, plus "accept nothing" (error 0.5).
    err = 0.5 * (1.0 - c.id_le / c.n_id) + 0.5 * (c.ood_le / c.n_ood)
    return float(min(0.5, err.min()))


def _fpr_at_tpr_counts(c: _PooledCounts, tpr: float) -> float:
    k = _rank_needed(c.n_id, _check_rate(tpr))
    idx = int(np.searchsorted(c.id_le, k, side="left"))
    return float(c.ood_le[idx] / c.n_ood)


def auroc(id_scores, ood_scores) -> float:
    """Area under the ROC curve: ``P(ood_score > id_score) + 0.5 * P(tie)``.

    Equals ``sklearn.metrics.roc_auc_score`` with OOD as the positive class. 1.0 = perfect
    separation, 0.5 = chance (e.g. constant scores).
    """
    return _auroc(_pooled_counts(id_scores, ood_scores))


def aupr_in(id_scores, ood_scores) -> float:
    """Average precision with ID as positive class ranked by ``-score``.

    ``AP = sum_n (R_n - R_{n-1}) P_n`` over distinct thresholds, as in
    ``sklearn.metrics.average_precision_score(is_id, -score)``.
    """
    return _aupr_in(_pooled_counts(id_scores, ood_scores))


def aupr_out(id_scores, ood_scores) -> float:
    """Average precision with OOD as positive class ranked by ``score``.

    As ``sklearn.metrics.average_precision_score(is_ood, score)``.
    """
    return _aupr_out(_pooled_counts(id_scores, ood_scores))


def detection_error(id_scores, ood_scores) -> float:
    """``min_t 0.5 * (1 - TPR(t)) + 0.5 * FPR(t)`` with TPR = ID accepted, FPR = OOD accepted.

    Equal class priors; 0.0 = perfect, 0.5 = chance (attainable by accepting everything).
    """
    return _detection_error(_pooled_counts(id_scores, ood_scores))


def evaluate_scores(id_scores, ood_scores, tpr: float = DEFAULT_TPR) -> dict[str, float]:
    """All standard metrics from one sort: ``{fpr95, auroc, aupr_in, aupr_out, detection_error}``.

    ``fpr95`` is :func:`fpr_at_tpr` at ``tpr`` (0.95 by default; the key keeps its name).
    Constant (all-tied) scores give auroc 0.5, fpr95 1.0, detection_error 0.5,
    aupr_in = n_id / n, aupr_out = n_ood / n.
    """
    c = _pooled_counts(id_scores, ood_scores)
    return {
        "fpr95": _fpr_at_tpr_counts(c, tpr),
        "auroc": _auroc(c),
        "aupr_in": _aupr_in(c),
        "aupr_out": _aupr_out(c),
        "detection_error": _detection_error(c),
    }


METRIC_NAMES = ("fpr95", "auroc", "aupr_in", "aupr_out", "detection_error")


def metrics_rows(method: str, id_scores, ood_scores_by_set: Mapping[str, Sequence[float]],
                 tpr: float = DEFAULT_TPR, non_finite: str = "raise") -> list[dict]:
    """One row ``{method, ood_set, fpr95, auroc, aupr_in, aupr_out, detection_error}`` per OOD
    set, plus an ``ood_set="average"`` row (the mean over the sets) when there are several.

    ``non_finite="nan"``: a set whose scores (or the ID scores) are not all finite gets NaN
    metrics, and so does the average, instead of a MetricInputError (the caller says why,
    e.g. an evaluation's ``config.notes``)."""
    if non_finite not in ("raise", "nan"):
        raise MetricInputError(f"non_finite must be 'raise' or 'nan', got {non_finite!r}")
    id_finite = bool(np.isfinite(np.asarray(id_scores, dtype=np.float64)).all())

    def metrics(scores) -> dict:
        if non_finite == "nan" and not (id_finite and np.isfinite(np.asarray(scores, dtype=np.float64)).all()):
            return dict.fromkeys(METRIC_NAMES, float("nan"))
        return evaluate_scores(id_scores, scores, tpr=tpr)

    rows = [dict(method=method, ood_set=name, **metrics(scores)) for name, scores in ood_scores_by_set.items()]
    if len(rows) > 1:
        rows.append(dict(method=method, ood_set="average",
                         **{k: float(np.mean([row[k] for row in rows])) for k in METRIC_NAMES}))
    return rows


DEFAULT_BOOTSTRAP_RESAMPLES = 200


def bootstrap_intervals(id_scores, ood_scores, n_resamples: int = DEFAULT_BOOTSTRAP_RESAMPLES,
                        confidence: float = 0.95, seed: int = 0,
                        tpr: float = DEFAULT_TPR) -> dict[str, tuple[float, float]]:
    """Percentile-bootstrap intervals of AUROC and FPR95: ``{"auroc": (low, high), "fpr95": (low, high)}``.

    The ID and the OOD scores are resampled independently, with replacement and at their
    own sizes, ``n_resamples`` times from ``numpy.random.default_rng(seed)`` (the same
    seed gives the same interval); each resample is scored with :func:`evaluate_scores`'s
    one-sort metrics and the interval is the central ``confidence`` share of the resampled
    values. It shows how much the numbers move with the sample, not a model's spread.

    >>> ids, ood = [0.1, 0.2, 0.3, 0.4], [0.35, 0.5, 0.6, 0.7]
    >>> low, high = bootstrap_intervals(ids, ood, n_resamples=50)["auroc"]
    >>> 0.5 <= low <= auroc(ids, ood) <= high <= 1.0
    True
    """
    ids = finite_or_raise(id_scores, "id_scores")
    ood = finite_or_raise(ood_scores, "ood_scores")
    if int(n_resamples) < 2:
        raise MetricInputError(f"n_resamples must be at least 2, got {n_resamples}.")
    if not 0.0 < float(confidence) < 1.0:
        raise MetricInputError(f"confidence must be in (0, 1), got {confidence}.")
    rng = np.random.default_rng(seed)
    values = {"auroc": [], "fpr95": []}
    for _ in range(int(n_resamples)):
        c = _pooled_counts(rng.choice(ids, ids.size), rng.choice(ood, ood.size))
        values["auroc"].append(_auroc(c))
        values["fpr95"].append(_fpr_at_tpr_counts(c, tpr))
    tail = 100 * (1 - float(confidence)) / 2
    return {name: (float(np.percentile(v, tail)), float(np.percentile(v, 100 - tail)))
            for name, v in values.items()}


def confusion_at_threshold(id_scores, ood_scores, threshold: float) -> dict[str, float]:
    """Counts and rates when samples with ``score > threshold`` are flagged as OOD.

    Here the **positive class is "flagged OOD"** (the detector's alarm):

    * ``tp``: OOD samples flagged (score > threshold)   ``fn``: OOD samples accepted
    * ``fp``: ID samples flagged (false alarms)          ``tn``: ID samples accepted
    * ``tpr = tp / n_ood`` (OOD caught), ``fpr = fp / n_id`` (ID false alarms),
      ``precision = tp / (tp + fp)`` (0.0 when nothing is flagged, as sklearn's default).

    Also returned for the paper's view: ``id_accepted = tn / n_id`` and
    ``ood_accepted = fn / n_ood`` (the FPR of FPR95).
    """
    ids = finite_or_raise(id_scores, "id_scores")
    ood = finite_or_raise(ood_scores, "ood_scores")
    t = float(threshold)
    if math.isnan(t):
        raise MetricInputError("threshold is NaN; pick a numeric threshold.")
    tp = int(np.count_nonzero(ood > t))
    fp = int(np.count_nonzero(ids > t))
    fn = ood.size - tp
    tn = ids.size - fp
    return {
        "tp": tp,
        "fn": fn,
        "fp": fp,
        "tn": tn,
        "tpr": tp / ood.size,
        "fpr": fp / ids.size,
        "precision": tp / (tp + fp) if tp + fp else 0.0,
        "id_accepted": tn / ids.size,
        "ood_accepted": fn / ood.size,
    }


def roc_points(
    id_scores, ood_scores, max_points: int = DEFAULT_ROC_POINTS
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """ROC curve ``(fpr, tpr, thresholds)`` with ID positive, thinned for plotting.

    Point ``i`` accepts ``score <= thresholds[i]``: ``tpr[i] = P(id <= t)``,
    ``fpr[i] = P(ood <= t)``. Thresholds ascend; the curve starts at (0, 0) with threshold
    ``-inf`` (accept nothing) and ends at (1, 1). At most ``max_points`` points are kept
    (evenly spaced in index, endpoints and the FPR95 operating point always kept);
    the area under these points is :func:`auroc` up to the thinning.
    """
    if max_points < 3:
        raise MetricInputError(f"max_points must be at least 3, got {max_points}.")
    c = _pooled_counts(id_scores, ood_scores)
    thresholds = np.concatenate([[-np.inf], c.values])
    tpr = np.concatenate([[0.0], c.id_le / c.n_id])
    fpr = np.concatenate([[0.0], c.ood_le / c.n_ood])
    if thresholds.size > max_points:
        keep = np.unique(np.linspace(0, thresholds.size - 1, max_points - 1).round().astype(np.int64))
        k95 = 1 + int(np.searchsorted(c.id_le, _rank_needed(c.n_id, DEFAULT_TPR), side="left"))
        keep = np.union1d(keep, [k95])
        thresholds, tpr, fpr = thresholds[keep], tpr[keep], fpr[keep]
    return fpr, tpr, thresholds


def shared_edges(score_arrays: Sequence, bins: int = DEFAULT_BINS) -> np.ndarray:
    """``bins + 1`` equal-width edges spanning all finite values of all arrays.

    Non-finite values and empty arrays are ignored so a histogram can still be drawn;
    when every value is equal the edges span ``value ± 0.5``. Raises
    :class:`MetricInputError` when there is no finite value at all.
    """
    if bins < 1:
        raise MetricInputError(f"bins must be at least 1, got {bins}.")
    lows, highs = [], []
    for arr in score_arrays:
        a = np.asarray(arr, dtype=np.float64).ravel()
        a = a[np.isfinite(a)]
        if a.size:
            lows.append(a.min())
            highs.append(a.max())
    if not lows:
        raise MetricInputError("no finite scores to histogram; score some samples first.")
    lo, hi = float(min(lows)), float(max(highs))
    if hi - lo <= 1e-12 * max(1.0, abs(lo)):
        lo, hi = lo - 0.5, hi + 0.5
    return np.linspace(lo, hi, bins + 1)


def binned_histogram(scores, edges, normalize: bool = False) -> np.ndarray:
    """Counts of ``scores`` in the bins given by ascending ``edges`` (``len(edges) - 1`` bins).

    Values outside ``[edges[0], edges[-1]]`` are counted in the first/last bin so the
    counts always sum to ``len(scores)``. With ``normalize=True`` returns fractions
    (sum 1), which makes ID and OOD sets of different sizes comparable.
    """
    a = finite_or_raise(scores, "scores")
    e = np.asarray(edges, dtype=np.float64)
    if e.ndim != 1 or e.size < 2 or not np.all(np.isfinite(e)) or np.any(np.diff(e) <= 0):
        raise MetricInputError(
            "edges must be a 1-D, finite, strictly increasing array with at least 2 values; "
            "build them with shared_edges()."
        )
    counts, _ = np.histogram(np.clip(a, e[0], e[-1]), bins=e)
    if normalize:
        return counts / a.size
    return counts
