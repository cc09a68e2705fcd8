"""Tests of gaia_viz.metrics: hand-computed cases, sklearn agreement, degenerate inputs."""

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from sklearn.metrics import average_precision_score, roc_auc_score, roc_curve

from gaia_viz import metrics as M
from gaia_viz.errors import MetricInputError

# Integer-valued floats so ties happen often.
scores_list = st.lists(st.integers(-6, 6).map(float), min_size=1, max_size=40)
real_list = st.lists(
    st.floats(-1e6, 1e6, allow_nan=False, allow_infinity=False), min_size=1, max_size=40
)


def _sklearn_reference(id_scores, ood_scores):
    id_scores, ood_scores = np.asarray(id_scores, float), np.asarray(ood_scores, float)
    y = np.r_[np.zeros(id_scores.size), np.ones(ood_scores.size)]
    s = np.r_[id_scores, ood_scores]
    fpr, tpr, _ = roc_curve(y, s)
    return {
        "auroc": roc_auc_score(y, s),
        "aupr_out": average_precision_score(y, s),
        "aupr_in": average_precision_score(1 - y, -s),
        "detection_error": float(np.min(0.5 * fpr + 0.5 * (1 - tpr))),
    }


# ----------------------------------------------------------------- hand-computed cases


def test_threshold_at_tpr_is_ceil_rank_id_score():
    ids = np.arange(1.0, 21.0)  # 1..20
    # 95 % of 20 = 19 samples -> the 19th smallest score.
    assert M.threshold_at_tpr(ids, 0.95) == 19.0
    # 90 % of 10 = 9 -> 9th smallest of 1..10 (guards 0.9 * 10 = 9.000000000000002).
    assert M.threshold_at_tpr(np.arange(1.0, 11.0), 0.9) == 9.0
    # 95 % of 10 = 9.5 -> need 10 samples -> the largest.
    assert M.threshold_at_tpr(np.arange(1.0, 11.0), 0.95) == 10.0
    assert M.threshold_at_tpr([5.0], 0.95) == 5.0


def test_fpr95_hand_computed():
    ids = np.arange(1.0, 21.0)  # threshold 19
    ood = np.array([0.0, 10.0, 19.0, 19.5, 25.0])  # accepted (<= 19): 0, 10, 19 -> 3/5
    assert M.fpr_at_tpr(ids, ood) == pytest.approx(0.6)
    assert M.evaluate_scores(ids, ood)["fpr95"] == pytest.approx(0.6)


def test_auroc_hand_computed_with_tie():
    # Pairs (ood > id): ood=2 beats id 1 (1), ties id 2 (0.5); ood=4 beats 1, 2, 3 (3).
    # Total 4.5 of 3 * 2 = 6 pairs.
    ids, ood = [1.0, 2.0, 3.0], [2.0, 4.0]
    assert M.auroc(ids, ood) == pytest.approx(4.5 / 6)


def test_aupr_hand_computed():
    ids, ood = [1.0, 2.0, 3.0], [2.5, 4.0]
    # OOD positive, descending: 4(o) P=1, 3(i), 2.5(o) P=2/3 -> AP = 0.5*1 + 0.5*2/3.
    assert M.aupr_out(ids, ood) == pytest.approx(0.5 + 1 / 3)
    # ID positive by -score, ascending: 1(i) P=1, 2(i) P=1, 2.5(o), 3(i) P=3/4.
    assert M.aupr_in(ids, ood) == pytest.approx((1 + 1 + 0.75) / 3)


def test_detection_error_hand_computed():
    ids, ood = [1.0, 2.0, 3.0, 4.0], [3.5, 5.0]
    # Threshold 3 (accept <= 3): 1 - TPR = 1/4, FPR = 0 -> 0.125; threshold 4: 0 + 0.5*0.5 = 0.25.
    assert M.detection_error(ids, ood) == pytest.approx(0.125)


def test_perfect_separation():
    r = M.evaluate_scores([0.0, 1.0, 2.0], [3.0, 4.0])
    assert r == {"fpr95": 0.0, "auroc": 1.0, "aupr_in": 1.0, "aupr_out": 1.0, "detection_error": 0.0}


def test_reversed_separation():
    r = M.evaluate_scores([3.0, 4.0], [0.0, 1.0])
    assert r["auroc"] == 0.0
    assert r["fpr95"] == 1.0
    assert r["detection_error"] == 0.5


def test_constant_scores_are_defined():
    r = M.evaluate_scores(np.full(6, 2.0), np.full(4, 2.0))
    assert r["auroc"] == 0.5
    assert r["fpr95"] == 1.0
    assert r["detection_error"] == 0.5
    assert r["aupr_in"] == pytest.approx(0.6)
    assert r["aupr_out"] == pytest.approx(0.4)
    assert M.threshold_at_tpr(np.full(6, 2.0)) == 2.0


