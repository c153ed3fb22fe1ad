"""Probabilities you can trust: temperature scaling, expected calibration error, Brier score, reliability.

A model's softmax outputs are often over- or under-confident. **Temperature scaling** (Guo et al.,
"On calibration of modern neural networks", ICML 2017) divides each head's logits by one scalar
``T`` fitted on the val side by negative log-likelihood; it never changes which class is most
probable, only how sure the probabilities say the model is. It acts on the model's probabilities
``p`` as ``softmax(log p / T)``, which is ``softmax(z / T)`` for the logits ``z``, so it applies
to what scoring and prediction compute already (with mirror TTA, ``p`` is the mirror average).

The measures, per head on its labelled rows (``labels`` -1 = missing, skipped)::

    ECE    the top probability (of the most probable class) is binned in BINS equal-width bins of
           [0, 1]; ECE = sum over bins of (rows in bin / rows) * |accuracy in bin - mean top probability in bin|
    Brier  mean over rows of sum over classes (p_k - [k == label])^2   (0 = perfect, 2 = worst)

Example:
    >>> z = np.array([[2.0, 0.0], [0.0, 3.0], [1.0, 0.0]])
    >>> fit_temperature(z, np.array([0, 1, 1])) > 1  # one confident mistake: soften
    True
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

BINS = 15  # equal-width bins of the top probability (Guo et al. 2017 use 15)
T_RANGE = (0.05, 20.0)  # temperatures searched; beyond these a head's logits carry no usable scale
_TOL = 1e-4  # golden-section search stops when the bracket of log T is this narrow
_TINY = np.finfo(np.float64).tiny


def log_probs(probs: np.ndarray) -> np.ndarray:
    """``log p`` in float64, a probability that underflowed to 0 counted as the smallest positive float."""
    return np.log(np.maximum(np.asarray(probs, np.float64), _TINY))


def scaled(probs: np.ndarray, temperature: float) -> np.ndarray:
    """Probabilities N x K at ``temperature``: ``softmax(log p / T)`` as float32; at T = 1, ``probs`` themselves.

    >>> [round(float(x), 3) for x in scaled(np.array([[0.2, 0.8]], np.float32), 2.0)[0]]  # sqrt(0.2) : sqrt(0.8)
    [0.333, 0.667]
    """
    if temperature == 1:
        return probs
    z = log_probs(probs) / temperature
    e = np.exp(z - z.max(1, keepdims=True))
    return (e / e.sum(1, keepdims=True)).astype(np.float32)


def _log_likelihood(z: np.ndarray, labels: np.ndarray, t: float) -> float:
    """Mean log probability of ``labels`` under softmax(z / t) (float64)."""
    zt = z / t
    zt = zt - zt.max(1, keepdims=True)
    return float((zt[np.arange(len(labels)), labels] - np.log(np.exp(zt).sum(1))).mean())


def fit_temperature(logits: np.ndarray, labels: np.ndarray) -> float:
    """The temperature (in :data:`T_RANGE`) that maximises the likelihood of ``labels`` (-1 rows skipped) under
    softmax(logits / T); ``logits`` N x K, or log-probabilities (:func:`log_probs`).

    The log-likelihood is concave in 1/T, so a golden-section search over log T finds its maximum; with no
    labelled rows the answer is 1 (no change).

    >>> rng = np.random.default_rng(0)
    >>> z = rng.normal(0, 4, (4000, 3))
    >>> y = np.array([rng.choice(3, p=np.exp(r / 2) / np.exp(r / 2).sum()) for r in z])
    >>> round(fit_temperature(z, y), 1)
    2.0
    """
    z = np.asarray(logits, dtype=np.float64)
    labels = np.asarray(labels, dtype=np.int64)
    keep = labels >= 0
    if not keep.any():
        return 1.0
    z, labels = z[keep], labels[keep]
    lo, hi = math.log(T_RANGE[0]), math.log(T_RANGE[1])
    golden = (math.sqrt(5) - 1) / 2
    a, b = hi - golden * (hi - lo), lo + golden * (hi - lo)
    fa, fb = (_log_likelihood(z, labels, math.exp(x)) for x in (a, b))
    while hi - lo > _TOL:
        if fa >= fb:
            hi, b, fb = b, a, fa
            a = hi - golden * (hi - lo)
            fa = _log_likelihood(z, labels, math.exp(a))
        else:
            lo, a, fa = a, b, fb
            b = lo + golden * (hi - lo)
            fb = _log_likelihood(z, labels, math.exp(b))
    return float(math.exp((lo + hi) / 2))


@dataclass(frozen=True)
class Reliability:
    """Per bin of the top probability: rows, their mean top probability and their accuracy (NaN when empty)."""

    edges: np.ndarray  # BINS + 1 bin edges over [0, 1]
    count: np.ndarray  # rows per bin
    confidence: np.ndarray  # mean top probability per bin
    accuracy: np.ndarray  # share of rows whose most probable class is the label

    @property
    def ece(self) -> float:
        """Expected calibration error: the count-weighted mean gap between accuracy and confidence."""
        n = self.count.sum()
        if n == 0:
            return float("nan")
        used = self.count > 0
        return float((self.count[used] * np.abs(self.accuracy[used] - self.confidence[used])).sum() / n)


def reliability(probs: list[np.ndarray] | np.ndarray, labels: np.ndarray, bins: int = BINS) -> Reliability:
    """Reliability bins of one head (``probs`` N x K, ``labels`` N), or of several pooled (lists, labels N x H).

    >>> r = reliability(np.array([[0.9, 0.1], [0.8, 0.2], [0.3, 0.7]]), np.array([0, 1, 1]))
    >>> round(r.ece, 3)  # three bins of one row each: gaps 0.1, 0.8 and 0.3
    0.4
    """
    if isinstance(probs, np.ndarray):
        probs, labels = [probs], np.asarray(labels).reshape(-1, 1)
    top, hit = [], []
    for j, p in enumerate(probs):
        keep = labels[:, j] >= 0
        top.append(p[keep].max(1).astype(np.float64))
        hit.append(p[keep].argmax(1) == labels[keep, j])
    top, hit = np.concatenate(top), np.concatenate(hit)
    edges = np.linspace(0.0, 1.0, bins + 1)
    which = np.clip(np.digitize(top, edges[1:-1], right=False), 0, bins - 1)  # the last bin holds 1.0
    count = np.bincount(which, minlength=bins)
    with np.errstate(invalid="ignore", divide="ignore"):
        confidence = np.bincount(which, top, bins) / count
        accuracy = np.bincount(which, hit.astype(np.float64), bins) / count
    return Reliability(edges, count, confidence, accuracy)


def ece(probs: np.ndarray, labels: np.ndarray, bins: int = BINS) -> float:
    """Expected calibration error of one head (see the module docstring); NaN without labelled rows."""
    return reliability(probs, labels, bins).ece


def brier(probs: np.ndarray, labels: np.ndarray) -> float:
    """Multi-class Brier score of one head: mean over labelled rows of the squared error to the one-hot label.

    >>> brier(np.array([[1.0, 0.0], [0.5, 0.5]]), np.array([0, 1]))
    0.25
    """
    labels = np.asarray(labels, dtype=np.int64)
    keep = labels >= 0
    if not keep.any():
        return float("nan")
    p = probs[keep].astype(np.float64)
    onehot = np.zeros_like(p)
    onehot[np.arange(len(p)), labels[keep]] = 1.0
    return float(((p - onehot) ** 2).sum(1).mean())


def calibration_of(raw: list[np.ndarray], probs: list[np.ndarray], labels: np.ndarray, schema,
                   temperatures: list[float], bins: int = BINS):
    """Per-head :class:`attrfit.evaluation.results.Calibration` of the model's own probabilities (``raw``) and of
    the temperature-scaled ones (``probs``), on the rows of ``labels`` (N x H, -1 missing)."""
    from attrfit.evaluation.results import Calibration, HeadCalibration

    heads = {h: HeadCalibration(float(temperatures[j]), ece(probs[j], labels[:, j], bins), brier(probs[j], labels[:, j]),
                                ece(raw[j], labels[:, j], bins), brier(raw[j], labels[:, j]),
                                int((labels[:, j] >= 0).sum()))
             for j, h in enumerate(schema.heads)}
    return Calibration(heads, bins)
