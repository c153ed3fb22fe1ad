"""Fitting the decision rules on the val side: temperatures, train priors, the strength, the thresholds.

Every choice here is made on the val side only (the test side is scored afterwards with what was
chosen), each by the criterion its rule serves:

    temperature   per head, the val negative log-likelihood (calibration.fit_temperature)
    prior         per head, the train side's class frequencies (a class with no train row counts 1/2)
    strength      one for the run: the mean val balanced accuracy over the heads of the prior-corrected
                  rule, over STRENGTHS; on a plateau the middle of the tied strengths
    threshold     per binary head and criterion (balanced accuracy, F1 of the positive class): the best
                  of every distinct cut of the val probabilities, each placed midway between two
                  neighbouring values; of tied cuts the one nearest 0.5

Example:
    >>> scores, labels = np.array([0.1, 0.4, 0.35, 0.8]), np.array([0, 0, 1, 1])
    >>> round(fit_threshold(scores, labels, 1, "balanced_accuracy"), 6)  # 0.225 and 0.6 tie at 0.75: 0.6 is nearer 0.5
    0.6
"""

from __future__ import annotations

import numpy as np

from attrfit.data.schema import Schema
from attrfit.evaluation.calibration import fit_temperature, log_probs, scaled
from attrfit.evaluation.decisions import (BINARY_CLASSES, OBJECTIVE_RULE, STRENGTHS, THRESHOLD_CRITERIA,
                                          CheckpointRef, Decide, Decisions, FittedOn, HeadDecision, most_probable,
                                          prior_corrected)
from attrfit.evaluation.metrics import head_metrics
from attrfit.recipe.config import TrainConfig


def train_prior(labels: np.ndarray, num_classes: int) -> tuple[float, ...]:
    """Class frequencies of one head's train labels (-1 skipped); a class with no row counts half a row.

    >>> train_prior(np.array([0, 0, 0, 1, -1]), 3)
    (0.6666666666666666, 0.2222222222222222, 0.1111111111111111)
    """
    labels = np.asarray(labels)
    counts = np.maximum(np.bincount(labels[labels >= 0], minlength=num_classes).astype(np.float64), 0.5)
    return tuple(float(c) for c in counts / counts.sum())


def training_rule(cfg: TrainConfig, train_labels: np.ndarray, schema: Schema) -> Decide:
    """The rule the val side is scored under during training, before the run's own rule is fitted at the end:
    for the balanced objective with a loss that leaves the balance to the rule (no class weights, no logit
    adjustment), the prior correction at strength 1 (what calibrated probabilities need); else the most
    probable class. So the monitor picks, and the collapse warning judges, the labels the run will give.

    >>> rule = training_rule(TrainConfig(), np.array([[0], [0], [0], [1]]), Schema(("c",), {"c": ("a", "b")}))
    >>> rule("c", np.array([[0.6, 0.4]])).tolist()  # 0.6 / 0.75 < 0.4 / 0.25
    [1]
    """
    if cfg.objective != "balanced" or cfg.optim.class_weights or cfg.optim.logit_adjust > 0:
        return most_probable
    priors = {h: train_prior(train_labels[:, j], len(schema.classes[h])) for j, h in enumerate(schema.heads)}
    return lambda head, probs: prior_corrected(probs, priors[head], 1.0)


def positive_class(classes: tuple[str, ...], prior: tuple[float, ...]) -> int | None:
    """A binary head's positive class: '1' of '0'/'1', else the rarer on the train side (ties: the second);
    None for a head of three classes or more.

    >>> positive_class(("0", "1"), (0.2, 0.8)), positive_class(("female", "male"), (0.6, 0.4)), positive_class(("a", "b", "c"), (0.3, 0.3, 0.4))
    (1, 1, None)
    """
    if len(classes) != 2:
        return None
    if tuple(classes) == BINARY_CLASSES:
        return 1
    return 0 if prior[0] < prior[1] else 1


