"""What a report finds per head: its numbers with 95% intervals, and the warnings they raise.

Warnings and their thresholds (on the reported side unless said otherwise):

    collapsed     one class makes up >= 95% of a head's predictions (metrics.COLLAPSE_SHARE)
    near chance   1/K lies inside the 95% bootstrap interval of balanced accuracy,
                  K = classes present in the labels (balanced accuracy averages over them)
    no gain       0 lies inside the 95% paired-bootstrap interval of accuracy minus
                  majority-class accuracy (or the whole interval is below 0)
    val >> test   val accuracy at the best epoch exceeds test accuracy by more than
                  1.96 * sqrt(pv(1-pv)/nv + pt(1-pt)/nt) (two-proportion test at 95%)
                  and by at least VAL_TEST_MIN_GAP
    overfitting   train accuracy - val accuracy >= OVERFIT_GAP at the best epoch; train
                  accuracy is measured on augmented batches while the weights move, so it
                  understates the true gap
    duplicates    the split file lists byte-identical images on different sides
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from attrfit.core.formatting import number, percent, signed
from attrfit.evaluation.bootstrap import ALPHA, N_BOOT, gain_ci
from attrfit.evaluation.metrics import is_collapsed
from attrfit.evaluation.results import HeadMetrics


VAL_TEST_MIN_GAP = 0.02
OVERFIT_GAP = 0.10


# ---------------------------------------------------------------- per-head numbers


@dataclass(frozen=True)
class HeadRow:
    """One head on one side: point estimates, 95% intervals, and what the head mostly predicts."""

    head: str
    n: int  # labelled samples
    classes_present: int  # classes in the labels (balanced accuracy averages over these)
    accuracy: float
    accuracy_ci: tuple[float, float]
    balanced_accuracy: float
    balanced_accuracy_ci: tuple[float, float]
    macro_f1: float
    majority_class: str  # most frequent class on the train side
    majority_accuracy: float  # accuracy of always answering majority_class
    gain: float  # accuracy - majority_accuracy
    gain_ci: tuple[float, float]
    top_class: str  # the class this head predicts most often
    top_share: float  # its share of the predictions

    @property
    def chance(self) -> float:
        """Balanced accuracy of a constant or random guess: 1 / classes present."""
        return 1.0 / max(1, self.classes_present)


def head_row(head: str, probs: np.ndarray, target: np.ndarray, classes: tuple[str, ...], majority: int,
             n_boot: int = N_BOOT, seed: int = 0, pred: np.ndarray | None = None) -> HeadRow:
    """Metrics and intervals of one head from its N x K probabilities and N targets (-1 missing); ``pred``, the
    decision rule's classes, defaults to the most probable."""
    from attrfit.evaluation.metrics import bootstrap_ci, head_metrics

    pred = probs.argmax(1) if pred is None else np.asarray(pred)
    k = len(classes)
    m = head_metrics(pred, target, k, majority)
    labelled = pred[target != -1]
    top = int(np.bincount(labelled, minlength=k).argmax()) if labelled.size else 0
    return HeadRow(
        head=head, n=m.n, classes_present=int(np.unique(target[target != -1]).size),
        accuracy=m.accuracy, accuracy_ci=bootstrap_ci(pred, target, k, "accuracy", n_boot, ALPHA, seed),
        balanced_accuracy=m.balanced_accuracy,
        balanced_accuracy_ci=bootstrap_ci(pred, target, k, "balanced_accuracy", n_boot, ALPHA, seed),
        macro_f1=m.macro_f1, majority_class=classes[majority], majority_accuracy=m.majority_accuracy,
        gain=m.gain, gain_ci=gain_ci(pred, target, majority, n_boot, ALPHA, seed),
        top_class=classes[top], top_share=m.pred_top_share,
    )


def head_table_rows(scored, majority: list[int], n_boot: int = N_BOOT, seed: int = 0) -> list[HeadRow]:
    """One :class:`HeadRow` per head of an :class:`attrfit.evaluation.scoring.Scored`.

    ``majority`` is each head's most frequent class on the train side (what the
    majority-class baseline answers).

    >>> rows = head_table_rows(score_checkpoint("runs/demo"), [0, 1, 0])  # doctest: +SKIP
    >>> rows[0].accuracy_ci  # doctest: +SKIP
    (0.68, 0.74)
    """
    schema = scored.schema
    return [head_row(h, scored.probs[j], scored.labels[:, j], schema.classes[h], majority[j], n_boot, seed,
                     scored.predicted(j)) for j, h in enumerate(schema.heads)]


# ---------------------------------------------------------------- warnings, in plain words


def _ci(ci: tuple[float, float], sign: bool = False) -> str:
    fmt = signed if sign else number
    return f"95% CI {fmt(ci[0])} to {fmt(ci[1])}"


def collapse_warnings(rows: list[HeadRow], side: str) -> list[str]:
    """A head that answers one class for most of the side's images (:func:`attrfit.evaluation.metrics.is_collapsed`)."""
    out = []
    for r in rows:
        if is_collapsed(r.top_share, r.n):
            which = "the majority class" if r.top_class == r.majority_class else "one class"
            out.append(f"{r.head}: predicts '{r.top_class}' for {percent(r.top_share)} of {side} images; "
                       f"the head has collapsed to {which}, so its accuracy ({r.accuracy:.3f}) says nothing "
                       f"(balanced accuracy {r.balanced_accuracy:.3f}, chance {r.chance:.3f}).")
    return out