def test_confusion_at_threshold_sides():
    ids, ood = [0.0, 1.0, 2.0, 3.0], [1.5, 2.5, 4.0]
    c = M.confusion_at_threshold(ids, ood, threshold=2.0)
    # flagged = score > 2: OOD 2.5, 4.0 (tp=2), ID 3.0 (fp=1).
    assert (c["tp"], c["fn"], c["fp"], c["tn"]) == (2, 1, 1, 3)
    assert c["tpr"] == pytest.approx(2 / 3)
    assert c["fpr"] == pytest.approx(1 / 4)
    assert c["precision"] == pytest.approx(2 / 3)
    assert c["id_accepted"] == pytest.approx(3 / 4)
    assert c["ood_accepted"] == pytest.approx(1 / 3)
    # Score equal to the threshold is accepted, as in threshold_at_tpr.
    assert M.confusion_at_threshold([2.0], [2.0], 2.0)["tp"] == 0
    assert M.confusion_at_threshold([0.0], [1.0], 5.0)["precision"] == 0.0


def test_confusion_matches_fpr95_at_its_threshold():
    rng = np.random.default_rng(3)
    ids, ood = rng.normal(size=500), rng.normal(1.0, size=300)
    t = M.threshold_at_tpr(ids)
    c = M.confusion_at_threshold(ids, ood, t)
    assert c["ood_accepted"] == pytest.approx(M.fpr_at_tpr(ids, ood))
    assert c["id_accepted"] >= 0.95


def test_roc_points_shape_and_thinning():
    rng = np.random.default_rng(0)
    ids, ood = rng.normal(size=2000), rng.normal(1.0, size=1500)
    fpr, tpr, thr = M.roc_points(ids, ood, max_points=100)
    assert len(fpr) == len(tpr) == len(thr) <= 101
    assert (fpr[0], tpr[0], fpr[-1], tpr[-1]) == (0.0, 0.0, 1.0, 1.0)
    assert thr[0] == -np.inf and np.all(np.diff(thr) > 0)
    assert np.all(np.diff(fpr) >= 0) and np.all(np.diff(tpr) >= 0)
    # The FPR95 operating point is on the curve.
    k = np.flatnonzero(tpr >= 0.95)[0]
    assert fpr[k] == pytest.approx(M.fpr_at_tpr(ids, ood))
    assert np.trapezoid(tpr, fpr) == pytest.approx(M.auroc(ids, ood), abs=5e-3)


def test_roc_points_full_curve_area_is_auroc():
    ids, ood = [1.0, 2.0, 3.0], [2.0, 4.0]
    fpr, tpr, thr = M.roc_points(ids, ood)
    np.testing.assert_array_equal(thr, [-np.inf, 1.0, 2.0, 3.0, 4.0])
    np.testing.assert_allclose(tpr, [0, 1 / 3, 2 / 3, 1, 1])
    np.testing.assert_allclose(fpr, [0, 0, 0.5, 0.5, 1])
    # Area under (FPR=OOD accepted, TPR=ID accepted) is P(id < ood) + ties/2 = AUROC.
    assert np.trapezoid(tpr, fpr) == pytest.approx(M.auroc(ids, ood))


# ----------------------------------------------------------------- degenerate inputs


@pytest.mark.parametrize("fn", [M.auroc, M.aupr_in, M.aupr_out, M.detection_error, M.fpr_at_tpr,
                                M.evaluate_scores])
def test_empty_side_refused(fn):
    with pytest.raises(MetricInputError, match="id_scores: no scores"):
        fn([], [1.0])
    with pytest.raises(MetricInputError, match="ood_scores: no scores"):
        fn([1.0], np.array([]))


def test_non_finite_refused_with_count():
    with pytest.raises(MetricInputError, match=r"2 of 4 scores are not finite \(1 NaN, 1 inf\)"):
        M.evaluate_scores([0.0, np.nan, np.inf, 1.0], [1.0])
    with pytest.raises(MetricInputError, match="ood_scores: 1 of 2"):
        M.fpr_at_tpr([0.0], [1.0, -np.inf])
    with pytest.raises(MetricInputError):
        M.confusion_at_threshold([0.0], [np.nan], 0.0)


def test_finite_or_raise():
    out = M.finite_or_raise([1, 2, 3], "x")
    assert out.dtype == np.float64 and out.shape == (3,)
    assert M.finite_or_raise(4.0).shape == (1,)
    with pytest.raises(MetricInputError, match="1-D"):
        M.finite_or_raise(np.zeros((2, 2)), "x")
    with pytest.raises(MetricInputError, match="cannot be read"):
        M.finite_or_raise(["a"], "x")


def test_bad_tpr_refused():
    for bad in (0.0, -0.1, 1.5):
        with pytest.raises(MetricInputError, match="tpr"):
            M.threshold_at_tpr([1.0, 2.0], bad)
    assert M.threshold_at_tpr([1.0, 2.0], 1.0) == 2.0


def test_accepts_torch_tensors():
    torch = pytest.importorskip("torch")
    r = M.evaluate_scores(torch.tensor([0.0, 1.0]), torch.tensor([2.0, 3.0]))
    assert r["auroc"] == 1.0


