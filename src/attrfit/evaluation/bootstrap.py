"""The one bootstrap policy of attrfit's intervals and paired tests: how many resamples, at what level.

Every interval in the report and every paired comparison resamples the scored images with
replacement (:data:`N_BOOT` times, seeded) and reads percentiles at :data:`ALPHA`. The report's
intervals (:func:`attrfit.evaluation.metrics.bootstrap_ci`, :func:`gain_ci`) and ``attrfit compare``'s
paired differences (:func:`head_scores` on :func:`resample_indices`, :func:`bootstrap_p`, :func:`holm`)
share these numbers.
"""

from __future__ import annotations

import math

import numpy as np


N_BOOT = 2000  # resolves p-values down to ~1/1000, enough for Holm over a dozen heads at 5%
ALPHA = 0.05  # 95% intervals; a difference is called at p < ALPHA (Holm-adjusted over heads)


def resample_indices(n: int, n_boot: int, seed: int = 0) -> np.ndarray:
    """n_boot x n row indices drawn with replacement; row 0 of the result is NOT the identity."""
    return np.random.default_rng(seed).integers(0, n, size=(n_boot, n))


def head_scores(target: np.ndarray, correct: np.ndarray, num_classes: int, idx: np.ndarray) -> dict[str, np.ndarray]:
    """Accuracy and balanced accuracy of one head on each resample (rows of ``idx``, B x N).

    ``target`` (N, -1 = missing) and ``correct`` (N bool) are one run's labels and hits.
    Each resample's per-class (hits, support) come from one bincount of cell codes
    ``2 * class + hit``, offset per resample (missing rows go to a dropped last cell).

    Example:
        >>> s = head_scores(np.array([0, 0, 1, -1]), np.array([1, 0, 1, 1], bool), 2, np.arange(4)[None])
        >>> float(s["accuracy"][0]), float(s["balanced_accuracy"][0])
        (0.6666666666666666, 0.75)
    """
    cells = 2 * num_classes + 1
    codes = np.where(target >= 0, 2 * np.maximum(target, 0) + correct.astype(np.int64), 2 * num_classes)
    b = len(idx)
    counts = np.bincount((codes[idx] + cells * np.arange(b)[:, None]).ravel(), minlength=b * cells)
    counts = counts.reshape(b, cells)[:, : 2 * num_classes].reshape(b, num_classes, 2)
    hits, support = counts[..., 1], counts.sum(2)
    with np.errstate(invalid="ignore", divide="ignore"):
        accuracy = hits.sum(1) / support.sum(1)
        present = support > 0
        recall = np.where(present, hits / np.maximum(support, 1), 0.0)
        balanced = recall.sum(1) / present.sum(1)
    return {"accuracy": accuracy, "balanced_accuracy": balanced}


def gain_ci(pred: np.ndarray, target: np.ndarray, majority_class: int, n_boot: int = N_BOOT,
            alpha: float = ALPHA, seed: int = 0) -> tuple[float, float]:
    """Paired percentile-bootstrap interval of accuracy minus majority-class accuracy.

    Per labelled row d = [pred == target] - [target == majority] is -1, 0 or +1, and the
    gain is mean(d). Resampling n rows with replacement is a multinomial draw over those
    three values, so each resample costs O(1). Paired, so the baseline's own sampling noise
    cancels where the model agrees with it. Rows with target -1 are skipped.

    Example:
        >>> t = np.array([0, 0, 0, 1] * 50)
        >>> gain_ci(np.zeros(200, int), t, majority_class=0)
        (0.0, 0.0)
    """
    pred, target = np.asarray(pred).reshape(-1), np.asarray(target).reshape(-1)
    keep = target != -1
    d = (pred[keep] == target[keep]).astype(np.int64) - (target[keep] == majority_class).astype(np.int64)
    n = d.size
    if n == 0:
        return float("nan"), float("nan")
    share = np.bincount(d + 1, minlength=3) / n  # shares of -1, 0, +1
    draws = np.random.default_rng(seed).multinomial(n, share, size=n_boot)
    lo, hi = np.quantile((draws[:, 2] - draws[:, 0]) / n, [alpha / 2, 1 - alpha / 2])
    return float(lo), float(hi)


def bootstrap_p(diffs: np.ndarray) -> float:
    """Two-sided bootstrap p-value of 'no difference': twice the smaller tail share at 0 (+1 smoothed).

    >>> bootstrap_p(np.zeros(99)), round(bootstrap_p(np.ones(99)), 3)
    (1.0, 0.02)
    """
    d = diffs[np.isfinite(diffs)]
    if d.size == 0:
        return float("nan")
    below, above = (1 + np.sum(d <= 0)) / (d.size + 1), (1 + np.sum(d >= 0)) / (d.size + 1)
    return float(min(1.0, 2 * min(below, above)))


def holm(p: list[float]) -> list[float]:
    """Holm's step-down adjusted p-values (family-wise error control); NaN stays NaN.

    >>> holm([0.01, 0.04, 0.03])
    [0.03, 0.06, 0.06]
    """
    finite = [i for i, v in enumerate(p) if math.isfinite(v)]
    order = sorted(finite, key=lambda i: p[i])
    out = [float("nan")] * len(p)
    running = 0.0
    for rank, i in enumerate(order):
        running = max(running, min(1.0, (len(order) - rank) * p[i]))
        out[i] = round(running, 12)
    return out


def verdict(diff: float, p: float, alpha: float = ALPHA) -> str:
    if not (math.isfinite(diff) and math.isfinite(p)) or p >= alpha:
        return "no detectable difference"
    return "better" if diff > 0 else "worse"