def chance_warnings(rows: list[HeadRow]) -> list[str]:
    """Balanced accuracy whose 95% interval contains chance, 1/K (collapsed heads already warned)."""
    out = []
    for r in rows:
        lo, hi = r.balanced_accuracy_ci
        if r.classes_present >= 2 and not is_collapsed(r.top_share) and lo <= r.chance <= hi:
            out.append(f"{r.head}: balanced accuracy {r.balanced_accuracy:.3f} ({_ci(r.balanced_accuracy_ci)}) "
                       f"cannot be told apart from chance ({r.chance:.3f} for {r.classes_present} classes); "
                       "the head has not learned to tell its classes apart.")
    return out


def gain_warnings(rows: list[HeadRow]) -> list[str]:
    """Accuracy no better (or worse) than always answering the majority class."""
    out = []
    for r in rows:
        lo, hi = r.gain_ci
        if is_collapsed(r.top_share, r.n) or not r.n or lo > 0:
            continue
        rule = f"always answering '{r.majority_class}' ({r.majority_accuracy:.3f})"
        detail = f"gain {signed(r.gain)}, {_ci(r.gain_ci, sign=True)}"
        if hi < 0:
            out.append(f"{r.head}: accuracy {r.accuracy:.3f} is below {rule} ({detail}); on accuracy alone "
                       "the majority rule wins (look at balanced accuracy for what the head does learn).")
        else:
            out.append(f"{r.head}: accuracy {r.accuracy:.3f} cannot be told apart from {rule} ({detail}).")
    return out


def val_test_warnings(val_heads: dict[str, HeadMetrics], test_heads: dict[str, HeadMetrics]) -> list[str]:
    """Heads whose best-epoch val accuracy is above test by more than sampling noise explains.

    Both arguments are :attr:`Results.heads`.
    """
    out = []
    for h, v in val_heads.items():
        t = test_heads.get(h)
        if not t or not v.n or not t.n:
            continue
        pv, nv, pt, nt = v.accuracy, v.n, t.accuracy, t.n
        noise = 1.96 * math.sqrt(pv * (1 - pv) / nv + pt * (1 - pt) / nt)
        gap = pv - pt
        if gap > noise and gap >= VAL_TEST_MIN_GAP:
            out.append(f"{h}: val accuracy {pv:.3f} (n={nv}) is well above test {pt:.3f} (n={nt}), a gap of "
                       f"{gap:.3f} where sampling noise explains up to {noise:.3f}. The best epoch was picked "
                       "on val, so val is optimistic (or the two sides differ); trust the test number.")
    return out


def overfit_warnings(train_acc: dict[str, float], val_acc: dict[str, float], epoch: int | None) -> list[str]:
    """Heads whose train accuracy is OVERFIT_GAP or more above val accuracy (same epoch)."""
    out = []
    when = f" at epoch {epoch}" if epoch else ""
    for h, tr in train_acc.items():
        va = val_acc.get(h)
        if va is None or not (math.isfinite(tr) and math.isfinite(va)):
            continue
        if tr - va >= OVERFIT_GAP:
            out.append(f"{h}: train accuracy {tr:.3f} vs val {va:.3f}{when}; the model fits its training "
                       "images far better than new ones (overfitting). More data, stronger augmentation, "
                       "more weight decay or fewer epochs help.")
    return out


def duplicate_warnings(dups: list[list[str]] | None) -> list[str]:
    """``dups``: the split's exact duplicates across sides, [side_a, path_a, side_b, path_b] each."""
    if not dups:
        return []
    a_side, a, b_side, b = dups[0]
    return [f"split: {len(dups)} image(s) have byte-identical copies on another side "
            f"(e.g. {a_side} {a} = {b_side} {b}); scores on those images are inflated."]


def warnings_for(rows: list[HeadRow], side: str, val_heads: dict[str, HeadMetrics] | None = None,
                 test_heads: dict[str, HeadMetrics] | None = None,
                 train_acc: dict[str, float] | None = None, val_acc: dict[str, float] | None = None,
                 best_epoch: int | None = None, duplicates: list[list[str]] | None = None) -> list[str]:
    """Every warning that applies, in plain words, as "HEAD: ..." (or "split: ..."), grouped by head.

    Example:
        >>> r = HeadRow("age", 100, 5, 0.4, (0.3, 0.5), 0.2, (0.2, 0.2), 0.1, "25-35", 0.4, 0.0,
        ...             (0.0, 0.0), "25-35", 1.0)
        >>> warnings_for([r], "test")[0][:40]
        "age: predicts '25-35' for 100% of test i"
    """
    out = collapse_warnings(rows, side) + chance_warnings(rows) + gain_warnings(rows)
    if val_heads and test_heads:
        out += val_test_warnings(val_heads, test_heads)
    if train_acc and val_acc:
        out += overfit_warnings(train_acc, val_acc, best_epoch)
    order = {r.head: i for i, r in enumerate(rows)}
    out.sort(key=lambda w: order.get(w.partition(": ")[0], len(order)))  # stable: per head, kinds in order
    return duplicate_warnings(duplicates) + out