def fit_strength(probs: list[np.ndarray], labels: np.ndarray, priors: list[tuple[float, ...]]) -> float:
    """The prior-correction strength (of :data:`STRENGTHS`) with the best mean val balanced accuracy over heads.

    Heads without labelled rows do not vote; with none at all the answer is 0 (no correction).
    """
    used = [j for j in range(len(probs)) if (labels[:, j] >= 0).any()]
    if not used:
        return 0.0
    score = np.zeros(len(STRENGTHS))
    for j in used:
        k = probs[j].shape[1]
        for i, s in enumerate(STRENGTHS):
            score[i] += head_metrics(prior_corrected(probs[j], priors[j], s), labels[:, j], k, 0).balanced_accuracy
    best = np.flatnonzero(score >= score.max() - 1e-12)
    return float(STRENGTHS[best[(len(best) - 1) // 2]])  # the middle of a plateau of ties


def _criterion(tp: np.ndarray, fp: np.ndarray, pos: int, neg: int, criterion: str) -> np.ndarray:
    """Balanced accuracy or F1 of each cut, from its true and false positives."""
    if criterion == "balanced_accuracy":
        return (tp / pos + (neg - fp) / neg) / 2
    return 2 * tp / np.maximum(2 * tp + fp + (pos - tp), 1)


def cuts(scores: np.ndarray) -> np.ndarray:
    """Every distinct cut of ``scores`` (ascending): below the lowest, between neighbours, above the highest.

    >>> cuts(np.array([0.2, 0.6, 0.2])).tolist()
    [0.1, 0.4, 0.8]
    """
    u = np.unique(np.asarray(scores, np.float64))
    top = (u[-1] + 1) / 2 if u[-1] < 1 else np.nextafter(u[-1], np.inf)
    return np.concatenate([[u[0] / 2], (u[:-1] + u[1:]) / 2, [top]])


def fit_threshold(scores: np.ndarray, labels: np.ndarray, positive: int, criterion: str) -> float | None:
    """The threshold on p(positive) that maximises ``criterion`` on the labelled rows (labels -1 skipped);
    None unless both classes are labelled.

    A row is called positive when its score is at least the threshold; ties between cuts go to the one
    nearest 0.5.
    """
    labels = np.asarray(labels)
    keep = labels >= 0
    s, y = np.asarray(scores, np.float64)[keep], labels[keep] == positive
    pos, neg = int(y.sum()), int((~y).sum())
    if pos == 0 or neg == 0:
        return None
    t = cuts(s)
    above = len(s) - np.searchsorted(np.sort(s), t, side="left")  # rows with score >= t
    tp = len(s[y]) - np.searchsorted(np.sort(s[y]), t, side="left")
    value = _criterion(tp.astype(np.float64), (above - tp).astype(np.float64), pos, neg, criterion)
    best = np.flatnonzero(value >= value.max() - 1e-12)
    return float(t[best[np.argmin(np.abs(t[best] - 0.5))]])


def fit_decisions(raw: list[np.ndarray], labels: np.ndarray, train_labels: np.ndarray, schema: Schema, objective: str,
                  checkpoint: CheckpointRef, tta: bool) -> Decisions:
    """Fit every rule on the val side: ``raw`` per head the model's N x K probabilities of its rows, ``labels``
    N x H (-1 missing), ``train_labels`` the train side's (for the priors); ``objective`` picks the default rule."""
    temperatures = [fit_temperature(log_probs(p), labels[:, j]) for j, p in enumerate(raw)]
    probs = [scaled(p, t) for p, t in zip(raw, temperatures)]
    priors = [train_prior(train_labels[:, j], k) for j, k in enumerate(schema.num_classes)]
    heads = {}
    for j, h in enumerate(schema.heads):
        positive = positive_class(schema.classes[h], priors[j])
        thresholds = {}
        if positive is not None:
            found = {rule: fit_threshold(probs[j][:, positive], labels[:, j], positive, criterion)
                     for rule, criterion in THRESHOLD_CRITERIA.items()}
            thresholds = {rule: t for rule, t in found.items() if t is not None}
        heads[h] = HeadDecision(temperatures[j], priors[j], positive, thresholds)
    strength = fit_strength(probs, labels, priors)
    return Decisions(heads, strength, objective, OBJECTIVE_RULE[objective], checkpoint,
                     FittedOn("val", int(len(labels)), bool(tta)))
