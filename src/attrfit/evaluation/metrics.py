"""Per-head classification metrics, baselines and bootstrap intervals (numpy only).

Labels are int arrays with -1 for "missing"; every function skips those rows. All
metrics come from one K x K confusion matrix (rows = true class, columns = predicted),
and the bootstrap computes a stack of confusion matrices at once, so point estimates
and intervals share one definition:

    accuracy           trace / total
    balanced_accuracy  mean recall over classes present in the target
    macro_f1           mean F1 over classes present in the target or the prediction
"""

from __future__ import annotations

from dataclasses import fields

import numpy as np

from attrfit.core.errors import AttrfitError
from attrfit.evaluation.bootstrap import ALPHA, N_BOOT
from attrfit.evaluation.results import HeadMetrics, MeanMetrics

METRICS = ("accuracy", "balanced_accuracy", "macro_f1")


COLLAPSE_SHARE = 0.95  # see is_collapsed


def _labelled(pred: np.ndarray, target: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(pred, target) restricted to rows whose target is not -1, as int64."""
    pred = np.asarray(pred, dtype=np.int64).reshape(-1)
    target = np.asarray(target, dtype=np.int64).reshape(-1)
    if pred.shape != target.shape:
        raise ValueError(f"pred has {pred.size} rows but target has {target.size}")
    keep = target != -1
    return pred[keep], target[keep]


def _check_range(pred: np.ndarray, target: np.ndarray, num_classes: int) -> None:
    for name, a in (("pred", pred), ("target", target)):
        if a.size and (a.min() < 0 or a.max() >= num_classes):
            raise ValueError(f"{name} has classes outside [0, {num_classes}) (besides -1)")


def confusion_matrix(pred: np.ndarray, target: np.ndarray, num_classes: int) -> np.ndarray:
    """K x K counts, rows = true class, columns = predicted; rows with target -1 skipped.

    Example:
        >>> confusion_matrix(np.array([0, 1, 1, 0]), np.array([0, 1, 0, -1]), 2)
        array([[1, 1],
               [0, 1]])
    """
    pred, target = _labelled(pred, target)
    _check_range(pred, target, num_classes)
    flat = np.bincount(target * num_classes + pred, minlength=num_classes * num_classes)
    return flat.reshape(num_classes, num_classes)


def _from_confusion(cm: np.ndarray, metric: str) -> np.ndarray:
    """Metric for each matrix of a B x K x K stack; nan where a matrix is empty."""
    tp = np.diagonal(cm, axis1=1, axis2=2).astype(np.float64)  # B x K
    true = cm.sum(axis=2)  # B x K, support per class
    predicted = cm.sum(axis=1)  # B x K
    with np.errstate(invalid="ignore", divide="ignore"):
        if metric == "accuracy":
            return tp.sum(axis=1) / true.sum(axis=1)
        if metric == "balanced_accuracy":
            present = true > 0
            recall = np.where(present, tp / np.maximum(true, 1), 0.0)
            return recall.sum(axis=1) / present.sum(axis=1)
        if metric == "macro_f1":
            present = (true > 0) | (predicted > 0)
            f1 = np.where(present, 2 * tp / np.maximum(true + predicted, 1), 0.0)
            return f1.sum(axis=1) / present.sum(axis=1)
    raise AttrfitError(f"unknown metric {metric!r}; choose one of {', '.join(METRICS)}")


def head_metrics(
    pred: np.ndarray, target: np.ndarray, num_classes: int, majority_class: int
) -> HeadMetrics:
    """Metrics of one head on its labelled rows (target -1 rows are skipped).

    ``majority_accuracy`` is the accuracy of always answering ``majority_class`` (take
    it from the training labels) on the same rows: the baseline a model must beat.
    ``pred_top_share`` is the share of the most frequent prediction (1.0 = collapsed).

    Example:
        >>> m = head_metrics(np.array([0, 0, 1, 1]), np.array([0, 1, 1, -1]), 2, 1)
        >>> m.accuracy, m.balanced_accuracy, m.majority_accuracy, m.n
        (0.6666666666666666, 0.75, 0.6666666666666666, 3)
    """
    p, t = _labelled(pred, target)
    n = int(t.size)
    if n == 0:
        return HeadMetrics.empty()
    cm = confusion_matrix(p, t, num_classes)[None]
    accuracy, balanced, macro_f1 = (float(_from_confusion(cm, name)[0]) for name in METRICS)
    return HeadMetrics(accuracy, balanced, macro_f1, majority_accuracy=float(np.mean(t == majority_class)), n=n,
                       pred_top_share=float(np.bincount(p).max() / n))


def majority_classes(labels: np.ndarray) -> list[int]:
    """Most frequent class per head of an N x H label array (-1 = missing).

    Ties go to the lowest class index; a head with no labels gets 0.

    Example:
        >>> majority_classes(np.array([[1, -1, 2], [0, -1, 2], [1, -1, 0], [0, -1, 0]]))
        [0, 0, 0]
    """
    labels = np.asarray(labels, dtype=np.int64)
    if labels.ndim != 2:
        raise ValueError(f"labels must be N x H, got shape {labels.shape}")
    out = []
    for column in labels.T:
        known = column[column != -1]
        out.append(int(np.bincount(known).argmax()) if known.size else 0)
    return out


def summarize(per_head: dict[str, HeadMetrics]) -> MeanMetrics:
    """Means over heads with n > 0 of accuracy, balanced accuracy, majority accuracy, macro F1.

    Example:
        >>> summarize({"a": HeadMetrics(0.5, 0.5, 0.3, 0.4, 10, 0.6), "b": HeadMetrics.empty()}).accuracy
        0.5
    """
    used = [m for m in per_head.values() if m.n > 0]
    if not used:
        return MeanMetrics(*[float("nan")] * 4)
    return MeanMetrics(**{f.name: float(np.mean([getattr(m, f.name) for m in used])) for f in fields(MeanMetrics)})


def bootstrap_ci(
    pred: np.ndarray,
    target: np.ndarray,
    num_classes: int,
    metric: str = "accuracy",
    n_boot: int = N_BOOT,
    alpha: float = ALPHA,
    seed: int = 0,
) -> tuple[float, float]:
    """Percentile bootstrap (1 - alpha) interval of ``metric`` over labelled rows.

    Resamples rows with replacement ``n_boot`` times, vectorised in chunks (one stack
    of confusion matrices per chunk). Returns (nan, nan) with no labelled rows.

    Example:
        >>> rng = np.random.default_rng(1)
        >>> t = rng.integers(0, 3, 500)
        >>> p = np.where(rng.random(500) < 0.8, t, 0)
        >>> lo, hi = bootstrap_ci(p, t, 3)
        >>> bool(lo < np.mean(p == t) < hi)
        True
    """
    if metric not in METRICS:
        raise AttrfitError(f"unknown metric {metric!r}; choose one of {', '.join(METRICS)}")
    p, t = _labelled(pred, target)
    _check_range(p, t, num_classes)
    n = t.size
    if n == 0:
        return float("nan"), float("nan")
    rng = np.random.default_rng(seed)
    codes = t * num_classes + p  # one int per row: its confusion-matrix cell
    chunk = max(1, 4_000_000 // n)  # keep each index block around 32 MB
    values = []
    for start in range(0, n_boot, chunk):
        b = min(chunk, n_boot - start)
        idx = rng.integers(0, n, size=(b, n))
        # Offset each resample's cells so one bincount fills b confusion matrices.
        cells = codes[idx] + (np.arange(b) * num_classes**2)[:, None]
        cm = np.bincount(cells.ravel(), minlength=b * num_classes**2)
        values.append(_from_confusion(cm.reshape(b, num_classes, num_classes), metric))
    lo, hi = np.nanquantile(np.concatenate(values), [alpha / 2, 1 - alpha / 2])
    return float(lo), float(hi)


def is_collapsed(top_share: float | None, n: int | None = 1) -> bool:
    """The one collapse rule: a head whose most predicted class takes >= ``COLLAPSE_SHARE`` of
    the labelled rows' predictions has collapsed to one class (its accuracy is then the
    majority rate). ``top_share`` is ``pred_top_share`` of :func:`head_metrics`; no rows, no collapse.

    Example:
        >>> is_collapsed(0.95), is_collapsed(0.949), is_collapsed(1.0, n=0), is_collapsed(None)
        (True, False, False, False)
    """
    return bool(n and top_share is not None and top_share >= COLLAPSE_SHARE)  # a bool, not numpy's


def collapsed(pred: np.ndarray, target: np.ndarray) -> bool:
    """:func:`is_collapsed` from predictions: the top class's share of predictions on labelled rows.

    Example:
        >>> target = np.arange(10) % 2
        >>> collapsed(np.zeros(10, int), target), collapsed(target, target)
        (True, False)
    """
    p, _ = _labelled(pred, target)
    return is_collapsed(np.bincount(p - p.min()).max() / p.size if p.size else None, p.size)


# ---------------------------------------------------------------- binary attribute tables (the PAR field's metrics)
#
# Pedestrian-attribute papers (Li et al. 2016, "A richly annotated dataset for pedestrian attribute
# recognition"; Jia et al. 2020, "Rethinking of pedestrian attribute recognition") report, for a table of
# binary attributes (N images x A attributes, 1 = present), besides mA:
#
#   per image i, P_i = predicted positives, Y_i = true positives (labelled attributes only):
#   instance accuracy   mean_i |P_i & Y_i| / |P_i | Y_i|
#   instance precision  mean_i |P_i & Y_i| / |P_i|
#   instance recall     mean_i |P_i & Y_i| / |Y_i|
#   instance F1         2 * precision * recall / (precision + recall)   (of the means, as Jia et al.'s code)
#
# An image whose denominator is empty (no true and/or no predicted positive) scores 0 for that ratio
# and still counts in the mean: Jia et al.'s reference code adds eps to the denominator, and we keep
# their convention so the numbers compare with published ones. A missing label (-1) leaves that
# attribute out of both sets for that image.
#   mA  mean over attributes of (positive recall + negative recall) / 2 (balanced accuracy of a
#       binary head); an attribute with no labelled image is left out.

INSTANCE_METRICS = ("accuracy", "precision", "recall", "f1")


def instance_ratios(pred: np.ndarray, target: np.ndarray) -> dict[str, np.ndarray]:
    """Per-image instance accuracy, precision and recall of N x A 0/1 predictions (target -1 = missing).

    Example:
        >>> r = instance_ratios(np.array([[1, 1, 0], [0, 0, 0]]), np.array([[1, 0, 0], [0, 1, -1]]))
        >>> r["accuracy"].tolist(), r["precision"].tolist(), r["recall"].tolist()
        ([0.5, 0.0], [0.5, 0.0], [1.0, 0.0])
    """
    pred, target = np.asarray(pred), np.asarray(target)
    if pred.shape != target.shape or pred.ndim != 2:
        raise ValueError(f"pred {pred.shape} and target {target.shape} must both be N x A")
    labelled = target != -1
    p = (pred == 1) & labelled
    y = target == 1
    inter = (p & y).sum(1)
    with np.errstate(invalid="ignore", divide="ignore"):
        def ratio(den: np.ndarray) -> np.ndarray:
            return np.where(den > 0, inter / np.maximum(den, 1), 0.0)
        return {"accuracy": ratio((p | y).sum(1)), "precision": ratio(p.sum(1)), "recall": ratio(y.sum(1))}


def instance_metrics(pred: np.ndarray, target: np.ndarray) -> dict[str, float]:
    """Instance-based accuracy, precision, recall and F1 over images (see the block comment above).

    Example:
        >>> m = instance_metrics(np.array([[1, 1, 0], [0, 0, 0]]), np.array([[1, 0, 0], [0, 1, -1]]))
        >>> m["accuracy"], m["precision"], m["recall"], round(m["f1"], 4)
        (0.25, 0.25, 0.5, 0.3333)
    """
    r = instance_ratios(pred, target)
    if r["accuracy"].size == 0:
        return dict.fromkeys(INSTANCE_METRICS, float("nan"))
    prec, rec = float(r["precision"].mean()), float(r["recall"].mean())
    f1 = 2 * prec * rec / (prec + rec) if prec + rec > 0 else 0.0
    return {"accuracy": float(r["accuracy"].mean()), "precision": prec, "recall": rec, "f1": f1}


def mean_accuracy_ma(pred: np.ndarray, target: np.ndarray) -> float:
    """mA: mean over attributes of (positive recall + negative recall) / 2, for N x A 0/1 arrays.

    An attribute that has only one class among its labelled images counts that class's recall
    alone (balanced accuracy over the classes present), one with no labelled image is left out.

    Example:
        >>> mean_accuracy_ma(np.array([[1, 0], [0, 0], [1, 1]]), np.array([[1, 0], [0, 1], [0, -1]]))
        0.625
    """
    values = [head_metrics(p, t, 2, 0).balanced_accuracy for p, t in zip(np.asarray(pred).T, np.asarray(target).T)]
    values = [v for v in values if np.isfinite(v)]
    return float(np.mean(values)) if values else float("nan")
