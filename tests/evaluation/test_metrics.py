"""Metrics against hand-computed numbers; baselines, bootstrap intervals, collapse."""

import math
import time

import numpy as np
import pytest

from attrfit.core.errors import AttrfitError
from attrfit.evaluation.metrics import (
    bootstrap_ci,
    collapsed,
    confusion_matrix,
    head_metrics,
    majority_classes,
    summarize,
)

# Rows 6 and 8 are unlabelled (-1) and must not count, whatever was predicted there.
TARGET = np.array([0, 0, 0, 1, 1, 2, -1, 2, -1, 0])
PRED = np.array([0, 1, 0, 1, 3, 2, 1, 0, 0, 0])
# Labelled rows:  target 0 0 0 1 1 2 2 0
#                 pred   0 1 0 1 3 2 0 0
# accuracy 5/8; recall: class 0 3/4, class 1 1/2, class 2 1/2 (class 3 not in target)
# F1 = 2TP / (2TP + FP + FN): class 0 6/8, class 1 2/4, class 2 2/3, class 3 (predicted
# once, never true) 0 -> macro over 4 classes.


def test_hand_computed_example():
    m = head_metrics(PRED, TARGET, num_classes=5, majority_class=0)
    assert m.n == 8
    assert m.accuracy == pytest.approx(5 / 8)
    assert m.balanced_accuracy == pytest.approx((3 / 4 + 1 / 2 + 1 / 2) / 3)
    assert m.macro_f1 == pytest.approx((6 / 8 + 2 / 4 + 2 / 3 + 0) / 4)
    assert m.majority_accuracy == pytest.approx(4 / 8)
    assert m.pred_top_share == pytest.approx(4 / 8)
    assert head_metrics(PRED, TARGET, 5, majority_class=2).majority_accuracy == 2 / 8


def test_confusion_matrix_by_hand():
    expected = np.array(
        [
            [3, 1, 0, 0],
            [0, 1, 0, 1],
            [1, 0, 1, 0],
            [0, 0, 0, 0],
        ]
    )
    np.testing.assert_array_equal(confusion_matrix(PRED, TARGET, 4), expected)


def test_out_of_range_classes_rejected():
    with pytest.raises(ValueError):
        confusion_matrix(np.array([0, 4]), np.array([0, 1]), 4)


def test_no_labels_gives_nan():
    m = head_metrics(np.array([0, 1]), np.array([-1, -1]), 2, 0)
    assert m.n == 0
    for key in ("accuracy", "balanced_accuracy", "macro_f1", "majority_accuracy", "pred_top_share"):
        assert math.isnan(getattr(m, key)), key
    assert all(math.isnan(v) for v in bootstrap_ci(np.array([0]), np.array([-1]), 2))


def test_perfect_predictions():
    t = np.array([0, 1, 2, 2, 1])
    m = head_metrics(t, t, 3, 2)
    assert m.accuracy == m.balanced_accuracy == m.macro_f1 == 1.0


def test_majority_classes_ties_and_empty_heads():
    labels = np.array(
        [
            [1, 2, -1, 3],
            [0, 2, -1, 3],
            [1, 0, -1, 1],
            [0, 0, -1, -1],
        ]
    )
    # head 0: 0 and 1 tie -> 0; head 1: 0 and 2 tie -> 0; head 2: no labels -> 0; head 3: 3
    assert majority_classes(labels) == [0, 0, 0, 3]
    assert majority_classes(np.zeros((0, 2), dtype=int)) == [0, 0]


def test_summarize_skips_empty_heads():
    good = head_metrics(PRED, TARGET, 4, 0)
    empty = head_metrics(np.array([0]), np.array([-1]), 2, 0)
    perfect = head_metrics(np.array([1, 0]), np.array([1, 0]), 2, 0)
    s = summarize({"a": good, "b": empty, "c": perfect})
    assert set(vars(s)) == {"accuracy", "balanced_accuracy", "majority_accuracy", "macro_f1"}
    assert s.accuracy == pytest.approx((5 / 8 + 1) / 2)
    assert s.majority_accuracy == pytest.approx((4 / 8 + 1 / 2) / 2)
    assert all(math.isnan(v) for v in vars(summarize({"b": empty})).values())


def _noisy_classifier(n, accuracy, k=3, seed=0):
    rng = np.random.default_rng(seed)
    target = rng.integers(0, k, n)
    wrong = (target + rng.integers(1, k, n)) % k
    return np.where(rng.random(n) < accuracy, target, wrong), target


@pytest.mark.parametrize("metric", ["accuracy", "balanced_accuracy", "macro_f1"])
def test_bootstrap_contains_estimate_and_narrows(metric):
    widths = []
    for n in (200, 3000):
        pred, target = _noisy_classifier(n, 0.8, seed=n)
        lo, hi = bootstrap_ci(pred, target, 3, metric=metric, n_boot=500)
        point = getattr(head_metrics(pred, target, 3, 0), metric)
        assert lo < point < hi
        widths.append(hi - lo)
    assert widths[1] < widths[0] / 2.5  # ~ 1 / sqrt(n): sqrt(15) = 3.9


def test_bootstrap_accuracy_width_matches_binomial():
    pred, target = _noisy_classifier(3000, 0.8)
    lo, hi = bootstrap_ci(pred, target, 3, n_boot=2000, seed=1)
    acc = np.mean(pred == target)
    expected = 2 * 1.96 * math.sqrt(acc * (1 - acc) / 3000)
    assert hi - lo == pytest.approx(expected, rel=0.15)


def test_bootstrap_skips_missing_is_seeded_and_fast():
    pred, target = _noisy_classifier(3000, 0.7)
    masked = target.copy()
    masked[::10] = -1
    a = bootstrap_ci(pred, masked, 3, seed=3)
    assert a == bootstrap_ci(pred, masked, 3, seed=3)
    assert a == bootstrap_ci(pred[masked != -1], masked[masked != -1], 3, seed=3)
    start = time.perf_counter()
    bootstrap_ci(pred, target, 3, metric="macro_f1", n_boot=1000)
    assert time.perf_counter() - start < 1.5  # ~0.1 s on 2 idle cores; slack for load


def test_bootstrap_unknown_metric():
    with pytest.raises(AttrfitError, match="accuracy"):
        bootstrap_ci(PRED, TARGET, 4, metric="auc")


def test_collapsed():
    target = np.array([0, 1, 2, 1, 0, 2, 1, 0, -1, -1] * 10)
    assert collapsed(np.full(100, 1), target)
    assert not collapsed(np.where(target == -1, 0, target), target)
    # 7 of 8 labelled rows say 1 (87.5 %, under the 95% rule); the unlabelled rows (all 1) do not count
    pred = np.where(np.arange(100) % 10 == 0, 0, 1)
    assert not collapsed(pred, target)
    assert not collapsed(np.array([0, 0]), np.array([-1, -1]))