# ----------------------------------------------------------------- histograms


def test_shared_edges_and_histogram():
    a, b = np.array([0.0, 1.0, 2.0]), np.array([4.0, np.nan])
    edges = M.shared_edges([a, b, []], bins=4)
    np.testing.assert_allclose(edges, [0, 1, 2, 3, 4])
    np.testing.assert_array_equal(M.binned_histogram(a, edges), [1, 1, 1, 0])
    np.testing.assert_array_equal(M.binned_histogram([4.0], edges), [0, 0, 0, 1])
    # Out-of-range values land in the end bins; fractions sum to 1.
    np.testing.assert_array_equal(M.binned_histogram([-5.0, 9.0], edges), [1, 0, 0, 1])
    np.testing.assert_allclose(M.binned_histogram(a, edges, normalize=True), [1 / 3] * 3 + [0])


def test_shared_edges_constant_and_empty():
    edges = M.shared_edges([np.full(5, 3.0), [3.0]], bins=10)
    assert edges.size == 11 and edges[0] == 2.5 and edges[-1] == 3.5
    assert M.binned_histogram(np.full(5, 3.0), edges).sum() == 5
    with pytest.raises(MetricInputError, match="no finite scores"):
        M.shared_edges([[], [np.nan]])
    with pytest.raises(MetricInputError, match="edges"):
        M.binned_histogram([1.0], [1.0, 1.0])


# ----------------------------------------------------------------- properties


@settings(max_examples=150, deadline=None)
@given(scores_list, scores_list)
def test_matches_sklearn_with_ties(ids, ood):
    got = M.evaluate_scores(ids, ood)
    for key, value in _sklearn_reference(ids, ood).items():
        assert got[key] == pytest.approx(value, abs=1e-12), key


@settings(max_examples=100, deadline=None)
@given(real_list, real_list)
def test_auroc_matches_sklearn_real_valued(ids, ood):
    y = np.r_[np.zeros(len(ids)), np.ones(len(ood))]
    assert M.auroc(ids, ood) == pytest.approx(roc_auc_score(y, np.r_[ids, ood]), abs=1e-12)


@settings(max_examples=100, deadline=None)
@given(scores_list, scores_list, st.floats(0.0, 20.0))
def test_fpr95_monotone_under_ood_shift(ids, ood, shift):
    before = M.fpr_at_tpr(ids, ood)
    after = M.fpr_at_tpr(ids, np.asarray(ood) + shift)
    assert after <= before


@settings(max_examples=100, deadline=None)
@given(real_list, st.floats(0.01, 1.0))
def test_threshold_accepts_at_least_tpr_and_is_smallest(ids, tpr):
    ids = np.asarray(ids)
    t = M.threshold_at_tpr(ids, tpr)
    assert t in ids
    assert np.mean(ids <= t) >= tpr - 1e-12
    below = ids[ids < t]
    if below.size:
        assert np.mean(ids <= below.max()) < tpr


@settings(max_examples=100, deadline=None)
@given(scores_list, scores_list)
def test_fpr_consistent_with_definition(ids, ood):
    t = M.threshold_at_tpr(ids)
    assert M.evaluate_scores(ids, ood)["fpr95"] == pytest.approx(np.mean(np.asarray(ood) <= t))
    assert math.isclose(M.fpr_at_tpr(ids, ood), np.mean(np.asarray(ood) <= t))


def test_bootstrap_intervals_cover_the_estimate_and_are_seeded():
    from gaia_viz.metrics import auroc, bootstrap_intervals, fpr_at_tpr

    rng = np.random.default_rng(0)
    ids, ood = rng.normal(0, 1, 400), rng.normal(1.5, 1, 300)
    intervals = bootstrap_intervals(ids, ood, n_resamples=300, seed=7)
    low, high = intervals["auroc"]
    assert low < auroc(ids, ood) < high and high - low < 0.1
    low, high = intervals["fpr95"]
    assert low <= fpr_at_tpr(ids, ood) <= high
    assert bootstrap_intervals(ids, ood, n_resamples=300, seed=7) == intervals
    assert bootstrap_intervals(ids, ood, n_resamples=300, seed=8) != intervals
    narrow = bootstrap_intervals(np.tile(ids, 10), np.tile(ood, 10), n_resamples=300, seed=7)["auroc"]
    assert narrow[1] - narrow[0] < intervals["auroc"][1] - intervals["auroc"][0]  # more samples, tighter
    separated = bootstrap_intervals([0.0, 0.1], [5.0, 6.0], n_resamples=20)
    assert separated["auroc"] == (1.0, 1.0) and separated["fpr95"] == (0.0, 0.0)
    with pytest.raises(MetricInputError):
        bootstrap_intervals(ids, ood, n_resamples=1)
    with pytest.raises(MetricInputError):
        bootstrap_intervals(ids, ood, confidence=95)
